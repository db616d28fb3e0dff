//! The handshake as an attacker reaches it: a gateway `Session` reading an
//! arbitrary first message (raw, or a real msg1 around a chosen payload
//! plaintext), a device `Session` reading an arbitrary answer (raw, or a
//! real msg2 around a chosen payload), then whatever bytes follow. Input
//! layout: `proto_fuzz::script` ("handshake").
//!
//! Checked: no panic; `handle_input` always makes progress once events are
//! drained; at most one `Closed`, and nothing after it; a second
//! `Authenticate` or a `Connected` on the gateway never happens; the
//! handshake timeout ends every session that is not up. Beside the sessions,
//! the raw bytes also go straight into `Responder::read_message` /
//! `Initiator::read_message`, and every payload into `InitPayload::parse`
//! and `RespPayload::parse`, whose results must re-encode to their input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::noise::Responder;
use proto::wire::{InitPayload, RespPayload, Status};
use proto::{Config, Event, Instant, Role, SecretKey};
use proto_fuzz::peer::{self, Sess};
use proto_fuzz::script::mode;
use proto_fuzz::{Input, peer::START, trace};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8() % 4;
    let decision = input.u8();
    let chunk = usize::from(input.u8());

    let (mut session, stream) = match mode {
        mode::GATEWAY_RAW => {
            let raw = input.rest();
            responder_reads(raw);
            (peer::gateway(Config::GATEWAY, 1024, 4), raw.to_vec())
        }
        mode::GATEWAY_PAYLOAD => {
            let len = usize::from(input.u8());
            let payload = input.bytes(len);
            check_payloads(payload);
            let (mut bytes, _) = peer::msg1_with(payload);
            // A msg1 longer than MAX_HANDSHAKE is refused by length alone.
            bytes.extend_from_slice(input.rest());
            (peer::gateway(Config::GATEWAY, 1024, 4), bytes)
        }
        mode::DEVICE_RAW => {
            let raw = input.rest();
            check_payloads(raw);
            let (_, hs) = peer::msg1();
            // Reading any answer must not panic; the result does not matter
            // (the seeds hold the real msg2).
            let _ = peer::Device::finish(hs, raw);
            let mut device = peer::device(Config::DEVICE);
            let _ = peer::drain(&mut device, START);
            (device, raw.to_vec())
        }
        _ => {
            let len = usize::from(input.u8());
            let payload = input.bytes(len);
            check_payloads(payload);
            let mut device = peer::device(Config::DEVICE);
            let m1 = peer::drain(&mut device, START);
            let mut bytes = peer::msg2_with(&m1, payload).expect("the device's own msg1 reads");
            bytes.extend_from_slice(input.rest());
            (device, bytes)
        }
    };
    drive(&mut session, &stream, chunk, decision);
});

/// Feeds `bytes` in chunks, answering `Authenticate` as `decision` says;
/// then runs the clock past the handshake timeout.
fn drive(s: &mut Sess, bytes: &[u8], chunk: usize, decision: u8) {
    let chunk = if chunk == 0 {
        bytes.len().max(1)
    } else {
        chunk
    };
    let out_len = match decision >> 4 {
        0 => 70_000,
        n => usize::from(n) * 16,
    };
    let role = s.role();
    let mut out = vec![0u8; out_len];
    let mut closed = 0;
    let mut authenticated = false;
    let mut off = 0;
    let now = START;
    for _ in 0..=bytes.len() + 8 {
        let end = (off + chunk).min(bytes.len());
        let n = s.handle_input(now, &bytes[off..end]);
        assert!(n <= end - off);
        off += n;
        let mut any = false;
        while let Some(ev) = s.poll_event() {
            any = true;
            trace!("{role:?} event {ev:?}");
            assert_eq!(closed, 0, "event after Closed: {ev:?}");
            match ev {
                Event::Authenticate { .. } => {
                    assert!(!authenticated, "second Authenticate");
                    assert_eq!(role, Role::Gateway);
                    authenticated = true;
                    match decision & 3 {
                        0 => {
                            let _ = s.accept();
                        }
                        1 => {
                            let status = match decision >> 2 & 3 {
                                0 => Status::Accepted,
                                1 => Status::VersionUnsupported,
                                2 => Status::StaleTimestamp,
                                _ => Status::Busy,
                            };
                            s.reject(status, u64::from(decision));
                        }
                        2 => s.refuse(),
                        _ => {}
                    }
                }
                Event::Connected { .. } => assert_eq!(role, Role::Device),
                Event::Closed(_) => closed += 1,
                _ => {}
            }
        }
        while let Some(len) = s.poll_transmit(now, &mut out) {
            trace!("{role:?} sends {len} bytes");
            assert!(len <= out.len());
        }
        if off >= bytes.len() && !any {
            break;
        }
        assert!(
            n > 0 || any,
            "handle_input took nothing and no event is pending"
        );
    }
    let later = Instant::from_millis(START.as_millis() + 11_000);
    s.handle_timeout(later);
    if !s.is_established() {
        assert!(
            s.poll_timeout().is_none(),
            "a stuck handshake outlives its timeout"
        );
    }
    while let Some(ev) = s.poll_event() {
        trace!("{role:?} event {ev:?}");
        if let Event::Closed(_) = ev {
            closed += 1;
        }
    }
    assert!(closed <= 1, "{closed} Closed events");
}

/// The gateway's Noise step alone, on the message body after the header.
fn responder_reads(raw: &[u8]) {
    let mut hs = Responder::new(
        SecretKey::from_bytes(peer::GATEWAY_KEY),
        SecretKey::from_bytes(peer::GATEWAY_EPHEMERAL),
        proto::session::PROLOGUE,
    );
    let mut payload = [0u8; 512];
    let body = raw.get(3..).unwrap_or(&[]);
    if let Ok((n, _)) = hs.read_message(body, &mut payload) {
        // Only the real msg1 of the seeds gets here.
        check_payloads(&payload[..n]);
    }
    // A payload buffer too small must be refused, not overrun.
    let _ = hs.read_message(body, &mut payload[..1]);
}

/// Both payload decoders; what parses re-encodes to the bytes it read.
fn check_payloads(bytes: &[u8]) {
    if let Ok(p) = InitPayload::parse(bytes) {
        let mut out = [0u8; InitPayload::MAX_LEN];
        let n = p.emit(&mut out).expect("InitPayload encodes");
        assert_eq!(&out[..n], &bytes[..n]);
        assert_eq!(InitPayload::parse(&out[..n]), Ok(p));
    }
    if let Ok(p) = RespPayload::parse(bytes) {
        let mut out = [0u8; RespPayload::MAX_LEN];
        let n = p.emit(&mut out).expect("RespPayload encodes");
        assert_eq!(&out[..n], &bytes[..n]);
        assert_eq!(RespPayload::parse(&out[..n]), Ok(p));
    }
}
