//! `link-bench`: one stream over the encrypted device link on loopback TCP,
//! in one process: the gateway's session code (`gateway::link`: hub,
//! session task, `DeviceStream`) against the device runtime
//! (`device_fw::link::run` with `EchoApp`, as `echo-devices` runs it).
//!
//! ```text
//!  gateway runtime (one worker thread)         device runtime (one worker thread)
//!  bench ─DeviceStream─▶ session task ◀──TCP 127.0.0.1──▶ link driver ─▶ EchoApp
//!   down: POST /upload, N MiB in --chunk sends, FIN ─▶ {"bytes":N,"sum":S}
//!   up:   GET /bytes?n=N ─▶ N bytes back, read through DeviceStream::recv
//! ```
//!
//! Each round moves `--mib` MiB one way, timed from the first send to the
//! last byte (down: the device's JSON answer, which checks count and sum;
//! up: FIN). CPU time per direction is the sum of the `schedstat` run
//! times of each runtime's threads over the round. Each runtime has one
//! worker thread; `--pin` pins them to cores 0 and 1. The transfers run as
//! tasks on the gateway's worker, beside the session task, as the bridge's do.
//!
//! ```text
//! cargo build --release -p e2e --bin link-bench
//! target/release/link-bench                      # 5 rounds of 256 MiB each way
//! target/release/link-bench --mib 64 --rounds 3 --only down
//! ```
//!
//! The device announces 16 KiB records, 256 KiB stream and 1 MiB
//! connection windows (proto's gateway reference values; `echo-devices`
//! grant 1 MiB and 4 MiB); the gateway runs `LinkSettings::default()`.
//! Loopback only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use device_fw::host::{EchoApp, EchoOptions, TokioPlatform};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use gateway::link::{DeviceHandle, DeviceInfo, Hub, LinkSettings, Registry, StreamEvent, serve};
use proto::wire::{HeaderList, RequestHead, ResponseHead};
use proto::{Backoff, Config, MsgKind, Params, SecretKey, StreamKind};

/// Largest record the device receives: 16 KiB of payload, like the gateway.
const RECORD: usize = 16 * 1024 + 18;
/// Thread names, for the CPU accounting (`/proc/self/task/*/comm`).
const GW_THREAD: &str = "link-bench-gw";
const DEV_THREAD: &str = "link-bench-dev";
const DEVICE_ID: &str = "bench-0";

#[derive(Parser, Debug, Clone)]
#[command(
    about = "One stream through the device link: gateway session code against the device runtime"
)]
struct Args {
    /// MiB moved per round and direction.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Rounds per direction.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bytes handed to one `DeviceStream::send`, KiB (the bridge passes one
    /// WebSocket message or body chunk per send).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Only this direction: `down` (gateway → device) or `up`.
    #[arg(long)]
    only: Option<String>,
    /// Pin the gateway runtime to core 0 and the device runtime to core 1.
    /// Off by default: on a shared machine a pinned thread waits for its
    /// core behind other processes (at load average 10 that halved the
    /// throughput here).
    #[arg(long)]
    pin: bool,
    /// A round that takes longer than this many seconds fails the run.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Record ciphers the device offers: `auto` (AES-256-GCM where this
    /// machine has AES instructions) or `chacha20-poly1305`.
    #[arg(long, default_value = "auto", value_parser = e2e::setup::device_ciphers)]
    cipher: proto::Ciphers,
}

fn device_config(ciphers: proto::Ciphers) -> LinkConfig {
    LinkConfig {
        session: Config {
            params: Params {
                max_record: RECORD as u16,
                max_streams: 4,
                stream_window: 256 * 1024,
                conn_window: 1024 * 1024,
            },
            ciphers,
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
    }
}

/// Pins the calling thread to `core` (best effort).
fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Run time of this process's threads named `name`, nanoseconds.
fn thread_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut sum = 0;
    for t in tasks.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        sum += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    sum
}

