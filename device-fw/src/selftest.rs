//! Checks of `proto` that need neither std nor allocation, so they run on
//! the device's CPU as well as on the host: the `qemu-an505-check` binary
//! runs them on the emulated Cortex-M33 (`scripts/qemu-run check`), and
//! `tests/tests/qemu_firmware.rs` runs them on the host and compares the
//! [`transcript`] digest, so both architectures are shown to put the same
//! bytes on the wire.
//!
//! `proto`'s own test suites need std (vectors, the simulator); these are
//! the no_std subset, written again over fixed buffers:
//!
//! | check | what |
//! |---|---|
//! | `varint` | round trips at every length boundary; truncations refused |
//! | `backoff` | full-jitter delays stay between the floor and a ceiling that grows to the cap |
//! | `handshake` | Noise IK with pinned keys; the gateway sees the device key, timestamp and HELLO |
//! | `streams` | 8 KiB each way through 1 KiB records and windows, in order |
//! | `tamper` | one flipped bit in a record ends the receiving session |
//! | `wrong key` | a device pinning another gateway key never gets a session |
//! | `garbage` | 300 random inputs to a gateway session and the frame parser: no panic |
//!
//! [`Pair`] is also what the check binary times (device-role instructions
//! per handshake and per record) through a [`Meter`].

use proto::wire::{Frame, FrameRepr, Params, Service, ServiceKind, ServiceList, StrList};
use proto::{
    Backoff, Buffers, Config, Event, Hello, Instant, MsgKind, SecretKey, Session, StreamId,
    StreamKind, StreamSlot, varint,
};

/// Record size of the sessions under test (the device's default).
pub const RECORD: usize = 1024;
const NOW: Instant = Instant::from_millis(0);
const DEVICE_KEY: [u8; 32] = [0x11; 32];
const GATEWAY_KEY: [u8; 32] = [0x22; 32];
static SERVICES: [Service<'static>; 1] = [Service {
    name: "web",
    kind: ServiceKind::Http,
    subprotocols: StrList::Slice(&[]),
}];

type Sess<'a> = Session<&'a mut [u8], &'a mut [StreamSlot]>;

/// Runs a device-role call, measuring it (or not).
pub trait Meter {
    /// Runs `f` and accounts for it.
    fn device<R>(&mut self, f: impl FnOnce() -> R) -> R;
}

/// A [`Meter`] that measures nothing.
pub struct Unmetered;

