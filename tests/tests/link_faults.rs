//! Faults on the device link (issue 6): what browsers see when the link
//! between a device and the gateway is delayed, throttled, reset, or the
//! device process freezes (SIGSTOP) or dies (SIGKILL).
//!
//! Everything on loopback. The gateway runs in the test with short link
//! timers (`[link] keepalive = "300ms"`, `idle_timeout = "1500ms"`), so a
//! silent device is given up within 1.5 s.
//!
//! - [`proxy_delay_throttle_and_reset`]: an `EchoApp` device dials the
//!   gateway through [`FaultProxy`], a userspace proxy that adds delay,
//!   throttles, or resets every connection (RST). Delay and throttle: the
//!   session survives, transfers are byte-exact. Reset mid-transfer: the
//!   WebSocket gets a close frame, every message received before is an
//!   exact echo, the HTTP download fails instead of ending short as if
//!   complete, the gateway's counts (devices online, WebSockets open)
//!   return to baseline, and the device is back on its own.
//! - [`device_sim_freeze_and_kill`]: the `device-sim` binary (the sample
//!   controller) with its `/ws` readings: SIGSTOP → the gateway closes the
//!   browser's WebSocket cleanly once the link is idle; SIGCONT → the device
//!   reconnects by itself; SIGKILL mid-stream → clean close, no truncated
//!   message; a restarted process comes back.

use e2e::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use proto::{Backoff, Config, Params, PublicKey, SecretKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const DOMAIN: &str = "faults.test";
/// The gateway's link idle timeout (see the configuration below).
const IDLE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------- proxy

/// What [`FaultProxy`] does to the bytes it relays.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Added to every chunk, each direction.
    delay: Duration,
    /// Bytes per second each direction; `None`: unlimited.
    rate: Option<u64>,
}

/// A TCP proxy on 127.0.0.1 toward `target` with adjustable faults.
struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    reset: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(target: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (reset, _) = watch::channel(0u64);
        let (f, r) = (faults.clone(), reset.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                let Ok(up) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(relay(down, up, f.clone(), r.subscribe()));
            }
        });
        Self {
            addr,
            faults,
            reset,
            task,
        }
    }

    fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    /// Resets (RST) every connection open now.
    fn reset_all(&self) {
        self.reset.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.reset_all();
    }
}

async fn relay(
    a: TcpStream,
    b: TcpStream,
    faults: Arc<Mutex<Faults>>,
    reset: watch::Receiver<u64>,
) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let one = pump(ar, bw, faults.clone(), reset.clone());
    let two = pump(br, aw, faults, reset);
    tokio::join!(one, two);
}

/// Copies `from` to `to`, each chunk held back by the delay and paced by
/// the rate in force when it is read. On a reset: linger 0 and no FIN, so
/// the socket's close (both halves gone) sends RST.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Mutex<Faults>>,
    mut reset: watch::Receiver<u64>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(16);
    let reader = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now(), Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        drop(tx);
    };
    let writer = async {
        while let Some((read_at, chunk)) = rx.recv().await {
            let f = *faults.lock().expect("faults");
            tokio::time::sleep_until((read_at + f.delay).into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            if let Some(rate) = f.rate {
                let secs = chunk.len() as f64 / rate as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
        }
    };
    let was_reset = tokio::select! {
        _ = reset.changed() => true,
        _ = async { tokio::join!(reader, writer) } => false,
    };
    if was_reset {
        let _ = to.as_ref().set_zero_linger();
        to.forget();
    } else {
        let _ = to.shutdown().await;
    }
}

// ---------------------------------------------------------------- gateway

struct Gw {
    server: Option<Server>,
    http: SocketAddr,
    link: SocketAddr,
    gateway_key: PublicKey,
    _dir: TempDir,
}

impl Gw {
    /// A gateway with plain HTTP for browsers (loopback only) and the
    /// given devices (id, public key), all public.
    async fn start(tag: &str, devices: &[(&str, PublicKey)]) -> Self {
        let dir = TempDir::new(tag);
        let k = gateway::keys::generate().expect("key");
        gateway::keys::write_key_file(&dir.path().join("gateway.key"), &k, false)
            .expect("key file");
        let opts = SocketOptions::default();
        let http = listener::bind("127.0.0.1:0".parse().expect("addr"), &opts).expect("bind");
        let link = listener::bind("127.0.0.1:0".parse().expect("addr"), &opts).expect("bind");
        let (hp, lp) = (
            http.local_addr().expect("addr").port(),
            link.local_addr().expect("addr").port(),
        );
        let mut text = format!(
            "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"1s\"\n\n\
             [[listen]]\naddress = \"127.0.0.1:{hp}\"\ntls = false\n\n\
             [websocket]\nping_interval = \"1s\"\n\n\
             [link]\naddress = \"127.0.0.1:{lp}\"\nkeepalive = \"300ms\"\nidle_timeout = \"{}ms\"\n",
            IDLE.as_millis()
        );
        for (id, key) in devices {
            text.push_str(&format!(
                "\n[[device]]\nid = \"{id}\"\npublic = true\npublic_key = \"{key}\"\nallowed_origins = [\"http://{id}.{DOMAIN}\"]\n"
            ));
        }
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, &text).expect("config");
        let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let server = Server::start_on(
            &config,
            Listeners {
                link,
                edges: vec![http],
            },
        )
        .expect("start");
        Self {
            http: server.edge_addrs[0],
            link: server.link_addr,
            server: Some(server),
            gateway_key: k.public_key(),
            _dir: dir,
        }
    }

    fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    fn online(&self) -> Vec<String> {
        let mut v = self.server().hub.online();
        v.sort();
        v
    }

    fn ws_open(&self) -> u64 {
        self.server().bridge.stats.ws_open.load(Ordering::Relaxed)
    }

    fn sessions_started(&self) -> u64 {
        self.server()
            .hub
            .stats
            .sessions_started
            .load(Ordering::Relaxed)
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
        }
    }
}

