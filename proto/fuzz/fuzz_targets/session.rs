//! A gateway `Session` after a real handshake with the fixed device, driven
//! by a script: records of attacker-chosen plaintext sealed under the
//! device's real keys (so they pass authentication and reach the frame
//! and stream logic), the gateway application's stream calls, the clock,
//! and tampered records. Input layout: `proto_fuzz::script` ("session").
//!
//! The harness plays the device by hand (`proto_fuzz::peer::Device`) and
//! opens every record the gateway sends, keeping a model of both flow
//! control directions. Checked, besides "no panic":
//!
//! - every record the gateway sends decrypts under the device's keys, fits
//!   the device's `max_record`, holds only well-formed frames, and nothing
//!   follows a CLOSE;
//! - the gateway never sends more DATA on a stream, or on the connection,
//!   than the device's window plus the WINDOW increments it sent; never
//!   DATA after its own FIN; OPENs have even, increasing ids;
//! - the gateway never delivers more `Data` on a stream, or on the
//!   connection, than its own window plus the increments it sent;
//! - `handle_input` takes bytes whenever no event is pending; `poll_event`
//!   and `poll_transmit` run dry; one `Closed` at most, and no event after it;
//! - `send` takes exactly `min(len, send_capacity, 65535)` when it succeeds;
//!   `Opened`/`Refused` ids are odd and increasing; `open` gives even,
//!   increasing ids.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use proto::wire::{FrameRepr, MsgKind, Params, StreamKind};
use proto::{Code, Config, Event, Instant, StreamId};
use proto_fuzz::peer::{self, Device, START, Sess};
use proto_fuzz::script::{
    DEV_RECORD, GW_RECORD, INCREMENTS, STAGING, STEPS, STREAMS, TABLE, WINDOWS, control, frame, op,
    tamper,
};
use proto_fuzz::{Input, trace};

/// Bounds on loops that must end by themselves.
const DRY: usize = 100_000;
/// Payload source for DATA, the content does not matter.
static ZEROS: [u8; 65_536] = [0; 65_536];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut run = Run::new(&mut input);
    while !input.is_empty() {
        run.step(&mut input);
    }
    let size = run.gw.max_transmit();
    run.transmit(size);
    run.events();
});

struct Run {
    gw: Sess,
    dev: Device,
    now: Instant,
    /// What the gateway receives.
    gw_params: Params,
    /// What the device announced in its HELLO.
    dev_params: Params,
    /// Streams either side opened, in order.
    known: Vec<StreamId>,
    next_dev_id: u32,
    last_local: u32,
    last_peer_open: u32,
    last_record: Vec<u8>,
    last_ping: Option<u32>,
    /// WINDOW increments the device sent, per stream (0: the connection).
    granted_to_gw: HashMap<u32, u64>,
    /// DATA payload the gateway sent, per stream.
    sent_by_gw: HashMap<u32, u64>,
    /// WINDOW increments the gateway sent.
    granted_to_dev: HashMap<u32, u64>,
    /// `Data` payload the gateway delivered, per stream.
    delivered: HashMap<u32, u64>,
    gw_fin: HashSet<u32>,
    gw_opened: u32,
    close_sent: bool,
    closed_event: bool,
    records_checked: u64,
    out: Vec<u8>,
}

fn params(record: u16, streams: u16, stream_window: u32, conn_window: u32) -> Params {
    Params {
        max_record: record,
        max_streams: streams,
        stream_window,
        conn_window,
    }
}

