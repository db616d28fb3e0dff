//! Who may open a browser connection: a global cap, a per-source cap and
//! overload protection, all decided right after `accept`, before any TLS
//! work is spent on the connection.
//!
//! ```text
//!  accept ─▶ overloaded? ──yes──▶ close (reason "overload")
//!         ─▶ open ≥ max_connections? ──yes──▶ close ("global_cap")
//!         ─▶ open from this source ≥ max_connections_per_address? ──yes──▶ close ("per_address_cap")
//!         ─▶ Permit (released when the connection ends) ─▶ TLS ─▶ HTTP
//! ```
//!
//! A refused connection is closed at once (the client sees a reset or an
//! EOF instead of waiting in the backlog) and counted in
//! `gateway_browser_connections_refused_total{reason}`. Connections
//! already admitted, WebSockets and device sessions are never touched.
//!
//! # Sources
//!
//! A source is an IPv4 address, or an IPv6 /64: one host usually owns a
//! whole /64, so counting single IPv6 addresses would not cap anything.
//! IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! # Overload
//!
//! In the spirit of Envoy's overload manager: [`Overload::run`] samples
//! the process's resident memory (`VmRSS` from `/proc/self/status`) and its
//! open file descriptors (`/proc/self/fd`) twice a second. Past either
//! threshold the gateway enters overload: new browser connections are
//! refused first (they are the cheapest to retry and the least important
//! to keep), while device sessions and open browser connections and
//! WebSockets carry on. Below 90 % of both thresholds it leaves overload
//! by itself. Each change is logged and counted
//! (`gateway_overload_active`, `gateway_overload_transitions_total`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::settings::Limits;

/// Why a connection was refused (the metric's `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The gateway is overloaded (memory or descriptors).
    Overload,
    /// `max_connections` browser connections are open.
    GlobalCap,
    /// `max_connections_per_address` connections from this source are open.
    PerAddressCap,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::GlobalCap => "global_cap",
            Self::PerAddressCap => "per_address_cap",
        }
    }
}

/// Counters of refused connections, by reason.
#[derive(Debug, Default)]
pub struct Refused {
    /// Refused while overloaded.
    pub overload: AtomicU64,
    /// Refused at the global cap.
    pub global_cap: AtomicU64,
    /// Refused at the per-source cap.
    pub per_address_cap: AtomicU64,
}

impl Refused {
    /// Counts one refusal.
    pub fn count(&self, r: Refusal) {
        let c = match r {
            Refusal::Overload => &self.overload,
            Refusal::GlobalCap => &self.global_cap,
            Refusal::PerAddressCap => &self.per_address_cap,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The source key of an address: IPv4, or the /64 of an IPv6 address.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A global cap and a per-source cap on things open at once (browser
/// connections here; unauthenticated device-link handshakes in
/// [`crate::link`]).
#[derive(Debug)]
pub struct SourceCaps {
    max_total: usize,
    max_per_source: usize,
    /// Open places by source; the sum is the total.
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl SourceCaps {
    /// At most `max_total` places, at most `max_per_source` from one source.
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_source,
            open: Mutex::new(Counts::default()),
        })
    }

    /// Takes a place for `ip`, or says which cap is full.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let key = source(ip);
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Refusal::GlobalCap);
        }
        let n = open.by_source.entry(key).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Refusal::PerAddressCap);
        }
        *n += 1;
        open.total += 1;
        Ok(Permit {
            caps: self.clone(),
            source: key,
        })
    }

    /// Places taken and not yet given back.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, key: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&key);
            }
        }
    }
}

/// A place taken from [`SourceCaps`]; given back on drop.
#[derive(Debug)]
pub struct Permit {
    caps: Arc<SourceCaps>,
    source: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.caps.release(self.source);
    }
}

/// The caps on browser connections, shared by every listener.
#[derive(Debug)]
pub struct Admission {
    caps: Arc<SourceCaps>,
    /// Overload state, consulted first.
    pub overload: Arc<Overload>,
}

