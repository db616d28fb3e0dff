//! Writes the seed corpora: `cargo +nightly run --example seeds` from
//! `proto/fuzz`. Every seed is a valid input built with `proto`'s own
//! encoders and the fixed keys of `proto_fuzz::peer`, so the fuzzer starts
//! past the checks it could not guess (AEAD tags above all). Files are
//! named `seed-*`; existing seeds of the same name are overwritten, grown
//! corpus entries are left alone.

use std::fs;
use std::path::Path;

use proto::wire::{
    FrameRepr, Header, HeaderList, Params, RequestHead, RespPayload, ResponseHead, Service,
    ServiceKind, ServiceList, Status, StrList,
};
use proto::{Code, Config, Hello, MsgKind, StreamId, StreamKind};
use proto_fuzz::peer::{self, START};
use proto_fuzz::script::{SessionScript, control, frame, mode, op, tamper};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut count = 0;
    let mut write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        count += 1;
    };
    for (name, bytes) in frames() {
        write("frame", name, &bytes);
    }
    for (name, bytes) in hellos() {
        write("hello", name, &bytes);
    }
    for (name, bytes) in heads() {
        write("head", name, &bytes);
    }
    for (name, bytes) in handshakes() {
        write("handshake", name, &bytes);
    }
    for (name, bytes) in sessions() {
        write("session", name, &bytes);
    }
    println!("wrote {count} seeds under {}", root.display());
}

fn id(n: u32) -> StreamId {
    StreamId::new(n).expect("valid id")
}

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let hello = peer::encode_hello(&peer::hello(Config::DEVICE.params));
    let head = encode_request(&request());
    let every = peer::encode_frames(&[
        FrameRepr::Ping { token: 7 },
        FrameRepr::Pong { token: 7 },
        FrameRepr::Window {
            stream: StreamId::CONNECTION,
            increment: 65_536,
        },
        FrameRepr::Window {
            stream: id(3),
            increment: 1 << 40,
        },
        FrameRepr::Open {
            stream: id(2),
            kind: StreamKind::WebSocket,
            service: 0,
        },
        FrameRepr::Reset {
            stream: id(2),
            code: Code::CANCEL,
        },
        FrameRepr::GoAway {
            last_stream: id(5),
            code: Code::SHUTDOWN,
        },
        FrameRepr::Close {
            code: Code(0x3fff_ffff_ffff_ffff),
        },
        FrameRepr::Hello { body: &hello },
        FrameRepr::Data {
            stream: id(70),
            msg: MsgKind::Text,
            end_msg: false,
            fin: false,
            payload: b"hi",
        },
        FrameRepr::Data {
            stream: id(StreamId::MAX),
            msg: MsgKind::WsClose,
            end_msg: true,
            fin: true,
            payload: &[0x03, 0xe8],
        },
        FrameRepr::Extension {
            ty: 0xc1,
            payload: b"ext",
        },
    ]);
    let exchange = peer::encode_frames(&[
        FrameRepr::Open {
            stream: id(2),
            kind: StreamKind::Http,
            service: 0,
        },
        FrameRepr::Data {
            stream: id(2),
            msg: MsgKind::Head,
            end_msg: true,
            fin: false,
            payload: &head,
        },
        FrameRepr::Data {
            stream: id(2),
            msg: MsgKind::Bytes,
            end_msg: false,
            fin: true,
            payload: b"{\"on\":true}",
        },
    ]);
    // WINDOW on stream 3 (+1) with non-minimal varints: 8-byte id, 4-byte increment.
    let nonminimal = vec![0x03, 0xc0, 0, 0, 0, 0, 0, 0, 3, 0x80, 0, 0, 1];
    vec![
        ("every-type", every),
        ("exchange", exchange),
        ("nonminimal-varint", nonminimal),
    ]
}

static PROTOS: [&str; 3] = ["mqtt", "readings.v1", "chat"];
static MANY: [Service<'static>; 3] = [
    Service {
        name: "web",
        kind: ServiceKind::Http,
        subprotocols: StrList::Slice(&PROTOS),
    },
    Service {
        name: "modbus",
        kind: ServiceKind::Raw,
        subprotocols: StrList::Slice(&[]),
    },
    Service {
        name: "ws~admin",
        kind: ServiceKind::Http,
        subprotocols: StrList::Slice(&["a"]),
    },
];

