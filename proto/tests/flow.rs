//! Flow control: a receiver that stops reading holds at most the credit it
//! gave, the sender stalls cleanly, and a stall past the timeout resets the
//! stream without touching the rest of the session.

mod common;

use common::*;
use proto::wire::Params;
use proto::{Code, Config, MsgKind, StreamId, StreamKind};

fn configs() -> (Config, Config) {
    let dev = Config {
        params: Params {
            max_record: 512,
            max_streams: 4,
            stream_window: 1000,
            conn_window: 3000,
        },
        ..Config::DEVICE
    };
    let gw = Config {
        params: Params {
            max_record: 1024,
            max_streams: 4,
            stream_window: 4000,
            conn_window: 8000,
        },
        ..Config::GATEWAY
    };
    (dev, gw)
}

/// A connected pair whose gateway resets a stream stalled for 5 s, and a
/// raw stream the gateway opened: the device's config, the pair, the stream.
fn stall_timed(seed: u64) -> (Config, Sim, StreamId) {
    let (dev, mut gw) = configs();
    gw.stall_timeout = Some(std::time::Duration::from_secs(5));
    let mut sim = Sim::new(seed, dev, gw);
    sim.connect();
    let a = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    (dev, sim, a)
}

/// Ten rounds of sending `data` from `from` on the gateway's stream `a`,
/// each settled; returns how far into `data` the sends got.
fn send_rounds(sim: &mut Sim, a: StreamId, data: &[u8], from: usize) -> usize {
    let mut n = from;
    for _ in 0..10 {
        n += sim
            .gateway
            .send(a, MsgKind::Bytes, &data[n..], false, false)
            .unwrap_or(0);
        sim.settle();
    }
    n
}

/// The last reset the session made itself (not its peer) among `events`.
fn local_reset(events: Vec<Ev>) -> Option<(StreamId, Code)> {
    events.into_iter().rev().find_map(|e| match e {
        Ev::Reset {
            stream,
            code,
            by_peer: false,
        } => Some((stream, code)),
        _ => None,
    })
}

#[test]
fn stopped_reader_holds_at_most_its_credit() {
    let (dev, gw) = configs();
    let mut sim = Sim::new(7, dev, gw);
    sim.connect();
    let a = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    let b = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    let payload = vec![0xab; 100_000];
    // The device application reads stream `b` but never stream `a`.
    let (mut held_a, mut sent_a, mut sent_b, mut got_b) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..2000 {
        if sent_a < payload.len() {
            sent_a += sim
                .gateway
                .send(a, MsgKind::Bytes, &payload[sent_a..], false, false)
                .unwrap_or(0);
        }
        if sent_b < payload.len() {
            sent_b += sim
                .gateway
                .send(b, MsgKind::Bytes, &payload[sent_b..], false, false)
                .unwrap_or(0);
        }
        sim.flush();
        for ev in sim.deliver(Side::Device) {
            if let Ev::Data { stream, data, .. } = ev {
                if stream == a {
                    held_a += data.len();
                } else {
                    got_b += data.len();
                    sim.device.consume(stream, data.len());
                }
            }
        }
        sim.deliver(Side::Gateway);
        // What the stopped reader holds never exceeds what it announced.
        assert!(held_a <= dev.params.stream_window as usize, "held {held_a}");
        sim.advance(1);
    }
    assert_eq!(
        held_a, dev.params.stream_window as usize,
        "the window was used in full"
    );
    assert_eq!(sent_a, held_a, "the sender never sent past its credit");
    assert_eq!(
        got_b,
        payload.len(),
        "the other stream kept flowing at full volume"
    );
    assert_eq!(sim.gateway.send_capacity(a), 0);
    assert!(sim.gateway.stats().credit_stalls > 0);
}

#[test]
fn stalled_stream_is_reset_after_the_stall_timeout_and_the_session_lives() {
    let (dev, mut sim, a) = stall_timed(8);
    let n = send_rounds(&mut sim, a, &[1u8; 5000], 0);
    assert_eq!(n, dev.params.stream_window as usize);
    // The device never consumes. Time passes; keepalives flow, the session stays up.
    let mut reset = None;
    for _ in 0..10 {
        sim.advance(1000);
        let (de, ge) = sim.settle();
        reset = local_reset(ge).or(reset);
        if let Some(Ev::Reset {
            stream,
            code,
            by_peer: true,
        }) = de.iter().find(|e| matches!(e, Ev::Reset { .. }))
        {
            assert_eq!((*stream, *code), (a, Code::TIMEOUT));
        }
    }
    assert_eq!(reset, Some((a, Code::TIMEOUT)));
    assert_eq!(sim.gateway.stats().stall_resets, 1);
    assert!(sim.gateway.is_established() && sim.device.is_established());
    assert_eq!(sim.gateway.open_streams(), 0);
    assert_eq!(sim.device.open_streams(), 0);
    // A new stream works at once: the connection window was returned.
    let c = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    sim.gateway
        .send(c, MsgKind::Bytes, b"after", false, true)
        .unwrap();
    let (de, _) = sim.settle();
    assert!(
        de.iter().any(
            |e| matches!(e, Ev::Data { stream, data, .. } if *stream == c && data == b"after")
        )
    );
}

