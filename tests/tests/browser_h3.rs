//! Headless Chromium over HTTP/3: Debian's Chromium (driven as in
//! `browser.rs`) is told to use QUIC for the device's origin
//! (`--origin-to-force-quic-on`), trusts the test certificate by its public
//! key only, and opens a device page through the gateway. The page's own
//! navigation timing must say `h3`, and the gateway must have counted the
//! QUIC handshake and no TCP connection for that origin.
//!
//! Skips with a loud message when chromium or chromedriver is missing,
//! except in CI (`CI=true`), where that fails.

use std::time::{Duration, Instant};

use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, LinkConfig};
use e2e::browser::{Artifacts, Browser, ChromeDriver, TempDir, spki_sha256_base64};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use proto::SecretKey;

const DOMAIN: &str = "gw.example.com";

fn random_key() -> SecretKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    SecretKey::from_bytes(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_a_device_page_over_http3() {
    let Some(tools) = e2e::browser::tools() else {
        return;
    };
    let art = Artifacts::new("http3");

    // The gateway, with the public echo device `plc`.
    let dir = TempDir::new("browser-h3-gw");
    let ca = gateway::edge::tls::local_ca(&[DOMAIN.to_string(), format!("*.{DOMAIN}")]).unwrap();
    dir.write("tls/fullchain.pem", &ca.chain_pem);
    dir.write("tls/privkey.pem", &ca.key_pem);
    let gateway_key = dir.gateway_key();
    let device_key = random_key();
    let opts = SocketOptions::default();
    let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let port = https.local_addr().unwrap().port();
    let link_port = link.local_addr().unwrap().port();
    let text = format!(
        "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"2s\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [tls]\ncertificates = [{{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }}]\n\n\
         [link]\naddress = \"127.0.0.1:{link_port}\"\n\n\
         [[device]]\nid = \"plc\"\npublic_key = \"{}\"\npublic = true\n",
        device_key.public_key()
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
    let identity = Identity {
        key: device_key,
        gateway: gateway_key,
    };
    let link_addr = server.link_addr;
    let device = tokio::spawn(async move {
        let mut app = EchoApp::new(EchoOptions {
            device_id: "plc".into(),
            firmware: "browser-h3".into(),
            subprotocols: Vec::new(),
            raw_service: false,
        });
        let mut platform = TokioPlatform::new(link_addr);
        let mut mem = Box::new(DeviceLinkMemory::new());
        let link = LinkConfig {
            backoff: proto::Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
            ..LinkConfig::DEFAULT
        };
        device_fw::link::run(&mut platform, &mut app, &identity, &link, &mut mem).await;
    });
    let started = Instant::now();
    while server.hub.device("plc").is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "plc offline");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Chromium, QUIC forced for the device's origin.
    let origin = format!("plc.{DOMAIN}:{port}");
    let profile = TempDir::new("chromium-h3-profile");
    let mut driver = ChromeDriver::start(&tools, &art.dir.join("chromedriver.log"));
    let browser = Browser {
        trusted_spki: vec![spki_sha256_base64(&ca.chain_pem)],
        loopback_hosts: vec![DOMAIN.to_string(), format!("*.{DOMAIN}")],
        window: (1280, 900),
        net_log: Some(art.dir.join("chromium-netlog.json")),
        extra_args: vec![
            "--enable-quic".into(),
            format!("--origin-to-force-quic-on={origin}"),
        ],
    };
    let client = browser
        .open(&tools, &driver, profile.path())
        .await
        .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", driver.log()));
    let tcp_before = server
        .edge_stats
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed);

    let result: Result<(String, String), String> = async {
        client
            .goto(&format!("https://{origin}/head"))
            .await
            .map_err(|e| e.to_string())?;
        let js = async |expr: &str| -> Result<String, String> {
            let v = client
                .execute(&format!("return {expr};"), vec![])
                .await
                .map_err(|e| e.to_string())?;
            Ok(match v {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            })
        };
        let protocol = js("performance.getEntriesByType('navigation')[0].nextHopProtocol").await?;
        let body = js("document.body.innerText").await?;
        Ok((protocol, body))
    }
    .await;
    let _ = art.screenshot(&client, "device-over-h3").await;
    let _ = client.close().await;
    driver.stop();

    let quic_ok = server
        .quic_stats
        .handshakes
        .with_label_values(&["ok"])
        .get();
    // TCP connections accepted while the browser ran: none.
    let tcp = server
        .edge_stats
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed)
        - tcp_before;
    device.abort();
    server.shutdown().await;
    let (protocol, body) = result.unwrap_or_else(|e| panic!("the browser failed: {e}"));
    eprintln!("chromium: nextHopProtocol {protocol}, {quic_ok} QUIC handshake(s)");
    assert_eq!(protocol, "h3", "the page did not come over HTTP/3");
    assert!(body.contains("\"target\":\"/head\""), "{body}");
    assert!(quic_ok >= 1, "the gateway saw no QUIC handshake");
    assert_eq!(
        tcp, 0,
        "the browser also opened TCP connections to the gateway"
    );
}
