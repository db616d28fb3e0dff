//! Slow clients from a real attack tool: Debian's `slowhttptest` over TLS
//! against a real gateway, in its three modes, with thousands of
//! connections each:
//!
//! - slow headers (`-H`, Slowloris): closed by `[http] header_timeout`;
//! - slow body (`-B`, R-U-Dead-Yet): closed by `[gateway.limits] min_body_rate`;
//! - slow read (`-X`): closed by `[gateway.limits] send_timeout` (and the
//!   header timer once their responses are out).
//!
//! Meanwhile a probe client opens a fresh TLS connection for every request
//! to another device; its p99 stays under 1 s. Once slowhttptest has opened
//! its connections, the gateway must have closed them within their timer
//! (plus slack) while slowhttptest still runs, so a missing timer fails
//! the test. The process's RSS stays under [`RSS_CAP`]. The per-address
//! cap is raised here (all connections come from 127.0.0.1): the timers
//! are under test, not the caps (`hardening_edge.rs`).
//!
//! `slowhttptest` missing: skipped with a loud message, a failure in CI.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::TempDir;
use common::harness::{Gw, empty, get, link_config, link_config_streams};
use gateway::edge::admission::Usage;
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};

/// The whole test process (gateway, devices, probe) stays below this.
const RSS_CAP: u64 = 384 << 20;
/// The timers under test.
const TIMER: Duration = Duration::from_secs(5);
/// Time allowed beyond a timer: tick granularity and a busy machine.
const SLACK: Duration = Duration::from_secs(4);

/// `slowhttptest` from `PATH`, or `None` after a loud skip message
/// (a panic when `CI=true`).
fn slowhttptest() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("slowhttptest"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "`slowhttptest` is not installed (apt-get install slowhttptest)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true, so this is a failure");
        }
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!\nSKIPPED: {msg}\n!!!!!!!!!!\n"
        );
    }
    found
}

/// A gateway for `localhost` (slowhttptest cannot be told where a name
/// resolves; `localhost` is in every hosts file), devices by path. The
/// link's connection window covers every stream's window (256 × 16 KiB),
/// so a stream whose reader stalls never starves the device's others:
/// the edge's timers are under test here, not the link's stall timeout.
async fn start() -> Gw {
    let dir = TempDir::new("slow");
    let ca = gateway::edge::tls::local_ca(&["localhost".to_string()]).unwrap();
    dir.write("tls/fullchain.pem", &ca.chain_pem);
    dir.write("tls/privkey.pem", &ca.key_pem);
    let gateway_key = dir.key();
    let opts = SocketOptions::default();
    let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let port = https.local_addr().unwrap().port();
    let link_port = link.local_addr().unwrap().port();
    let t = TIMER.as_secs();
    let mut text = format!(
        "[gateway]\ndomain = \"localhost\"\ndrain_timeout = \"2s\"\n\n\
         [gateway.limits]\nmax_connections = 15000\nmax_connections_per_address = 15000\n\
         send_timeout = \"{t}s\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [tls]\ncertificates = [{{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }}]\n\
         handshake_timeout = \"20s\"\n\n\
         [http]\nheader_timeout = \"{t}s\"\n\n\
         [link]\naddress = \"127.0.0.1:{link_port}\"\n\
         stream_window = \"16KiB\"\nconn_window = \"16MiB\"\n"
    );
    for id in ["plc", "probe"] {
        text.push_str(&format!(
            "\n[[device]]\nid = \"{id}\"\npublic_key = \"{}\"\npublic = true\n",
            common::harness::device_key(id).public_key()
        ));
    }
    let file = dir.write("gateway.toml", &text);
    let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let server = Server::start_on(
        &config,
        Listeners {
            link,
            edges: vec![https],
        },
    )
    .unwrap();
    Gw {
        addr: server.edge_addrs[0],
        link: server.link_addr,
        server: Some(server),
        dir,
        gateway_key,
        ca_pem: ca.ca_pem,
    }
}

/// A child process killed (by its own handle) when dropped.
struct Attack(Child);

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// slowhttptest's test length (`-l`): without the gateway's timers, it
/// holds its connections this long.
const LENGTH: Duration = Duration::from_secs(60);

