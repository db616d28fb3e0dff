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
//! A connection keeps its place while it is open and while any WebSocket
//! it carries is ([`Place`]): a WebSocket upgraded from HTTP/1.1 counts
//! as the connection it is, so a source cannot pass its cap by upgrading
//! its connections one after another.
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
//! open file descriptors (`/proc/self/fd`) twice a second. Counting the
//! descriptors costs about 0.6 µs each (the kernel makes a directory entry
//! for every one), 6 ms with 10,000 idle device sessions, so they are
//! counted only when they could be near the threshold: the last count plus
//! the sockets opened since ([`socket_opened`], every accept and connect)
//! bounds them, and a bound below 90 % of the threshold needs no count
//! (one every [`FD_RECOUNT`] all the same, for other files). Past either
//! threshold the gateway enters overload: new browser connections are
//! refused first (they are the cheapest to retry and the least important
//! to keep), while device sessions and open browser connections and
//! WebSockets carry on. Below 90 % of both thresholds it leaves overload
//! by itself. Each change is logged and counted
//! (`gateway_overload_active`, `gateway_overload_transitions_total`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
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
///
/// A caller may also wait for a place ([`SourceCaps::queue`]): a place
/// given back goes straight to the longest waiting caller it fits (its
/// source below the per-source cap), first come, first served. The
/// waiting room is bounded by the caller and a wait by time; browser
/// connections never wait, device handshakes do.
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
    /// Callers waiting for a place, oldest first. A place handed over is
    /// counted before the waiter hears of it (so its [`Ticket`] owns it).
    waiting: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    source: IpAddr,
    tx: oneshot::Sender<()>,
}

impl Counts {
    fn fits(&self, key: IpAddr, max_total: usize, max_per_source: usize) -> Result<(), Refusal> {
        if self.total >= max_total {
            return Err(Refusal::GlobalCap);
        }
        if self.by_source.get(&key).copied().unwrap_or(0) >= max_per_source {
            return Err(Refusal::PerAddressCap);
        }
        Ok(())
    }

    fn take(&mut self, key: IpAddr) {
        *self.by_source.entry(key).or_insert(0) += 1;
        self.total += 1;
    }

    /// Gives a free place to the oldest waiter that fits; drops waiters
    /// that gave up on the way.
    fn hand_over(&mut self, max_total: usize, max_per_source: usize) {
        let mut i = 0;
        while i < self.waiting.len() && self.total < max_total {
            let w = &self.waiting[i];
            if w.tx.is_closed() {
                self.waiting.remove(i);
                continue;
            }
            if self.fits(w.source, max_total, max_per_source).is_err() {
                i += 1;
                continue;
            }
            let Some(w) = self.waiting.remove(i) else {
                return;
            };
            if w.tx.send(()).is_ok() {
                self.take(w.source);
                return;
            }
        }
    }
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
        open.fits(key, self.max_total, self.max_per_source)?;
        open.take(key);
        Ok(Permit {
            caps: self.clone(),
            source: key,
        })
    }

    /// After [`Self::acquire`] refused `ip` with `refusal`: a place in
    /// line for the next free place that fits it, unless `max_waiting`
    /// callers wait already (then `refusal` again). Waiters that gave up
    /// are cleared out first.
    pub fn queue(
        self: &Arc<Self>,
        ip: IpAddr,
        refusal: Refusal,
        max_waiting: usize,
    ) -> Result<Ticket, Refusal> {
        let key = source(ip);
        let mut open = self.lock();
        if open.waiting.len() >= max_waiting {
            open.waiting.retain(|w| !w.tx.is_closed());
        }
        if open.waiting.len() >= max_waiting {
            return Err(refusal);
        }
        // A place may have freed since the refusal.
        if open.fits(key, self.max_total, self.max_per_source).is_ok() && open.waiting.is_empty() {
            open.take(key);
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(());
            return Ok(self.ticket(key, rx, refusal));
        }
        let (tx, rx) = oneshot::channel();
        open.waiting.push_back(Waiter { source: key, tx });
        Ok(self.ticket(key, rx, refusal))
    }

    fn ticket(
        self: &Arc<Self>,
        source: IpAddr,
        rx: oneshot::Receiver<()>,
        refusal: Refusal,
    ) -> Ticket {
        Ticket {
            caps: self.clone(),
            source,
            rx,
            refusal,
            done: false,
        }
    }

    /// Callers waiting for a place (those that gave up may count until
    /// the next place is handed over).
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
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
        if !open.waiting.is_empty() {
            open.hand_over(self.max_total, self.max_per_source);
        }
    }
}

