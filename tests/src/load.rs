//! The load generator's workloads, each against one TLS WebSocket target
//! (the gateway, nginx or HAProxy) and measured on the target's own process:
//!
//! | workload | what it does | what it reports |
//! |---|---|---|
//! | [`echo`] | N WSS connections echoing M-byte messages, closed loop, pipelined, or paced to a rate | messages/s, p50/p90/p99/max, target CPU per message |
//! | [`idle`] | opens up to ~9,500 WSS connections from several 127.0.0.x sources and holds them | target RSS per idle connection |
//! | [`handshakes`] | TLS 1.3 handshakes (full or resumed), `close_notify` both ways | handshakes/s, target CPU per handshake |
//! | [`bulk`] | one connection, large messages pipelined | MB/s (payload, one direction), target CPU per MB |
//!
//! Every result is a [`Report`]: `key=value` pairs printed on one
//! `RESULT` line, so a driver can collect rounds and take medians.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::{cpu_ns, cpu_ticks, rss_kib, steal_ms};
use crate::wss::{Latencies, connect, offers_h2};

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The TLS listener.
    pub addr: SocketAddr,
    /// Host names to spread connections over (SNI and `Host`).
    pub hosts: Vec<String>,
    /// The WebSocket path.
    pub path: String,
    /// TLS client settings (trusting the target's CA); offering `h2`
    /// ([`crate::wss::with_h2`]), each WebSocket opens as an HTTP/2 stream
    /// (RFC 8441) on an HTTP/2 connection of its own.
    pub tls: Arc<ClientConfig>,
    /// The target's processes, whose CPU time and RSS are measured.
    pub pids: Vec<u32>,
}

impl Target {
    fn host(&self, i: usize) -> &str {
        &self.hosts[i % self.hosts.len()]
    }

    fn origin(&self, i: usize) -> String {
        format!("https://{}:{}", self.host(i), self.addr.port())
    }

    /// The HTTP version the WebSockets open with.
    fn http_version(&self) -> u8 {
        if offers_h2(&self.tls) { 2 } else { 1 }
    }

    /// CPU time of the target's processes so far, nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.pids.iter().filter_map(|p| cpu_ns(*p)).sum()
    }

    /// User and system CPU ticks of the target's processes so far.
    pub fn cpu_ticks(&self) -> (u64, u64) {
        self.pids
            .iter()
            .filter_map(|p| cpu_ticks(*p))
            .fold((0, 0), |(u, s), (pu, ps)| (u + pu, s + ps))
    }

    /// Resident memory of the target's processes, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.pids.iter().filter_map(|p| rss_kib(*p)).sum()
    }

    async fn open(&self, i: usize, source: Option<IpAddr>) -> Result<crate::wss::Wss, String> {
        let (host, origin) = (self.host(i), self.origin(i));
        let r = connect(&self.tls, self.addr, source, host, &self.path, &origin).await;
        r.map_err(|e| e.0)
    }
}

/// One measurement: ordered `key=value` pairs.
#[derive(Default, Debug, Clone)]
pub struct Report(pub Vec<(String, String)>);

impl Report {
    /// Adds a pair.
    pub fn put(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        self.0.push((k.to_string(), v.to_string()));
        self
    }

    /// The `RESULT k=v ...` line.
    pub fn line(&self) -> String {
        let mut s = String::from("RESULT");
        for (k, v) in &self.0 {
            let _ = write!(s, " {k}={v}");
        }
        s
    }

