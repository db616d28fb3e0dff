//! Server-side login sessions: 128-bit random ids, idle and absolute
//! expiry, a CSRF token each, bounded in number.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::password::base64url;

/// Most sessions kept; the oldest go first when a login would exceed it.
pub const MAX_SESSIONS: usize = 100_000;

/// One login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user: String,
    /// For the gateway's own forms (logout).
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The store.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// Idle and absolute expiry.
    limits: Mutex<(Duration, Duration)>,
}

/// 16 random bytes, base64url (22 characters).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("no randomness for a session id: {e}"));
    base64url(&b)
}

impl Sessions {
    /// A store with these expiries.
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            limits: Mutex::new((idle, max)),
        }
    }

    /// Changes the expiries (reload); they apply to existing sessions too.
    pub fn set_limits(&self, idle: Duration, max: Duration) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = (idle, max);
    }

    fn limits(&self) -> (Duration, Duration) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Absolute lifetime (for the cookie's Max-Age).
    pub fn max_age(&self) -> Duration {
        self.limits().1
    }

    /// Starts a session for `user`; returns its id.
    pub fn create(&self, user: &str) -> String {
        let id = random_id();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            self.sweep(&mut map, now);
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                csrf: random_id(),
                created: now,
                last_seen: now,
            },
        );
        id
    }

    /// The live session with this id, its idle timer restarted.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let (idle, max) = self.limits();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(id)?;
        if now.duration_since(s.created) > max || now.duration_since(s.last_seen) > idle {
            map.remove(id);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) -> Option<Session> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Ends every session of users for whom `keep` is false (reloads).
    pub fn retain_users(&self, keep: impl Fn(&str) -> bool) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, s| keep(&s.user));
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sweep(&self, map: &mut HashMap<String, Session>, now: Instant) {
        let (idle, max) = self.limits();
        map.retain(|_, s| {
            now.duration_since(s.created) <= max && now.duration_since(s.last_seen) <= idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_and_random() {
        let a = random_id();
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_id());
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_millis(200));
        let id = s.create("ann");
        assert_eq!(s.touch(&id).unwrap().user, "ann");
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.touch(&id).is_none(), "idle expiry");
        let id = s.create("ann");
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(40));
            let _ = s.touch(&id);
        }
        assert!(s.touch(&id).is_none(), "absolute expiry");
        let id = s.create("bob");
        s.retain_users(|u| u != "bob");
        assert!(s.touch(&id).is_none());
    }
}
