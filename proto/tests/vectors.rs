//! The hex test vectors of `SPEC.md`, checked byte for byte against the code.
//!
//! Every vector is a fenced block in SPEC.md whose info string is
//! `hex name=<name>`; whitespace inside is ignored. The test fails if a block
//! is missing or differs, so the specification and the code cannot drift.

mod common;

use std::collections::HashMap;

use common::{Ev, hello, own};
use proto::wire::{
    FrameRepr, Header, HeaderList, InitPayload, Params, RequestHead, RespPayload, ResponseHead,
    Status,
};
use proto::{
    Buffers, Code, Config, Instant, MsgKind, SecretKey, Session, StreamId, StreamKind, StreamSlot,
};

const SPEC: &str = include_str!("../SPEC.md");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spec_blocks() -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut lines = SPEC.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_prefix("```hex name=") else {
            continue;
        };
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        out.insert(name.trim().to_string(), body.to_lowercase());
    }
    out
}

/// Every vector the specification must carry, computed by the code.
fn computed() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (ds, gs, de, ge) = ([0x11u8; 32], [0x22u8; 32], [0x33u8; 32], [0x44u8; 32]);
    v.push((
        "device-static-public",
        SecretKey::from_bytes(ds).public_key().0.to_vec(),
    ));
    v.push((
        "gateway-static-public",
        SecretKey::from_bytes(gs).public_key().0.to_vec(),
    ));
    v.push((
        "device-ephemeral-public",
        SecretKey::from_bytes(de).public_key().0.to_vec(),
    ));
    v.push((
        "gateway-ephemeral-public",
        SecretKey::from_bytes(ge).public_key().0.to_vec(),
    ));

    // The handshake, driven through the real session API.
    let now = Instant::from_millis(0);
    let bufs = |p: &Params| Buffers {
        rx: vec![0u8; usize::from(p.max_record)],
        tx: vec![0u8; usize::from(p.max_record)],
        streams: vec![StreamSlot::default(); 4],
    };
    let mut dev: Session<Vec<u8>, Vec<StreamSlot>> = Session::device(
        Config::DEVICE,
        SecretKey::from_bytes(ds),
        SecretKey::from_bytes(gs).public_key(),
        SecretKey::from_bytes(de),
        1,
        &hello(),
        bufs(&Config::DEVICE.params),
        now,
    )
    .unwrap();
    let mut gw: Session<Vec<u8>, Vec<StreamSlot>> = Session::gateway(
        Config::GATEWAY,
        SecretKey::from_bytes(gs),
        SecretKey::from_bytes(ge),
        bufs(&Config::GATEWAY.params),
        now,
    )
    .unwrap();
    let mut out = vec![0u8; 20_000];
    let n = dev.poll_transmit(now, &mut out).unwrap();
    let msg1 = out[..n].to_vec();
    assert_eq!(gw.handle_input(now, &msg1), msg1.len());
    assert!(matches!(
        gw.poll_event().map(own),
        Some(Ev::Authenticate { timestamp: 1, .. })
    ));
    gw.accept().unwrap();
    let n = gw.poll_transmit(now, &mut out).unwrap();
    let msg2 = out[..n].to_vec();
    assert_eq!(dev.handle_input(now, &msg2), msg2.len());
    assert_eq!(dev.poll_event().map(own), Some(Ev::Connected));
    assert_eq!(dev.handshake_hash(), gw.handshake_hash());
    let n = dev.poll_transmit(now, &mut out).unwrap();
    let hello_record = out[..n].to_vec();
    assert_eq!(gw.handle_input(now, &hello_record), hello_record.len());
    assert!(matches!(gw.poll_event().map(own), Some(Ev::Hello { .. })));
    // A first gateway record: OPEN stream 2 (http, service 0) and a PING.
    let id = gw.open(StreamKind::Http, 0).unwrap();
    gw.ping();
    let n = gw.poll_transmit(now, &mut out).unwrap();
    let open_record = out[..n].to_vec();
    assert_eq!(id, StreamId::new(2).unwrap());
    v.push(("msg1", msg1));
    v.push(("msg2", msg2));
    v.push(("handshake-hash", dev.handshake_hash().to_vec()));
    v.push(("device-first-record", hello_record));
    v.push(("gateway-first-record", open_record));

    // Payloads.
    let mut b = [0u8; 64];
    let n = InitPayload {
        min_version: 1,
        max_version: 1,
        timestamp: 1,
    }
    .emit(&mut b)
    .unwrap();
    v.push(("init-payload", b[..n].to_vec()));
    let resp = RespPayload {
        status: Status::Accepted,
        version: 1,
        info: 0,
        params: Config::GATEWAY.params,
    };
    let n = resp.emit(&mut b).unwrap();
    v.push(("resp-payload", b[..n].to_vec()));
    let stale = RespPayload {
        status: Status::StaleTimestamp,
        version: 1,
        info: 0x0102_0304_0506_0708,
        params: Config::GATEWAY.params,
    };
    let n = stale.emit(&mut b).unwrap();
    v.push(("resp-payload-stale", b[..n].to_vec()));

    let h = hello();
    let h = proto::Hello {
        params: Config::DEVICE.params,
        ..h
    };
    let mut buf = vec![0u8; h.buffer_len()];
    h.emit(&mut buf).unwrap();
    v.push(("hello-body", buf));

    let headers = [
        Header {
            name: "host",
            value: b"plc-7.local",
        },
        Header {
            name: "accept",
            value: b"*/*",
        },
    ];
    let rq = RequestHead {
        method: "GET",
        target: "/api/status?x=1",
        headers: HeaderList::Slice(&headers),
    };
    let mut buf = vec![0u8; rq.buffer_len()];
    rq.emit(&mut buf).unwrap();
    v.push(("request-head", buf));
    let rh = [Header {
        name: "sec-websocket-protocol",
        value: b"readings.v1",
    }];
    let rs = ResponseHead {
        status: 101,
        headers: HeaderList::Slice(&rh),
    };
    let mut buf = vec![0u8; rs.buffer_len()];
    rs.emit(&mut buf).unwrap();
    v.push(("response-head", buf));

    // Frames.
    let s = |n: u32| StreamId::new(n).unwrap();
    let frames: [(&'static str, FrameRepr<'_>); 14] = [
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
        (
            "frame-hello",
            FrameRepr::Hello {
                body: &[0x01, 0x61],
            },
        ),
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
            "frame-data-head-end",
            FrameRepr::Data {
                stream: s(2),
                msg: MsgKind::Head,
                end_msg: true,
                fin: true,
                payload: &[0, 200, 0, 0],
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
            "frame-data-wsclose",
            FrameRepr::Data {
                stream: s(4),
                msg: MsgKind::WsClose,
                end_msg: true,
                fin: true,
                payload: &[0x03, 0xe8],
            },
        ),
        (
            "frame-extension",
            FrameRepr::Extension {
                ty: 0xc1,
                payload: &[1, 2, 3],
            },
        ),
    ];
    for (name, f) in frames {
        let mut buf = vec![0u8; f.buffer_len()];
        let n = f.emit(&mut buf).unwrap();
        assert_eq!(n, buf.len());
        // Each frame vector decodes back to the same frame.
        assert_eq!(FrameRepr::decode(&buf).unwrap(), (f, n), "{name}");
        v.push((name, buf));
    }
    v
}

#[test]
fn spec_vectors_match_the_code() {
    let blocks = spec_blocks();
    let mut problems = Vec::new();
    for (name, bytes) in computed() {
        match blocks.get(name) {
            None => problems.push(format!(
                "missing in SPEC.md:\n```hex name={name}\n{}\n```",
                hex(&bytes)
            )),
            Some(h) if *h != hex(&bytes) => {
                problems.push(format!("{name} differs:\n spec {h}\n code {}", hex(&bytes)))
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn handshake_messages_fit_256_bytes() {
    let v = computed();
    let get = |n: &str| v.iter().find(|(k, _)| *k == n).unwrap().1.len();
    assert!(
        get("msg1") <= 256 && get("msg2") <= 256,
        "{} {}",
        get("msg1"),
        get("msg2")
    );
}
