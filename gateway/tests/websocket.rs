//! WebSockets through the gateway, over HTTP/1.1 Upgrade and HTTP/2
//! extended CONNECT, to a real device runtime: echo, subprotocols, close
//! codes both ways, Origin checks, limits and the link dying under a
//! live socket.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::harness::{DOMAIN, Dev, Gw, WsClient, empty, head_headers, link_config};
use futures_util::{SinkExt as _, StreamExt as _};
use http::Request;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

fn origin(gw: &Gw, id: &str) -> String {
    format!("https://{}:{}", host(id), gw.addr.port())
}

/// Sends `text` and expects it back.
async fn echoes(ws: &mut WsClient, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next(ws).await, Message::text(text));
}

async fn next(ws: &mut WsClient) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no message within 10 s")
        .expect("socket ended")
        .expect("socket failed")
}

async fn close_of(ws: &mut WsClient) -> CloseFrame {
    loop {
        match next(ws).await {
            Message::Close(Some(f)) => return f,
            Message::Close(None) => panic!("close without a code"),
            _ => continue,
        }
    }
}

/// The headers the device received, from `/ws-head`'s first message.
async fn device_saw(ws: &mut WsClient) -> Vec<(String, String)> {
    match next(ws).await {
        Message::Text(t) => head_headers(t.as_bytes()),
        m => panic!("expected the head as text, got {m:?}"),
    }
}

fn get<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn messages_pings_and_close_codes_over_h1_and_h2() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw
        .echo("plc", &["echo.v1"], link_config(4096, 16384, 1024))
        .await;
    let o = origin(&gw, "plc");
    for v in [1u8, 2] {
        let (mut ws, proto) = gw
            .ws(
                v,
                &host("plc"),
                "/ws-head",
                &[("origin", &o), ("sec-websocket-protocol", "chat, echo.v1")],
            )
            .await
            .unwrap();
        assert_eq!(proto.as_deref(), Some("echo.v1"), "h{v}");
        let saw = device_saw(&mut ws).await;
        assert_eq!(get(&saw, "host"), Some("plc"));
        assert_eq!(get(&saw, "origin"), Some("http://plc"));
        assert_eq!(get(&saw, "sec-websocket-protocol"), Some("echo.v1"));
        for gone in [
            "sec-websocket-key",
            "sec-websocket-version",
            "upgrade",
            "connection",
        ] {
            assert_eq!(get(&saw, gone), None, "{gone} reached the device");
        }

        echoes(&mut ws, "hello").await;
        // Browsers send a message as one frame: up to max_frame (64 KiB).
        let big: Vec<u8> = (0..65_000u32).map(|i| (i % 256) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(big));
        // Text over many device records comes back whole: the gateway
        // passes it on in frames as the records arrive, its characters
        // split between them.
        let text = "é€😀 ".repeat(2_000);
        echoes(&mut ws, &text).await;
        // Pings are answered by the gateway.
        ws.send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::Pong(Bytes::from_static(b"are you there"))
        );

        // The device closes with its own code and reason.
        ws.send(Message::text("close:4001:bye")).await.unwrap();
        let f = close_of(&mut ws).await;
        assert_eq!(
            (u16::from(f.code), f.reason.as_str()),
            (4001, "bye"),
            "h{v}"
        );

        // The browser closes: its code reaches the device, whose echo comes back.
        let (mut ws, _) = gw
            .ws(v, &host("plc"), "/ws", &[("origin", &o)])
            .await
            .unwrap();
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(4100),
            reason: "done".into(),
        })))
        .await
        .unwrap();
        let f = close_of(&mut ws).await;
        assert_eq!(u16::from(f.code), 4100);
    }
    let stats = &gw.server().bridge.stats;
    assert_eq!(stats.ws_opened.load(Ordering::Relaxed), 4);
    // Each socket leaves the open gauge as its task ends.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while stats.ws_open.load(Ordering::Relaxed) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        closed.await.is_ok(),
        "ws_open stayed {}",
        stats.ws_open.load(Ordering::Relaxed)
    );
    gw.stop().await;
}

