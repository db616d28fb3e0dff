//! Protocol micro-benchmarks: record throughput through real sessions,
//! the raw AEAD floor, handshakes per second, and the sizes the targets
//! are set on. Prints plain lines; run with
//! `cargo bench -p proto --bench throughput`.

use std::hint::black_box;
use std::time::{Duration, Instant as Clock};

use proto::noise::CipherState;
use proto::wire::{Params, ServiceList};
use proto::{
    Buffers, Config, Event, Hello, Instant, MsgKind, SecretKey, Session, StreamId, StreamKind,
    StreamSlot,
};

type Sess = Session<Vec<u8>, Vec<StreamSlot>>;

const RECORD: u16 = 16 * 1024 + 18 + 16;

fn big() -> Config {
    let params = Params {
        max_record: RECORD,
        max_streams: 4,
        stream_window: (1 << 31) - 1,
        conn_window: (1 << 31) - 1,
    };
    Config {
        params,
        stall_timeout: None,
        ..Config::GATEWAY
    }
}

fn hello() -> Hello<'static> {
    Hello {
        device_id: "bench",
        firmware: "1",
        params: big().params,
        max_head: 1024,
        services: ServiceList::Slice(&[]),
    }
}

fn pair(config: Config, seed: u8) -> (Sess, Sess) {
    let bufs = || Buffers {
        rx: vec![0u8; usize::from(config.params.max_record)],
        tx: vec![0u8; usize::from(config.params.max_record)],
        streams: vec![StreamSlot::default(); 4],
    };
    let now = Instant::from_millis(0);
    let gw_key = SecretKey::from_bytes([0x22; 32]);
    let mut dev = Session::device(
        config,
        SecretKey::from_bytes([0x11; 32]),
        gw_key.public_key(),
        SecretKey::from_bytes([seed; 32]),
        1,
        &hello(),
        bufs(),
        now,
    )
    .unwrap();
    let mut gw = Session::gateway(
        config,
        gw_key,
        SecretKey::from_bytes([seed ^ 0x5a; 32]),
        bufs(),
        now,
    )
    .unwrap();
    let mut out = vec![0u8; usize::from(config.params.max_record)];
    loop {
        let mut moved = false;
        while let Some(n) = dev.poll_transmit(now, &mut out) {
            feed(&mut gw, &out[..n]);
            moved = true;
        }
        while let Some(n) = gw.poll_transmit(now, &mut out) {
            feed(&mut dev, &out[..n]);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(dev.is_established() && gw.is_established());
    (dev, gw)
}

fn feed(s: &mut Sess, mut bytes: &[u8]) -> usize {
    let mut payload = 0;
    loop {
        let n = s.handle_input(Instant::from_millis(0), bytes);
        bytes = &bytes[n..];
        let mut events = Vec::new();
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Authenticate { .. } => events.push(None),
                Event::Data { stream, data, .. } => {
                    payload += data.len();
                    events.push(Some((stream, data.len())));
                }
                _ => {}
            }
        }
        for e in events {
            match e {
                None => s.accept().unwrap(),
                Some((stream, n)) => s.consume(stream, n),
            }
        }
        if bytes.is_empty() || n == 0 {
            return payload;
        }
    }
}

fn per_sec(count: f64, d: Duration) -> f64 {
    count / d.as_secs_f64()
}

/// Sends `size`-byte messages device → gateway for about a second; returns
/// (seal+frame time, open+parse time, records).
fn session_throughput(size: usize) -> (Duration, Duration, u64) {
    let (mut dev, mut gw) = pair(big(), 0x33);
    let id: StreamId = gw.open(StreamKind::Raw, 0).unwrap();
    let mut out = vec![0u8; usize::from(RECORD)];
    // Deliver the OPEN.
    while let Some(n) = gw.poll_transmit(Instant::from_millis(0), &mut out) {
        feed(&mut dev, &out[..n]);
    }
    let msg = vec![0xa5u8; size];
    let (mut seal, mut open, mut records) = (Duration::ZERO, Duration::ZERO, 0u64);
    let start = Clock::now();
    while start.elapsed() < Duration::from_millis(1200) {
        let t = Clock::now();
        let sent = dev.send(id, MsgKind::Bytes, &msg, false, false).unwrap();
        let n = dev
            .poll_transmit(Instant::from_millis(0), &mut out)
            .unwrap();
        seal += t.elapsed();
        assert_eq!(sent, size);
        let t = Clock::now();
        let got = feed(&mut gw, black_box(&out[..n]));
        open += t.elapsed();
        assert_eq!(got, size);
        records += 1;
        // Credit flows back outside the timed sections.
        while let Some(n) = gw.poll_transmit(Instant::from_millis(0), &mut out) {
            feed(&mut dev, &out[..n]);
        }
    }
    (seal, open, records)
}