impl Run {
    fn new(input: &mut Input<'_>) -> Self {
        let s = [input.u8(), input.u8(), input.u8(), input.u8()];
        let gw_params = params(
            GW_RECORD[usize::from(s[0] & 3)],
            STREAMS[usize::from(s[1] & 7)],
            WINDOWS[usize::from(s[0] >> 2 & 7)],
            WINDOWS[usize::from(s[0] >> 5)],
        );
        let config = Config {
            params: gw_params,
            stall_timeout: Input::bit(s[1], 7).then_some(Duration::from_secs(5)),
            ..Config::GATEWAY
        };
        let dev_params = params(
            DEV_RECORD[usize::from(s[2] & 3)],
            STREAMS[usize::from(s[3] & 7)],
            WINDOWS[usize::from(s[2] >> 2 & 7)],
            WINDOWS[usize::from(s[2] >> 5)],
        );
        let mut gw = peer::gateway(
            config,
            STAGING[usize::from(s[1] >> 5 & 3)],
            TABLE[usize::from(s[1] >> 3 & 3)],
        );
        let dev = Device::connect(&mut gw, START);
        let mut run = Self {
            gw,
            dev,
            now: START,
            gw_params,
            dev_params,
            known: Vec::new(),
            next_dev_id: 1,
            last_local: 0,
            last_peer_open: 0,
            last_record: Vec::new(),
            last_ping: None,
            granted_to_gw: HashMap::new(),
            sent_by_gw: HashMap::new(),
            granted_to_dev: HashMap::new(),
            delivered: HashMap::new(),
            gw_fin: HashSet::new(),
            gw_opened: 0,
            close_sent: false,
            closed_event: false,
            records_checked: 0,
            out: vec![0; 70_000],
        };
        let body = peer::encode_hello(&peer::hello(dev_params));
        let record = run
            .dev
            .seal(&peer::encode_frames(&[FrameRepr::Hello { body: &body }]));
        let n = run.gw.handle_input(START, &record);
        assert_eq!(n, record.len());
        match run.gw.poll_event() {
            Some(Event::Hello(h)) => assert_eq!(h.params, dev_params),
            other => panic!("HELLO not reported: {other:?}"),
        }
        assert!(run.gw.poll_event().is_none());
        assert!(run.gw.is_established());
        assert_eq!(run.gw.peer_params(), dev_params);
        run
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % op::COUNT {
            op::RECORD => {
                let split = usize::from(input.u8());
                let len = usize::from(input.u16()).min(usize::from(u16::MAX) - 16);
                let plaintext = input.bytes(len).to_vec();
                self.send_record(&plaintext, split);
            }
            op::FRAMES => {
                let split = usize::from(input.u8());
                let count = 1 + input.u8() % 8;
                let mut plaintext = Vec::new();
                for _ in 0..count {
                    self.frame(input, &mut plaintext);
                }
                self.send_record(&plaintext, split);
            }
            op::OPEN => {
                let kind = stream_kind(input.u8());
                let service = input.u8();
                let r = self.gw.open(kind, service);
                trace!("open {kind:?} service {service}: {r:?}");
                if let Ok(id) = r {
                    assert!(id.is_gateway_initiated(), "open gave odd id {id}");
                    assert!(id.get() > self.last_local, "open reused id {id}");
                    self.last_local = id.get();
                    self.known.push(id);
                }
            }
            op::SEND => {
                let stream = self.pick(input.u8());
                let (msg, end_msg, fin) = flags(input.u8());
                let data = &ZEROS[..usize::from(input.u16())];
                let cap = self.gw.send_capacity(stream);
                let r = self.gw.send(stream, msg, data, end_msg, fin);
                trace!(
                    "send {stream} {msg:?} end_msg {end_msg} fin {fin} {} bytes (capacity {cap}): {r:?}",
                    data.len()
                );
                if let Ok(n) = r {
                    let want = data.len().min(cap).min(usize::from(u16::MAX));
                    assert_eq!(n, want, "send took {n}, capacity was {cap}");
                }
            }
            op::CONSUME => {
                let stream = self.pick(input.u8());
                let n = usize::from(input.u16());
                trace!("consume {stream} {n}");
                self.gw.consume(stream, n);
            }
            op::RESET => {
                let stream = self.pick(input.u8());
                let code = Code(u64::from(input.u8()));
                let r = self.gw.reset(stream, code);
                trace!("reset {stream} {code:?}: {r:?}");
            }
            op::TRANSMIT => {
                let size = match input.u8() {
                    0 => self.gw.max_transmit(),
                    n => usize::from(n) * 8,
                };
                self.transmit(size);
            }
            op::ADVANCE => {
                let step = STEPS[usize::from(input.u8() % 8)];
                self.now = Instant::from_millis(self.now.as_millis() + step);
                trace!("advance {step} ms to {}", self.now.as_millis());
                self.gw.handle_timeout(self.now);
            }
            op::CONTROL => {
                let what = input.u8() % 5;
                let code = Code(u64::from(input.u8()));
                trace!("control {what} {code:?}");
                match what {
                    control::PING => self.gw.ping(),
                    control::GOAWAY => self.gw.goaway(code),
                    control::CLOSE => self.gw.close(code),
                    control::EOF => self.gw.handle_eof(),
                    _ => {
                        if let Some(t) = self.gw.poll_timeout() {
                            self.now = self.now.max(t);
                            self.gw.handle_timeout(self.now);
                        }
                    }
                }
            }
            _ => {
                let how = input.u8() % 4;
                let arg = usize::from(input.u8());
                trace!("tamper {how} {arg}");
                match how {
                    tamper::REPLAY => {
                        let record = self.last_record.clone();
                        self.deliver(&record, arg);
                    }
                    tamper::FLIP => {
                        let mut record = self.dev.seal(&ZEROS[..arg]);
                        let bit = arg * 7 % (record.len() * 8 - 16) + 16;
                        record[bit / 8] ^= 1 << (bit % 8);
                        self.deliver(&record, 0);
                    }
                    tamper::GARBAGE => {
                        let garbage = input.bytes(arg).to_vec();
                        self.deliver(&garbage, 0);
                    }
                    _ => self.deliver(&[0xff, 0xff], 0),
                }
            }
        }
        self.events();
        assert!(self.gw.open_streams() <= TABLE[3]);
    }

