//! Browsers to devices through the gateway: real TLS clients (hyper over
//! rustls, HTTP/1.1 and HTTP/2), real devices (the `device-fw` runtime with
//! its `EchoApp`), real sockets on 127.0.0.1:0.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::harness::{DOMAIN, Dev, Gw, body, empty, get, head_headers, link_config, request};

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

#[tokio::test]
async fn http_round_trips_over_h1_and_h2_host_and_path_routing() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(1024, 4096, 1024)).await;
    for v in [1u8, 2] {
        // Host-based.
        let mut c = gw.client(v, &host("plc")).await;
        let (p, b) = c
            .fetch(get(v, &host("plc"), "/head?x=1").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 200, "h{v}");
        let text = String::from_utf8_lossy(&b);
        assert!(text.contains("\"target\":\"/head?x=1\""), "{text}");
        let h = head_headers(&b);
        assert_eq!(h[0], ("host".into(), "plc".into()), "{h:?}");
        assert!(
            h.iter()
                .any(|(n, v)| n == "x-forwarded-proto" && v == "https")
        );
        assert!(!h.iter().any(|(n, _)| n == "x-forwarded-prefix"));

        // Path-based: the prefix is stripped and passed on.
        let mut c = gw.client(v, DOMAIN).await;
        let (p, b) = c
            .fetch(get(v, DOMAIN, "/d/plc/head").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 200);
        assert!(String::from_utf8_lossy(&b).contains("\"target\":\"/head\""));
        assert!(head_headers(&b).contains(&("x-forwarded-prefix".into(), "/d/plc".into())));
        let (p, _) = c
            .fetch(get(v, DOMAIN, "/d/plc?a=b").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 308);
        assert_eq!(p.headers["location"], "/d/plc/?a=b");

        // A body both ways, any method.
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut c = gw.client(v, &host("plc")).await;
        let (p, b) = c
            .fetch(
                request(v, "PUT", &host("plc"), "/echo")
                    .body(body(data.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 200);
        assert_eq!(b.len(), data.len());
        assert!(b == data, "echoed body differs (h{v})");

        // The device's status and headers come back as sent.
        let (p, b) = c
            .fetch(get(v, &host("plc"), "/status/418").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 418);
        assert_eq!(&b[..], b"status 418");
    }
    gw.stop().await;
}

#[tokio::test]
async fn fifty_megabytes_each_way_through_small_windows() {
    let gw = Gw::start("", &[Dev("big", "")]).await;
    // 4 KiB stream windows and 1 KiB records: thousands of credit round trips.
    let _dev = gw.echo("big", &[], link_config(4096, 16384, 1024)).await;
    const N: usize = 50_000_000;
    for v in [1u8, 2] {
        let mut c = gw.client(v, &host("big")).await;
        let started = Instant::now();
        let resp = bytes_from_big(&mut c, v, N).await;
        assert_eq!(resp.headers()["content-length"], N.to_string().as_str());
        let mut body = resp.into_body();
        let (mut n, mut ok) = (0usize, true);
        while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
            let f = f.unwrap();
            if let Ok(d) = f.into_data() {
                ok &= d
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == ((n + i) % 251) as u8);
                n += d.len();
            }
        }
        assert_eq!(n, N);
        assert!(ok, "download pattern differs");
        eprintln!("h{v}: 50 MB download in {:?}", started.elapsed());

        // Upload: generated lazily, so the client holds one chunk at a time.
        let started = Instant::now();
        let chunk = Bytes::from(vec![3u8; 64 * 1024]);
        let chunks = N.div_ceil(chunk.len());
        let stream = futures_util::stream::iter((0..chunks).map(move |i| {
            let len = if i + 1 == chunks {
                N - i * 65536
            } else {
                65536
            };
            Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.slice(..len)))
        }));
        let upload = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
        let (p, b) = c
            .fetch(
                request(v, "POST", &host("big"), "/upload")
                    .body(upload)
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 200);
        assert_eq!(
            String::from_utf8_lossy(&b),
            format!("{{\"bytes\":{N},\"sum\":{}}}", 3 * N as u64)
        );
        eprintln!("h{v}: 50 MB upload in {:?}", started.elapsed());
    }
    gw.stop().await;
}