    /// Parses a `RESULT` line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix("RESULT")?;
        Some(Self(
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    /// A value by key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric value by key.
    pub fn num(&self, k: &str) -> Option<f64> {
        self.get(k)?.parse().ok()
    }
}

/// Settings of [`echo`].
#[derive(Clone, Debug)]
pub struct EchoOptions {
    /// Concurrent connections.
    pub connections: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Messages in flight per connection (1: closed loop).
    pub pipeline: usize,
    /// Total messages per second over all connections; `None`: as fast as
    /// the target answers. Latency is measured from when a message goes
    /// out, or from its slot when it goes out late (see `paced_start`), so
    /// a stalled target is not hidden.
    pub rate: Option<f64>,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Also write every measured message here, a line each: connection,
    /// send time (µs since the connections were opened) and latency (µs),
    /// in send order. It shows whether slow messages are one connection's
    /// or everyone's at once (a stall of the whole path).
    pub trace: Option<std::path::PathBuf>,
}

/// Where in the interval connection `i` of `n` sends when paced, as a
/// fraction of the interval: evenly spread, so the proxy sees the rate
/// asked for and not bursts of it. (It was `i / 997`, which put 100
/// connections in the first tenth of the interval: at half of nginx's peak
/// the proxies took bursts at five times their peak rate, and the queue
/// of each burst, not the proxy, set the latency: p50 about 3.5 ms for
/// every proxy, against 0.5 ms for the same rate over 10 connections.)
fn pace_phase(i: usize, n: usize) -> f64 {
    (i % n.max(1)) as f64 / n.max(1) as f64
}

/// The instant a paced message's latency is counted from; moves `next`
/// (its slot) on by `interval`.
///
/// On schedule (the slot is still ahead), the message waits for its slot
/// and is timed from when the wait ends: tokio's timer wakes up to a
/// millisecond or two after the slot, and that delay is the load
/// generator's own. Counted from the slot, it made every proxy's p50 about
/// 2 ms at 100 messages/s, against about 0.1 ms in a closed loop. Behind
/// schedule (the previous echo came back after this slot), the message goes
/// at once and is timed from its slot, so a late proxy's delay is counted
/// for the messages it held back too (no coordinated omission).
async fn paced_start(next: &mut Instant, interval: Duration) -> Instant {
    let slot = *next;
    *next += interval;
    if Instant::now() < slot {
        tokio::time::sleep_until(slot.into()).await;
        Instant::now()
    } else {
        slot
    }
}

/// Width of a stall window (see [`stall_windows`]), µs.
const STALL_WINDOW_US: u128 = 20_000;
/// A message this late (µs) counts as slow in a stall window.
const STALL_SLOW_US: u128 = 2_000;

/// Windows of 20 ms (by send time) in which at least half of the
/// `connections` sent a message that took 2 ms or more: moments when the
/// whole path stopped for everyone at once, which is what a paced echo's
/// p99 is made of on a shared machine (BENCHMARKS, "The half-load echo,
/// measured again"). `traced` holds (send µs, connection, latency µs),
/// sorted by send time.
fn stall_windows(traced: &[(u128, usize, u128)], connections: usize) -> usize {
    let need = connections.div_ceil(2).max(1);
    let mut stalls = 0;
    let mut window = None;
    let mut slow = std::collections::HashSet::new();
    for &(at, conn, took) in traced {
        let w = at / STALL_WINDOW_US;
        if window != Some(w) {
            stalls += usize::from(slow.len() >= need);
            slow.clear();
            window = Some(w);
        }
        if took >= STALL_SLOW_US {
            slow.insert(conn);
        }
    }
    stalls + usize::from(slow.len() >= need)
}

/// WSS echo: messages/s, latency percentiles, target CPU per message.
pub async fn echo(t: &Target, o: &EchoOptions) -> Result<Report, String> {
    let mut sockets = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        sockets.push(
            t.open(i, None)
                .await
                .map_err(|e| format!("echo connection {i}: {e}"))?,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let interval = o
        .rate
        .map(|r| Duration::from_secs_f64(o.connections as f64 / r.max(1.0)));
    let mut tasks = Vec::new();
    for (i, ws) in sockets.into_iter().enumerate() {
        let (stop, recording, count) = (stop.clone(), recording.clone(), count.clone());
        let (size, depth, connections) = (o.size, o.pipeline.max(1), o.connections);
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut src) = ws.split();
            // Send times of the messages in flight, oldest first; the
            // writer holds a permit per message in flight.
            let inflight = Arc::new(std::sync::Mutex::new(VecDeque::<Instant>::new()));
            let permits = Arc::new(tokio::sync::Semaphore::new(depth));
            let writer = {
                let (inflight, permits, stop) = (inflight.clone(), permits.clone(), stop.clone());
                async move {
                    let payload = bytes_of(size);
                    let mut next = Instant::now()
                        + interval
                            .map_or(Duration::ZERO, |iv| iv.mul_f64(pace_phase(i, connections)));
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(p) = permits.acquire().await else {
                            break;
                        };
                        p.forget();
                        let scheduled = match interval {
                            Some(iv) => paced_start(&mut next, iv).await,
                            None => Instant::now(),
                        };
                        if let Ok(mut q) = inflight.lock() {
                            q.push_back(scheduled);
                        }
                        // Flush only when no more can go out at once.
                        let r = if permits.available_permits() == 0 || interval.is_some() {
                            sink.send(Message::binary(payload.clone())).await
                        } else {
                            sink.feed(Message::binary(payload.clone())).await
                        };
                        if r.is_err() {
                            return Err("send failed".to_string());
                        }
                    }
                    let _ = sink.flush().await;
                    Ok(sink)
                }
            };
            let reader = async {
                let r = async {
                    let mut lat = Latencies::default();
                    let mut trace = Vec::new();
                    loop {
                        let empty = inflight.lock().map(|q| q.is_empty()).unwrap_or(true);
                        if stop.load(Ordering::Relaxed) && empty {
                            break;
                        }
                        let reply = tokio::time::timeout(Duration::from_secs(10), src.next()).await;
                        match reply {
                            Ok(Some(Ok(Message::Binary(b)))) if b.len() == size => {}
                            Ok(other) => return Err(format!("echo failed: {other:?}")),
                            Err(_) if stop.load(Ordering::Relaxed) => break,
                            Err(_) => return Err("no echo within 10 s".to_string()),
                        }
                        let sent = inflight
                            .lock()
                            .ok()
                            .and_then(|mut q| q.pop_front())
                            .unwrap_or_else(Instant::now);
                        permits.add_permits(1);
                        if recording.load(Ordering::Relaxed) {
                            let took = sent.elapsed();
                            lat.record(took);
                            let at = sent.saturating_duration_since(base).as_micros();
                            trace.push((at, took.as_micros()));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((lat, trace))
                }
                .await;
                // A reader that stopped early frees a writer waiting for credit.
                permits.close();
                r
            };
            let (w, l) = tokio::join!(writer, reader);
            if let Ok(mut sink) = w {
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
            }
            l
        }));
    }
    tokio::time::sleep(o.warmup).await;
    let cpu0 = t.cpu_ns();
    let ticks0 = t.cpu_ticks();
    let steal0 = steal_ms();
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(o.duration).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let n = count.load(Ordering::Relaxed);
    let cpu = t.cpu_ns().saturating_sub(cpu0);
    let ticks = t.cpu_ticks();
    let steal = steal_ms().zip(steal0).map(|(a, b)| a.saturating_sub(b));
    let (user, sys) = (
        ticks.0.saturating_sub(ticks0.0),
        ticks.1.saturating_sub(ticks0.1),
    );
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    let mut traced = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(Ok(Ok((l, trace)))) => {
                all.0.extend(l.0);
                traced.extend(trace.into_iter().map(|(at, took)| (at, i, took)));
            }
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(format!("echo task: {e}")),
            Err(_) => return Err("a connection did not finish within 30 s".into()),
        }
    }
    traced.sort_unstable();
    let stalls = stall_windows(&traced, o.connections);
    if let Some(path) = &o.trace {
        let mut out = String::with_capacity(traced.len() * 20);
        for (at, i, took) in traced {
            let _ = writeln!(out, "{i} {at} {took}");
        }
        std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut r = Report::default();
    r.put("test", "echo")
        .put("http", t.http_version())
        .put("size", o.size)
        .put("connections", o.connections)
        .put("pipeline", o.pipeline)
        .put("rate_target", o.rate.unwrap_or(0.0))
        .put("msgs", n)
        .put(
            "msg_per_s",
            format!("{:.0}", n as f64 / elapsed.as_secs_f64()),
        )
        .put("p50_us", all.percentile(50.0))
        .put("p90_us", all.percentile(90.0))
        .put("p99_us", all.percentile(99.0))
        .put("max_us", all.percentile(100.0))
        .put(
            "cpu_us_per_msg",
            format!("{:.2}", cpu as f64 / 1e3 / n.max(1) as f64),
        )
        .put(
            "cpu_util",
            format!("{:.3}", cpu as f64 / 1e9 / elapsed.as_secs_f64()),
        )
        .put(
            "kernel_pct",
            format!("{:.0}", 100.0 * sys as f64 / (user + sys).max(1) as f64),
        );
    if let Some(steal) = steal {
        r.put("steal_ms", steal);
    }
    r.put("stall_windows", stalls);
    // The latency distribution, for charts: p10..p90 by tens, p95, p99, p99.9.
    let mut dist = String::new();
    for p in [
        10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.9,
    ] {
        let _ = write!(
            dist,
            "{}{}",
            if dist.is_empty() { "" } else { "," },
            all.percentile(p)
        );
    }
    r.put("dist_us", dist);
    Ok(r)
}