#[tokio::test]
async fn origin_is_checked_before_the_device_is_contacted() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    for v in [1u8, 2] {
        for (headers, why) in [
            (vec![("origin", "https://evil.example")], "foreign"),
            (vec![], "missing"),
            (vec![("origin", "https://plc.gw.example.com")], "wrong port"),
        ] {
            let before = dev.requests.load(Ordering::Relaxed);
            let r = gw.ws(v, &host("plc"), "/ws", &headers).await;
            let refused = r
                .err()
                .unwrap_or_else(|| panic!("{why} origin accepted (h{v})"));
            assert_eq!(refused.status, 403, "{why}: {}", refused.body);
            assert!(refused.body.contains("origin"), "{}", refused.body);
            assert_eq!(
                dev.requests.load(Ordering::Relaxed),
                before,
                "{why}: device contacted"
            );
        }
        // Path-based routing: the gateway's own origin.
        let own = format!("https://{DOMAIN}:{}", gw.addr.port());
        let (mut ws, _) = gw
            .ws(v, DOMAIN, "/d/plc/ws", &[("origin", &own)])
            .await
            .unwrap();
        echoes(&mut ws, "x").await;
    }
    assert!(
        gw.server()
            .bridge
            .stats
            .origin_rejected
            .load(Ordering::Relaxed)
            >= 6
    );
    gw.stop().await;
}

