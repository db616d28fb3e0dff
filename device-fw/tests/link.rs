//! The link runtime and the sample application against a gateway-role
//! session, over in-memory pipes on tokio's paused clock.

mod common;

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use device_fw::app::Controller;
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use proto::wire::{Params, ResponseHead};
use proto::{Code, Config, MsgKind, SecretKey, StreamId, StreamKind};
use tokio::sync::mpsc;
use tokio::time::timeout;

struct Harness {
    events: mpsc::UnboundedReceiver<Gw>,
    cmds: mpsc::UnboundedSender<Cmd>,
    up: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<u64>>>,
    board: TestBoard,
    writes: Arc<Mutex<Vec<usize>>>,
}

fn start(gateway: Config, last_timestamp: u64, up: bool) -> Harness {
    start_with::<1024>(gateway, last_timestamp, up)
}

/// A device with 1 KiB records whose socket-facing buffers hold `IO`
/// bytes.
fn start_with<const IO: usize>(gateway: Config, last_timestamp: u64, up: bool) -> Harness {
    let _ = env_logger::builder().is_test(true).try_init();
    let (dial_tx, dial_rx) = mpsc::unbounded_channel();
    let policy = Policy {
        config: gateway,
        last_timestamp: Arc::new(Mutex::new(last_timestamp)),
    };
    let (events, cmds) = spawn_gateway(dial_rx, policy);
    let up = Arc::new(AtomicBool::new(up));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let board = TestBoard::default();
    board.temp.store(2345, Ordering::SeqCst);
    let mut net = TestNet {
        dials: dial_tx,
        up: up.clone(),
        attempts: attempts.clone(),
        pipe_size: 4096,
        clock: 7,
        writes: writes.clone(),
    };
    let b = board.clone();
    tokio::spawn(async move {
        let mut app = Controller::new(b, "plc-7", "1.0.0");
        let identity = Identity {
            key: SecretKey::from_bytes(DEVICE_KEY),
            gateway: SecretKey::from_bytes(GATEWAY_KEY).public_key(),
        };
        let mut mem = Box::new(LinkMemory::<1024, 4, IO>::new());
        run(
            &mut net,
            &mut app,
            &identity,
            &LinkConfig::DEFAULT,
            &mut mem,
        )
        .await;
    });
    Harness {
        events,
        cmds,
        up,
        attempts,
        board,
        writes,
    }
}

impl Harness {
    async fn next(&mut self) -> Gw {
        let e = timeout(Duration::from_secs(120), self.events.recv())
            .await
            .expect("gateway event in time")
            .expect("gateway alive");
        if std::env::var("DEBUG_GW").is_ok() {
            eprintln!("{e:?}");
        }
        e
    }

    async fn until_hello(&mut self) {
        loop {
            if let Gw::Hello { device_id } = self.next().await {
                assert_eq!(device_id, "plc-7");
                return;
            }
        }
    }

    async fn open(&mut self, kind: StreamKind) -> StreamId {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmds.send(Cmd::Open(kind, 0, tx)).unwrap();
        rx.await.unwrap()
    }

    fn send(&self, id: StreamId, msg: MsgKind, data: &[u8], end: bool, fin: bool) {
        self.cmds
            .send(Cmd::Send(id, msg, data.to_vec(), end, fin))
            .unwrap();
    }

    /// Reads the response head (status, headers) on `id`.
    async fn head(&mut self, id: StreamId) -> (u16, Vec<(String, String)>, bool) {
        let mut head = Vec::new();
        loop {
            match self.next().await {
                Gw::Data {
                    stream,
                    msg: MsgKind::Head,
                    end_msg,
                    fin,
                    data,
                } if stream == id => {
                    head.extend_from_slice(&data);
                    if end_msg {
                        let h = ResponseHead::parse(&head).expect("valid response head");
                        let hs = h
                            .headers
                            .iter()
                            .map(|x| {
                                (
                                    x.name.to_string(),
                                    String::from_utf8_lossy(x.value).into_owned(),
                                )
                            })
                            .collect();
                        return (h.status, hs, fin);
                    }
                }
                Gw::Reset { stream, code } if stream == id => panic!("stream reset: {code}"),
                _ => {}
            }
        }
    }

