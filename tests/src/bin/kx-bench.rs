//! `kx-bench`: the server's share of a TLS 1.3 key exchange (key generation,
//! public key, shared secret), X25519 in ring's provider against the
//! gateway's on AWS-LC (`gateway::edge::kx`), both through rustls'
//! `SupportedKxGroup`, as a handshake calls them. The peer's share is made
//! once (a client's, which the server only reads).
//!
//! ```text
//! cargo build --release -p e2e --bin kx-bench
//! taskset -c 0 target/release/kx-bench               # 5 rounds of 20,000 each
//! ```

use std::time::Instant;

use clap::Parser;
use rustls::crypto::SupportedKxGroup;

#[derive(Parser)]
#[command(about = "X25519 in a TLS handshake: ring's against the gateway's (AWS-LC)")]
struct Args {
    /// Rounds; each times every implementation once, alternating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Exchanges per implementation per round.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
}

/// Microseconds per exchange of `group`, against the share `peer`.
fn time(group: &dyn SupportedKxGroup, peer: &[u8], count: u32) -> Result<f64, String> {
    let t = Instant::now();
    for _ in 0..count {
        let kx = group.start().map_err(|e| e.to_string())?;
        std::hint::black_box(kx.pub_key());
        let secret = kx.complete(peer).map_err(|e| e.to_string())?;
        std::hint::black_box(secret.secret_bytes());
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(count))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let ring = rustls::crypto::ring::kx_group::X25519;
        let ours = gateway::edge::kx::X25519;
        let peer = ring.start().map_err(|e| e.to_string())?.pub_key().to_vec();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            let (x, y) = (
                time(ring, &peer, args.count)?,
                time(ours, &peer, args.count)?,
            );
            println!("round {round}: ring {x:.1} µs, AWS-LC {y:.1} µs per exchange");
            a.push(x);
            b.push(y);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (ma, mb) = (median(&mut a), median(&mut b));
        println!(
            "median of {}: ring {ma:.1} µs, AWS-LC {mb:.1} µs ({:.2}×)",
            args.rounds,
            mb / ma
        );
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kx-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