fn runtime(name: &'static str, core: Option<usize>) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name(name)
        .on_thread_start(move || {
            if let Some(c) = core {
                pin(c);
            }
        })
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn head(method: &str, target: &str) -> Vec<u8> {
    let h = RequestHead {
        method,
        target,
        headers: HeaderList::Slice(&[]),
    };
    let mut b = vec![0u8; h.buffer_len()];
    h.emit(&mut b).expect("request head");
    b
}

/// One round's figures.
#[derive(Clone, Copy, Debug)]
struct Round {
    secs: f64,
    gw_ns: u64,
    dev_ns: u64,
}

/// Gateway → device: `POST /upload`, then `bytes` of payload.
async fn down(dev: &DeviceHandle, bytes: usize, chunk: &[u8]) -> Result<(), String> {
    let mut st = dev
        .open(StreamKind::Http, 0)
        .await
        .map_err(|e| format!("open: {e}"))?;
    st.send(MsgKind::Head, head("POST", "/upload"), true, false)
        .await
        .map_err(|e| format!("head: {e}"))?;
    let mut left = bytes;
    let mut sum = 0u64;
    let chunk_sum = chunk.iter().map(|&b| u64::from(b)).sum::<u64>();
    while left > 0 {
        let n = left.min(chunk.len());
        sum = sum.wrapping_add(if n == chunk.len() {
            chunk_sum
        } else {
            chunk[..n].iter().map(|&b| u64::from(b)).sum()
        });
        left -= n;
        st.send(MsgKind::Bytes, chunk[..n].to_vec(), false, left == 0)
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    let (mut h, mut body) = (Vec::new(), Vec::new());
    loop {
        match st.recv().await {
            Some(StreamEvent::Data {
                msg: MsgKind::Head,
                data,
                ..
            }) => h.extend(data),
            Some(StreamEvent::Data { data, fin, .. }) => {
                body.extend(data);
                if fin {
                    break;
                }
            }
            other => return Err(format!("upload answer: {other:?}")),
        }
    }
    let status = ResponseHead::parse(&h).map_err(|e| format!("answer head: {e}"))?;
    let want = format!("{{\"bytes\":{bytes},\"sum\":{sum}}}");
    if status.status != 200 || body != want.as_bytes() {
        return Err(format!(
            "upload answer {}: {} (wanted {want})",
            status.status,
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

/// Device → gateway: `GET /bytes?n=bytes`, read to FIN.
async fn up(dev: &DeviceHandle, bytes: usize) -> Result<(), String> {
    let mut st = dev
        .open(StreamKind::Http, 0)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let target = format!("/bytes?n={bytes}");
    st.send(MsgKind::Head, head("GET", &target), true, true)
        .await
        .map_err(|e| format!("head: {e}"))?;
    let mut got = 0usize;
    // The pattern is `(i % 251) as u8`: check the first and last byte of
    // every chunk (a full check would cost more than the link).
    loop {
        match st.recv().await {
            Some(StreamEvent::Data {
                msg: MsgKind::Head, ..
            }) => {}
            Some(StreamEvent::Data { data, fin, .. }) => {
                if let (Some(&a), Some(&z)) = (data.first(), data.last())
                    && (a != (got % 251) as u8 || z != ((got + data.len() - 1) % 251) as u8)
                {
                    return Err(format!("byte {got}: pattern mismatch"));
                }
                got += data.len();
                if fin {
                    break;
                }
            }
            other => return Err(format!("download: {other:?}")),
        }
    }
    if got != bytes {
        return Err(format!("got {got} bytes, wanted {bytes}"));
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summary(name: &str, bytes: usize, rounds: &[Round]) -> String {
    let mb = bytes as f64 / 1e6;
    let stat = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        let m = median(&mut v);
        (m, v[0], v[v.len() - 1])
    };
    let gbit = stat(&|r| bytes as f64 * 8.0 / r.secs / 1e9);
    let gw = stat(&|r| r.gw_ns as f64 / 1e3 / mb);
    let gw_load = stat(&|r| r.gw_ns as f64 / 1e9 / r.secs * 100.0);
    let dev = stat(&|r| r.dev_ns as f64 / 1e3 / mb);
    let dev_load = stat(&|r| r.dev_ns as f64 / 1e9 / r.secs * 100.0);
    format!(
        "| {name} | {:.2} ({:.2} – {:.2}) | {:.0} ({:.0} – {:.0}) | {:.0} % ({:.0} – {:.0}) | {:.0} ({:.0} – {:.0}) | {:.0} % ({:.0} – {:.0}) |",
        gbit.0,
        gbit.1,
        gbit.2,
        gw.0,
        gw.1,
        gw.2,
        gw_load.0,
        gw_load.1,
        gw_load.2,
        dev.0,
        dev.1,
        dev.2,
        dev_load.0,
        dev_load.1,
        dev_load.2,
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = bench(&args) {
        eprintln!("link-bench: {e}");
        std::process::exit(1);
    }
}

fn bench(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = args.pin && cores >= 2;
    let gw_rt = runtime(GW_THREAD, pinned.then_some(0));
    let dev_rt = runtime(DEV_THREAD, pinned.then_some(1));
    let bytes = args.mib << 20;
    let chunk: Vec<u8> = (0..(args.chunk.max(1) << 10))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();

    let device_key = SecretKey::from_bytes([0x51; 32]);
    let gateway_key = SecretKey::from_bytes([0x52; 32]);
    let registry = Registry::new([(
        device_key.public_key(),
        DeviceInfo {
            id: DEVICE_ID.into(),
        },
    )]);
    let hub = Hub::new(gateway_key.clone(), registry, LinkSettings::default());
    let listener = gw_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    gw_rt.spawn(serve(listener, hub.clone()));

    let identity = Identity {
        key: device_key,
        gateway: gateway_key.public_key(),
    };
    let cipher = args.cipher;
    dev_rt.spawn(async move {
        let mut app = EchoApp::new(EchoOptions {
            device_id: DEVICE_ID.into(),
            firmware: "link-bench".into(),
            subprotocols: Vec::new(),
            raw_service: false,
        });
        let mut platform = TokioPlatform::new(addr);
        let mut mem: Box<LinkMemory<RECORD, 4>> = Box::new(LinkMemory::new());
        run(
            &mut platform,
            &mut app,
            &identity,
            &device_config(cipher),
            &mut mem,
        )
        .await;
    });

    let dev = gw_rt.block_on(online(&hub))?;
    let used = if hub
        .stats
        .sessions_aes_256_gcm
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        proto::Cipher::Aes256Gcm
    } else {
        proto::Cipher::ChaCha20Poly1305
    };
    println!(
        "link-bench: {} MiB per round, {} rounds, {} KiB sends, {} records, {}; load average {}",
        args.mib,
        args.rounds,
        args.chunk,
        used.name(),
        if pinned {
            "gateway on core 0, device on core 1"
        } else {
            "unpinned"
        },
        loadavg()
    );
    let directions: Vec<&'static str> = match args.only.as_deref() {
        None => vec!["down", "up"],
        Some("down") => vec!["down"],
        Some("up") => vec!["up"],
        Some(other) => return Err(format!("--only {other}: down or up")),
    };
    // The transfers run as tasks of the gateway runtime, where the bridge
    // runs (not in `block_on` on the main thread).
    let chunk = Arc::new(chunk);
    let spawn = |dir: &'static str, bytes: usize| {
        let (dev, chunk) = (dev.clone(), chunk.clone());
        let limit = Duration::from_secs(args.timeout);
        let task = gw_rt.spawn(async move {
            tokio::time::timeout(limit, transfer(dir, &dev, bytes, &chunk))
                .await
                .map_err(|_| format!("{dir}: no end within {limit:?}"))?
        });
        gw_rt.block_on(task).map_err(|e| format!("{dir}: {e}"))?
    };
    // One short transfer each way first: connection warm-up, page faults.
    for &dir in &directions {
        spawn(dir, (bytes / 16).max(1 << 20))?;
    }
    let mut lines = Vec::new();
    for &dir in &directions {
        let mut rounds = Vec::new();
        for i in 0..args.rounds {
            let (gw0, dev0) = (thread_cpu_ns(GW_THREAD), thread_cpu_ns(DEV_THREAD));
            let t = Instant::now();
            spawn(dir, bytes)?;
            let secs = t.elapsed().as_secs_f64();
            let r = Round {
                secs,
                gw_ns: thread_cpu_ns(GW_THREAD) - gw0,
                dev_ns: thread_cpu_ns(DEV_THREAD) - dev0,
            };
            println!(
                "{dir} round {}: {:.3} s, {:.2} Gbit/s, gateway CPU {:.0} µs/MB, device CPU {:.0} µs/MB (load {})",
                i + 1,
                secs,
                bytes as f64 * 8.0 / secs / 1e9,
                r.gw_ns as f64 / 1e3 / (bytes as f64 / 1e6),
                r.dev_ns as f64 / 1e3 / (bytes as f64 / 1e6),
                loadavg()
            );
            rounds.push(r);
        }
        let name = if dir == "down" {
            "gateway → device"
        } else {
            "device → gateway"
        };
        lines.push(summary(name, bytes, &rounds));
    }
    println!();
    println!(
        "median (min – max) of {} rounds, {} MiB each; MB = 10^6 bytes; load average {}",
        args.rounds,
        args.mib,
        loadavg()
    );
    println!(
        "| direction | Gbit/s | gateway CPU µs/MB | gateway CPU | device CPU µs/MB | device CPU |"
    );
    println!("|---|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
    drop(dev);
    hub.shutdown();
    gw_rt.shutdown_timeout(Duration::from_secs(1));
    dev_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn transfer(dir: &str, dev: &DeviceHandle, bytes: usize, chunk: &[u8]) -> Result<(), String> {
    if dir == "down" {
        down(dev, bytes, chunk).await
    } else {
        up(dev, bytes).await
    }
}

async fn online(hub: &Arc<Hub>) -> Result<DeviceHandle, String> {
    for _ in 0..400 {
        if let Some(d) = hub.device(DEVICE_ID) {
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the device did not come online within 10 s".into())
}
