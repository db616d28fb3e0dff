//! WSS through the gateway to device echo services: closed-loop echo
//! throughput and latency, then memory per idle WebSocket.
//!
//! The gateway runs as its own process (the release binary next to this
//! one, `gateway run` with a generated configuration); the devices
//! (`EchoApp` under the real link runtime) and the clients run here, so
//! the gateway's RSS and CPU time are its own.
//!
//! ```text
//! cargo build --release -p gateway -p e2e
//! target/release/wss-bench --connections 100 --size 64 --seconds 10 --idle 10000
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform, parse_key};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use e2e::setup::{BenchDir, DOMAIN};
use e2e::wss::{Latencies, connect, cpu_time, rss_kib, tls_config};
use futures_util::{SinkExt as _, StreamExt as _};
use proto::{Backoff, Config, Params, PublicKey};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
#[command(about = "WSS echo and idle-connection benchmark through the gateway")]
struct Args {
    /// Simulated devices (streams spread over them).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Concurrent echo connections (closed loop: one message in flight each).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Echo phase duration, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle WebSockets to hold for the memory figure (0: skip).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// The gateway binary. Default: `gateway` next to this program.
    #[arg(long)]
    gateway: Option<std::path::PathBuf>,
}

struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Only the process this program started, by its id.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Device link settings for a host-sized echo device.
fn device_link() -> LinkConfig {
    LinkConfig {
        session: Config {
            params: Params {
                max_record: 4096 + 18,
                max_streams: 256,
                stream_window: 16 * 1024,
                conn_window: 256 * 1024,
            },
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // The certificates, the gateway's key, the echo devices and the
    // gateway's configuration, as the other benchmarks write them.
    let bench = BenchDir::create("wss-bench", args.devices).expect("benchmark directory");
    let devices = bench.devices.clone();
    let https_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let link_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = bench
        .write_gateway_config("gateway.toml", https_addr, link_addr, metrics_addr, None)
        .expect("gateway configuration");
    let https = https_addr.port();

    let exe = args.gateway.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("exe")
            .with_file_name("gateway")
    });
    let log = std::fs::File::create(bench.path("gateway.log")).expect("log");
    let child = Command::new(&exe)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let gw = Gateway { child };
    let pid = gw.child.id();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(https_addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let gateway_public =
        PublicKey(parse_key(&bench.gateway_public).expect("the gateway's public key"));
    for d in devices.clone() {
        tokio::spawn(async move {
            let mut app = EchoApp::new(EchoOptions {
                device_id: d.id.clone(),
                firmware: "wss-bench".into(),
                subprotocols: Vec::new(),
                raw_service: false,
            });
            let identity = Identity {
                key: d.key,
                gateway: gateway_public,
            };
            let mut platform = TokioPlatform::new(link_addr);
            let mut mem: Box<LinkMemory<{ 4096 + 18 }, 256>> = Box::new(LinkMemory::new());
            run(&mut platform, &mut app, &identity, &device_link(), &mut mem).await;
        });
    }
    let tls = tls_config(&bench.ca_pem);
    let origin = |id: &str| format!("https://{id}.{DOMAIN}:{https}");
    // Online check: a WebSocket to every device.
    for d in &devices {
        let host = format!("{}.{DOMAIN}", d.id);
        let mut tries = 0;
        while connect(&tls, https_addr, None, &host, "/ws", &origin(&d.id))
            .await
            .is_err()
        {
            tries += 1;
            assert!(tries < 200, "device {} never came online", d.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let idle_rss = rss_kib(pid).unwrap_or(0);
    println!(
        "gateway pid {pid}: {} devices online, RSS {idle_rss} KiB",
        devices.len()
    );

    // Echo: closed loop on each connection.
    let mut sockets = Vec::new();
    for i in 0..args.connections {
        let d = &devices[i % devices.len()];
        let host = format!("{}.{DOMAIN}", d.id);
        sockets.push(
            connect(&tls, https_addr, None, &host, "/ws", &origin(&d.id))
                .await
                .unwrap_or_else(|e| panic!("echo connection {i}: {e}")),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time(pid).unwrap_or_default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let (stop, count, size) = (stop.clone(), count.clone(), args.size);
        tasks.push(tokio::spawn(async move {
            let payload = vec![0x5au8; size];
            let mut lat = Latencies::default();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if ws.send(Message::binary(payload.clone())).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) if b.len() == size => {}
                    other => panic!("echo failed: {other:?}"),
                }
                lat.record(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
            }
            let _ = ws.close(None).await;
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Latencies::default();
    for t in tasks {
        if let Ok(l) = t.await {
            all.0.extend(l.0);
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let n = count.load(Ordering::Relaxed);
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "echo {} B x {} connections for {:.1} s: {n} messages, {rate:.0} msg/s, \
         p50 {} us, p90 {} us, p99 {} us, max {} us; gateway CPU {:.1} us/msg",
        args.size,
        args.connections,
        elapsed.as_secs_f64(),
        all.percentile(50.0),
        all.percentile(90.0),
        all.percentile(99.0),
        all.percentile(100.0),
        cpu.as_micros() as f64 / n.max(1) as f64,
    );

    if args.idle > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss_kib(pid).unwrap_or(0);
        let mut held = Vec::with_capacity(args.idle);
        let t = Instant::now();
        for i in 0..args.idle {
            let d = &devices[i % devices.len()];
            let host = format!("{}.{DOMAIN}", d.id);
            // Spread sources over 127.0.0.2.. so ports never run short.
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / 20_000) as u8));
            match connect(&tls, https_addr, Some(source), &host, "/ws", &origin(&d.id)).await {
                Ok(ws) => held.push(ws),
                Err(e) => {
                    println!(
                        "idle connection {i} failed: {e}; stopping at {}",
                        held.len()
                    );
                    break;
                }
            }
        }
        let opened = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid).unwrap_or(0);
        let per = (after.saturating_sub(before) * 1024) as f64 / held.len().max(1) as f64;
        println!(
            "idle: {} WebSockets opened in {:.1} s; gateway RSS {before} KiB -> {after} KiB: \
             {per:.0} bytes per idle WebSocket (TLS + HTTP + WebSocket + device stream)",
            held.len(),
            opened.as_secs_f64()
        );
    }
    // The gateway first, then its directory.
    drop(gw);
    drop(bench);
}
