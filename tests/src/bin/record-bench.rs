//! `record-bench`: TLS 1.3 AES-256-GCM records sealed and opened through
//! rustls' record interface (`MessageEncrypter`, `MessageDecrypter`), as a
//! connection calls it: ring's suite against the gateway's, whose records
//! run on AWS-LC (`gateway::edge::gcm`). The device link's AES-256-GCM
//! records (proto, feature `aws-lc`) are the same AWS-LC primitive.
//!
//! ```text
//! cargo build --release -p e2e --bin record-bench
//! taskset -c 0 target/release/record-bench           # 5 rounds, 64 MiB per size
//! ```

use std::time::Instant;

use clap::Parser;
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage, Tls13AeadAlgorithm,
};
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite};

#[derive(Parser)]
#[command(about = "TLS 1.3 AES-256-GCM records: ring's against the gateway's (AWS-LC)")]
struct Args {
    /// Rounds; each times every implementation once per size, alternating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Plaintext per implementation, size and round, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    mib: u32,
}

/// Record sizes timed: a full record and an echo message's.
const SIZES: [usize; 2] = [16_384, 64];

fn aead(suite: SupportedCipherSuite) -> Result<&'static dyn Tls13AeadAlgorithm, String> {
    suite
        .tls13()
        .map(|s| s.aead_alg)
        .ok_or_else(|| "not a TLS 1.3 suite".to_string())
}

/// Nanoseconds per record sealed, and per record opened, of `size` bytes.
fn time(alg: &dyn Tls13AeadAlgorithm, size: usize, count: usize) -> Result<(f64, f64), String> {
    let key = || AeadKey::from([0x5a; 32]);
    let iv = || Iv::from([7; 12]);
    let (mut enc, mut dec): (Box<dyn MessageEncrypter>, Box<dyn MessageDecrypter>) =
        (alg.encrypter(key(), iv()), alg.decrypter(key(), iv()));
    let data = vec![0xa5u8; size];
    let chunks = [&data[..]];
    let plain = || OutboundPlainMessage {
        typ: ContentType::ApplicationData,
        version: ProtocolVersion::TLSv1_3,
        payload: OutboundChunks::new(&chunks),
    };
    let t = Instant::now();
    for seq in 0..count as u64 {
        let rec = enc.encrypt(plain(), seq).map_err(|e| e.to_string())?;
        std::hint::black_box(rec);
    }
    let seal = t.elapsed().as_secs_f64() * 1e9 / count as f64;
    // Records to open, made untimed (at most 64 MiB of them).
    let mut enc = alg.encrypter(key(), iv());
    let keep = count.min((64 << 20) / size).max(1);
    let records = (0..keep as u64)
        .map(|seq| enc.encrypt(plain(), seq).map(|r| r.encode()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    // Open what was kept (a copy each: opening decrypts in place).
    let mut buf = Vec::new();
    let t = Instant::now();
    for (seq, rec) in records.iter().enumerate() {
        buf.clear();
        buf.extend_from_slice(&rec[5..]);
        let msg = InboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            &mut buf,
        );
        let opened = dec.decrypt(msg, seq as u64).map_err(|e| e.to_string())?;
        std::hint::black_box(opened.payload);
    }
    let open = t.elapsed().as_secs_f64() * 1e9 / records.len() as f64;
    Ok((seal, open))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let ring = aead(rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384)?;
        let ours = aead(*gateway::edge::gcm::TLS13_AES_256_GCM_SHA384)?;
        for size in SIZES {
            let count = ((args.mib as usize) << 20) / size;
            let (mut r, mut o) = (Vec::new(), Vec::new());
            for round in 1..=args.rounds {
                let (a, b) = (time(ring, size, count)?, time(ours, size, count)?);
                let per_mb = |ns: f64| ns / 1e3 * 1e6 / size as f64;
                println!(
                    "{size} B, round {round}: seal ring {:.0} / AWS-LC {:.0} µs per MB, open ring {:.0} / AWS-LC {:.0} µs per MB ({:.0} / {:.0} and {:.0} / {:.0} ns per record)",
                    per_mb(a.0),
                    per_mb(b.0),
                    per_mb(a.1),
                    per_mb(b.1),
                    a.0,
                    b.0,
                    a.1,
                    b.1
                );
                r.push(a.0 + a.1);
                o.push(b.0 + b.1);
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (mr, mo) = (median(&mut r), median(&mut o));
            println!(
                "{size} B, median of {}: seal + open ring {mr:.0} ns, AWS-LC {mo:.0} ns per record ({:.2}×)",
                args.rounds,
                mo / mr
            );
        }
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("record-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
