//! Seed 000, the PMTU black hole, reproduced and removed, in one test.
//!
//! Client ↔ router ↔ server network namespaces ([`e2e::netns::BlackHole`]):
//! the router's hop has MTU 1400 (routes with `mtu lock`, so PMTU
//! discovery cannot lower it) and the router drops ICMP "fragmentation
//! needed" / "packet too big" (nft, counted). The endpoints' links stay at
//! 1500, so an unclamped TCP peer sends 1500-byte packets that vanish.
//!
//! 1. Control: a plain rustls server without an MSS clamp, serving a
//!    certificate chain of more than 4 KB, in the server namespace; the
//!    client in the client namespace connects (TCP works: the SYNs are
//!    small) and the TLS handshake stalls (asserted as a timeout). The same
//!    server with `TCP_MAXSEG` 1360 on its listener completes: only the
//!    clamp differs.
//! 2. The gateway (its default clamp, 1360), same chain, in the server
//!    namespace: the handshake completes, an HTTPS request and a WSS
//!    exchange reach a device.
//! 3. The device link across the same path: the `EchoApp` device runs in
//!    the client namespace and dials the gateway; 10 MB each way cross the
//!    hop on both legs (device → gateway → client and back).
//! 4. Direct mode: a plain HTTP server in the client namespace, unclamped,
//!    with a 1 MB response; an unclamped fetch from the server namespace
//!    stalls, the gateway (server namespace) fetches it thanks to its
//!    upstream clamp (`upstream = { direct = { …, mss = 1360 } }`).
//! 5. HTTP/3 across the same hop: a quinn + h3 client in the client
//!    namespace downloads 10 MB from the device over QUIC, with no clamp
//!    and no ICMP. The gateway's MTU discovery may probe up to 1452 bytes
//!    (its default `max_mtu`); those probes vanish at the hop, so both
//!    sides end at a datagram size the hop carries (at most 1400 − 28).
//!
//! Runs as root with `ip` and `nft`; otherwise skips loudly, and fails when
//! `CI=true`. The namespaces are removed on drop, also on failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use e2e::netns::{self, BlackHole, CLIENT_ADDR, HOP_MTU, SERVER_ADDR};
use e2e::tempdir::TempDir;
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::Server;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use proto::{Backoff, Config, Params, PublicKey, SecretKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::Message;

const DOMAIN: &str = "pmtu.test";
/// How long a handshake may take before the control counts as stalled
/// (a working one here takes milliseconds).
const STALL: Duration = Duration::from_secs(4);
/// Bound on every step expected to work.
const STEP: Duration = Duration::from_secs(15);
/// The gateway's default clamp.
const CLAMP: u32 = listener::DEFAULT_MSS;
const BIG: usize = 10_000_000;
const DIRECT_BODY: usize = 1_000_000;

#[test]
fn pmtu_black_hole_stalls_unclamped_tls_and_the_gateway_clamp_removes_it() {
    if let Err(why) = netns::preflight() {
        netns::skip_or_fail("pmtu black hole (tests/tests/pmtu.rs)", &why);
        return;
    }
    let started = Instant::now();
    // Declared first, dropped last: the namespaces outlive everything
    // that runs inside them.
    let net = BlackHole::create("pmtu").unwrap_or_else(|e| panic!("namespaces: {e}"));
    let client = net.client.runtime(2).expect("client runtime");
    let server = net.server.runtime(2).expect("server runtime");
    let dir = TempDir::new("pmtu");

    // A leaf with a long SAN list: the chain is well past 4 KB, so the
    // server's first flight needs several full-size segments.
    let mut names = vec![DOMAIN.to_string(), format!("*.{DOMAIN}")];
    names.extend(
        (0..80).map(|i| format!("padding-{i:03}-so-the-certificate-flight-is-large.{DOMAIN}")),
    );
    let ca = gateway::edge::tls::local_ca(&names).expect("certificates");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(ca.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let chain_bytes: usize = chain.iter().map(|c| c.len()).sum();
    assert!(chain_bytes > 4096, "chain {chain_bytes} B");
    let tls_client = client_tls(&ca.ca_pem);
    let key = PrivateKeyDer::from_pem_slice(ca.key_pem.as_bytes()).expect("key");
    let tls_server = Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate"),
    );
    println!("hop MTU {HOP_MTU} (mtu lock), certificate chain {chain_bytes} B");

    // 1. Control: no clamp → stall; the same server clamped → done.
    let plain = server.run(plain_tls_server(
        SocketAddr::new(SERVER_ADDR.into(), 4433),
        None,
        tls_server.clone(),
    ));
    let clamped = server.run(plain_tls_server(
        SocketAddr::new(SERVER_ADDR.into(), 4434),
        Some(CLAMP),
        tls_server,
    ));
    let icmp_before = net.icmp_dropped().expect("nft counters");
    let (mss, outcome) = client.run(handshake(plain, tls_client.clone()));
    let icmp_after = net.icmp_dropped().expect("nft counters");
    println!(
        "control, unclamped rustls server: client MSS {mss}, {outcome:?}, router dropped {} ICMP frag-needed",
        icmp_after - icmp_before
    );
    assert!(
        mss > HOP_MTU - 40,
        "the unclamped path must allow full-size segments (MSS {mss})"
    );
    assert!(
        matches!(outcome, Outcome::Stalled),
        "without a clamp the handshake must stall across the black hole: {outcome:?}"
    );
    assert!(
        icmp_after > icmp_before,
        "the router never had to drop an ICMP error"
    );
    let (mss, outcome) = client.run(handshake(clamped, tls_client.clone()));
    println!("control, the same server with TCP_MAXSEG {CLAMP}: client MSS {mss}, {outcome:?}");
    assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    assert!(mss <= CLAMP, "{mss}");

    // The upstream for direct mode (step 4): plain HTTP, unclamped, in
    // the client namespace.
    let upstream = client.run(http_server(SocketAddr::new(CLIENT_ADDR.into(), 8080)));

    // 2. The gateway with its default clamp, same chain.
    let device_key = SecretKey::from_bytes([0x42; 32]);
    let gateway_key = dir.gateway_key();
    dir.write("fullchain.pem", &ca.chain_pem);
    dir.write("privkey.pem", &ca.key_pem);
    let https = SocketAddr::new(SERVER_ADDR.into(), 443);
    let link = SocketAddr::new(SERVER_ADDR.into(), 7000);
    let text = format!(
        "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"2s\"\n\n\
         [[listen]]\naddress = \"{https}\"\n\n\
         [tls]\ncertificates = [{{ cert = \"fullchain.pem\", key = \"privkey.pem\" }}]\n\n\
         [link]\naddress = \"{link}\"\n\n\
         [metrics]\naddress = \"127.0.0.1:9100\"\n\n\
         [[device]]\nid = \"dev\"\npublic = true\npublic_key = \"{}\"\n\n\
         [[device]]\nid = \"site\"\npublic = true\n\
         upstream = {{ direct = {{ address = \"{upstream}\", mss = {CLAMP} }} }}\n",
        device_key.public_key()
    );
    let file = dir.write("gateway.toml", &text);
    let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let gw = GwGuard(Some(
        server
            .run(async move { Server::start(&config).await })
            .unwrap_or_else(|e| panic!("gateway: {e}")),
    ));
    let (mss, outcome) = client.run(handshake(https, tls_client.clone()));
    println!("gateway (default clamp): client MSS {mss}, {outcome:?}");
    assert!(
        mss <= CLAMP,
        "the gateway's listener must clamp the MSS: {mss}"
    );
    assert!(
        matches!(outcome, Outcome::Done(_)),
        "through the gateway: {outcome:?}"
    );

    // 3. The device link across the same path: device in the client
    // namespace, gateway in the server namespace.
    let link_mss = client.run(async move {
        let s = TcpStream::connect(link).await.expect("link probe");
        listener::mss(&s).expect("mss")
    });
    println!("device link listener: client MSS {link_mss}");
    assert!(link_mss <= CLAMP, "{link_mss}");
    let device = client.spawn(echo_device(link, device_key, gateway_key));
    wait_until(STEP, "device online across the black hole", || {
        gw.get().hub.device("dev").is_some()
    });

    let tls = tls_client.clone();
    client.run(async move {
        let mut c = http_client(https, "dev.pmtu.test", tls.clone()).await;
        let (status, body) = fetch(
            &mut c,
            "GET",
            "dev.pmtu.test",
            "/bytes?n=100000",
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 200);
        check_pattern(&body, 100_000);

        let mut ws = e2e::wss::connect(
            &tls,
            https,
            None,
            "dev.pmtu.test",
            "/ws",
            "https://dev.pmtu.test",
        )
        .await
        .expect("WSS through the gateway");
        let big: Vec<u8> = (0..32 * 1024).map(|i| (i % 253) as u8).collect();
        ws.send(Message::text("hello across the black hole"))
            .await
            .expect("send");
        ws.send(Message::binary(big.clone())).await.expect("send");
        let m = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("echo in time");
        assert_eq!(
            m.expect("open").expect("message"),
            Message::text("hello across the black hole")
        );
        let m = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("echo in time");
        assert_eq!(
            m.expect("open").expect("message").into_data().as_ref(),
            &big[..]
        );
        ws.close(None).await.expect("close");
        println!(
            "gateway: HTTPS GET 100 kB and a WSS text + 32 KiB binary echo through the device"
        );
    });

    let tls = tls_client.clone();
    let (down, up) = client.run(async move {
        let mut c = http_client(https, "dev.pmtu.test", tls).await;
        let t = Instant::now();
        let (status, body) = tokio::time::timeout(
            STEP,
            fetch(
                &mut c,
                "GET",
                "dev.pmtu.test",
                &format!("/bytes?n={BIG}"),
                Bytes::new(),
            ),
        )
        .await
        .expect("10 MB down in time");
        assert_eq!(status, 200);
        check_pattern(&body, BIG);
        let down = t.elapsed();
        let data: Vec<u8> = (0..BIG).map(|i| (i.wrapping_mul(7) >> 3) as u8).collect();
        let sum = data.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
        let t = Instant::now();
        let (status, body) = tokio::time::timeout(
            STEP,
            fetch(
                &mut c,
                "POST",
                "dev.pmtu.test",
                "/upload",
                Bytes::from(data),
            ),
        )
        .await
        .expect("10 MB up in time");
        assert_eq!(status, 200);
        assert_eq!(
            std::str::from_utf8(&body).expect("json"),
            format!("{{\"bytes\":{BIG},\"sum\":{sum}}}")
        );
        (down, t.elapsed())
    });
    println!("device link: 10 MB device→client in {down:?}, 10 MB client→device in {up:?}");

    // 4. Direct mode: the upstream's full-size segments vanish for an
    // unclamped client; the gateway's clamped upstream connection works.
    let (got, stalled) = server.run(async move {
        let mut s = TcpStream::connect(upstream).await.expect("connect");
        let mss = listener::mss(&s).expect("mss");
        s.write_all(b"GET /big HTTP/1.1\r\nhost: site\r\n\r\n")
            .await
            .expect("write");
        let mut got = 0usize;
        let mut buf = vec![0u8; 65536];
        let stalled = tokio::time::timeout(Duration::from_secs(3), async {
            while got < DIRECT_BODY {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await
        .is_err();
        println!(
            "direct control, unclamped fetch from the server namespace: MSS {mss}, {got} B in 3 s"
        );
        (got, stalled)
    });
    assert!(
        stalled && got < DIRECT_BODY,
        "an unclamped fetch must stall: {got} B"
    );
    let tls = tls_client.clone();
    let took = client.run(async move {
        let mut c = http_client(https, "site.pmtu.test", tls).await;
        let t = Instant::now();
        let (status, body) = tokio::time::timeout(
            STEP,
            fetch(&mut c, "GET", "site.pmtu.test", "/big", Bytes::new()),
        )
        .await
        .expect("direct upstream in time");
        assert_eq!(status, 200);
        check_pattern(&body, DIRECT_BODY);
        t.elapsed()
    });
    println!("direct mode through the gateway (upstream mss {CLAMP}): {DIRECT_BODY} B in {took:?}");

    // 5. HTTP/3 across the black hole: datagrams start at 1200 bytes and
    //    grow only by acknowledged probes.
    let ca_pem = ca.ca_pem.clone();
    let icmp_before = net.icmp_dropped().expect("nft counters");
    let (took, client_mtu) = client.run(async move {
        let t = Instant::now();
        let (body, mtu) = tokio::time::timeout(STEP, h3_download(https, "dev.pmtu.test", &ca_pem))
            .await
            .expect("10 MB over HTTP/3 in time");
        check_pattern(&body, BIG);
        (t.elapsed(), mtu)
    });
    wait_until(STEP, "the QUIC connection closed", || {
        gw.get().quic_stats.open.get() == 0
    });
    let quic = &gw.get().quic_stats;
    let server_mtu = quic.mtu.get_sample_sum();
    println!(
        "HTTP/3: 10 MB device→client in {took:?}; datagram size at the end: gateway {server_mtu}, client {client_mtu}; {} of {} packets lost; router dropped {} ICMP errors meanwhile (answers to MTU probes)",
        quic.lost_packets.get(),
        quic.sent_packets.get(),
        net.icmp_dropped().unwrap_or(0) - icmp_before
    );
    let fits = HOP_MTU - 28;
    assert_eq!(quic.mtu.get_sample_count(), 1);
    assert!(
        (1200.0..=f64::from(fits)).contains(&server_mtu),
        "the gateway's QUIC datagrams must fit the hop ({fits} B): {server_mtu}"
    );
    assert!(
        (1200..=fits).contains(&u32::from(client_mtu)),
        "{client_mtu}"
    );

    device.abort();
    let server_rt = &server;
    let mut gw = gw;
    if let Some(s) = gw.0.take() {
        server_rt.run(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.shutdown()).await;
        });
    }
    println!(
        "router dropped {} ICMP errors in all; test took {:?}",
        net.icmp_dropped().unwrap_or(0),
        started.elapsed()
    );
}

/// `GET /bytes?n=BIG` over HTTP/3 (quinn + h3) from `addr` for `host`,
/// trusting `ca_pem`; the body and the datagram size the client's path
/// ended at.
async fn h3_download(addr: SocketAddr, host: &str, ca_pem: &str) -> (Vec<u8>, u16) {
    use bytes::Buf as _;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA")).expect("root");
    }
    let mut tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::new(CLIENT_ADDR.into(), 0)).expect("QUIC endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic_tls)));
    let conn = endpoint
        .connect(addr, host)
        .expect("connect")
        .await
        .expect("QUIC handshake across the black hole");
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .expect("HTTP/3");
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let req = http::Request::get(format!("https://{host}/bytes?n={BIG}"))
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("request sent");
    stream.finish().await.expect("request end");
    let resp = stream.recv_response().await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = Vec::with_capacity(BIG);
    while let Some(mut chunk) = stream.recv_data().await.expect("body") {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let mtu = conn.stats().path.current_mtu;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    drive.abort();
    (body, mtu)
}

/// A started gateway, dropped (tasks aborted) if the test fails early.
struct GwGuard(Option<Server>);

impl GwGuard {
    fn get(&self) -> &Server {
        self.0.as_ref().expect("running")
    }
}

#[derive(Debug)]
enum Outcome {
    Done(#[allow(dead_code)] Duration),
    Stalled,
    Failed(#[allow(dead_code)] String),
}

/// A TLS handshake to `addr`; the MSS the client's socket uses and how it
/// ended (stalled: no result within [`STALL`]).
async fn handshake(addr: SocketAddr, tls: Arc<ClientConfig>) -> (u32, Outcome) {
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("TCP connects in time")
        .expect("TCP connects");
    let mss = listener::mss(&tcp).expect("mss");
    let t = Instant::now();
    let name = ServerName::try_from(format!("dev.{DOMAIN}")).expect("name");
    let outcome =
        match tokio::time::timeout(STALL, TlsConnector::from(tls).connect(name, tcp)).await {
            Err(_) => Outcome::Stalled,
            Ok(Ok(_)) => Outcome::Done(t.elapsed()),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
        };
    (mss, outcome)
}

/// A rustls server at `addr`, with `TCP_MAXSEG` `mss` on its listener or
/// none; handshakes, then closes.
async fn plain_tls_server(
    addr: SocketAddr,
    mss: Option<u32>,
    cfg: Arc<ServerConfig>,
) -> SocketAddr {
    let l = match mss {
        None => TcpListener::bind(addr).await.expect("bind"),
        Some(mss) => listener::bind(
            addr,
            &SocketOptions {
                mss,
                ..SocketOptions::default()
            },
        )
        .expect("bind"),
    };
    let addr = l.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut s)) = tokio::time::timeout(STEP, acceptor.accept(tcp)).await {
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 server without a clamp: any request gets
/// [`DIRECT_BODY`] bytes of the `/bytes` pattern; keep-alive.
async fn http_server(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let body: Bytes = (0..DIRECT_BODY)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 65536 {
                            return;
                        }
                        continue;
                    };
                    buf.drain(..end + 4);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The echo device, dialing `link` (reconnects on its own).
async fn echo_device(link: SocketAddr, key: SecretKey, gateway: PublicKey) {
    const RECORD: usize = 16 * 1024 + 18;
    let mut app = EchoApp::new(EchoOptions {
        device_id: "dev".into(),
        firmware: "pmtu-test".into(),
        subprotocols: Vec::new(),
        raw_service: false,
    });
    let identity = Identity { key, gateway };
    let cfg = LinkConfig {
        session: Config {
            params: Params {
                max_record: RECORD as u16,
                max_streams: 8,
                stream_window: 256 * 1024,
                conn_window: 1024 * 1024,
            },
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
    };
    let mut platform = TokioPlatform::new(link);
    let mut mem: Box<LinkMemory<RECORD, 8>> = Box::new(LinkMemory::new());
    run(&mut platform, &mut app, &identity, &cfg, &mut mem).await;
}

fn client_tls(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA")).expect("CA");
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Client = SendRequest<Full<Bytes>>;

async fn http_client(addr: SocketAddr, host: &str, tls: Arc<ClientConfig>) -> Client {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(host.to_string()).expect("name");
    let io = tokio::time::timeout(STEP, TlsConnector::from(tls).connect(name, tcp))
        .await
        .expect("TLS in time")
        .expect("TLS");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1");
    tokio::spawn(conn);
    send
}

async fn fetch(
    c: &mut Client,
    method: &str,
    host: &str,
    target: &str,
    body: Bytes,
) -> (u16, Bytes) {
    c.ready().await.expect("ready");
    let req = http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", host)
        .body(Full::new(body))
        .expect("request");
    let resp = c.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

fn check_pattern(body: &[u8], n: usize) {
    assert_eq!(body.len(), n, "body length");
    if let Some(i) = body
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8)
    {
        panic!("body differs at byte {i}");
    }
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
