//! Fleet benchmark: N simulated devices in one `device-sim` process against
//! the in-process gateway-role acceptor. Prints the time until all are
//! online and the resident memory per device.
//!
//! ```text
//! cargo build --release -p device-fw --features host --bin device-sim
//! cargo run --release -p e2e --bin fleet-bench -- 10000
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

use device_fw::host::fleet;
use e2e::acceptor::Acceptor;

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let exe = std::env::current_exe().expect("exe");
    let sim = exe.parent().expect("dir").join("device-sim");
    assert!(
        sim.exists(),
        "build device-sim first: cargo build --release -p device-fw --features host --bin device-sim"
    );
    let devices = fleet("bench", "sim", count);
    let keys: HashSet<_> = devices.iter().map(|d| d.key.public_key()).collect();
    let acceptor = Acceptor::start([0x42; 32], keys).await;
    let base = rss_kib(std::process::id()).unwrap_or(0);

    let idle = std::process::Command::new(&sim)
        .args([
            "--gateway",
            "127.0.0.1:1",
            "--gateway-key",
            &"00".repeat(32),
            "--seed",
            "x",
            "--registry-only",
            "--write-registry",
            "/dev/null",
        ])
        .status();
    assert!(idle.is_ok_and(|s| s.success()), "device-sim runs");

    let start = Instant::now();
    let mut child = tokio::process::Command::new(&sim)
        .args([
            "--gateway",
            &acceptor.addr.to_string(),
            "--gateway-key",
            &acceptor.public.to_string(),
        ])
        .args([
            "--seed",
            "bench",
            "--id",
            "sim",
            "--count",
            &count.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn device-sim");
    let pid = child.id().expect("pid");
    let up = acceptor.wait_online(count, Duration::from_secs(120)).await;
    let took = start.elapsed();
    // Let the fleet settle (handshakes done, buffers touched by keepalives).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let sim_rss = rss_kib(pid).unwrap_or(0);
    let acc_rss = rss_kib(std::process::id())
        .unwrap_or(0)
        .saturating_sub(base);
    println!("devices            {count}");
    println!(
        "all online         {up} ({} online) in {:.2} s",
        acceptor.online(),
        took.as_secs_f64()
    );
    println!(
        "device-sim RSS     {sim_rss} KiB total, {:.1} KiB per device",
        sim_rss as f64 / count as f64
    );
    println!(
        "acceptor RSS       {acc_rss} KiB above its baseline, {:.1} KiB per session",
        acc_rss as f64 / count as f64
    );
    let _ = child.kill().await;
}
