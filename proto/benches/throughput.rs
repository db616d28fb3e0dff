//! Protocol micro-benchmarks: record throughput through real sessions (both
//! directions), the raw AEAD floor, handshakes per second (both roles and
//! each role alone), and the sizes the targets are set on. Plain std timing,
//! one core; prints plain lines. Run with
//! `cargo bench -p proto --bench throughput`.
//!
//! Every measurement runs in short batches (about 0.2 ms per timed phase)
//! after a warm-up, until at least [`MEASURE`] of timed work has
//! accumulated. A figure is the median over batches of that phase; a
//! combined figure (seal+open, both roles) is the sum of its phases'
//! medians, because on a shared machine a preemption lands in one phase of
//! a batch and would inflate every sum. The best batch is shown beside it.

use std::hint::black_box;
use std::time::{Duration, Instant as Clock};

use proto::noise::{CipherState, TAG_LEN};
use proto::session::RECORD_OVERHEAD;
use proto::wire::{
    DATA_HEADER_MAX, FrameRepr, MAX_WINDOW, Params, Service, ServiceKind, ServiceList, StrList,
};
use proto::{
    Buffers, Config, Event, Hello, Instant, MsgKind, PublicKey, SecretKey, Session, StreamId,
    StreamKind, StreamSlot,
};

type Sess = Session<Vec<u8>, Vec<StreamSlot>>;

const WARMUP: Duration = Duration::from_millis(300);
const MEASURE: Duration = Duration::from_secs(1);
const NOW: Instant = Instant::from_millis(0);
const SIZES: [usize; 2] = [64, 16 * 1024];
/// A record that carries a 16 KiB payload in one DATA frame, with room to spare.
const RECORD: u16 = 16 * 1024 + DATA_HEADER_MAX as u16 + RECORD_OVERHEAD as u16 + 16;
const DEVICE_KEY: [u8; 32] = [0x11; 32];
const GATEWAY_KEY: [u8; 32] = [0x22; 32];

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

/// A device's HELLO with two services, as the tests' harness sends it.
fn hello() -> Hello<'static> {
    Hello {
        device_id: "plc-7",
        firmware: "1.2.3",
        params: Config::DEVICE.params,
        max_head: 1024,
        services: ServiceList::Slice(&SERVICES),
    }
}

/// Both sides: 16 KiB records, windows so large that credit never limits.
fn big() -> Config {
    Config {
        params: Params {
            max_record: RECORD,
            max_streams: 4,
            stream_window: MAX_WINDOW,
            conn_window: MAX_WINDOW,
        },
        stall_timeout: None,
        ..Config::GATEWAY
    }
}

fn buffers(config: &Config) -> Buffers<Vec<u8>, Vec<StreamSlot>> {
    let len = usize::from(config.params.max_record);
    Buffers {
        rx: vec![0; len],
        tx: vec![0; len],
        streams: vec![StreamSlot::default(); 4],
    }
}

fn ephemeral(seed: u64, role: u8) -> SecretKey {
    let mut b = [role; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    SecretKey::from_bytes(b)
}

/// A device session; `gateway` is the pinned key (from provisioning, not
/// derived per handshake).
fn device(
    config: Config,
    gateway: PublicKey,
    seed: u64,
    bufs: Buffers<Vec<u8>, Vec<StreamSlot>>,
) -> Sess {
    Session::device(
        config,
        SecretKey::from_bytes(DEVICE_KEY),
        gateway,
        ephemeral(seed, 0xd0),
        1 + seed,
        &hello(),
        bufs,
        NOW,
    )
    .expect("device session")
}

fn gateway(config: Config, seed: u64, bufs: Buffers<Vec<u8>, Vec<StreamSlot>>) -> Sess {
    Session::gateway(
        config,
        SecretKey::from_bytes(GATEWAY_KEY),
        ephemeral(seed, 0x9a),
        bufs,
        NOW,
    )
    .expect("gateway session")
}

/// Feeds `bytes` (any number of whole or partial records) the way a driver
/// does: input, then every event; payload is consumed at once (credit goes
/// back), a device is accepted. Returns the payload bytes delivered.
fn deliver(s: &mut Sess, mut bytes: &[u8]) -> usize {
    let mut payload = 0;
    let mut stuck = 0;
    while !bytes.is_empty() {
        let n = s.handle_input(NOW, bytes);
        bytes = &bytes[n..];
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Data { stream, data, .. } => {
                    let len = black_box(data).len();
                    payload += len;
                    s.consume(stream, len);
                }
                Event::Authenticate { .. } => s.accept().expect("accept"),
                _ => {}
            }
        }
        stuck = if n == 0 { stuck + 1 } else { 0 };
        assert!(stuck < 2, "session takes no input");
    }
    payload
}