fn hellos() -> Vec<(&'static str, Vec<u8>)> {
    let bare = Hello {
        device_id: "d",
        firmware: "",
        params: Params {
            max_record: proto::wire::MIN_RECORD,
            max_streams: 0,
            stream_window: 0,
            conn_window: proto::wire::MAX_WINDOW,
        },
        max_head: proto::wire::MIN_HEAD,
        services: ServiceList::Slice(&[]),
    };
    let many = Hello {
        device_id: "boiler-room-3",
        firmware: "2024.06 (rev b)",
        services: ServiceList::Slice(&MANY),
        ..peer::hello(Config::DEVICE.params)
    };
    vec![
        (
            "device",
            peer::encode_hello(&peer::hello(Config::DEVICE.params)),
        ),
        ("bare", peer::encode_hello(&bare)),
        ("services", peer::encode_hello(&many)),
    ]
}

fn request() -> RequestHead<'static> {
    static HEADERS: [Header<'static>; 3] = [
        Header {
            name: "host",
            value: b"plc-7.devices.example",
        },
        Header {
            name: "accept",
            value: b"text/html, */*;q=0.8",
        },
        Header {
            name: "x-note",
            value: b"caf\xc3\xa9\tok",
        },
    ];
    RequestHead {
        method: "GET",
        target: "/status?verbose=1",
        headers: HeaderList::Slice(&HEADERS),
    }
}

fn encode_request(h: &RequestHead<'_>) -> Vec<u8> {
    let mut out = vec![0; h.buffer_len()];
    let n = h.emit(&mut out).expect("request head encodes");
    out.truncate(n);
    out
}

fn encode_response(h: &ResponseHead<'_>) -> Vec<u8> {
    let mut out = vec![0; h.buffer_len()];
    let n = h.emit(&mut out).expect("response head encodes");
    out.truncate(n);
    out
}

fn heads() -> Vec<(&'static str, Vec<u8>)> {
    let options = RequestHead {
        method: "OPTIONS",
        target: "*",
        headers: HeaderList::Slice(&[]),
    };
    let ok = ResponseHead {
        status: 200,
        headers: HeaderList::Slice(&[
            Header {
                name: "content-type",
                value: b"application/json",
            },
            Header {
                name: "content-length",
                value: b"11",
            },
        ]),
    };
    let upgrade = ResponseHead {
        status: 101,
        headers: HeaderList::Slice(&[
            Header {
                name: "upgrade",
                value: b"websocket",
            },
            Header {
                name: "sec-websocket-protocol",
                value: b"chat",
            },
        ]),
    };
    let with = |which: u8, body: Vec<u8>| [vec![which], body].concat();
    vec![
        ("request", with(0, encode_request(&request()))),
        ("request-options", with(0, encode_request(&options))),
        ("response", with(1, encode_response(&ok))),
        ("response-upgrade", with(1, encode_response(&upgrade))),
    ]
}

