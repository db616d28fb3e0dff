//! A hand-driven device: performs the handshake with `proto::noise` directly
//! and seals any plaintext the test wants, so tests can send frames the real
//! `Session` would never produce.

use proto::noise::{CipherState, Initiator};
use proto::session::{MSG_INIT, PROLOGUE};
use proto::wire::{FrameRepr, InitPayload, RespPayload};
use proto::{Instant, SecretKey};

use super::{DEVICE_KEY, Ev, GATEWAY_KEY, Sess, fixed_key, own};

pub struct RawDevice {
    pub send: CipherState,
    pub recv: CipherState,
    pub resp: RespPayload,
}

/// First handshake message bytes (with length prefix and type).
pub fn msg1(key: SecretKey, eph: SecretKey, init: InitPayload) -> (Vec<u8>, Initiator) {
    let mut hs = Initiator::new(key, fixed_key(GATEWAY_KEY).public_key(), eph, PROLOGUE);
    let mut p = [0u8; 64];
    let n = init.emit(&mut p).unwrap();
    let mut out = vec![0u8; 256];
    let len = hs.write_message(&p[..n], &mut out[3..]).unwrap();
    out[..2].copy_from_slice(&((len + 1) as u16).to_be_bytes());
    out[2] = MSG_INIT;
    out.truncate(len + 3);
    (out, hs)
}

/// Feeds all of `bytes` to `s`, returning the events.
pub fn feed(s: &mut Sess, now: Instant, bytes: &[u8]) -> Vec<Ev> {
    let mut events = Vec::new();
    let mut off = 0;
    loop {
        let n = s.handle_input(now, &bytes[off..]);
        off += n;
        let mut any = false;
        while let Some(ev) = s.poll_event() {
            any = true;
            events.push(own(ev));
        }
        if (off >= bytes.len() || n == 0) && !any {
            break;
        }
    }
    events
}

/// Everything `s` wants to send now, concatenated.
pub fn drain(s: &mut Sess, now: Instant) -> Vec<u8> {
    let mut out = vec![0u8; 70_000];
    let mut all = Vec::new();
    while let Some(n) = s.poll_transmit(now, &mut out) {
        all.extend_from_slice(&out[..n]);
    }
    all
}

impl RawDevice {
    /// Runs the handshake against `gw` (accepting on Authenticate), without HELLO.
    pub fn connect(
        gw: &mut Sess,
        now: Instant,
        eph: SecretKey,
        init: InitPayload,
    ) -> Result<Self, Vec<Ev>> {
        Self::connect_with(gw, now, eph, init, true)
    }

    /// The same; with `follow_choice` false, the records stay
    /// ChaCha20-Poly1305 whatever cipher the gateway chose.
    pub fn connect_with(
        gw: &mut Sess,
        now: Instant,
        eph: SecretKey,
        init: InitPayload,
        follow_choice: bool,
    ) -> Result<Self, Vec<Ev>> {
        let (m1, hs) = msg1(fixed_key(DEVICE_KEY), eph, init);
        let evs = feed(gw, now, &m1);
        if !evs.iter().any(|e| matches!(e, Ev::Authenticate { .. })) {
            return Err(evs);
        }
        let _ = gw.accept();
        let m2 = drain(gw, now);
        let mut payload = [0u8; 256];
        let (n, keys) = hs
            .read_message(&m2[3..], &mut payload)
            .map_err(|_| Vec::new())?;
        let resp = RespPayload::parse(&payload[..n]).map_err(|_| Vec::new())?;
        let (mut send, mut recv) = (keys.send, keys.recv);
        // Records under the cipher the gateway chose.
        if follow_choice && !(send.set_cipher(resp.cipher) && recv.set_cipher(resp.cipher)) {
            return Err(Vec::new());
        }
        Ok(Self { send, recv, resp })
    }

    /// A record carrying `plaintext`.
    pub fn record(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut body = plaintext.to_vec();
        let tag = self.send.seal(&[], &mut body).unwrap();
        let mut out = ((body.len() + 16) as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        out
    }

    /// A record of the given frames.
    pub fn frames(&mut self, frames: &[FrameRepr<'_>]) -> Vec<u8> {
        let mut p = Vec::new();
        for f in frames {
            let mut b = vec![0u8; f.buffer_len()];
            let n = f.emit(&mut b).unwrap();
            p.extend_from_slice(&b[..n]);
        }
        self.record(&p)
    }

    /// The HELLO record of `super::hello()`.
    pub fn hello_record(&mut self) -> Vec<u8> {
        let h = super::hello();
        let mut body = vec![0u8; h.buffer_len()];
        let n = h.emit(&mut body).unwrap();
        self.frames(&[FrameRepr::Hello { body: &body[..n] }])
    }

    /// Decrypts the records in `bytes` and returns all frames, owned.
    pub fn open_all(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + 2 <= bytes.len() {
            let len = usize::from(u16::from_be_bytes([bytes[off], bytes[off + 1]]));
            let rec = &bytes[off + 2..off + 2 + len];
            let (body, tag) = rec.split_at(len - 16);
            let mut body = body.to_vec();
            let mut t = [0u8; 16];
            t.copy_from_slice(tag);
            self.recv
                .open(&[], &mut body, &t)
                .expect("gateway record decrypts");
            let mut p = 0;
            while p < body.len() {
                let (_, n) = FrameRepr::decode(&body[p..]).expect("gateway frame decodes");
                out.push(body[p..p + n].to_vec());
                p += n;
            }
            off += 2 + len;
        }
        out
    }
}
