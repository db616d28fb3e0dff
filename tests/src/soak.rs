//! The soak's traffic (`tests/soak.rs`): browsers, attackers and device
//! churn against a gateway, each a task that runs until [`Ctx::stop`] and
//! counts what happened in the shared [`Tally`].
//!
//! - Browsers, from [`LEGIT`]: [`http_worker`] (HTTPS `GET`s on fresh TLS
//!   connections) and [`ws_worker`] (WebSocket sessions of echoed
//!   messages).
//! - Attackers, from [`ATTACK`], each run by [`attacker`] at a bounded
//!   rate and with a bounded number held at once: [`slow_head`],
//!   [`tls_garbage`], [`half_open`], [`oversized`], [`link_garbage`].
//! - [`churn`]: kills and restarts device processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use crate::procs::Proc;
use crate::setup::{DOMAIN, PREFIX};
use crate::wss::connect;

/// Where the legitimate browsers come from.
pub const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Where the attacks come from.
pub const ATTACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// What the traffic did, counted by the clients.
#[derive(Default, Debug)]
pub struct Tally {
    pub http_ok: AtomicU64,
    pub http_err: AtomicU64,
    pub sim_ok: AtomicU64,
    pub sim_err: AtomicU64,
    pub ws_sessions: AtomicU64,
    pub ws_ok: AtomicU64,
    pub ws_err: AtomicU64,
    pub churns: AtomicU64,
    pub slow_heads: AtomicU64,
    /// Longest a slow head was held open before the gateway closed it, ms.
    pub slow_longest_ms: AtomicU64,
    pub garbage: AtomicU64,
    pub half_open: AtomicU64,
    pub oversized: AtomicU64,
    /// Oversized heads that got their 431 back (the others were reset
    /// while still sending: the gateway closes once the limit is read).
    pub oversized_431: AtomicU64,
    pub link_garbage: AtomicU64,
}

/// A counter's value.
pub fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Adds one.
pub fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Everything the traffic tasks share.
pub struct Ctx {
    /// TLS trusting the gateway's CA, ALPN http/1.1.
    pub tls: Arc<ClientConfig>,
    /// The gateway's HTTPS listener.
    pub https: SocketAddr,
    /// The gateway's device link listener.
    pub link: SocketAddr,
    /// Echo devices `dev-0000` … to address.
    pub echo_devices: usize,
    /// Churned devices `sim-0000` … to address.
    pub sims: usize,
    /// The gateway's header and TLS handshake timers.
    pub timer: Duration,
    /// Set when the soak is over.
    pub stop: AtomicBool,
    /// What happened.
    pub tally: Tally,
}

impl Ctx {
    /// Whether the soak is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, or less once the soak stops.
    pub async fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopped() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now())).await;
        }
    }
}

pub async fn tcp_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(source, 0))?;
    s.connect(to).await
}

pub async fn tls_from(
    ctx: &Ctx,
    source: IpAddr,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = tcp_from(source, ctx.https)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    TlsConnector::from(ctx.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))
}

/// Reads until the peer closes (or fails), at most `limit`; what came.
pub async fn drain(io: &mut (impl AsyncRead + Unpin), limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 8192];
        while let Ok(k) = io.read(&mut buf).await {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
    })
    .await;
    got
}

/// The status code and body length of an HTTP/1.1 response.
pub fn status(resp: &[u8]) -> (u16, usize) {
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |i| i + 4);
    let code = std::str::from_utf8(&resp[..head_end.min(resp.len())])
        .ok()
        .and_then(|h| h.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0);
    (code, resp.len() - head_end)
}

/// `GET path` at `host` on a fresh TLS connection: status and body length.
pub async fn get(ctx: &Ctx, host: &str, path: &str) -> Result<(u16, usize), String> {
    let mut io = tls_from(ctx, LEGIT, host).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    Ok(status(&drain(&mut io, Duration::from_secs(10)).await))
}

/// HTTPS requests, alternating a stable echo device and a churned one.
pub async fn http_worker(ctx: Arc<Ctx>, worker: usize) {
    let mut i = worker;
    while !ctx.stopped() {
        let echo = format!("{PREFIX}-{:04}.{DOMAIN}", i % ctx.echo_devices);
        match get(&ctx, &echo, "/bytes?n=4096").await {
            Ok((200, len)) if len >= 4096 => bump(&ctx.tally.http_ok),
            other => {
                bump(&ctx.tally.http_err);
                eprintln!("soak: GET {echo}/bytes: {other:?}");
            }
        }
        let sim = format!("sim-{:04}.{DOMAIN}", i % ctx.sims);
        match get(&ctx, &sim, "/api/status").await {
            Ok((200, _)) => bump(&ctx.tally.sim_ok),
            _ => bump(&ctx.tally.sim_err),
        }
        i += 1;
        ctx.pause(Duration::from_millis(100)).await;
    }
}