fn handshakes() -> Vec<(&'static str, Vec<u8>)> {
    // Mode 0: a real device's msg1, HELLO record and a PING record, so the
    // raw mode starts from a complete handshake.
    let mut gw = peer::gateway(Config::GATEWAY, 1024, 4);
    let (m1, hs) = peer::msg1();
    peer::feed_accepting(&mut gw, START, &m1);
    let m2 = peer::drain(&mut gw, START);
    let mut dev = peer::Device::finish(hs, &m2).expect("the fixed handshake completes");
    let hello = peer::encode_hello(&peer::hello(Config::DEVICE.params));
    let hello = dev.seal(&peer::encode_frames(&[FrameRepr::Hello { body: &hello }]));
    let ping = dev.seal(&peer::encode_frames(&[FrameRepr::Ping { token: 1 }]));
    let raw_gateway = [&[mode::GATEWAY_RAW, 0, 0][..], &m1, &hello, &ping].concat();
    let raw_gateway_split = [&[mode::GATEWAY_RAW, 0, 7][..], &m1].concat();

    let mut init = [0; proto::wire::InitPayload::LEN];
    peer::INIT.emit(&mut init).expect("InitPayload encodes");
    let payload_gateway = [&[mode::GATEWAY_PAYLOAD, 0, 0, init.len() as u8][..], &init].concat();
    // Rejected as stale, msg2 into a 64-byte buffer (too small: it waits).
    let stale = 1 | 2 << 2 | 4 << 4;
    let payload_reject = [
        &[mode::GATEWAY_PAYLOAD, stale, 0, init.len() as u8][..],
        &init,
    ]
    .concat();

    // Mode 2: the real gateway's msg2 to the fixed device, then a PING record.
    let mut device = peer::device(Config::DEVICE);
    let mut gw = peer::gateway(Config::GATEWAY, 1024, 4);
    let m1 = peer::drain(&mut device, START);
    peer::feed_accepting(&mut gw, START, &m1);
    let m2 = peer::drain(&mut gw, START);
    peer::feed_accepting(&mut device, START, &m2);
    let hello = peer::drain(&mut device, START);
    peer::feed_accepting(&mut gw, START, &hello);
    assert!(gw.is_established(), "the fixed handshake completes");
    gw.ping();
    let ping = peer::drain(&mut gw, START);
    let raw_device = [&[mode::DEVICE_RAW, 0, 0][..], &m2, &ping].concat();

    let resp = |r: RespPayload| {
        let mut out = [0; RespPayload::LEN];
        let n = r.emit(&mut out).expect("RespPayload encodes");
        [&[mode::DEVICE_PAYLOAD, 0, 0, n as u8][..], &out[..n]].concat()
    };
    let accepted = resp(peer::accepted(Config::GATEWAY.params));
    let busy = resp(RespPayload {
        status: Status::StaleTimestamp,
        info: 41,
        ..peer::accepted(Config::GATEWAY.params)
    });
    vec![
        ("gateway-raw", raw_gateway),
        ("gateway-raw-split", raw_gateway_split),
        ("gateway-payload", payload_gateway),
        ("gateway-reject", payload_reject),
        ("device-raw", raw_device),
        ("device-payload", accepted),
        ("device-stale", busy),
    ]
}

/// `session` frame descriptions.
fn open(id: u8, kind: u8, service: u8) -> Vec<u8> {
    vec![frame::OPEN, id, kind, service]
}

fn data(stream: u8, flags: u8, len: u16) -> Vec<u8> {
    let l = len.to_be_bytes();
    vec![frame::DATA, stream, flags, l[0], l[1]]
}

fn window(stream: u8, increment: u8) -> Vec<u8> {
    vec![frame::WINDOW, stream, increment]
}

fn send(stream: u8, flags: u8, len: u16) -> Vec<u8> {
    let l = len.to_be_bytes();
    vec![op::SEND, stream, flags, l[0], l[1]]
}

fn consume(stream: u8, n: u16) -> Vec<u8> {
    let l = n.to_be_bytes();
    vec![op::CONSUME, stream, l[0], l[1]]
}

/// Message flags: kind (Bytes 0, Head 1, Text 2), END_MSG 8, FIN 16.
const HEAD_END: u8 = 1 | 8;
const BYTES: u8 = 0;
const BYTES_FIN: u8 = 16;
const TEXT_END: u8 = 2 | 8;
/// The first device stream, as a raw id (0xe0 + 1).
const DEV1: u8 = 0xe1;
/// The first known stream.
const FIRST: u8 = 1;

