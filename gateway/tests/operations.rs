//! `gateway run` as operators run it: `device add`, SIGHUP (a new device
//! admitted, a broken file refused with its place named), SIGTERM (exit 0),
//! and logs at `RUST_LOG=trace` that never contain a secret. Also
//! `device add`'s refusals and provisioning block, and shell completions.

mod common;
mod external;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TempDir;
use common::harness::link_config;
use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, run};
use gateway::keys;
use proto::{PublicKey, SecretKey};

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn gateway(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The string value of `name = "..."` in TOML output.
fn toml_value(out: &str, name: &str) -> String {
    let prefix = format!("{name} = \"");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"));
    line[prefix.len()..line.len() - 1].to_string()
}

/// A configuration with a devices file, certificates and a key; returns
/// the directory, the configuration file and the gateway's public key.
fn setup(name: &str) -> (TempDir, std::path::PathBuf, PublicKey) {
    let dir = TempDir::new(name);
    dir.certs();
    let public = dir.key();
    dir.write(
        "devices.toml",
        "# devices\n[[device]]\nid = \"plc-1\"\npublic_key = \"1111111111111111111111111111111111111111111111111111111111111111\"\n",
    );
    let file = dir.write(
        "gateway.toml",
        "[gateway]\ndomain = \"gw.example.com\"\ndevices_file = \"devices.toml\"\ndrain_timeout = \"2s\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\n\n\
         [tls]\ncertificates = [{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }]\n\n\
         [link]\naddress = \"127.0.0.1:0\"\n\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n",
    );
    (dir, file, public)
}

/// A gateway process; its output is collected; killed (by its id) if still running on drop.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(args: &[&str], rust_log: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (l1, l2) = (lines.clone(), lines.clone());
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l1.lock().unwrap().push(l);
            }
        });
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(l);
            }
        });
        Self { child, lines }
    }

    /// The first line containing every one of `needles` (within 20 s).
    async fn wait_line(&self, needles: &[&str]) -> String {
        for _ in 0..800 {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no line with {needles:?} in:\n{}",
            self.lines.lock().unwrap().join("\n")
        );
    }

    /// The loopback address logged on the line with `needle`.
    async fn address(&self, needle: &str) -> SocketAddr {
        let line = self.wait_line(&[needle, "127.0.0.1:"]).await;
        let at = line.find("127.0.0.1:").unwrap();
        let port: String = line[at + 10..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap()))
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// SIGTERM, then the exit code and everything logged.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let all = self.lines.lock().unwrap().join("\n");
        (status.code(), all)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An echo device dialing `link` with `key`; aborted on drop.
struct Device(tokio::task::JoinHandle<()>);

impl Drop for Device {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn device(link: SocketAddr, id: &str, key: SecretKey, gateway: PublicKey) -> Device {
    let app = EchoApp::new(EchoOptions {
        device_id: id.to_string(),
        firmware: "ops-test".into(),
        subprotocols: Vec::new(),
        raw_service: false,
    });
    let identity = Identity { key, gateway };
    Device(tokio::spawn(async move {
        let mut app = app;
        let mut platform = TokioPlatform::new(link);
        let mut mem = Box::new(DeviceLinkMemory::new());
        run(
            &mut platform,
            &mut app,
            &identity,
            &link_config(4096, 16384, 1024),
            &mut mem,
        )
        .await;
    }))
}

async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    external::sample(&external::get(addr, "/metrics").await.1, series)
}