#[test]
fn websocket_messages_keep_their_boundaries() {
    let (dev, gw) = configs();
    let mut sim = Sim::new(9, dev, gw);
    sim.max_chunk = 300;
    sim.connect();
    let id = sim.gateway.open(StreamKind::WebSocket, 0).unwrap();
    let head = request_head("GET", "/ws");
    sim.gateway
        .send(id, MsgKind::Head, &head, true, false)
        .unwrap();
    sim.settle();
    sim.device
        .send(id, MsgKind::Head, &[0, 101, 0, 0], true, false)
        .unwrap();
    // Messages larger than a record and the window, sent in pieces.
    let messages: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 1 + i * 97]).collect();
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    let (mut m, mut off) = (0, 0);
    for _ in 0..10_000 {
        if m < messages.len() {
            let msg = &messages[m];
            let kind = if m % 2 == 0 {
                MsgKind::Text
            } else {
                MsgKind::Binary
            };
            let n = sim
                .device
                .send(id, kind, &msg[off..], true, false)
                .unwrap_or(0);
            off += n;
            if off == msg.len() {
                m += 1;
                off = 0;
            }
        }
        sim.flush();
        for ev in sim.deliver(Side::Gateway) {
            if let Ev::Data {
                data,
                end_msg,
                stream,
                msg,
                ..
            } = ev
            {
                if msg == MsgKind::Head {
                    continue;
                }
                current.extend_from_slice(&data);
                sim.gateway.consume(stream, data.len());
                if end_msg {
                    received.push(std::mem::take(&mut current));
                }
            }
        }
        sim.deliver(Side::Device);
        if received.len() == messages.len() {
            break;
        }
    }
    assert_eq!(received, messages);
}

#[test]
fn sequence_rules_are_enforced_on_send() {
    let (dev, gw) = configs();
    let mut sim = Sim::new(10, dev, gw);
    sim.connect();
    let raw = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    assert_eq!(
        sim.gateway.send(raw, MsgKind::Text, b"x", true, false),
        Err(proto::StreamError::Sequence)
    );
    let http = sim.gateway.open(StreamKind::Http, 0).unwrap();
    assert_eq!(
        sim.gateway.send(http, MsgKind::Bytes, b"x", false, false),
        Err(proto::StreamError::Sequence)
    );
    assert_eq!(
        sim.gateway.send(http, MsgKind::Text, b"x", true, false),
        Err(proto::StreamError::Sequence)
    );
    sim.gateway
        .send(http, MsgKind::Head, &request_head("GET", "/"), true, true)
        .unwrap();
    assert_eq!(
        sim.gateway.send(http, MsgKind::Bytes, b"x", false, false),
        Err(proto::StreamError::Sequence)
    );
    let ws = sim.gateway.open(StreamKind::WebSocket, 0).unwrap();
    sim.gateway
        .send(ws, MsgKind::Head, b"\x03GET", false, false)
        .unwrap();
    // A head in progress admits only more head.
    assert_eq!(
        sim.gateway.send(ws, MsgKind::Binary, b"x", true, false),
        Err(proto::StreamError::Sequence)
    );
}

/// A stream that blocked, was given credit and blocked again later is
/// still reset when its second stall runs past the timeout (the stall
/// timer looks at the streams only while one may be blocked).
#[test]
fn a_stream_that_blocks_again_after_credit_is_reset_after_its_second_stall() {
    let (dev, mut sim, a) = stall_timed(9);
    let window = dev.params.stream_window as usize;
    let data = vec![1u8; 3 * window];
    let fill = |sim: &mut Sim, from: usize| send_rounds(sim, a, &data, from);
    let mut sent = fill(&mut sim, 0);
    assert_eq!(sent, window, "blocked at the device's window");
    // The device reads it all: credit returns, the stream is unblocked,
    // and stays so (nothing more is sent) for longer than the timeout.
    sim.device.consume(a, window);
    sim.settle();
    for _ in 0..8 {
        sim.advance(1000);
        sim.settle();
    }
    assert_eq!(
        sim.gateway.stats().stall_resets,
        0,
        "no stall while unblocked"
    );
    sent = fill(&mut sim, sent);
    assert_eq!(sent, 2 * window, "blocked again at the returned credit");
    // Blocked again now, and never read: reset once the timeout passes.
    let mut reset = None;
    for _ in 0..10 {
        sim.advance(1000);
        let (_, ge) = sim.settle();
        reset = local_reset(ge).or(reset);
    }
    assert_eq!(reset, Some((a, Code::TIMEOUT)));
    assert_eq!(sim.gateway.stats().stall_resets, 1);
    assert!(sim.gateway.is_established() && sim.device.is_established());
}
