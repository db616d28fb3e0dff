//! Limits at the edge, against real sockets: oversized heads (431 from
//! hyper, and from the device's `max_head` before the device is contacted),
//! a client that never finishes TLS, one that sends its head slowly, the
//! MSS clamp taken from the configuration, and a device replaced by a new
//! session while browsers keep being served.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::TempDir;
use common::harness::{DOMAIN, Dev, Gw, empty, get, link_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

/// Writes `req` on a TLS connection and reads until the server closes
/// (or 10 s pass); returns what came back.
async fn raw_exchange(gw: &Gw, req: &[u8]) -> String {
    let mut io = gw.tls(&host("plc"), &[b"http/1.1"]).await;
    io.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oversized_heads_get_431_and_never_reach_the_device() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let h = host("plc");

    // Over the gateway's max_header_bytes (16 KiB).
    let big = format!(
        "GET /head HTTP/1.1\r\nhost: {h}\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = raw_exchange(&gw, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Over max_headers (100).
    let mut many = format!("GET /head HTTP/1.1\r\nhost: {h}\r\n");
    for i in 0..120 {
        many.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(&gw, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Within the gateway's limits but over the device's max_head (8 KiB).
    for v in [1u8, 2] {
        let mut c = gw.client(v, &h).await;
        let (p, b) = c
            .fetch(
                get(v, &h, "/head")
                    .header("x-big", "b".repeat(9_000))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 431, "h{v}");
        assert_eq!(p.headers["x-gateway-error"], "headers_too_large");
        assert!(String::from_utf8_lossy(&b).contains("accepts at most 8192"));
    }
    assert_eq!(
        dev.requests.load(Ordering::Relaxed),
        0,
        "the device was contacted"
    );
    // And the connection pool still serves normal requests.
    let mut c = gw.client(2, &h).await;
    let (p, _) = c.fetch(get(2, &h, "/head").body(empty()).unwrap()).await;
    assert_eq!(p.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn stalled_tls_and_slow_headers_are_closed_on_time() {
    let gw = Gw::start("[http]\nheader_timeout = \"1s\"\n", &[Dev("plc", "")]).await;
    // A TCP client that never speaks: closed at the TLS handshake deadline (10 s
    // by default), counted as "TCP up, TLS stalled".
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut buf)).await;
    let took = started.elapsed();
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "still open after {took:?}: {r:?}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(12),
        "{took:?}"
    );
    let stats = &gw.server().edge_stats;
    assert_eq!(stats.tls_stalled.load(Ordering::Relaxed), 1);

    // TLS done, then a request head dribbled out a byte at a time.
    let mut io = gw.tls(&host("plc"), &[b"http/1.1"]).await;
    let started = Instant::now();
    io.write_all(b"GET /head HTTP/1.1\r\nhost: plc.gw.example.com\r\n")
        .await
        .unwrap();
    let closed = loop {
        if started.elapsed() > Duration::from_secs(8) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if io.write_all(b"x").await.is_err() || io.flush().await.is_err() {
            break true;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), io.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true, // an error response, then close
            Err(_) => {}
        }
    };
    let took = started.elapsed();
    assert!(closed, "a slow head was still being read after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    gw.stop().await;
}

#[tokio::test]
async fn the_configured_mss_is_what_the_gateway_advertises() {
    let dir = TempDir::new("mss");
    dir.certs();
    dir.key();
    let file = dir.write(
        "gateway.toml",
        "[gateway]\ndomain = \"gw.example.com\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nmss = 1000\n\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n\n\
         [tls]\ncertificates = [{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }]\n\n\
         [link]\naddress = \"127.0.0.1:0\"\nmss = 900\n",
    );
    let config = gateway::config::load(&file).unwrap();
    let server = gateway::server::Server::start(&config).await.unwrap();
    for (addr, clamp) in [
        (server.edge_addrs[0], 1000),
        (server.edge_addrs[1], 1360),
        (server.link_addr, 900),
    ] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        // The client's MSS is bounded by what the gateway's SYN-ACK advertised.
        let got = gateway::edge::listener::mss(&tcp).unwrap();
        assert!(
            got <= clamp && got + 40 >= clamp,
            "{addr}: MSS {got}, configured {clamp}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_device_session_replaces_the_old_one_under_traffic() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let first = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let mut c = gw.client(2, &host("plc")).await;
    let (p, _) = c
        .fetch(get(2, &host("plc"), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200);
    // The same device dials again (a reboot whose old TCP session is not dead yet).
    let second = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let hub = &gw.server().hub;
    common::harness::eventually("replaced", || {
        hub.stats.replaced.load(Ordering::Relaxed) >= 1
    })
    .await;
    // The first device's runtime reconnects in turn; stop it so the second stays.
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.wait_online("plc").await;
    let before = second.requests.load(Ordering::Relaxed);
    for _ in 0..5 {
        let (p, _) = c
            .fetch(get(2, &host("plc"), "/head").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 200);
    }
    assert_eq!(
        second.requests.load(Ordering::Relaxed),
        before + 5,
        "not served by the new session"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_device_that_allows_many_streams_gets_them() {
    // The gateway's stream table starts small and grows to what the device announced.
    let gw = Gw::start("", &[Dev("wide", "")]).await;
    let _dev = gw
        .echo_wide::<160>(
            "wide",
            common::harness::link_config_streams(1024, 65536, 1024, 160),
        )
        .await;
    let o = format!("https://{}:{}", host("wide"), gw.addr.port());
    let mut open = Vec::new();
    for i in 0..150 {
        let (ws, _) = gw
            .ws(1, &host("wide"), "/ws", &[("origin", &o)])
            .await
            .unwrap_or_else(|r| panic!("WebSocket {i} refused: {r:?}"));
        open.push(ws);
    }
    assert_eq!(open.len(), 150);
    // One more than the device allows is refused as busy, at once.
    for _ in 0..10 {
        let (ws, _) = gw
            .ws(1, &host("wide"), "/ws", &[("origin", &o)])
            .await
            .unwrap();
        open.push(ws);
    }
    let refused = gw
        .ws(1, &host("wide"), "/ws", &[("origin", &o)])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    gw.stop().await;
}
