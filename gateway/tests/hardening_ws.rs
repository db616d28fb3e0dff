//! WebSocket limits against hostile browsers, spoken frame by frame over a
//! real TLS connection: an unmasked client frame and a compressed (RSV1)
//! frame close 1002 (text that is not UTF-8: 1007; each counted in
//! `gateway_websocket_refused_total`), permessage-deflate is never agreed, an oversized
//! message closes 1009, and a client that stops reading is cut off by the
//! send timer after a bounded amount of data (the gateway holds no more
//! than its write buffer and the link window for it). The device and
//! other browsers carry on.

mod common;

use std::time::Duration;

use common::harness::{DOMAIN, Dev, Gw, empty, get, link_config};
use futures_util::SinkExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

fn host() -> String {
    format!("plc.{DOMAIN}")
}

/// Upgrades over HTTP/1.1 by hand; returns the stream and the response head.
async fn upgrade(gw: &Gw, extra: &str) -> (TlsStream<TcpStream>, String) {
    let mut tls = gw.tls(&host(), &[b"http/1.1"]).await;
    let (h, port) = (host(), gw.addr.port());
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {h}\r\nOrigin: https://{h}:{port}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (tls, head)
}

/// A client frame: FIN, `opcode`, masked unless `mask` is None.
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    assert!(payload.len() < 126);
    f.push(m | payload.len() as u8);
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Reads server frames until a close; returns its code.
async fn close_code(s: &mut (impl AsyncRead + Unpin)) -> u16 {
    let read = async {
        loop {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.unwrap();
            assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    s.read_exact(&mut l).await.unwrap();
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    s.read_exact(&mut l).await.unwrap();
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            s.read_exact(&mut payload).await.unwrap();
            if h[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no close frame")
}

/// The device still answers browsers.
async fn device_serves(gw: &Gw) {
    let mut browser = gw.client(2, &host()).await;
    let (parts, _) = browser
        .fetch(get(2, &host(), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(parts.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_1002_and_deflate_is_never_agreed() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;

    // Offered compression is not taken.
    let (mut ws, head) = upgrade(
        &gw,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "an extension was agreed:\n{head}"
    );
    // A masked text frame round-trips...
    ws.write_all(&frame(0x81, b"hello", Some([1, 2, 3, 4])))
        .await
        .unwrap();
    ws.flush().await.unwrap();
    let mut echo = [0u8; 7];
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x81\x05hello");
    // ... a compressed one (RSV1, never agreed) is a protocol error.
    ws.write_all(&frame(0xc1, b"hello", Some([1, 2, 3, 4])))
        .await
        .unwrap();
    ws.flush().await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1002);

    // An unmasked client frame is a protocol error.
    let (mut ws, _) = upgrade(&gw, "").await;
    ws.write_all(&frame(0x81, b"hello", None)).await.unwrap();
    ws.flush().await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1002);

    // Text that is not UTF-8 closes 1007.
    let (mut ws, _) = upgrade(&gw, "").await;
    ws.write_all(&frame(0x81, &[0xC3, 0x28], Some([5, 6, 7, 8])))
        .await
        .unwrap();
    ws.flush().await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1007);

    // Each refusal is counted, by reason.
    assert_eq!(
        gw.metric("gateway_websocket_refused_total{reason=\"protocol\"}"),
        2.0
    );
    assert_eq!(
        gw.metric("gateway_websocket_refused_total{reason=\"utf8\"}"),
        1.0
    );
    device_serves(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_1009() {
    let gw = Gw::start(
        "[websocket]\nmax_message = \"16KiB\"\nmax_frame = \"16KiB\"\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    // A message in fragments, each under max_frame, together over max_message.
    let (mut ws, _) = upgrade(&gw, "").await;
    let chunk = [0x41u8; 100];
    ws.write_all(&frame(0x01, &chunk, Some([9, 9, 9, 9])))
        .await
        .unwrap();
    for _ in 0..200 {
        if ws
            .write_all(&frame(0x00, &chunk, Some([9, 9, 9, 9])))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = ws.flush().await;
    assert_eq!(close_code(&mut ws).await, 1009);
    assert_eq!(
        gw.metric("gateway_websocket_refused_total{reason=\"too_big\"}"),
        1.0
    );
    device_serves(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_bounded_then_cut_off() {
    let gw = Gw::start(
        "[gateway.limits]\nsend_timeout = \"2s\"\n\n\
         [websocket]\nwrite_buffer = \"64KiB\"\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let (mut ws, _) = gw
        .ws(
            1,
            &host(),
            "/ws",
            &[("origin", &format!("https://{}:{}", host(), gw.addr.port()))],
        )
        .await
        .unwrap();
    // Send 64 KiB messages (echoed back) and never read: the echoes pile
    // up toward this client until every buffer on the way is full, then
    // the gateway stops reading from it and the sends stall.
    const MESSAGE: usize = 64 << 10;
    const ATTEMPT: usize = 256 << 20;
    let mut sent = 0usize;
    while sent < ATTEMPT {
        let send = ws.send(Message::binary(vec![0x33u8; MESSAGE]));
        match tokio::time::timeout(Duration::from_secs(3), send).await {
            Ok(Ok(())) => sent += MESSAGE,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // What got in is bounded by the buffers on the way (kernel socket
    // buffers both ways, the link windows, the gateway's write buffer),
    // not by what the client offered.
    assert!(
        sent < 48 << 20,
        "{} MiB went in: something buffers without bound",
        sent >> 20
    );
    eprintln!(
        "a non-reading client got {} KiB in before its sends stalled",
        sent >> 10
    );
    // The send timer closes it.
    common::harness::eventually("the send timer fired", || {
        gw.metric("gateway_browser_timeouts_total{timer=\"send\"}") >= 1.0
    })
    .await;
    device_serves(&gw).await;
    gw.stop().await;
}
