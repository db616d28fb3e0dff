//! Hardening at the edge, with real sockets: connection caps refused
//! before TLS (global and per source address), Host/SNI consistency (421),
//! CONNECT refused unless it is a WebSocket, and the request-smuggling
//! corpus over raw TLS (400 or a close, nothing reaching the device). Each
//! outcome shows in the gateway's metrics.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::harness::{DOMAIN, Dev, Gw, empty, get, link_config};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

fn tls_config(gw: &Gw, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(gw.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

/// A TLS connection to the gateway from loopback address `from`.
async fn tls_from(gw: &Gw, from: &str, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    let tcp = socket.connect(gw.addr).await?;
    let connect = TlsConnector::from(tls_config(gw, b"http/1.1"))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// A TLS connection from `from`, retried for up to 2 s while a place
/// under the caps is being given back.
async fn admitted_soon(gw: &Gw, from: &str, sni: &str) -> TlsStream<TcpStream> {
    for _ in 0..100 {
        if let Ok(io) = tls_from(gw, from, sni).await {
            return io;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no place for a connection from {from} within 2 s");
}

/// One request on a held connection: its status line.
async fn status(io: &mut TlsStream<TcpStream>, h: &str) -> String {
    let req = format!("GET /head HTTP/1.1\r\nhost: {h}\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// The value of one sample in the gateway's exposition.
#[tokio::test]
async fn connection_caps_refuse_before_tls_and_spare_open_connections() {
    let gw = Gw::start(
        "[gateway.limits]\nmax_connections = 6\nmax_connections_per_address = 3\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let h = host("plc");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tls_from(&gw, "127.0.0.1", &h).await.unwrap());
    }
    // A fourth from the same address: closed before any TLS.
    assert!(tls_from(&gw, "127.0.0.1", &h).await.is_err());
    assert_eq!(
        gw.metric("gateway_browser_connections_refused_total{reason=\"per_address_cap\"}"),
        1.0
    );
    // Another address may still come, up to the global cap.
    for _ in 0..3 {
        held.push(tls_from(&gw, "127.0.0.2", &h).await.unwrap());
    }
    assert!(tls_from(&gw, "127.0.0.3", &h).await.is_err());
    assert_eq!(
        gw.metric("gateway_browser_connections_refused_total{reason=\"global_cap\"}"),
        1.0
    );
    // The connections held are served as before.
    for io in &mut held {
        assert_eq!(status(io, &h).await, "HTTP/1.1 200 OK");
    }
    // A closed connection gives its place back.
    drop(held.pop());
    let mut again = admitted_soon(&gw, "127.0.0.3", &h).await;
    assert_eq!(status(&mut again, &h).await, "HTTP/1.1 200 OK");
    assert!(gw.server().hub.device("plc").is_some());
    gw.stop().await;
}

/// A WebSocket keeps its browser connection's place under the caps until
/// it closes. Over HTTP/1.1 the connection's HTTP task ends at the
/// upgrade: had its place gone back then, a source could open any number
/// of sockets past `max_connections_per_address`, one upgrade at a time.
#[tokio::test]
async fn websockets_keep_their_connections_place_under_the_caps() {
    let gw = Gw::start(
        "[gateway.limits]\nmax_connections = 6\nmax_connections_per_address = 2\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let h = host("plc");
    let origin = format!("https://{h}:{}", gw.addr.port());
    let headers = [("origin", origin.as_str())];
    let (mut first, _) = gw.ws(1, &h, "/ws", &headers).await.unwrap();
    let (second, _) = gw.ws(1, &h, "/ws", &headers).await.unwrap();
    // Two upgraded connections from 127.0.0.1: a third is refused
    // before TLS.
    assert!(tls_from(&gw, "127.0.0.1", &h).await.is_err());
    assert_eq!(
        gw.metric("gateway_browser_connections_refused_total{reason=\"per_address_cap\"}"),
        1.0
    );
    // The sockets held are served as before.
    first.send(Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("still here"));
    // A closed WebSocket gives its place back.
    drop(second);
    let mut again = admitted_soon(&gw, "127.0.0.1", &h).await;
    assert_eq!(status(&mut again, &h).await, "HTTP/1.1 200 OK");
    gw.stop().await;
}

/// Writes `req` on a TLS connection for `sni` and reads until the server
/// closes (or 5 s pass).
async fn raw(gw: &Gw, sni: &str, parts: &[&[u8]]) -> String {
    let mut io = gw.tls(sni, &[b"http/1.1"]).await;
    for p in parts {
        if io.write_all(p).await.is_err() {
            break;
        }
        let _ = io.flush().await;
        if parts.len() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A gateway with two certificates: one for the domain alone, one for
/// `*.<domain>` (devices), and devices `plc` and `other`.
async fn two_certificates() -> Gw {
    use common::TempDir;
    use gateway::edge::listener::{self, SocketOptions};
    use gateway::server::{Listeners, Server};
    let dir = TempDir::new("sni");
    let apex = gateway::edge::tls::local_ca(&[DOMAIN.to_string()]).unwrap();
    let wild = gateway::edge::tls::local_ca(&[format!("*.{DOMAIN}")]).unwrap();
    dir.write("tls/apex.pem", &apex.chain_pem);
    dir.write("tls/apex.key", &apex.key_pem);
    dir.write("tls/wild.pem", &wild.chain_pem);
    dir.write("tls/wild.key", &wild.key_pem);
    let gateway_key = dir.key();
    let opts = SocketOptions::default();
    let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let (port, link_port) = (
        https.local_addr().unwrap().port(),
        link.local_addr().unwrap().port(),
    );
    let mut text = format!(
        "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"2s\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [tls]\ncertificates = [{{ cert = \"tls/apex.pem\", key = \"tls/apex.key\" }}, \
         {{ cert = \"tls/wild.pem\", key = \"tls/wild.key\" }}]\n\n\
         [link]\naddress = \"127.0.0.1:{link_port}\"\n"
    );
    for id in ["plc", "other"] {
        text.push_str(&format!(
            "\n[[device]]\nid = \"{id}\"\npublic_key = \"{}\"\npublic = true\n",
            common::harness::device_key(id).public_key()
        ));
    }
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
    Gw {
        addr: server.edge_addrs[0],
        link: server.link_addr,
        server: Some(server),
        dir,
        gateway_key,
        // Clients trust the device certificate's CA; the apex one is
        // trusted by a second client below.
        ca_pem: format!("{}{}", wild.ca_pem, apex.ca_pem),
    }
}

#[tokio::test]
async fn host_must_be_covered_by_the_sni_and_connect_is_only_for_websockets() {
    let gw = two_certificates().await;
    let dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let other = gw.echo("other", &[], link_config(4096, 16384, 1024)).await;
    let (plc, oth) = (host("plc"), host("other"));
    let count = || dev.requests.load(Ordering::Relaxed) + other.requests.load(Ordering::Relaxed);

    // The same name in SNI and Host: served. Another device on the same
    // connection: its name is on the certificate the client verified
    // (`*.<domain>`), so a browser may reuse the connection (RFC 9113
    // §9.1.1): served too, over HTTP/1.1 and HTTP/2.
    for v in [1u8, 2] {
        let mut c = gw.client(v, &plc).await;
        let (p, _) = c.fetch(get(v, &plc, "/head").body(empty()).unwrap()).await;
        assert_eq!(p.status, 200, "h{v}");
        let (p, _) = c.fetch(get(v, &oth, "/head").body(empty()).unwrap()).await;
        assert_eq!(p.status, 200, "h{v}");
    }
    let before = count();
    // A connection opened for the domain got the apex certificate, which
    // does not cover devices: 421, and for foreign hosts too.
    for v in [1u8, 2] {
        let mut c = gw.client(v, DOMAIN).await;
        for target in [plc.as_str(), "evil.example"] {
            let (p, _) = c
                .fetch(get(v, target, "/head").body(empty()).unwrap())
                .await;
            assert_eq!(p.status, 421, "h{v} {target}");
            assert_eq!(p.headers["x-gateway-error"], "misdirected");
        }
    }
    // Absolute-form targets for a foreign host.
    let req = format!("GET https://evil.example/head HTTP/1.1\r\nhost: {plc}\r\n\r\n");
    let answer = raw(&gw, &plc, &[req.as_bytes()]).await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // CONNECT to anything: 405 over HTTP/1.1 and HTTP/2.
    let answer = raw(
        &gw,
        &plc,
        &[b"CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\n\r\n"],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let mut c = gw.client(2, &plc).await;
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("{plc}:443"))
        .body(empty())
        .unwrap();
    let (p, _) = c.fetch(req).await;
    assert_eq!(p.status, 405);
    assert_eq!(p.headers["x-gateway-error"], "connect_refused");
    assert_eq!(count(), before, "a refused request reached a device");

    // The WebSocket extended CONNECT still works.
    let origin = format!("https://{plc}:{}", gw.addr.port());
    let (mut ws, _) = gw
        .ws(2, &plc, "/ws", &[("origin", origin.as_str())])
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hi"));

    assert_eq!(
        gw.metric("gateway_browser_requests_refused_total{reason=\"misdirected\"}"),
        5.0
    );
    assert_eq!(
        gw.metric("gateway_browser_requests_refused_total{reason=\"connect\"}"),
        2.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn request_smuggling_corpus_gets_400_or_a_close_and_never_reaches_the_device() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let h = host("plc");
    let head = |lines: &str| format!("POST /echo HTTP/1.1\r\nhost: {h}\r\n{lines}\r\n");
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            vec![
                format!(
                    "{}0\r\n\r\n",
                    head("content-length: 5\r\ntransfer-encoding: chunked\r\n")
                )
                .into_bytes(),
            ],
        ),
        (
            "Transfer-Encoding before Content-Length",
            vec![
                format!(
                    "{}0\r\n\r\nGET /head HTTP/1.1\r\nhost: {h}\r\n\r\n",
                    head("transfer-encoding: chunked\r\ncontent-length: 44\r\n")
                )
                .into_bytes(),
            ],
        ),
        (
            "Content-Length: +3",
            vec![format!("{}abc", head("content-length: +3\r\n")).into_bytes()],
        ),
        (
            "duplicate differing Content-Length",
            vec![format!("{}abc", head("content-length: 3\r\ncontent-length: 4\r\n")).into_bytes()],
        ),
        (
            "Transfer-Encoding not ending in chunked",
            vec![
                format!(
                    "{}0\r\n\r\n",
                    head("transfer-encoding: chunked, identity\r\n")
                )
                .into_bytes(),
            ],
        ),
        (
            "Transfer-Encoding split over two lines, the last not chunked",
            vec![
                format!(
                    "{}0\r\n\r\n",
                    head("transfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n")
                )
                .into_bytes(),
            ],
        ),
        (
            "obs-fold",
            vec![format!("{}abc", head("content-length: 3\r\nx-folded: a\r\n b\r\n")).into_bytes()],
        ),
        (
            "obs-fold hiding Transfer-Encoding",
            vec![
                format!(
                    "{}0\r\n\r\n",
                    head("x-a: b\r\n transfer-encoding: chunked\r\ncontent-length: 5\r\n")
                )
                .into_bytes(),
            ],
        ),
        (
            "space before the colon",
            vec![format!("{}0\r\n\r\n", head("transfer-encoding : chunked\r\n")).into_bytes()],
        ),
    ];
    let mut malformed = 0;
    for (name, parts) in &cases {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let answer = raw(&gw, &h, &parts).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{name}: {answer}"
        );
        assert!(
            !answer.contains("200 OK"),
            "{name}: something was served: {answer}"
        );
        malformed += 1;
        assert_eq!(
            dev.requests.load(Ordering::Relaxed),
            0,
            "{name} reached the device"
        );
    }
    // Header splitting across reads: the same ambiguous head one byte at
    // a time, and a CL + TE head cut mid-name.
    let split = format!(
        "{}0\r\n\r\n",
        head("content-length: 5\r\ntransfer-encoding: chunked\r\n")
    );
    let bytes: Vec<&[u8]> = split.as_bytes().chunks(1).collect();
    let answer = raw(&gw, &h, &bytes).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "byte by byte: {answer}");
    let cut = split.find("ransfer").unwrap();
    let answer = raw(
        &gw,
        &h,
        &[&split.as_bytes()[..cut], &split.as_bytes()[cut..]],
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "cut: {answer}");
    malformed += 2;
    assert_eq!(
        dev.requests.load(Ordering::Relaxed),
        0,
        "split heads reached the device"
    );

    // A request pipelined after an Upgrade is WebSocket data, never a
    // request: the device sees the upgrade only, and the bytes that follow
    // end the WebSocket (a client frame must be masked: close 1002).
    let port = gw.addr.port();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nhost: {h}\r\norigin: https://{h}:{port}\r\nconnection: Upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\
         GET /head HTTP/1.1\r\nhost: {h}\r\n\r\n"
    );
    let answer = raw(&gw, &h, &[upgrade.as_bytes()]).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    assert_eq!(dev.requests.load(Ordering::Relaxed), 1, "only the upgrade");

    // And a correct request still gets through on a fresh connection.
    let ok = format!("{}abc", head("content-length: 3\r\n"));
    let answer = raw(&gw, &h, &[ok.as_bytes()]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("abc"), "{answer}");

    let counted = gw.metric("gateway_browser_malformed_requests_total");
    assert!(
        counted >= f64::from(malformed) - 1.0,
        "{counted} malformed requests counted, {malformed} sent"
    );
    gw.stop().await;
}
