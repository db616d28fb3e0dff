//! Hostile and broken peers: each case ends in a typed error or a defined
//! reset, never a panic, and never disturbs what it must not.

mod common;

use common::raw::{RawDevice, drain, feed, msg1};
use common::*;
use proto::code::Code;
use proto::wire::{FrameRepr, InitPayload, Status};
use proto::{CloseReason, Config, Instant, MsgKind, SessionError, StreamId, StreamKind};

fn init(ts: u64) -> InitPayload {
    InitPayload {
        min_version: 1,
        max_version: 1,
        timestamp: ts,
        ciphers: proto::Ciphers::NONE,
    }
}

fn established(seed: u64) -> (Sess, RawDevice, Instant) {
    let mut rng = Rng::new(seed);
    let now = Instant::from_millis(5);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let mut dev = RawDevice::connect(&mut gw, now, rng.key(), init(1)).expect("handshake");
    let hello = dev.hello_record();
    let evs = feed(&mut gw, now, &hello);
    assert!(matches!(evs.as_slice(), [Ev::Hello { .. }]), "{evs:?}");
    (gw, dev, now)
}

fn closed_with(evs: &[Ev]) -> Option<CloseReason> {
    evs.iter().find_map(|e| {
        if let Ev::Closed(r) = e {
            Some(*r)
        } else {
            None
        }
    })
}

/// A registry's replay rule on top of the session: strictly increasing timestamps.
#[test]
fn replayed_first_message_never_displaces_the_live_session() {
    let mut sim = Sim::new(30, Config::DEVICE, Config::GATEWAY);
    sim.auto_accept = false;
    // Capture the device's msg1 as an observer would.
    sim.flush();
    let captured: Vec<u8> = sim.to_gateway.iter().copied().collect();
    let mut last_accepted = 0u64;
    let evs = sim.deliver_all(Side::Gateway);
    let Some(Ev::Authenticate { timestamp, .. }) = evs.first().cloned() else {
        panic!("{evs:?}")
    };
    assert!(timestamp > last_accepted);
    last_accepted = timestamp;
    sim.gateway.accept().unwrap();
    sim.flush();
    let de = sim.deliver_all(Side::Device);
    assert!(de.contains(&Ev::Connected));
    sim.flush();
    let captured_hello: Vec<u8> = sim.to_gateway.iter().copied().collect();
    let ge = sim.deliver_all(Side::Gateway);
    assert!(ge.iter().any(|e| matches!(e, Ev::Hello { .. })));
    let id = sim.gateway.open(StreamKind::Raw, 1).unwrap();

    // 1. The replay reaches a new gateway session while the registry remembers.
    let mut rng = Rng::new(31);
    let mut g2 = gateway_with(Config::GATEWAY, &mut rng, sim.now);
    let evs = feed(&mut g2, sim.now, &captured);
    let Some(Ev::Authenticate { timestamp, device }) = evs.first().cloned() else {
        panic!("{evs:?}")
    };
    assert_eq!(
        device,
        fixed_key(DEVICE_KEY).public_key(),
        "the replay carries the device's identity"
    );
    assert!(
        timestamp <= last_accepted,
        "so the registry rejects it as stale"
    );
    g2.reject(Status::StaleTimestamp, last_accepted);
    assert!(!drain(&mut g2, sim.now).is_empty(), "a refusal goes back");
    assert!(g2.is_closed());

    // 2. The registry forgot (gateway restarted): the replay is answered, but the
    //    session never comes up, because the replayer cannot produce the HELLO record.
    let mut g3 = gateway_with(Config::GATEWAY, &mut rng, sim.now);
    feed(&mut g3, sim.now, &captured);
    g3.accept().unwrap();
    drain(&mut g3, sim.now);
    assert!(!g3.is_established());
    // Replaying the device's HELLO record from the live session does not
    // help either: it was sealed under that session's keys.
    let evs = feed(&mut g3, sim.now, &captured_hello);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Decrypt))
    );
    assert!(!g3.is_established());

    // The live session was never touched.
    sim.gateway
        .send(id, MsgKind::Bytes, b"still here", false, true)
        .unwrap();
    let (de, _) = sim.settle();
    assert!(
        de.iter()
            .any(|e| matches!(e, Ev::Data { data, .. } if data == b"still here"))
    );
}

