//! Device-link abuse against a real gateway: thousands of half-done
//! handshakes, garbage before the handshake, a registered device flooding
//! stream opens, a device announcing absurd windows and record sizes, a
//! device sending WebSocket messages no browser may get. Each is refused,
//! clamped or ended, and counted, and an honest device next to it stays
//! online and keeps serving browsers.
//!
//! The abusive devices are `proto` sessions driven by hand over TCP (the
//! device runtime would never misbehave like this).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::harness::{
    DOMAIN, Dev, Gw, body, close_code, device_key, empty, eventually, get, link_config,
};
use proto::wire::{HeaderList, MAX_WINDOW, MsgKind, Params, ResponseHead};
use proto::{
    Buffers, Config, Event, Hello, SecretKey, Service, ServiceKind, ServiceList, Session, StrList,
    StreamId, StreamKind, StreamSlot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    sock.connect(to).await
}

/// Whether the gateway closed `tcp` (EOF or reset) within `wait`.
async fn closed_within(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The honest device keeps answering browsers.
async fn honest_device_serves(gw: &Gw) {
    let host = format!("plc.{DOMAIN}");
    let mut browser = gw.client(1, &host).await;
    let (parts, _) = browser
        .fetch(get(1, &host, "/head").body(empty()).unwrap())
        .await;
    assert_eq!(parts.status, 200, "the honest device stopped serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_done_handshakes_are_capped_per_source_and_in_all_then_timed_out() {
    let gw = Gw::start(
        "max_handshakes = 300\nmax_handshakes_per_address = 100\nmax_handshakes_waiting = 50\nhandshake_timeout = \"6s\"\n",
        &[Dev("plc", ""), Dev("late", "")],
    )
    .await;
    // 2,000 connections from one source that never finish the handshake
    // (half of them send the first bytes of a msg1, then nothing): 100
    // get a place, 50 wait in line (in vain: the places are held until
    // the handshake timeout, longer than a wait), the rest are refused.
    let mut attack = Vec::new();
    for i in 0..2000 {
        // A connection refused at accept may already fail here (reset).
        let Ok(mut tcp) = connect_from([127, 0, 0, 3], gw.link).await else {
            continue;
        };
        if i % 2 == 0 {
            let _ = tcp.write_all(&[0x00, 0x60, 0x01, 0x02]).await;
        }
        attack.push(tcp);
    }
    eventually("the per-source cap refused the rest at once", || {
        gw.metric("gateway_link_handshakes_refused_total{reason=\"per_address_cap\"}") >= 1850.0
    })
    .await;
    assert!(gw.metric("gateway_link_handshakes_in_progress") <= 100.0);
    assert!(gw.metric("gateway_link_handshakes_waiting") <= 50.0);
    eventually("and those in line after their wait", || {
        gw.metric("gateway_link_handshakes_refused_total{reason=\"per_address_cap\"}") >= 1900.0
    })
    .await;
    assert_eq!(gw.metric("gateway_link_handshakes_waited_total"), 0.0);

    // Another source still gets in: an honest device comes online.
    let _plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;

    // Fill the global cap from two more sources.
    for from in [[127, 0, 0, 4], [127, 0, 0, 5], [127, 0, 0, 6]] {
        for _ in 0..100 {
            if let Ok(tcp) = connect_from(from, gw.link).await {
                attack.push(tcp);
            }
        }
    }
    // (100 over the cap: up to 50 wait, the rest are refused at once, and
    // those waiting when the first 100 time out take their places.)
    eventually("the global cap refused the overflow", || {
        gw.metric("gateway_link_handshakes_refused_total{reason=\"global_cap\"}") >= 45.0
    })
    .await;
    assert!(gw.metric("gateway_link_handshakes_in_progress") <= 300.0);
    // The online device never counted and is unaffected.
    honest_device_serves(&gw).await;

    // Every half-done handshake ends within handshake_timeout.
    let mut still_open = 0;
    for tcp in &mut attack {
        if !closed_within(tcp, Duration::from_secs(8)).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "half-done handshakes outlived the timeout");
    eventually("no handshake in progress", || {
        gw.metric("gateway_link_handshakes_in_progress") == 0.0
    })
    .await;
    assert!(gw.metric("gateway_link_rejections_total{reason=\"handshake_failed\"}") >= 300.0);
    // And the link takes new devices again.
    let _late = gw.echo("late", &[], link_config(4096, 16384, 1024)).await;
    honest_device_serves(&gw).await;
    gw.stop().await;
}

/// A device that connects while the cap is full waits for a place instead
/// of being reset, and gets the first one that frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_arriving_at_a_full_cap_waits_for_a_place() {
    let gw = Gw::start(
        "max_handshakes = 1\nmax_handshakes_per_address = 1\nhandshake_timeout = \"6s\"\n",
        &[Dev("plc", "")],
    )
    .await;
    // A half-done handshake holds the only place.
    let mut blocker = connect_from([127, 0, 0, 3], gw.link).await.unwrap();
    blocker.write_all(&[0x00, 0x60, 0x01]).await.unwrap();
    eventually("the blocker holds the place", || {
        gw.metric("gateway_link_handshakes_in_progress") == 1.0
    })
    .await;
    let mut device = RawDevice::connect(&gw, "plc", Config::DEVICE.params).await;
    let mut seen = Seen::default();
    device.pump(Duration::from_millis(300), &mut seen).await;
    assert!(!seen.closed, "the gateway reset the device at the full cap");
    assert_eq!(gw.metric("gateway_link_handshakes_waiting"), 1.0);
    // The place frees: the device gets it at once and comes online.
    drop(blocker);
    let freed = std::time::Instant::now();
    device.establish(&gw, "plc").await;
    assert!(
        freed.elapsed() < Duration::from_secs(2),
        "served only after {:?}",
        freed.elapsed()
    );
    assert_eq!(gw.metric("gateway_link_handshakes_waited_total"), 1.0);
    assert_eq!(gw.metric("gateway_link_handshakes_waiting"), 0.0);
    for reason in ["global_cap", "per_address_cap"] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_link_handshakes_refused_total{{reason=\"{reason}\"}}"
            )),
            0.0,
            "refused ({reason})"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_handshake_is_refused_at_once() {
    let gw = Gw::start("", &[Dev("plc", "")]).await;
    let _plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let mut garbage = vec![0u8; 4096];
    for i in 0..50 {
        for b in &mut garbage {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            *b = noise as u8;
        }
        // Some look like a plausible msg1 length, the rest like HTTP.
        if i % 2 == 1 {
            garbage[..18].copy_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        }
        let mut tcp = TcpStream::connect(gw.link).await.unwrap();
        let _ = tcp.write_all(&garbage).await;
        // Well before the 10 s handshake timeout: the gateway gave up on
        // the bytes, not on the clock.
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5)).await,
            "garbage #{i} was not refused"
        );
    }
    eventually("every garbage connection counted", || {
        gw.metric("gateway_link_rejections_total{reason=\"handshake_failed\"}") >= 50.0
    })
    .await;
    assert_eq!(gw.metric("gateway_link_handshakes_in_progress"), 0.0);
    honest_device_serves(&gw).await;
    gw.stop().await;
}