/// Moves everything `from` has to send into `to`; returns the bytes moved.
fn pump(from: &mut Sess, to: &mut Sess, out: &mut [u8]) -> usize {
    let mut moved = 0;
    while let Some(n) = from.poll_transmit(NOW, out) {
        deliver(to, &out[..n]);
        moved += n;
    }
    moved
}

/// An established device/gateway pair with one raw stream the gateway opened.
fn pair() -> (Sess, Sess, StreamId) {
    let config = big();
    let pinned = SecretKey::from_bytes(GATEWAY_KEY).public_key();
    let mut dev = device(config, pinned, 7, buffers(&config));
    let mut gw = gateway(config, 7, buffers(&config));
    let mut out = vec![0; usize::from(RECORD)];
    while pump(&mut dev, &mut gw, &mut out) + pump(&mut gw, &mut dev, &mut out) > 0 {}
    assert!(dev.is_established() && gw.is_established());
    let id = gw.open(StreamKind::Raw, 1).expect("open");
    pump(&mut gw, &mut dev, &mut out);
    (dev, gw, id)
}

/// Per-batch samples of seconds per unit.
#[derive(Default)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration, units: usize) {
        self.0.push(d.as_secs_f64() / units as f64);
    }

    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn best(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Warms up, then runs `batch` until [`MEASURE`] of timed work has passed.
/// `batch(true)` records its samples and returns the time it measured.
fn run(mut batch: impl FnMut(bool) -> Duration) -> usize {
    let warm = Clock::now();
    while warm.elapsed() < WARMUP {
        batch(false);
    }
    let (mut timed, mut batches) = (Duration::ZERO, 0);
    while timed < MEASURE {
        timed += batch(true);
        batches += 1;
    }
    batches
}

/// Records per batch: about 0.2 ms of work per phase.
fn batch_len(size: usize) -> usize {
    if size <= 1024 { 128 } else { 8 }
}

struct Phases {
    seal: Samples,
    open: Samples,
    /// Per batch, seal and open together.
    both: Samples,
    batches: usize,
}

impl Phases {
    fn new() -> Self {
        Self {
            seal: Samples::default(),
            open: Samples::default(),
            both: Samples::default(),
            batches: 0,
        }
    }

    /// Seconds per record, seal then open.
    fn combined(&self) -> f64 {
        self.seal.median() + self.open.median()
    }
}

/// `size`-byte sends from `tx` to `rx` on `id`, one record each: the
/// seal+frame side (`send` + `poll_transmit`) and the open+parse side
/// (`handle_input` + `poll_event` + `consume`) timed apart, records handed
/// over in a buffer of one batch, as a socket would.
fn session_throughput(tx: &mut Sess, rx: &mut Sess, id: StreamId, size: usize) -> Phases {
    let per = batch_len(size);
    let msg = vec![0xa5u8; size];
    let max = tx.max_transmit();
    let mut wire = vec![0u8; per * max];
    let mut back = vec![0u8; usize::from(RECORD)];
    let mut p = Phases::new();
    p.batches = run(|keep| {
        let t = Clock::now();
        let mut len = 0;
        for _ in 0..per {
            let sent = tx.send(id, MsgKind::Bytes, &msg, false, false);
            let n = tx.poll_transmit(NOW, &mut wire[len..len + max]);
            len += n.expect("a record");
            assert_eq!(sent, Ok(size));
        }
        let seal = t.elapsed();
        let t = Clock::now();
        let got = deliver(rx, black_box(&wire[..len]));
        let open = t.elapsed();
        assert_eq!(got, per * size, "short delivery (credit?)");
        // Credit goes back outside the timed sections.
        pump(rx, tx, &mut back);
        if keep {
            p.seal.push(seal, per);
            p.open.push(open, per);
            p.both.push(seal + open, per);
        }
        seal + open
    });
    p
}

/// The AEAD alone: `CipherState::seal` of a batch of buffers, then `open`
/// of them in order (fresh nonces each, as records have).
fn aead(size: usize) -> Phases {
    let per = batch_len(size);
    let mut c = CipherState::new(&[7u8; 32]);
    let mut d = CipherState::new(&[7u8; 32]);
    let mut bufs = vec![vec![0x5au8; size]; per];
    let mut tags = vec![[0u8; TAG_LEN]; per];
    let mut p = Phases::new();
    p.batches = run(|keep| {
        let t = Clock::now();
        for (buf, tag) in bufs.iter_mut().zip(&mut tags) {
            *tag = c.seal(&[], black_box(buf)).expect("nonce");
        }
        let seal = t.elapsed();
        let t = Clock::now();
        for (buf, tag) in bufs.iter_mut().zip(&tags) {
            d.open(&[], black_box(buf), tag).expect("authentic");
        }
        let open = t.elapsed();
        if keep {
            p.seal.push(seal, per);
            p.open.push(open, per);
            p.both.push(seal + open, per);
        }
        seal + open
    });
    p
}

/// What one handshake (device `Config::DEVICE`, gateway `Config::GATEWAY`,
/// through the HELLO) costs each role, and the messages' sizes.
struct Handshake {
    initiator: Samples,
    responder: Samples,
    /// Per handshake, both roles together.
    both: Samples,
    handshakes: usize,
    msg1: usize,
    msg2: usize,
    hello_record: usize,
}

fn handshakes() -> Handshake {
    let (dc, gc) = (Config::DEVICE, Config::GATEWAY);
    let mut h = Handshake {
        initiator: Samples::default(),
        responder: Samples::default(),
        both: Samples::default(),
        handshakes: 0,
        msg1: 0,
        msg2: 0,
        hello_record: 0,
    };
    let mut seed = 0u64;
    let pinned = SecretKey::from_bytes(GATEWAY_KEY).public_key();
    let (mut m1, mut m2, mut m3) = ([0u8; 256], [0u8; 256], vec![0u8; 1024]);
    h.handshakes = run(|keep| {
        seed += 1;
        let (db, gb) = (buffers(&dc), buffers(&gc));
        // Device: create, msg1.
        let t = Clock::now();
        let mut dev = device(dc, pinned, seed, db);
        let n1 = dev.poll_transmit(NOW, &mut m1).expect("msg1");
        let mut dev_t = t.elapsed();
        // Gateway: create, read msg1, accept, msg2.
        let t = Clock::now();
        let mut gw = gateway(gc, seed, gb);
        deliver(&mut gw, &m1[..n1]);
        let n2 = gw.poll_transmit(NOW, &mut m2).expect("msg2");
        let mut gw_t = t.elapsed();
        // Device: read msg2, the HELLO record.
        let t = Clock::now();
        deliver(&mut dev, &m2[..n2]);
        let n3 = dev.poll_transmit(NOW, &mut m3).expect("hello");
        dev_t += t.elapsed();
        // Gateway: read the HELLO; the session is up.
        let t = Clock::now();
        deliver(&mut gw, &m3[..n3]);
        gw_t += t.elapsed();
        assert!(dev.is_established() && gw.is_established());
        (h.msg1, h.msg2, h.hello_record) = (n1, n2, n3);
        // Dropping (zeroizing) the sessions is not timed.
        black_box((dev, gw));
        if keep {
            h.initiator.push(dev_t, 1);
            h.responder.push(gw_t, 1);
            h.both.push(dev_t + gw_t, 1);
        }
        dev_t + gw_t
    });
    h
}

/// X25519 with the base point (`SecretKey::public_key`), for scale.
fn base_mult() -> Samples {
    let mut s = Samples::default();
    let mut k = [3u8; 32];
    const PER: usize = 2;
    run(|keep| {
        let t = Clock::now();
        for i in 0..PER {
            k[0] = i as u8;
            black_box(SecretKey::from_bytes(black_box(k)).public_key());
        }
        let d = t.elapsed();
        if keep {
            s.push(d, PER);
        }
        d
    });
    s
}

fn mbps(size: usize, secs: f64) -> f64 {
    size as f64 / secs / 1e6
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
fn avx2() -> bool {
    false
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    println!("proto micro-benchmarks: one core, bench profile");
    println!(
        "avx2: compile time {}, this CPU {}; load average (1 min) at start {}",
        cfg!(target_feature = "avx2"),
        avx2(),
        load()
    );
    println!(
        "each figure: median of batches after {} ms warm-up, >= {} s timed; [best batch]; MB = 10^6 payload bytes",
        WARMUP.as_millis(),
        MEASURE.as_secs()
    );

    println!();
    println!(
        "record path through two established sessions, one raw stream, one DATA frame per record:"
    );
    println!(
        "  seal+frame = send + poll_transmit; open+parse = handle_input + poll_event + consume"
    );
    println!(
        "  {:<16} {:>7} {:>23} {:>23} {:>23} {:>11}",
        "direction", "payload", "seal+frame", "open+parse", "seal+open", "[best s+o]"
    );
    let (mut dev, mut gw, id) = pair();
    let mut session_best = [0.0f64; 2];
    for (name, dev_to_gw) in [("device->gateway", true), ("gateway->device", false)] {
        for (i, size) in SIZES.into_iter().enumerate() {
            let p = if dev_to_gw {
                session_throughput(&mut dev, &mut gw, id, size)
            } else {
                session_throughput(&mut gw, &mut dev, id, size)
            };
            let cell =
                |secs: f64| format!("{:>6.0} MB/s {:>8.0} rec/s", mbps(size, secs), 1.0 / secs);
            println!(
                "  {:<16} {:>5} B {:>23} {:>23} {:>23} {:>6.0} MB/s  ({} batches of {})",
                name,
                size,
                cell(p.seal.median()),
                cell(p.open.median()),
                cell(p.combined()),
                mbps(size, p.both.best()),
                p.batches,
                batch_len(size),
            );
            if dev_to_gw {
                session_best[i] = p.both.best();
            }
        }
    }

    println!();
    println!("raw ChaCha20-Poly1305 (CipherState::seal / open, in place), the floor:");
    println!(
        "  {:<16} {:>7} {:>12} {:>12} {:>12} {:>11} {:>28}",
        "", "payload", "seal", "open", "seal+open", "[best s+o]", "session over it, best/best"
    );
    for (i, size) in SIZES.into_iter().enumerate() {
        let p = aead(size);
        println!(
            "  {:<16} {:>5} B {:>7.0} MB/s {:>7.0} MB/s {:>7.0} MB/s {:>6.0} MB/s {:>+27.0}%",
            "",
            size,
            mbps(size, p.seal.median()),
            mbps(size, p.open.median()),
            mbps(size, p.combined()),
            mbps(size, p.both.best()),
            (session_best[i] / p.both.best() - 1.0) * 100.0,
        );
    }

    println!();
    let h = handshakes();
    let line = |what: &str, secs: f64, best: f64| {
        println!(
            "  {what:<40} {:>6.0} us {:>7.0}/s   [best {:.0} us]",
            secs * 1e6,
            1.0 / secs,
            best * 1e6
        );
    };
    println!(
        "handshakes through HELLO (device Config::DEVICE, gateway Config::GATEWAY; {} timed):",
        h.handshakes
    );
    let (dev, gw) = (h.initiator.median(), h.responder.median());
    line(
        "both roles (full handshake, one core)",
        dev + gw,
        h.both.best(),
    );
    line("initiator only (device side)", dev, h.initiator.best());
    line("responder only (gateway side)", gw, h.responder.best());
    let bm = base_mult();
    line("for scale: X25519 base-point mult", bm.median(), bm.best());
    println!(
        "  device: Session::device, msg1, read msg2, HELLO record; gateway: Session::gateway,"
    );
    println!("  read msg1, accept, msg2, read HELLO (buffers allocated outside the timing)");

    println!();
    let session = size_of::<Session<[u8; 1024], [StreamSlot; 4]>>();
    let bare = size_of::<Session<&mut [u8], &mut [StreamSlot]>>();
    println!("device session state with buffers at 1 KiB records and 4 streams:");
    println!(
        "  {:<58} {:>5} bytes",
        "Session<[u8; 1024], [StreamSlot; 4]> (rx, tx, streams inside)", session
    );
    println!(
        "  {:<58} {:>5} bytes (target <= 8 KB)",
        "  plus the caller's 1 KiB transmit output buffer",
        session + 1024
    );
    println!(
        "  {:<58} {:>5} bytes",
        "Session<&mut [u8], &mut [StreamSlot]> (without buffers)", bare
    );
    println!(
        "  {:<58} {:>5} bytes",
        "StreamSlot",
        size_of::<StreamSlot>()
    );

    println!();
    println!("wire sizes (measured, length prefix included; target <= 256 per handshake message):");
    println!(
        "  handshake msg1 (device -> gateway)            {:>4} bytes",
        h.msg1
    );
    println!(
        "  handshake msg2 (gateway -> device)            {:>4} bytes",
        h.msg2
    );
    println!(
        "  HELLO record (2 services; a record, max_record-bounded) {:>4} bytes",
        h.hello_record
    );
    println!("  record overhead (length + tag)                {RECORD_OVERHEAD:>4} bytes");
    let (stream, on_wire) = data_header_on_wire();
    println!("  DATA header in a live record (stream {stream})       {on_wire:>4} bytes");
    let header = |stream: u32| {
        let f = FrameRepr::Data {
            stream: StreamId::new(stream).expect("id"),
            msg: MsgKind::Bytes,
            end_msg: false,
            fin: false,
            payload: &[0; 64],
        };
        f.buffer_len() - 64
    };
    println!(
        "  DATA header by stream id: 1..63 -> {}, 64..16383 -> {}, 16384..2^30-1 -> {} bytes (DATA_HEADER_MAX {})",
        header(1),
        header(64),
        header(StreamId::MAX),
        DATA_HEADER_MAX
    );
}

/// A DATA frame's header as it goes out: a 64-byte send's record, less the
/// payload and the record overhead (nothing else rides along).
fn data_header_on_wire() -> (StreamId, usize) {
    let (mut dev, mut gw, id) = pair();
    let mut out = vec![0u8; usize::from(RECORD)];
    dev.send(id, MsgKind::Bytes, &[1; 64], false, false)
        .expect("send");
    let n = dev.poll_transmit(NOW, &mut out).expect("record");
    assert_eq!(deliver(&mut gw, &out[..n]), 64);
    (id, n - 64 - RECORD_OVERHEAD)
}