async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws(addr: SocketAddr, host: &str, path: &str, protocol: Option<&str>) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("ws://{host}{path}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", format!("http://{host}").parse().expect("header"));
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().expect("header"));
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(req, tcp),
    )
    .await
    .expect("upgrade in time")
    .expect("upgrade");
    ws
}

/// How a WebSocket ended: `Ok(code)` for a close frame, `Err` for a
/// connection that died without one. `check` sees every message before.
async fn ended(
    ws: &mut Ws,
    limit: Duration,
    mut check: impl FnMut(&Message),
) -> Result<u16, String> {
    let deadline = Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .map_err(|_| format!("no close within {limit:?}"))?;
        match next {
            Some(Ok(Message::Close(frame))) => {
                // Answer the close as a browser does (tungstenite sends
                // its reply while the stream is polled to its end).
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while ws.next().await.is_some() {}
                })
                .await;
                return Ok(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(m)) => check(&m),
            Some(Err(e)) => return Err(format!("closed without a close frame: {e}")),
            None => return Err("stream ended without a close frame".into()),
        }
    }
}

// ---------------------------------------------------------------- tests

fn echo_key() -> SecretKey {
    SecretKey::from_bytes([0x17; 32])
}

async fn echo_device(link: SocketAddr, gateway: PublicKey) {
    const RECORD: usize = 16 * 1024 + 18;
    let mut app = EchoApp::new(EchoOptions {
        device_id: "echo".into(),
        firmware: "faults".into(),
        subprotocols: Vec::new(),
        raw_service: false,
    });
    let identity = Identity {
        key: echo_key(),
        gateway,
    };
    let cfg = LinkConfig {
        session: Config {
            params: Params {
                max_record: RECORD as u16,
                max_streams: 8,
                stream_window: 256 * 1024,
                conn_window: 1024 * 1024,
            },
            keepalive: Duration::from_millis(300),
            idle_timeout: IDLE,
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
    };
    let mut platform = TokioPlatform::new(link);
    let mut mem: Box<LinkMemory<RECORD, 8>> = Box::new(LinkMemory::new());
    run(&mut platform, &mut app, &identity, &cfg, &mut mem).await;
}

async fn http_get(addr: SocketAddr, host: &str, target: &str) -> Result<(u16, Bytes), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(target)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

fn pattern_ok(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_delay_throttle_and_reset() {
    // 8 × 2 KB in flight on the WebSocket when the link is reset.
    proxy_faults(8, 2_000).await;
}

/// The same with 1 MB of browser messages in flight: the gateway keeps
/// reading the browser's messages after the link is lost until the
/// browser's close, so the close frame arrives instead of a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_reset_with_a_busy_websocket() {
    proxy_faults(50, 20_000).await;
}

async fn proxy_faults(burst: u32, size: u32) {
    let gw = Gw::start("faults-proxy", &[("echo", echo_key().public_key())]).await;
    let base_ws = gw.ws_open();
    assert!(gw.online().is_empty());
    let proxy = FaultProxy::start(gw.link).await;
    let device = tokio::spawn(echo_device(proxy.addr, gw.gateway_key));
    eventually(Duration::from_secs(10), "echo online", || {
        gw.online() == ["echo"]
    })
    .await;
    let host = format!("echo.{DOMAIN}");
    let sessions = gw.sessions_started();

    // Delay: 80 ms each way; everything arrives, the session stays.
    proxy.set(Faults {
        delay: Duration::from_millis(80),
        rate: None,
    });
    let mut w = ws(gw.http, &host, "/ws", None).await;
    for i in 0..5 {
        let m = Message::text(format!("delayed {i}"));
        w.send(m.clone()).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("echo in time");
        assert_eq!(got.expect("open").expect("message"), m);
    }
    let t = Instant::now();
    let (status, body) = http_get(gw.http, &host, "/bytes?n=1000000")
        .await
        .expect("GET with delay");
    assert_eq!(status, 200);
    assert!(body.len() == 1_000_000 && pattern_ok(&body));
    println!("delay 80 ms each way: 1 MB in {:?}", t.elapsed());

    // Throttle: 2 MB/s each way.
    proxy.set(Faults {
        delay: Duration::ZERO,
        rate: Some(2_000_000),
    });
    let t = Instant::now();
    let (status, body) = http_get(gw.http, &host, "/bytes?n=1000000")
        .await
        .expect("GET throttled");
    assert_eq!(status, 200);
    assert!(body.len() == 1_000_000 && pattern_ok(&body));
    let took = t.elapsed();
    println!("throttle 2 MB/s: 1 MB in {took:?}");
    assert!(
        took >= Duration::from_millis(400),
        "the throttle did not act: {took:?}"
    );
    assert_eq!(
        gw.sessions_started(),
        sessions,
        "delay and throttle must not cost the session"
    );

    // Reset mid-transfer: a throttled 20 MB download and WebSocket
    // messages in flight.
    proxy.set(Faults {
        delay: Duration::ZERO,
        rate: Some(1_000_000),
    });
    let download = tokio::spawn({
        let (addr, host) = (gw.http, host.clone());
        async move { http_get(addr, &host, "/bytes?n=20000000").await }
    });
    let sent: Vec<Vec<u8>> = (0..burst)
        .map(|i| {
            (0..size)
                .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 256) as u8)
                .collect()
        })
        .collect();
    for m in &sent {
        w.send(Message::binary(m.clone())).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = Instant::now();
    proxy.reset_all();
    let mut received = 0usize;
    let end = ended(&mut w, Duration::from_secs(5), |m| {
        if let Message::Binary(b) = m {
            assert!(
                received < sent.len() && b.as_ref() == &sent[received][..],
                "message {received} corrupted or out of order"
            );
            received += 1;
        } else if let Message::Text(t) = m {
            assert!(t.starts_with("delayed"), "unexpected {t:?}");
        }
    })
    .await;
    let close_after = t.elapsed();
    println!(
        "reset: WebSocket ended {end:?} after {close_after:?}, {received} of {} echoes before, all exact",
        sent.len()
    );
    let code = end.expect("a close frame, not a dead connection");
    assert_ne!(code, 1000, "a device loss is not a normal closure");
    let got = tokio::time::timeout(Duration::from_secs(5), download)
        .await
        .expect("download ends in time")
        .expect("task");
    match &got {
        Ok((status, body)) => assert!(
            *status != 200 || body.len() == 20_000_000,
            "a cut download must not look complete: {status}, {} B",
            body.len()
        ),
        Err(e) => println!("reset: the download failed as it must: {e}"),
    }
    let back = eventually(
        Duration::from_secs(5),
        "the device back after the reset",
        || gw.sessions_started() > sessions && gw.online() == ["echo"],
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "WebSockets back to baseline",
        || gw.ws_open() == base_ws,
    )
    .await;
    println!("reset: device back {back:?} after the close; WebSockets open back to {base_ws}");

    // The new session works.
    proxy.set(Faults::default());
    let (status, body) = http_get(gw.http, &host, "/bytes?n=100000")
        .await
        .expect("GET after reset");
    assert!(status == 200 && body.len() == 100_000 && pattern_ok(&body));

    device.abort();
    drop(proxy);
    eventually(Duration::from_secs(5), "devices back to baseline", || {
        gw.online().is_empty()
    })
    .await;
    gw.stop().await;
}