    /// Appends one described frame to `plaintext`.
    fn frame(&mut self, input: &mut Input<'_>, plaintext: &mut Vec<u8>) {
        let hello;
        let f = match input.u8() % frame::COUNT {
            frame::DATA => {
                let stream = self.pick(input.u8());
                let (msg, end_msg, fin) = flags(input.u8());
                let len = usize::from(input.u16() % 16_384);
                FrameRepr::Data {
                    stream,
                    msg,
                    end_msg,
                    fin,
                    payload: &ZEROS[..len],
                }
            }
            frame::WINDOW => {
                let stream = self.pick(input.u8());
                let increment = match INCREMENTS[usize::from(input.u8() % 8)] {
                    0 => u64::from(input.u32()).max(1),
                    n => n,
                };
                FrameRepr::Window { stream, increment }
            }
            frame::OPEN => {
                let stream = match input.u8() {
                    0 => {
                        let id = self.next_dev_id;
                        self.next_dev_id += 2;
                        id
                    }
                    b => u32::from(b),
                };
                FrameRepr::Open {
                    stream: StreamId::new(stream).expect("small id"),
                    kind: stream_kind(input.u8()),
                    service: input.u8(),
                }
            }
            frame::RESET => FrameRepr::Reset {
                stream: self.pick(input.u8()),
                code: Code(u64::from(input.u8())),
            },
            frame::PING => FrameRepr::Ping {
                token: u32::from(input.u8()),
            },
            frame::PONG => FrameRepr::Pong {
                token: match input.u8() {
                    0 => self.last_ping.unwrap_or(0),
                    b => u32::from(b),
                },
            },
            frame::GOAWAY => FrameRepr::GoAway {
                last_stream: StreamId::new(u32::from(input.u8())).expect("small id"),
                code: Code(u64::from(input.u8())),
            },
            frame::CLOSE => FrameRepr::Close {
                code: Code(u64::from(input.u8())),
            },
            frame::HELLO => {
                hello = peer::encode_hello(&peer::hello(self.dev_params));
                FrameRepr::Hello { body: &hello }
            }
            _ => FrameRepr::Extension {
                ty: 0xc0 | input.u8(),
                payload: &ZEROS[..usize::from(input.u8())],
            },
        };
        plaintext.extend_from_slice(&peer::encode_frames(&[f]));
    }

