//! The server against a client written frame by frame: what it answers,
//! what it refuses, and what it holds between messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt as _, Full};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};
use tokio::task::{AbortHandle, JoinHandle};

use super::conn::{Conn, Dispatched, Error, Settings};
use super::frame::{HEAD_LEN, Head, PREFACE, Reason, flag, kind, setting};
use super::hpack::Decoder;
use super::{Upgrade, respond};
use crate::edge::http::EdgeStats;

type Dispatch = Box<dyn FnMut(Dispatched) -> AbortHandle + Send>;
/// The connection while it runs (dropped, with its socket, when it ends).
type Server = Arc<Mutex<Option<Conn<DuplexStream, Dispatch>>>>;

fn settings() -> Settings {
    Settings {
        max_streams: 8,
        max_header_bytes: 2048,
        max_headers: 20,
        connect_protocol: true,
        max_early_resets: 4,
        max_local_resets: 50,
        keepalive: Duration::from_secs(10),
        ping_timeout: Duration::from_secs(5),
    }
}

fn body(b: impl Into<Bytes>) -> crate::bridge::Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Live request tasks of the test application.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The test application: `/echo` returns the body, `/big` 200,000 bytes,
/// `/slow` never answers, `/hold` keeps the body unread and never answers,
/// `/ws` echoes an extended CONNECT's bytes; anything else is `hello`.
fn app(seen: Arc<AtomicUsize>, live: Arc<AtomicUsize>) -> Dispatch {
    Box::new(move |d: Dispatched| {
        seen.fetch_add(1, Ordering::SeqCst);
        let Dispatched {
            mut request,
            responder,
            upgrade,
        } = d;
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let up = request
            .extensions_mut()
            .remove::<Upgrade>()
            .and_then(|u| u.take());
        let guard = Live::new(&live);
        tokio::spawn(async move {
            let response = async move {
                let guard = guard;
                let resp = match path.as_str() {
                    "/echo" => {
                        let b = request.into_body().collect().await;
                        match b {
                            Ok(b) => body(b.to_bytes()),
                            Err(e) => body(format!("error: {e}")),
                        }
                    }
                    "/big" => body((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>()),
                    "/huge" => body(vec![7u8; 600_000]),
                    "/trailers" => {
                        let mut t = http::HeaderMap::new();
                        t.insert("x-checksum", http::HeaderValue::from_static("abc"));
                        let frames = [
                            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(
                                b"body",
                            ))),
                            Ok(http_body::Frame::trailers(t)),
                        ];
                        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
                    }
                    "/slow" => std::future::pending().await,
                    "/forever" => {
                        // One chunk, then a body that never ends.
                        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(
                            http_body::Frame::data(Bytes::from_static(b"first")),
                        )]);
                        let rest = futures_util::stream::pending();
                        http_body_util::StreamBody::new(futures_util::StreamExt::chain(first, rest))
                            .map_frame(move |f| {
                                // Live while the body is.
                                let _ = &guard;
                                f
                            })
                            .boxed()
                    }
                    "/hold" => {
                        let _body = request.into_body();
                        std::future::pending().await
                    }
                    "/ws" => {
                        if let Some(up) = up {
                            tokio::spawn(async move {
                                let Ok(mut s) = up.await else { return };
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = s.read(&mut buf).await {
                                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                                let _ = s.shutdown().await;
                            });
                        }
                        body(Bytes::new())
                    }
                    _ => body("hello"),
                };
                Ok(Response::new(resp))
            };
            respond(responder, upgrade, method, response).await;
        })
        .abort_handle()
    })
}

struct Harness {
    client: Client,
    server: Server,
    ended: JoinHandle<Result<(), Error>>,
    seen: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    stats: Arc<EdgeStats>,
}