    async fn body(&mut self, id: StreamId) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            match self.next().await {
                Gw::Data {
                    stream,
                    msg: MsgKind::Bytes,
                    fin,
                    data,
                    ..
                } if stream == id => {
                    body.extend_from_slice(&data);
                    if fin {
                        return body;
                    }
                }
                _ => {}
            }
        }
    }

    async fn http(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let id = self.open(StreamKind::Http).await;
        self.send(
            id,
            MsgKind::Head,
            &request(method, target, headers),
            true,
            body.is_empty(),
        );
        if !body.is_empty() {
            self.send(id, MsgKind::Bytes, body, false, true);
        }
        let (status, hs, fin) = self.head(id).await;
        let body = if fin { Vec::new() } else { self.body(id).await };
        (status, hs, body)
    }
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test(start_paused = true)]
async fn serves_the_page_status_and_commands() {
    let mut h = start(Config::GATEWAY, 0, true);
    h.until_hello().await;

    let (status, hs, body) = h
        .http("GET", "/", &[("accept-encoding", "gzip, br")], b"")
        .await;
    assert_eq!(status, 200);
    assert_eq!(header(&hs, "content-encoding"), Some("gzip"));
    assert_eq!(
        header(&hs, "content-length").map(|v| v.parse::<usize>().unwrap()),
        Some(body.len())
    );
    let mut page = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut page)
        .unwrap();
    assert_eq!(page, include_str!("../ui/index.html"));
    let etag = header(&hs, "etag").unwrap().to_string();

    let (status, _, body) = h.http("GET", "/", &[("if-none-match", &etag)], b"").await;
    assert_eq!((status, body.len()), (304, 0));
    let (status, hs, body) = h.http("GET", "/index.html", &[], b"").await;
    assert_eq!(
        (status, header(&hs, "content-encoding")),
        (200, Some("identity"))
    );
    assert_eq!(body, include_bytes!("../ui/index.html"));

    let (status, hs, body) = h.http("GET", "/api/status", &[], b"").await;
    assert_eq!(
        (status, header(&hs, "content-type")),
        (200, Some("application/json"))
    );
    let json = String::from_utf8(body).unwrap();
    assert!(
        json.contains("\"device\":\"plc-7\"") && json.contains("\"temp\":2345"),
        "{json}"
    );

    let (status, _, body) = h.http("POST", "/api/led/1", &[], b"on").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(h.board.leds.lock().unwrap()[1]);
    let (status, _, _) = h.http("POST", "/api/setpoint", &[], b"2500").await;
    assert_eq!(status, 200);
    assert_eq!(h.board.setpoint.load(Ordering::SeqCst), 2500);
    let (status, _, body) = h.http("POST", "/api/setpoint", &[], b"99999").await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("out of range"));
    assert_eq!(h.http("POST", "/api/led/9", &[], b"on").await.0, 400);
    assert_eq!(h.http("GET", "/nope", &[], b"").await.0, 404);
    let (status, hs, _) = h.http("DELETE", "/", &[], b"").await;
    assert_eq!((status, header(&hs, "allow")), (405, Some("GET, HEAD")));
    let big = "x".repeat(600);
    assert_eq!(h.http("GET", "/", &[("x-big", &big)], b"").await.0, 431);
    assert_eq!(
        h.http("POST", "/api/setpoint", &[], &[b'1'; 200]).await.0,
        413
    );
}

#[tokio::test(start_paused = true)]
async fn websocket_readings_and_commands() {
    let mut h = start(Config::GATEWAY, 0, true);
    h.until_hello().await;
    let id = h.open(StreamKind::WebSocket).await;
    h.send(
        id,
        MsgKind::Head,
        &request(
            "GET",
            "/ws",
            &[("sec-websocket-protocol", "chat, readings.v1")],
        ),
        true,
        false,
    );
    let (status, hs, fin) = h.head(id).await;
    assert_eq!(
        (status, header(&hs, "sec-websocket-protocol"), fin),
        (101, Some("readings.v1"), false)
    );
    let start = tokio::time::Instant::now();
    let mut readings = 0;
    while start.elapsed() < Duration::from_secs(1) {
        if let Gw::Data {
            stream,
            msg: MsgKind::Text,
            end_msg: true,
            data,
            ..
        } = h.next().await
        {
            assert_eq!(stream, id);
            assert!(
                String::from_utf8(data)
                    .unwrap()
                    .starts_with("{\"device\":\"plc-7\"")
            );
            readings += 1;
        }
    }
    assert!((9..=11).contains(&readings), "about 10 Hz, got {readings}");
    h.send(id, MsgKind::Text, b"led 2 on", true, false);
    h.send(id, MsgKind::Text, b"setpoint 1800", true, false);
    h.send(id, MsgKind::Text, b"self-destruct", true, false);
    let mut error_seen = false;
    for _ in 0..100 {
        if let Gw::Data {
            msg: MsgKind::Text,
            data,
            ..
        } = h.next().await
        {
            error_seen |= String::from_utf8_lossy(&data).contains("unknown command");
        }
        if error_seen {
            break;
        }
    }
    assert!(
        error_seen,
        "a bad command is answered with an error message"
    );
    assert!(h.board.leds.lock().unwrap()[2]);
    assert_eq!(h.board.setpoint.load(Ordering::SeqCst), 1800);
    h.send(id, MsgKind::WsClose, &[0x03, 0xe8], true, true);
    loop {
        if let Gw::Data {
            stream,
            msg: MsgKind::WsClose,
            fin,
            data,
            ..
        } = h.next().await
        {
            assert_eq!((stream, fin, data), (id, true, vec![0x03, 0xe8]));
            break;
        }
    }
}

