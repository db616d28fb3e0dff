//! The metrics listener: what `/metrics` says after real traffic, health
//! and readiness, the per-device series cap, `promtool check metrics` on
//! the output, and a real Prometheus server scraping a gateway.

mod common;
mod external;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TempDir;
use common::harness::{Client, Dev, Gw, empty, get, link_config};
use gateway::metrics::collect::FAMILIES;

/// Serves the gateway's metrics on a free loopback port.
fn serve_metrics(gw: &mut Gw) -> SocketAddr {
    let l = gateway::edge::listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &gateway::edge::listener::SocketOptions::default(),
    )
    .unwrap();
    let server = gw.server.as_mut().unwrap();
    server.serve_metrics(l);
    server.metrics_addr.unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = external::get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The status of an HTTP/2 GET of `path` on `host`.
async fn status(c: &mut Client, host: &str, path: &str) -> http::StatusCode {
    c.fetch(get(2, host, path).body(empty()).unwrap())
        .await
        .0
        .status
}

fn value(text: &str, series: &str) -> f64 {
    external::sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_counts_what_happened() {
    let mut gw = Gw::start("", &[Dev("plc-1", ""), Dev("plc-2", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let _d = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;

    let mut c = gw.client(2, "plc-1.gw.example.com").await;
    assert_eq!(
        status(&mut c, "plc-1.gw.example.com", "/status/204").await,
        204
    );
    assert_eq!(
        status(&mut c, "plc-2.gw.example.com", "/").await,
        502,
        "plc-2 is offline"
    );

    let text = scrape(metrics).await;
    // Every family is there; RTT only once a ping came back.
    for f in FAMILIES
        .iter()
        .filter(|f| f.name != "gateway_device_rtt_seconds")
    {
        assert!(
            text.contains(&format!("# TYPE {} ", f.name)),
            "{} missing",
            f.name
        );
    }
    assert_eq!(value(&text, "gateway_devices_registered"), 2.0);
    assert_eq!(value(&text, "gateway_devices_online"), 1.0);
    assert_eq!(value(&text, "gateway_device_online{device=\"plc-1\"}"), 1.0);
    assert_eq!(value(&text, "gateway_device_online{device=\"plc-2\"}"), 0.0);
    assert_eq!(
        value(&text, "gateway_device_connects_total{device=\"plc-1\"}"),
        1.0
    );
    assert!(
        value(
            &text,
            "gateway_device_received_bytes_total{device=\"plc-1\"}"
        ) > 100.0
    );
    assert!(value(&text, "gateway_device_sent_bytes_total{device=\"plc-1\"}") > 100.0);
    // The request and its answer went in records (the handshake is not one).
    assert!(value(&text, "gateway_link_records_sent_total") >= 1.0);
    assert!(value(&text, "gateway_link_records_received_total") >= 1.0);
    // The device offered no cipher beyond ChaCha20-Poly1305.
    assert_eq!(
        value(
            &text,
            "gateway_link_connects_by_cipher_total{cipher=\"chacha20-poly1305\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "gateway_link_connects_by_cipher_total{cipher=\"aes-256-gcm\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&text, "gateway_http_requests_total{code=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "gateway_http_requests_total{code=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "gateway_http_device_errors_total{reason=\"offline\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "gateway_http_request_duration_seconds_count{code=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "gateway_tls_handshakes_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "gateway_tls_handshake_duration_seconds_count"),
        1.0
    );
    assert_eq!(value(&text, "gateway_link_connects_total"), 1.0);
    assert_eq!(value(&text, "gateway_config_last_reload_successful"), 1.0);
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(text.contains(&format!(
        "gateway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // This test's runtime: two workers.
    assert_eq!(
        value(&text, "gateway_runtime_threads{scheduler=\"multi_thread\"}"),
        2.0
    );

    assert_eq!(external::get(metrics, "/healthz").await.0, 200);
    assert_eq!(external::get(metrics, "/readyz").await.0, 200);
    assert_eq!(external::get(metrics, "/other").await.0, 404);
    gw.stop().await;
}

/// A device session keeps its record buffers while it works and gives
/// them back once it has been idle for a moment (`PARK_AFTER`, 20 ms):
/// `gateway_link_sessions_holding_buffers` reads 1 right after a request
/// and its answer, then 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_device_sessions_give_their_buffers_back() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let mut gw = Gw::start("", &[Dev("plc-1", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let _d = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;
    let held = "gateway_link_sessions_holding_buffers";
    let host = "plc-1.gw.example.com";
    let origin = format!("https://{host}:{}", gw.addr.port());
    let (mut ws, _) = gw.ws(2, host, "/ws", &[("origin", &origin)]).await.unwrap();
    // A message every 2 ms while the gauge is scraped: a session with a
    // stream open that sees records keeps its buffers.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talker = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ws.send(Message::text("tick")).await.unwrap();
                let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
                assert_eq!(echo.unwrap().unwrap().unwrap(), Message::text("tick"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ws
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let busy: Vec<f64> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(value(&scrape(metrics).await, held));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        v
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ws = talker.await.unwrap();
    assert_eq!(busy, [1.0; 5], "while messages flow");
    // Quiet, its WebSocket still open: parked after a short while.
    let mut now = 1.0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = value(&scrape(metrics).await, held);
        if now == 0.0 {
            break;
        }
    }
    assert_eq!(
        now, 0.0,
        "the quiet session still holds its buffers after 5 s"
    );
    // And it takes them again for the next message.
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
    gw.stop().await;
}

/// A session that woke only for keepalives parks its buffers at its next
/// wait, with or without an open stream, so between keepalives it holds
/// none: a ping and its pong cost two wake-ups of the session, and no
/// parking check after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_between_keepalives_holds_no_buffers() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let gw = Gw::start(
        "keepalive = \"100ms\"\nidle_timeout = \"5s\"\n",
        &[Dev("plc-1", "")],
    )
    .await;
    let _d = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;
    let held = "gateway_link_sessions_holding_buffers";
    let pings = "gateway_link_rtt_seconds_count";
    // Two seconds, about 20 keepalives: with buffers kept until a parking
    // check (20 ms, then 40 ms after the pong), about 60 % of samples would
    // see them held.
    let holding = || async {
        let first = gw.metric(pings);
        let mut n = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            n += usize::from(gw.metric(held) > 0.0);
        }
        let keepalives = gw.metric(pings) - first;
        assert!(keepalives >= 5.0, "only {keepalives} keepalives in 2 s");
        n
    };
    let n = holding().await;
    assert!(n <= 40, "no stream: held in {n} of 200 samples");
    // An open WebSocket that has gone quiet: the same, once its last
    // message's buffers are parked.
    let host = "plc-1.gw.example.com";
    let origin = format!("https://{host}:{}", gw.addr.port());
    let (mut ws, _) = gw.ws(2, host, "/ws", &[("origin", &origin)]).await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let n = holding().await;
    assert!(n <= 40, "a quiet WebSocket: held in {n} of 200 samples");
    ws.send(Message::text("still there")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still there")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtt_is_measured_per_device() {
    // The gateway pings on its own keepalive: make it quick. (The
    // harness's sections follow its [link] address line.)
    let mut gw = Gw::start(
        "keepalive = \"100ms\"\nidle_timeout = \"5s\"\n",
        &[Dev("plc-1", "")],
    )
    .await;
    let metrics = serve_metrics(&mut gw);
    let _d = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;
    let series = "gateway_device_rtt_seconds{device=\"plc-1\"}";
    for _ in 0..100 {
        let text = scrape(metrics).await;
        if let Some(rtt) = external::sample(&text, series) {
            assert!(rtt > 0.0 && rtt < 1.0, "{rtt}");
            assert!(value(&text, "gateway_link_rtt_seconds_count") >= 1.0);
            gw.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no RTT within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_device_series_are_capped() {
    let mut gw = Gw::start(
        "[metrics]\nmax_device_series = 1\n",
        &[Dev("a-1", ""), Dev("b-2", ""), Dev("c-3", "")],
    )
    .await;
    let metrics = serve_metrics(&mut gw);
    let _a = gw.echo("a-1", &[], link_config(4096, 8192, 1024)).await;
    let _b = gw.echo("b-2", &[], link_config(4096, 8192, 1024)).await;
    let _c = gw.echo("c-3", &[], link_config(4096, 8192, 1024)).await;
    let text = scrape(metrics).await;
    let online: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("gateway_device_online{"))
        .collect();
    assert_eq!(online, ["gateway_device_online{device=\"a-1\"} 1"]);
    assert_eq!(
        value(&text, "gateway_device_connects_total{device=\"_other\"}"),
        2.0
    );
    assert_eq!(value(&text, "gateway_device_series_aggregated"), 2.0);
    assert_eq!(value(&text, "gateway_devices_online"), 3.0);
    gw.stop().await;
}

/// A collector that holds the scrape until the test lets it go, and says
/// when it is held; or one that panics.
struct Gate {
    gauge: prometheus::IntGauge,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    panics: bool,
}

impl Gate {
    /// The gate, and the ends that see it entered and let it go.
    fn new(
        name: &str,
        panics: bool,
    ) -> (
        Self,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        let gate = Self {
            gauge: prometheus::IntGauge::new(name, "a test's gate").unwrap(),
            entered: std::sync::Mutex::new(entered),
            release: std::sync::Mutex::new(release),
            panics,
        };
        (gate, entered_rx, release_tx)
    }
}

impl prometheus::core::Collector for Gate {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        assert!(!self.panics, "a collector that panics");
        let _ = self.entered.lock().unwrap().send(());
        let _ = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        self.gauge.collect()
    }
}

/// A blocking HTTP/1.1 GET from outside the gateway's runtime: the status
/// line, or the error (a 5 s read timeout among them).
fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

/// A scrape runs its collectors off the runtime's threads: with one thread
/// (`[gateway] threads = 1`, this test's runtime) a scrape that takes long
/// (a walk of `/proc/self/fd` over 10,000 descriptors, a thousand devices'
/// series) must not hold up what else the gateway serves. A collector that
/// panics gives a 500, and the listener serves on.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_scrape_holds_up_nothing_else() {
    let mut gw = Gw::start("", &[]).await;
    let addr = serve_metrics(&mut gw);
    let (gate, entered, release) = Gate::new("test_gate", false);
    gw.server().metrics.register(Box::new(gate)).unwrap();
    let probe = std::thread::spawn(move || {
        entered
            .recv_timeout(Duration::from_secs(30))
            .expect("the scrape reached the collector");
        let healthz = blocking_get(addr, "/healthz");
        release.send(()).unwrap();
        healthz
    });
    let text = scrape(addr).await;
    assert!(text.contains("test_gate 0"), "{text}");
    let healthz = probe.join().unwrap();
    assert_eq!(
        healthz.as_deref().map_err(ToString::to_string),
        Ok("HTTP/1.1 200 OK"),
        "/healthz while a scrape was collecting"
    );

    let (broken, _entered, _release) = Gate::new("test_broken", true);
    gw.server().metrics.register(Box::new(broken)).unwrap();
    let (status, body) = external::get(addr, "/metrics").await;
    assert_eq!((status, body.as_str()), (500, "metrics rendering failed\n"));
    let (status, _) = external::get(addr, "/healthz").await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// Scrapes that come together render one after the other: a burst of
/// them does not walk the descriptors on as many threads at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_render_one_at_a_time() {
    let mut gw = Gw::start("", &[]).await;
    let addr = serve_metrics(&mut gw);
    let (gate, entered, release) = Gate::new("test_gate", false);
    gw.server().metrics.register(Box::new(gate)).unwrap();
    let scrapes: Vec<_> = (0..2).map(|_| tokio::spawn(scrape(addr))).collect();
    let order = tokio::task::spawn_blocking(move || {
        let wait = |d| entered.recv_timeout(Duration::from_secs(d)).is_ok();
        let first = wait(30);
        // The second waits for its turn while the first is held.
        let together = wait(1);
        release.send(()).unwrap();
        let second = together || wait(30);
        release.send(()).unwrap();
        (first, together, second)
    })
    .await
    .unwrap();
    assert_eq!(order, (true, false, true), "(first, both at once, second)");
    for s in scrapes {
        assert!(s.await.unwrap().contains("test_gate 0"));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = external::program("promtool") else {
        return;
    };
    let mut gw = Gw::start("", &[Dev("plc-1", ""), Dev("plc-2", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let _d = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;
    let mut c = gw.client(1, "plc-1.gw.example.com").await;
    let (head, _) = c
        .fetch(
            get(1, "plc-1.gw.example.com", "/status/200")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(head.status, 200);
    let text = scrape(metrics).await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    gw.stop().await;
}

/// A Prometheus server, killed (by its id) when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_counts_the_devices_online() {
    let Some(prometheus) = external::program("prometheus") else {
        return;
    };
    let mut gw = Gw::start("", &[Dev("plc-1", ""), Dev("plc-2", ""), Dev("plc-3", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let _a = gw.echo("plc-1", &[], link_config(4096, 8192, 1024)).await;
    let _b = gw.echo("plc-2", &[], link_config(4096, 8192, 1024)).await;

    let dir = TempDir::new("prometheus");
    let config = dir.write(
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    );
    let port = common::free_port();
    let web: SocketAddr = ([127, 0, 0, 1], port).into();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _server = Prometheus(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // Per-device online states, summed by Prometheus: 2 of the 3 devices.
    let query = "/api/v1/query?query=sum%28gateway_device_online%29";
    let mut last = String::new();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if tokio::net::TcpStream::connect(web).await.is_err() {
            continue;
        }
        let (status, body) = external::get(web, query).await;
        last = format!("{status} {body}");
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[<t>,"2"]}]}}
        if status == 200
            && body.contains("\"result\":[{\"metric\":{},\"value\":[")
            && body.contains(",\"2\"]")
        {
            let (_, up) = external::get(web, "/api/v1/query?query=up").await;
            assert!(up.contains(",\"1\"]"), "{up}");
            gw.stop().await;
            return;
        }
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    panic!("Prometheus never saw 2 devices online; last answer: {last}\nlog:\n{log}");
}
