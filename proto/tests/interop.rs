//! The handshake and the record cipher checked against an independent Noise
//! implementation (snow), in both roles, and the full session driven by a
//! snow device.

mod common;

use common::raw::{drain, feed};
use common::*;
use proto::noise::{Initiator, Responder};
use proto::session::{MSG_INIT, PROLOGUE};
use proto::wire::{InitPayload, RespPayload};
use proto::{Config, Instant, SecretKey};

const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

fn snow_builder() -> snow::Builder<'static> {
    snow::Builder::new(PATTERN.parse().unwrap())
}

#[test]
fn our_initiator_with_snow_responder() {
    let (s, rs, e) = (fixed_key(1), fixed_key(2), fixed_key(3));
    let gw_priv = rs.to_bytes();
    let mut ours = Initiator::new(s.clone(), rs.public_key(), e, PROLOGUE);
    let mut theirs = snow_builder()
        .local_private_key(&gw_priv)
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_responder()
        .unwrap();

    let mut m1 = [0u8; 256];
    let n = ours
        .write_message(b"hello from the device", &mut m1)
        .unwrap();
    let mut p = [0u8; 256];
    let k = theirs.read_message(&m1[..n], &mut p).unwrap();
    assert_eq!(&p[..k], b"hello from the device");
    assert_eq!(
        theirs.get_remote_static().unwrap(),
        s.public_key().as_bytes()
    );

    let mut m2 = [0u8; 256];
    let n = theirs.write_message(b"welcome", &mut m2).unwrap();
    let (k, mut keys) = ours.read_message(&m2[..n], &mut p).unwrap();
    assert_eq!(&p[..k], b"welcome");
    assert_eq!(&keys.handshake_hash[..], theirs.get_handshake_hash());

    let mut t = theirs.into_transport_mode().unwrap();
    for round in 0..5u8 {
        // ours → snow
        let mut buf = vec![round; 100 + usize::from(round)];
        let tag = keys.send.seal(&[], &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        let mut out = [0u8; 512];
        let k = t.read_message(&buf, &mut out).unwrap();
        assert_eq!(&out[..k], &vec![round; 100 + usize::from(round)][..]);
        // snow → ours
        let mut msg = [0u8; 512];
        let n = t.write_message(&[round; 33], &mut msg).unwrap();
        let (body, tag) = msg[..n].split_at_mut(n - 16);
        let tag: [u8; 16] = tag.try_into().unwrap();
        keys.recv.open(&[], body, &tag).unwrap();
        assert_eq!(body, &[round; 33]);
    }
}

#[test]
fn snow_initiator_with_our_responder() {
    let (s, rs, e) = (fixed_key(4), fixed_key(5), fixed_key(6));
    let (dev_priv, gw_pub) = (s.to_bytes(), rs.public_key());
    let mut theirs = snow_builder()
        .local_private_key(&dev_priv)
        .unwrap()
        .remote_public_key(gw_pub.as_bytes())
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut ours = Responder::new(rs, e, PROLOGUE);

    let mut m1 = [0u8; 256];
    let n = theirs.write_message(b"init", &mut m1).unwrap();
    let mut p = [0u8; 256];
    let (k, device) = ours.read_message(&m1[..n], &mut p).unwrap();
    assert_eq!(&p[..k], b"init");
    assert_eq!(device, s.public_key());

    let mut m2 = [0u8; 256];
    let (n, mut keys) = ours.write_message(b"resp", &mut m2).unwrap();
    let k = theirs.read_message(&m2[..n], &mut p).unwrap();
    assert_eq!(&p[..k], b"resp");
    assert_eq!(&keys.handshake_hash[..], theirs.get_handshake_hash());

    let mut t = theirs.into_transport_mode().unwrap();
    let mut msg = [0u8; 512];
    let n = t.write_message(b"record one", &mut msg).unwrap();
    let (body, tag) = msg[..n].split_at_mut(n - 16);
    let tag: [u8; 16] = tag.try_into().unwrap();
    keys.recv.open(&[], body, &tag).unwrap();
    assert_eq!(body, b"record one");
}

/// A device built on snow, speaking the wire format from SPEC.md, brings a
/// real gateway `Session` up to HELLO and exchanges frames.
#[test]
fn snow_device_against_gateway_session() {
    let mut rng = Rng::new(77);
    let now = Instant::from_millis(0);
    let mut gw = gateway_with(Config::GATEWAY, &mut rng, now);
    let dev_priv = fixed_key(DEVICE_KEY).to_bytes();
    let gw_pub = fixed_key(GATEWAY_KEY).public_key();
    let mut hs = snow_builder()
        .local_private_key(&dev_priv)
        .unwrap()
        .remote_public_key(gw_pub.as_bytes())
        .unwrap()
        .prologue(PROLOGUE)
        .unwrap()
        .build_initiator()
        .unwrap();

    let mut payload = [0u8; 16];
    let plen = InitPayload {
        min_version: 1,
        max_version: 1,
        timestamp: 42,
        ciphers: proto::Ciphers::NONE,
    }
    .emit(&mut payload)
    .unwrap();
    let mut m1 = vec![0u8; 256];
    let n = hs.write_message(&payload[..plen], &mut m1[3..]).unwrap();
    m1[..2].copy_from_slice(&((n + 1) as u16).to_be_bytes());
    m1[2] = MSG_INIT;
    let evs = feed(&mut gw, now, &m1[..n + 3]);
    assert_eq!(
        evs,
        vec![Ev::Authenticate {
            device: fixed_key(DEVICE_KEY).public_key(),
            timestamp: 42
        }]
    );
    gw.accept().unwrap();
    let m2 = drain(&mut gw, now);
    assert!(m2.len() <= 256 && m1.len() <= 256);
    let mut p = [0u8; 256];
    let k = hs.read_message(&m2[3..], &mut p).unwrap();
    let resp = RespPayload::parse(&p[..k]).unwrap();
    assert_eq!(resp.params, Config::GATEWAY.params);
    let mut t = hs.into_transport_mode().unwrap();

    let seal = |t: &mut snow::TransportState, plain: &[u8]| {
        let mut out = vec![0u8; plain.len() + 18];
        let n = t.write_message(plain, &mut out[2..]).unwrap();
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        out.truncate(n + 2);
        out
    };
    let h = hello();
    let mut body = vec![0u8; h.buffer_len()];
    let bn = h.emit(&mut body).unwrap();
    let mut frame = vec![0x08];
    frame.extend_from_slice(&(bn as u16).to_be_bytes());
    frame.extend_from_slice(&body[..bn]);
    frame.extend_from_slice(&[0x01, 0xde, 0xad, 0xbe, 0xef]); // and a PING
    let evs = feed(&mut gw, now, &seal(&mut t, &frame));
    assert_eq!(
        evs,
        vec![Ev::Hello {
            device_id: "plc-7".into()
        }]
    );
    let out = drain(&mut gw, now);
    let mut plain = [0u8; 64];
    let k = t.read_message(&out[2..], &mut plain).unwrap();
    assert_eq!(&plain[..k], &[0x02, 0xde, 0xad, 0xbe, 0xef], "PONG");
    let _ = SecretKey::from_bytes([0; 32]);
}
