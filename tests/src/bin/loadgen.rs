//! `loadgen`: the load generator. One workload against one TLS WebSocket
//! target (the gateway, nginx, HAProxy), measured on the target's
//! processes (`--pid`); prints a human line and a `RESULT k=v …` line.
//!
//! ```text
//! loadgen --addr 127.0.0.1:8443 --ca ca.pem --pid 1234 echo --connections 100 --size 64 --seconds 10
//! loadgen … echo --pipeline 8                 # pipelined
//! loadgen … echo --rate 5000                  # paced: latency at a fixed load
//! loadgen … idle --count 9500 --sources 4     # RSS per idle WSS connection
//! loadgen … handshake [--resume]              # TLS 1.3 handshakes/s and CPU per handshake
//! loadgen … bulk --size 1048576               # one connection, MB/s
//! loadgen --h2 … echo                         # WebSockets over HTTP/2 (RFC 8441)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use e2e::load::{
    BulkOptions, EchoOptions, HandshakeOptions, IdleOptions, Target, bulk, echo, handshakes, idle,
};
use e2e::wss::{tls_config, with_h2};

#[derive(Parser, Debug)]
#[command(about = "Load generator for TLS WebSocket proxies (echo, idle, handshakes, bulk)")]
struct Args {
    /// The target's TLS listener (a loopback address).
    #[arg(long)]
    addr: SocketAddr,
    /// PEM file of the CA the target's certificate chains to.
    #[arg(long)]
    ca: PathBuf,
    /// Host names (SNI, Host) to spread connections over; repeatable.
    /// Default: `dev-0000.bench.test` … as many as --devices.
    #[arg(long)]
    host: Vec<String>,
    /// With no --host: this many `dev-NNNN.bench.test` names.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// The WebSocket path.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// The target's process ids (CPU time and RSS are summed); repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Open each WebSocket as an HTTP/2 stream (RFC 8441 extended
    /// CONNECT) on an HTTP/2 connection of its own, as a browser does over
    /// a connection it already holds (the handshake workload then offers
    /// only h2 in ALPN).
    #[arg(long)]
    h2: bool,
    /// A label copied into the RESULT line.
    #[arg(long, default_value = "target")]
    label: String,
    #[command(subcommand)]
    work: Work,
}

#[derive(Subcommand, Debug)]
enum Work {
    /// WSS echo: messages/s, latency percentiles, target CPU per message.
    Echo {
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Messages in flight per connection (1: closed loop).
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Total messages/s, paced (default: as fast as answered).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Write every measured message here: connection, send time (µs)
        /// and latency (µs), a line each, in send order.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Idle WSS connections: RSS per connection.
    Idle {
        #[arg(long, default_value_t = 9_500)]
        count: usize,
        /// Source addresses 127.0.0.2 … 127.0.0.(1+N).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Seconds to hold them before sampling RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// TLS 1.3 handshakes per second and CPU per handshake.
    Handshake {
        /// Resumed (tickets) instead of full handshakes.
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// One connection, large messages: MB/s.
    Bulk {
        #[arg(long, default_value_t = 65_536)]
        size: usize,
        /// Bytes in flight.
        #[arg(long, default_value_t = 4 << 20)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let ca = match std::fs::read_to_string(&args.ca) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: --ca {}: {e}", args.ca.display());
            return std::process::ExitCode::from(2);
        }
    };
    let hosts = if args.host.is_empty() {
        (0..args.devices.max(1))
            .map(|n| format!("dev-{n:04}.bench.test"))
            .collect()
    } else {
        args.host.clone()
    };
    let t = Target {
        addr: args.addr,
        hosts,
        path: args.path.clone(),
        tls: if args.h2 {
            with_h2(&tls_config(&ca))
        } else {
            tls_config(&ca)
        },
        pids: args.pid.clone(),
    };
    let secs = Duration::from_secs_f64;
    let r = match args.work {
        Work::Echo {
            connections,
            size,
            pipeline,
            rate,
            seconds,
            warmup,
            trace,
        } => {
            let o = EchoOptions {
                connections,
                size,
                pipeline,
                rate,
                duration: secs(seconds),
                warmup: secs(warmup),
                trace,
            };
            echo(&t, &o).await
        }
        Work::Idle {
            count,
            sources,
            parallel,
            settle,
        } => {
            let o = IdleOptions {
                count,
                sources,
                parallel,
                settle: secs(settle),
            };
            idle(&t, &o).await
        }
        Work::Handshake {
            resume,
            parallel,
            seconds,
        } => {
            let o = HandshakeOptions {
                resume,
                parallel,
                duration: secs(seconds),
            };
            handshakes(&t, &o).await
        }
        Work::Bulk {
            size,
            window,
            seconds,
        } => {
            let o = BulkOptions {
                size,
                window,
                duration: secs(seconds),
            };
            bulk(&t, &o).await
        }
    };
    match r {
        Ok(mut r) => {
            r.0.insert(0, ("label".into(), args.label.clone()));
            r.put("load1", e2e::procs::loadavg());
            println!("{}", r.line());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen {}: {e}", args.label);
            std::process::ExitCode::FAILURE
        }
    }
}
