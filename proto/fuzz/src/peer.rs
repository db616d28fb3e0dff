//! The two ends of a link with fixed keys: a gateway `Session`, a device
//! `Session`, and a hand-driven device that speaks real Noise and seals any
//! plaintext, so a target can hand the gateway records a `Session` would
//! never write (the same approach as `proto/tests/common/raw.rs`).
//!
//! Everything here is deterministic: static and ephemeral keys are fixed,
//! so the handshake messages are the same on every run and a seed can
//! carry records sealed under the resulting keys.

use std::sync::OnceLock;

use proto::noise::{CipherState, Initiator, Responder, TAG_LEN};
use proto::session::{MSG_INIT, MSG_RESP, PROLOGUE};
use proto::wire::{FrameRepr, InitPayload, Params, RespPayload, Service, ServiceKind, StrList};
use proto::{Buffers, Config, Event, Hello, Instant, SecretKey, ServiceList, Session, StreamSlot};

/// A session over heap buffers, as the gateway keeps them.
pub type Sess = Session<Vec<u8>, Vec<StreamSlot>>;

/// The device's static key.
pub const DEVICE_KEY: [u8; 32] = [0x11; 32];
/// The gateway's static key.
pub const GATEWAY_KEY: [u8; 32] = [0x22; 32];
/// The device's ephemeral key.
pub const DEVICE_EPHEMERAL: [u8; 32] = [0x33; 32];
/// The gateway's ephemeral key.
pub const GATEWAY_EPHEMERAL: [u8; 32] = [0x44; 32];
/// The device's handshake timestamp.
pub const TIMESTAMP: u64 = 1;
/// Where every target's clock starts.
pub const START: Instant = Instant::from_millis(1_000);

/// The InitPayload a real device sends.
pub const INIT: InitPayload = InitPayload {
    min_version: proto::session::VERSION_MIN,
    max_version: proto::session::VERSION_MAX,
    timestamp: TIMESTAMP,
    ciphers: proto::Ciphers::NONE,
};

static PROTOCOLS: [&str; 2] = ["readings.v1", "chat"];
static SERVICES: [Service<'static>; 2] = [
    Service {
        name: "web",
        kind: ServiceKind::Http,
        subprotocols: StrList::Slice(&PROTOCOLS),
    },
    Service {
        name: "shell",
        kind: ServiceKind::Raw,
        subprotocols: StrList::Slice(&[]),
    },
];

/// The device's HELLO, announcing `params`.
pub fn hello(params: Params) -> Hello<'static> {
    Hello {
        device_id: "plc-7",
        firmware: "1.2.3",
        params,
        max_head: 1024,
        services: ServiceList::Slice(&SERVICES),
    }
}

/// An encoded HELLO body.
pub fn encode_hello(hello: &Hello<'_>) -> Vec<u8> {
    let mut body = vec![0; hello.buffer_len()];
    let n = hello.emit(&mut body).expect("the HELLO encodes");
    body.truncate(n);
    body
}

/// Encoded frames, back to back.
pub fn encode_frames(frames: &[FrameRepr<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let start = out.len();
        out.resize(start + f.buffer_len(), 0);
        let n = f.emit(&mut out[start..]).expect("the frame encodes");
        out.truncate(start + n);
    }
    out
}

/// A gateway session with the fixed keys: `tx` bytes of staging buffer and
/// a table of `streams` slots.
pub fn gateway(config: Config, tx: usize, streams: usize) -> Sess {
    let buffers = Buffers {
        rx: vec![0; usize::from(config.params.max_record)],
        tx: vec![0; tx.max(proto::session::MAX_HANDSHAKE)],
        streams: vec![StreamSlot::default(); streams],
    };
    Session::gateway(
        config,
        SecretKey::from_bytes(GATEWAY_KEY),
        SecretKey::from_bytes(GATEWAY_EPHEMERAL),
        buffers,
        START,
    )
    .expect("gateway session")
}