/// A device session driven by hand over TCP.
struct RawDevice {
    tcp: TcpStream,
    s: Session<Vec<u8>, Vec<StreamSlot>>,
    out: Vec<u8>,
    input: Vec<u8>,
    /// Largest unit (length prefix included) received from the gateway.
    largest_unit: usize,
    /// Bytes still to come of the current unit, and the prefix read so far.
    unit_left: usize,
    prefix: Vec<u8>,
}

/// What a pump saw.
#[derive(Default)]
struct Seen {
    connected: Option<Params>,
    opened: Vec<StreamId>,
    /// Streams whose request head arrived whole.
    heads: Vec<StreamId>,
    resets: usize,
    data: usize,
    closed: bool,
}

impl RawDevice {
    async fn connect(gw: &Gw, id: &str, params: Params) -> Self {
        let config = Config {
            params,
            ..Config::DEVICE
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let services = [Service {
            name: "web",
            kind: ServiceKind::Http,
            subprotocols: StrList::Slice(&[]),
        }];
        let hello = Hello {
            device_id: id,
            firmware: "abuser",
            params,
            max_head: 4096,
            services: ServiceList::Slice(&services),
        };
        let record = usize::from(params.max_record);
        let s = Session::device(
            config,
            device_key(id),
            gw.gateway_key,
            SecretKey::from_bytes([0x42; 32]),
            timestamp,
            &hello,
            Buffers {
                rx: vec![0u8; record],
                tx: vec![0u8; record],
                streams: vec![StreamSlot::default(); 64],
            },
            proto::Instant::from_millis(0),
        )
        .unwrap();
        let tcp = TcpStream::connect(gw.link).await.unwrap();
        Self {
            tcp,
            s,
            out: vec![0u8; record],
            input: vec![0u8; 1 << 16],
            largest_unit: 0,
            unit_left: 0,
            prefix: Vec::new(),
        }
    }

    /// Notes the unit boundaries in bytes from the gateway.
    fn frame(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.unit_left == 0 {
                self.prefix.push(b[0]);
                b = &b[1..];
                if self.prefix.len() == 2 {
                    let len = usize::from(u16::from_be_bytes([self.prefix[0], self.prefix[1]]));
                    self.largest_unit = self.largest_unit.max(len + 2);
                    self.unit_left = len;
                    self.prefix.clear();
                }
            } else {
                let k = self.unit_left.min(b.len());
                self.unit_left -= k;
                b = &b[k..];
            }
        }
    }