/// A server with `cfg`, its serving task, and a client that has sent the
/// preface and its SETTINGS and read the server's.
async fn start(cfg: Settings) -> Harness {
    let (a, b) = duplex(1 << 20);
    let seen = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(AtomicUsize::new(0));
    let stats = Arc::new(EdgeStats::default());
    let conn = Conn::new(b, cfg, stats.clone(), app(seen.clone(), live.clone()));
    let server: Server = Arc::new(Mutex::new(Some(conn)));
    let s = server.clone();
    let ended = tokio::spawn(std::future::poll_fn(move |cx| {
        let mut conn = s.lock().unwrap();
        let r = conn
            .as_mut()
            .map_or(Poll::Ready(Ok(())), |c| c.poll_serve(cx));
        if r.is_ready() {
            *conn = None;
        }
        r
    }));
    let mut client = Client::new(a);
    client.io.write_all(PREFACE).await.unwrap();
    client.send(kind::SETTINGS, 0, 0, &[]).await;
    let (h, p) = client.next().await.expect("the server's SETTINGS");
    assert_eq!((h.kind, h.flags), (kind::SETTINGS, 0));
    assert!(
        p.chunks(6)
            .any(|s| s == [0, setting::ENABLE_CONNECT_PROTOCOL as u8, 0, 0, 0, 1])
            == cfg_connect(&server)
    );
    // Then the connection's window, opened to 1 MiB.
    let (h, p) = client.next().await.expect("the server's WINDOW_UPDATE");
    assert_eq!((h.kind, h.stream), (kind::WINDOW_UPDATE, 0));
    assert_eq!(
        u32::from_be_bytes(p[..4].try_into().unwrap()),
        1_048_576 - 65_535
    );
    Harness {
        client,
        server,
        ended,
        seen,
        live,
        stats,
    }
}

fn cfg_connect(server: &Server) -> bool {
    server
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .config()
        .connect_protocol
}

struct Client {
    io: DuplexStream,
    rbuf: Vec<u8>,
    decoder: Decoder,
}

impl Client {
    fn new(io: DuplexStream) -> Self {
        Self {
            io,
            rbuf: Vec::new(),
            decoder: Decoder::new(4096),
        }
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let mut f = Vec::new();
        super::frame::put_head(&mut f, payload.len(), kind, flags, stream);
        f.extend_from_slice(payload);
        self.io.write_all(&f).await.unwrap();
    }

    /// The next frame, `None` at the end of the stream; fails after 5 s.
    async fn next(&mut self) -> Option<(Head, Vec<u8>)> {
        loop {
            if self.rbuf.len() >= HEAD_LEN {
                let h = Head::parse(self.rbuf[..HEAD_LEN].try_into().unwrap());
                if self.rbuf.len() >= HEAD_LEN + h.len {
                    let p = self.rbuf[HEAD_LEN..HEAD_LEN + h.len].to_vec();
                    self.rbuf.drain(..HEAD_LEN + h.len);
                    return Some((h, p));
                }
            }
            let mut buf = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read(&mut buf))
                .await
                .expect("no frame within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.rbuf.extend_from_slice(&buf[..n]);
        }
    }

    /// Frames up to the first of `kind` (others skipped, window updates
    /// and SETTINGS acknowledgements among them).
    async fn until(&mut self, want: u8) -> (Head, Vec<u8>) {
        loop {
            let (h, p) = self.next().await.expect("connection ended");
            if h.kind == want {
                return (h, p);
            }
        }
    }

    /// Waits for the connection's end: the GOAWAY code, if one came.
    async fn goaway(&mut self) -> Option<Reason> {
        let mut code = None;
        while let Some((h, p)) = self.next().await {
            if h.kind == kind::GOAWAY {
                code = Some(Reason(u32::from_be_bytes(p[4..8].try_into().unwrap())));
            }
        }
        code
    }

    /// Opens stream `id` with these fields.
    async fn request(&mut self, id: u32, fields: &[(&str, &str)], end: bool) {
        let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
        self.send(kind::HEADERS, flags, id, &block(fields)).await;
    }

    /// The response on stream `id`: status and body (to END_STREAM).
    async fn response(&mut self, id: u32) -> (u16, Vec<u8>) {
        let mut status = 0;
        let mut data = Vec::new();
        loop {
            let (h, p) = self.next().await.expect("connection ended");
            if h.stream != id {
                continue;
            }
            match h.kind {
                kind::HEADERS => {
                    let mut fields = Vec::new();
                    self.decoder
                        .decode(&p, 1 << 20, |n, v| {
                            fields.push((n.to_vec(), v.to_vec()));
                            Ok(())
                        })
                        .unwrap();
                    status = std::str::from_utf8(&fields[0].1).unwrap().parse().unwrap();
                }
                kind::DATA => data.extend_from_slice(&p),
                kind::RST_STREAM => panic!("stream {id} reset: {:?}", reset_code(&p)),
                _ => {}
            }
            if h.flags & flag::END_STREAM != 0 && matches!(h.kind, kind::HEADERS | kind::DATA) {
                return (status, data);
            }
        }
    }