    /// A stream by the script's `stream u8` rule.
    fn pick(&self, b: u8) -> StreamId {
        let id = match b {
            0 => 0,
            0xe0.. => u32::from(b - 0xe0),
            _ if self.known.is_empty() => u32::from(b),
            _ => self.known[usize::from(b - 1) % self.known.len()].get(),
        };
        StreamId::new(id).expect("small id")
    }

    /// Seals `plaintext` as the device's next record and feeds it.
    fn send_record(&mut self, plaintext: &[u8], split: usize) {
        // The model: credit the device grants, in the order the gateway
        // reads it; frames after the first that fails are never read.
        let mut pos = 0;
        while let Ok((f, n)) = FrameRepr::decode(&plaintext[pos..]) {
            pos += n;
            trace!("device -> {f:?}");
            match f {
                FrameRepr::Window { stream, increment } => {
                    let g = self.granted_to_gw.entry(stream.get()).or_default();
                    *g = g.saturating_add(increment);
                }
                FrameRepr::Open { stream, .. } if !stream.is_gateway_initiated() => {
                    self.next_dev_id = self.next_dev_id.max(stream.get() + 2);
                }
                _ => {}
            }
        }
        let record = self.dev.seal(plaintext);
        self.deliver(&record, split);
        self.last_record = record;
    }

    /// Feeds `bytes` in chunks of `split` (0: at once), draining events.
    fn deliver(&mut self, bytes: &[u8], split: usize) {
        let chunk = if split == 0 {
            bytes.len().max(1)
        } else {
            split
        };
        let mut off = 0;
        loop {
            let end = (off + chunk).min(bytes.len());
            let n = self.gw.handle_input(self.now, &bytes[off..end]);
            assert!(n <= end - off);
            off += n;
            let any = self.events();
            if off >= bytes.len() && !any {
                return;
            }
            assert!(n > 0 || any, "handle_input took nothing, no event pending");
        }
    }

    /// Drains and checks events; whether there were any.
    fn events(&mut self) -> bool {
        let mut any = false;
        for _ in 0..DRY {
            let Some(ev) = self.gw.poll_event() else {
                return any;
            };
            any = true;
            trace!("event {ev:?}");
            assert!(!self.closed_event, "event after Closed: {ev:?}");
            match ev {
                Event::Authenticate { .. } | Event::Connected { .. } | Event::Hello(_) => {
                    panic!("handshake event on an open session: {ev:?}")
                }
                Event::Opened { stream, .. } | Event::Refused { stream } => {
                    assert!(
                        !stream.is_gateway_initiated(),
                        "peer stream {stream} is even"
                    );
                    assert!(stream.get() > self.last_peer_open, "{stream} reopened");
                    self.last_peer_open = stream.get();
                    if matches!(ev, Event::Opened { .. }) {
                        self.known.push(stream);
                    }
                }
                Event::Data { stream, data, .. } => {
                    assert!(self.known.contains(&stream), "data on unknown {stream}");
                    let d = self.delivered.entry(stream.get()).or_default();
                    *d += data.len() as u64;
                    let granted = self.granted_to_dev.get(&stream.get()).copied();
                    let limit = u64::from(self.gw_params.stream_window) + granted.unwrap_or(0);
                    assert!(*d <= limit, "{stream}: delivered {d} > credit {limit}");
                    let total: u64 = self.delivered.values().sum();
                    let granted = self.granted_to_dev.get(&0).copied();
                    let limit = u64::from(self.gw_params.conn_window) + granted.unwrap_or(0);
                    assert!(
                        total <= limit,
                        "delivered {total} > connection credit {limit}"
                    );
                }
                Event::Reset { .. }
                | Event::Credit { .. }
                | Event::Rtt(_)
                | Event::GoAway { .. } => {}
                Event::Closed(_) => self.closed_event = true,
            }
        }
        panic!("poll_event does not run dry");
    }

