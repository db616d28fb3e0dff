//! Reload and drain: a reload under traffic keeps WebSockets and device
//! sessions, admits new devices and revokes removed ones; a broken
//! configuration keeps the old one and is counted; SIGTERM drains
//! in-flight requests and `/readyz` says so; `gateway run` reloads on
//! SIGHUP and says where the configuration is wrong.

mod common;
mod external;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::harness::{DOMAIN, Dev, Gw, device_key, empty, eventually, get, link_config, request};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

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

/// The harness's configuration file with `edit` applied.
fn edit_config(gw: &Gw, edit: impl FnOnce(String) -> String) {
    let file = gw.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, edit(text)).unwrap();
}

fn device_entry(id: &str) -> String {
    format!(
        "\n[[device]]\nid = \"{id}\"\npublic_key = \"{}\"\npublic = true\n",
        device_key(id).public_key()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_sessions_admits_and_revokes() {
    let mut gw = Gw::start("", &[Dev("plc-1", ""), Dev("plc-gone", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let _d1 = gw.echo("plc-1", &[], link_config(4096, 16384, 1024)).await;
    let _gone = gw
        .echo("plc-gone", &[], link_config(4096, 16384, 1024))
        .await;
    let origin = format!("https://{}:{}", host("plc-1"), gw.addr.port());
    let mut sockets = Vec::new();
    for v in [1u8, 2] {
        let (ws, _) = gw
            .ws(v, &host("plc-1"), "/ws", &[("origin", &origin)])
            .await
            .unwrap();
        sockets.push(ws);
    }

    // Add plc-2, drop plc-gone: a reload while the WebSockets are open.
    edit_config(&gw, |t| {
        let gone = format!(
            "\n[[device]]\nid = \"plc-gone\"\npublic_key = \"{}\"\n",
            device_key("plc-gone").public_key()
        );
        assert!(t.contains(&gone), "{t}");
        t.replace(&gone, "\n[[device]]\nid = \"plc-gone-not\"\npublic_key = \"1111111111111111111111111111111111111111111111111111111111111111\"\n")
            + &device_entry("plc-2")
    });
    gw.server().reload().unwrap();
    let _d2 = gw.echo("plc-2", &[], link_config(4096, 16384, 1024)).await;
    eventually("plc-gone revoked", || {
        gw.server().hub.device("plc-gone").is_none()
    })
    .await;

    // The WebSockets opened before the reload still echo.
    for ws in &mut sockets {
        ws.send(Message::text("still here")).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m, Message::text("still here"));
    }
    let mut c = gw.client(2, &host("plc-2")).await;
    let (head, _) = c
        .fetch(get(2, &host("plc-2"), "/status/200").body(empty()).unwrap())
        .await;
    assert_eq!(head.status, 200, "the new device serves");

    let text = external::get(metrics, "/metrics").await.1;
    let v = |s: &str| external::sample(&text, s).unwrap_or_else(|| panic!("{s}:\n{text}"));
    assert_eq!(v("gateway_config_reloads_total{result=\"success\"}"), 1.0);
    assert_eq!(v("gateway_device_connects_total{device=\"plc-1\"}"), 1.0);
    assert_eq!(v("gateway_link_sessions_revoked_total"), 1.0);
    assert_eq!(v("gateway_devices_online"), 2.0);

    // A broken file: refused, counted, and everything keeps serving.
    edit_config(&gw, |t| t + "\n[[device]]\nid = \"Bad Id\"\n");
    let errors = gw.server().reload().unwrap_err();
    let first = errors.to_string();
    assert!(first.contains("gateway.toml:"), "{first}");
    assert!(first.contains("Bad Id"), "{first}");
    let text = external::get(metrics, "/metrics").await.1;
    let v = |s: &str| external::sample(&text, s).unwrap_or_else(|| panic!("{s}:\n{text}"));
    assert_eq!(v("gateway_config_reloads_total{result=\"failure\"}"), 1.0);
    assert_eq!(v("gateway_config_last_reload_successful"), 0.0);
    assert_eq!(v("gateway_devices_online"), 2.0);
    let (head, _) = c
        .fetch(get(2, &host("plc-2"), "/status/200").body(empty()).unwrap())
        .await;
    assert_eq!(head.status, 200, "the old configuration stays");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_turns_not_ready() {
    // The harness's drain_timeout is 2 s.
    let mut gw = Gw::start("", &[Dev("plc-1", "")]).await;
    let metrics = serve_metrics(&mut gw);
    let dev = gw.echo("plc-1", &[], link_config(4096, 16384, 1024)).await;
    let mut c = gw.client(2, &host("plc-1")).await;
    // An upload whose body is still coming when the drain starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(hyper::body::Frame::data(b)), rx))
    });
    let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
    let req = request(2, "POST", &host("plc-1"), "/upload")
        .body(body)
        .unwrap();
    tx.send(Bytes::from_static(b"first half,")).await.unwrap();
    let pending = tokio::spawn(async move { c.fetch(req).await });
    eventually("request at the device", || {
        dev.requests.load(Ordering::Relaxed) == 1
    })
    .await;

    let server = gw.server.take().unwrap();
    let started = Instant::now();
    let draining = tokio::spawn(server.shutdown());
    // Not ready at once, while the metrics listener still answers.
    let mut ready = 200;
    for _ in 0..40 {
        ready = external::get(metrics, "/readyz").await.0;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ready, 503);
    // No new connections.
    let mut refused = false;
    for _ in 0..40 {
        if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "the browser listener still accepts");
    // The request in flight completes.
    tx.send(Bytes::from_static(b" second half")).await.unwrap();
    drop(tx);
    let (head, body) = pending.await.unwrap();
    assert_eq!(head.status, 200);
    assert!(body.starts_with(b"{\"bytes\":23,"), "{body:?}");
    draining.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