fn aead(size: usize) -> (f64, f64) {
    let mut c = CipherState::new(&[7u8; 32]);
    let mut d = CipherState::new(&[7u8; 32]);
    let mut buf = vec![0u8; size];
    let (mut seal, mut open, mut n) = (Duration::ZERO, Duration::ZERO, 0u64);
    let start = Clock::now();
    while start.elapsed() < Duration::from_millis(1000) {
        let t = Clock::now();
        let tag = c.seal(&[], &mut buf).unwrap();
        seal += t.elapsed();
        let t = Clock::now();
        d.open(&[], &mut buf, &tag).unwrap();
        open += t.elapsed();
        n += 1;
    }
    let bytes = (n * size as u64) as f64;
    (
        bytes / seal.as_secs_f64() / 1e6,
        bytes / open.as_secs_f64() / 1e6,
    )
}

fn main() {
    println!(
        "proto micro-benchmarks (one core, release, {})",
        if cfg!(target_feature = "avx2") {
            "avx2 at compile time"
        } else {
            "runtime CPU detection"
        }
    );
    println!();
    println!("record path through sessions (device -> gateway, one stream):");
    println!(
        "{:>8} {:>14} {:>14} {:>16} {:>12}",
        "payload", "seal+frame", "open+parse", "seal+open", "records/s"
    );
    for size in [64usize, 16 * 1024] {
        let (seal, open, records) = session_throughput(size);
        let bytes = (records * size as u64) as f64;
        println!(
            "{:>8} {:>9.0} MB/s {:>9.0} MB/s {:>11.0} MB/s {:>12.0}",
            size,
            bytes / seal.as_secs_f64() / 1e6,
            bytes / open.as_secs_f64() / 1e6,
            bytes / (seal + open).as_secs_f64() / 1e6,
            per_sec(records as f64, seal + open),
        );
    }
    println!();
    println!("raw ChaCha20-Poly1305 (CipherState), the floor:");
    for size in [64usize, 16 * 1024] {
        let (s, o) = aead(size);
        println!(
            "{:>8} seal {:>7.0} MB/s  open {:>7.0} MB/s  seal+open {:>7.0} MB/s",
            size,
            s,
            o,
            1.0 / (1.0 / s + 1.0 / o)
        );
    }
    println!();
    let start = Clock::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(1500) {
        black_box(pair(Config::DEVICE, (n % 200) as u8 + 1));
        n += 1;
    }
    println!(
        "handshakes (both roles, through HELLO, one core): {:.0}/s ({:.0} us each)",
        per_sec(f64::from(n), start.elapsed()),
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
    println!();
    let session = size_of::<Session<[u8; 1024], [StreamSlot; 4]>>();
    let bare = size_of::<Session<&mut [u8], &mut [StreamSlot]>>();
    println!("device-role session at 1 KiB records and 4 streams:");
    println!(
        "  Session<[u8; 1024], [StreamSlot; 4]>      {session} bytes (receive + staging buffers and stream table inside)"
    );
    println!(
        "  plus the caller's 1 KiB output buffer      {} bytes",
        session + 1024
    );
    println!("  Session without its buffers               {bare} bytes");
    println!(
        "  StreamSlot                                {} bytes",
        size_of::<StreamSlot>()
    );
    println!();
    println!(
        "wire sizes: msg1 109 bytes, msg2 73 bytes (checked in tests/vectors.rs), record overhead 18, DATA header 4 (stream < 64) to 7"
    );
}
