//! A real browser through the gateway: Debian's headless Chromium driven
//! over WebDriver (chromedriver on a loopback port), the gateway in-process
//! with its test certificate trusted for this browser session only (by its
//! public key, `--ignore-certificate-errors-spki-list`; the machine's trust
//! store is never touched), every name mapped to 127.0.0.1.
//!
//! In one session: the login page, the sample controller's UI (the
//! firmware's application under `device_fw::link::run`) host-based and
//! path-based with live readings over WSS, an LED clicked and seen in the
//! device's `/api/status`, and the libwebsockets test server's page (a
//! direct upstream) with its dumb-increment counter running. Screenshots go
//! to `<target>/browser-artifacts/real_browser/`. Every WebSocket the
//! browser opens arrives as an HTTP/2 stream (RFC 8441), none by an
//! HTTP/1.1 upgrade (`gateway_websocket_handshakes_total{http}`); with
//! `[http] websocket_over_http2 = false`, every one by an HTTP/1.1
//! upgrade.
//!
//! Skips with a loud message when chromium or chromedriver is missing,
//! except in CI (`CI=true`), where that fails.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{SimApp, SimBoard, TokioPlatform};
use device_fw::link::{Identity, LinkConfig};
use e2e::browser::{Artifacts, Browser, ChromeDriver, TempDir, spki_sha256_base64};
use fantoccini::{Client, Locator};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use proto::SecretKey;

const DOMAIN: &str = "gw.example.com";
const USER: &str = "ann";
const PASSWORD: &str = "correct horse battery";
const LWS: &str = "/usr/bin/libwebsockets-test-server";

type R<T> = Result<T, Box<dyn std::error::Error>>;