fn bytes_of(size: usize) -> tokio_tungstenite::tungstenite::Bytes {
    tokio_tungstenite::tungstenite::Bytes::from(
        (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
}

/// Settings of [`idle`].
#[derive(Clone, Debug)]
pub struct IdleOptions {
    /// Connections to open and hold.
    pub count: usize,
    /// Source addresses 127.0.0.2, 127.0.0.3, …: this many.
    pub sources: u8,
    /// Connections opened at once.
    pub parallel: usize,
    /// How long to hold them before sampling memory.
    pub settle: Duration,
}

/// Idle WSS connections: target RSS per connection.
pub async fn idle(t: &Target, o: &IdleOptions) -> Result<Report, String> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = t.rss_kib();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..o.parallel.max(1) {
        let (t, next, failed, o) = (t.clone(), next.clone(), failed.clone(), o.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut error = None;
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= o.count {
                    break;
                }
                let src = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(o.sources.max(1))) as u8);
                match t.open(i, Some(IpAddr::V4(src))).await {
                    Ok(ws) => held.push(ws),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        error = Some(format!("idle connection {i}: {e}"));
                    }
                }
            }
            (held, error)
        }));
    }
    let mut held = Vec::new();
    let mut error = None;
    for task in tasks {
        let (h, e) = task.await.map_err(|e| format!("idle task: {e}"))?;
        held.extend(h);
        error = error.or(e);
    }
    let opened = started.elapsed();
    tokio::time::sleep(o.settle).await;
    let after = t.rss_kib();
    let n = held.len();
    let per = (after.saturating_sub(before) * 1024) as f64 / n.max(1) as f64;
    let mut r = Report::default();
    r.put("test", "idle")
        .put("http", t.http_version())
        .put("connections", n)
        .put("wanted", o.count)
        .put("open_s", format!("{:.1}", opened.as_secs_f64()))
        .put("rss_before_kib", before)
        .put("rss_after_kib", after)
        .put("bytes_per_conn", format!("{per:.0}"));
    if let Some(e) = error {
        r.put("error", e.replace(' ', "_"));
    }
    drop(held);
    Ok(r)
}

