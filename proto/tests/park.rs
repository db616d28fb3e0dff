//! Parking the record buffers of an idle session (the gateway's way of
//! keeping an idle device link small): refused while a record is in
//! flight, inert while parked, and invisible to the peer when the session
//! parks between every step of a transfer with other buffers each time.

mod common;

use common::*;
use proto::{Config, MsgKind, StreamError, StreamKind};

/// Junk-filled buffers of the gateway's sizes: contents must not matter.
fn pair(fill: u8) -> (Vec<u8>, Vec<u8>) {
    let n = usize::from(Config::GATEWAY.params.max_record);
    (vec![fill; n], vec![fill; n])
}

/// Puts buffers back into the gateway if it is parked.
fn unpark(sim: &mut Sim, pool: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    if sim.gateway.is_parked() {
        let (rx, tx) = pool.pop().expect("pool has a pair");
        let (a, b) = sim.gateway.unpark_buffers(rx, tx).expect("unpark");
        assert!(a.is_empty() && b.is_empty(), "placeholders come back");
    }
}

/// Parks the gateway's buffers if they are idle; true if it parked.
fn park(sim: &mut Sim, pool: &mut Vec<(Vec<u8>, Vec<u8>)>) -> bool {
    if !sim.gateway.buffers_idle() {
        assert!(sim.gateway.park_buffers(Vec::new(), Vec::new()).is_err());
        return false;
    }
    let (mut rx, mut tx) = sim
        .gateway
        .park_buffers(Vec::new(), Vec::new())
        .expect("idle buffers park");
    // Whoever gets them next sees someone else's junk.
    rx.fill(0x5a);
    tx.fill(0xa5);
    pool.insert(0, (rx, tx));
    true
}