#[test]
fn stale_timestamp_reaches_the_device_with_the_value_to_resume_above() {
    let mut sim = Sim::new(32, Config::DEVICE, Config::GATEWAY);
    sim.auto_accept = false;
    sim.flush();
    let evs = sim.deliver_all(Side::Gateway);
    assert!(matches!(evs.first(), Some(Ev::Authenticate { .. })));
    sim.gateway.reject(Status::StaleTimestamp, 1_000_000);
    let (de, _) = sim.settle();
    assert_eq!(
        closed_with(&de),
        Some(CloseReason::Rejected {
            status: Status::StaleTimestamp,
            info: 1_000_000
        })
    );
}

#[test]
fn wrong_gateway_key_gets_no_answer() {
    let mut rng = Rng::new(33);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let mut hs_rng = Rng::new(34);
    // A device that pinned some other gateway key.
    let mut h = proto::noise::Initiator::new(
        fixed_key(DEVICE_KEY),
        fixed_key(0x99).public_key(),
        hs_rng.key(),
        proto::session::PROLOGUE,
    );
    let mut m = vec![0u8; 256];
    let n = h
        .write_message(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 1], &mut m[3..])
        .unwrap();
    m[..2].copy_from_slice(&((n + 1) as u16).to_be_bytes());
    m[2] = proto::session::MSG_INIT;
    let evs = feed(&mut gw, now, &m[..n + 3]);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Handshake(
            proto::noise::NoiseError::Decrypt
        )))
    );
    assert!(drain(&mut gw, now).is_empty());
    assert!(gw.is_closed());
}

#[test]
fn unknown_or_revoked_key_is_refused_silently() {
    let mut rng = Rng::new(35);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let (m, _) = msg1(fixed_key(0x55), rng.key(), init(9));
    let evs = feed(&mut gw, now, &m);
    let Some(Ev::Authenticate { device, .. }) = evs.first().cloned() else {
        panic!()
    };
    assert_eq!(device, fixed_key(0x55).public_key());
    gw.refuse();
    assert!(
        drain(&mut gw, now).is_empty(),
        "nothing tells a prober anything"
    );
    assert_eq!(
        gw.poll_event().map(own),
        Some(Ev::Closed(CloseReason::Local(Code::REFUSED)))
    );
}

#[test]
fn revoking_ends_the_live_session() {
    let (mut gw, mut dev, now) = established(36);
    gw.close(Code::REVOKED);
    let out = drain(&mut gw, now);
    let frames = dev.open_all(&out);
    assert_eq!(frames, vec![vec![0x07, 0x09]]);
    assert!(gw.is_closed());
}

#[test]
fn version_without_overlap_is_answered_and_ends() {
    let mut rng = Rng::new(37);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let (m, hs) = msg1(
        fixed_key(DEVICE_KEY),
        rng.key(),
        InitPayload {
            min_version: 2,
            max_version: 7,
            timestamp: 3,
            ciphers: proto::Ciphers::NONE,
        },
    );
    feed(&mut gw, now, &m);
    assert_eq!(gw.accept(), Err(SessionError::Version));
    let m2 = drain(&mut gw, now);
    let mut p = [0u8; 64];
    let (n, _) = hs.read_message(&m2[3..], &mut p).unwrap();
    let resp = proto::wire::RespPayload::parse(&p[..n]).unwrap();
    assert_eq!(
        (resp.status, resp.info),
        (Status::VersionUnsupported, 0x0101)
    );
    assert!(gw.is_closed());
}

#[test]
fn garbage_before_the_handshake() {
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0, 0],
        &[0xff, 0xff, 1],
        &[0, 3, 1, 2, 3],
    ] {
        let mut rng = Rng::new(38);
        let now = Instant::from_millis(0);
        let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
        let evs = feed(&mut gw, now, garbage);
        let closed = closed_with(&evs);
        assert!(
            matches!(
                closed,
                Some(CloseReason::Error(SessionError::BadHandshakeMessage))
            ),
            "{garbage:?}: {evs:?}"
        );
        assert!(drain(&mut gw, now).is_empty());
    }
}

