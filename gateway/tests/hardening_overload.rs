//! Overload protection against a real gateway: past `[gateway.limits]
//! overload_open_files` new browser connections are refused before TLS,
//! while the device session, an open browser connection and an open
//! WebSocket carry on; below 90 % of the threshold the gateway accepts
//! again by itself. Alone in its test binary: it counts the process's
//! file descriptors.

mod common;

use std::time::Duration;

use common::harness::{DOMAIN, Dev, Gw, empty, eventually, get, link_config};
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::edge::admission::Usage;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Whether a fresh TCP connection is closed by the gateway at once.
async fn refused(gw: &Gw) -> bool {
    let Ok(mut tcp) = TcpStream::connect(gw.addr).await else {
        return true;
    };
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_refuses_new_browsers_keeps_what_is_open_and_recovers() {
    let threshold = Usage::sample().fds + 80;
    let gw = Gw::start(
        &format!("[gateway.limits]\noverload_open_files = {threshold}\n"),
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let h = format!("plc.{DOMAIN}");
    let origin = format!("https://{h}:{}", gw.addr.port());
    let (mut ws, _) = gw.ws(1, &h, "/ws", &[("origin", &origin)]).await.unwrap();
    let mut browser = gw.client(1, &h).await;
    let stats = gw.server().edge_stats.clone();
    assert!(!stats.overload.is_active());

    // Connections that never start TLS, until the descriptors cross the line.
    let mut held = Vec::new();
    while Usage::sample().fds < threshold + 4 && held.len() < 500 {
        held.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    eventually("overload", || stats.overload.is_active()).await;
    assert!(refused(&gw).await, "a new connection was accepted");
    assert!(gw.metric("gateway_browser_connections_refused_total{reason=\"overload\"}") >= 1.0);
    assert_eq!(gw.metric("gateway_overload_active"), 1.0);

    // What was open carries on: the WebSocket, the browser, the device.
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("still here"));
    let (p, _) = browser
        .fetch(get(1, &h, "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200);
    assert!(gw.server().hub.device("plc").is_some());

    // Below 90 % again: accepted by itself.
    drop(held);
    eventually("recovery", || !stats.overload.is_active()).await;
    let mut again = gw.client(1, &h).await;
    let (p, _) = again
        .fetch(get(1, &h, "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200);
    assert_eq!(gw.metric("gateway_overload_transitions_total"), 2.0);
    assert_eq!(gw.metric("gateway_overload_active"), 0.0);
    gw.stop().await;
}
