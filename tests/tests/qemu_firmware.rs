//! The firmware on the device's CPU architecture: QEMU's mps2-an505
//! (Cortex-M33) runs the `qemu-an505` build of device-fw (the sample
//! controller on the link runtime, over the LAN9118 and embassy-net) and
//! dials a real gateway on this host's loopback through QEMU's user
//! network (10.0.2.2 in the guest is 127.0.0.1 here).
//!
//! Asserted end to end: the device comes online; HTTPS and a WebSocket
//! from a client here reach the firmware's application and back (readings
//! arrive; an API call and a WebSocket command change its LEDs); after the
//! gateway restarts on the same link port the device reconnects by itself
//! with its state intact. A second test runs `proto`'s no_std checks on the
//! emulated CPU and compares their transcript with the host's.
//!
//! QEMU and the firmware come from `scripts/qemu-run` (`prepare`, `build`).
//! When QEMU cannot be prepared the tests skip with a loud message, except
//! under `CI=true`, where they fail.

use e2e::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use device_fw::provision::{MAX_LEN, Provisioning};
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use proto::SecretKey;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const DEVICE: &str = "qemu-an505";
const DOMAIN: &str = "gw.example.com";
/// QEMU's user network: the host, as the guest sees it.
const HOST_ALIAS: [u8; 4] = [10, 0, 2, 2];
/// Boot, DHCP and a handshake on an emulated CPU take a few seconds; a
/// loaded CI machine gets ample room.
const ONLINE: Duration = Duration::from_secs(120);
const PATIENCE: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| unreachable!("tests/ is inside the workspace"))
        .to_path_buf()
}

/// `scripts/qemu-run prepare` and `build`, once per test binary. `None`
/// (after a loud message) when QEMU cannot be had here; panics in CI.
fn prepared() -> Option<&'static Path> {
    static READY: OnceLock<Option<PathBuf>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let script = workspace().join("scripts/qemu-run");
            let run = |step: &str| {
                std::process::Command::new(&script)
                    .arg(step)
                    .stdout(Stdio::null())
                    .status()
            };
            // QEMU missing (no package mirror, no apt) is an environment
            // problem: skip, loudly, except in CI.
            let status = run("prepare");
            if !status.as_ref().is_ok_and(|s| s.success()) {
                let why = format!("`scripts/qemu-run prepare` failed: {status:?}");
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{why} (CI=true: the emulated firmware must run in CI)");
                }
                // Straight to the process's stderr: the test harness
                // captures eprintln! of passing tests.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "\n\n======================================================================\n\
                         SKIPPED: the emulated-firmware tests (QEMU mps2-an505): {why}\n\
                         ======================================================================\n\n"
                    )
                    .as_bytes(),
                );
                return None;
            }
            // A firmware that does not build is a failure everywhere.
            let status = run("build");
            assert!(
                status.as_ref().is_ok_and(|s| s.success()),
                "`scripts/qemu-run build` failed: {status:?}"
            );
            Some(script)
        })
        .as_deref()
}

/// The gateway's files: certificate, key, the device's public key.
struct GatewayFiles {
    dir: TempDir,
    ca_pem: String,
    gateway_key: proto::PublicKey,
    /// The device's private key (it goes into the provisioning block).
    device_key: [u8; 32],
}

impl GatewayFiles {
    fn new() -> Self {
        let dir = TempDir::new("gateway");
        let ca =
            gateway::edge::tls::local_ca(&[DOMAIN.to_string(), format!("*.{DOMAIN}")]).unwrap();
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/fullchain.pem"), &ca.chain_pem).unwrap();
        std::fs::write(dir.path().join("tls/privkey.pem"), &ca.key_pem).unwrap();
        let key = gateway::keys::generate().unwrap();
        gateway::keys::write_key_file(&dir.path().join("gateway.key"), &key, false).unwrap();
        let mut device = [0u8; 32];
        getrandom::fill(&mut device).unwrap();
        Self {
            dir,
            ca_pem: ca.ca_pem,
            gateway_key: key.public_key(),
            device_key: device,
        }
    }

    /// A gateway on loopback: HTTPS on a free port, the device link on
    /// `link_port` (0: any). The device is in its registry.
    fn start(&self, link_port: u16) -> Gateway {
        let opts = SocketOptions::default();
        let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{link_port}").parse().unwrap();
        // The previous gateway's listener may take a moment to go.
        let mut link = listener::bind(addr, &opts);
        for _ in 0..50 {
            if link.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            link = listener::bind(addr, &opts);
        }
        let link = link.unwrap_or_else(|e| panic!("link port {link_port}: {e}"));
        let text = format!(
            "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"2s\"\n\n\
             [[listen]]\naddress = \"127.0.0.1:{}\"\n\n\
             [tls]\ncertificates = [{{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }}]\n\n\
             [link]\naddress = \"127.0.0.1:{}\"\n\n\
             [[device]]\nid = \"{DEVICE}\"\npublic_key = \"{}\"\npublic = true\n",
            https.local_addr().unwrap().port(),
            link.local_addr().unwrap().port(),
            SecretKey::from_bytes(self.device_key).public_key()
        );
        let file = self.dir.path().join("gateway.toml");
        std::fs::write(&file, &text).unwrap();
        let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let server = Server::start_on(
            &config,
            Listeners {
                link,
                edges: vec![https],
            },
        )
        .unwrap();
        Gateway {
            https: server.edge_addrs[0],
            link: server.link_addr,
            server,
            tls: e2e::wss::tls_config(&self.ca_pem),
        }
    }

