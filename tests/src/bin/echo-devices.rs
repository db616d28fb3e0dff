//! `echo-devices`: simulated devices running `EchoApp` (WebSocket echo,
//! HTTP echo routes) under the real link runtime, dialing a gateway: the
//! device side of the link-mode benchmarks. Ids `dev-0000` …, keys from
//! the seed (as `e2e::setup::BenchDir` registers them).
//!
//! ```text
//! echo-devices --link 127.0.0.1:7000 --gateway-key <hex> --count 100
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform, fleet, parse_key};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use proto::{Backoff, Config, Params, PublicKey};

/// Largest record the devices receive: 16 KiB of payload, like the gateway.
const RECORD: usize = 16 * 1024 + 18;
/// What one socket write sends and one read takes: four whole records, as
/// a host device batches them (a system call per record took more of the
/// load generator's core than the load generator itself in the bulk
/// benchmark).
const IO: usize = 4 * RECORD;

#[derive(Parser, Debug)]
#[command(about = "Echo devices (EchoApp) dialing a gateway's link listener")]
struct Args {
    /// The gateway's link address.
    #[arg(long)]
    link: SocketAddr,
    /// The gateway's public key, 64 hex digits.
    #[arg(long)]
    gateway_key: String,
    /// Devices to run.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Key seed.
    #[arg(long, default_value = e2e::setup::SEED)]
    seed: String,
    /// Id prefix.
    #[arg(long, default_value = e2e::setup::PREFIX)]
    prefix: String,
    /// Record ciphers offered: `auto` (AES-256-GCM where this machine has
    /// AES instructions) or `chacha20-poly1305` (a microcontroller's offer).
    #[arg(long, default_value = "auto", value_parser = e2e::setup::device_ciphers)]
    cipher: proto::Ciphers,
}

fn link_config(ciphers: proto::Ciphers) -> LinkConfig {
    LinkConfig {
        session: Config {
            params: Params {
                max_record: RECORD as u16,
                max_streams: 256,
                stream_window: 1024 * 1024,
                conn_window: 4 * 1024 * 1024,
            },
            ciphers,
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let gateway =
        PublicKey(parse_key(&args.gateway_key).unwrap_or_else(|e| panic!("--gateway-key: {e}")));
    let mut tasks = Vec::new();
    let cipher = args.cipher;
    for d in fleet(&args.seed, &args.prefix, args.count) {
        tasks.push(tokio::spawn(async move {
            let mut app = EchoApp::new(EchoOptions {
                device_id: d.id.clone(),
                firmware: "echo-devices".into(),
                subprotocols: Vec::new(),
                raw_service: false,
            });
            let identity = Identity {
                key: d.key,
                gateway,
            };
            let mut platform = TokioPlatform::new(args.link);
            let mut mem: Box<LinkMemory<RECORD, 256, IO>> = Box::new(LinkMemory::new());
            run(
                &mut platform,
                &mut app,
                &identity,
                &link_config(cipher),
                &mut mem,
            )
            .await;
        }));
    }
    println!("echo-devices: {} devices dialing {}", args.count, args.link);
    for t in tasks {
        let _ = t.await;
    }
}
