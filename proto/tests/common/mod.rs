//! A deterministic two-peer simulator: a device and a gateway session joined
//! by two byte pipes, a controlled clock, and a seeded RNG that splits every
//! read and write at random points.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;

use proto::wire::{HeaderList, Params, Service, ServiceKind, ServiceList, StrList};
use proto::{
    Buffers, Code, Config, Event, Hello, Instant, MsgKind, PublicKey, SecretKey, Session, StreamId,
    StreamKind, StreamSlot,
};

pub mod raw;

pub type Sess = Session<Vec<u8>, Vec<StreamSlot>>;

/// SplitMix64: small, seedable, good enough for test schedules.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 1..=max.
    pub fn upto(&mut self, max: usize) -> usize {
        1 + (self.next_u64() % max as u64) as usize
    }
    pub fn key(&mut self) -> SecretKey {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        SecretKey::from_bytes(b)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn fixed_key(byte: u8) -> SecretKey {
    SecretKey::from_bytes([byte; 32])
}

pub const DEVICE_KEY: u8 = 0x11;
pub const GATEWAY_KEY: u8 = 0x22;

pub static PROTOCOLS: [&str; 2] = ["readings.v1", "chat"];
pub static SERVICES: [Service<'static>; 2] = [
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

pub fn hello() -> Hello<'static> {
    Hello {
        device_id: "plc-7",
        firmware: "1.2.3",
        params: Config::DEVICE.params,
        max_head: 1024,
        services: ServiceList::Slice(&SERVICES),
    }
}

pub fn buffers(params: &Params, tx: usize, streams: usize) -> Buffers<Vec<u8>, Vec<StreamSlot>> {
    Buffers {
        rx: vec![0; usize::from(params.max_record)],
        tx: vec![0; tx],
        streams: vec![StreamSlot::default(); streams],
    }
}

pub fn device_with(config: Config, rng: &mut Rng, timestamp: u64, now: Instant) -> Sess {
    let tx = usize::from(config.params.max_record);
    let b = buffers(
        &config.params,
        tx,
        usize::from(config.params.max_streams) + 2,
    );
    Session::device(
        config,
        fixed_key(DEVICE_KEY),
        fixed_key(GATEWAY_KEY).public_key(),
        rng.key(),
        timestamp,
        &hello(),
        b,
        now,
    )
    .expect("device session")
}

pub fn gateway_with(config: Config, rng: &mut Rng, now: Instant) -> Sess {
    let tx = usize::from(config.params.max_record);
    let b = buffers(&config.params, tx, 64);
    Session::gateway(config, fixed_key(GATEWAY_KEY), rng.key(), b, now).expect("gateway session")
}

/// An event with its data copied out of the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Authenticate {
        device: PublicKey,
        timestamp: u64,
    },
    Connected,
    Hello {
        device_id: String,
    },
    Opened {
        stream: StreamId,
        kind: StreamKind,
        service: u8,
    },
    Data {
        stream: StreamId,
        msg: MsgKind,
        end_msg: bool,
        fin: bool,
        data: Vec<u8>,
    },
    Reset {
        stream: StreamId,
        code: Code,
        by_peer: bool,
    },
    Refused {
        stream: StreamId,
    },
    Credit {
        stream: StreamId,
    },
    Rtt(u64),
    GoAway {
        code: Code,
    },
    Closed(proto::CloseReason),
}

pub fn own(ev: Event<'_>) -> Ev {
    match ev {
        Event::Authenticate { device, timestamp } => Ev::Authenticate { device, timestamp },
        Event::Connected { .. } => Ev::Connected,
        Event::Hello(h) => Ev::Hello {
            device_id: h.device_id.to_string(),
        },
        Event::Opened {
            stream,
            kind,
            service,
        } => Ev::Opened {
            stream,
            kind,
            service,
        },
        Event::Data {
            stream,
            msg,
            end_msg,
            fin,
            data,
        } => Ev::Data {
            stream,
            msg,
            end_msg,
            fin,
            data: data.to_vec(),
        },
        Event::Reset {
            stream,
            code,
            by_peer,
        } => Ev::Reset {
            stream,
            code,
            by_peer,
        },
        Event::Refused { stream } => Ev::Refused { stream },
        Event::Credit { stream } => Ev::Credit { stream },
        Event::Rtt(d) => Ev::Rtt(d.as_millis() as u64),
        Event::GoAway { code } => Ev::GoAway { code },
        Event::Closed(r) => Ev::Closed(r),
    }
}

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Device,
    Gateway,
}

/// Two sessions, two pipes, one clock.
pub struct Sim {
    pub device: Sess,
    pub gateway: Sess,
    pub now: Instant,
    pub rng: Rng,
    pub to_gateway: VecDeque<u8>,
    pub to_device: VecDeque<u8>,
    /// Largest single read or write the schedule may pick.
    pub max_chunk: usize,
    /// Accept every Authenticate automatically.
    pub auto_accept: bool,
    out: Vec<u8>,
}