/// WebSocket sessions of 20 echoed messages each, one after the other.
pub async fn ws_worker(ctx: Arc<Ctx>, worker: usize) {
    let mut i = worker;
    let mut seed = 0x9e37_79b9u32.wrapping_mul(worker as u32 + 1);
    while !ctx.stopped() {
        let id = format!("{PREFIX}-{:04}", i % ctx.echo_devices);
        let host = format!("{id}.{DOMAIN}");
        let origin = format!("https://{host}:{}", ctx.https.port());
        i += 1;
        let mut ws = match connect(&ctx.tls, ctx.https, Some(LEGIT), &host, "/ws", &origin).await {
            Ok(ws) => ws,
            Err(e) => {
                bump(&ctx.tally.ws_err);
                eprintln!("soak: WebSocket to {host}: {e}");
                ctx.pause(Duration::from_millis(500)).await;
                continue;
            }
        };
        for _ in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let payload = vec![seed as u8; 1 + (seed as usize % 8192)];
            let echoed = async {
                ws.send(Message::binary(payload.clone())).await.ok()?;
                match ws.next().await? {
                    Ok(Message::Binary(b)) => Some(b == payload),
                    _ => None,
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), echoed).await {
                Ok(Some(true)) => bump(&ctx.tally.ws_ok),
                other => {
                    bump(&ctx.tally.ws_err);
                    eprintln!("soak: WebSocket echo on {host}: {other:?}");
                    break;
                }
            }
        }
        let _ = ws.close(None).await;
        bump(&ctx.tally.ws_sessions);
        ctx.pause(Duration::from_millis(50)).await;
    }
}

/// Kills (SIGKILL) and restarts one of `sims` every `every` (`start(k)`
/// starts the `k`th again); gives them back when the soak is over.
pub async fn churn(
    ctx: Arc<Ctx>,
    every: Duration,
    mut sims: Vec<Proc>,
    start: impl Fn(usize) -> Proc,
) -> Vec<Proc> {
    let mut next = 0;
    loop {
        ctx.pause(every).await;
        if ctx.stopped() {
            return sims;
        }
        let k = next % sims.len();
        next += 1;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(sims[k].pid()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        for _ in 0..50 {
            if !sims[k].running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        sims[k] = start(k);
        bump(&ctx.tally.churns);
    }
}

/// Runs `attack` every `every`, at most `held` at once.
pub async fn attacker<F, Fut>(ctx: Arc<Ctx>, every: Duration, held: usize, attack: F)
where
    F: Fn(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(held));
    while !ctx.stopped() {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            let one = attack(ctx.clone());
            tokio::spawn(async move {
                one.await;
                drop(permit);
            });
        }
        ctx.pause(every).await;
    }
}

/// Bytes that are neither TLS nor the link protocol.
pub fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 7) as u8 | 0x80).collect()
}

/// A request head sent a byte a second, until the gateway closes it.
pub async fn slow_head(ctx: Arc<Ctx>) {
    let host = format!("{PREFIX}-0000.{DOMAIN}");
    let Ok(mut io) = tls_from(&ctx, ATTACK, &host).await else {
        return;
    };
    bump(&ctx.tally.slow_heads);
    let t = Instant::now();
    let head = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = io.read(&mut buf) => match r {
                Ok(k) if k > 0 => continue,
                _ => break,
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if io.write_all(b"a").await.is_err() || t.elapsed() > 4 * ctx.timer {
                    break;
                }
            }
        }
    }
    ctx.tally
        .slow_longest_ms
        .fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Garbage instead of a TLS ClientHello.
pub async fn tls_garbage(ctx: Arc<Ctx>) {
    let Ok(mut s) = tcp_from(ATTACK, ctx.https).await else {
        return;
    };
    bump(&ctx.tally.garbage);
    let _ = s.write_all(&garbage(512)).await;
    drain(&mut s, 3 * ctx.timer).await;
}

/// A TCP connection that never starts TLS.
pub async fn half_open(ctx: Arc<Ctx>) {
    let Ok(mut s) = tcp_from(ATTACK, ctx.https).await else {
        return;
    };
    bump(&ctx.tally.half_open);
    drain(&mut s, 4 * ctx.timer).await;
}

/// A request head twice the gateway's limit (16 KiB).
pub async fn oversized(ctx: Arc<Ctx>) {
    let host = format!("{PREFIX}-0001.{DOMAIN}");
    let Ok(mut io) = tls_from(&ctx, ATTACK, &host).await else {
        return;
    };
    bump(&ctx.tally.oversized);
    let head = format!(
        "GET /echo HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(32 * 1024)
    );
    let _ = io.write_all(head.as_bytes()).await;
    if status(&drain(&mut io, 2 * ctx.timer).await).0 == 431 {
        bump(&ctx.tally.oversized_431);
    }
}

/// Garbage on the device link instead of a handshake.
pub async fn link_garbage(ctx: Arc<Ctx>) {
    let Ok(mut s) = tcp_from(ATTACK, ctx.link).await else {
        return;
    };
    bump(&ctx.tally.link_garbage);
    let _ = s.write_all(&garbage(256)).await;
    drain(&mut s, 3 * ctx.timer).await;
}
