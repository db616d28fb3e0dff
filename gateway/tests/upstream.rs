//! HTTP/1.1 upstreams end to end: a raw device service (HTTP/1.1 over the
//! link's byte stream, bridged by `device-sim --forward` to a local TCP
//! server) and direct upstreams (plain and TLS with a pinned certificate),
//! against a small server that behaves like a libwebsockets test server:
//! a fixed list of subprotocols, a strict Host, and a path that closes
//! before answering the upgrade.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::harness::{
    DOMAIN, Dev, Gw, body, close_code, empty, eventually, get, link_config, request, tcp_echo,
};
use device_fw::host::Forward;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

const PROTOCOLS: [&str; 2] = ["dumb-increment-protocol", "lws-mirror-protocol"];

/// A request as the test server saw it: target and header fields.
type Seen1 = (String, Vec<(String, String)>);

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<Seen1>>,
}

type Out = Response<Full<Bytes>>;

async fn handle(seen: Arc<Seen>, mut req: Request<Incoming>) -> Result<Out, hyper::Error> {
    let target = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    seen.requests
        .lock()
        .unwrap()
        .push((target.clone(), headers.clone()));
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    // A strict virtual host, like lws.
    if header("host").as_deref() != Some("lws.local") {
        return Ok(Response::builder()
            .status(400)
            .body(Full::new(Bytes::from("bad host")))
            .unwrap());
    }
    if header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        if target == "/close-before-101" {
            // Abort the connection: hyper drops it when the service fails.
            return Err(hyper_error().await);
        }
        let offered = header("sec-websocket-protocol").unwrap_or_default();
        let Some(proto) = offered
            .split(',')
            .map(str::trim)
            .find(|p| PROTOCOLS.contains(p))
        else {
            return Ok(Response::builder()
                .status(400)
                .body(Full::new(Bytes::from("no protocol")))
                .unwrap());
        };
        let key = header("sec-websocket-key").unwrap_or_default();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        // `/small-frames`: frames of at most 256 KiB, as a small server takes.
        let cfg = (target == "/small-frames")
            .then(|| WebSocketConfig::default().max_frame_size(Some(256 << 10)));
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, cfg).await;
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    // Frames that break RFC 6455, written raw: text that is
                    // not UTF-8, a reserved bit.
                    Message::Text(t) if t.as_str() == "raw:bad-utf8" || t.as_str() == "raw:rsv" => {
                        use tokio::io::AsyncWriteExt as _;
                        let frame: &[u8] = if t.as_str() == "raw:rsv" {
                            &[0xC2, 0]
                        } else {
                            &[0x81, 2, 0xC3, 0x28]
                        };
                        let _ = ws.get_mut().write_all(frame).await;
                        let _ = ws.get_mut().flush().await;
                    }
                    Message::Text(t) => ws.send(Message::text(format!("echo:{t}"))).await.unwrap(),
                    Message::Binary(b) => ws.send(Message::Binary(b)).await.unwrap(),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", proto)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let body = req.into_body().collect().await?.to_bytes();
    let answer = if target.starts_with("/echo") {
        body
    } else {
        Bytes::from(format!("{target} {}", body.len()))
    };
    Ok(Response::builder()
        .status(200)
        .body(Full::new(answer))
        .unwrap())
}

/// A hyper::Error, to make hyper drop a connection without answering.
async fn hyper_error() -> hyper::Error {
    let (mut tx, conn) = {
        let (a, _b) = tokio::io::duplex(64);
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(a))
            .await
            .unwrap()
    };
    drop(conn);
    tx.send_request(Request::new(Full::new(Bytes::new())))
        .await
        .unwrap_err()
}

