//! The hex test vectors of `SPEC.md`, checked byte for byte against the code.
//!
//! Every vector is a fenced block in SPEC.md whose info string is
//! `hex name=<name>`. Inside, whitespace is ignored and `#` starts a comment
//! that runs to the end of the line. The tests fail when a block they expect
//! is missing, when SPEC.md carries a block no test checks, and when a block
//! differs from what the code produces, so the specification and the code
//! cannot drift apart.
//!
//! Three implementations must agree on the handshake vectors: `proto` itself
//! (driven through the real `Session` API), `snow`, and the straight-line
//! Noise IK in [`reference`] below, which also yields the intermediate
//! values SPEC.md publishes for implementers.

mod common;

use std::collections::HashMap;

use common::{Ev, hello, own};
use proto::wire::{
    DATA_HEADER_MAX, Frame, FrameRepr, Header, HeaderList, InitPayload, RequestHead, RespPayload,
    ResponseHead, Status, WireError,
};
use proto::{
    Buffers, Code, Config, Hello, Instant, MsgKind, SecretKey, Session, StreamId, StreamKind,
    StreamSlot,
};

const SPEC: &str = include_str!("../SPEC.md");

const DEVICE_STATIC: [u8; 32] = [0x11; 32];
const GATEWAY_STATIC: [u8; 32] = [0x22; 32];
const DEVICE_EPHEMERAL: [u8; 32] = [0x33; 32];
const GATEWAY_EPHEMERAL: [u8; 32] = [0x44; 32];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every `hex name=` block of SPEC.md, in document order (duplicates kept).
fn spec_blocks() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.trim().strip_prefix("```hex") else {
            continue;
        };
        let name = info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("name="))
            .unwrap_or_else(|| panic!("hex block without a name: {line}"));
        let mut digits = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            let l = l.split('#').next().unwrap_or("");
            digits.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        assert!(
            digits.len().is_multiple_of(2) && digits.chars().all(|c| c.is_ascii_hexdigit()),
            "block {name} is not hex: {digits}"
        );
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect();
        out.push((name.to_string(), bytes));
    }
    out
}

/// SPEC.md's blocks by name; panics on a duplicate name.
fn spec() -> HashMap<String, Vec<u8>> {
    let mut map = HashMap::new();
    for (name, bytes) in spec_blocks() {
        assert!(
            map.insert(name.clone(), bytes).is_none(),
            "SPEC.md has two blocks named {name}"
        );
    }
    map
}

fn block<'a>(spec: &'a HashMap<String, Vec<u8>>, name: &str) -> &'a [u8] {
    spec.get(name)
        .unwrap_or_else(|| panic!("SPEC.md lacks the block {name}"))
}

fn public(secret: [u8; 32]) -> Vec<u8> {
    SecretKey::from_bytes(secret).public_key().0.to_vec()
}

/// A straight-line Noise_IK_25519_ChaChaPoly_BLAKE2s, written from the Noise
/// specification (revision 34) independently of `proto::noise`, keeping the
/// intermediate values.
mod reference {
    use blake2::{Blake2s256, Digest};
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    use hmac::{Mac, SimpleHmac};
    use x25519_dalek::{PublicKey, StaticSecret};

    pub(crate) const NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";

    pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
        let mut d = Blake2s256::new();
        for p in parts {
            d.update(p);
        }
        d.finalize().into()
    }

    fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <SimpleHmac<Blake2s256> as Mac>::new_from_slice(key).unwrap();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    pub(crate) fn hkdf(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
        let temp = hmac(ck, &[ikm]);
        let o1 = hmac(&temp, &[&[1]]);
        let o2 = hmac(&temp, &[&o1, &[2]]);
        (o1, o2)
    }

    /// ChaCha20-Poly1305 with the Noise nonce: 4 zero bytes, `n` little-endian.
    pub(crate) fn seal(k: &[u8; 32], n: u64, ad: &[u8], pt: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let mut buf = pt.to_vec();
        let tag = ChaCha20Poly1305::new(k.into())
            .encrypt_in_place_detached(&nonce.into(), ad, &mut buf)
            .unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    pub(crate) fn open(k: &[u8; 32], n: u64, ad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let (body, tag) = ct.split_at(ct.len().checked_sub(16)?);
        let mut buf = body.to_vec();
        ChaCha20Poly1305::new(k.into())
            .decrypt_in_place_detached(&nonce.into(), ad, &mut buf, tag.into())
            .ok()?;
        Some(buf)
    }

    pub(crate) fn public(s: [u8; 32]) -> [u8; 32] {
        PublicKey::from(&StaticSecret::from(s)).to_bytes()
    }

    fn dh(s: [u8; 32], p: [u8; 32]) -> [u8; 32] {
        StaticSecret::from(s)
            .diffie_hellman(&PublicKey::from(p))
            .to_bytes()
    }

    pub(crate) struct Trace {
        /// `h` after the protocol name, the prologue and the pre-message.
        pub(crate) h0: [u8; 32],
        pub(crate) dh_es: [u8; 32],
        pub(crate) dh_ss: [u8; 32],
        pub(crate) dh_ee: [u8; 32],
        pub(crate) dh_se: [u8; 32],
        /// The Noise messages, without devlink's length and type.
        pub(crate) msg1: Vec<u8>,
        pub(crate) msg2: Vec<u8>,
        pub(crate) h: [u8; 32],
        /// Device → gateway.
        pub(crate) k1: [u8; 32],
        /// Gateway → device.
        pub(crate) k2: [u8; 32],
    }

    /// Both messages of IK: device static `s`, device ephemeral `e`,
    /// gateway static `rs`, gateway ephemeral `re`.
    pub(crate) fn ik(
        s: [u8; 32],
        e: [u8; 32],
        rs: [u8; 32],
        re: [u8; 32],
        prologue: &[u8],
        p1: &[u8],
        p2: &[u8],
    ) -> Trace {
        // InitializeSymmetric: the name is longer than 32 bytes, so h = HASH(name).
        assert!(NAME.len() > 32);
        let mut h = hash(&[NAME]);
        let mut ck = h;
        h = hash(&[&h, prologue]);
        h = hash(&[&h, &public(rs)]);
        let h0 = h;

        // -> e, es, s, ss
        let mut msg1 = public(e).to_vec();
        h = hash(&[&h, &public(e)]);
        let dh_es = dh(e, public(rs));
        let (c, k) = hkdf(&ck, &dh_es);
        ck = c;
        let enc_s = seal(&k, 0, &h, &public(s));
        h = hash(&[&h, &enc_s]);
        msg1.extend_from_slice(&enc_s);
        let dh_ss = dh(s, public(rs));
        let (c, k) = hkdf(&ck, &dh_ss);
        ck = c;
        let enc_p = seal(&k, 0, &h, p1);
        h = hash(&[&h, &enc_p]);
        msg1.extend_from_slice(&enc_p);

        // <- e, ee, se
        let mut msg2 = public(re).to_vec();
        h = hash(&[&h, &public(re)]);
        let dh_ee = dh(e, public(re));
        let (c, _) = hkdf(&ck, &dh_ee);
        ck = c;
        let dh_se = dh(s, public(re));
        let (c, k) = hkdf(&ck, &dh_se);
        ck = c;
        let enc_p = seal(&k, 0, &h, p2);
        h = hash(&[&h, &enc_p]);
        msg2.extend_from_slice(&enc_p);

        let (k1, k2) = hkdf(&ck, &[]);
        Trace {
            h0,
            dh_es,
            dh_ss,
            dh_ee,
            dh_se,
            msg1,
            msg2,
            h,
            k1,
            k2,
        }
    }
}

/// What the session API put on the wire during the scripted exchange.
struct Wire {
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    handshake_hash: [u8; 32],
    device_first: Vec<u8>,
    gateway_first: Vec<u8>,
    device_second: Vec<u8>,
}

fn request() -> RequestHead<'static> {
    static HEADERS: [Header<'static>; 2] = [
        Header {
            name: "host",
            value: b"plc-7.local",
        },
        Header {
            name: "accept",
            value: b"*/*",
        },
    ];
    RequestHead {
        method: "GET",
        target: "/api/status?x=1",
        headers: HeaderList::Slice(&HEADERS),
    }
}

fn response_101() -> ResponseHead<'static> {
    static HEADERS: [Header<'static>; 1] = [Header {
        name: "sec-websocket-protocol",
        value: b"readings.v1",
    }];
    ResponseHead {
        status: 101,
        headers: HeaderList::Slice(&HEADERS),
    }
}