    /// Takes every record the gateway has for an `size`-byte buffer and
    /// checks it as the device would.
    fn transmit(&mut self, size: usize) {
        let size = size.min(self.out.len());
        for _ in 0..DRY {
            let Some(n) = self.gw.poll_transmit(self.now, &mut self.out[..size]) else {
                let stats = self.gw.stats();
                // msg2 was the first record.
                assert_eq!(stats.records_sent, self.records_checked + 1);
                assert!(stats.payload_received >= self.delivered.values().sum());
                return;
            };
            assert!(n <= size);
            let record = self.out[..n].to_vec();
            self.check_record(&record);
        }
        panic!("poll_transmit does not run dry");
    }

    fn check_record(&mut self, record: &[u8]) {
        assert!(!self.close_sent, "a record after CLOSE");
        assert!(
            record.len() <= usize::from(self.dev_params.max_record),
            "record of {} bytes, device takes {}",
            record.len(),
            self.dev_params.max_record
        );
        self.records_checked += 1;
        let plaintext = self.dev.open(record).expect("gateway records decrypt");
        assert!(!plaintext.is_empty(), "empty record");
        let mut pos = 0;
        let mut frames = 0;
        while pos < plaintext.len() {
            let (f, n) = FrameRepr::decode(&plaintext[pos..])
                .unwrap_or_else(|e| panic!("gateway frame at {pos} does not decode: {e}"));
            pos += n;
            frames += 1;
            trace!("gateway -> {f:?}");
            match f {
                FrameRepr::Data {
                    stream,
                    fin,
                    payload,
                    ..
                } => {
                    let id = stream.get();
                    assert!(self.known.contains(&stream), "data on unknown {stream}");
                    assert!(!self.gw_fin.contains(&id), "data after FIN on {stream}");
                    if fin {
                        self.gw_fin.insert(id);
                    }
                    let s = self.sent_by_gw.entry(id).or_default();
                    *s += payload.len() as u64;
                    let granted = self.granted_to_gw.get(&id).copied().unwrap_or(0);
                    let limit = u64::from(self.dev_params.stream_window).saturating_add(granted);
                    assert!(*s <= limit, "{stream}: sent {s} > credit {limit}");
                    let total: u64 = self.sent_by_gw.values().sum();
                    let granted = self.granted_to_gw.get(&0).copied().unwrap_or(0);
                    let limit = u64::from(self.dev_params.conn_window).saturating_add(granted);
                    assert!(total <= limit, "sent {total} > connection credit {limit}");
                }
                FrameRepr::Window { stream, increment } => {
                    assert!(
                        stream == StreamId::CONNECTION || self.known.contains(&stream),
                        "window for unknown {stream}"
                    );
                    *self.granted_to_dev.entry(stream.get()).or_default() += increment;
                }
                FrameRepr::Open { stream, .. } => {
                    assert!(
                        stream.is_gateway_initiated(),
                        "gateway OPEN of odd {stream}"
                    );
                    assert!(stream.get() > self.gw_opened, "gateway reopened {stream}");
                    assert!(
                        self.known.contains(&stream),
                        "OPEN of {stream} nobody asked for"
                    );
                    self.gw_opened = stream.get();
                }
                FrameRepr::Ping { token } => self.last_ping = Some(token),
                FrameRepr::Close { .. } => self.close_sent = true,
                FrameRepr::Hello { .. } | FrameRepr::Extension { .. } => {
                    panic!("the gateway sent {f:?}")
                }
                FrameRepr::Pong { .. } | FrameRepr::Reset { .. } | FrameRepr::GoAway { .. } => {}
            }
        }
        if self.close_sent {
            assert_eq!(frames, 1, "CLOSE shares its record");
        }
    }
}

fn stream_kind(b: u8) -> StreamKind {
    match b % 3 {
        0 => StreamKind::Http,
        1 => StreamKind::WebSocket,
        _ => StreamKind::Raw,
    }
}

/// `flags u8`: message kind, END_MSG, FIN.
fn flags(b: u8) -> (MsgKind, bool, bool) {
    let msg = match (b & 7) % 5 {
        0 => MsgKind::Bytes,
        1 => MsgKind::Head,
        2 => MsgKind::Text,
        3 => MsgKind::Binary,
        _ => MsgKind::WsClose,
    };
    (msg, Input::bit(b, 3), Input::bit(b, 4))
}
