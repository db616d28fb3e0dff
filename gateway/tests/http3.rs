//! Browsers over HTTP/3: a real QUIC client (quinn + h3, trusting the test
//! CA) against the gateway's UDP listener on the TLS port, real devices
//! behind it, and the same routing, access control and normalization as
//! over TCP; Alt-Svc on HTTP/1.1 and HTTP/2; hostile input.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use common::harness::{DOMAIN, Dev, Gw, empty, get, head_headers, link_config};
use gateway::auth::password;
use http::{Request, Response};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::task::JoinHandle;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

/// An HTTP/3 client connection.
struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    conn: quinn::Connection,
    driver: JoinHandle<()>,
    _endpoint: quinn::Endpoint,
}

impl Drop for H3 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> quinn::ClientConfig {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()))
}

/// A QUIC connection to the gateway's HTTP/3 port for `sni` with `alpn`.
async fn quic(gw: &Gw, sni: &str, alpn: &[&[u8]]) -> (quinn::Endpoint, Connected) {
    quic_trusting(gw, &gw.ca_pem, sni, alpn).await
}

/// How a QUIC connection attempt ended.
type Connected = Result<quinn::Connection, quinn::ConnectionError>;

/// [`quic`], trusting `ca_pem`.
async fn quic_trusting(
    gw: &Gw,
    ca_pem: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> (quinn::Endpoint, Connected) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client_config(ca_pem, alpn));
    let connecting = endpoint.connect(quic_addr(gw), sni).unwrap();
    (endpoint, connecting.await)
}

fn quic_addr(gw: &Gw) -> SocketAddr {
    gw.server().quic_addrs[0]
}

async fn h3(gw: &Gw, sni: &str) -> H3 {
    let (endpoint, conn) = quic(gw, sni, &[b"h3"]).await;
    let conn = conn.unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    H3 {
        send,
        conn,
        driver,
        _endpoint: endpoint,
    }
}

impl H3 {
    /// Sends `req` with `body` and reads the whole answer.
    async fn fetch(&mut self, req: Request<()>, body: &[u8]) -> (Response<()>, Vec<u8>) {
        let mut stream = self.send.send_request(req).await.unwrap();
        if !body.is_empty() {
            stream
                .send_data(Bytes::copy_from_slice(body))
                .await
                .unwrap();
        }
        stream.finish().await.unwrap();
        let resp = stream.recv_response().await.unwrap();
        let mut out = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        (resp, out)
    }
}

fn h3_get(host: &str, target: &str) -> http::request::Builder {
    Request::get(format!("https://{host}{target}"))
}

