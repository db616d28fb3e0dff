//! Fleet benchmark: N simulated devices (`device-sim --count`).
//!
//! - `fleet-bench N`: one `device-sim` process against the in-process
//!   gateway-role acceptor; the time until all are online and the resident
//!   memory per device.
//! - `fleet-bench --gateway N [--processes P]`: the devices, split over P
//!   `device-sim` processes, against a real gateway process (`gateway run`,
//!   the binary next to this one); the gateway's RSS per idle device
//!   session, then a reconnect storm: the gateway stopped (SIGTERM, drain)
//!   and started again on the same link port, and the time until every
//!   device is back, read from `gateway_devices_online`.
//!
//! ```text
//! cargo build --release -p device-fw --features host --bin device-sim
//! cargo build --release -p gateway -p e2e
//! target/release/fleet-bench 10000
//! target/release/fleet-bench --gateway 15000 --processes 4
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use device_fw::host::fleet;
use e2e::acceptor::Acceptor;
use e2e::procs::{Proc, cpu_ns, free_port, loadavg, metric, rss_kib, sibling, wait_listening};
use e2e::setup::BenchDir;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let count: usize = args
        .iter()
        .rev()
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    if flag("--gateway") {
        let processes = value("--processes").unwrap_or(4).max(1);
        let settle = value("--settle").unwrap_or(10);
        if let Err(e) = against_gateway(count, processes, settle) {
            eprintln!("fleet-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
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

/// Waits until `gateway_devices_online` at `metrics` reaches `count` or
/// `limit` passes; the times at which 50 %, 90 % and 100 % were first seen.
fn wait_online(metrics: SocketAddr, count: usize, limit: Duration) -> [Option<Duration>; 3] {
    let start = Instant::now();
    let mut seen = [None; 3];
    while start.elapsed() < limit {
        let n = metric(metrics, "gateway_devices_online").unwrap_or(0.0) as usize;
        for (i, share) in [0.5, 0.9, 1.0].into_iter().enumerate() {
            if seen[i].is_none() && n as f64 >= share * count as f64 {
                seen[i] = Some(start.elapsed());
            }
        }
        if seen[2].is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn against_gateway(count: usize, processes: usize, settle: usize) -> Result<(), String> {
    let sim = sibling("device-sim").ok_or(
        "build device-sim first: cargo build --release -p device-fw --features host --bin device-sim",
    )?;
    let gateway =
        sibling("gateway").ok_or("build the gateway first: cargo build --release -p gateway")?;
    let mut dir = BenchDir::create("fleet-bench", 0)?;
    let per = count.div_ceil(processes);
    let mut groups = Vec::new();
    for p in 0..processes {
        let n = per.min(count - (p * per).min(count));
        if n == 0 {
            break;
        }
        let (seed, prefix) = (format!("fleet-{p}"), format!("f{p}"));
        dir.devices.extend(fleet(&seed, &prefix, n));
        groups.push((seed, prefix, n));
    }
    let ip = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let (https, link, metrics) = (ip(free_port()), ip(free_port()), ip(free_port()));
    let cfg = dir.write_gateway_config("gateway.toml", https, link, metrics, None)?;
    let start_gateway = |log: &str| {
        let g = Proc::start(
            "gateway",
            &gateway,
            &["run".into(), "--config".into(), cfg.display().to_string()],
            None,
            Some(&dir.path(log)),
            &[("RUST_LOG", "error")],
        )?;
        if wait_listening(metrics, Duration::from_secs(30)) {
            Ok(g)
        } else {
            Err(format!(
                "the gateway did not start; see {}",
                dir.path(log).display()
            ))
        }
    };
    let mut gw = start_gateway("gateway-1.log")?;
    std::thread::sleep(Duration::from_secs(1));
    let base = rss_kib(gw.pid()).unwrap_or(0);
    let started = Instant::now();
    let mut sims = Vec::new();
    for (seed, prefix, n) in &groups {
        sims.push(Proc::start(
            "device-sim",
            &sim,
            &[
                format!("--gateway={link}"),
                format!("--gateway-key={}", dir.gateway_public),
                format!("--seed={seed}"),
                format!("--id={prefix}"),
                format!("--count={n}"),
            ],
            None,
            None,
            &[],
        )?);
    }
    let up = wait_online(metrics, count, Duration::from_secs(180));
    println!(
        "devices            {count} in {} device-sim processes (load {})",
        groups.len(),
        loadavg()
    );
    println!(
        "online             50 % {}, 90 % {}, 100 % {} after the simulators started ({:.1} s ago)",
        secs(up[0]),
        secs(up[1]),
        secs(up[2]),
        started.elapsed().as_secs_f64()
    );
    // The settle window: the fleet idle, only keepalives on its links.
    let (cpu0, t0) = (cpu_ns(gw.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(settle as u64));
    let idle_cpu = cpu_ns(gw.pid()).zip(cpu0).map_or(-1.0, |(b, a)| {
        b.saturating_sub(a) as f64 / 1e6 / t0.elapsed().as_secs_f64()
    });
    let rss = rss_kib(gw.pid()).unwrap_or(0);
    let online = metric(metrics, "gateway_devices_online").unwrap_or(0.0);
    let per_session = rss.saturating_sub(base) as f64 * 1024.0 / count.max(1) as f64;
    println!(
        "gateway RSS        {base} KiB before, {rss} KiB with {online} sessions: {per_session:.0} bytes per idle device session"
    );
    println!(
        "                   (100,000 sessions at this rate: {:.0} MiB)",
        per_session * 100_000.0 / 1_048_576.0
    );
    println!(
        "gateway CPU idle   {idle_cpu:.2} ms per second over {settle} s with {online} sessions ({:.2} µs per session per second; keepalives every 15 s)",
        idle_cpu * 1000.0 / online.max(1.0)
    );

    // The reconnect storm.
    gw.stop(Duration::from_secs(20));
    let down = Instant::now();
    let gw2 = start_gateway("gateway-2.log")?;
    let restarted = down.elapsed();
    let back = wait_online(metrics, count, Duration::from_secs(120));
    let final_online = metric(metrics, "gateway_devices_online").unwrap_or(0.0);
    println!(
        "restart            gateway down for {:.2} s; back online: 50 % {}, 90 % {}, 100 % {} after it listened; {final_online} of {count} online at the end",
        restarted.as_secs_f64(),
        secs(back[0]),
        secs(back[1]),
        secs(back[2]),
    );
    println!(
        "RESULT test=fleet devices={count} processes={} bytes_per_session={per_session:.0} idle_cpu_ms_per_s={idle_cpu:.3} online_s={:.2} back_50_s={:.2} back_90_s={:.2} back_100_s={:.2} back_all={}",
        groups.len(),
        up[2].map_or(-1.0, |d| d.as_secs_f64()),
        back[0].map_or(-1.0, |d| d.as_secs_f64()),
        back[1].map_or(-1.0, |d| d.as_secs_f64()),
        back[2].map_or(-1.0, |d| d.as_secs_f64()),
        back[2].is_some()
    );
    drop(sims);
    drop(gw2);
    Ok(())
}