/// A device session with the fixed keys and the standard HELLO.
pub fn device(config: Config) -> Sess {
    let buffers = Buffers {
        rx: vec![0; usize::from(config.params.max_record)],
        tx: vec![0; usize::from(config.params.max_record)],
        streams: vec![StreamSlot::default(); usize::from(config.params.max_streams) + 2],
    };
    Session::device(
        config,
        SecretKey::from_bytes(DEVICE_KEY),
        SecretKey::from_bytes(GATEWAY_KEY).public_key(),
        SecretKey::from_bytes(DEVICE_EPHEMERAL),
        TIMESTAMP,
        &hello(config.params),
        buffers,
        START,
    )
    .expect("device session")
}

/// A handshake message: `u16 length | type | body`.
fn handshake_message(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u16).to_be_bytes().to_vec();
    out.push(ty);
    out.extend_from_slice(body);
    out
}

/// The first handshake message of the fixed device, carrying `payload`
/// (a real device sends [`INIT`] encoded), and the initiator to finish with.
pub fn msg1_with(payload: &[u8]) -> (Vec<u8>, Initiator) {
    let mut hs = Initiator::new(
        SecretKey::from_bytes(DEVICE_KEY),
        SecretKey::from_bytes(GATEWAY_KEY).public_key(),
        SecretKey::from_bytes(DEVICE_EPHEMERAL),
        PROLOGUE,
    );
    let mut body = vec![0; proto::noise::MSG1_OVERHEAD + payload.len()];
    let n = hs
        .write_message(payload, &mut body)
        .expect("msg1 fits its buffer");
    (handshake_message(MSG_INIT, &body[..n]), hs)
}

/// The first handshake message of a real device.
pub fn msg1() -> (Vec<u8>, Initiator) {
    let mut p = [0; InitPayload::LEN];
    let n = INIT.emit(&mut p).expect("the InitPayload encodes");
    msg1_with(&p[..n])
}

/// The fixed gateway's answer to `msg1` (a whole handshake message, prefix
/// included), carrying `payload`; `None` if `msg1` does not authenticate.
pub fn msg2_with(msg1: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let mut hs = Responder::new(
        SecretKey::from_bytes(GATEWAY_KEY),
        SecretKey::from_bytes(GATEWAY_EPHEMERAL),
        PROLOGUE,
    );
    let mut scratch = [0; 256];
    hs.read_message(msg1.get(3..)?, &mut scratch).ok()?;
    let mut body = vec![0; proto::noise::MSG2_OVERHEAD + payload.len()];
    let (n, _) = hs.write_message(payload, &mut body).ok()?;
    Some(handshake_message(MSG_RESP, &body[..n]))
}

/// The answer of an accepting gateway announcing `params`.
pub fn accepted(params: Params) -> RespPayload {
    RespPayload {
        status: proto::wire::Status::Accepted,
        version: proto::session::VERSION_MAX,
        info: 0,
        params,
        cipher: proto::Cipher::ChaCha20Poly1305,
    }
}

/// Feeds `bytes` to `s` until all are taken or it stops taking them,
/// accepting on `Authenticate`; returns how many events it saw.
pub fn feed_accepting(s: &mut Sess, now: Instant, bytes: &[u8]) -> usize {
    let mut off = 0;
    let mut events = 0;
    loop {
        let n = s.handle_input(now, &bytes[off..]);
        off += n;
        let mut any = false;
        while let Some(ev) = s.poll_event() {
            any = true;
            events += 1;
            if matches!(ev, Event::Authenticate { .. }) {
                let _ = s.accept();
            }
        }
        if (off >= bytes.len() || n == 0) && !any {
            return events;
        }
    }
}

/// Everything `s` wants to send now, concatenated.
pub fn drain(s: &mut Sess, now: Instant) -> Vec<u8> {
    let mut out = vec![0; 70_000];
    let mut all = Vec::new();
    while let Some(n) = s.poll_transmit(now, &mut out) {
        all.extend_from_slice(&out[..n]);
    }
    all
}

/// The device end of a link, driven by hand: its transport keys.
pub struct Device {
    /// Seals what the device sends.
    pub send: CipherState,
    /// Opens what the gateway sends.
    pub recv: CipherState,
}