#[tokio::test]
async fn offline_unknown_and_slow_devices_get_explicit_errors() {
    let gw = Gw::start(
        "[http]\nresponse_timeout = \"1s\"\n",
        &[Dev("away", ""), Dev("slow", "")],
    )
    .await;
    let mut c = gw.client(2, DOMAIN).await;
    // Offline: 502 at once, saying so, as JSON for scripts and HTML for browsers.
    let started = Instant::now();
    let (p, b) = c
        .fetch(get(2, DOMAIN, "/d/away/").body(empty()).unwrap())
        .await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(p.status, 502);
    assert_eq!(p.headers["x-gateway-error"], "device_offline");
    assert!(String::from_utf8_lossy(&b).starts_with("{\"error\":\"device_offline\""));
    let (p, b) = c
        .fetch(
            get(2, DOMAIN, "/d/away/")
                .header("accept", "text/html")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 502);
    assert!(String::from_utf8_lossy(&b).contains("is offline"));
    // Unknown device (without a login, the same answer as any private
    // device: nobody learns which ids exist), unknown host.
    let (p, _) = c
        .fetch(get(2, DOMAIN, "/d/nobody/").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 401);
    assert_eq!(p.headers["x-gateway-error"], "login_required");
    let mut other = gw.client(1, DOMAIN).await;
    let (p, _) = other
        .fetch(get(1, "elsewhere.example.org", "/").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 421);

    // A device that never answers: 504 after the response timeout.
    let dev = gw.echo("slow", &[], link_config(1024, 4096, 1024)).await;
    let started = Instant::now();
    let (p, _) = c
        .fetch(get(2, DOMAIN, "/d/slow/slow").body(empty()).unwrap())
        .await;
    let took = started.elapsed();
    assert_eq!(p.status, 504);
    assert_eq!(p.headers["x-gateway-error"], "device_timeout");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(gw.server().bridge.stats.timeouts.load(Ordering::Relaxed), 1);

    // Killed mid-stream: the browser's body fails instead of ending short.
    let resp = c
        .send(
            get(2, DOMAIN, "/d/slow/bytes?n=100000000")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut n = 0;
    while n < 100_000 {
        let f = http_body_util::BodyExt::frame(&mut body)
            .await
            .unwrap()
            .unwrap();
        n += f.into_data().map_or(0, |d| d.len());
    }
    drop(dev);
    let end = loop {
        match http_body_util::BodyExt::frame(&mut body).await {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(end, Some(Err(_))),
        "body ended cleanly after the device died"
    );
    gw.stop().await;
}

#[tokio::test]
async fn origin_and_headers_on_plain_http_follow_the_policy() {
    let gw = Gw::start(
        "",
        &[Dev("plc", "allowed_origins = [\"https://ui.example.org\"]\n[device.normalize]\nhost = \"plc.local\"\nport = 8080\n")],
    )
    .await;
    let dev = gw.echo("plc", &[], link_config(1024, 4096, 1024)).await;
    let mut c = gw.client(1, &host("plc")).await;
    // A foreign Origin on any request: 403, and the device never sees it.
    let (p, _) = c
        .fetch(
            request(1, "POST", &host("plc"), "/echo")
                .header("origin", "https://evil.example")
                .body(body("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(p.headers["x-gateway-error"], "origin_foreign");
    assert_eq!(dev.requests.load(Ordering::Relaxed), 0);
    // The listed origin passes and is rewritten to the device's own.
    let (p, b) = c
        .fetch(
            get(1, &host("plc"), "/head")
                .header("origin", "https://ui.example.org")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "dropped")
                .header("x-forwarded-for", "6.6.6.6")
                .header("forwarded", "for=6.6.6.6")
                .header("x-app", "kept")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    let h = head_headers(&b);
    let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(h[0], ("host".into(), "plc.local:8080".into()));
    assert!(
        h.contains(&("origin".into(), "http://plc.local:8080".into())),
        "{h:?}"
    );
    assert!(h.contains(&("x-app".into(), "kept".into())));
    assert!(
        h.contains(&("x-forwarded-for".into(), "127.0.0.1".into())),
        "{h:?}"
    );
    for gone in ["connection", "x-hop", "keep-alive"] {
        assert!(!names.contains(&gone), "{gone} reached the device: {h:?}");
    }
    assert_eq!(names.iter().filter(|n| **n == "forwarded").count(), 1);
    // No Origin at all (a top-level navigation): allowed.
    let (p, _) = c
        .fetch(get(1, &host("plc"), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200);
    gw.stop().await;
}

/// `GET /bytes?n={n}` from the device "big", answered 200.
async fn bytes_from_big(
    c: &mut common::harness::Client,
    v: u8,
    n: usize,
) -> hyper::Response<hyper::body::Incoming> {
    let resp = c
        .send(
            get(v, &host("big"), &format!("/bytes?n={n}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// A response body still being sent keeps its connection busy: the idle
/// timer (2 s here) must not close a connection under a download that
/// outlasts it, and the next request on it is served. (Once the gateway
/// has handed over the last byte, the connection is idle even while the
/// client still drains its buffers; hence an idle timeout longer than
/// that drain takes on a loaded machine.)
#[tokio::test]
async fn a_long_download_is_not_an_idle_connection() {
    let gw = Gw::start("[http]\nidle_timeout = \"2s\"\n", &[Dev("big", "")]).await;
    let _dev = gw
        .echo("big", &[], link_config(64 * 1024, 256 * 1024, 1024))
        .await;
    const N: usize = 16_000_000;
    for v in [1u8, 2] {
        let mut c = gw.client(v, &host("big")).await;
        let resp = bytes_from_big(&mut c, v, N).await;
        let mut body = resp.into_body();
        let (started, mut n) = (Instant::now(), 0usize);
        while let Some(f) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(d) = f.unwrap().into_data() {
                n += d.len();
            }
            // Read at about 1 MB/s for two and a half idle periods (5 of
            // the 16 MB), then drain.
            let (due, now) = (Duration::from_secs_f64(n as f64 / 1e6), started.elapsed());
            if now < Duration::from_secs(5) && due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        assert_eq!(n, N, "h{v}: the whole body");
        assert!(started.elapsed() >= Duration::from_secs(5));
        let next = c
            .send(get(v, &host("big"), "/bytes?n=10").body(empty()).unwrap())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "h{v}: the connection is gone after a {:?} download: {e}",
                    started.elapsed()
                )
            });
        assert_eq!(next.status(), 200, "h{v}: next request");
    }
    gw.stop().await;
}