#[test]
fn truncated_garbled_and_oversized_records() {
    // Garbled: one flipped bit anywhere fails authentication.
    let (mut gw, mut dev, now) = established(40);
    let mut rec = dev.frames(&[FrameRepr::Ping { token: 1 }]);
    rec[4] ^= 0x20;
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Decrypt))
    );

    // Replayed record (same nonce again) fails too.
    let (mut gw, mut dev, now) = established(41);
    let rec = dev.frames(&[FrameRepr::Ping { token: 1 }]);
    assert!(closed_with(&feed(&mut gw, now, &rec)).is_none());
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Decrypt))
    );

    // Oversized: a length prefix above the announced record size.
    let (mut gw, _, now) = established(42);
    let evs = feed(&mut gw, now, &[0xff, 0xff, 0, 0, 0]);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::RecordTooLarge(65537)))
    );

    // Too short to hold a tag.
    let (mut gw, _, now) = established(43);
    let evs = feed(&mut gw, now, &[0, 3, 1, 2, 3]);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Decrypt))
    );

    // Truncated: the transport ends inside a record.
    let (mut gw, mut dev, now) = established(44);
    let rec = dev.frames(&[FrameRepr::Ping { token: 1 }]);
    feed(&mut gw, now, &rec[..rec.len() - 1]);
    gw.handle_eof();
    assert_eq!(
        gw.poll_event().map(own),
        Some(Ev::Closed(CloseReason::Error(SessionError::Truncated)))
    );
}

#[test]
fn malformed_and_unknown_frames() {
    // An undefined frame type ends the session with PROTOCOL.
    let (mut gw, mut dev, now) = established(45);
    let rec = dev.record(&[0x09, 0, 0]);
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Frame(
            proto::wire::WireError::UnknownFrame(0x09)
        )))
    );
    let frames = dev.open_all(&drain(&mut gw, now));
    assert_eq!(
        frames.last(),
        Some(&vec![0x07, 0x01]),
        "CLOSE(PROTOCOL) goes out"
    );

    // A frame cut short inside the record.
    let (mut gw, mut dev, now) = established(46);
    let rec = dev.record(&[0x01, 0, 0]);
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        closed_with(&evs),
        Some(CloseReason::Error(SessionError::Frame(
            proto::wire::WireError::Truncated
        )))
    );

    // Extension frames are skipped; what follows is processed.
    let (mut gw, mut dev, now) = established(47);
    let rec = dev.record(&[0xc5, 3, 9, 9, 9, 0x01, 0, 0, 0, 7]);
    let evs = feed(&mut gw, now, &rec);
    assert!(evs.is_empty(), "{evs:?}");
    let frames = dev.open_all(&drain(&mut gw, now));
    assert_eq!(
        frames,
        vec![vec![0x02, 0, 0, 0, 7]],
        "the PING behind it was answered"
    );

    // A second HELLO is not allowed.
    let (mut gw, mut dev, now) = established(48);
    let rec = dev.hello_record();
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnexpectedFrame))
    );
}

#[test]
fn first_record_must_be_hello() {
    let mut rng = Rng::new(49);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let mut dev = RawDevice::connect(&mut gw, now, rng.key(), init(1)).unwrap();
    let rec = dev.frames(&[FrameRepr::Ping { token: 1 }]);
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnexpectedFrame))
    );

    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let mut dev = RawDevice::connect(&mut gw, now, rng.key(), init(1)).unwrap();
    let rec = dev.frames(&[FrameRepr::Hello { body: b"\x00" }]);
    assert!(matches!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::Payload(_)))
    ));
}

fn sid(n: u32) -> StreamId {
    StreamId::new(n).unwrap()
}