    /// Sends what is pending, then reads for up to `wait`.
    async fn pump(&mut self, wait: Duration, seen: &mut Seen) {
        let now = proto::Instant::from_millis(0);
        while let Some(n) = self.s.poll_transmit(now, &mut self.out) {
            if n == 0 {
                break;
            }
            if self.tcp.write_all(&self.out[..n]).await.is_err() {
                seen.closed = true;
                return;
            }
        }
        let n = match tokio::time::timeout(wait, self.tcp.read(&mut self.input)).await {
            Err(_) => return,
            Ok(Ok(0) | Err(_)) => {
                seen.closed = true;
                self.s.handle_eof();
                0
            }
            Ok(Ok(n)) => n,
        };
        let bytes = self.input[..n].to_vec();
        self.frame(&bytes);
        let mut off = 0;
        loop {
            let k = self.s.handle_input(now, &bytes[off..]);
            off += k;
            let mut any = false;
            while let Some(ev) = self.s.poll_event() {
                any = true;
                match ev {
                    Event::Connected { params, .. } => seen.connected = Some(params),
                    Event::Opened { stream, .. } => seen.opened.push(stream),
                    Event::Reset { .. } => seen.resets += 1,
                    Event::Data {
                        stream,
                        msg,
                        end_msg,
                        data,
                        ..
                    } => {
                        seen.data += data.len();
                        if msg == MsgKind::Head && end_msg {
                            seen.heads.push(stream);
                        }
                    }
                    Event::Closed(_) => seen.closed = true,
                    _ => {}
                }
            }
            if (off >= bytes.len() || k == 0) && !any {
                break;
            }
        }
    }

