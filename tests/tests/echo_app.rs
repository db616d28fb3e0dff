//! `EchoApp` under the real device runtime (`device_fw::link::run` over
//! TCP on loopback) against a gateway-role `proto` session driven by hand:
//! every route, WebSocket echo and close, the raw service, bad heads.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, LinkConfig, run};
use proto::wire::{Header, HeaderList, RequestHead, ResponseHead};
use proto::{
    Backoff, Buffers, Code, Config, Event, Instant, MsgKind, Params, SecretKey, Session,
    StreamError, StreamId, StreamKind, StreamSlot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const GATEWAY_KEY: [u8; 32] = [0x61; 32];
const DEVICE_KEY: [u8; 32] = [0x62; 32];
/// Longest any single expectation may take.
const PATIENCE: Duration = Duration::from_secs(30);

fn now() -> Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Instant::from_millis(
        BASE.get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64,
    )
}

/// What the device sent on a stream.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Data {
        msg: MsgKind,
        end_msg: bool,
        fin: bool,
        data: Vec<u8>,
    },
    Reset(Code),
}

struct Frame {
    msg: MsgKind,
    data: Vec<u8>,
    end_msg: bool,
    fin: bool,
}

enum Cmd {
    Open(
        StreamKind,
        u8,
        oneshot::Sender<Option<(StreamId, mpsc::UnboundedReceiver<Ev>)>>,
    ),
    Send(StreamId, Frame),
    Reset(StreamId, Code),
}

/// The gateway side of one device session.
struct Peer {
    cmd: mpsc::UnboundedSender<Cmd>,
}

/// A stream the test opened.
struct Stream {
    id: StreamId,
    cmd: mpsc::UnboundedSender<Cmd>,
    rx: mpsc::UnboundedReceiver<Ev>,
}

/// A device running `EchoApp` and the gateway peer it dialed.
struct Harness {
    peer: Peer,
    requests: Arc<AtomicUsize>,
    device: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.device.abort();
    }
}

fn options() -> EchoOptions {
    EchoOptions {
        device_id: "echo-1".into(),
        firmware: "echo-test".into(),
        subprotocols: vec!["v2.echo".into(), "v1.echo".into()],
        raw_service: true,
    }
}