/// Settings of [`handshakes`].
#[derive(Clone, Debug)]
pub struct HandshakeOptions {
    /// Resume sessions (TLS 1.3 tickets) instead of full handshakes.
    pub resume: bool,
    /// Handshake loops at once.
    pub parallel: usize,
    /// Measured time.
    pub duration: Duration,
}

/// TLS handshakes: each connects, completes the handshake, sends
/// `close_notify` and reads to the end (taking the server's tickets).
pub async fn handshakes(t: &Target, o: &HandshakeOptions) -> Result<Report, String> {
    let mut cfg = (*t.tls).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if o.resume {
        cfg.resumption = Resumption::in_memory_sessions(4096);
    } else {
        cfg.resumption = Resumption::disabled();
    }
    let connector = TlsConnector::from(Arc::new(cfg));
    let host = ServerName::try_from(t.host(0).to_string()).map_err(|e| e.to_string())?;
    // Warm up: tickets in the cache for the resumed run.
    for _ in 0..o.parallel.max(1) * 2 {
        one_handshake(&connector, t.addr, &host).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = t.cpu_ns();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.parallel.max(1) {
        let (connector, host, stop, addr) = (connector.clone(), host.clone(), stop.clone(), t.addr);
        tasks.push(tokio::spawn(async move {
            let (mut n, mut resumed, mut lat) = (0u64, 0u64, Latencies::default());
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = one_handshake(&connector, addr, &host).await?;
                lat.record(t0.elapsed());
                n += 1;
                resumed += u64::from(r);
            }
            Ok::<_, String>((n, resumed, lat))
        }));
    }
    tokio::time::sleep(o.duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut n, mut resumed, mut lat) = (0, 0, Latencies::default());
    for task in tasks {
        let (a, b, l) = task.await.map_err(|e| format!("handshake task: {e}"))??;
        n += a;
        resumed += b;
        lat.0.extend(l.0);
    }
    let elapsed = started.elapsed();
    let cpu = t.cpu_ns().saturating_sub(cpu0);
    let mut r = Report::default();
    r.put("test", if o.resume { "tls_resumed" } else { "tls_full" })
        .put("handshakes", n)
        .put("resumed", resumed)
        .put("per_s", format!("{:.0}", n as f64 / elapsed.as_secs_f64()))
        .put("p50_us", lat.percentile(50.0))
        .put("p99_us", lat.percentile(99.0))
        .put(
            "cpu_us_per_handshake",
            format!("{:.1}", cpu as f64 / 1e3 / n.max(1) as f64),
        )
        .put(
            "cpu_util",
            format!("{:.3}", cpu as f64 / 1e9 / elapsed.as_secs_f64()),
        );
    Ok(r)
}

