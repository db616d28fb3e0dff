//! Keepalive, RTT, timeouts, GOAWAY drain and CLOSE.

mod common;

use common::*;
use proto::{CloseReason, Code, Config, MsgKind, StreamKind};

#[test]
fn keepalive_measures_rtt() {
    let mut sim = Sim::new(20, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    sim.advance(15_000);
    sim.flush();
    // 40 ms each way.
    sim.advance(40);
    let mut evs = sim.deliver(Side::Device);
    evs.extend(sim.deliver(Side::Gateway));
    sim.flush();
    sim.advance(40);
    let mut rtts = Vec::new();
    for _ in 0..4 {
        for side in [Side::Device, Side::Gateway] {
            for e in sim.deliver(side) {
                if let Ev::Rtt(ms) = e {
                    rtts.push(ms);
                }
            }
        }
        sim.flush();
    }
    assert_eq!(
        rtts,
        vec![80],
        "the gateway measured the round trip; the device, pinged, sent no PING"
    );
    assert_eq!(sim.gateway.rtt().map(|d| d.as_millis()), Some(80));
}

/// On equal keepalives only the gateway pings a quiet link: the device,
/// hearing the gateway's PINGs, sends none, so the link carries one PING
/// and one PONG per period, not two of each. A device that hears nothing
/// for 1.25 × its keepalive (here: a gateway pinging every 60 s) pings by
/// itself, and both stay up.
#[test]
fn a_device_pings_only_when_the_gateway_is_quiet() {
    for (gateway_keepalive, device_pings) in [(15, 0..=0), (60, 12..=17)] {
        let gateway = Config {
            keepalive: std::time::Duration::from_secs(gateway_keepalive),
            idle_timeout: std::time::Duration::from_secs(180),
            ..Config::GATEWAY
        };
        let mut sim = Sim::new(24, Config::DEVICE, gateway);
        sim.connect();
        let rtts = |evs: &[Ev]| evs.iter().filter(|e| matches!(e, Ev::Rtt(_))).count();
        let (mut by_device, mut by_gateway) = (0, 0);
        // Five minutes in steps of 100 ms.
        for _ in 0..3_000 {
            sim.advance(100);
            let (de, ge) = sim.settle();
            by_device += rtts(&de);
            by_gateway += rtts(&ge);
        }
        assert!(sim.device.is_established() && sim.gateway.is_established());
        let periods = (300 / gateway_keepalive) as usize;
        assert!(
            (periods - 1..=periods).contains(&by_gateway),
            "gateway keepalive {gateway_keepalive} s: {by_gateway} PINGs"
        );
        assert!(
            device_pings.contains(&by_device),
            "gateway keepalive {gateway_keepalive} s: the device sent {by_device} PINGs"
        );
    }
}

#[test]
fn idle_timeout_ends_a_silent_link() {
    let mut sim = Sim::new(21, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    // The link goes dark: nothing is delivered any more.
    let mut gw_closed = None;
    for _ in 0..50 {
        sim.advance(1000);
        sim.flush();
        sim.to_device.clear();
        sim.to_gateway.clear();
        while let Some(e) = sim.gateway.poll_event() {
            if let proto::Event::Closed(r) = e {
                gw_closed = Some(r);
            }
        }
        if gw_closed.is_some() {
            break;
        }
    }
    assert_eq!(gw_closed, Some(CloseReason::IdleTimeout));
    assert!(sim.gateway.poll_timeout().is_none());
}

#[test]
fn handshake_timeout() {
    let mut sim = Sim::new(22, Config::DEVICE, Config::GATEWAY);
    let deadline = sim.gateway.poll_timeout().unwrap();
    sim.now = deadline;
    sim.gateway.handle_timeout(deadline);
    let e = sim.gateway.poll_event().map(own);
    assert_eq!(e, Some(Ev::Closed(CloseReason::HandshakeTimeout)));
    assert!(sim.gateway.is_closed());
}

#[test]
fn goaway_drains_open_streams_then_closes() {
    let mut sim = Sim::new(23, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    let id = sim.gateway.open(StreamKind::Http, 0).unwrap();
    sim.gateway
        .send(id, MsgKind::Head, &request_head("GET", "/"), true, true)
        .unwrap();
    sim.settle();
    sim.gateway.goaway(Code::SHUTDOWN);
    assert_eq!(
        sim.gateway.open(StreamKind::Http, 0),
        Err(proto::StreamError::GoingAway)
    );
    let (de, _) = sim.settle();
    assert!(de.contains(&Ev::GoAway {
        code: Code::SHUTDOWN
    }));
    assert_eq!(
        sim.device.open(StreamKind::Raw, 0),
        Err(proto::StreamError::GoingAway)
    );
    assert!(
        sim.gateway.is_established(),
        "still serving the open stream"
    );
    sim.device
        .send(id, MsgKind::Head, &[0, 200, 0, 0], true, true)
        .unwrap();
    let (de, ge) = sim.settle();
    assert!(ge.iter().any(|e| matches!(e, Ev::Data { fin: true, .. })));
    assert!(
        ge.contains(&Ev::Closed(CloseReason::Local(Code::SHUTDOWN))),
        "{ge:?}"
    );
    assert!(
        de.contains(&Ev::Closed(CloseReason::Peer(Code::NO_ERROR))),
        "{de:?}"
    );
    assert!(sim.gateway.is_closed() && sim.device.is_closed());
}

#[test]
fn close_with_code_reaches_the_peer() {
    let mut sim = Sim::new(24, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    sim.gateway.close(Code::REVOKED);
    let (de, ge) = sim.settle();
    assert!(
        de.contains(&Ev::Closed(CloseReason::Peer(Code::REVOKED))),
        "{de:?}"
    );
    assert!(ge.contains(&Ev::Closed(CloseReason::Local(Code::REVOKED))));
    assert!(sim.gateway.is_closed() && sim.device.is_closed());
}

#[test]
fn eof_between_and_inside_records() {
    let mut sim = Sim::new(25, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    sim.device.handle_eof();
    assert_eq!(
        sim.device.poll_event().map(own),
        Some(Ev::Closed(CloseReason::TransportClosed))
    );

    let mut sim = Sim::new(26, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    let id = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    sim.gateway
        .send(id, MsgKind::Bytes, b"hello", false, false)
        .unwrap();
    sim.flush();
    let partial: Vec<u8> = sim.to_device.drain(..10).collect();
    let now = sim.now;
    assert_eq!(sim.device.handle_input(now, &partial), 10);
    sim.device.handle_eof();
    assert_eq!(
        sim.device.poll_event().map(own),
        Some(Ev::Closed(CloseReason::Error(
            proto::SessionError::Truncated
        )))
    );
}

#[test]
fn close_and_msg1_wait_for_a_buffer_large_enough() {
    // Found by reading the code during fuzzing: a small buffer lost the CLOSE.
    let mut sim = Sim::new(27, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    sim.gateway.close(Code::REVOKED);
    let now = sim.now;
    let mut small = [0u8; 8];
    assert_eq!(sim.gateway.poll_transmit(now, &mut small), None);
    assert!(!sim.gateway.is_closed(), "the CLOSE is still owed");
    let (de, _) = sim.settle();
    assert!(
        de.contains(&Ev::Closed(CloseReason::Peer(Code::REVOKED))),
        "{de:?}"
    );

    // A device whose first buffer cannot hold msg1 sends it later.
    let mut sim = Sim::new(28, Config::DEVICE, Config::GATEWAY);
    let mut tiny = [0u8; 64];
    assert_eq!(sim.device.poll_transmit(sim.now, &mut tiny), None);
    assert!(!sim.device.is_closed());
    sim.connect();
}

#[test]
fn hello_goes_first_even_when_control_frames_are_due() {
    // Found while writing SPEC.md: a PING requested right after Connected
    // went ahead of the HELLO, and the gateway refused the session.
    let mut sim = Sim::new(29, Config::DEVICE, Config::GATEWAY);
    sim.flush();
    sim.deliver_all(Side::Gateway);
    sim.flush();
    let de = sim.deliver_all(Side::Device);
    assert!(de.contains(&Ev::Connected));
    sim.device.ping();
    sim.device.goaway(Code::SHUTDOWN);
    let (_, ge) = sim.settle();
    assert!(ge.iter().any(|e| matches!(e, Ev::Hello { .. })), "{ge:?}");
    assert!(
        ge.contains(&Ev::GoAway {
            code: Code::SHUTDOWN
        }),
        "{ge:?}"
    );
}

#[test]
fn a_drain_sends_the_last_data_before_closing() {
    // Found while writing SPEC.md: the session closed with the final bytes
    // still staged, and the peer got only CLOSE.
    let mut sim = Sim::new(30, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    let id = sim.gateway.open(StreamKind::Raw, 1).unwrap();
    sim.settle();
    sim.device
        .send(id, MsgKind::Bytes, b"", false, true)
        .unwrap();
    sim.settle();
    sim.gateway.goaway(Code::SHUTDOWN);
    sim.settle();
    assert_eq!(
        sim.gateway.send(id, MsgKind::Bytes, b"final", false, true),
        Ok(5)
    );
    let (de, _) = sim.settle();
    let got: Vec<u8> = de
        .iter()
        .filter_map(|e| {
            if let Ev::Data { data, .. } = e {
                Some(data.clone())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    assert_eq!(got, b"final");
    assert!(
        de.contains(&Ev::Closed(CloseReason::Peer(Code::NO_ERROR))),
        "{de:?}"
    );
}