#[test]
fn a_parked_session_takes_and_makes_nothing() {
    let mut sim = Sim::new(31, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    let (rx, tx) = sim
        .gateway
        .park_buffers(Vec::new(), Vec::new())
        .expect("an established, quiet session parks");
    assert!(sim.gateway.is_parked());
    // Parking twice, or unparking with buffers too small, is refused and
    // hands the arguments back.
    assert!(sim.gateway.park_buffers(vec![1], vec![2]).is_err());
    let (small_rx, small_tx) = sim
        .gateway
        .unpark_buffers(vec![0; 100], vec![0; 100])
        .expect_err("too small");
    assert_eq!((small_rx.len(), small_tx.len()), (100, 100));

    // Input waits, no record is made, no stream opens.
    let mut out = vec![0u8; 70_000];
    assert_eq!(sim.gateway.handle_input(sim.now, &[0, 1, 2]), 0);
    assert_eq!(sim.gateway.poll_transmit(sim.now, &mut out), None);
    assert_eq!(
        sim.gateway.open(StreamKind::Http, 0),
        Err(StreamError::Blocked)
    );
    // Timers still run: the keepalive comes due while parked and goes out
    // once the buffers are back.
    sim.advance(Config::GATEWAY.keepalive.as_millis() as u64 + 1);
    assert_eq!(sim.gateway.poll_transmit(sim.now, &mut out), None);
    let (a, b) = sim.gateway.unpark_buffers(rx, tx).expect("unpark");
    assert!(a.is_empty() && b.is_empty());
    assert!(sim.gateway.unpark_buffers(a, b).is_err(), "not parked");
    let (de, ge) = sim.settle();
    assert!(
        ge.iter().any(|e| matches!(e, Ev::Rtt(_))),
        "the PING went out and its PONG came back: {ge:?} {de:?}"
    );
}

#[test]
fn buffers_in_use_do_not_park() {
    let mut sim = Sim::new(32, Config::DEVICE, Config::GATEWAY);
    // msg1 arrives; after accept, msg2 is staged in the transmit buffer.
    sim.flush();
    sim.deliver_all(Side::Gateway);
    assert!(!sim.gateway.buffers_idle(), "msg2 staged");
    assert!(sim.gateway.park_buffers(Vec::new(), Vec::new()).is_err());
    sim.connect();

    // Half a record received: the rest must land in the same buffer.
    let id = sim.gateway.open(StreamKind::Http, 0).unwrap();
    let head = request_head("GET", "/");
    sim.gateway
        .send(id, MsgKind::Head, &head, true, false)
        .unwrap();
    assert!(!sim.gateway.buffers_idle(), "a frame staged");
    sim.settle();
    sim.device.consume(id, head.len());
    sim.device
        .send(id, MsgKind::Head, &[0x00, 200, 0, 0], true, false)
        .unwrap();
    let mut out = vec![0u8; 70_000];
    let n = sim.device.poll_transmit(sim.now, &mut out).unwrap();
    assert_eq!(sim.gateway.handle_input(sim.now, &out[..n / 2]), n / 2);
    assert!(!sim.gateway.buffers_idle(), "half a record");
    assert!(sim.gateway.park_buffers(Vec::new(), Vec::new()).is_err());
    assert_eq!(sim.gateway.handle_input(sim.now, &out[n / 2..n]), n - n / 2);
    assert!(!sim.gateway.buffers_idle(), "its frames wait in poll_event");
    let mut got = 0;
    while let Some(ev) = sim.gateway.poll_event() {
        if let Ev::Data { data, .. } = own(ev) {
            got += data.len();
        }
    }
    assert_eq!(got, 4);
    assert!(sim.gateway.buffers_idle());
    assert!(sim.gateway.park_buffers(Vec::new(), Vec::new()).is_ok());
}

/// The byte at `offset` of direction `d`.
fn pattern(d: u8, offset: usize) -> u8 {
    (offset.wrapping_mul(31) as u8) ^ d
}

#[test]
fn parking_between_every_step_loses_nothing() {
    let sim = Sim::new(33, Config::DEVICE, Config::GATEWAY);
    park_through_a_transfer(sim);
}

/// The same under AES-256-GCM records, whose key object is dropped at each
/// park and made again at the next record.
#[test]
fn parking_under_aes_gcm_loses_nothing() {
    let aes = |c: Config| Config {
        ciphers: proto::Ciphers::AES_256_GCM,
        ..c
    };
    let sim = Sim::new(34, aes(Config::DEVICE), aes(Config::GATEWAY));
    let cipher = park_through_a_transfer(sim);
    let expected = if proto::Ciphers::supported().contains(proto::Ciphers::AES_256_GCM) {
        proto::Cipher::Aes256Gcm
    } else {
        proto::Cipher::ChaCha20Poly1305
    };
    assert_eq!(cipher, expected);
}

/// 300 KB each way on one raw stream, the gateway parking its buffers
/// whenever they are idle; returns the record cipher the two used.
fn park_through_a_transfer(mut sim: Sim) -> proto::Cipher {
    sim.max_chunk = 700;
    let mut pool = vec![pair(1), pair(2)];
    sim.connect();
    let id = sim.gateway.open(StreamKind::Raw, 0).unwrap();
    const TOTAL: usize = 300_000;
    let (mut down_sent, mut up_sent) = (0usize, 0usize);
    let (mut down_got, mut up_got) = (Vec::new(), Vec::new());
    let mut parks = 0;
    let mut opened = false;
    for round in 0..200_000 {
        if down_got.len() == TOTAL && up_got.len() == TOTAL {
            break;
        }
        unpark(&mut sim, &mut pool);
        if down_sent < TOTAL {
            let chunk: Vec<u8> = (down_sent..TOTAL.min(down_sent + 5000))
                .map(|i| pattern(1, i))
                .collect();
            match sim.gateway.send(id, MsgKind::Bytes, &chunk, false, false) {
                Ok(n) => down_sent += n,
                Err(StreamError::Blocked) => {}
                Err(e) => panic!("gateway send: {e:?}"),
            }
        }
        if opened && up_sent < TOTAL {
            let chunk: Vec<u8> = (up_sent..TOTAL.min(up_sent + 3000))
                .map(|i| pattern(2, i))
                .collect();
            match sim.device.send(id, MsgKind::Bytes, &chunk, false, false) {
                Ok(n) => up_sent += n,
                Err(StreamError::Blocked) => {}
                Err(e) => panic!("device send: {e:?}"),
            }
        }
        sim.flush();
        parks += usize::from(park(&mut sim, &mut pool));
        unpark(&mut sim, &mut pool);
        let ev = if round % 2 == 0 {
            sim.deliver(Side::Gateway)
        } else {
            sim.deliver_all(Side::Gateway)
        };
        for e in ev {
            if let Ev::Data { data, .. } = e {
                sim.gateway.consume(id, data.len());
                up_got.extend(data);
            }
        }
        for e in sim.deliver(Side::Device) {
            if let Ev::Opened { .. } = e {
                opened = true;
                continue;
            }
            if let Ev::Data { data, .. } = e {
                sim.device.consume(id, data.len());
                down_got.extend(data);
            }
        }
        parks += usize::from(park(&mut sim, &mut pool));
    }
    assert_eq!(down_got.len(), TOTAL, "gateway to device");
    assert_eq!(up_got.len(), TOTAL, "device to gateway");
    assert!(
        down_got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern(1, i))
    );
    assert!(up_got.iter().enumerate().all(|(i, b)| *b == pattern(2, i)));
    assert!(parks > 100, "the session parked often ({parks} times)");
    assert_eq!(sim.device.cipher(), sim.gateway.cipher());
    sim.gateway.cipher()
}