/// What one attack did to the gateway.
#[derive(Debug)]
struct Outcome {
    /// Connections slowhttptest made.
    total: u64,
    /// Most browser connections open at once.
    peak_open: u64,
    /// Open connections `TIMER + SLACK` after the last new one.
    open_after_timer: u64,
    /// When that was, from the start of the attack.
    judged_at: Duration,
    /// slowhttptest's `-l`.
    length: Duration,
    /// Highest RSS seen.
    max_rss: u64,
    /// Probe latencies.
    p99: Duration,
    probes: usize,
}

/// Requests `/d/probe/head` on a fresh TLS connection every 100 ms until
/// `stop`, counting its connections in `connects`.
fn probe(
    gw: &Gw,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    let target = ProbeGw {
        addr: gw.addr,
        ca_pem: gw.ca_pem.clone(),
    };
    tokio::spawn(async move {
        let mut lat = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            connects.fetch_add(1, Ordering::Relaxed);
            let status = tokio::time::timeout(Duration::from_secs(5), target.head()).await;
            lat.push(if status.ok() == Some(200) {
                t.elapsed()
            } else {
                Duration::from_secs(5)
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lat
    })
}

struct ProbeGw {
    addr: std::net::SocketAddr,
    ca_pem: String,
}

impl ProbeGw {
    async fn head(&self) -> u16 {
        // The harness's client, on a gateway value that borrows nothing.
        let gw = Gw {
            dir: TempDir::new("probe"),
            server: None,
            addr: self.addr,
            link: self.addr,
            gateway_key: common::harness::device_key("x").public_key(),
            ca_pem: self.ca_pem.clone(),
        };
        let mut c = gw.client(1, "localhost").await;
        let (p, _) = c
            .fetch(get(1, "localhost", "/d/probe/head").body(empty()).unwrap())
            .await;
        p.status.as_u16()
    }
}

async fn attack(gw: &Gw, bin: &std::path::Path, args: &[&str]) -> Outcome {
    let stats = gw.server().edge_stats.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicU64::new(0));
    let prober = probe(gw, stop.clone(), connects.clone());
    // The attack's connections: all accepted but the probe's.
    let attack_accepted = || {
        let probes = connects.load(Ordering::Relaxed);
        stats
            .accepted
            .load(Ordering::Relaxed)
            .saturating_sub(probes)
    };
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("slowhttptest starts");
    let mut attack = Attack(child);
    let (mut peak_open, mut max_rss) = (0u64, 0u64);
    let first = attack_accepted();
    let mut accepted = first;
    let mut last_new = Instant::now();
    let mut seen_any = false;
    let mut after = None;
    let started = Instant::now();
    let length = args
        .iter()
        .position(|a| *a == "-l")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .map_or(LENGTH, Duration::from_secs);
    while started.elapsed() < length + Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let open = stats.open.load(Ordering::Relaxed);
        peak_open = peak_open.max(open);
        max_rss = max_rss.max(Usage::sample().rss);
        let now_accepted = attack_accepted();
        if now_accepted > accepted + 1 {
            accepted = now_accepted;
            last_new = Instant::now();
            seen_any = true;
        }
        let alive = attack.0.try_wait().ok().flatten().is_none();
        if seen_any && after.is_none() && last_new.elapsed() >= TIMER + SLACK {
            after = Some((open, started.elapsed()));
        }
        if !alive && after.is_some() {
            break;
        }
    }
    drop(attack);
    stop.store(true, Ordering::Relaxed);
    let mut lat = prober.await.unwrap();
    lat.sort();
    let (open_after_timer, judged_at) = after.unwrap_or((u64::MAX, length));
    Outcome {
        total: attack_accepted().saturating_sub(first),
        peak_open,
        open_after_timer,
        judged_at,
        length,
        max_rss,
        p99: lat[(lat.len() * 99 / 100).min(lat.len() - 1)],
        probes: lat.len(),
    }
}