fn sessions() -> Vec<(&'static str, Vec<u8>)> {
    // An HTTP exchange the device opens, and one the gateway opens.
    let exchange = SessionScript::new([0, 0, 0, 0])
        .frames(
            0,
            &[
                &open(0, 0, 0),
                &data(DEV1, HEAD_END, 60),
                &data(DEV1, BYTES, 100),
            ],
        )
        .transmit()
        .push(&send(FIRST, HEAD_END, 40))
        .push(&send(FIRST, BYTES_FIN, 500))
        .transmit()
        .frames(3, &[&data(DEV1, BYTES_FIN, 10)])
        .push(&consume(FIRST, 170))
        .push(&[op::OPEN, 0, 0])
        .push(&send(2, HEAD_END, 30))
        .transmit()
        .frames(0, &[&data(0xe2, HEAD_END, 20), &data(0xe2, BYTES_FIN, 5)])
        .push(&send(2, BYTES_FIN, 0))
        .transmit()
        .into_bytes();

    // Small windows both ways: gateway 300 per stream, 65536 for the
    // connection; device 16 per stream, 300 for the connection.
    let flow = SessionScript::new([4 << 2 | 5 << 5, 0, 3 << 2 | 4 << 5, 0])
        .push(&[op::OPEN, 2, 1])
        .push(&send(FIRST, BYTES, 1000))
        .transmit()
        .frames(0, &[&window(FIRST, 2), &window(0, 0)])
        .push(&send(FIRST, BYTES, 1000))
        .transmit()
        .frames(0, &[&data(FIRST, BYTES, 300)])
        .push(&consume(FIRST, 300))
        .transmit()
        .frames(0, &[&data(FIRST, BYTES, 300)])
        .into_bytes();

    // A WebSocket: upgrade heads, then text messages in two frames.
    let websocket = SessionScript::new([0, 0, 0, 0])
        .push(&[op::OPEN, 1, 0])
        .push(&send(FIRST, HEAD_END, 80))
        .transmit()
        .frames(
            0,
            &[
                &data(0xe2, HEAD_END, 50),
                &data(0xe2, 2, 10),
                &data(0xe2, TEXT_END, 10),
            ],
        )
        .push(&send(FIRST, TEXT_END, 5))
        .push(&send(FIRST, 4 | 8 | 16, 2))
        .transmit()
        .into_bytes();

    // Liveness: PING both ways, PONG with the gateway's token, timers.
    let ping = SessionScript::new([0, 0, 0, 0])
        .push(&[op::CONTROL, control::PING, 0])
        .transmit()
        .frames(0, &[&[frame::PONG, 0], &[frame::PING, 9]])
        .transmit()
        .push(&[op::ADVANCE, 4])
        .push(&[op::CONTROL, control::SLEEP, 0])
        .transmit()
        .push(&[op::ADVANCE, 5])
        .transmit()
        .into_bytes();

    // Limits: one device stream allowed, four opened (three refused), stall timeout.
    let limits = SessionScript::new([0, 2 | 0x80, 1 << 2, 0])
        .frames(
            0,
            &[
                &open(0, 2, 1),
                &open(0, 2, 1),
                &open(0, 2, 1),
                &open(0, 2, 1),
            ],
        )
        .transmit()
        .push(&[op::OPEN, 2, 1])
        .push(&send(2, BYTES, 100))
        .transmit()
        .push(&[op::ADVANCE, 3])
        .transmit()
        .into_bytes();

    // Draining: GOAWAY both ways, then CLOSE from the device.
    let goaway = SessionScript::new([0, 0, 0, 0])
        .frames(0, &[&open(0, 2, 1)])
        .push(&[op::CONTROL, control::GOAWAY, 7])
        .transmit()
        .frames(0, &[&[frame::GOAWAY, 0, 7], &data(DEV1, BYTES_FIN, 3)])
        .push(&send(FIRST, BYTES_FIN, 3))
        .transmit()
        .frames(0, &[&[frame::CLOSE, 0]])
        .into_bytes();

    // Raw plaintext: an extension frame, a PING, a RESET of a stream never opened.
    let raw = peer::encode_frames(&[
        FrameRepr::Extension {
            ty: 0xf0,
            payload: b"future",
        },
        FrameRepr::Ping { token: 0xdead_beef },
    ]);
    let raw = SessionScript::new([1, 0x60, 1, 0])
        .record(&raw)
        .transmit()
        .record(&[0x05, 0x07, 0x04])
        .into_bytes();

    // A replayed record after a good one.
    let replay = SessionScript::new([0, 0, 0, 0])
        .frames(0, &[&[frame::PING, 1]])
        .push(&[op::TAMPER, tamper::REPLAY, 0])
        .transmit()
        .into_bytes();

    vec![
        ("exchange", exchange),
        ("flow", flow),
        ("websocket", websocket),
        ("ping", ping),
        ("limits", limits),
        ("goaway", goaway),
        ("raw", raw),
        ("replay", replay),
    ]
}