/// One connection: handshake, `close_notify`, read to the end. `true` if
/// the session was resumed.
async fn one_handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    host: &ServerName<'static>,
) -> Result<bool, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(host.clone(), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let _ = tls.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = tls.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(resumed)
}

/// Settings of [`bulk`].
#[derive(Clone, Debug)]
pub struct BulkOptions {
    /// Message size, bytes.
    pub size: usize,
    /// Bytes in flight (at least one message).
    pub window: usize,
    /// Measured time.
    pub duration: Duration,
}

/// One connection echoing large messages: MB/s of payload (one direction).
pub async fn bulk(t: &Target, o: &BulkOptions) -> Result<Report, String> {
    let echo_opts = EchoOptions {
        connections: 1,
        size: o.size,
        pipeline: (o.window / o.size.max(1)).max(1),
        rate: None,
        duration: o.duration,
        warmup: Duration::from_millis(500),
        trace: None,
    };
    let r0 = echo(t, &echo_opts).await?;
    let msgs = r0.num("msg_per_s").unwrap_or(0.0);
    let cpu = r0.num("cpu_us_per_msg").unwrap_or(0.0);
    let mb = msgs * o.size as f64 / 1e6;
    let mut r = Report::default();
    r.put("test", "bulk")
        .put("http", t.http_version())
        .put("size", o.size)
        .put("pipeline", echo_opts.pipeline)
        .put("mb_per_s", format!("{mb:.1}"))
        .put("msg_per_s", format!("{msgs:.1}"))
        .put(
            "cpu_us_per_mb",
            format!("{:.1}", cpu * 1e6 / o.size.max(1) as f64),
        )
        .put("cpu_util", r0.get("cpu_util").unwrap_or("0"))
        .put("kernel_pct", r0.get("kernel_pct").unwrap_or("0"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window counts when half the connections or more were slow in it,
    /// whatever the other windows hold.
    #[test]
    fn stall_windows_count_moments_when_most_connections_were_slow() {
        let mut t = Vec::new();
        // Window 0: all 4 connections fast. Window 1: 2 of 4 slow (a
        // stall). Window 2: 1 of 4 slow, twice (not one). Window 5: 3 of 4
        // slow, and the last window, counted at the end.
        for c in 0..4 {
            t.push((1_000 + c as u128, c, 300));
            t.push((21_000 + c as u128, c, if c < 2 { 2_500 } else { 400 }));
            t.push((41_000 + c as u128, c, if c == 3 { 9_000 } else { 100 }));
            t.push((41_500 + c as u128, c, if c == 3 { 9_000 } else { 100 }));
            t.push((101_000 + c as u128, c, if c > 0 { 2_000 } else { 1_999 }));
        }
        t.sort_unstable();
        assert_eq!(stall_windows(&t, 4), 2);
        assert_eq!(stall_windows(&t, 100), 0, "2 or 3 of 100 is no stall");
        assert_eq!(stall_windows(&[], 100), 0);
    }

    /// Paced connections send at even steps over the whole interval.
    #[test]
    fn paced_connections_spread_over_the_interval() {
        for n in [1, 2, 10, 100, 1000] {
            let mut phases: Vec<f64> = (0..n).map(|i| pace_phase(i, n)).collect();
            phases.sort_by(f64::total_cmp);
            assert_eq!(phases[0], 0.0);
            assert!(phases.iter().all(|p| (0.0..1.0).contains(p)));
            for w in phases.windows(2) {
                let step = w[1] - w[0];
                assert!((step - 1.0 / n as f64).abs() < 1e-9, "n={n}: step {step}");
            }
        }
    }

    /// A message on schedule is timed from when its wait ends, not from
    /// its slot: the timer's lateness is the load generator's.
    #[tokio::test]
    async fn paced_message_on_schedule_is_timed_from_its_send() {
        let slot = Instant::now() + Duration::from_millis(20);
        let mut next = slot;
        let start = paced_start(&mut next, Duration::from_millis(10)).await;
        assert!(start > slot, "timed from the slot, not from the wake-up");
        assert!(start <= Instant::now());
        assert_eq!(next, slot + Duration::from_millis(10));
    }

    /// A message behind schedule goes at once and is timed from its slot,
    /// so the delay that held it back is counted.
    #[tokio::test]
    async fn paced_message_behind_schedule_is_timed_from_its_slot() {
        let slot = Instant::now() - Duration::from_millis(5);
        let mut next = slot;
        let start = paced_start(&mut next, Duration::from_millis(10)).await;
        assert_eq!(start, slot);
        assert_eq!(next, slot + Duration::from_millis(10));
    }
}