#[test]
fn credit_overflow_and_overrun() {
    // A WINDOW that pushes credit past 2^31 - 1.
    let (mut gw, mut dev, now) = established(50);
    let rec = dev.frames(&[FrameRepr::Window {
        stream: StreamId::CONNECTION,
        increment: 1 << 31,
    }]);
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::CreditOverflow))
    );

    // Same on a stream.
    let (mut gw, mut dev, now) = established(51);
    let id = gw.open(StreamKind::Raw, 1).unwrap();
    dev.open_all(&drain(&mut gw, now));
    let rec = dev.frames(&[FrameRepr::Window {
        stream: id,
        increment: u64::from(u32::MAX),
    }]);
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::CreditOverflow))
    );

    // Data beyond the stream credit the gateway gave (256 KiB per stream).
    let (mut gw, mut dev, now) = established(52);
    let id = gw.open(StreamKind::Raw, 1).unwrap();
    dev.open_all(&drain(&mut gw, now));
    let chunk = vec![0u8; 16_000];
    let mut closed = None;
    for _ in 0..20 {
        let rec = dev.frames(&[FrameRepr::Data {
            stream: id,
            msg: MsgKind::Bytes,
            end_msg: false,
            fin: false,
            payload: &chunk,
        }]);
        closed = closed_with(&feed(&mut gw, now, &rec));
        if closed.is_some() {
            break;
        }
    }
    assert_eq!(closed, Some(CloseReason::Error(SessionError::FlowControl)));
    let frames = dev.open_all(&drain(&mut gw, now));
    assert_eq!(
        frames.last(),
        Some(&vec![0x07, 0x02]),
        "CLOSE(FLOW_CONTROL)"
    );
}

#[test]
fn frames_for_unknown_and_closed_streams() {
    // Never opened: a protocol error.
    let (mut gw, mut dev, now) = established(53);
    let rec = dev.frames(&[FrameRepr::Data {
        stream: sid(41),
        msg: MsgKind::Bytes,
        end_msg: false,
        fin: false,
        payload: b"x",
    }]);
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnknownStream(sid(41))))
    );

    let (mut gw, mut dev, now) = established(54);
    let rec = dev.frames(&[FrameRepr::Window {
        stream: sid(8),
        increment: 5,
    }]);
    assert_eq!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnknownStream(sid(8))))
    );

    // Opening with the gateway's parity, or reusing an id.
    let (mut gw, mut dev, now) = established(55);
    let rec = dev.frames(&[FrameRepr::Open {
        stream: sid(2),
        kind: StreamKind::Raw,
        service: 0,
    }]);
    assert!(matches!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnknownStream(_)))
    ));
    let (mut gw, mut dev, now) = established(56);
    let o = FrameRepr::Open {
        stream: sid(3),
        kind: StreamKind::Raw,
        service: 0,
    };
    let rec = dev.frames(&[
        o,
        FrameRepr::Reset {
            stream: sid(3),
            code: Code::CANCEL,
        },
        o,
    ]);
    assert!(matches!(
        closed_with(&feed(&mut gw, now, &rec)),
        Some(CloseReason::Error(SessionError::UnknownStream(_)))
    ));

    // Closed streams: late frames are ignored, their bytes return connection credit.
    let (mut gw, mut dev, now) = established(57);
    let id = gw.open(StreamKind::Raw, 1).unwrap();
    gw.reset(id, Code::CANCEL).unwrap();
    let out = drain(&mut gw, now);
    let frames = dev.open_all(&out);
    assert_eq!(frames.len(), 2, "OPEN then RESET: {frames:?}");
    let big = vec![7u8; 16_000];
    let mut total = 0;
    // Far more than the 1 MiB connection window, all for the closed stream.
    for _ in 0..100 {
        let rec = dev.frames(&[
            FrameRepr::Data {
                stream: id,
                msg: MsgKind::Bytes,
                end_msg: false,
                fin: false,
                payload: &big,
            },
            FrameRepr::Window {
                stream: id,
                increment: 10,
            },
            FrameRepr::Reset {
                stream: id,
                code: Code::CANCEL,
            },
        ]);
        let evs = feed(&mut gw, now, &rec);
        assert!(evs.is_empty(), "{evs:?}");
        total += big.len();
        let back = dev.open_all(&drain(&mut gw, now));
        assert!(
            back.iter().all(|f| f[0] == 0x03),
            "only connection WINDOWs: {back:?}"
        );
    }
    assert!(total > 1024 * 1024);
    assert!(gw.is_established());
}