impl Admission {
    /// Caps from `limits`; `overload` decides on overload.
    pub fn new(limits: &Limits, overload: Arc<Overload>) -> Arc<Self> {
        Arc::new(Self {
            caps: SourceCaps::new(limits.max_connections, limits.max_connections_per_address),
            overload,
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        if self.overload.is_active() {
            return Err(Refusal::Overload);
        }
        self.caps.acquire(ip)
    }

    /// Browser connections admitted and still open.
    pub fn open(&self) -> usize {
        self.caps.open()
    }
}

/// How often [`Overload::run`] samples the process.
pub const OVERLOAD_SAMPLE: Duration = Duration::from_millis(500);

/// The overload state and its thresholds.
#[derive(Debug)]
pub struct Overload {
    memory: u64,
    open_files: u64,
    active: AtomicBool,
    /// Times the state changed (either way).
    pub transitions: AtomicU64,
    /// Last sampled RSS, bytes.
    pub rss: AtomicU64,
    /// Last sampled open descriptors.
    pub fds: AtomicU64,
}

/// One sample of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory, bytes.
    pub rss: u64,
    /// Open file descriptors.
    pub fds: u64,
}

impl Usage {
    /// Reads this process's usage from `/proc` (zero where unreadable).
    pub fn sample() -> Self {
        let rss = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        Self { rss, fds }
    }
}

impl Overload {
    /// Thresholds from `limits`; not overloaded.
    pub fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            memory: limits.overload_memory,
            open_files: limits.overload_open_files,
            active: AtomicBool::new(false),
            transitions: AtomicU64::new(0),
            rss: AtomicU64::new(0),
            fds: AtomicU64::new(0),
        })
    }

    /// Whether new browser connections are refused now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Applies one sample: enters overload past a threshold, leaves it
    /// below 90 % of both. Returns the new state.
    pub fn update(&self, u: Usage) -> bool {
        self.rss.store(u.rss, Ordering::Relaxed);
        self.fds.store(u.fds, Ordering::Relaxed);
        let was = self.is_active();
        let over = u.rss >= self.memory || u.fds >= self.open_files;
        let calm = u.rss < self.memory / 10 * 9 && u.fds < self.open_files / 10 * 9;
        let now = if was { !calm } else { over };
        if now != was {
            self.active.store(now, Ordering::Relaxed);
            self.transitions.fetch_add(1, Ordering::Relaxed);
            if now {
                warn!(
                    rss = u.rss,
                    open_files = u.fds,
                    memory_threshold = self.memory,
                    open_files_threshold = self.open_files,
                    "overload: refusing new browser connections (device sessions and open connections continue)"
                );
            } else {
                info!(
                    rss = u.rss,
                    open_files = u.fds,
                    "overload over: accepting browser connections again"
                );
            }
        }
        now
    }

    /// Samples the process every [`OVERLOAD_SAMPLE`] until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(OVERLOAD_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let u = tokio::task::spawn_blocking(Usage::sample)
                .await
                .unwrap_or(Usage { rss: 0, fds: 0 });
            self.update(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_count_and_release() {
        let l = limits(3, 2);
        let a = Admission::new(&l, Overload::new(&l));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p1 = a.admit(ip("192.0.2.1")).unwrap();
        let _p2 = a.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            a.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerAddressCap
        );
        let _p3 = a.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.9")).unwrap_err(), Refusal::GlobalCap);
        drop(p1);
        assert_eq!(a.open(), 2);
        // The same /64 is one source.
        let l = limits(10, 1);
        let a = Admission::new(&l, Overload::new(&l));
        let _q = a.admit(ip("2001:db8:0:1::1")).unwrap();
        assert_eq!(
            a.admit(ip("2001:db8:0:1::2")).unwrap_err(),
            Refusal::PerAddressCap
        );
        assert!(a.admit(ip("2001:db8:0:2::1")).is_ok());
    }

    #[test]
    fn overload_has_hysteresis() {
        let l = Limits {
            overload_memory: 1000,
            overload_open_files: 100,
            ..Limits::default()
        };
        let o = Overload::new(&l);
        let a = Admission::new(&l, o.clone());
        assert!(!o.update(Usage { rss: 500, fds: 10 }));
        assert!(o.update(Usage { rss: 500, fds: 100 }));
        assert_eq!(
            a.admit("192.0.2.1".parse().unwrap()).unwrap_err(),
            Refusal::Overload
        );
        // Between 90 % and the threshold: still overloaded.
        assert!(o.update(Usage { rss: 950, fds: 10 }));
        assert!(!o.update(Usage { rss: 800, fds: 89 }));
        assert_eq!(o.transitions.load(Ordering::Relaxed), 2);
        assert!(a.admit("192.0.2.1".parse().unwrap()).is_ok());
        assert!(Usage::sample().rss > 0);
    }
}