/// Checks `o` for an attack of `connections`, at least `min_peak` of
/// which were held at once; with `settle`, that all were closed within
/// the timer once they stopped coming.
fn check(what: &str, o: &Outcome, connections: u64, min_peak: u64, settle: bool) {
    eprintln!("slowhttptest {what}: {o:?}");
    assert!(
        o.total >= connections * 9 / 10,
        "{what}: slowhttptest made only {} connections",
        o.total
    );
    assert!(
        o.peak_open >= min_peak,
        "{what}: only {} connections were ever open at once",
        o.peak_open
    );
    assert!(
        o.p99 < Duration::from_secs(1),
        "{what}: probe p99 {:?}",
        o.p99
    );
    assert!(o.probes >= 10, "{what}: only {} probes", o.probes);
    assert!(o.max_rss < RSS_CAP, "{what}: RSS {} MiB", o.max_rss >> 20);
    if !settle {
        return;
    }
    // Judged while slowhttptest would still hold its connections had the
    // gateway not closed them (it ends early once all are closed).
    assert!(
        o.judged_at + Duration::from_secs(2) < o.length,
        "{what}: judged at {:?}, after slowhttptest's own end",
        o.judged_at
    );
    assert!(
        o.open_after_timer <= 10,
        "{what}: {} connections still open {:?} after the last one came",
        o.open_after_timer,
        TIMER + SLACK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_slow_headers_body_and_read_are_cut_off_by_their_timers() {
    let Some(bin) = slowhttptest() else {
        return;
    };
    let gw = start().await;
    let _probe = gw.echo("probe", &[], link_config(4096, 16384, 1024)).await;
    // Room for 256 slow requests at once on the attacked device.
    let _plc = gw
        .echo_wide::<256>("plc", link_config_streams(4096, 1 << 20, 1024, 256))
        .await;
    let port = gw.addr.port();
    let base = format!("https://localhost:{port}/d/plc");
    let t = TIMER.as_secs();
    let length = LENGTH.as_secs().to_string();

    // HARDENING_SLOW_MODES=HBX (the default) picks the attacks to run.
    let modes = std::env::var("HARDENING_SLOW_MODES").unwrap_or_else(|_| "HBX".into());
    let mut header = 0.0;
    if modes.contains('H') {
        // Slow headers: 3000 connections, a header line every 2 s.
        let url = format!("{base}/head");
        let o = attack(
            &gw,
            &bin,
            &[
                "-H", "-c", "3000", "-r", "1000", "-i", "2", "-x", "10", "-l", &length, "-p", "3",
                "-u", &url,
            ],
        )
        .await;
        check("-H", &o, 3000, 500, true);
        header = gw.metric("gateway_browser_timeouts_total{timer=\"header\"}");
        assert!(header >= 1500.0, "{header} header timeouts");
    }
    let mut body = 0.0;
    if modes.contains('B') {
        // Slow body: 2000 POSTs announcing 8 KiB, 10 bytes every 2 s.
        let url = format!("{base}/upload");
        let o = attack(
            &gw,
            &bin,
            &[
                "-B", "-c", "2000", "-r", "1000", "-i", "2", "-x", "10", "-s", "8192", "-l",
                &length, "-p", "3", "-u", &url,
            ],
        )
        .await;
        // Bodies need a device stream: the device's 256 hold, the rest get
        // 503 device_busy at once.
        check("-B", &o, 2000, 200, true);
        body = gw.metric("gateway_browser_timeouts_total{timer=\"body_rate\"}");
        assert!(body >= 100.0, "{body} body-rate timeouts");
    }
    let mut send = 0.0;
    if modes.contains('X') {
        // Slow read: 600 connections asking for 16 MB twice, a tiny
        // window, 32 bytes read every 20 s (over TLS, one read drains a
        // record of up to 16 KiB: under 1 KiB/s). The responses must be
        // larger than the kernel lets a socket buffer (`tcp_wmem` up to
        // 4 MiB): a 100 kB one went into the send buffer whole, no write
        // ever blocked, and the connections ended by the header timer.
        let url = format!("{base}/bytes?n=16000000");
        let o = attack(
            &gw,
            &bin,
            &[
                "-X", "-c", "600", "-r", "1000", "-w", "512", "-y", "1024", "-n", "20", "-z", "32",
                "-k", "2", "-l", &length, "-p", "3", "-u", &url,
            ],
        )
        .await;
        // slowhttptest -X keeps opening connections at its own pace until
        // its end, so there is no quiet moment to judge: the counters show
        // the send timers cut the readers that held device streams.
        check("-X", &o, 600, 200, false);
        send = gw.metric("gateway_browser_timeouts_total{timer=\"send\"}")
            + gw.metric("gateway_browser_timeouts_total{timer=\"send_rate\"}");
        assert!(send >= 100.0, "{send} send and send-rate timeouts");
    }
    eprintln!(
        "timeouts after all three: header {header}, body_rate {body}, send {send}; timer {t} s"
    );
    gw.stop().await;
}