    async fn establish(&mut self, gw: &Gw, id: &str) -> Params {
        let mut seen = Seen::default();
        for _ in 0..200 {
            self.pump(Duration::from_millis(25), &mut seen).await;
            if gw.server().hub.device(id).is_some() {
                break;
            }
            assert!(!seen.closed, "the gateway closed {id}'s handshake");
        }
        assert!(
            gw.server().hub.device(id).is_some(),
            "{id} never came online"
        );
        seen.connected.expect("the gateway's params")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_flooding_stream_opens_is_refused_and_counted() {
    let gw = Gw::start("", &[Dev("plc", ""), Dev("flood", "")]).await;
    let _plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let mut dev = RawDevice::connect(&gw, "flood", Config::DEVICE.params).await;
    let gateway_params = dev.establish(&gw, "flood").await;
    // As fast as the session lets it, far beyond the gateway's
    // max_streams in total: every open is refused.
    const OPENS: usize = 5000;
    let mut opened = 0;
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while opened < OPENS && tokio::time::Instant::now() < deadline {
        while opened < OPENS && dev.s.open(StreamKind::Raw, 0).is_ok() {
            opened += 1;
        }
        dev.pump(Duration::from_millis(5), &mut seen).await;
        assert!(!seen.closed, "the gateway closed the session");
    }
    assert_eq!(opened, OPENS, "opens stalled");
    eventually("every open refused and counted", || {
        gw.metric("gateway_link_device_streams_refused_total") >= OPENS as f64
    })
    .await;
    assert!(
        usize::from(gateway_params.max_streams) < OPENS,
        "the test must exceed the gateway's limit"
    );
    // The flooder is still a device (its abuse cost it nothing but
    // refusals), and the honest one is unaffected.
    assert!(gw.server().hub.device("flood").is_some());
    honest_device_serves(&gw).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_device_windows_and_record_sizes_are_clamped() {
    let gw = Gw::start("", &[Dev("plc", ""), Dev("greedy", "")]).await;
    let _plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    // The largest values the wire allows.
    let absurd = Params {
        max_record: u16::MAX,
        max_streams: u16::MAX,
        stream_window: MAX_WINDOW,
        conn_window: MAX_WINDOW,
    };
    let mut dev = RawDevice::connect(&gw, "greedy", absurd).await;
    let gateway_params = dev.establish(&gw, "greedy").await;

    // A browser uploads 2 MB to it; the device never answers.
    let host = format!("greedy.{DOMAIN}");
    let upload = vec![0x5au8; 2 << 20];
    let mut browser = gw.client(1, &host).await;
    let req = common::harness::request(1, "POST", &host, "/upload")
        .body(body(upload))
        .unwrap();
    let post = tokio::spawn(async move { browser.send(req).await });
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.data < 2 << 20 && tokio::time::Instant::now() < deadline {
        dev.pump(Duration::from_millis(20), &mut seen).await;
        assert!(!seen.closed, "the gateway closed the session");
    }
    post.abort();
    assert_eq!(seen.opened.len(), 1, "one stream for one request");
    assert!(
        seen.data >= 2 << 20,
        "the upload did not arrive ({} bytes)",
        seen.data
    );
    // Records: the gateway never sent more than its own record size,
    // whatever the device said it could take.
    let own = usize::from(gateway_params.max_record);
    assert!(
        dev.largest_unit <= own,
        "a {}-byte record exceeds the gateway's {own}",
        dev.largest_unit
    );
    // The honest device is unaffected.
    honest_device_serves(&gw).await;
    gw.stop().await;
}

/// WebSocket messages from a device that no browser may get: text that is
/// not UTF-8, and a message over the gateway's `max_message`. The gateway
/// must not pass them on: the browser's WebSocket ends with 1011, the
/// device's stream is reset, each is counted by reason in
/// `gateway_websocket_device_errors_total`, and the device stays online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_messages_no_browser_may_get_end_the_websocket_and_are_counted() {
    let gw = Gw::start(
        "[websocket]\nmax_message = \"4KiB\"\nmax_frame = \"4KiB\"\n",
        &[Dev("plc", ""), Dev("liar", "")],
    )
    .await;
    let _plc = gw.echo("plc", &[], link_config(4096, 16384, 1024)).await;
    let mut dev = RawDevice::connect(&gw, "liar", Config::DEVICE.params).await;
    dev.establish(&gw, "liar").await;
    let host = format!("liar.{DOMAIN}");
    let origin = format!("https://{host}:{}", gw.addr.port());
    let headers = [("origin", origin.as_str())];
    let too_big = vec![b'x'; 6000];
    let cases: [(&str, MsgKind, &[u8]); 2] = [
        // Valid text, then a byte no UTF-8 has, in one message.
        ("utf8", MsgKind::Text, b"fine so far \xff"),
        // Over the 4 KiB limit, sent in parts as credit allows.
        ("too_big", MsgKind::Binary, &too_big),
    ];
    for (reason, kind, payload) in cases {
        let mut seen = Seen::default();
        // The browser's upgrade reaches the device as a stream with a
        // request head; the device accepts it with a 101.
        let browser = gw.ws(1, &host, "/", &headers);
        let device = async {
            let stream = loop {
                dev.pump(Duration::from_millis(20), &mut seen).await;
                assert!(!seen.closed, "the gateway closed the session");
                if let Some(s) = seen.heads.pop() {
                    break s;
                }
            };
            let mut head = [0u8; 16];
            let accept = ResponseHead {
                status: 101,
                headers: HeaderList::Slice(&[]),
            };
            let n = accept.emit(&mut head).unwrap();
            assert_eq!(
                dev.s.send(stream, MsgKind::Head, &head[..n], true, false),
                Ok(n)
            );
            dev.pump(Duration::from_millis(1), &mut seen).await;
            stream
        };
        let (ws, stream) = tokio::join!(browser, device);
        let (mut ws, _) = ws.unwrap_or_else(|r| panic!("{reason}: upgrade refused: {r:?}"));
        let mut sent = 0;
        while sent < payload.len() {
            sent += dev
                .s
                .send(stream, kind, &payload[sent..], true, false)
                .unwrap();
            dev.pump(Duration::from_millis(5), &mut seen).await;
        }
        assert_eq!(close_code(&mut ws).await, Some(1011), "{reason}");
        let series = format!("gateway_websocket_device_errors_total{{reason=\"{reason}\"}}");
        eventually(&series, || gw.metric(&series) == 1.0).await;
        // The device learns that its stream is gone.
        for _ in 0..200 {
            if seen.resets > 0 {
                break;
            }
            dev.pump(Duration::from_millis(10), &mut seen).await;
        }
        assert_eq!(seen.resets, 1, "{reason}: the stream was not reset");
        assert!(!seen.closed, "{reason}: the gateway closed the session");
    }
    // Nothing else was counted, and both devices are still serving.
    assert_eq!(
        gw.metric("gateway_websocket_device_errors_total{reason=\"protocol\"}"),
        0.0
    );
    assert!(gw.server().hub.device("liar").is_some());
    honest_device_serves(&gw).await;
    gw.stop().await;
}