/// Device and peer with 1 KiB stream windows both ways.
async fn start() -> Harness {
    let small = Params {
        stream_window: 1024,
        conn_window: 1024,
        ..Config::DEVICE.params
    };
    let device = LinkConfig {
        session: Config {
            params: small,
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    };
    let gateway = Params {
        stream_window: 1024,
        conn_window: 4096,
        ..Config::GATEWAY.params
    };
    start_with(options(), device, gateway).await
}

async fn start_with(opts: EchoOptions, config: LinkConfig, gateway: Params) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut app = EchoApp::new(opts);
    let requests = app.requests();
    let device = tokio::spawn(async move {
        let mut platform = TokioPlatform::new(addr);
        let identity = Identity {
            key: SecretKey::from_bytes(DEVICE_KEY),
            gateway: SecretKey::from_bytes(GATEWAY_KEY).public_key(),
        };
        let mut mem = Box::new(DeviceLinkMemory::new());
        run(&mut platform, &mut app, &identity, &config, &mut mem).await;
    });
    let (sock, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the device dials")
        .unwrap();
    let (cmd, rx) = mpsc::unbounded_channel();
    let (up_tx, up) = oneshot::channel();
    tokio::spawn(serve(sock, gateway, rx, up_tx));
    let hello = tokio::time::timeout(PATIENCE, up)
        .await
        .expect("HELLO in time")
        .expect("session up");
    assert_eq!(
        hello,
        vec![
            ("web".to_string(), vec!["v2.echo".into(), "v1.echo".into()]),
            ("raw".to_string(), vec![])
        ]
    );
    Harness {
        peer: Peer { cmd },
        requests,
        device,
    }
}

type Services = Vec<(String, Vec<String>)>;

/// Drives the gateway-role session: forwards what the device sends to the
/// stream's channel (consuming it at once) and sends the test's frames
/// within credit.
async fn serve(
    mut sock: TcpStream,
    params: Params,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    up: oneshot::Sender<Services>,
) {
    let _ = sock.set_nodelay(true);
    let cfg = Config {
        params,
        ..Config::GATEWAY
    };
    let mut eph = [0u8; 32];
    getrandom::fill(&mut eph).unwrap();
    let buffers = Buffers {
        rx: vec![0u8; usize::from(params.max_record)],
        tx: vec![0u8; usize::from(params.max_record)],
        streams: vec![StreamSlot::default(); 16],
    };
    let mut s = Session::gateway(
        cfg,
        SecretKey::from_bytes(GATEWAY_KEY),
        SecretKey::from_bytes(eph),
        buffers,
        now(),
    )
    .unwrap();
    let mut up = Some(up);
    let mut streams: HashMap<StreamId, mpsc::UnboundedSender<Ev>> = HashMap::new();
    let mut pending: HashMap<StreamId, VecDeque<Frame>> = HashMap::new();
    let mut out = vec![0u8; 70_000];
    let mut input = vec![0u8; 16_384];
    loop {
        // Stage frames and write records until neither makes progress.
        loop {
            let mut progress = false;
            for (id, q) in pending.iter_mut() {
                while let Some(f) = q.front_mut() {
                    match s.send(*id, f.msg, &f.data, f.end_msg, f.fin) {
                        Ok(n) if n == f.data.len() => {
                            q.pop_front();
                            progress = true;
                        }
                        Ok(n) => {
                            f.data.drain(..n);
                            progress |= n > 0;
                            break;
                        }
                        Err(StreamError::Blocked) => break,
                        Err(_) => {
                            q.clear();
                            break;
                        }
                    }
                }
            }
            pending.retain(|_, q| !q.is_empty());
            let mut wrote = false;
            while let Some(n) = s.poll_transmit(now(), &mut out) {
                if sock.write_all(&out[..n]).await.is_err() {
                    s.handle_eof();
                    break;
                }
                wrote = true;
            }
            if !progress && !wrote {
                break;
            }
        }
        if s.is_closed() {
            return;
        }
        let wait = s.poll_timeout().map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(t.as_millis().saturating_sub(now().as_millis()))
        });
        tokio::select! {
            r = sock.read(&mut input) => {
                let n = match r { Ok(0) | Err(_) => { s.handle_eof(); 0 } Ok(n) => n };
                let mut off = 0;
                loop {
                    let k = s.handle_input(now(), &input[off..n]);
                    off += k;
                    let mut any = false;
                    while let Some(ev) = s.poll_event() {
                        any = true;
                        match ev {
                            Event::Authenticate { .. } => {
                                let _ = s.accept();
                            }
                            Event::Hello(h) => {
                                let services = h
                                    .services
                                    .iter()
                                    .map(|x| {
                                        (x.name.to_string(), x.subprotocols.iter().map(String::from).collect())
                                    })
                                    .collect();
                                if let Some(up) = up.take() {
                                    let _ = up.send(services);
                                }
                            }
                            Event::Data { stream, msg, end_msg, fin, data } => {
                                let n = data.len();
                                if let Some(tx) = streams.get(&stream) {
                                    let _ = tx.send(Ev::Data { msg, end_msg, fin, data: data.to_vec() });
                                }
                                s.consume(stream, n);
                            }
                            Event::Reset { stream, code, .. } => {
                                if let Some(tx) = streams.remove(&stream) {
                                    let _ = tx.send(Ev::Reset(code));
                                }
                                pending.remove(&stream);
                            }
                            _ => {}
                        }
                    }
                    if (off >= n || k == 0) && !any { break; }
                }
            }
            c = cmds.recv() => match c {
                Some(Cmd::Open(kind, service, reply)) => {
                    let opened = s.open(kind, service).ok().map(|id| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        streams.insert(id, tx);
                        (id, rx)
                    });
                    let _ = reply.send(opened);
                }
                Some(Cmd::Send(id, f)) => pending.entry(id).or_default().push_back(f),
                Some(Cmd::Reset(id, code)) => {
                    pending.remove(&id);
                    streams.remove(&id);
                    let _ = s.reset(id, code);
                }
                None => return,
            },
            _ = tokio::time::sleep(wait) => s.handle_timeout(now()),
        }
    }
}