/// The server, plain or with TLS (`tls`: chain and key PEM).
async fn server(tls: Option<(String, String)>) -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let acceptor = tls.map(|(chain, key)| {
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::Relaxed);
            let (s, acceptor) = (s.clone(), acceptor.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| handle(s.clone(), r));
                let b = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(io) = a.accept(tcp).await {
                            let _ = b
                                .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                    None => {
                        let _ = b
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

const NORMALIZE: &str = "[device.normalize]\nhost = \"lws.local\"\nprotocols = [\"dumb-increment-protocol\", \"lws-mirror-protocol\"]\n";

async fn scenario(gw: &Gw, id: &str, seen: &Seen) {
    let o = format!("https://{}:{}", host(id), gw.addr.port());
    for v in [1u8, 2] {
        // HTTP both ways, with the device's Host.
        let mut c = gw.client(v, &host(id)).await;
        let data = vec![7u8; 300_000];
        let (p, b) = c
            .fetch(
                request(v, "POST", &host(id), "/echo?x=1")
                    .header("origin", &o)
                    .body(body(data.clone()))
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 200, "{id} h{v}: {}", String::from_utf8_lossy(&b));
        assert!(b == data, "{id}: body differs");
        let last = seen.requests.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.0, "/echo?x=1");
        assert!(last.1.contains(&("host".into(), "lws.local".into())));
        assert!(
            last.1
                .iter()
                .any(|(n, v)| n == "x-forwarded-proto" && v == "https")
        );

        // A WebSocket: the server hears only a protocol it knows.
        let (mut ws, proto) = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "chat, dumb-increment-protocol"),
                ],
            )
            .await
            .unwrap_or_else(|r| panic!("{id} h{v}: {r:?}"));
        assert_eq!(proto.as_deref(), Some("dumb-increment-protocol"));
        let up = seen.requests.lock().unwrap().last().cloned().unwrap();
        let offered: Vec<&(String, String)> =
            up.1.iter()
                .filter(|(n, _)| n == "sec-websocket-protocol")
                .collect();
        assert_eq!(
            offered,
            vec![&(
                "sec-websocket-protocol".to_string(),
                "dumb-increment-protocol".to_string()
            )]
        );
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo:hi"));
        ws.send(Message::binary(vec![1u8; 50_000])).await.unwrap();
        assert!(
            matches!(ws.next().await.unwrap().unwrap(), Message::Binary(b) if b.len() == 50_000)
        );
        // Pings are answered by the gateway (the relay owes the pong).
        ws.send(Message::Ping(Bytes::from_static(b"there?")))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"there?"))
        );
        // The browser's close goes through with its code; the server's
        // answer comes back with it.
        ws.close(Some(CloseFrame {
            code: CloseCode::from(4100),
            reason: "done".into(),
        }))
        .await
        .unwrap();
        assert_eq!(close_code(&mut ws).await, Some(4100), "{id} h{v}");

        // Only unknown subprotocols: explained at once, the server never asked.
        let before = seen.requests.lock().unwrap().len();
        let r = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "chat, superchat"),
                ],
            )
            .await
            .err()
            .expect("accepted without a common subprotocol");
        assert_eq!(r.status, 400);
        assert!(r.body.contains("dumb-increment-protocol"), "{}", r.body);
        assert_eq!(seen.requests.lock().unwrap().len(), before);

        // The server closes before its 101: a rejection the browser is told about.
        let rejected = gw
            .server()
            .bridge
            .stats
            .upstream_rejected
            .load(Ordering::Relaxed);
        let r = gw
            .ws(
                v,
                &host(id),
                "/close-before-101",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "lws-mirror-protocol"),
                ],
            )
            .await
            .err()
            .expect("a closed connection accepted");
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(r.body.contains("upstream_rejected"), "{}", r.body);
        assert!(
            gw.server()
                .bridge
                .stats
                .upstream_rejected
                .load(Ordering::Relaxed)
                > rejected
        );
    }
}