/// A place in line at [`SourceCaps`] ([`SourceCaps::queue`]).
#[derive(Debug)]
pub struct Ticket {
    caps: Arc<SourceCaps>,
    source: IpAddr,
    rx: oneshot::Receiver<()>,
    /// What the caps said when the caller first asked.
    refusal: Refusal,
    /// The place (if one came) went to a [`Permit`].
    done: bool,
}

impl Ticket {
    /// Waits up to `wait` for a place; without one by then, the refusal
    /// the caller first met.
    pub async fn wait(mut self, wait: Duration) -> Result<Permit, Refusal> {
        let came = matches!(tokio::time::timeout(wait, &mut self.rx).await, Ok(Ok(())));
        // A place handed over just as the wait ended still counts.
        let came = came || {
            self.rx.close();
            self.rx.try_recv().is_ok()
        };
        self.done = true;
        if came {
            Ok(Permit {
                caps: self.caps.clone(),
                source: self.source,
            })
        } else {
            Err(self.refusal)
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped while waiting: a place that came already goes back.
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.caps.release(self.source);
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

/// A browser connection's [`Permit`], shared by the connection and the
/// WebSockets it carries: each request has a copy (a request extension),
/// and the task of a WebSocket keeps its copy for the socket's life. The
/// place goes back once the connection and every WebSocket on it are
/// closed: an HTTP/1.1 connection upgraded to a WebSocket (whose HTTP
/// task ends at the upgrade) still counts under the caps, and so does an
/// HTTP/2 connection while a WebSocket stream on it is open.
#[derive(Clone, Debug)]
pub struct Place(
    #[expect(
        dead_code,
        reason = "held for its drop: the place goes back with the last copy"
    )]
    Arc<Permit>,
);

impl Place {
    /// Shares `permit`.
    pub fn new(permit: Permit) -> Self {
        Self(Arc::new(permit))
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

/// The longest time between two counts of the open descriptors.
pub const FD_RECOUNT: Duration = Duration::from_secs(10);

/// Descriptors other than sockets (files, pipes) that may open between
/// two counts: the margin of the bound.
const FD_SLACK: u64 = 64;

/// Sockets this process accepted or connected since it started.
static SOCKETS_OPENED: AtomicU64 = AtomicU64::new(0);

/// Counts one socket accepted or connected (for the descriptor bound of
/// [`Overload::run`]).
pub fn socket_opened() {
    SOCKETS_OPENED.fetch_add(1, Ordering::Relaxed);
}

/// The last count of open descriptors, and [`SOCKETS_OPENED`] then.
#[derive(Clone, Copy, Debug)]
struct FdCount {
    fds: u64,
    opened: u64,
    at: tokio::time::Instant,
}

impl FdCount {
    /// Whether the descriptors must be counted again at `now`, with
    /// `opened` sockets opened so far: the count is old, or it plus the
    /// sockets opened since could reach `calm` (90 % of the threshold).
    fn stale(&self, opened: u64, now: tokio::time::Instant, calm: u64) -> bool {
        let bound = self.fds + opened.saturating_sub(self.opened) + FD_SLACK;
        now.duration_since(self.at) >= FD_RECOUNT || bound >= calm
    }
}

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
        Self {
            rss: Self::rss(),
            fds: Self::open_files(),
        }
    }