fn response_200() -> ResponseHead<'static> {
    static HEADERS: [Header<'static>; 1] = [Header {
        name: "content-type",
        value: b"text/plain",
    }];
    ResponseHead {
        status: 200,
        headers: HeaderList::Slice(&HEADERS),
    }
}

fn encode_request(h: &RequestHead<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; h.buffer_len()];
    assert_eq!(h.emit(&mut buf).unwrap(), buf.len());
    buf
}

fn encode_response(h: &ResponseHead<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; h.buffer_len()];
    assert_eq!(h.emit(&mut buf).unwrap(), buf.len());
    buf
}

fn encode_frames(frames: &[FrameRepr<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        let mut buf = vec![0u8; f.buffer_len()];
        assert_eq!(f.emit(&mut buf).unwrap(), buf.len());
        out.extend_from_slice(&buf);
    }
    out
}

/// The handshake and first records, driven through the real session API
/// with the fixed keys of SPEC.md §11.1.
fn run_sessions() -> Wire {
    let now = Instant::from_millis(0);
    let bufs = |max_record: u16| Buffers {
        rx: vec![0u8; usize::from(max_record)],
        tx: vec![0u8; usize::from(max_record)],
        streams: vec![StreamSlot::default(); 4],
    };
    let mut dev: Session<Vec<u8>, Vec<StreamSlot>> = Session::device(
        Config::DEVICE,
        SecretKey::from_bytes(DEVICE_STATIC),
        SecretKey::from_bytes(GATEWAY_STATIC).public_key(),
        SecretKey::from_bytes(DEVICE_EPHEMERAL),
        1,
        &hello(),
        bufs(Config::DEVICE.params.max_record),
        now,
    )
    .unwrap();
    let mut gw: Session<Vec<u8>, Vec<StreamSlot>> = Session::gateway(
        Config::GATEWAY,
        SecretKey::from_bytes(GATEWAY_STATIC),
        SecretKey::from_bytes(GATEWAY_EPHEMERAL),
        bufs(Config::GATEWAY.params.max_record),
        now,
    )
    .unwrap();
    let mut out = vec![0u8; 70_000];

    let n = dev.poll_transmit(now, &mut out).unwrap();
    let msg1 = out[..n].to_vec();
    assert_eq!(dev.poll_transmit(now, &mut out), None);
    assert_eq!(gw.handle_input(now, &msg1), msg1.len());
    assert_eq!(
        gw.poll_event().map(own),
        Some(Ev::Authenticate {
            device: SecretKey::from_bytes(DEVICE_STATIC).public_key(),
            timestamp: 1
        })
    );
    gw.accept().unwrap();
    let n = gw.poll_transmit(now, &mut out).unwrap();
    let msg2 = out[..n].to_vec();
    assert_eq!(gw.poll_transmit(now, &mut out), None);

    assert_eq!(dev.handle_input(now, &msg2), msg2.len());
    assert_eq!(dev.poll_event().map(own), Some(Ev::Connected));
    assert_eq!(dev.handshake_hash(), gw.handshake_hash());
    assert_eq!(dev.peer_params(), Config::GATEWAY.params);
    let n = dev.poll_transmit(now, &mut out).unwrap();
    let device_first = out[..n].to_vec();
    assert_eq!(dev.poll_transmit(now, &mut out), None);

    assert_eq!(gw.handle_input(now, &device_first), device_first.len());
    assert_eq!(
        gw.poll_event().map(own),
        Some(Ev::Hello {
            device_id: "plc-7".into()
        })
    );
    assert!(gw.is_established());
    assert_eq!(gw.peer_params(), Config::DEVICE.params);

    // The gateway opens stream 2 and stages a request head; a PING is asked
    // for afterwards, yet goes first: control frames lead every record.
    let id = gw.open(StreamKind::Http, 0).unwrap();
    assert_eq!(id, StreamId::new(2).unwrap());
    let head = encode_request(&request());
    assert_eq!(
        gw.send(id, MsgKind::Head, &head, true, true),
        Ok(head.len())
    );
    gw.ping();
    let n = gw.poll_transmit(now, &mut out).unwrap();
    let gateway_first = out[..n].to_vec();
    assert_eq!(gw.poll_transmit(now, &mut out), None);

    assert_eq!(dev.handle_input(now, &gateway_first), gateway_first.len());
    let mut evs = Vec::new();
    while let Some(ev) = dev.poll_event() {
        evs.push(own(ev));
    }
    assert_eq!(
        evs,
        [
            Ev::Opened {
                stream: id,
                kind: StreamKind::Http,
                service: 0
            },
            Ev::Data {
                stream: id,
                msg: MsgKind::Head,
                end_msg: true,
                fin: true,
                data: head
            }
        ]
    );
    // The device answers: its PONG leads, then the staged response.
    let resp = encode_response(&response_200());
    assert_eq!(
        dev.send(id, MsgKind::Head, &resp, true, false),
        Ok(resp.len())
    );
    assert_eq!(dev.send(id, MsgKind::Bytes, b"ok", false, true), Ok(2));
    let n = dev.poll_transmit(now, &mut out).unwrap();
    let device_second = out[..n].to_vec();
    assert_eq!(dev.poll_transmit(now, &mut out), None);
    assert_eq!(gw.handle_input(now, &device_second), device_second.len());
    assert!(matches!(gw.poll_event().map(own), Some(Ev::Rtt(0))));

    Wire {
        msg1,
        msg2,
        handshake_hash: *dev.handshake_hash(),
        device_first,
        gateway_first,
        device_second,
    }
}