#[tokio::test]
async fn subprotocol_and_host_policies() {
    let gw = Gw::start(
        "",
        &[
            Dev("neg", ""),
            Dev("strip", "[device.normalize]\nsubprotocol = \"strip\"\nhost = \"lws.local\"\nport = 8080\norigin = \"keep\""),
            Dev(
                "map",
                "[device.normalize]\nsubprotocol = { map = { \"ui\" = \"lws-mirror-protocol\" } }\nport = 80\norigin = { set = \"http://10.0.0.5\" }",
            ),
        ],
    )
    .await;
    let _a = gw
        .echo(
            "neg",
            &["echo.v1", "echo.v2"],
            link_config(4096, 16384, 1024),
        )
        .await;
    let _b = gw
        .echo("strip", &["echo.v1"], link_config(4096, 16384, 1024))
        .await;
    let _c = gw
        .echo(
            "map",
            &["lws-mirror-protocol"],
            link_config(4096, 16384, 1024),
        )
        .await;
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        // device, offered, browser gets, device gets
        (
            "neg",
            "unknown, echo.v2, echo.v1",
            Some("echo.v2"),
            Some("echo.v2"),
        ),
        ("neg", "only-unknown", None, None),
        ("strip", "echo.v1", Some("echo.v1"), None),
        ("map", "ui", Some("ui"), Some("lws-mirror-protocol")),
        (
            "map",
            "lws-mirror-protocol",
            Some("lws-mirror-protocol"),
            Some("lws-mirror-protocol"),
        ),
    ];
    for v in [1u8, 2] {
        for (id, offered, browser, device) in cases {
            let o = origin(&gw, id);
            let (mut ws, got) = gw
                .ws(
                    v,
                    &host(id),
                    "/ws-head",
                    &[("origin", &o), ("sec-websocket-protocol", offered)],
                )
                .await
                .unwrap_or_else(|r| panic!("{id} {offered}: refused {r:?}"));
            assert_eq!(got.as_deref(), *browser, "h{v} {id} {offered}");
            let saw = device_saw(&mut ws).await;
            assert_eq!(
                get(&saw, "sec-websocket-protocol"),
                *device,
                "h{v} {id} {offered}"
            );
            let (want_host, want_origin) = match *id {
                "neg" => ("neg", Some("http://neg".to_string())),
                "strip" => ("lws.local:8080", Some(o.clone())),
                _ => ("map", Some("http://10.0.0.5".to_string())),
            };
            assert_eq!(get(&saw, "host"), Some(want_host));
            assert_eq!(get(&saw, "origin").map(str::to_string), want_origin);
            assert_eq!(get(&saw, "x-forwarded-host"), Some(host(id).as_str()));
            assert_eq!(get(&saw, "x-forwarded-proto"), Some("https"));
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn device_refusal_is_passed_back_and_oversized_messages_close_1009() {
    let gw = Gw::start(
        "[websocket]\nmax_message = \"64KiB\"\nmax_frame = \"64KiB\"\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let o = origin(&gw, "plc");
    for v in [1u8, 2] {
        // Answered handshakes are counted by how the browser opened them.
        let http = if v == 1 { "1.1" } else { "2" };
        let handshakes = format!("gateway_websocket_handshakes_total{{http=\"{http}\"}}");
        let before = gw.metric(&handshakes);
        let r = gw
            .ws(v, &host("plc"), "/ws-refuse", &[("origin", &o)])
            .await;
        let refused = r.err().expect("refusal accepted");
        assert_eq!(refused.status, 403);
        assert_eq!(refused.body, "upgrade refused\n");
        assert_eq!(
            gw.metric(&handshakes),
            before,
            "h{v}: a refusal is no handshake"
        );

        let (mut ws, _) = gw
            .ws(v, &host("plc"), "/ws", &[("origin", &o)])
            .await
            .unwrap();
        assert_eq!(gw.metric(&handshakes), before + 1.0, "h{v}");
        ws.send(Message::binary(vec![1u8; 60_000])).await.unwrap();
        assert!(matches!(next(&mut ws).await, Message::Binary(b) if b.len() == 60_000));
        let _ = ws.send(Message::binary(vec![1u8; 70_000])).await;
        let f = close_of(&mut ws).await;
        assert_eq!(u16::from(f.code), 1009, "h{v}");
    }
    gw.stop().await;
}

/// `[http] websocket_over_http2 = false`: the gateway does not announce
/// extended CONNECT (RFC 8441), so an HTTP/2 client cannot open a
/// WebSocket as a stream (a browser then opens it over HTTP/1.1, see
/// `tests/tests/browser.rs`), and HTTP/1.1 upgrades work as before. On
/// (the default) the same request opens one
/// (`messages_pings_and_close_codes_over_h1_and_h2`).
#[tokio::test]
async fn websockets_over_http2_can_be_turned_off() {
    let gw = Gw::start("[http]\nwebsocket_over_http2 = false\n", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let o = origin(&gw, "plc");
    let mut client = gw.client(2, &host("plc")).await;
    let connect = Request::builder()
        .method("CONNECT")
        .uri(format!("https://{}/ws", host("plc")))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("origin", &o)
        .body(empty())
        .unwrap();
    let r = client.send(connect).await;
    assert!(
        r.is_err(),
        "an extended CONNECT went through: {:?}",
        r.map(|resp| resp.status())
    );
    // The connection still serves requests.
    let (parts, _) = client
        .fetch(
            common::harness::get(2, &host("plc"), "/head")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(parts.status, 200);
    let (mut ws, _) = gw
        .ws(1, &host("plc"), "/ws", &[("origin", &o)])
        .await
        .unwrap();
    echoes(&mut ws, "over 1.1").await;
    assert_eq!(
        gw.metric("gateway_websocket_handshakes_total{http=\"1.1\"}"),
        1.0
    );
    assert_eq!(
        gw.metric("gateway_websocket_handshakes_total{http=\"2\"}"),
        0.0
    );
    gw.stop().await;
}

/// A WebSocket outlives its connection's idle timeout: over HTTP/2 the
/// gateway drains an idle connection (GOAWAY: no new streams) but the
/// WebSocket stream on it goes on, and over HTTP/1.1 the upgraded
/// connection is the WebSocket's alone. Browsers keep controller pages
/// open for hours with nothing else on the connection.
#[tokio::test]
async fn websockets_outlive_the_idle_timeout() {
    let gw = Gw::start("[http]\nidle_timeout = \"1s\"\n", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let o = origin(&gw, "plc");
    let mut sockets = Vec::new();
    for v in [1u8, 2] {
        let (ws, _) = gw
            .ws(v, &host("plc"), "/ws", &[("origin", &o)])
            .await
            .unwrap();
        sockets.push((v, ws));
    }
    // Three idle periods (the idle check runs every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (v, ws) in &mut sockets {
        echoes(ws, &format!("still open over h{v}")).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_link_dying_closes_browsers_1011_and_shutdown_1001() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let o = origin(&gw, "plc");
    let (mut ws1, _) = gw
        .ws(1, &host("plc"), "/ws", &[("origin", &o)])
        .await
        .unwrap();
    let (mut ws2, _) = gw
        .ws(2, &host("plc"), "/ws", &[("origin", &o)])
        .await
        .unwrap();
    echoes(&mut ws1, "a").await;
    let started = Instant::now();
    drop(dev);
    for ws in [&mut ws1, &mut ws2] {
        let f = close_of(ws).await;
        assert_eq!(u16::from(f.code), 1011);
    }
    // The link's keepalive bounds this; here the socket closes, so it is at once.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Gateway shutdown: GOAWAY to the device, then "going away" to browsers.
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let (mut ws, _) = gw
        .ws(1, &host("plc"), "/ws", &[("origin", &o)])
        .await
        .unwrap();
    echoes(&mut ws, "b").await;
    let stop = tokio::spawn(gw.stop());
    let f = close_of(&mut ws).await;
    assert_eq!(u16::from(f.code), 1001);
    stop.await.unwrap();
}

/// The firmware's own application (the sample controller, host build) behind
/// the gateway: its page, its API, live readings over WebSocket and a command.
#[tokio::test]
async fn the_sample_controller_works_through_the_gateway() {
    use common::harness::{body, empty, get, request};
    let gw = Gw::start("", &[Dev("ctl", "")]).await;
    let _dev = gw.controller("ctl", link_config(1024, 4096, 1024));
    gw.wait_online("ctl").await;
    let h = host("ctl");
    let mut c = gw.client(2, &h).await;
    let (p, b) = c
        .fetch(
            get(2, &h, "/")
                .header("accept-encoding", "gzip")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    assert_eq!(p.headers["content-encoding"], "gzip");
    assert_eq!(p.headers["content-length"], b.len().to_string().as_str());
    let etag = p.headers["etag"].clone();
    // A real browser's navigation head is larger than the controller's
    // 512 bytes: what only browsers use is dropped to fit.
    let (p, _) = c
        .fetch(
            get(2, &h, "/")
                .header("sec-ch-ua", "\"Chromium\";v=\"156\", \"Not)A;Brand\";v=\"8\"")
                .header("sec-ch-ua-mobile", "?0")
                .header("sec-ch-ua-platform", "\"Linux\"")
                .header("upgrade-insecure-requests", "1")
                .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36")
                .header("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8")
                .header("sec-fetch-site", "none")
                .header("sec-fetch-mode", "navigate")
                .header("sec-fetch-user", "?1")
                .header("sec-fetch-dest", "document")
                .header("accept-encoding", "gzip, deflate, br, zstd")
                .header("accept-language", "en-US,en;q=0.9")
                .header("priority", "u=0, i")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200, "a browser's head was refused");
    assert_eq!(p.headers["content-encoding"], "gzip");
    assert!(gw.server().bridge.stats.trimmed.load(Ordering::Relaxed) > 0);
    let (p, _) = c
        .fetch(
            get(2, &h, "/")
                .header("if-none-match", etag)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 304);

    let o = origin(&gw, "ctl");
    let (mut ws, proto) = gw
        .ws(
            1,
            &h,
            "/ws",
            &[("origin", &o), ("sec-websocket-protocol", "readings.v1")],
        )
        .await
        .unwrap();
    assert_eq!(proto.as_deref(), Some("readings.v1"));
    let started = Instant::now();
    let mut readings = 0;
    while readings < 5 {
        if let Message::Text(t) = next(&mut ws).await {
            assert!(t.as_str().contains("\"temp\""), "{t}");
            readings += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "10 Hz readings arrive"
    );
    // A command through the API changes what the readings say.
    let (p, b) = c
        .fetch(
            request(2, "POST", &h, "/api/led/1")
                .header("origin", &o)
                .body(body("on"))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    assert!(
        String::from_utf8_lossy(&b).contains("\"leds\":[0,1,0]"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    loop {
        if let Message::Text(t) = next(&mut ws).await
            && t.as_str().contains("\"leds\":[0,1,0]")
        {
            break;
        }
    }
    gw.stop().await;
}