#[tokio::test]
async fn a_raw_service_carries_http_and_websockets() {
    let (addr, seen) = server(None).await;
    let gw = Gw::start(
        "",
        &[Dev(
            "lws",
            &format!("{NORMALIZE}[[device.service]]\nname = \"lws\"\npath = \"/\"\n"),
        )],
    )
    .await;
    let _dev = gw.forwarding(
        "lws",
        vec![Forward {
            service: "lws".into(),
            target: addr,
        }],
        link_config(4096, 16384, 1024),
    );
    gw.wait_online("lws").await;
    scenario(&gw, "lws", &seen).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_direct_upstream_carries_http_and_websockets_and_reuses_connections() {
    let (addr, seen) = server(None).await;
    let gw = Gw::start(
        "",
        &[Dev(
            "meter",
            &format!("upstream = {{ direct = {{ address = \"{addr}\" }} }}\n{NORMALIZE}"),
        )],
    )
    .await;
    scenario(&gw, "meter", &seen).await;
    // An upstream that breaks the protocol: the browser gets 1011 and the
    // gateway counts it by what was wrong.
    let o = format!("https://{}:{}", host("meter"), gw.addr.port());
    for (cmd, reason) in [("raw:bad-utf8", "utf8"), ("raw:rsv", "protocol")] {
        let (mut ws, _) = gw
            .ws(
                1,
                &host("meter"),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "dumb-increment-protocol"),
                ],
            )
            .await
            .unwrap();
        ws.send(Message::text(cmd)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1011), "{cmd}");
        let series = format!("gateway_websocket_device_errors_total{{reason=\"{reason}\"}}");
        eventually(&series, || gw.metric(&series) == 1.0).await;
    }
    // Plain requests reuse the upstream connection.
    let mut c = gw.client(2, &host("meter")).await;
    let before = seen.connections.load(Ordering::Relaxed);
    for _ in 0..5 {
        let (p, _) = c
            .fetch(get(2, &host("meter"), "/x").body(empty()).unwrap())
            .await;
        assert_eq!(p.status, 200);
    }
    assert!(
        seen.connections.load(Ordering::Relaxed) <= before + 1,
        "no connection reuse"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_direct_tls_upstream_is_pinned() {
    use rustls_pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let ca = gateway::edge::tls::local_ca(&["lws.local".to_string()]).unwrap();
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(ca.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let pin = gateway::keys::to_hex(&sha2::Sha256::digest(leaf.as_ref()));
    let (addr, seen) = server(Some((ca.chain_pem.clone(), ca.key_pem.clone()))).await;
    let gw = Gw::start(
        "",
        &[
            Dev("good", &format!("upstream = {{ direct = {{ address = \"{addr}\", tls = true, pinned_cert_sha256 = \"{pin}\" }} }}\n{NORMALIZE}")),
            Dev("bad", &format!("upstream = {{ direct = {{ address = \"{addr}\", tls = true, pinned_cert_sha256 = \"{}\" }} }}\n{NORMALIZE}", "00".repeat(32))),
        ],
    )
    .await;
    let mut c = gw.client(1, &host("good")).await;
    let (p, b) = c
        .fetch(get(1, &host("good"), "/pinned").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(&b[..], b"/pinned 0");
    let n = seen.requests.lock().unwrap().len();
    let mut c = gw.client(1, &host("bad")).await;
    let (p, _) = c
        .fetch(get(1, &host("bad"), "/pinned").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 502);
    assert_eq!(
        seen.requests.lock().unwrap().len(),
        n,
        "a request went to an unpinned server"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_raw_service_exposed_as_a_websocket_carries_bytes() {
    // A TCP server that echoes until it reads "bye", then closes.
    let addr = tcp_echo(Some(b"bye")).await;
    let gw = Gw::start(
        "",
        &[Dev(
            "modbus",
            "[[device.service]]\nname = \"mb\"\npath = \"/modbus\"\nexpose = \"websocket\"\n",
        )],
    )
    .await;
    let _dev = gw.forwarding(
        "modbus",
        vec![Forward {
            service: "mb".into(),
            target: addr,
        }],
        link_config(4096, 16384, 1024),
    );
    gw.wait_online("modbus").await;
    let o = format!("https://{}:{}", host("modbus"), gw.addr.port());
    for v in [1u8, 2] {
        let (mut ws, _) = gw
            .ws(v, &host("modbus"), "/modbus", &[("origin", &o)])
            .await
            .unwrap_or_else(|r| panic!("h{v}: {r:?}"));
        let frame: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
        ws.send(Message::binary(frame.clone())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < frame.len() {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => got.extend_from_slice(&b),
                m => panic!("{m:?}"),
            }
        }
        assert_eq!(got, frame);
        // The server closes: the browser hears 1000.
        ws.send(Message::binary(b"bye".to_vec())).await.unwrap();
        let code = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Close(Some(f)) => break u16::from(f.code),
                Message::Binary(_) => continue,
                m => panic!("{m:?}"),
            }
        };
        assert_eq!(code, 1000);
    }
    // Not a WebSocket: told so.
    let mut c = gw.client(1, &host("modbus")).await;
    let (p, _) = c
        .fetch(get(1, &host("modbus"), "/modbus").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 426);
    gw.stop().await;
}

#[tokio::test]
async fn large_binary_messages_go_on_in_parts() {
    let (addr, _seen) = server(None).await;
    let gw = Gw::start(
        "[websocket]\nmax_message = \"2MiB\"\nmax_frame = \"2MiB\"\n",
        &[
            Dev(
                "meter",
                &format!("upstream = {{ direct = {{ address = \"{addr}\" }} }}\n{NORMALIZE}"),
            ),
            Dev("plc", ""),
        ],
    )
    .await;
    let _dev = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let big: Vec<u8> = (0..(1u32 << 20) + 3).map(|i| (i % 251) as u8).collect();

    // Direct: the upstream takes frames of at most 256 KiB (as an
    // embedded server with a small receive buffer would); the browser's
    // 1 MiB frame reaches it in parts, and its 1 MiB answer comes back
    // whole.
    let o = format!("https://{}:{}", host("meter"), gw.addr.port());
    let (mut ws, _) = gw
        .ws(
            1,
            &host("meter"),
            "/small-frames",
            &[
                ("origin", &o),
                ("sec-websocket-protocol", "dumb-increment-protocol"),
            ],
        )
        .await
        .unwrap();
    let to_device = "gateway_websocket_messages_total{direction=\"to_device\"}";
    let to_browser = "gateway_websocket_messages_total{direction=\"to_browser\"}";
    let before = (gw.metric(to_device), gw.metric(to_browser));
    for _ in 0..2 {
        ws.send(Message::binary(big.clone())).await.unwrap();
        let m = ws.next().await.unwrap().unwrap();
        assert!(m == Message::binary(big.clone()), "direct: message differs");
    }
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("echo:after")
    );
    // Each message counted once however many parts it went in.
    assert_eq!(
        (gw.metric(to_device), gw.metric(to_browser)),
        (before.0 + 3.0, before.1 + 3.0)
    );

    // Link: the same message through a device's echo, counted once.
    let o = format!("https://{}:{}", host("plc"), gw.addr.port());
    let (mut ws, _) = gw
        .ws(1, &host("plc"), "/ws", &[("origin", &o)])
        .await
        .unwrap();
    let before = gw.metric(to_device);
    ws.send(Message::binary(big.clone())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert!(m == Message::binary(big.clone()), "link: message differs");
    assert_eq!(gw.metric(to_device), before + 1.0);
    gw.stop().await;
}