/// Sends the gateway's logs (`RUST_LOG`, default `info`) to `path`.
fn log_to(path: &std::path::Path) {
    let file = std::fs::File::create(path).unwrap();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

/// The libwebsockets test server on a loopback port, ended by pid on drop.
struct Lws {
    child: Child,
    addr: SocketAddr,
}

impl Lws {
    fn start() -> Self {
        assert!(
            std::path::Path::new(LWS).exists(),
            "{LWS} is missing (apt-get install libwebsockets-test-server)"
        );
        // A free port may be taken before the server binds it (tests run
        // in parallel): then it exits at once and another is tried.
        let mut last = String::new();
        for _ in 0..5 {
            let port = e2e::browser::free_port();
            // `-i lo`: bound to the loopback interface only.
            let mut child = Command::new(LWS)
                .args([&format!("--port={port}"), "-i", "lo"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match e2e::browser::wait_listening(addr, "libwebsockets-test-server", &mut child) {
                Ok(()) => return Self { child, addr },
                Err(e) => last = e,
            }
        }
        panic!("{last} (five ports tried)")
    }
}

impl Drop for Lws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_key() -> SecretKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    SecretKey::from_bytes(b)
}

/// The gateway in-process: user `ann` (every device), the private sample
/// controller `ctl` on the device link and the private libwebsockets test
/// server `lws` as a direct upstream.
struct Setup {
    _dir: TempDir,
    server: Server,
    port: u16,
    chain_pem: String,
    device: tokio::task::JoinHandle<()>,
}

/// The gateway, with WebSockets as HTTP/2 streams on or off
/// (`[http] websocket_over_http2`).
async fn start_gateway(lws: SocketAddr, h2_websockets: bool) -> Setup {
    let dir = TempDir::new("browser-gw");
    let ca = gateway::edge::tls::local_ca(&[DOMAIN.to_string(), format!("*.{DOMAIN}")]).unwrap();
    dir.write("tls/fullchain.pem", &ca.chain_pem);
    dir.write("tls/privkey.pem", &ca.key_pem);
    let gateway_key = gateway::keys::generate().unwrap();
    gateway::keys::write_key_file(&dir.path().join("gateway.key"), &gateway_key, false).unwrap();
    let device_key = random_key();

    let opts = SocketOptions::default();
    let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let port = https.local_addr().unwrap().port();
    let link_port = link.local_addr().unwrap().port();
    let text = format!(
        r#"[gateway]
domain = "{DOMAIN}"
drain_timeout = "2s"

[[listen]]
address = "127.0.0.1:{port}"

[tls]
certificates = [{{ cert = "tls/fullchain.pem", key = "tls/privkey.pem" }}]

[link]
address = "127.0.0.1:{link_port}"

[http]
websocket_over_http2 = {h2_websockets}

[[user]]
name = "{USER}"
password_hash = "{hash}"
devices = ["*"]

[[device]]
id = "ctl"
name = "Sample controller (device-fw on the host)"
public_key = "{device_public}"
public = false

[[device]]
id = "lws"
name = "libwebsockets test server (direct)"
public = false
upstream = {{ direct = {{ address = "{lws}" }} }}

[device.normalize]
host = "localhost"
protocols = ["http-only", "dumb-increment-protocol", "lws-mirror-protocol", "lws-status"]
"#,
        hash = gateway::auth::password::hash(PASSWORD),
        device_public = device_key.public_key(),
    );
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

    // The firmware's sample application, on the host platform, dialing the link.
    let identity = Identity {
        key: device_key,
        gateway: gateway_key.public_key(),
    };
    let link_addr = server.link_addr;
    let device = tokio::spawn(async move {
        let mut app = SimApp::new(SimBoard::new(7), "ctl", "browser-test", Vec::new(), None);
        let mut platform = TokioPlatform::new(link_addr);
        let mut mem = Box::new(DeviceLinkMemory::new());
        let link = LinkConfig {
            backoff: proto::Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
            ..LinkConfig::DEFAULT
        };
        device_fw::link::run(&mut platform, &mut app, &identity, &link, &mut mem).await;
    });
    let started = Instant::now();
    while server.hub.device("ctl").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the controller did not come online"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Setup {
        _dir: dir,
        server,
        port,
        chain_pem: ca.chain_pem,
        device,
    }
}

/// Polls `probe` every 100 ms until it yields a value or `timeout` passes.
async fn until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> R<Option<T>>,
) -> R<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if started.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Evaluates a JavaScript expression in the page; strings come back as is,
/// other values as JSON.
async fn js(c: &Client, expr: &str) -> R<String> {
    let v = c.execute(&format!("return {expr};"), vec![]).await?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        v => v.to_string(),
    })
}

async fn url(c: &Client) -> R<String> {
    Ok(c.current_url().await?.to_string())
}

/// The controller UI's live readings: temperature, uptime, update rate.
async fn readings(c: &Client) -> R<String> {
    js(
        c,
        "['temp','uptime','rate'].map(i => document.getElementById(i).textContent).join(' | ')",
    )
    .await
}

/// Which of the UI's three LED buttons show "on".
async fn ui_leds(c: &Client) -> R<String> {
    js(
        c,
        "[...document.querySelectorAll('.led')].map(b => b.classList.contains('on') ? 1 : 0).join(',')",
    )
    .await
}

/// Waits for the controller UI's WebSocket to be live, then reads the
/// readings twice and requires them to change.
async fn live_readings(c: &Client, art: &Artifacts, shot: &str) -> R<(String, String)> {
    until(
        "the UI's WebSocket to be live",
        Duration::from_secs(10),
        async || {
            Ok(
                (js(c, "document.getElementById('state').textContent").await? == "live")
                    .then_some(()),
            )
        },
    )
    .await?;
    let first = until("a first reading", Duration::from_secs(5), async || {
        let r = readings(c).await?;
        Ok((!r.starts_with('—')).then_some(r))
    })
    .await?;
    let second = until(
        "the readings to change",
        Duration::from_secs(5),
        async || {
            let r = readings(c).await?;
            Ok((r != first).then_some(r))
        },
    )
    .await?;
    art.screenshot(c, shot).await?;
    Ok((first, second))
}