/// Waits until `series` is `want` (or at least `want` when `at_least`).
async fn wait_metric_cmp(addr: SocketAddr, series: &str, want: f64, at_least: bool) {
    let mut last = None;
    for _ in 0..800 {
        last = metric(addr, series).await;
        if last.is_some_and(|v| v == want || (at_least && v > want)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{series} is {last:?}, not {want}");
}

async fn wait_metric(addr: SocketAddr, series: &str, want: f64) {
    wait_metric_cmp(addr, series, want, false).await;
}

/// A request over TLS carrying credentials, which must never be logged.
async fn request_with_credentials(dir: &Path, addr: SocketAddr, secrets: &[&str]) -> u16 {
    use http_body_util::{BodyExt as _, Empty};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let chain = std::fs::read(dir.join("tls/fullchain.pem")).unwrap();
    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&chain)
        .map(Result::unwrap)
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.last().unwrap().clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("plc-2.gw.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/head?access_token={}", secrets[0]))
        .header("host", "plc-2.gw.example.com")
        .header("cookie", format!("session={}", secrets[1]))
        .header("authorization", format!("Bearer {}", secrets[2]))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_nothing_secret_is_logged() {
    let (dir, file, gateway_public) = setup("ops-run");
    let config = file.to_str().unwrap();

    let gw = Running::start(&["run", "--config", config], "trace");
    let link = gw.address("device link listening").await;
    let web = gw.address("browsers listening").await;
    let metrics = gw.address("metrics listening").await;
    assert_eq!(external::get(metrics, "/readyz").await.0, 200);

    // `device add` while it runs: the device is refused until the reload.
    let out = gateway(&[
        "device", "add", "--config", config, "plc-2", "--name", "Line 2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bundle = text(&out.stdout);
    let device_key_hex = toml_value(&bundle, "device_key");
    assert_eq!(
        toml_value(&bundle, "gateway_public_key"),
        gateway_public.to_string()
    );
    assert_eq!(toml_value(&bundle, "gateway_address"), "gw.example.com:0");
    let key = SecretKey::from_bytes(keys::parse_hex32(&device_key_hex).unwrap());
    let _d = device(link, "plc-2", key, gateway_public);
    // The device retries, refused each time.
    wait_metric_cmp(
        metrics,
        "gateway_link_rejections_total{reason=\"unknown_key\"}",
        1.0,
        true,
    )
    .await;
    assert_eq!(metric(metrics, "gateway_devices_online").await, Some(0.0));

    gw.signal("HUP");
    wait_metric(
        metrics,
        "gateway_config_reloads_total{result=\"success\"}",
        1.0,
    )
    .await;
    wait_metric(metrics, "gateway_device_online{device=\"plc-2\"}", 1.0).await;

    let secrets = ["tok3n-in-the-query", "c00kie-value-9f2", "bearer-t0ken-77a"];
    let status = request_with_credentials(dir.path(), web, &secrets).await;
    assert!(status < 500, "{status}");

    // A broken devices file: refused with its place, the old one stays.
    let devices = dir.path().join("devices.toml");
    let good = std::fs::read_to_string(&devices).unwrap();
    std::fs::write(
        &devices,
        format!("{good}\n[[device]]\nid = \"x\"\nbogus = 1\n"),
    )
    .unwrap();
    gw.signal("HUP");
    wait_metric(
        metrics,
        "gateway_config_reloads_total{result=\"failure\"}",
        1.0,
    )
    .await;
    let line = gw.wait_line(&["devices.toml:", "bogus"]).await;
    let line_no = good.lines().count() + 4;
    assert!(line.contains(&format!("devices.toml:{line_no}:")), "{line}");
    gw.wait_line(&["reload refused"]).await;
    assert_eq!(
        metric(metrics, "gateway_device_online{device=\"plc-2\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(metrics, "gateway_config_last_reload_successful").await,
        Some(0.0)
    );

    let (code, logs) = gw.stop();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");

    // Nothing secret, at trace level: keys in hex, the TLS key's PEM,
    // and the credentials the browser sent.
    let gateway_key = std::fs::read_to_string(dir.path().join("gateway.key")).unwrap();
    let pem = std::fs::read_to_string(dir.path().join("tls/privkey.pem")).unwrap();
    let mut forbidden = vec![gateway_key.trim().to_string(), device_key_hex];
    forbidden.extend(
        pem.lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(str::to_string),
    );
    forbidden.extend(secrets.iter().map(|s| s.to_string()));
    assert!(logs.lines().count() > 50, "trace logs expected:\n{logs}");
    for s in &forbidden {
        assert!(!logs.contains(s.as_str()), "a secret is in the logs: {s}");
        assert!(
            !logs.to_ascii_lowercase().contains(&s.to_ascii_lowercase()),
            "a secret is in the logs (other case): {s}"
        );
    }
}

#[test]
fn device_add_refuses_what_it_cannot_add_and_writes_a_provisioning_block() {
    let (dir, file, gateway_public) = setup("ops-add");
    let config = file.to_str().unwrap();
    let devices = dir.path().join("devices.toml");
    let before = std::fs::read_to_string(&devices).unwrap();
    for (args, why) in [
        (vec!["plc-1"], "exists already"),
        (vec!["PLC 3"], "must be 1-63"),
        (
            vec![
                "plc-3",
                "--provisioning-out",
                "x.prov",
                "--gateway-address",
                "gw.example.com:7000",
            ],
            "IPv4",
        ),
    ] {
        let mut a = vec!["device", "add", "--config", config];
        a.extend(args);
        let out = gateway(&a);
        assert_eq!(out.status.code(), Some(1), "{a:?}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(&devices).unwrap(), before);
    }

    let prov = dir.path().join("plc-3.prov");
    let out = gateway(&[
        "device",
        "add",
        "--config",
        config,
        "plc-3",
        "--gateway-address",
        "203.0.113.7:7000",
        "--provisioning-out",
        prov.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bundle = text(&out.stdout);
    let parsed: toml::Table = toml::from_str(&bundle).unwrap();
    assert_eq!(parsed["gateway_address"].as_str(), Some("203.0.113.7:7000"));
    let bytes = std::fs::read(&prov).unwrap();
    let block = device_fw::provision::Provisioning::parse(&bytes).unwrap();
    assert_eq!(block.device_id, "plc-3");
    assert_eq!(block.gateway_ip, [203, 0, 113, 7]);
    assert_eq!(block.gateway_port, 7000);
    assert_eq!(block.gateway_key, gateway_public.0);
    assert_eq!(
        keys::to_hex(&block.device_key),
        toml_value(&bundle, "device_key")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&prov).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The gateway now admits it.
    let c = gateway::config::load(&file).unwrap();
    let d = c.devices.get("plc-3").unwrap();
    assert_eq!(
        d.public_key.map(|k| k.to_string()),
        Some(toml_value(&bundle, "device_public_key"))
    );

    // Without a devices file, it says what to add.
    let plain = dir.write(
        "plain.toml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("devices_file = \"devices.toml\"\n", ""),
    );
    let out = gateway(&[
        "device",
        "add",
        "--config",
        plain.to_str().unwrap(),
        "plc-9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("devices_file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completions_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = gateway(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        for word in ["check-config", "device", "completions", "log-format"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    assert_eq!(gateway(&["completions", "tcsh"]).status.code(), Some(2));
    let help = text(&gateway(&["--help"]).stdout);
    for needle in ["SIGHUP", "SIGTERM", "device add", "completions"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let help = text(&gateway(&["device", "add", "--help"]).stdout);
    for needle in ["--gateway-address", "--provisioning-out", "SIGHUP"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