    /// Resident memory, bytes (`VmRSS`; zero where unreadable).
    pub fn rss() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0)
    }

    /// Open descriptors (zero where unreadable): one directory entry of
    /// `/proc/self/fd` each, so the cost grows with the count.
    pub fn open_files() -> u64 {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
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

    /// Samples the process every [`OVERLOAD_SAMPLE`] until the task is
    /// dropped: memory every time, descriptors when the last count is stale
    /// ([`FdCount::stale`]; otherwise that count stands).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(OVERLOAD_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let calm = self.open_files / 10 * 9;
        let mut last: Option<FdCount> = None;
        loop {
            tick.tick().await;
            let now = tokio::time::Instant::now();
            let opened = SOCKETS_OPENED.load(Ordering::Relaxed);
            let count = last.is_none_or(|c| c.stale(opened, now, calm));
            let kept = last.map_or(0, |c| c.fds);
            // The memory on this thread (one short read of /proc), the
            // descriptors on the blocking pool (a directory of up to the
            // descriptor limit's entries) and only when the last count is
            // stale: between counts the pool's thread exits and the process
            // is one thread again (see `cli::runtime`).
            let rss = Usage::rss();
            let fds = if count {
                tokio::task::spawn_blocking(Usage::open_files)
                    .await
                    .unwrap_or(0)
            } else {
                kept
            };
            let u = Usage { rss, fds };
            if count {
                last = Some(FdCount {
                    fds: u.fds,
                    opened,
                    at: now,
                });
            }
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

    #[tokio::test]
    async fn a_waiter_gets_the_next_place_that_fits_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let caps = SourceCaps::new(3, 2);
        let a1 = caps.acquire(ip("192.0.2.1")).unwrap();
        let _a2 = caps.acquire(ip("192.0.2.1")).unwrap();
        let r = caps.acquire(ip("192.0.2.1")).unwrap_err();
        assert_eq!(r, Refusal::PerAddressCap);
        let t = caps.queue(ip("192.0.2.1"), r, 1).unwrap();
        // The waiting room holds one.
        assert_eq!(
            caps.queue(ip("192.0.2.1"), r, 1).unwrap_err(),
            Refusal::PerAddressCap
        );
        // A place of another source does not fit it; its own does.
        let b = caps.acquire(ip("192.0.2.2")).unwrap();
        drop(b);
        assert_eq!(caps.waiting(), 1);
        drop(a1);
        assert_eq!(caps.waiting(), 0);
        let p = t.wait(Duration::from_millis(10)).await.unwrap();
        assert_eq!(caps.open(), 2);
        // Nothing frees: the wait ends with the first refusal.
        let r = caps.acquire(ip("192.0.2.1")).unwrap_err();
        let t = caps.queue(ip("192.0.2.1"), r, 1).unwrap();
        assert_eq!(
            t.wait(Duration::from_millis(10)).await.unwrap_err(),
            Refusal::PerAddressCap
        );
        // A ticket dropped after a place came gives it back.
        let r = caps.acquire(ip("192.0.2.1")).unwrap_err();
        let t = caps.queue(ip("192.0.2.1"), r, 1).unwrap();
        drop(p);
        assert_eq!(caps.open(), 2);
        drop(t);
        assert_eq!(caps.open(), 1);
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
        assert!(Usage::open_files() > 0);
    }

    /// Descriptors are counted again when the last count is old or when it
    /// plus the sockets opened since could reach 90 % of the threshold;
    /// otherwise the count stands (an idle fleet's thousands of sessions
    /// are not listed twice a second).
    #[test]
    fn descriptors_are_counted_when_they_could_be_near_the_threshold() {
        let at = tokio::time::Instant::now();
        let c = FdCount {
            fds: 10_000,
            opened: 500,
            at,
        };
        let calm = 16_000 / 10 * 9;
        let soon = at + OVERLOAD_SAMPLE;
        assert!(!c.stale(500, soon, calm), "nothing opened since");
        assert!(!c.stale(500 + 4_000, soon, calm), "still below 14,400");
        assert!(
            c.stale(500 + 4_400 - FD_SLACK, soon, calm),
            "could be at 14,400"
        );
        assert!(c.stale(500, at + FD_RECOUNT, calm), "old");
        assert!(!c.stale(500, at + FD_RECOUNT - OVERLOAD_SAMPLE, calm));
        let near = FdCount { fds: 14_400, ..c };
        assert!(
            near.stale(500, soon, calm),
            "at the calm level: every sample"
        );
    }
}