#[test]
fn stream_flood_is_refused_then_cut_off() {
    let (mut gw, mut dev, now) = established(58);
    // The gateway accepts 16 device-opened streams.
    let opens: Vec<FrameRepr<'_>> = (0..16)
        .map(|i| FrameRepr::Open {
            stream: sid(1 + 2 * i),
            kind: StreamKind::Raw,
            service: 0,
        })
        .collect();
    let rec = dev.frames(&opens);
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Ev::Opened { .. }))
            .count(),
        16
    );
    // Beyond: refused, counted, answered with RESET REFUSED; the session lives.
    let rec = dev.frames(&[FrameRepr::Open {
        stream: sid(33),
        kind: StreamKind::Raw,
        service: 0,
    }]);
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(evs, vec![Ev::Refused { stream: sid(33) }]);
    let back = dev.open_all(&drain(&mut gw, now));
    assert_eq!(back, vec![vec![0x05, 33, 0x03]]);
    assert!(gw.is_established());
    // A flood faster than refusals can go out ends the session.
    let flood: Vec<FrameRepr<'_>> = (0..50)
        .map(|i| FrameRepr::Open {
            stream: sid(35 + 2 * i),
            kind: StreamKind::Raw,
            service: 0,
        })
        .collect();
    let rec = dev.frames(&flood);
    let evs = feed(&mut gw, now, &rec);
    assert!(
        matches!(closed_with(&evs), Some(CloseReason::Error(_))),
        "{evs:?}"
    );
    assert!(gw.stats().refused_streams >= 5);
}

#[test]
fn sequence_violation_resets_only_that_stream() {
    let (mut gw, mut dev, now) = established(59);
    let id = gw.open(StreamKind::Http, 0).unwrap();
    gw.send(id, MsgKind::Head, &request_head("GET", "/"), true, true)
        .unwrap();
    dev.open_all(&drain(&mut gw, now));
    // Body before a response head.
    let rec = dev.frames(&[FrameRepr::Data {
        stream: id,
        msg: MsgKind::Bytes,
        end_msg: false,
        fin: false,
        payload: b"x",
    }]);
    let evs = feed(&mut gw, now, &rec);
    assert_eq!(
        evs,
        vec![Ev::Reset {
            stream: id,
            code: Code::PROTOCOL,
            by_peer: false
        }]
    );
    let back = dev.open_all(&drain(&mut gw, now));
    assert!(
        back.iter().any(|f| f[0] == 0x05),
        "RESET(PROTOCOL) went out: {back:?}"
    );
    assert!(gw.is_established());
}

#[test]
fn absurd_peer_params_are_refused_or_clamped() {
    // A record size below the minimum is refused at decode time.
    let mut h = hello();
    h.params.max_record = 100;
    let mut buf = vec![0u8; 512];
    let n = h.emit(&mut buf).unwrap();
    assert!(proto::Hello::parse(&buf[..n]).is_err());
    // A huge announced record size only means the gateway may send up to its
    // own buffer: its records never exceed what it allocated.
    let mut rng = Rng::new(60);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let mut dev = RawDevice::connect(&mut gw, now, rng.key(), init(1)).unwrap();
    let mut h = hello();
    h.params.max_record = u16::MAX;
    h.params.stream_window = proto::wire::MAX_WINDOW;
    h.params.conn_window = proto::wire::MAX_WINDOW;
    let n = h.emit(&mut buf).unwrap();
    let rec = dev.frames(&[FrameRepr::Hello { body: &buf[..n] }]);
    feed(&mut gw, now, &rec);
    assert!(gw.is_established());
    let allocated = usize::from(Config::GATEWAY.params.max_record);
    assert_eq!(
        gw.max_transmit(),
        allocated,
        "records never exceed the staging buffer"
    );
}