/// The device's own `/api/status`, read by the browser at `base`.
async fn status(c: &Client, base: &str) -> R<String> {
    c.goto(&format!("{base}api/status")).await?;
    let body = js(c, "document.body.innerText").await?;
    if !body.contains("\"leds\"") {
        return Err(format!("{base}api/status answered {body}").into());
    }
    Ok(body)
}

/// Logs in on the gateway's login page the browser is at; the form's
/// `next` takes it on from there.
async fn log_in(c: &Client, gw: &str, art: &Artifacts, shot: &str) -> R<()> {
    let at = url(c).await?;
    if !at.starts_with(&format!("{gw}login")) {
        return Err(format!("expected the login page, at {at}").into());
    }
    art.screenshot(c, shot).await?;
    c.find(Locator::Css("input[name=user]"))
        .await?
        .send_keys(USER)
        .await?;
    c.find(Locator::Css("input[name=password]"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    c.find(Locator::Css("form[action='/login'] button"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// Waits until the browser shows the controller UI at `at`.
async fn at_controller(c: &Client, at: &str) -> R<()> {
    until(
        &format!("the controller UI at {at}"),
        Duration::from_secs(10),
        async || {
            Ok(
                (url(c).await? == at && js(c, "document.title").await? == "Controller")
                    .then_some(()),
            )
        },
    )
    .await
}

/// Clicks LED `i`'s button and waits until the UI shows `want`.
async fn click_led(c: &Client, i: usize, want: &str) -> R<()> {
    c.find(Locator::Css(&format!(".led[data-i='{i}']")))
        .await?
        .click()
        .await?;
    until(
        &format!("the LEDs to show {want}"),
        Duration::from_secs(5),
        async || Ok((ui_leds(c).await? == want).then_some(())),
    )
    .await
}

/// The main scenario: the landing page sends the browser to the login
/// page and back; it lists both devices; the libwebsockets test server's
/// page (host-based, a direct upstream) runs its dumb-increment counter over
/// WSS through the gateway.
async fn scenario(c: &Client, port: u16, art: &Artifacts) -> R<()> {
    let gw = format!("https://{DOMAIN}:{port}/");
    let lws = format!("https://lws.{DOMAIN}:{port}/");

    // 1. Anonymous: the landing page sends the browser to the login page.
    c.goto(&gw).await?;
    log_in(c, &gw, art, "01-login").await?;

    // 2. Back on the landing page, which lists both devices.
    let page = until(
        "the landing page after login",
        Duration::from_secs(10),
        async || {
            if url(c).await? != gw {
                return Ok(None);
            }
            let page = js(c, "document.body.innerText").await?;
            Ok((page.contains("ctl") && page.contains("lws")).then_some(page))
        },
    )
    .await?;
    art.screenshot(c, "02-landing").await?;
    eprintln!("landing page:\n{page}");

    // 3. The libwebsockets test server's page through the gateway: its
    //    dumb-increment counter (a WSS socket to lws) increases.
    c.goto(&lws).await?;
    let counter = async || -> R<Option<u64>> {
        Ok(js(c, "document.getElementById('number').textContent")
            .await?
            .trim()
            .parse()
            .ok())
    };
    let first = until("the lws counter", Duration::from_secs(10), counter).await?;
    let second = until(
        "the lws counter to increase",
        Duration::from_secs(5),
        async || Ok(counter().await?.filter(|n| *n > first)),
    )
    .await?;
    let di = js(c, "document.getElementById('wsdi_status').textContent").await?;
    eprintln!(
        "lws counter: {first} then {second}; dumb-increment socket: {}",
        di.trim()
    );
    if !di.contains("opened") {
        return Err(format!("the dumb-increment socket says {di:?}").into());
    }
    art.screenshot(c, "03-lws-counter").await?;
    Ok(())
}

/// The sample controller in a real browser: login (path-based `next`), the
/// UI path- and host-based with live readings over WSS, an LED clicked and
/// seen in the device's `/api/status`.
async fn controller(c: &Client, port: u16, art: &Artifacts) -> R<()> {
    let gw = format!("https://{DOMAIN}:{port}/");
    let ctl = format!("https://ctl.{DOMAIN}:{port}/");
    let ctl_path = format!("{gw}d/ctl/");

    // 1. Anonymous: the device UI (path-based) sends the browser to the
    //    login page, which sends it back after the login.
    c.goto(&ctl_path).await?;
    log_in(c, &gw, art, "01-login").await?;
    at_controller(c, &ctl_path).await?;

    // 2. Live readings over WSS (`/d/ctl/ws`, subprotocol readings.v1).
    let (a, b) = live_readings(c, art, "02-controller-path").await?;
    eprintln!("path-based readings: [{a}] then [{b}]");
    let id = js(c, "document.getElementById('id').textContent").await?;
    if id != "ctl" {
        return Err(format!("the UI shows device {id:?}").into());
    }

    // 3. Click the "Warn" LED: the UI shows it on, and so does the device.
    let leds = ui_leds(c).await?;
    if leds != "0,0,0" {
        return Err(format!("LEDs before the click: {leds}").into());
    }
    click_led(c, 1, "0,1,0").await?;
    art.screenshot(c, "03-controller-led-on").await?;
    let s = status(c, &ctl_path).await?;
    if !s.contains("\"leds\":[0,1,0]") {
        return Err(format!("the device's status after the click: {s}").into());
    }
    eprintln!("device status after the click: {s}");

    // 4. Host-based (the session cookie is scoped to the domain): the same
    //    device, its state as left; switch the LED off again from here.
    c.goto(&ctl).await?;
    at_controller(c, &ctl).await?;
    let (a, b) = live_readings(c, art, "04-controller-host").await?;
    eprintln!("host-based readings: [{a}] then [{b}]");
    until(
        "the Warn LED still on (host-based)",
        Duration::from_secs(5),
        async || Ok((ui_leds(c).await? == "0,1,0").then_some(())),
    )
    .await?;
    click_led(c, 1, "0,0,0").await?;
    let s = status(c, &ctl).await?;
    if !s.contains("\"leds\":[0,0,0]") {
        return Err(format!("the device's status after the second click: {s}").into());
    }

    Ok(())
}

/// An anonymous browser opening a device host-based is sent to the login
/// page with `next=https://<device>.<domain>:<port>/`; after the login it
/// must land on the device.
async fn host_based_login(c: &Client, port: u16, art: &Artifacts) -> R<()> {
    let gw = format!("https://{DOMAIN}:{port}/");
    let ctl = format!("https://ctl.{DOMAIN}:{port}/");
    c.goto(&ctl).await?;
    log_in(c, &gw, art, "01-login").await?;
    at_controller(c, &ctl).await?;
    let (a, b) = live_readings(c, art, "02-controller-host").await?;
    eprintln!("host-based readings: [{a}] then [{b}]");
    Ok(())
}

/// Runs `scenario` in a fresh browser against a fresh gateway (with the
/// controller and lws), with artifacts under `browser-artifacts/<name>/`.
/// Runs `scenario` in a fresh browser against a fresh gateway, which
/// offers WebSockets as HTTP/2 streams when `h2_websockets`; checks that
/// every WebSocket the browser opened came over HTTP/2 then, and over
/// HTTP/1.1 otherwise.
async fn run(
    name: &str,
    h2_websockets: bool,
    scenario: impl AsyncFnOnce(&Client, u16, &Artifacts) -> R<()>,
) {
    let Some(tools) = e2e::browser::tools() else {
        return;
    };
    let started = Instant::now();
    let art = Artifacts::new(name);
    log_to(&art.dir.join("gateway.log"));
    let lws = Lws::start();
    let setup = start_gateway(lws.addr, h2_websockets).await;
    let profile = TempDir::new("chromium-profile");
    let mut driver = ChromeDriver::start(&tools, &art.dir.join("chromedriver.log"));
    let browser = Browser {
        trusted_spki: vec![spki_sha256_base64(&setup.chain_pem)],
        loopback_hosts: vec![DOMAIN.to_string(), format!("*.{DOMAIN}")],
        window: (1280, 900),
        net_log: Some(art.dir.join("chromium-netlog.json")),
        extra_args: Vec::new(),
    };
    let client = browser
        .open(&tools, &driver, profile.path())
        .await
        .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", driver.log()));

    let result = scenario(&client, setup.port, &art).await;
    let handshakes: Vec<String> = setup
        .server
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("gateway_websocket_handshakes_total{"))
        .map(str::to_string)
        .collect();
    eprintln!("WebSocket handshakes by HTTP version: {handshakes:?}");
    // Chromium opens its WebSockets as streams of the HTTP/2 connection
    // that loaded the page (RFC 8441, which the gateway offers): that is
    // the path real browsers take, so the benchmarks measure it too
    // (`bench-proxies --h2`).
    let count = |http: &str| {
        handshakes
            .iter()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "gateway_websocket_handshakes_total{{http=\"{http}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    // Without extended CONNECT on offer, Chromium opens each WebSocket on
    // an HTTP/1.1 connection of its own.
    let (used, unused) = if h2_websockets {
        ("2", "1.1")
    } else {
        ("1.1", "2")
    };
    let as_expected = result.is_err() || (count(used) >= 1.0 && count(unused) == 0.0);
    if let Err(e) = &result {
        let _ = art.screenshot(&client, "failure").await;
        if let Ok(src) = client.source().await {
            art.save("failure.html", &src);
        }
        eprintln!(
            "browser scenario {name} failed at {}: {e}",
            client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default()
        );
    }
    let _ = client.close().await;
    driver.stop();
    setup.device.abort();
    setup.server.shutdown().await;
    drop(lws);
    eprintln!(
        "browser scenario {name}: {} in {:?}; artifacts (screenshots, gateway.log, \
         chromium-netlog.json, chromedriver.log) in {}",
        if result.is_ok() { "passed" } else { "FAILED" },
        started.elapsed(),
        art.dir.display()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        as_expected,
        "the browser's WebSockets did not all open over HTTP/{used}: {handshakes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_logs_in_and_sees_the_lws_counter_run() {
    run("real_browser", true, scenario).await;
}

/// Chromium's own request heads do not fit the sample controller: a
/// navigation is 850 to 970 bytes after normalization (`sec-ch-ua*`,
/// `sec-fetch-*`, `accept`, `user-agent`, `referer`, `cookie`, plus the
/// gateway's `forwarded` and `x-forwarded-*`), the controller announces a
/// 512-byte `max_head` (`device_fw::app::MAX_HEAD`), and the gateway answers
/// `431 headers_too_large`. Neither a shorter user agent nor a shorter
/// `accept-language` gets it under 512.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_drives_the_sample_controller() {
    run("controller", true, controller).await;
}

/// Chromium cancels the login's 303 to `https://ctl.gw.example.com:<port>/`:
/// the login page's `Content-Security-Policy: form-action 'self'` also
/// governs where the form's response may redirect, and the device's host
/// is another origin. The session cookie is set, but the browser stays on
/// the login page. (Path-based `next` is same-origin and works.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_lands_on_a_host_based_device_after_login() {
    run("host_based_login", true, host_based_login).await;
}

/// With `[http] websocket_over_http2 = false` the gateway does not offer
/// extended CONNECT, and Chromium opens the controller's live-readings
/// WebSocket on an HTTP/1.1 connection of its own; the controller works
/// the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_opens_websockets_over_http11_when_http2_ones_are_off() {
    run("controller_h1_websockets", false, controller).await;
}
