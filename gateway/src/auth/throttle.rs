//! Failed-login limits, per source address and per submitted name (known
//! or not, so the answer never tells whether a user exists). Each key keeps
//! the times of its recent failures; at `limit` within `window`, further
//! attempts are refused (429) without checking the password until the
//! oldest failure leaves the window. The table is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked; beyond, the least recently failed are dropped.
const MAX_KEYS: usize = 50_000;

/// The limiter.
#[derive(Debug)]
pub struct Throttle {
    map: Mutex<HashMap<String, VecDeque<Instant>>>,
    limits: Mutex<(usize, Duration)>,
}

impl Throttle {
    /// At most `limit` failures per key within `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            limits: Mutex::new((limit.max(1) as usize, window)),
        }
    }

    /// Changes the limit and window (reload).
    pub fn set_limits(&self, limit: u32, window: Duration) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = (limit.max(1) as usize, window);
    }

    fn limits(&self) -> (usize, Duration) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(retry_after)` if any of `keys` is over its limit.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let (limit, window) = self.limits();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        for k in keys {
            if let Some(q) = map.get_mut(*k) {
                while q.front().is_some_and(|t| now.duration_since(*t) > window) {
                    q.pop_front();
                }
                if q.len() >= limit
                    && let Some(first) = q.front()
                {
                    let left = window.saturating_sub(now.duration_since(*first));
                    wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Records a failure for each of `keys`.
    pub fn fail(&self, keys: &[&str]) {
        let (limit, window) = self.limits();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() + keys.len() > MAX_KEYS {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
            if map.len() + keys.len() > MAX_KEYS {
                map.clear();
            }
        }
        for k in keys {
            let q = map.entry((*k).to_string()).or_default();
            q.push_back(now);
            while q.len() > limit {
                q.pop_front();
            }
        }
    }

    /// Forgets the failures of `keys` (a successful login).
    pub fn clear(&self, keys: &[&str]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_recovers() {
        let t = Throttle::new(3, Duration::from_millis(100));
        for _ in 0..3 {
            assert!(t.check(&["ip:1", "user:ann"]).is_ok());
            t.fail(&["ip:1", "user:ann"]);
        }
        assert!(t.check(&["ip:1"]).is_err());
        assert!(t.check(&["ip:2", "user:ann"]).is_err(), "per name too");
        assert!(t.check(&["ip:2", "user:bob"]).is_ok());
        std::thread::sleep(Duration::from_millis(120));
        assert!(t.check(&["ip:1", "user:ann"]).is_ok());
        t.fail(&["ip:3"]);
        t.clear(&["ip:3"]);
        assert!(t.check(&["ip:3"]).is_ok());
    }
}