/// The fixed device's handshake, done once per process.
struct Fixed {
    msg1: Vec<u8>,
    /// The device's raw transport keys: (send, receive).
    keys: ([u8; 32], [u8; 32]),
}

/// Runs the fixed handshake once: proto's initiator writes msg1, snow (an
/// independent implementation, with the same ephemeral key) must write the
/// same bytes, reads a real gateway's msg2 and gives up its raw split. The
/// keys depend only on the four keys, not on the payloads, so they hold
/// for a gateway of any configuration.
fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let (msg1, _) = msg1();
        let gateway_public = SecretKey::from_bytes(GATEWAY_KEY).public_key();
        let params = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
            .parse()
            .expect("pattern name");
        let mut theirs = snow::Builder::new(params)
            .local_private_key(&DEVICE_KEY)
            .and_then(|b| b.remote_public_key(gateway_public.as_bytes()))
            .and_then(|b| b.prologue(PROLOGUE))
            .map(|b| b.fixed_ephemeral_key_for_testing_only(&DEVICE_EPHEMERAL))
            .and_then(|b| b.build_initiator())
            .expect("snow initiator");
        let mut init = [0; InitPayload::LEN];
        INIT.emit(&mut init).expect("the InitPayload encodes");
        let mut body = [0; 256];
        let n = theirs.write_message(&init, &mut body).expect("snow msg1");
        assert_eq!(&body[..n], &msg1[3..], "proto and snow disagree on msg1");

        let mut gw = gateway(Config::GATEWAY, 1024, 4);
        feed_accepting(&mut gw, START, &msg1);
        let msg2 = drain(&mut gw, START);
        let mut payload = [0; 256];
        theirs
            .read_message(&msg2[3..], &mut payload)
            .expect("snow reads proto's msg2");
        let keys = theirs.dangerously_get_raw_split();
        Fixed { msg1, keys }
    })
}

impl Device {
    /// Finishes the handshake begun with `hs` by reading `msg2` (prefix
    /// included). `None` if it does not authenticate or its payload does not
    /// decode.
    pub fn finish(hs: Initiator, msg2: &[u8]) -> Option<Self> {
        let mut payload = [0; 256];
        let (n, keys) = hs.read_message(msg2.get(3..)?, &mut payload).ok()?;
        RespPayload::parse(&payload[..n]).ok()?;
        Some(Self {
            send: keys.send,
            recv: keys.recv,
        })
    }

    /// Runs the handshake against `gw`, accepting on its `Authenticate`,
    /// without the HELLO. The device's half is done once per process (see
    /// `fixed`), so this costs the gateway's half only. Panics if `gw` does
    /// not answer: with fixed keys that is a harness bug, not a finding.
    pub fn connect(gw: &mut Sess, now: Instant) -> Self {
        let fixed = fixed();
        feed_accepting(gw, now, &fixed.msg1);
        let msg2 = drain(gw, now);
        let expected = 3 + proto::noise::MSG2_OVERHEAD + RespPayload::LEN;
        assert_eq!(msg2.len(), expected, "the gateway answers msg1");
        assert_eq!(msg2[2], MSG_RESP);
        Self {
            send: CipherState::new(&fixed.keys.0),
            recv: CipherState::new(&fixed.keys.1),
        }
    }

    /// A record carrying `plaintext`: `u16 length | ciphertext | tag`.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut out = ((plaintext.len() + TAG_LEN) as u16).to_be_bytes().to_vec();
        out.extend_from_slice(plaintext);
        let tag = self
            .send
            .seal(&[], &mut out[2..])
            .expect("nonces left in a fuzz run");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens one record (prefix included) the gateway sent; `None` if it
    /// does not authenticate or its length prefix is wrong.
    pub fn open(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        let len = usize::from(u16::from_be_bytes([*record.first()?, *record.get(1)?]));
        if record.len() != 2 + len || len < TAG_LEN {
            return None;
        }
        let (body, tag) = record[2..].split_at(len - TAG_LEN);
        let mut body = body.to_vec();
        let mut t = [0; TAG_LEN];
        t.copy_from_slice(tag);
        self.recv.open(&[], &mut body, &t).ok()?;
        Some(body)
    }
}