impl Sim {
    pub fn new(seed: u64, device: Config, gateway: Config) -> Self {
        let mut rng = Rng::new(seed);
        let now = Instant::from_millis(1_000);
        let d = device_with(device, &mut rng, 1, now);
        let g = gateway_with(gateway, &mut rng, now);
        Self {
            device: d,
            gateway: g,
            now,
            rng,
            to_gateway: VecDeque::new(),
            to_device: VecDeque::new(),
            max_chunk: 4096,
            auto_accept: true,
            out: vec![0; 70_000],
        }
    }

    pub fn session(&mut self, side: Side) -> &mut Sess {
        match side {
            Side::Device => &mut self.device,
            Side::Gateway => &mut self.gateway,
        }
    }

    /// Moves everything each side wants to send into its pipe.
    pub fn flush(&mut self) {
        let now = self.now;
        while let Some(n) = self.device.poll_transmit(now, &mut self.out) {
            self.to_gateway.extend(&self.out[..n]);
        }
        while let Some(n) = self.gateway.poll_transmit(now, &mut self.out) {
            self.to_device.extend(&self.out[..n]);
        }
    }

    /// Delivers up to one random-sized chunk from `side`'s inbound pipe,
    /// returning the events it produced.
    pub fn deliver(&mut self, side: Side) -> Vec<Ev> {
        let pipe = match side {
            Side::Device => &mut self.to_device,
            Side::Gateway => &mut self.to_gateway,
        };
        let take = self.rng.upto(self.max_chunk).min(pipe.len());
        let chunk: Vec<u8> = pipe.drain(..take).collect();
        let now = self.now;
        let auto = self.auto_accept;
        let s = match side {
            Side::Device => &mut self.device,
            Side::Gateway => &mut self.gateway,
        };
        let mut events = Vec::new();
        let mut off = 0;
        loop {
            let n = s.handle_input(now, &chunk[off..]);
            off += n;
            let mut any = false;
            while let Some(ev) = s.poll_event() {
                any = true;
                let ev = own(ev);
                if auto && matches!(ev, Ev::Authenticate { .. }) {
                    s.accept().expect("accept");
                }
                events.push(ev);
            }
            if off >= chunk.len() && !any {
                break;
            }
            if n == 0 && !any {
                break;
            }
        }
        events
    }

    /// Delivers everything waiting for `side`.
    pub fn deliver_all(&mut self, side: Side) -> Vec<Ev> {
        let mut evs = Vec::new();
        for _ in 0..10_000 {
            let pipe = match side {
                Side::Device => &self.to_device,
                Side::Gateway => &self.to_gateway,
            };
            if pipe.is_empty() {
                break;
            }
            evs.extend(self.deliver(side));
        }
        evs
    }

    /// Runs flush and deliver on both sides until nothing moves; returns all events.
    pub fn settle(&mut self) -> (Vec<Ev>, Vec<Ev>) {
        let (mut de, mut ge) = (Vec::new(), Vec::new());
        for _ in 0..100_000 {
            self.flush();
            if self.to_device.is_empty() && self.to_gateway.is_empty() {
                // Events raised without input (timers) still need draining.
                while let Some(ev) = self.device.poll_event() {
                    de.push(own(ev));
                }
                while let Some(ev) = self.gateway.poll_event() {
                    ge.push(own(ev));
                }
                self.flush();
                if self.to_device.is_empty() && self.to_gateway.is_empty() {
                    break;
                }
            }
            de.extend(self.deliver(Side::Device));
            ge.extend(self.deliver(Side::Gateway));
        }
        (de, ge)
    }

    /// Advances the clock and runs both sides' timers.
    pub fn advance(&mut self, ms: u64) {
        self.now = Instant::from_millis(self.now.as_millis() + ms);
        self.device.handle_timeout(self.now);
        self.gateway.handle_timeout(self.now);
    }

    /// Handshake through HELLO; panics if it does not complete.
    pub fn connect(&mut self) {
        let (de, ge) = self.settle();
        assert!(de.contains(&Ev::Connected), "device events: {de:?}");
        assert!(
            ge.iter().any(|e| matches!(e, Ev::Hello { .. })),
            "gateway events: {ge:?}"
        );
        assert!(self.device.is_established() && self.gateway.is_established());
    }
}

/// Encoded request head for tests.
pub fn request_head(method: &str, target: &str) -> Vec<u8> {
    let h = proto::wire::RequestHead {
        method,
        target,
        headers: HeaderList::Slice(&[]),
    };
    let mut buf = vec![0; h.buffer_len()];
    let n = h.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}