#[tokio::test]
async fn device_pages_and_twenty_megabytes_each_way_over_h3() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    // Same port number as the TLS listener, over UDP.
    assert_eq!(quic_addr(&gw), gw.addr);

    // Host-based routing, normalized toward the device.
    let mut c = h3(&gw, &host("plc")).await;
    let (resp, body) = c
        .fetch(h3_get(&host("plc"), "/head?x=1").body(()).unwrap(), b"")
        .await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"target\":\"/head?x=1\""), "{text}");
    let h = head_headers(&body);
    assert_eq!(h[0], ("host".into(), "plc".into()), "{h:?}");
    assert!(
        h.iter()
            .any(|(n, v)| n == "x-forwarded-proto" && v == "https"),
        "{h:?}"
    );
    // No Alt-Svc on HTTP/3 itself; HSTS as over TCP.
    assert!(resp.headers().get("alt-svc").is_none());
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=31536000")
    );

    // Path-based routing with the prefix stripped and passed on.
    let mut apex = h3(&gw, DOMAIN).await;
    let (resp, body) = apex
        .fetch(h3_get(DOMAIN, "/d/plc/head").body(()).unwrap(), b"")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("\"target\":\"/head\""));
    assert!(head_headers(&body).contains(&("x-forwarded-prefix".into(), "/d/plc".into())));

    // A body both ways.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let (resp, body) = c
        .fetch(
            Request::put(format!("https://{}/echo", host("plc")))
                .body(())
                .unwrap(),
            &data,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(body == data, "echoed body differs ({} bytes)", body.len());

    // 20 MB download, streamed and checked byte by byte.
    const N: usize = 20_000_000;
    let mut stream = c
        .send
        .send_request(
            h3_get(&host("plc"), &format!("/bytes?n={N}"))
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], N.to_string().as_str());
    let (mut n, mut ok) = (0usize, true);
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        let d = chunk.copy_to_bytes(chunk.remaining());
        ok &= d
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((n + i) % 251) as u8);
        n += d.len();
    }
    assert_eq!(n, N);
    assert!(ok, "download pattern differs");

    // 20 MB upload in 64 KiB chunks; the device counts and sums it.
    let mut stream = c
        .send
        .send_request(
            Request::post(format!("https://{}/upload", host("plc")))
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    let chunk = Bytes::from(vec![3u8; 64 * 1024]);
    let mut left = N;
    while left > 0 {
        let len = left.min(chunk.len());
        stream.send_data(chunk.slice(..len)).await.unwrap();
        left -= len;
    }
    stream.finish().await.unwrap();
    let resp = stream.recv_response().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{{\"bytes\":{N},\"sum\":{}}}", 3 * N as u64)
    );

    // Counted: handshakes, open connections; path statistics once closed.
    let stats = &gw.server().quic_stats;
    assert_eq!(stats.handshakes.with_label_values(&["ok"]).get(), 2);
    assert_eq!(stats.open.get(), 2);
    c.conn.close(0u32.into(), b"done");
    apex.conn.close(0u32.into(), b"done");
    common::harness::eventually("QUIC connections closed", || stats.open.get() == 0).await;
    assert_eq!(stats.rtt.get_sample_count(), 2);
    assert!(
        stats.sent_packets.get() > 10_000,
        "{}",
        stats.sent_packets.get()
    );
    let metrics = gw.server().metrics.render();
    for family in [
        "gateway_quic_handshakes_total{result=\"ok\"} 2",
        "gateway_quic_connections_open 0",
        "gateway_quic_lost_packets_total",
        "gateway_quic_rtt_seconds_count 2",
        "gateway_quic_path_mtu_bytes_count 2",
    ] {
        assert!(metrics.contains(family), "{family} missing from\n{metrics}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn alt_svc_is_on_h1_and_h2_answers_only_when_http3_is_on() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let expected = format!("h3=\":{}\"; ma=86400", gw.addr.port());
    for v in [1u8, 2] {
        let mut c = gw.client(v, &host("plc")).await;
        // A device's answer and one the gateway makes itself.
        for target in ["/head", "/d/nobody/"] {
            let h = if target == "/head" {
                host("plc")
            } else {
                DOMAIN.to_string()
            };
            let mut c2 = gw.client(v, &h).await;
            let client = if target == "/head" { &mut c } else { &mut c2 };
            let (p, _) = client
                .fetch(get(v, &h, target).body(empty()).unwrap())
                .await;
            assert_eq!(
                p.headers.get("alt-svc").map(|v| v.to_str().unwrap()),
                Some(expected.as_str()),
                "h{v} {target}"
            );
        }
    }
    gw.stop().await;

    let gw = Gw::start("[http3]\nenabled = false\n", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    assert!(gw.server().quic_addrs.is_empty());
    for v in [1u8, 2] {
        let mut c = gw.client(v, &host("plc")).await;
        let (p, _) = c
            .fetch(get(v, &host("plc"), "/head").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 200);
        assert!(p.headers.get("alt-svc").is_none(), "h{v}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn access_control_applies_over_h3() {
    let token = password::new_token();
    let sections = format!(
        "[[token]]\nname = \"ci\"\nsha256 = \"{}\"\ndevices = [\"a\"]\n",
        password::token_digest(&token),
    );
    let gw = Gw::start(
        &sections,
        &[Dev("a", "public = false"), Dev("b", "public = false")],
    )
    .await;
    let a = gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let b = gw.echo("b", &[], link_config(4096, 16384, 1024)).await;
    let mut c = h3(&gw, DOMAIN).await;
    let mut by_host = h3(&gw, &host("a")).await;

    // Nobody logged in: refused before the device is contacted.
    let (resp, _) = c
        .fetch(h3_get(DOMAIN, "/d/a/head").body(()).unwrap(), b"")
        .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["x-gateway-error"], "login_required");
    let (resp, _) = by_host
        .fetch(h3_get(&host("a"), "/head").body(()).unwrap(), b"")
        .await;
    assert!(
        resp.status() == 401 || resp.status().is_redirection(),
        "{}",
        resp.status()
    );
    assert_eq!(a.requests.load(Ordering::Relaxed), 0);

    // The token opens its device, and only that one; it never reaches it.
    let bearer = format!("Bearer {token}");
    let (resp, body) = c
        .fetch(
            h3_get(DOMAIN, "/d/a/head")
                .header("authorization", &bearer)
                .body(())
                .unwrap(),
            b"",
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(!String::from_utf8_lossy(&body).contains("dlt_"));
    assert_eq!(a.requests.load(Ordering::Relaxed), 1);
    let (resp, _) = c
        .fetch(
            h3_get(DOMAIN, "/d/b/head")
                .header("authorization", &bearer)
                .body(())
                .unwrap(),
            b"",
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(b.requests.load(Ordering::Relaxed), 0);

    // A host its connection's certificate does not cover: 421, as on TCP.
    let (resp, _) = c
        .fetch(h3_get("elsewhere.example.org", "/").body(()).unwrap(), b"")
        .await;
    assert_eq!(resp.status(), 421);
    gw.stop().await;
}

#[tokio::test]
async fn garbage_wrong_alpn_and_extended_connect_are_refused_and_counted() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let stats = gw.server().quic_stats.clone();

    // Garbage datagrams: short, long, and a bogus long-header packet.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in [1usize, 7, 40, 1199, 1200, 1350, 1500] {
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        udp.send_to(&datagram, quic_addr(&gw)).await.unwrap();
    }
    let mut initial = vec![0xc0u8, 0, 0, 0, 1, 8];
    initial.resize(1200, 0xab);
    udp.send_to(&initial, quic_addr(&gw)).await.unwrap();

    // A client that does not speak h3: the handshake fails, and is counted.
    let (_endpoint, conn) = quic(&gw, &host("plc"), &[b"h2"]).await;
    assert!(conn.is_err(), "a client without ALPN h3 got a connection");
    assert_eq!(stats.handshakes.with_label_values(&["failed"]).get(), 1);
    assert_eq!(stats.handshakes.with_label_values(&["ok"]).get(), 0);

    // An extended CONNECT (the gateway never enabled it): a clear 501; a
    // plain CONNECT: 405, as on TCP.
    let mut c = h3(&gw, &host("plc")).await;
    let (resp, body) = c
        .fetch(
            Request::connect(format!("https://{}/ws", host("plc")))
                .extension(h3::ext::Protocol::WEB_TRANSPORT)
                .body(())
                .unwrap(),
            b"",
        )
        .await;
    assert_eq!(resp.status(), 501);
    assert_eq!(resp.headers()["x-gateway-error"], "h3_extended_connect");
    assert!(String::from_utf8_lossy(&body).contains("RFC 9220"));
    let (resp, _) = c
        .fetch(
            Request::connect(format!("https://{}/", host("plc")))
                .body(())
                .unwrap(),
            b"",
        )
        .await;
    assert_eq!(resp.status(), 405);
    assert_eq!(
        gw.server()
            .edge_stats
            .connect_refused
            .load(Ordering::Relaxed),
        2
    );

    // Still serving.
    let (resp, body) = c
        .fetch(h3_get(&host("plc"), "/head").body(()).unwrap(), b"")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("\"target\":\"/head\""));
    assert_eq!(stats.handshakes.with_label_values(&["ok"]).get(), 1);
    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("the drain finishes with an HTTP/3 connection open");
}

#[tokio::test]
async fn certificates_swapped_at_run_time_reach_http3() {
    let gw = Gw::start("", &[]).await;
    let (_e, conn) = quic(&gw, DOMAIN, &[b"h3"]).await;
    conn.unwrap();
    // What a reload or an ACME renewal does: the TLS edge's resolver gets
    // new certificates; HTTP/3 shares it.
    let renewed =
        gateway::edge::tls::local_ca(&[DOMAIN.to_string(), format!("*.{DOMAIN}")]).unwrap();
    gw.server().certs.replace(vec![renewed.pair().unwrap()]);
    let (_e, old) = quic(&gw, DOMAIN, &[b"h3"]).await;
    assert!(old.is_err(), "the old certificate is still served");
    let (_e, new) = quic_trusting(&gw, &renewed.ca_pem, &host("plc"), &[b"h3"]).await;
    new.expect("the renewed certificate over QUIC");
    gw.stop().await;
}