/// The page, fetched with room for one record per write (a board's
/// buffers) and with room for four (a host's): the same bytes arrive,
/// and only the larger buffer carries several records in one write.
#[tokio::test(start_paused = true)]
async fn records_share_a_write_only_where_the_buffer_holds_several() {
    let page = include_bytes!("../ui/index.html");
    let mut most = Vec::new();
    for batched in [false, true] {
        let mut h = if batched {
            start_with::<4096>(Config::GATEWAY, 0, true)
        } else {
            start(Config::GATEWAY, 0, true)
        };
        h.until_hello().await;
        let (status, _, body) = h.http("GET", "/index.html", &[], b"").await;
        assert_eq!(status, 200);
        assert_eq!(body, page, "the page, whole");
        most.push(h.writes.lock().unwrap().iter().copied().max().unwrap());
    }
    assert!(most[0] <= 1024, "one record per write: {} bytes", most[0]);
    assert!(
        most[1] > 1024 && most[1] <= 4096,
        "several records per write: {} bytes",
        most[1]
    );
}

#[tokio::test(start_paused = true)]
async fn device_never_exceeds_the_credit_it_was_given() {
    let small = Config {
        params: Params {
            max_record: 600,
            max_streams: 4,
            stream_window: 700,
            conn_window: 900,
        },
        ..Config::GATEWAY
    };
    let mut h = start(small, 0, true);
    h.until_hello().await;
    h.cmds.send(Cmd::Hold(true)).unwrap();
    let id = h.open(StreamKind::Http).await;
    h.send(
        id,
        MsgKind::Head,
        &request("GET", "/index.html", &[]),
        true,
        true,
    );
    let mut received = 0;
    while let Ok(Some(ev)) = timeout(Duration::from_secs(5), h.events.recv()).await {
        if let Gw::Data { data, .. } = ev {
            received += data.len();
        }
    }
    // Had the device sent more, the gateway session would have closed with FLOW_CONTROL.
    assert!(received > 0 && received <= 700, "held {received} bytes");
    h.cmds.send(Cmd::Hold(false)).unwrap();
    let body = h.body(id).await;
    assert!(body.len() + received >= include_bytes!("../ui/index.html").len());
}

#[tokio::test(start_paused = true)]
async fn reconnects_after_the_link_drops() {
    let mut h = start(Config::GATEWAY, 0, true);
    h.until_hello().await;
    let t0 = tokio::time::Instant::now();
    h.cmds.send(Cmd::Kill).unwrap();
    h.until_hello().await;
    // A short session counts as a failure: the first delay is at most 1 s.
    assert!(
        t0.elapsed() <= Duration::from_millis(1100),
        "{:?}",
        t0.elapsed()
    );
    let (status, _, _) = h.http("GET", "/api/status", &[], b"").await;
    assert_eq!(status, 200);
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_its_bounds() {
    let h = start(Config::GATEWAY, 0, false);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let attempts = h.attempts.lock().unwrap().clone();
    assert!(attempts.len() >= 10, "{attempts:?}");
    for (k, w) in attempts.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let ceiling = (1000u64 << k.min(16)).min(60_000);
        assert!(
            (100..=ceiling + 5).contains(&gap),
            "gap {k}: {gap} ms (ceiling {ceiling})"
        );
    }
    // It keeps trying, never faster than the floor, never slower than the cap.
    assert!(attempts.windows(2).skip(7).all(|w| w[1] - w[0] <= 60_005));
    h.up.store(true, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn goaway_drains_then_the_device_comes_back() {
    let mut h = start(Config::GATEWAY, 0, true);
    h.until_hello().await;
    let id = h.open(StreamKind::WebSocket).await;
    h.send(id, MsgKind::Head, &request("GET", "/ws", &[]), true, false);
    assert_eq!(h.head(id).await.0, 101);
    h.cmds.send(Cmd::GoAway).unwrap();
    // The open WebSocket keeps working while draining.
    let mut more = 0;
    while more < 3 {
        if let Gw::Data {
            msg: MsgKind::Text, ..
        } = h.next().await
        {
            more += 1;
        }
    }
    h.send(id, MsgKind::WsClose, &[0x03, 0xe9], true, true);
    loop {
        match h.next().await {
            Gw::Closed(r) => {
                assert_eq!(r, proto::CloseReason::Local(Code::SHUTDOWN));
                break;
            }
            Gw::Reset { .. } => panic!("no resets while draining"),
            _ => {}
        }
    }
    h.until_hello().await;
}

#[tokio::test(start_paused = true)]
async fn stale_timestamp_is_recovered_from() {
    let mut h = start(Config::GATEWAY, 5_000_000, true);
    let mut seen = Vec::new();
    loop {
        match h.next().await {
            Gw::Authenticated { timestamp, .. } => seen.push(timestamp),
            Gw::Hello { .. } => break,
            _ => {}
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0] <= 5_000_000 && seen[1] > 5_000_000, "{seen:?}");
}