impl Peer {
    async fn open(&self, kind: StreamKind, service: u8) -> Stream {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Open(kind, service, tx)).unwrap();
        let (id, rx) = rx.await.unwrap().expect("stream opens");
        Stream {
            id,
            cmd: self.cmd.clone(),
            rx,
        }
    }

    /// An Http stream with its request head sent.
    async fn request(&self, method: &str, target: &str, fin: bool) -> Stream {
        let s = self.open(StreamKind::Http, 0).await;
        s.head(method, target, &[], fin);
        s
    }
}

fn encode(method: &str, target: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let headers: Vec<Header<'_>> = headers
        .iter()
        .map(|&(name, value)| Header { name, value })
        .collect();
    let h = RequestHead {
        method,
        target,
        headers: HeaderList::Slice(&headers),
    };
    let mut b = vec![0u8; h.buffer_len()];
    let n = h.emit(&mut b).unwrap();
    b.truncate(n);
    b
}

/// A response as the test reads it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Stream {
    fn send(&self, msg: MsgKind, data: &[u8], end_msg: bool, fin: bool) {
        let f = Frame {
            msg,
            data: data.to_vec(),
            end_msg,
            fin,
        };
        self.cmd.send(Cmd::Send(self.id, f)).unwrap();
    }

    fn head(&self, method: &str, target: &str, headers: &[(&str, &[u8])], fin: bool) {
        self.send(MsgKind::Head, &encode(method, target, headers), true, fin);
    }

    /// Sends `data` in frames of at most `chunk` bytes.
    fn send_chunked(&self, msg: MsgKind, data: &[u8], chunk: usize, end_msg: bool, fin: bool) {
        let parts: Vec<&[u8]> = data.chunks(chunk).collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            self.send(msg, part, end_msg && last, fin && last);
        }
    }

    fn reset(&self, code: Code) {
        self.cmd.send(Cmd::Reset(self.id, code)).unwrap();
    }

    async fn next(&mut self) -> Ev {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("the device answers in time")
            .expect("stream channel open")
    }

    /// Reads the response head.
    async fn response(&mut self) -> (Response, bool) {
        let mut buf = Vec::new();
        loop {
            match self.next().await {
                Ev::Data {
                    msg: MsgKind::Head,
                    end_msg,
                    fin,
                    data,
                } => {
                    buf.extend_from_slice(&data);
                    if end_msg {
                        let h = ResponseHead::parse(&buf).expect("response head decodes");
                        let headers = h
                            .headers
                            .iter()
                            .map(|x| {
                                (
                                    x.name.to_string(),
                                    String::from_utf8(x.value.to_vec()).unwrap(),
                                )
                            })
                            .collect();
                        let r = Response {
                            status: h.status,
                            headers,
                        };
                        return (r, fin);
                    }
                    assert!(!fin, "FIN inside the response head");
                }
                other => panic!("expected a response head, got {other:?}"),
            }
        }
    }

    /// Reads body bytes up to FIN.
    async fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            match self.next().await {
                Ev::Data {
                    msg: MsgKind::Bytes,
                    fin,
                    data,
                    ..
                } => {
                    body.extend_from_slice(&data);
                    if fin {
                        return body;
                    }
                }
                other => panic!("expected body bytes, got {other:?}"),
            }
        }
    }

    /// Reads a whole response: head, then the body unless FIN came with it.
    async fn full(&mut self) -> (Response, Vec<u8>) {
        let (r, fin) = self.response().await;
        let body = if fin { Vec::new() } else { self.body().await };
        (r, body)
    }

    /// Reads one WebSocket message: its kind, payload and whether FIN ended it.
    async fn message(&mut self) -> (MsgKind, Vec<u8>, bool) {
        let mut kind = None;
        let mut payload = Vec::new();
        loop {
            match self.next().await {
                Ev::Data {
                    msg,
                    end_msg,
                    fin,
                    data,
                } => {
                    assert!(
                        matches!(msg, MsgKind::Text | MsgKind::Binary | MsgKind::WsClose),
                        "not a message frame: {msg:?}"
                    );
                    assert_eq!(*kind.get_or_insert(msg), msg, "messages interleaved");
                    payload.extend_from_slice(&data);
                    if end_msg {
                        return (msg, payload, fin);
                    }
                    assert!(!fin, "FIN inside a message");
                }
                Ev::Reset(code) => panic!("stream reset with {code:?}"),
            }
        }
    }

    /// Nothing arrives for `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(ev) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("expected silence, got {ev:?}");
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Bytes that do not repeat with the `/bytes` pattern's period.
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_a_megabyte_back_through_1k_windows() {
    let h = start().await;
    let mut s = h.peer.request("POST", "/echo?ignored=1", false).await;
    let body = noise(1_000_000, 7);
    s.send_chunked(MsgKind::Bytes, &body, 16 * 1024, false, true);
    let (r, fin) = s.response().await;
    assert!(!fin);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-length"), None);
    let back = s.body().await;
    assert_eq!(back.len(), body.len());
    assert!(back == body, "echoed body differs");
    assert_eq!(h.requests.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_of_an_empty_body_is_an_empty_body() {
    let h = start().await;
    let mut s = h.peer.request("GET", "/echo", true).await;
    let (r, body) = s.full().await;
    assert_eq!(r.status, 200);
    assert!(body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sends_three_million_of_the_pattern() {
    let h = start().await;
    let mut s = h.peer.request("GET", "/bytes?n=3000000", true).await;
    let (r, body) = s.full().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert_eq!(body.len(), 3_000_000);
    assert!(body == pattern(3_000_000), "pattern differs");

    let mut s = h.peer.request("GET", "/bytes?x=1&n=0", true).await;
    let (r, body) = s.full().await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    assert!(body.is_empty());

    let mut s = h.peer.request("GET", "/bytes?n=many", true).await;
    assert_eq!(s.full().await.0.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_counts_and_sums_the_body() {
    let h = start().await;
    let body = noise(300_000, 99);
    let sum = body.iter().map(|&b| u64::from(b)).sum::<u64>();
    let mut s = h.peer.request("PUT", "/upload", false).await;
    s.send_chunked(MsgKind::Bytes, &body, 10_000, false, true);
    let (r, got) = s.full().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let want = format!("{{\"bytes\":300000,\"sum\":{sum}}}");
    assert_eq!(String::from_utf8(got).unwrap(), want);
    assert_eq!(
        r.header("content-length"),
        Some(want.len().to_string().as_str())
    );

    let mut s = h.peer.request("POST", "/upload", true).await;
    let (_, got) = s.full().await;
    assert_eq!(got, b"{\"bytes\":0,\"sum\":0}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reports_the_request_as_received() {
    let h = start().await;
    let mut s = h.peer.open(StreamKind::Http, 0).await;
    s.head(
        "GET",
        "/head?x=1",
        &[
            ("host", b"echo-1.devices.test"),
            ("origin", b"https://app.test"),
            ("x-odd", b"say \"hi\"\\\tthere"),
            ("x-utf8", "caf\u{e9}".as_bytes()),
            ("host", b"second"),
        ],
        true,
    );
    let (r, body) = s.full().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let want = concat!(
        r#"{"method":"GET","target":"/head?x=1","headers":["#,
        r#"["host","echo-1.devices.test"],["origin","https://app.test"],"#,
        r#"["x-odd","say \"hi\"\\\u0009there"],["x-utf8","café"],["host","second"]]}"#
    );
    assert_eq!(String::from_utf8(body).unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_not_found_answer_before_the_body_ends() {
    let h = start().await;
    // The body has not arrived when the answer goes out; it is discarded after.
    let mut s = h.peer.request("POST", "/status/418", false).await;
    let (r, body) = s.full().await;
    assert_eq!(r.status, 418);
    assert_eq!(body, b"status 418");
    s.send_chunked(MsgKind::Bytes, &noise(20_000, 3), 4096, false, true);

    let mut s = h.peer.request("GET", "/no/such/thing?q=1", false).await;
    let (r, body) = s.full().await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(String::from_utf8(body).unwrap().contains("/no/such/thing"));
    s.send(MsgKind::Bytes, b"late", false, true);

    let mut s = h.peer.request("GET", "/status/204", true).await;
    let (r, body) = s.full().await;
    assert_eq!((r.status, body.len()), (204, 0));

    let mut s = h.peer.request("GET", "/status/42", true).await;
    assert_eq!(s.full().await.0.status, 400);
    assert_eq!(h.requests.load(Ordering::Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_never_answers_and_is_forgotten_on_reset() {
    let h = start().await;
    // More than the device's 4 streams, one after another: each reset frees its slot.
    for _ in 0..6 {
        let mut s = h.peer.request("GET", "/slow", true).await;
        s.quiet(Duration::from_millis(100)).await;
        s.reset(Code::CANCEL);
    }
    let mut s = h.peer.request("GET", "/status/200", true).await;
    assert_eq!(s.full().await.1, b"status 200");
    assert_eq!(h.requests.load(Ordering::Relaxed), 7);
}

async fn websocket(h: &Harness, target: &str, protocols: Option<&str>) -> (Stream, Response) {
    let mut s = h.peer.open(StreamKind::WebSocket, 0).await;
    let mut headers: Vec<(&str, &[u8])> = vec![("upgrade", b"websocket")];
    if let Some(p) = protocols {
        headers.push(("sec-websocket-protocol", p.as_bytes()));
    }
    s.head("GET", target, &headers, false);
    let (r, fin) = s.response().await;
    assert!(!fin || r.status != 101);
    (s, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_picks_the_first_supported_subprotocol() {
    let h = start().await;
    let (_s, r) = websocket(&h, "/ws", Some("chat, v1.echo ,v2.echo")).await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), Some("v1.echo"));

    let (_s, r) = websocket(&h, "/ws?x", Some("chat")).await;
    assert_eq!(r.status, 101);
    assert_eq!(r.header("sec-websocket-protocol"), None);

    let (_s, r) = websocket(&h, "/ws", None).await;
    assert_eq!(r.status, 101);
    assert!(r.headers.is_empty());

    let mut s = h.peer.open(StreamKind::WebSocket, 0).await;
    s.head("GET", "/ws-refuse", &[("upgrade", b"websocket")], false);
    let (r, body) = s.full().await;
    assert_eq!(r.status, 403);
    assert!(!body.is_empty());
    assert_eq!(h.requests.load(Ordering::Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_text_and_binary_messages_of_100k() {
    let h = start().await;
    let (mut s, r) = websocket(&h, "/ws", Some("v2.echo")).await;
    assert_eq!(r.status, 101);
    let text: Vec<u8> = (0..100_000).map(|i| b'a' + (i % 26) as u8).collect();
    let binary = noise(100_000, 42);
    s.send_chunked(MsgKind::Text, &text, 7_000, true, false);
    s.send_chunked(MsgKind::Binary, &binary, 9_000, true, false);
    s.send(MsgKind::Text, b"clo", true, false);
    s.send_chunked(MsgKind::Text, b"close:nope", 4, true, false);
    let (kind, got, fin) = s.message().await;
    assert_eq!((kind, got.len(), fin), (MsgKind::Text, text.len(), false));
    assert!(got == text);
    let (kind, got, fin) = s.message().await;
    assert_eq!((kind, fin), (MsgKind::Binary, false));
    assert!(got == binary);
    assert_eq!(s.message().await, (MsgKind::Text, b"clo".to_vec(), false));
    assert_eq!(
        s.message().await,
        (MsgKind::Text, b"close:nope".to_vec(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_close_is_echoed_with_fin() {
    let h = start().await;
    let (mut s, _) = websocket(&h, "/ws", None).await;
    s.send(MsgKind::Text, b"hi", true, false);
    s.send(MsgKind::WsClose, &[0x03, 0xe8], false, false);
    s.send(MsgKind::WsClose, b"bye", true, true);
    assert_eq!(s.message().await, (MsgKind::Text, b"hi".to_vec(), false));
    assert_eq!(
        s.message().await,
        (MsgKind::WsClose, b"\x03\xe8bye".to_vec(), true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_command_makes_the_device_close() {
    let h = start().await;
    let (mut s, _) = websocket(&h, "/ws", None).await;
    s.send(MsgKind::Text, b"close:40", false, false);
    s.send(MsgKind::Text, b"01:bye", true, false);
    assert_eq!(
        s.message().await,
        (MsgKind::WsClose, b"\x0f\xa1bye".to_vec(), true)
    );
    // The gateway's answering close, then its FIN: nothing more comes back.
    s.send(MsgKind::WsClose, b"\x0f\xa1bye", true, true);
    s.quiet(Duration::from_millis(200)).await;
    // The stream is gone on both sides: another one still works.
    let (mut s, _) = websocket(&h, "/ws", None).await;
    s.send(MsgKind::Binary, b"\x00\x01", true, false);
    assert_eq!(s.message().await, (MsgKind::Binary, vec![0, 1], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_service_echoes_bytes_and_answers_fin() {
    let h = start().await;
    let mut s = h.peer.open(StreamKind::Raw, 1).await;
    let data = noise(200_000, 5);
    s.send_chunked(MsgKind::Bytes, &data, 3_000, false, true);
    let back = s.body().await;
    assert!(back == data, "raw echo differs");
    assert_eq!(h.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_resets_the_stream() {
    let h = start().await;
    // A head that does not decode.
    let mut s = h.peer.open(StreamKind::Http, 0).await;
    s.send(MsgKind::Head, b"\x03GET\x00\x05nope", true, false);
    assert_eq!(s.next().await, Ev::Reset(Code::PROTOCOL));
    // A head in two parts, cut short by FIN.
    let mut s = h.peer.open(StreamKind::Http, 0).await;
    let head = encode("GET", "/status/200", &[]);
    s.send(MsgKind::Head, &head[..4], false, false);
    s.send(MsgKind::Head, &head[4..], false, true);
    assert_eq!(s.next().await, Ev::Reset(Code::PROTOCOL));
    // A head over 8 KiB.
    let mut s = h.peer.open(StreamKind::WebSocket, 0).await;
    let big = "x".repeat(9000);
    let head = encode("GET", "/ws", &[("x-big", big.as_bytes())]);
    s.send_chunked(MsgKind::Head, &head, 1000, true, false);
    assert_eq!(s.next().await, Ev::Reset(Code::PROTOCOL));
    // Wrong kind for the service, and no such service.
    let mut s = h.peer.open(StreamKind::Raw, 0).await;
    assert_eq!(s.next().await, Ev::Reset(Code::UNKNOWN_SERVICE));
    let mut s = h.peer.open(StreamKind::Http, 2).await;
    assert_eq!(s.next().await, Ev::Reset(Code::UNKNOWN_SERVICE));
    // A head split over frames still works after all that.
    let mut s = h.peer.open(StreamKind::Http, 0).await;
    let head = encode("GET", "/status/201", &[]);
    s.send_chunked(MsgKind::Head, &head, 3, true, true);
    assert_eq!(s.full().await.1, b"status 201");
    assert_eq!(h.requests.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_raw_option_only_web_is_announced() {
    let opts = EchoOptions {
        subprotocols: vec!["bad protocol".into(), "ok".into()],
        raw_service: false,
        ..options()
    };
    let listener_cfg = LinkConfig::DEFAULT;
    // `start_with` checks the announcement of `options()`; check this one by hand.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut app = EchoApp::new(opts);
    let device = tokio::spawn(async move {
        let mut platform = TokioPlatform::new(addr);
        let identity = Identity {
            key: SecretKey::from_bytes(DEVICE_KEY),
            gateway: SecretKey::from_bytes(GATEWAY_KEY).public_key(),
        };
        let mut mem = Box::new(DeviceLinkMemory::new());
        run(&mut platform, &mut app, &identity, &listener_cfg, &mut mem).await;
    });
    let (sock, _) = listener.accept().await.unwrap();
    let (cmd, rx) = mpsc::unbounded_channel();
    let (up_tx, up) = oneshot::channel();
    tokio::spawn(serve(sock, Config::GATEWAY.params, rx, up_tx));
    let hello = tokio::time::timeout(PATIENCE, up).await.unwrap().unwrap();
    assert_eq!(hello, vec![("web".to_string(), vec!["ok".to_string()])]);
    let peer = Peer { cmd };
    let mut s = peer.open(StreamKind::Raw, 1).await;
    assert_eq!(s.next().await, Ev::Reset(Code::UNKNOWN_SERVICE));
    device.abort();
}
