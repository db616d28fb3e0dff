//! HTTP/2 abuse against a real gateway, scripted with the `h2` crate and
//! with raw frames: a burst of 10,000 stream resets, an endless
//! CONTINUATION sequence, and a PING and SETTINGS flood from a client that
//! never reads. Each attack ends with GOAWAY or a closed connection,
//! memory stays bounded, and a probe client is served throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::harness::{DOMAIN, Dev, Gw, empty, get, link_config};
use gateway::edge::admission::Usage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

/// Requests `/head` on fresh HTTP/2 connections until `stop`; returns the
/// latencies.
fn probe(gw: &Gw, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Duration>> {
    let addr = gw.addr;
    let ca = gw.ca_pem.clone();
    let h = host("probe");
    tokio::spawn(async move {
        let gw = ProbeTarget { addr, ca };
        let mut lat = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let status = tokio::time::timeout(Duration::from_secs(5), gw.head(&h)).await;
            assert_eq!(status.ok(), Some(200), "probe request failed or timed out");
            lat.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lat
    })
}

struct ProbeTarget {
    addr: std::net::SocketAddr,
    ca: String,
}

impl ProbeTarget {
    async fn head(&self, h: &str) -> u16 {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let io = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls::pki_types::ServerName::try_from(h.to_string()).unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut send, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://{h}/head"))
            .body(())
            .unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        resp.await.unwrap().status().as_u16()
    }
}

fn p99(mut lat: Vec<Duration>) -> Duration {
    assert!(!lat.is_empty());
    lat.sort();
    lat[(lat.len() * 99 / 100).min(lat.len() - 1)]
}

async fn gateway() -> (Gw, Vec<common::harness::EchoDevice>) {
    let gw = Gw::start(
        "[gateway.limits]\nsend_timeout = \"3s\"\n",
        &[Dev("plc", ""), Dev("probe", "")],
    )
    .await;
    let plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let probe = gw.echo("probe", &[], link_config(4096, 16384, 1024)).await;
    (gw, vec![plc, probe])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_10000_stream_resets_ends_the_connection() {
    let (gw, _devs) = gateway().await;
    let h = host("plc");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(&gw, stop.clone());
    let rss_before = Usage::sample().rss;

    let io = gw.tls(&h, &[b"h2"]).await;
    let (mut send, conn) = h2::client::Builder::new()
        .max_concurrent_reset_streams(20_000)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let started = Instant::now();
    let mut sent = 0u32;
    for _ in 0..10_000 {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => break,
        };
        let req = http::Request::get(format!("https://{h}/slow"))
            .body(())
            .unwrap();
        let Ok((_resp, mut stream)) = send.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the gateway kept the resetting connection open")
        .unwrap();
    let e = ended.expect_err("the connection ended without an error");
    eprintln!(
        "rapid reset: {sent} streams reset before the gateway ended the connection ({e}) in {:?}",
        started.elapsed()
    );
    assert!(e.is_go_away() || e.is_io() || e.is_remote(), "{e}");

    // Others are served, memory stayed bounded.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c = gw.client(2, &h).await;
    let (p, _) = c.fetch(get(2, &h, "/head").body(empty()).unwrap()).await;
    assert_eq!(p.status, 200);
    stop.store(true, Ordering::Relaxed);
    let lat = prober.await.unwrap();
    let rss_after = Usage::sample().rss;
    eprintln!(
        "rapid reset: probe p99 {:?} over {} requests; RSS {} -> {} MiB",
        p99(lat.clone()),
        lat.len(),
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(p99(lat) < Duration::from_secs(1));
    assert!(
        rss_after < rss_before + (64 << 20),
        "RSS grew by more than 64 MiB"
    );
    gw.stop().await;
}

/// An HTTP/2 frame header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads frames until GOAWAY (true), EOF or an error (false), for up to
/// `limit`; None when neither came.
async fn until_goaway<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    limit: Duration,
) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        let n = match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(false),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 {
                return Some(true);
            }
            buf.drain(..9 + len);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_continuation_sequence_gets_goaway() {
    let (gw, devs) = gateway().await;
    let h = host("plc");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(&gw, stop.clone());
    let rss_before = Usage::sample().rss;

    let io = gw.tls(&h, &[b"h2"]).await;
    let (mut rd, mut wr) = tokio::io::split(io);
    let reader = tokio::spawn(async move { until_goaway(&mut rd, Duration::from_secs(20)).await });
    wr.write_all(PREFACE).await.unwrap();
    wr.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    // HEADERS without END_HEADERS: :method GET, :scheme https, :path /.
    wr.write_all(&frame(0x1, 0x1, 1, &[0x82, 0x87, 0x84]))
        .await
        .unwrap();
    // Then CONTINUATION frames of literal fields, never END_HEADERS.
    let mut block = Vec::new();
    while block.len() < 16_000 {
        block.extend_from_slice(&[0x40, 3, b'x', b'-', b'a', 100]);
        block.extend_from_slice(&[b'v'; 100]);
    }
    let continuation = frame(0x9, 0, 1, &block);
    let mut sent = 0usize;
    let started = Instant::now();
    while sent < 256 << 20 && started.elapsed() < Duration::from_secs(20) {
        let w = tokio::time::timeout(Duration::from_secs(5), wr.write_all(&continuation)).await;
        if !matches!(w, Ok(Ok(()))) {
            break;
        }
        sent += continuation.len();
        if reader.is_finished() {
            break;
        }
    }
    let outcome = reader.await.unwrap();
    eprintln!(
        "CONTINUATION flood: {} KiB sent before the end ({outcome:?}) in {:?}",
        sent >> 10,
        started.elapsed()
    );
    assert!(
        outcome.is_some(),
        "the gateway neither sent GOAWAY nor closed within 20 s"
    );
    assert!(
        sent < 64 << 20,
        "the gateway took {} MiB of one header block",
        sent >> 20
    );
    assert_eq!(devs[0].requests.load(Ordering::Relaxed), 0);

    stop.store(true, Ordering::Relaxed);
    let lat = prober.await.unwrap();
    let rss_after = Usage::sample().rss;
    eprintln!(
        "CONTINUATION flood: probe p99 {:?}; RSS {} -> {} MiB",
        p99(lat.clone()),
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(p99(lat) < Duration::from_secs(1));
    assert!(rss_after < rss_before + (64 << 20));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_and_settings_flood_from_a_client_that_never_reads_is_cut_off() {
    let (gw, _devs) = gateway().await;
    let h = host("plc");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe(&gw, stop.clone());
    let rss_before = Usage::sample().rss;

    let mut io = gw.tls(&h, &[b"h2"]).await;
    io.write_all(PREFACE).await.unwrap();
    let mut batch = frame(0x4, 0, 0, &[]);
    for i in 0..500u64 {
        batch.extend_from_slice(&frame(0x6, 0, 0, &i.to_be_bytes()));
        batch.extend_from_slice(&frame(0x4, 0, 0, &[]));
    }
    let started = Instant::now();
    let mut sent = 0usize;
    let mut ended = false;
    // Never read: write until the gateway stops taking bytes and closes.
    while started.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(10), io.write_all(&batch)).await {
            Ok(Ok(())) => sent += batch.len(),
            Ok(Err(_)) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    if !ended {
        // Writes blocked: the gateway must close within its send timeout.
        let mut buf = vec![0u8; 1 << 20];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {
                    ended = true;
                    break;
                }
                Ok(Ok(_)) => {}
                Err(_) => break,
            }
        }
    }
    eprintln!(
        "PING/SETTINGS flood: {} KiB sent, connection ended: {ended}, after {:?}",
        sent >> 10,
        started.elapsed()
    );
    assert!(ended, "the flooding connection was not closed");

    stop.store(true, Ordering::Relaxed);
    let lat = prober.await.unwrap();
    let rss_after = Usage::sample().rss;
    eprintln!(
        "PING/SETTINGS flood: probe p99 {:?}; RSS {} -> {} MiB; send timeouts {}",
        p99(lat.clone()),
        rss_before >> 20,
        rss_after >> 20,
        gw.metric("gateway_browser_timeouts_total{timer=\"send\"}")
    );
    assert!(p99(lat) < Duration::from_secs(1));
    assert!(rss_after < rss_before + (64 << 20));
    gw.stop().await;
}

/// A request body fed by the test, a chunk at a time.
struct Trickle(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for Trickle {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_on_one_http2_connection_get_408_each_while_it_keeps_serving() {
    use http_body_util::BodyExt as _;
    let gw = Gw::start(
        "[gateway.limits]\nmin_body_rate = \"1KiB\"\n\n[http]\nheader_timeout = \"2s\"\n",
        &[Dev("plc", "")],
    )
    .await;
    let _dev = gw
        .echo_wide::<8>(
            "plc",
            common::harness::link_config_streams(4096, 32768, 1024, 8),
        )
        .await;
    let h = host("plc");
    let common::harness::Client::H2(send) = gw.client(2, &h).await else {
        unreachable!("asked for HTTP/2")
    };
    // Five uploads on one connection: 100 bytes each, then nothing (the
    // device answers /upload only once the body is complete).
    let mut slow = Vec::new();
    let mut feeders = Vec::new();
    for _ in 0..5 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let req = common::harness::request(2, "POST", &h, "/upload")
            .body(Trickle(rx).boxed())
            .unwrap();
        let mut s = send.clone();
        slow.push(tokio::spawn(async move {
            s.ready().await?;
            s.send_request(req).await
        }));
        tx.send(bytes::Bytes::from(vec![b'x'; 100])).await.unwrap();
        feeders.push(tx);
    }
    // The same connection serves other requests meanwhile.
    let mut c = common::harness::Client::H2(send.clone());
    let (parts, _) = c.fetch(get(2, &h, "/head").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    // Each slow body is abandoned with 408 once it falls below 1 KiB/s
    // past the 2 s grace.
    for j in slow {
        let resp = tokio::time::timeout(Duration::from_secs(15), j)
            .await
            .expect("a slow body was never cut off")
            .unwrap()
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 408, "{body:?}");
    }
    let text = gw.server().metrics.render();
    let cut: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("gateway_browser_timeouts_total{timer=\"body_rate\"} ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(cut >= 5.0, "{cut} slow bodies counted");
    // And the connection still works.
    let (parts, _) = c.fetch(get(2, &h, "/head").body(empty()).unwrap()).await;
    assert_eq!(parts.status, 200);
    drop(feeders);
    gw.stop().await;
}
