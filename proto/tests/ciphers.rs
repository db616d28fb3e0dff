//! The record cipher (SPEC.md §3.3, §4.2, §4.4): AES-256-GCM only when
//! the device offers it and the gateway accepts it, ChaCha20-Poly1305
//! otherwise; a device refuses a choice it did not offer; records under
//! the wrong cipher fail.

mod common;

use common::raw::{RawDevice, drain, feed};
use common::*;
use proto::noise::Responder;
use proto::session::{MSG_RESP, PROLOGUE};
use proto::wire::{FrameRepr, InitPayload, RespPayload, Status, WireError};
use proto::{Cipher, Ciphers, CloseReason, Config, Instant, MsgKind, SessionError, StreamKind};

const AES: Ciphers = Ciphers::AES_256_GCM;
const NONE: Ciphers = Ciphers::NONE;

fn with(c: Config, ciphers: Ciphers) -> Config {
    Config { ciphers, ..c }
}

/// AES-256-GCM when this build has it (proto's `ring` feature), else what
/// every build falls back to.
fn aes_if_built() -> Cipher {
    if Ciphers::supported().contains(AES) {
        Cipher::Aes256Gcm
    } else {
        Cipher::ChaCha20Poly1305
    }
}

fn closed_with(evs: &[Ev]) -> Option<CloseReason> {
    evs.iter().find_map(|e| match e {
        Ev::Closed(r) => Some(*r),
        _ => None,
    })
}

#[test]
fn aes_gcm_only_when_both_sides_have_it() {
    for (seed, dev, gw, aes) in [
        (40, NONE, NONE, false),
        (41, AES, NONE, false),
        (42, NONE, AES, false),
        (43, AES, AES, true),
        // Unknown bits in either offer change nothing.
        (44, Ciphers(0xfe), Ciphers(0xff), false),
        (45, Ciphers(0xff), Ciphers(0xff), true),
    ] {
        let mut sim = Sim::new(seed, with(Config::DEVICE, dev), with(Config::GATEWAY, gw));
        sim.connect();
        let want = if aes {
            aes_if_built()
        } else {
            Cipher::ChaCha20Poly1305
        };
        assert_eq!(
            (sim.device.cipher(), sim.gateway.cipher()),
            (want, want),
            "device offers {dev:?}, gateway {gw:?}"
        );
        // A message each way under it.
        let id = sim.gateway.open(StreamKind::Raw, 0).unwrap();
        for (from, data) in [(Side::Gateway, &b"down"[..]), (Side::Device, &b"up"[..])] {
            sim.session(from)
                .send(id, MsgKind::Bytes, data, false, false)
                .unwrap();
            let (de, ge) = sim.settle();
            let got = if from == Side::Gateway { de } else { ge };
            assert!(
                got.iter()
                    .any(|e| matches!(e, Ev::Data { data: d, .. } if d == data)),
                "{from:?}: {got:?}"
            );
        }
    }
}

/// On the wire: msg2 carries the choice, the HELLO sealed under it goes
/// through, and the same record sealed under ChaCha20-Poly1305 (a device
/// that ignored the choice) ends the session as a failed authentication.
#[test]
fn records_must_use_the_chosen_cipher() {
    for (seed, ignore_choice) in [(46, false), (47, true)] {
        let mut rng = Rng::new(seed);
        let now = Instant::from_millis(5);
        let mut gw = gateway_with(with(Config::GATEWAY, AES), &mut rng, now);
        let init = InitPayload {
            min_version: 1,
            max_version: 1,
            timestamp: 1,
            ciphers: AES,
        };
        let mut dev = RawDevice::connect_with(&mut gw, now, rng.key(), init, !ignore_choice)
            .expect("handshake");
        assert_eq!(dev.resp.cipher, aes_if_built());
        if ignore_choice && aes_if_built() == Cipher::ChaCha20Poly1305 {
            continue;
        }
        assert_eq!(
            dev.send.cipher(),
            if ignore_choice {
                Cipher::ChaCha20Poly1305
            } else {
                aes_if_built()
            }
        );
        let hello = dev.hello_record();
        let evs = feed(&mut gw, now, &hello);
        if ignore_choice {
            assert_eq!(
                closed_with(&evs),
                Some(CloseReason::Error(SessionError::Decrypt)),
                "{evs:?}"
            );
        } else {
            assert!(matches!(evs.as_slice(), [Ev::Hello { .. }]), "{evs:?}");
            let ping = dev.frames(&[FrameRepr::Ping { token: 7 }]);
            feed(&mut gw, now, &ping);
            let back = dev.open_all(&drain(&mut gw, now));
            assert!(
                !back.is_empty(),
                "the gateway's answer opens under the chosen cipher"
            );
        }
    }
}

/// A gateway's msg2 with its payload bytes as given, in answer to a real
/// device's msg1 (which offers no cipher beyond ChaCha20-Poly1305): the
/// device's events and what it sends next.
fn answer_with(seed: u64, payload: &[u8]) -> (Vec<Ev>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let now = Instant::from_millis(0);
    let mut dev = device_with(Config::DEVICE, &mut rng, 1, now);
    let m1 = drain(&mut dev, now);
    let mut gw = Responder::new(fixed_key(GATEWAY_KEY), rng.key(), PROLOGUE);
    let mut p = [0u8; 64];
    let (n, _) = gw.read_message(&m1[3..], &mut p).unwrap();
    assert_eq!(InitPayload::parse(&p[..n]).unwrap().ciphers, NONE);
    let mut m2 = vec![0u8; 256];
    let (len, _) = gw.write_message(payload, &mut m2[3..]).unwrap();
    m2[..2].copy_from_slice(&((len + 1) as u16).to_be_bytes());
    m2[2] = MSG_RESP;
    m2.truncate(len + 3);
    let evs = feed(&mut dev, now, &m2);
    (evs, drain(&mut dev, now))
}

#[test]
fn a_device_refuses_a_cipher_it_did_not_offer() {
    let resp = RespPayload {
        status: Status::Accepted,
        version: 1,
        info: 0,
        params: Config::GATEWAY.params,
        cipher: Cipher::Aes256Gcm,
    };
    let mut p = [0u8; RespPayload::MAX_LEN + 1];
    let n = resp.emit(&mut p).unwrap();
    let bad_cipher = Some(CloseReason::Error(SessionError::Payload(
        WireError::BadValue("cipher"),
    )));
    // AES-256-GCM, never offered: closed, nothing sent (no HELLO).
    let (evs, sent) = answer_with(48, &p[..n]);
    assert_eq!((closed_with(&evs), sent.len()), (bad_cipher, 0));
    // A cipher this document does not define.
    p[22] = 7;
    let (evs, sent) = answer_with(49, &p[..n]);
    assert_eq!((closed_with(&evs), sent.len()), (bad_cipher, 0));
    // ChaCha20-Poly1305 written out (a byte the gateway may leave out) is
    // what the device expects: it connects and sends its HELLO.
    p[22] = 0;
    let (evs, sent) = answer_with(50, &p[..n]);
    assert!(evs.contains(&Ev::Connected), "{evs:?}");
    assert!(!sent.is_empty());
}