    /// The provisioning block the firmware reads (gateway 10.0.2.2:`port`).
    fn provisioning(&self, port: u16) -> Vec<u8> {
        let prov = Provisioning {
            gateway_ip: HOST_ALIAS,
            gateway_port: port,
            device_id: DEVICE,
            device_key: self.device_key,
            gateway_key: self.gateway_key.0,
        };
        let mut out = [0u8; MAX_LEN];
        let n = prov.encode(&mut out).unwrap();
        out[..n].to_vec()
    }
}

struct Gateway {
    server: Server,
    https: SocketAddr,
    link: SocketAddr,
    tls: Arc<ClientConfig>,
}

fn host() -> String {
    format!("{DEVICE}.{DOMAIN}")
}

impl Gateway {
    fn origin(&self) -> String {
        format!("https://{}:{}", host(), self.https.port())
    }

    async fn wait_online(&self, qemu: &Qemu) {
        let start = Instant::now();
        while self.server.hub.device(DEVICE).is_none() {
            assert!(
                start.elapsed() < ONLINE,
                "the emulated device did not come online within {ONLINE:?}; its log:\n{}",
                qemu.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One HTTP/1.1 request over TLS: status and body.
    async fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.https).await.unwrap();
        let name = ServerName::try_from(host()).unwrap();
        let mut io = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\norigin: {}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            host(),
            self.origin(),
            body.len()
        );
        io.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // The gateway closes after the response; a missing close_notify is fine.
        let _ = tokio::time::timeout(PATIENCE, io.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        (status, body)
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The emulator, with its output collected (and echoed to stderr).
struct Qemu {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Qemu {
    async fn boot(script: &Path, dir: &Path) -> Self {
        let mut child = Command::new(script)
            .arg("firmware")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[qemu] {line}");
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops the emulator (this test's own child process).
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn readings_socket(gw: &Gateway) -> Ws {
    let tcp = TcpStream::connect(gw.https).await.unwrap();
    let name = ServerName::try_from(host()).unwrap();
    let io = TlsConnector::from(gw.tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let mut req = format!("wss://{}/ws", host())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", gw.origin().parse().unwrap());
    req.headers_mut()
        .insert("sec-websocket-protocol", "readings.v1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, io).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("readings.v1")
    );
    ws
}

/// The next text message that satisfies `want`.
async fn text_until(ws: &mut Ws, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no message with {what} within {PATIENCE:?}"))
            .expect("socket ended")
            .expect("socket failed");
        if let Message::Text(t) = msg
            && want(t.as_str())
        {
            return t.as_str().to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulated_firmware_serves_through_the_gateway_and_survives_its_restart() {
    let Some(script) = prepared() else { return };
    let files = GatewayFiles::new();
    let gw = files.start(0);
    let link_port = gw.link.port();

    let device_dir = TempDir::new("device");
    std::fs::write(
        device_dir.path().join("devlink.prov"),
        files.provisioning(link_port),
    )
    .unwrap();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    std::fs::write(device_dir.path().join("devlink.seed"), seed).unwrap();
    let qemu = Qemu::boot(script, device_dir.path()).await;

    let booted = Instant::now();
    gw.wait_online(&qemu).await;
    eprintln!("emulated device online after {:?}", booted.elapsed());

    // HTTPS to the firmware's API.
    let (status, body) = gw.request("GET", "/api/status", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"device\":\"{DEVICE}\"")), "{body}");
    assert!(body.contains("\"leds\":[0,0,0]"), "{body}");

    // Live readings over the WebSocket.
    let mut ws = readings_socket(&gw).await;
    let started = Instant::now();
    for _ in 0..5 {
        text_until(&mut ws, "a reading", |t| t.contains("\"temp\":")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "readings come at 10 Hz: 5 took {:?}",
        started.elapsed()
    );

    // A command through the API changes what the readings say.
    let (status, body) = gw.request("POST", "/api/led/1", "on").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"leds\":[0,1,0]"), "{body}");
    text_until(&mut ws, "LED 1 on", |t| t.contains("\"leds\":[0,1,0]")).await;

    // And one over the WebSocket.
    ws.send(Message::text("led 2 on")).await.unwrap();
    text_until(&mut ws, "the command's answer", |t| {
        t.contains("\"ok\":true")
    })
    .await;
    text_until(&mut ws, "LED 2 on", |t| t.contains("\"leds\":[0,1,1]")).await;
    drop(ws);

    // The gateway restarts on the same link port; the device comes back by itself.
    gw.server.shutdown().await;
    let gone = Instant::now();
    let gw = files.start(link_port);
    gw.wait_online(&qemu).await;
    eprintln!(
        "emulated device back online {:?} after the gateway stopped",
        gone.elapsed()
    );
    let (status, body) = gw.request("GET", "/api/status", "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"leds\":[0,1,1]"),
        "the same firmware, its state kept: {body}"
    );

    // Let the stack task report after the traffic, then read the log.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = qemu.log();
    assert!(log.contains("LED2 on"), "the board saw the command:\n{log}");
    let mark = log
        .split("stack repainted")
        .nth(1)
        .and_then(|after| after.lines().rfind(|l| l.contains("stack high-water")))
        .map(str::to_string);
    eprintln!(
        "qemu-an505 link stack high-water: {}",
        mark.as_deref().unwrap_or("(not reported)")
    );
    gw.server.shutdown().await;
    qemu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_checks_pass_on_the_emulated_cpu_with_the_hosts_transcript() {
    let Some(script) = prepared() else { return };
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(script)
            .arg("check")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the checks finish within 5 minutes")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "checks failed on the Cortex-M33:\n{text}"
    );
    assert!(text.contains("all checks passed"), "{text}");
    let host = device_fw::selftest::transcript().unwrap();
    assert!(
        text.contains(&format!("transcript {host:016x}")),
        "the Cortex-M33 put other bytes on the wire than the host ({host:016x}):\n{text}"
    );
}