fn init_payload() -> InitPayload {
    InitPayload {
        min_version: 1,
        max_version: 1,
        timestamp: 1,
        ciphers: proto::Ciphers::NONE,
    }
}

/// A host device's offer: AES-256-GCM as well.
fn init_payload_aes() -> InitPayload {
    InitPayload {
        ciphers: proto::Ciphers::AES_256_GCM,
        ..init_payload()
    }
}

/// The gateway's answer choosing it.
fn resp_payload_aes() -> RespPayload {
    RespPayload {
        cipher: proto::Cipher::Aes256Gcm,
        ..resp_payloads()[0].1
    }
}

fn resp_payloads() -> [(&'static str, RespPayload); 3] {
    let p = Config::GATEWAY.params;
    [
        (
            "resp-payload",
            RespPayload {
                status: Status::Accepted,
                version: 1,
                info: 0,
                params: p,
                cipher: proto::Cipher::ChaCha20Poly1305,
            },
        ),
        (
            "resp-payload-stale",
            RespPayload {
                status: Status::StaleTimestamp,
                version: 0,
                info: 0x0102_0304_0506_0708,
                params: p,
                cipher: proto::Cipher::ChaCha20Poly1305,
            },
        ),
        (
            "resp-payload-version",
            RespPayload {
                status: Status::VersionUnsupported,
                version: 0,
                info: 0x0101,
                params: p,
                cipher: proto::Cipher::ChaCha20Poly1305,
            },
        ),
    ]
}

fn hello_body() -> Vec<u8> {
    let h = hello();
    assert_eq!(h.params, Config::DEVICE.params);
    let mut buf = vec![0u8; h.buffer_len()];
    assert_eq!(h.emit(&mut buf).unwrap(), buf.len());
    buf
}

/// The frame vectors: each encodes to its block and decodes back.
fn frames(hello_body: &[u8]) -> Vec<(&'static str, FrameRepr<'_>)> {
    let s = |n: u32| StreamId::new(n).unwrap();
    vec![
        ("frame-ping", FrameRepr::Ping { token: 0xdead_beef }),
        ("frame-pong", FrameRepr::Pong { token: 0xdead_beef }),
        (
            "frame-window-connection",
            FrameRepr::Window {
                stream: StreamId::CONNECTION,
                increment: 65_536,
            },
        ),
        (
            "frame-window-stream",
            FrameRepr::Window {
                stream: s(2),
                increment: 1024,
            },
        ),
        (
            "frame-open",
            FrameRepr::Open {
                stream: s(2),
                kind: StreamKind::WebSocket,
                service: 0,
            },
        ),
        (
            "frame-open-raw",
            FrameRepr::Open {
                stream: s(6),
                kind: StreamKind::Raw,
                service: 1,
            },
        ),
        (
            "frame-reset",
            FrameRepr::Reset {
                stream: s(3),
                code: Code::CANCEL,
            },
        ),
        (
            "frame-goaway",
            FrameRepr::GoAway {
                last_stream: s(7),
                code: Code::SHUTDOWN,
            },
        ),
        (
            "frame-close",
            FrameRepr::Close {
                code: Code::PROTOCOL,
            },
        ),
        ("frame-hello", FrameRepr::Hello { body: hello_body }),
        (
            "frame-data-bytes",
            FrameRepr::Data {
                stream: s(2),
                msg: MsgKind::Bytes,
                end_msg: false,
                fin: false,
                payload: b"abc",
            },
        ),
        (
            "frame-data-head-end-fin",
            FrameRepr::Data {
                stream: s(2),
                msg: MsgKind::Head,
                end_msg: true,
                fin: true,
                payload: &[0x00, 0xcc, 0x00, 0x00],
            },
        ),
        (
            "frame-data-text-2byte-stream",
            FrameRepr::Data {
                stream: s(100),
                msg: MsgKind::Text,
                end_msg: true,
                fin: false,
                payload: b"hi",
            },
        ),
        (
            "frame-data-binary-part",
            FrameRepr::Data {
                stream: s(4),
                msg: MsgKind::Binary,
                end_msg: false,
                fin: false,
                payload: &[0x00, 0xff],
            },
        ),
        (
            "frame-data-wsclose",
            FrameRepr::Data {
                stream: s(4),
                msg: MsgKind::WsClose,
                end_msg: true,
                fin: true,
                payload: b"\x03\xe8bye",
            },
        ),
        (
            "frame-data-fin-only",
            FrameRepr::Data {
                stream: s(5),
                msg: MsgKind::Bytes,
                end_msg: false,
                fin: true,
                payload: &[],
            },
        ),
        (
            "frame-data-4byte-stream",
            FrameRepr::Data {
                stream: s(16_384),
                msg: MsgKind::Bytes,
                end_msg: false,
                fin: false,
                payload: b"z",
            },
        ),
        (
            "frame-extension",
            FrameRepr::Extension {
                ty: 0xc1,
                payload: &[1, 2, 3],
            },
        ),
    ]
}

/// Blocks that only decode: non-minimal encodings a receiver must accept,
/// and what they mean.
fn decode_only() -> Vec<(&'static str, FrameRepr<'static>)> {
    vec![(
        "frame-window-stream-nonminimal",
        FrameRepr::Window {
            stream: StreamId::new(2).unwrap(),
            increment: 1024,
        },
    )]
}

/// Blocks a receiver must refuse (the session ends with CLOSE(PROTOCOL)).
fn invalid() -> Vec<(&'static str, WireError)> {
    vec![
        ("invalid-type-00", WireError::UnknownFrame(0x00)),
        ("invalid-type-09", WireError::UnknownFrame(0x09)),
        ("invalid-type-40", WireError::UnknownFrame(0x40)),
        ("invalid-data-msg-5", WireError::BadValue("message kind")),
        ("invalid-data-stream-0", WireError::BadValue("stream id")),
        ("invalid-data-stream-2-30", WireError::BadValue("stream id")),
        ("invalid-data-truncated", WireError::Truncated),
        (
            "invalid-window-zero",
            WireError::BadValue("window increment"),
        ),
        ("invalid-open-kind-3", WireError::BadValue("stream kind")),
        ("invalid-ping-truncated", WireError::Truncated),
        ("invalid-extension-truncated", WireError::Truncated),
    ]
}

/// Every vector SPEC.md must carry, as the code (and, for the handshake
/// internals, the reference) computes it.
fn computed() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("device-static-public", public(DEVICE_STATIC)),
        ("gateway-static-public", public(GATEWAY_STATIC)),
        ("device-ephemeral-public", public(DEVICE_EPHEMERAL)),
        ("gateway-ephemeral-public", public(GATEWAY_EPHEMERAL)),
    ];

    let mut b = [0u8; 64];
    let n = init_payload().emit(&mut b).unwrap();
    let init = b[..n].to_vec();
    v.push(("init-payload", init.clone()));
    let n = init_payload_aes().emit(&mut b).unwrap();
    v.push(("init-payload-aes", b[..n].to_vec()));
    let n = resp_payload_aes().emit(&mut b).unwrap();
    v.push(("resp-payload-aes", b[..n].to_vec()));
    let mut resp = Vec::new();
    for (name, p) in resp_payloads() {
        let n = p.emit(&mut b).unwrap();
        if name == "resp-payload" {
            resp = b[..n].to_vec();
        }
        v.push((name, b[..n].to_vec()));
    }

    let wire = run_sessions();
    let t = reference::ik(
        DEVICE_STATIC,
        DEVICE_EPHEMERAL,
        GATEWAY_STATIC,
        GATEWAY_EPHEMERAL,
        proto::session::PROLOGUE,
        &init,
        &resp,
    );
    // The reference agrees with the session on every byte.
    assert_eq!(hex(&wire.msg1[3..]), hex(&t.msg1));
    assert_eq!(hex(&wire.msg2[3..]), hex(&t.msg2));
    assert_eq!(wire.handshake_hash, t.h);
    v.push(("noise-h0", t.h0.to_vec()));
    v.push(("dh-es", t.dh_es.to_vec()));
    v.push(("dh-ss", t.dh_ss.to_vec()));
    v.push(("dh-ee", t.dh_ee.to_vec()));
    v.push(("dh-se", t.dh_se.to_vec()));
    v.push(("msg1", wire.msg1));
    v.push(("msg2", wire.msg2));
    v.push(("handshake-hash", wire.handshake_hash.to_vec()));
    v.push(("key-device-to-gateway", t.k1.to_vec()));
    v.push(("key-gateway-to-device", t.k2.to_vec()));
    v.push(("device-first-record", wire.device_first));
    v.push(("gateway-first-record", wire.gateway_first));
    v.push(("device-second-record", wire.device_second));

    let body = hello_body();
    let head = encode_request(&request());
    let resp200 = encode_response(&response_200());
    let one = StreamId::new(2).unwrap();
    v.push((
        "gateway-first-record-plaintext",
        encode_frames(&[
            FrameRepr::Ping { token: 1 },
            FrameRepr::Open {
                stream: one,
                kind: StreamKind::Http,
                service: 0,
            },
            FrameRepr::Data {
                stream: one,
                msg: MsgKind::Head,
                end_msg: true,
                fin: true,
                payload: &head,
            },
        ]),
    ));
    v.push((
        "device-second-record-plaintext",
        encode_frames(&[
            FrameRepr::Pong { token: 1 },
            FrameRepr::Data {
                stream: one,
                msg: MsgKind::Head,
                end_msg: true,
                fin: false,
                payload: &resp200,
            },
            FrameRepr::Data {
                stream: one,
                msg: MsgKind::Bytes,
                end_msg: false,
                fin: true,
                payload: b"ok",
            },
        ]),
    ));

    v.push(("request-head", head));
    v.push(("response-head", encode_response(&response_101())));
    v.push(("response-head-200", resp200));
    for (name, f) in frames(&body) {
        v.push((name, encode_frames(&[f])));
    }
    v.push(("hello-body", body));
    v
}