fn device_sim() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/device-sim
    let exe = std::env::current_exe().expect("exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("device-sim");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p device-fw --features host --bin device-sim`",
        bin.display()
    );
    bin
}

/// A `device-sim` child, killed (by its pid) on drop.
struct Sim(tokio::process::Child);

impl Sim {
    fn start(dir: &TempDir, gw: &Gw) -> Self {
        let child = tokio::process::Command::new(device_sim())
            .args([
                "--gateway",
                &gw.link.to_string(),
                "--gateway-key",
                &gw.gateway_key.to_string(),
            ])
            .arg("--key-file")
            .arg(dir.path().join("sim.key"))
            .args(["--id", "sim"])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("DEVICE_SIM_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("start device-sim");
        Self(child)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.0.id().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("signal");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // SIGCONT first: a stopped process cannot act on SIGKILL's cleanup.
        if let Some(pid) = self.0.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
        let _ = self.0.start_kill();
    }
}

/// A readings message is one complete JSON object.
fn whole_json(m: &Message) {
    if let Message::Text(t) = m {
        let t = t.as_str();
        let depth = t.chars().try_fold(0i32, |d, c| match c {
            '{' => Some(d + 1),
            '}' if d > 0 => Some(d - 1),
            '}' => None,
            _ => Some(d),
        });
        assert!(
            t.starts_with('{') && t.ends_with('}') && depth == Some(0),
            "partial message {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sim_freeze_and_kill() {
    use nix::sys::signal::Signal;
    let key = SecretKey::from_bytes([0x29; 32]);
    let gw = Gw::start("faults-sim", &[("sim", key.public_key())]).await;
    let dir = TempDir::new("faults-sim-key");
    std::fs::write(dir.path().join("sim.key"), hex(&key.to_bytes())).expect("key file");
    let base_ws = gw.ws_open();
    let host = format!("sim.{DOMAIN}");

    let mut sim = Sim::start(&dir, &gw);
    eventually(Duration::from_secs(10), "device-sim online", || {
        gw.online() == ["sim"]
    })
    .await;

    // SIGSTOP: the device is silent, its socket still open.
    let mut w = ws(gw.http, &host, "/ws", Some("readings.v1")).await;
    let mut readings = 0;
    while readings < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("readings")
            .expect("open")
            .expect("message");
        whole_json(&m);
        readings += 1;
    }
    sim.signal(Signal::SIGSTOP);
    let t = Instant::now();
    let end = ended(&mut w, IDLE + Duration::from_secs(3), whole_json).await;
    let took = t.elapsed();
    println!("SIGSTOP: WebSocket ended {end:?} after {took:?} (link idle timeout {IDLE:?})");
    end.expect("a close frame");
    eventually(Duration::from_secs(3), "the frozen device offline", || {
        gw.online().is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(3),
        "WebSockets back to baseline",
        || gw.ws_open() == base_ws,
    )
    .await;
    let sessions = gw.sessions_started();
    sim.signal(Signal::SIGCONT);
    let back = eventually(
        Duration::from_secs(10),
        "device-sim back after SIGCONT",
        || gw.sessions_started() > sessions && gw.online() == ["sim"],
    )
    .await;
    println!("SIGCONT: device back on its own after {back:?}");

    // SIGKILL mid-stream.
    let mut w = ws(gw.http, &host, "/ws", Some("readings.v1")).await;
    let m = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("readings")
        .expect("open")
        .expect("message");
    whole_json(&m);
    sim.signal(Signal::SIGKILL);
    let t = Instant::now();
    let end = ended(&mut w, Duration::from_secs(3), whole_json).await;
    println!("SIGKILL: WebSocket ended {end:?} after {:?}", t.elapsed());
    end.expect("a close frame");
    let _ = tokio::time::timeout(Duration::from_secs(5), sim.0.wait()).await;
    eventually(Duration::from_secs(3), "the killed device offline", || {
        gw.online().is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(3),
        "WebSockets back to baseline",
        || gw.ws_open() == base_ws,
    )
    .await;

    // A restarted process comes back.
    drop(sim);
    let sim = Sim::start(&dir, &gw);
    let back = eventually(
        Duration::from_secs(10),
        "device-sim back after restart",
        || gw.online() == ["sim"],
    )
    .await;
    println!("restart: device back after {back:?}");
    let (status, body) = http_get(gw.http, &host, "/api/status")
        .await
        .expect("status");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(sim);
    eventually(Duration::from_secs(5), "devices back to baseline", || {
        gw.online().is_empty()
    })
    .await;
    gw.stop().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