impl Meter for Unmetered {
    fn device<R>(&mut self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// FNV-1a, 64 bits: enough to compare transcripts across architectures.
#[derive(Clone, Copy)]
pub struct Digest(pub u64);

impl Digest {
    const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Memory for two sessions (about 4.5 KiB: keep it in a static or a large stack).
pub struct PairMemory {
    bufs: [[u8; RECORD]; 4],
    streams: [[StreamSlot; 4]; 2],
    out: [u8; RECORD],
}

impl PairMemory {
    /// Zeroed.
    pub const fn new() -> Self {
        Self {
            bufs: [[0; RECORD]; 4],
            streams: [[StreamSlot::EMPTY; 4]; 2],
            out: [0; RECORD],
        }
    }
}

impl Default for PairMemory {
    fn default() -> Self {
        Self::new()
    }
}

/// A device and a gateway session joined back to back.
pub struct Pair<'a> {
    /// The device role.
    pub device: Sess<'a>,
    /// The gateway role.
    pub gateway: Sess<'a>,
    out: &'a mut [u8; RECORD],
    /// Every byte both sides sent, in order.
    pub transcript: Digest,
    /// Payload bytes each side received: (device, gateway).
    pub received: (usize, usize),
    /// What the gateway was told: (device key matched, timestamp, HELLO id matched).
    pub authenticated: (bool, u64, bool),
    /// A session reported an error or closed.
    pub failed: bool,
}

fn config() -> Config {
    Config {
        params: Params {
            max_record: RECORD as u16,
            max_streams: 4,
            stream_window: 1024,
            conn_window: 4096,
        },
        ..Config::DEVICE
    }
}

fn key(seed: u8, role: u8) -> SecretKey {
    let mut b = [role; 32];
    b[0] = seed;
    SecretKey::from_bytes(b)
}

impl<'a> Pair<'a> {
    /// Both sessions, not yet connected; the device pins `pinned` (the real
    /// gateway's key unless a test says otherwise). `seed` varies the
    /// ephemeral keys.
    pub fn new<M: Meter>(mem: &'a mut PairMemory, pinned: [u8; 32], seed: u8, m: &mut M) -> Self {
        let [a, b, c, d] = &mut mem.bufs;
        let [s1, s2] = &mut mem.streams;
        let hello = Hello {
            device_id: "selftest",
            firmware: "0",
            params: config().params,
            max_head: 1024,
            services: ServiceList::Slice(&SERVICES),
        };
        let device = m.device(|| {
            Session::device(
                config(),
                SecretKey::from_bytes(DEVICE_KEY),
                SecretKey::from_bytes(pinned).public_key(),
                key(seed, 0xd0),
                1,
                &hello,
                Buffers {
                    rx: &mut a[..],
                    tx: &mut b[..],
                    streams: &mut s1[..],
                },
                NOW,
            )
        });
        let gateway = Session::gateway(
            config(),
            SecretKey::from_bytes(GATEWAY_KEY),
            key(seed, 0x9a),
            Buffers {
                rx: &mut c[..],
                tx: &mut d[..],
                streams: &mut s2[..],
            },
            NOW,
        );
        let (Ok(device), Ok(gateway)) = (device, gateway) else {
            panic!("session setup refused the test's buffers");
        };
        Self {
            device,
            gateway,
            out: &mut mem.out,
            transcript: Digest::new(),
            received: (0, 0),
            authenticated: (false, 0, false),
            failed: false,
        }
    }

    /// Moves what the device has to send into the gateway; bytes moved.
    pub fn device_to_gateway<M: Meter>(&mut self, m: &mut M) -> usize {
        let mut moved = 0;
        loop {
            let out = &mut *self.out;
            let device = &mut self.device;
            let Some(n) = m.device(|| device.poll_transmit(NOW, out)) else {
                return moved;
            };
            self.transcript.add(&out[..n]);
            moved += n;
            let mut input = &out[..n];
            let mut stuck = 0;
            while !input.is_empty() && stuck < 2 {
                let used = self.gateway.handle_input(NOW, input);
                input = &input[used..];
                stuck = if used == 0 { stuck + 1 } else { 0 };
                while let Some(ev) = self.gateway.poll_event() {
                    match ev {
                        Event::Authenticate { device, timestamp } => {
                            let ok = device == SecretKey::from_bytes(DEVICE_KEY).public_key();
                            self.authenticated.0 = ok;
                            self.authenticated.1 = timestamp;
                            if ok {
                                let _ = self.gateway.accept();
                            }
                        }
                        Event::Hello(h) => self.authenticated.2 = h.device_id == "selftest",
                        Event::Data { stream, data, .. } => {
                            let n = data.len();
                            self.received.1 += n;
                            self.gateway.consume(stream, n);
                        }
                        Event::Closed(_) => self.failed = true,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Moves what the gateway has to send into the device; bytes moved.
    pub fn gateway_to_device<M: Meter>(&mut self, m: &mut M) -> usize {
        let mut moved = 0;
        while let Some(n) = self.gateway.poll_transmit(NOW, &mut self.out[..]) {
            self.transcript.add(&self.out[..n]);
            moved += n;
            let input = &self.out[..n];
            let device = &mut self.device;
            let (got, failed) = m.device(|| deliver_to_device(device, input));
            self.received.0 += got;
            self.failed |= failed;
        }
        moved
    }

    /// Pumps both ways until neither side has anything to send.
    pub fn settle<M: Meter>(&mut self, m: &mut M) {
        for _ in 0..10_000 {
            if self.device_to_gateway(m) + self.gateway_to_device(m) == 0 {
                return;
            }
        }
    }
}

/// The device side of a driver loop: input, events, credit back.
fn deliver_to_device(device: &mut Sess<'_>, mut input: &[u8]) -> (usize, bool) {
    let mut got = 0;
    let mut failed = false;
    let mut stuck = 0;
    while !input.is_empty() && stuck < 2 {
        let used = device.handle_input(NOW, input);
        input = &input[used..];
        stuck = if used == 0 { stuck + 1 } else { 0 };
        while let Some(ev) = device.poll_event() {
            match ev {
                Event::Data { stream, data, .. } => {
                    let n = data.len();
                    got += n;
                    device.consume(stream, n);
                }
                Event::Closed(_) => failed = true,
                _ => {}
            }
        }
    }
    (got, failed)
}

/// Sends `total` bytes of a pattern on `stream` from the gateway (`to_device`)
/// or the device, pumping as credit allows. Bytes accepted by `send`.
pub fn transfer<M: Meter>(
    pair: &mut Pair<'_>,
    stream: StreamId,
    total: usize,
    to_device: bool,
    m: &mut M,
) -> usize {
    let chunk = [0xA5u8; RECORD];
    let mut sent = 0;
    for _ in 0..100_000 {
        if sent >= total {
            break;
        }
        let want = (total - sent).min(RECORD);
        let n = if to_device {
            pair.gateway
                .send(stream, MsgKind::Bytes, &chunk[..want], false, false)
                .unwrap_or(0)
        } else {
            let device = &mut pair.device;
            m.device(|| device.send(stream, MsgKind::Bytes, &chunk[..want], false, false))
                .unwrap_or(0)
        };
        sent += n;
        pair.settle(m);
    }
    sent
}

/// An established pair with one raw stream the gateway opened.
pub fn established<'a>(mem: &'a mut PairMemory) -> Result<(Pair<'a>, StreamId), &'static str> {
    let mut pair = Pair::new(mem, GATEWAY_KEY, 7, &mut Unmetered);
    pair.settle(&mut Unmetered);
    if !(pair.device.is_established() && pair.gateway.is_established()) {
        return Err("sessions not established");
    }
    let id = pair
        .gateway
        .open(StreamKind::Raw, 0)
        .map_err(|_| "gateway could not open a stream")?;
    pair.settle(&mut Unmetered);
    Ok((pair, id))
}

fn check_varint() -> Result<(), &'static str> {
    let values = [
        0,
        63,
        64,
        16_383,
        16_384,
        (1 << 30) - 1,
        1 << 30,
        varint::MAX,
    ];
    for v in values {
        let mut buf = [0u8; 8];
        let n = varint::encode(v, &mut buf).ok_or("encode refused")?;
        if Some(n) != varint::encoded_len(v) {
            return Err("encoded length differs");
        }
        if varint::decode(&buf[..n]) != Some((v, n)) {
            return Err("round trip differs");
        }
        if n > 1 && varint::decode(&buf[..n - 1]).is_some() {
            return Err("a truncated varint decoded");
        }
    }
    Ok(())
}

fn check_backoff() -> Result<(), &'static str> {
    let cap = core::time::Duration::from_secs(60);
    let mut b = Backoff::new(core::time::Duration::from_secs(1), cap);
    let mut last = core::time::Duration::ZERO;
    for i in 0..20u32 {
        let d = b.next_delay(i.wrapping_mul(0x9e37_79b9));
        let ceiling = b.ceiling();
        if d > ceiling || d < b.floor || ceiling > cap || ceiling < last {
            return Err("delay outside floor and ceiling, or the ceiling shrank");
        }
        last = ceiling;
    }
    if last != cap {
        return Err("the ceiling never reached the cap");
    }
    Ok(())
}

fn check_handshake() -> Result<(), &'static str> {
    let mut mem = PairMemory::new();
    let (pair, _) = established(&mut mem)?;
    match pair.authenticated {
        (true, 1, true) => Ok(()),
        (false, _, _) => Err("gateway saw another device key"),
        (_, _, false) => Err("gateway saw another HELLO"),
        _ => Err("gateway saw another timestamp"),
    }
}

fn check_streams() -> Result<(), &'static str> {
    let mut mem = PairMemory::new();
    let (mut pair, id) = established(&mut mem)?;
    if transfer(&mut pair, id, 8192, true, &mut Unmetered) != 8192 || pair.received.0 != 8192 {
        return Err("gateway to device lost bytes");
    }
    if transfer(&mut pair, id, 8192, false, &mut Unmetered) != 8192 || pair.received.1 != 8192 {
        return Err("device to gateway lost bytes");
    }
    if pair.failed {
        return Err("a session failed");
    }
    Ok(())
}

fn check_tamper() -> Result<(), &'static str> {
    let mut mem = PairMemory::new();
    let (mut pair, id) = established(&mut mem)?;
    let n = pair
        .gateway
        .send(id, MsgKind::Bytes, b"sealed", false, false)
        .map_err(|_| "send refused")?;
    if n != 6 {
        return Err("send short");
    }
    let mut record = [0u8; RECORD];
    let len = pair
        .gateway
        .poll_transmit(NOW, &mut record)
        .ok_or("nothing to send")?;
    record[len - 3] ^= 0x01;
    let (got, closed) = deliver_to_device(&mut pair.device, &record[..len]);
    if got != 0 || (!closed && pair.device.is_established()) {
        return Err("a tampered record was accepted");
    }
    Ok(())
}

fn check_wrong_key() -> Result<(), &'static str> {
    let mut mem = PairMemory::new();
    let mut pair = Pair::new(&mut mem, [0x33; 32], 9, &mut Unmetered);
    pair.settle(&mut Unmetered);
    if pair.device.is_established() || pair.gateway.is_established() || pair.authenticated.0 {
        return Err("a device pinning another key got a session");
    }
    Ok(())
}

fn check_garbage() -> Result<(), &'static str> {
    let mut rng: u64 = 0x5eed;
    let mut next = || {
        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut input = [0u8; 300];
    for round in 0..300 {
        let len = (next() % 300) as usize;
        for b in &mut input[..len] {
            *b = next() as u8;
        }
        // A plausible handshake header now and then, so the parser goes deeper.
        if round % 3 == 0 && len > 3 {
            input[2] = proto::session::MSG_INIT;
        }
        if let Ok(frame) = Frame::new_checked(&input[..len]) {
            let _ = FrameRepr::parse(&frame);
        }
        let mut mem = PairMemory::new();
        let mut pair = Pair::new(&mut mem, GATEWAY_KEY, 1, &mut Unmetered);
        let mut rest = &input[..len];
        let mut stuck = 0;
        while !rest.is_empty() && stuck < 2 {
            let used = pair.gateway.handle_input(NOW, rest);
            rest = &rest[used..];
            stuck = if used == 0 { stuck + 1 } else { 0 };
            while pair.gateway.poll_event().is_some() {}
        }
        if pair.gateway.is_established() {
            return Err("random bytes established a session");
        }
    }
    Ok(())
}

/// A check: `Err` says what went wrong.
pub type Check = fn() -> Result<(), &'static str>;

/// The checks, by name.
pub const CHECKS: [(&str, Check); 7] = [
    ("varint", check_varint),
    ("backoff", check_backoff),
    ("handshake", check_handshake),
    ("streams", check_streams),
    ("tamper", check_tamper),
    ("wrong key", check_wrong_key),
    ("garbage", check_garbage),
];

/// The digest of every byte of a fixed scenario (handshake, 8 KiB each
/// way): equal on every architecture that computes the same protocol.
pub fn transcript() -> Result<u64, &'static str> {
    let mut mem = PairMemory::new();
    let (mut pair, id) = established(&mut mem)?;
    transfer(&mut pair, id, 8192, true, &mut Unmetered);
    transfer(&mut pair, id, 8192, false, &mut Unmetered);
    Ok(pair.transcript.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_check_passes_on_the_host() {
        for (name, check) in super::CHECKS {
            assert_eq!(check(), Ok(()), "{name}");
        }
        assert!(super::transcript().is_ok());
    }
}