#[test]
fn spec_vectors_match_the_code() {
    let spec = spec();
    let mut problems = Vec::new();
    let computed = computed();
    for (name, bytes) in &computed {
        match spec.get(*name) {
            None => problems.push(format!(
                "missing in SPEC.md:\n```hex name={name}\n{}\n```",
                hex(bytes)
            )),
            Some(h) if h != bytes => problems.push(format!(
                "{name} differs:\n spec {}\n code {}",
                hex(h),
                hex(bytes)
            )),
            Some(_) => {}
        }
    }
    let known: Vec<&str> = computed
        .iter()
        .map(|(n, _)| *n)
        .chain(decode_only().iter().map(|(n, _)| *n))
        .chain(invalid().iter().map(|(n, _)| *n))
        .collect();
    for name in spec.keys() {
        if !known.contains(&name.as_str()) {
            problems.push(format!("SPEC.md block {name} is checked by no test"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn frame_vectors_decode_back() {
    let spec = spec();
    let body = hello_body();
    for (name, expected) in frames(&body).into_iter().chain(decode_only()) {
        let bytes = block(&spec, name);
        assert_eq!(
            FrameRepr::decode(bytes),
            Ok((expected, bytes.len())),
            "{name}"
        );
        let view = Frame::new_checked(bytes).unwrap();
        assert_eq!(view.total_len(), bytes.len(), "{name}");
        assert_eq!(FrameRepr::parse(&view), expected, "{name}");
    }
}

#[test]
fn invalid_vectors_are_refused() {
    let spec = spec();
    for (name, err) in invalid() {
        let bytes = block(&spec, name);
        assert_eq!(FrameRepr::decode(bytes), Err(err), "{name}");
        assert!(Frame::new_checked(bytes).is_err(), "{name}");
    }
}

#[test]
fn structure_vectors_parse_back() {
    let spec = spec();
    assert_eq!(
        InitPayload::parse(block(&spec, "init-payload")),
        Ok(init_payload())
    );
    for (name, p) in resp_payloads() {
        assert_eq!(RespPayload::parse(block(&spec, name)), Ok(p), "{name}");
    }
    assert_eq!(
        InitPayload::parse(block(&spec, "init-payload-aes")),
        Ok(init_payload_aes())
    );
    assert_eq!(
        RespPayload::parse(block(&spec, "resp-payload-aes")),
        Ok(resp_payload_aes())
    );
    // Bytes after the fields are ignored (a later version may append),
    // past the optional `ciphers` byte (§4.2).
    let mut longer = block(&spec, "init-payload").to_vec();
    longer.push(0);
    longer.extend_from_slice(&[0xff; 5]);
    assert_eq!(InitPayload::parse(&longer), Ok(init_payload()));
    longer[10] = 1;
    assert_eq!(
        InitPayload::parse(&longer),
        Ok(InitPayload {
            ciphers: proto::Ciphers::AES_256_GCM,
            ..init_payload()
        })
    );
    let mut longer = block(&spec, "resp-payload").to_vec();
    longer.push(0);
    assert_eq!(RespPayload::parse(&longer), Ok(resp_payloads()[0].1));

    let parsed = Hello::parse(block(&spec, "hello-body")).unwrap();
    assert_eq!(parsed, hello());
    let names: Vec<&str> = parsed.services.iter().map(|s| s.name).collect();
    assert_eq!(names, ["web", "shell"]);
    assert_eq!(
        parsed
            .services
            .by_name("web")
            .unwrap()
            .1
            .subprotocols
            .iter()
            .collect::<Vec<_>>(),
        ["readings.v1", "chat"]
    );

    assert_eq!(
        RequestHead::parse(block(&spec, "request-head")),
        Ok(request())
    );
    assert_eq!(
        ResponseHead::parse(block(&spec, "response-head")),
        Ok(response_101())
    );
    assert_eq!(
        ResponseHead::parse(block(&spec, "response-head-200")),
        Ok(response_200())
    );
}

#[test]
fn records_open_with_the_published_keys() {
    let spec = spec();
    let k1: [u8; 32] = block(&spec, "key-device-to-gateway").try_into().unwrap();
    let k2: [u8; 32] = block(&spec, "key-gateway-to-device").try_into().unwrap();
    let cases = [
        (
            "device-first-record",
            &k1,
            0,
            block(&spec, "frame-hello").to_vec(),
        ),
        (
            "device-second-record",
            &k1,
            1,
            block(&spec, "device-second-record-plaintext").to_vec(),
        ),
        (
            "gateway-first-record",
            &k2,
            0,
            block(&spec, "gateway-first-record-plaintext").to_vec(),
        ),
    ];
    for (name, key, nonce, plaintext) in cases {
        let record = block(&spec, name);
        let len = usize::from(u16::from_be_bytes([record[0], record[1]]));
        assert_eq!(len + 2, record.len(), "{name}: length prefix");
        assert_eq!(
            reference::open(key, nonce, &[], &record[2..]),
            Some(plaintext.clone()),
            "{name}"
        );
        assert_eq!(
            reference::seal(key, nonce, &[], &plaintext),
            record[2..],
            "{name}"
        );
    }
    // Record plaintexts are frame sequences that decode to their end.
    for name in [
        "gateway-first-record-plaintext",
        "device-second-record-plaintext",
    ] {
        let mut rest = block(&spec, name);
        while !rest.is_empty() {
            let (_, n) = FrameRepr::decode(rest).unwrap();
            rest = &rest[n..];
        }
    }
}

#[test]
fn snow_reproduces_the_handshake_vectors() {
    let spec = spec();
    let pattern = "Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
    let gs_pub = public(GATEWAY_STATIC);
    let mut ini = snow::Builder::new(pattern)
        .local_private_key(&DEVICE_STATIC)
        .unwrap()
        .remote_public_key(&gs_pub)
        .unwrap()
        .prologue(proto::session::PROLOGUE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&DEVICE_EPHEMERAL)
        .build_initiator()
        .unwrap();
    let pattern = "Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap();
    let mut rsp = snow::Builder::new(pattern)
        .local_private_key(&GATEWAY_STATIC)
        .unwrap()
        .prologue(proto::session::PROLOGUE)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&GATEWAY_EPHEMERAL)
        .build_responder()
        .unwrap();
    let (mut m, mut p) = ([0u8; 256], [0u8; 256]);

    let msg1 = block(&spec, "msg1");
    let n = ini
        .write_message(block(&spec, "init-payload"), &mut m)
        .unwrap();
    assert_eq!(hex(&m[..n]), hex(&msg1[3..]), "msg1");
    let k = rsp.read_message(&msg1[3..], &mut p).unwrap();
    assert_eq!(&p[..k], block(&spec, "init-payload"));
    assert_eq!(
        rsp.get_remote_static().unwrap(),
        block(&spec, "device-static-public")
    );

    let msg2 = block(&spec, "msg2");
    let n = rsp
        .write_message(block(&spec, "resp-payload"), &mut m)
        .unwrap();
    assert_eq!(hex(&m[..n]), hex(&msg2[3..]), "msg2");
    let k = ini.read_message(&msg2[3..], &mut p).unwrap();
    assert_eq!(&p[..k], block(&spec, "resp-payload"));
    assert_eq!(ini.get_handshake_hash(), block(&spec, "handshake-hash"));
    assert_eq!(rsp.get_handshake_hash(), block(&spec, "handshake-hash"));

    let mut dev = ini.into_transport_mode().unwrap();
    let mut gw = rsp.into_transport_mode().unwrap();
    let mut buf = [0u8; 1024];
    for (name, plaintext, from_device) in [
        ("device-first-record", "frame-hello", true),
        (
            "gateway-first-record",
            "gateway-first-record-plaintext",
            false,
        ),
        (
            "device-second-record",
            "device-second-record-plaintext",
            true,
        ),
    ] {
        let t = if from_device { &mut dev } else { &mut gw };
        let n = t.write_message(block(&spec, plaintext), &mut buf).unwrap();
        assert_eq!(hex(&buf[..n]), hex(&block(&spec, name)[2..]), "{name}");
    }
}

#[test]
fn sizes_meet_the_targets() {
    let spec = spec();
    // Handshake messages, length prefix and type included.
    assert_eq!(block(&spec, "msg1").len(), 109);
    assert_eq!(block(&spec, "msg2").len(), 73);
    assert!(block(&spec, "msg1").len() <= proto::session::MAX_HANDSHAKE);
    assert_eq!(block(&spec, "init-payload").len(), InitPayload::LEN);
    assert_eq!(block(&spec, "resp-payload").len(), RespPayload::LEN);
    // Record overhead: the length prefix and the tag.
    assert_eq!(proto::session::RECORD_OVERHEAD, 18);
    let overhead =
        |record: &str, plaintext: &str| block(&spec, record).len() - block(&spec, plaintext).len();
    assert_eq!(overhead("device-first-record", "frame-hello"), 18);
    assert_eq!(
        overhead("gateway-first-record", "gateway-first-record-plaintext"),
        18
    );
    // DATA headers: 4 bytes below stream 64, 5 below 16384, at most 7.
    let header = |name: &str| {
        let b = block(&spec, name);
        let Ok((FrameRepr::Data { payload, .. }, _)) = FrameRepr::decode(b) else {
            panic!("{name} is not DATA");
        };
        b.len() - payload.len()
    };
    assert_eq!(header("frame-data-bytes"), 4);
    assert_eq!(header("frame-data-text-2byte-stream"), 5);
    assert_eq!(header("frame-data-4byte-stream"), DATA_HEADER_MAX);
    assert_eq!(DATA_HEADER_MAX, 7);
}