    /// The RST_STREAM code for stream `id` (frames before it skipped).
    async fn reset_of(&mut self, id: u32) -> Reason {
        loop {
            let (h, p) = self.until(kind::RST_STREAM).await;
            if h.stream == id {
                return reset_code(&p);
            }
        }
    }
}

fn reset_code(p: &[u8]) -> Reason {
    Reason(u32::from_be_bytes(p[..4].try_into().unwrap()))
}

/// A header block of literal fields without indexing, new names (RFC
/// 7541 §6.2.2), lengths under 127.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0x00);
        for s in [n, v] {
            let len = u8::try_from(s.len()).unwrap();
            assert!(len < 127);
            b.push(len);
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

fn get(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "https".into()),
        (":authority", "plc.example".into()),
        (":path", path.into()),
    ]
}

fn fields<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(n, s)| (*n, s.as_str())).collect()
}

#[tokio::test]
async fn requests_are_answered_and_pings_and_settings_acknowledged() {
    let mut h = start(settings()).await;
    let c = &mut h.client;
    c.send(kind::PING, 0, 0, b"12345678").await;
    let (ph, pp) = c.until(kind::PING).await;
    assert_eq!((ph.flags, pp.as_slice()), (flag::ACK, &b"12345678"[..]));
    // Unknown frame types are ignored.
    c.send(0xfa, 0, 0, b"whatever").await;
    c.request(1, &fields(&get("/")), true).await;
    assert_eq!(c.response(1).await, (200, b"hello".to_vec()));
    // Padding and priority on HEADERS.
    let mut padded = vec![3];
    padded.extend_from_slice(&[0, 0, 0, 0, 16]);
    padded.extend_from_slice(&block(&fields(&get("/"))));
    padded.extend_from_slice(&[0; 3]);
    let flags = flag::END_HEADERS | flag::END_STREAM | flag::PADDED | flag::PRIORITY;
    c.send(kind::HEADERS, flags, 3, &padded).await;
    assert_eq!(c.response(3).await, (200, b"hello".to_vec()));
    // A head split over CONTINUATION frames.
    let b = block(&fields(&get("/split")));
    c.send(kind::HEADERS, flag::END_STREAM, 5, &b[..10]).await;
    c.send(kind::CONTINUATION, 0, 5, &b[10..20]).await;
    c.send(kind::CONTINUATION, flag::END_HEADERS, 5, &b[20..])
        .await;
    assert_eq!(c.response(5).await, (200, b"hello".to_vec()));
    assert_eq!(h.seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn bodies_flow_both_ways_within_the_windows() {
    let mut h = start(settings()).await;
    let c = &mut h.client;
    // 200,000 bytes up, in padded and plain DATA frames, with trailers.
    let mut post = get("/echo");
    post[0].1 = "POST".into();
    post.push(("content-length", "200000".into()));
    c.request(1, &fields(&post), false).await;
    let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (i, chunk) in up.chunks(16_000).enumerate() {
        if i % 2 == 0 {
            let mut p = vec![4];
            p.extend_from_slice(chunk);
            p.extend_from_slice(&[0; 4]);
            c.send(kind::DATA, flag::PADDED, 1, &p).await;
        } else {
            c.send(kind::DATA, 0, 1, chunk).await;
        }
    }
    c.send(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block(&[("x-trailer", "1")]),
    )
    .await;
    // The answer waits on the client's 65,535-byte window.
    let mut got = Vec::new();
    let mut status = 0;
    loop {
        let (fh, p) = c.next().await.unwrap();
        match (fh.kind, fh.stream) {
            (kind::HEADERS, 1) => status = 200,
            (kind::DATA, 1) => got.extend_from_slice(&p),
            _ => {}
        }
        if got.len() == 65_535 {
            break;
        }
        assert!(got.len() < 65_535, "sent past the window");
    }
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut inc = Vec::new();
    inc.extend_from_slice(&1_000_000u32.to_be_bytes());
    c.send(kind::WINDOW_UPDATE, 0, 0, &inc).await;
    c.send(kind::WINDOW_UPDATE, 0, 1, &inc).await;
    let (_, rest) = c.response(1).await;
    got.extend_from_slice(&rest);
    assert_eq!(got, up);

    // Down: 200,000 bytes.
    c.request(3, &fields(&get("/big")), true).await;
    c.send(kind::WINDOW_UPDATE, 0, 3, &inc).await;
    let (status, data) = c.response(3).await;
    assert_eq!(status, 200);
    assert_eq!(data.len(), 200_000);
    assert!(data.iter().enumerate().all(|(i, b)| *b == i as u8));
}

#[tokio::test]
async fn broken_framing_ends_the_connection_with_goaway() {
    type Case = (&'static str, Vec<u8>, Reason);
    let frame = |k: u8, f: u8, s: u32, p: &[u8]| {
        let mut v = Vec::new();
        super::frame::put_head(&mut v, p.len(), k, f, s);
        v.extend_from_slice(p);
        v
    };
    let get1 = block(&fields(&get("/")));
    let cases: Vec<Case> = vec![
        (
            "DATA on stream 0",
            frame(kind::DATA, 0, 0, b"x"),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a frame past 16 KiB",
            frame(kind::DATA, 0, 1, &vec![0; 16_385]),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "an even stream",
            frame(kind::HEADERS, flag::END_HEADERS, 2, &get1),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "CONTINUATION alone",
            frame(kind::CONTINUATION, flag::END_HEADERS, 1, &get1),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "HPACK index 0",
            frame(kind::HEADERS, flag::END_HEADERS, 1, &[0x80]),
            Reason::COMPRESSION_ERROR,
        ),
        (
            "a window past 2^31-1",
            frame(kind::WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            Reason::FLOW_CONTROL_ERROR,
        ),
        (
            "a window update of 0",
            frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "PUSH_PROMISE",
            frame(kind::PUSH_PROMISE, 0, 1, &[0; 4]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "SETTINGS of 5 bytes",
            frame(kind::SETTINGS, 0, 0, &[0; 5]),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "SETTINGS_MAX_FRAME_SIZE of 100",
            frame(kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 100]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "PING of 7 bytes",
            frame(kind::PING, 0, 0, &[0; 7]),
            Reason::FRAME_SIZE_ERROR,
        ),
        (
            "RST_STREAM on an idle stream",
            frame(kind::RST_STREAM, 0, 9, &[0, 0, 0, 8]),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "DATA on an idle stream",
            frame(kind::DATA, 0, 7, b"x"),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "a header block interrupted",
            [
                frame(kind::HEADERS, 0, 1, &get1[..4]),
                frame(kind::PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            Reason::PROTOCOL_ERROR,
        ),
        (
            "padding past the frame",
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::PADDED,
                1,
                &[200, 1, 2],
            ),
            Reason::PROTOCOL_ERROR,
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut h = start(settings()).await;
        h.client.io.write_all(&bytes).await.unwrap();
        assert_eq!(h.client.goaway().await, Some(reason), "{what}");
        match h.ended.await.unwrap() {
            Err(Error::Protocol(r, _)) => assert_eq!(r, reason, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(h.seen.load(Ordering::SeqCst), 0, "{what}");
        assert_eq!(h.stats.malformed.load(Ordering::Relaxed), 1, "{what}");
    }
}

#[tokio::test]
async fn a_client_that_is_not_http2_is_told_so() {
    let (a, b) = duplex(1 << 16);
    let stats = Arc::new(EdgeStats::default());
    let seen = Arc::new(AtomicUsize::new(0));
    let mut conn = Conn::new(b, settings(), stats, app(seen.clone(), seen));
    let server = tokio::spawn(std::future::poll_fn(move |cx| conn.poll_serve(cx)));
    let mut c = Client::new(a);
    c.io.write_all(b"GET / HTTP/1.1\r\nHost: plc\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.goaway().await, Some(Reason::PROTOCOL_ERROR));
    assert!(matches!(server.await.unwrap(), Err(Error::Protocol(..))));
    // The first frame must be SETTINGS.
    let mut h = {
        let (a, b) = duplex(1 << 16);
        let stats = Arc::new(EdgeStats::default());
        let seen = Arc::new(AtomicUsize::new(0));
        let mut conn = Conn::new(b, settings(), stats, app(seen.clone(), seen));
        tokio::spawn(std::future::poll_fn(move |cx| conn.poll_serve(cx)));
        Client::new(a)
    };
    h.io.write_all(PREFACE).await.unwrap();
    h.send(kind::PING, 0, 0, &[0; 8]).await;
    assert_eq!(h.goaway().await, Some(Reason::PROTOCOL_ERROR));
}

#[tokio::test]
async fn malformed_requests_reset_their_stream_and_the_connection_serves_on() {
    let mut h = start(settings()).await;
    let base = get("/");
    let mut cases: Vec<(&str, Vec<(&'static str, String)>)> = Vec::new();
    let mut v = base.clone();
    v.push(("X-Upper", "1".into()));
    cases.push(("an upper-case name", v));
    cases.push(("no :path", base[..3].to_vec()));
    let mut v = base.clone();
    v.push(("connection", "keep-alive".into()));
    cases.push(("a connection header", v));
    let mut v = base.clone();
    v.push(("te", "gzip".into()));
    cases.push(("te other than trailers", v));
    let mut v = base.clone();
    v.insert(1, ("x-a", "1".into()));
    cases.push(("a pseudo-header after a field", v));
    let mut v = base.clone();
    v.push((":status", "200".into()));
    cases.push(("a response pseudo-header", v));
    let mut v = base.clone();
    v.push((":path", "/again".into()));
    cases.push(("two :path", v));
    let mut v = base.clone();
    v.push((":protocol", "websocket".into()));
    cases.push(("a :protocol on GET", v));
    let mut v = base.clone();
    v.push(("content-length", "x".into()));
    cases.push(("a content-length that is no number", v));
    let mut id = 1;
    for (what, f) in &cases {
        h.client.request(id, &fields(f), true).await;
        assert_eq!(
            h.client.reset_of(id).await,
            Reason::PROTOCOL_ERROR,
            "{what}"
        );
        id += 2;
    }
    assert_eq!(h.seen.load(Ordering::SeqCst), 0);
    assert_eq!(
        h.stats.malformed.load(Ordering::Relaxed),
        cases.len() as u64
    );
    // A head that ends the stream while announcing a body.
    let mut cl = get("/echo");
    cl.push(("content-length", "5".into()));
    h.client.request(id, &fields(&cl), true).await;
    assert_eq!(h.client.reset_of(id).await, Reason::PROTOCOL_ERROR);
    id += 2;
    // A body that does not match its content-length.
    let mut post = get("/echo");
    post[0].1 = "POST".into();
    post.push(("content-length", "10".into()));
    h.client.request(id, &fields(&post), false).await;
    h.client
        .send(kind::DATA, flag::END_STREAM, id, b"12345")
        .await;
    assert_eq!(h.client.reset_of(id).await, Reason::PROTOCOL_ERROR);
    id += 2;
    h.client.request(id, &fields(&get("/")), true).await;
    assert_eq!(h.client.response(id).await, (200, b"hello".to_vec()));
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let mut h = start(settings()).await;
    let mut big = get("/");
    for i in 0..30 {
        big.push(("x-filler", format!("{i:0>100}")));
    }
    h.client.request(1, &fields(&big), true).await;
    assert_eq!(h.client.response(1).await.0, 431);
    let mut many = get("/");
    for i in 0..21 {
        many.push(("x-n", i.to_string()));
    }
    h.client.request(3, &fields(&many), true).await;
    assert_eq!(h.client.response(3).await.0, 431);
    assert_eq!(h.seen.load(Ordering::SeqCst), 0);
    // An endless header block is a connection error.
    let mut chunk = block(&[("x-filler", &"v".repeat(100))]);
    while chunk.len() < 16_000 {
        chunk.extend_from_within(..104);
    }
    h.client
        .send(kind::HEADERS, 0, 5, &block(&fields(&get("/"))))
        .await;
    for _ in 0..10 {
        h.client.send(kind::CONTINUATION, 0, 5, &chunk).await;
    }
    assert_eq!(h.client.goaway().await, Some(Reason::ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_data_past_a_window_resets() {
    let mut cfg = settings();
    cfg.max_streams = 2;
    let mut h = start(cfg).await;
    let mut post = get("/hold");
    post[0].1 = "POST".into();
    h.client.request(1, &fields(&post), false).await;
    h.client.request(3, &fields(&get("/slow")), true).await;
    h.client.request(5, &fields(&get("/slow")), true).await;
    assert_eq!(h.client.reset_of(5).await, Reason::REFUSED_STREAM);
    // 512 KiB fit the stream's window; a byte more does not.
    for _ in 0..32 {
        h.client.send(kind::DATA, 0, 1, &[7; 16_384]).await;
    }
    h.client.send(kind::DATA, 0, 1, b"x").await;
    assert_eq!(h.client.reset_of(1).await, Reason::FLOW_CONTROL_ERROR);
    // The held body is gone with the reset, and its task.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.live.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rapid_resets_abort_their_tasks_and_then_end_the_connection() {
    let mut h = start(settings()).await;
    // Resets past `max_early_resets` + `max_streams` (4 + 8) end it.
    let mut id = 1;
    let mut ended = None;
    for _ in 0..20 {
        h.client.request(id, &fields(&get("/slow")), true).await;
        h.client.send(kind::RST_STREAM, 0, id, &[0, 0, 0, 8]).await;
        id += 2;
        tokio::time::sleep(Duration::from_millis(5)).await;
        if h.ended.is_finished() {
            ended = Some(id / 2);
            break;
        }
    }
    assert_eq!(ended, Some(13), "the connection outlived the reset limit");
    assert_eq!(h.client.goaway().await, Some(Reason::ENHANCE_YOUR_CALM));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.live.load(Ordering::SeqCst),
        0,
        "a reset request's task still runs"
    );

    // Responses pay resets back: a client that lets requests finish may
    // cancel as many as it likes over the connection's life.
    let mut h = start(settings()).await;
    let mut id = 1;
    for _ in 0..30 {
        h.client.request(id, &fields(&get("/")), true).await;
        assert_eq!(h.client.response(id).await.0, 200);
        h.client.request(id + 2, &fields(&get("/slow")), true).await;
        h.client
            .send(kind::RST_STREAM, 0, id + 2, &[0, 0, 0, 8])
            .await;
        id += 4;
    }
    h.client.request(id, &fields(&get("/")), true).await;
    assert_eq!(h.client.response(id).await.0, 200);
}

#[tokio::test]
async fn a_websocket_stream_carries_bytes_and_holds_no_buffers_between_messages() {
    let mut h = start(settings()).await;
    let connect = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "plc.example"),
        (":path", "/ws"),
        ("sec-websocket-version", "13"),
    ];
    h.client.request(1, &connect, false).await;
    let (hh, _) = h.client.until(kind::HEADERS).await;
    assert_eq!(hh.flags & flag::END_STREAM, 0, "the stream stays open");
    for round in 0..3u8 {
        let msg = vec![round; 1000];
        h.client.send(kind::DATA, 0, 1, &msg).await;
        let mut got = Vec::new();
        while got.len() < msg.len() {
            let (d, p) = h.client.until(kind::DATA).await;
            assert_eq!(d.stream, 1);
            got.extend_from_slice(&p);
        }
        assert_eq!(got, msg);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let held = h.server.lock().unwrap().as_ref().unwrap().held();
        assert_eq!(held, 0, "bytes of buffers held between messages");
        // Nor the finished request task (an abort handle keeps its memory).
        let tasks = h.server.lock().unwrap().as_ref().unwrap().tasks_held();
        assert_eq!(tasks, 0, "a WebSocket's stream holds its request's task");
    }
    // The client's END_STREAM ends the echo's stream too.
    h.client.send(kind::DATA, flag::END_STREAM, 1, b"").await;
    let (d, _) = h.client.until(kind::DATA).await;
    assert_eq!(d.flags & flag::END_STREAM, flag::END_STREAM);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.server.lock().unwrap().as_ref().unwrap().open_streams(), 0);

    // Without extended CONNECT announced, one is malformed.
    let mut cfg = settings();
    cfg.connect_protocol = false;
    let mut h = start(cfg).await;
    h.client.request(1, &connect, false).await;
    assert_eq!(h.client.reset_of(1).await, Reason::PROTOCOL_ERROR);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_connection_is_pinged_and_ended_when_the_answer_never_comes() {
    let mut h = start(settings()).await;
    let tick = |h: &Harness| h.server.lock().unwrap().as_mut().unwrap().tick();
    tick(&h).unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    tick(&h).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    tick(&h).unwrap();
    let (p, payload) = h.client.until(kind::PING).await;
    assert_eq!(p.flags, 0);
    // Answered: the connection lives on.
    h.client.send(kind::PING, flag::ACK, 0, &payload).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    tick(&h).unwrap();
    // Quiet again, pinged again, and this time no answer.
    tokio::time::advance(Duration::from_secs(10)).await;
    tick(&h).unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    tick(&h).unwrap();
    let _ = h.client.until(kind::PING).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(matches!(tick(&h), Err(Error::PingTimeout)));
}

#[tokio::test]
async fn draining_refuses_new_streams_and_ends_when_the_open_ones_do() {
    let mut h = start(settings()).await;
    h.client.request(1, &fields(&get("/slow")), true).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.server.lock().unwrap().as_mut().unwrap().drain();
    let (g, p) = h.client.until(kind::GOAWAY).await;
    assert_eq!(g.stream, 0);
    assert_eq!(
        &p[..8],
        &[0, 0, 0, 1, 0, 0, 0, 0],
        "last stream 1, NO_ERROR"
    );
    h.client.request(3, &fields(&get("/")), true).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        h.seen.load(Ordering::SeqCst),
        1,
        "a stream past GOAWAY was taken"
    );
    assert!(!h.ended.is_finished());
    h.client.send(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), h.ended).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}

#[tokio::test]
async fn the_end_of_the_connection_fails_its_streams_and_aborts_its_requests() {
    let mut h = start(settings()).await;
    h.client.request(1, &fields(&get("/slow")), true).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.live.load(Ordering::SeqCst), 1);
    drop(h.client);
    assert!(matches!(h.ended.await.unwrap(), Ok(())));
    drop(h.server);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.live.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_reset_after_the_head_stops_the_response_task() {
    let mut h = start(settings()).await;
    h.client.request(1, &fields(&get("/forever")), true).await;
    let (d, p) = h.client.until(kind::DATA).await;
    assert_eq!((d.stream, p.as_slice()), (1, &b"first"[..]));
    assert_eq!(h.live.load(Ordering::SeqCst), 1);
    h.client.send(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.live.load(Ordering::SeqCst),
        0,
        "the response's task still runs"
    );
    let open = h.server.lock().unwrap().as_ref().unwrap().open_streams();
    assert_eq!(open, 0, "the reset stream still holds its place");
}

#[tokio::test]
async fn a_full_socket_pauses_reading_and_its_draining_resumes_it() {
    // For several windows: the window update that came while reading was
    // paused (the driver's own output backed up) must still be read once
    // that output is written.
    for window in (180_000u32..=270_000).step_by(10_000) {
        // A socket that holds 128 KiB, read here 1 MiB at a time.
        let (a, b) = duplex(128 * 1024);
        let seen = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(EdgeStats::default());
        let mut conn = Conn::new(b, settings(), stats, app(seen.clone(), seen));
        tokio::spawn(std::future::poll_fn(move |cx| conn.poll_serve(cx)));
        let mut c = Client::new(a);
        c.io.write_all(PREFACE).await.unwrap();
        let mut s = vec![0, 4];
        s.extend_from_slice(&window.to_be_bytes());
        c.send(kind::SETTINGS, 0, 0, &s).await;
        c.send(kind::WINDOW_UPDATE, 0, 0, &10_000_000u32.to_be_bytes())
            .await;
        let mut big = get("/big");
        big[3].1 = "/huge".into();
        c.request(1, &fields(&big), true).await;
        // The server fills the socket and its own buffer while this side
        // reads nothing; the window update arrives meanwhile.
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.send(kind::WINDOW_UPDATE, 0, 1, &1_000_000u32.to_be_bytes())
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut got = 0;
        while got < 600_000 {
            let mut buf = vec![0u8; 1 << 20];
            let n = tokio::time::timeout(Duration::from_secs(2), c.io.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("stalled at {got} bytes with a window of {window}"))
                .unwrap();
            assert!(n > 0);
            got += n;
        }
    }
}

#[tokio::test]
async fn stalled_uploads_do_not_starve_the_connection_window() {
    let mut h = start(settings()).await;
    let mut hold = get("/hold");
    hold[0].1 = "POST".into();
    // Two uploads nobody reads take 800 KiB of the 1 MiB window.
    for id in [1, 3] {
        h.client.request(id, &fields(&hold), false).await;
        for _ in 0..25 {
            h.client.send(kind::DATA, 0, id, &[1; 16_384]).await;
        }
    }
    // An echo reads 200 KiB: the client has 24 KiB left, so the credit
    // must come back now, not at half the window.
    let mut post = get("/echo");
    post[0].1 = "POST".into();
    h.client.request(5, &fields(&post), false).await;
    for _ in 0..12 {
        h.client.send(kind::DATA, 0, 5, &[2; 16_384]).await;
    }
    h.client.send(kind::DATA, 0, 5, &[2; 8_000]).await;
    loop {
        let (w, p) = h.client.until(kind::WINDOW_UPDATE).await;
        if w.stream == 0 {
            let inc = u32::from_be_bytes(p[..4].try_into().unwrap());
            assert!(inc >= 200_000, "{inc}");
            break;
        }
    }
}

#[tokio::test]
async fn padding_is_credited_back_to_the_stream() {
    let mut h = start(settings()).await;
    let mut post = get("/echo");
    post[0].1 = "POST".into();
    h.client.request(1, &fields(&post), false).await;
    // 1,100 frames of one byte and 254 of padding: 280,500 bytes of window,
    // past the half of it that calls for an update; 1,100 of them data.
    let mut frame = vec![253u8, b'x'];
    frame.extend_from_slice(&[0; 253]);
    for _ in 0..1_100 {
        h.client.send(kind::DATA, flag::PADDED, 1, &frame).await;
    }
    loop {
        let (w, _) = h.client.until(kind::WINDOW_UPDATE).await;
        if w.stream == 1 {
            break;
        }
    }
}

#[tokio::test]
async fn refused_streams_are_not_charged_to_the_client() {
    let mut cfg = settings();
    cfg.max_streams = 1;
    cfg.max_local_resets = 2;
    let mut h = start(cfg).await;
    h.client.request(1, &fields(&get("/slow")), true).await;
    for id in (3..=21).step_by(2) {
        h.client.request(id, &fields(&get("/")), true).await;
        assert_eq!(h.client.reset_of(id).await, Reason::REFUSED_STREAM);
    }
    h.client.send(kind::PING, 0, 0, b"stillok!").await;
    let (p, payload) = h.client.until(kind::PING).await;
    assert_eq!((p.flags, payload.as_slice()), (flag::ACK, &b"stillok!"[..]));
}

#[tokio::test]
async fn answers_the_driver_gives_do_not_pay_back_resets() {
    // Resets past 4 + 8 end the connection, 431s in between or not.
    let mut h = start(settings()).await;
    let mut many = get("/");
    for i in 0..21 {
        many.push(("x-n", i.to_string()));
    }
    let mut id = 1;
    for n in 0..13 {
        h.client.request(id, &fields(&many), true).await;
        assert_eq!(h.client.response(id).await.0, 431, "request {n}");
        h.client.request(id + 2, &fields(&get("/slow")), true).await;
        h.client
            .send(kind::RST_STREAM, 0, id + 2, &[0, 0, 0, 8])
            .await;
        id += 4;
    }
    assert_eq!(h.client.goaway().await, Some(Reason::ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn random_frames_end_the_connection_or_are_served_without_a_panic() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = block(&fields(&get("/")));
    for _ in 0..300 {
        let mut h = start(settings()).await;
        let mut bytes = Vec::new();
        for _ in 0..(next() % 40) {
            let r = next();
            let kind = (r % 11) as u8;
            let flags = ((r >> 8) as u8) & 0x2d;
            let stream = ((r >> 16) % 8) as u32;
            let payload: Vec<u8> = if kind == kind::HEADERS && r >> 40 & 1 == 0 {
                valid.clone()
            } else {
                (0..(r >> 24) % 48).map(|_| next() as u8).collect()
            };
            super::frame::put_head(&mut bytes, payload.len(), kind, flags, stream);
            bytes.extend_from_slice(&payload);
        }
        h.client.io.write_all(&bytes).await.unwrap();
        drop(h.client);
        let ended = tokio::time::timeout(Duration::from_secs(5), h.ended)
            .await
            .expect("the connection outlived its client");
        assert!(ended.is_ok(), "the driver panicked");
    }
}

#[tokio::test]
async fn a_responses_trailers_end_its_stream() {
    let mut h = start(settings()).await;
    h.client.request(1, &fields(&get("/trailers")), true).await;
    let (hd, _) = h.client.until(kind::HEADERS).await;
    assert_eq!(hd.flags & flag::END_STREAM, 0);
    let (d, p) = h.client.until(kind::DATA).await;
    assert_eq!(
        (d.flags & flag::END_STREAM, p.as_slice()),
        (0, &b"body"[..])
    );
    let (t, block) = h.client.until(kind::HEADERS).await;
    assert_eq!(t.flags & flag::END_STREAM, flag::END_STREAM);
    let mut fields = Vec::new();
    h.client
        .decoder
        .decode(&block, 1 << 20, |n, v| {
            fields.push((n.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(fields, [(b"x-checksum".to_vec(), b"abc".to_vec())]);
}
