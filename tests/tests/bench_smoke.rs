//! The benchmark harnesses run: `bench-proxies` for a few seconds against the
//! gateway alone (link mode, link mode with every connection on one device,
//! and direct mode where this build serves it),
//! every workload once, and its report has numbers for each (and again
//! with the WebSockets over HTTP/2); against nginx and HAProxy for one
//! echo each (installed by `.ci/run` through `scripts/bench-install-peers`;
//! outside CI the test skips loudly without them); `wss-bench` for a
//! second of echo and 300 idle WebSockets; `link-bench`
//! with 2 MiB each way through the device link; `kx-bench` for a few
//! exchanges of each X25519 implementation; `record-bench` for a MiB of
//! records through each AES-GCM implementation. No figure is checked
//! against a speed: the benchmarks' numbers go to BENCHMARKS.md.
//!
//! The gateway binary is `target/<profile>/gateway`: `cargo test
//! --workspace` builds it; under `cargo test -p e2e` alone this test builds
//! it with the cargo that runs the test.

use std::path::PathBuf;
use std::process::Command;

/// Runs `bench-proxies` with `args` against this build's gateway; its
/// report and its standard error (the RESULT lines among it).
fn bench_proxies(name: &str, args: &[&str]) -> (String, String) {
    let gateway = e2e::procs::workspace_binary("gateway", &["-p", "gateway", "--bin", "gateway"]);
    let dir = gateway.parent().expect("target/<profile>").to_path_buf();
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_bench-proxies"));
    let out = std::env::temp_dir().join(format!("{name}-{}.md", std::process::id()));
    let (_, stderr) = run_ok(
        Command::new(&bench)
            .args(args)
            .arg("--bin-dir")
            .arg(&dir)
            .arg("--out")
            .arg(&out),
    );
    let report = std::fs::read_to_string(&out).expect("report");
    let _ = std::fs::remove_file(&out);
    (report, stderr)
}

#[test]
fn the_benchmark_harness_measures_the_gateway() {
    // Not made here: bench-proxies makes it.
    let traces = std::env::temp_dir().join(format!("bench-smoke-traces-{}", std::process::id()));
    let trace_dir = format!("--trace-dir={}", traces.display());
    let (report, stderr) = bench_proxies(
        "bench-smoke",
        &[
            "--only=gw-link,gw-link-1,gw-direct",
            "--rounds=1",
            "--idle-rounds=1",
            "--idle=200",
            "--echo-seconds=1",
            "--short-seconds=0.5",
            "--devices=10",
            &trace_dir,
        ],
    );
    // Every workload produced a figure for the gateway in link mode.
    for row in [
        "WSS echo 64 B ×100, msg/s",
        "echo at half nginx peak, p99 µs",
        "echo at half nginx peak, stall windows (20 ms, half the connections ≥ 2 ms)",
        "RSS per idle WSS, bytes",
        "TLS 1.3 full handshakes/s",
        "TLS 1.3 resumed handshakes/s",
        "bulk 64 KiB msgs, 1 conn, MB/s",
        "bulk 1 MiB msgs, 1 conn, MB/s",
    ] {
        assert_figure(&report, row, 3, &stderr);
    }
    // gw-link-1 (all connections on one device) has the echo figures
    // only (the report's columns: gw-link, gw-link-1, gw-direct).
    for row in [
        "WSS echo 64 B ×100, msg/s",
        "WSS echo 64 B ×100, proxy CPU µs/msg",
        "echo at half nginx peak, p99 µs",
    ] {
        assert_figure(&report, row, 4, &stderr);
    }
    for row in [
        "TLS 1.3 full handshakes/s",
        "bulk 64 KiB msgs, 1 conn, MB/s",
    ] {
        assert_no_figure(&report, row, 4, &stderr);
    }
    assert!(
        report.contains("p99 gw-link"),
        "no latency chart:\n{report}"
    );
    // The report names the device link's record cipher: the echo devices
    // offer AES-256-GCM where this machine has AES instructions.
    let aes = proto::Ciphers::hardware().contains(proto::Ciphers::AES_256_GCM);
    let ciphers = if aes {
        "10 sessions AES-256-GCM, 0 ChaCha20-Poly1305"
    } else {
        "0 sessions AES-256-GCM, 10 ChaCha20-Poly1305"
    };
    assert!(
        report.contains(&format!(
            "Device link records (echo devices' --cipher auto): {ciphers}."
        )),
        "no or another cipher note:\n{report}"
    );
    // Each half-load round left its trace: as many lines as the round
    // measured messages, each a connection, a send time and a latency, in
    // send order.
    for target in ["gw-link", "gw-link-1", "gw-direct"] {
        let trace = std::fs::read_to_string(traces.join(format!("{target}-1.txt")))
            .unwrap_or_else(|e| panic!("{target}'s trace: {e}\n{stderr}"));
        let rows: Vec<Vec<u64>> = trace
            .lines()
            .map(|l| l.split(' ').map(|v| v.parse().expect("a number")).collect())
            .collect();
        let msgs = stderr
            .lines()
            .filter(|l| l.contains("echo_half") && l.contains(&format!("label={target} ")))
            .find_map(|l| l.split(' ').find_map(|kv| kv.strip_prefix("msgs=")))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no half-load result for {target}:\n{stderr}"));
        assert_eq!(
            rows.len(),
            msgs,
            "{target}: trace lines against measured messages"
        );
        assert!(rows.iter().all(|r| r.len() == 3 && r[0] < 100));
        assert!(
            rows.windows(2).all(|w| w[0][1] <= w[1][1]),
            "{target}: not in send order"
        );
    }
    let _ = std::fs::remove_dir_all(&traces);
    // The half-load echo ran with both cores kept from idling.
    assert!(
        report.contains("both cores kept from idling") && !stderr.contains("keep-awake thread"),
        "cores not kept awake for the half-load echo:\n{report}\n{stderr}"
    );
}

/// With `--h2` the WebSockets open as HTTP/2 streams (RFC 8441 extended
/// CONNECT, as browsers open them over a connection they hold): the echo,
/// idle and bulk workloads measure the gateway that way, and say so.
#[test]
fn the_benchmark_harness_opens_websockets_over_http2() {
    let (report, stderr) = bench_proxies(
        "bench-smoke-h2",
        &[
            "--only=gw-link",
            "--work=echo,idle,bulk",
            "--rounds=1",
            "--idle=100",
            "--echo-seconds=1",
            "--short-seconds=0.5",
            "--devices=10",
            "--h2",
        ],
    );
    for row in [
        "WSS echo 64 B ×100, msg/s",
        "RSS per idle WSS, bytes",
        "bulk 64 KiB msgs, 1 conn, MB/s",
    ] {
        assert_figure(&report, row, 3, &stderr);
    }
    let results: Vec<&str> = stderr.lines().filter(|l| l.contains(" RESULT ")).collect();
    assert!(results.len() >= 4, "too few results:\n{stderr}");
    for r in results {
        assert!(r.contains(" http=2 "), "not over HTTP/2: {r}");
    }
}

/// The peers' setups work: nginx and HAProxy each proxy the echo, and
/// with `--h2` HAProxy takes the WebSockets as HTTP/2 streams (it offers
/// h2 then) while nginx, which takes no extended CONNECT, gets HTTP/1.1
/// upgrades, as a browser's would be.
#[test]
fn the_benchmark_harness_measures_nginx_and_haproxy() {
    let missing: Vec<&str> = ["nginx", "haproxy"]
        .into_iter()
        .filter(|p| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        e2e::netns::skip_or_fail(
            "the_benchmark_harness_measures_nginx_and_haproxy",
            &format!(
                "{} missing (scripts/bench-install-peers installs them)",
                missing.join(", ")
            ),
        );
        return;
    }
    let (report, stderr) = bench_proxies(
        "bench-smoke-peers",
        &[
            "--only=nginx,haproxy",
            "--work=echo",
            "--rounds=1",
            "--echo-seconds=1",
            "--h2",
        ],
    );
    for column in [3, 4] {
        assert_figure(&report, "WSS echo 64 B ×100, msg/s", column, &stderr);
    }
    let result = |label: &str| {
        stderr
            .lines()
            .find(|l| l.contains(" RESULT ") && l.contains(&format!(" label={label} ")))
            .unwrap_or_else(|| panic!("no RESULT for {label}:\n{stderr}"))
            .to_string()
    };
    assert!(result("haproxy").contains(" http=2 "), "{stderr}");
    assert!(result("nginx").contains(" http=1 "), "{stderr}");
}

/// `wss-bench` (the gateway alone: echo, then idle WebSockets) starts its
/// gateway and devices, echoes, and holds more idle WebSockets from one
/// address than the default per-address cap (256) would admit: its
/// configuration raises the caps.
#[test]
fn the_wss_benchmark_echoes_and_holds_idle_websockets() {
    let gateway = e2e::procs::workspace_binary("gateway", &["-p", "gateway", "--bin", "gateway"]);
    let (stdout, stderr) = run_ok(
        Command::new(env!("CARGO_BIN_EXE_wss-bench"))
            .args([
                "--devices=4",
                "--connections=4",
                "--seconds=1",
                "--idle=300",
            ])
            .arg("--gateway")
            .arg(&gateway),
    );
    assert!(
        stdout.contains(" msg/s"),
        "no echo figure:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("idle: 300 WebSockets opened"),
        "not all idle WebSockets opened:\n{stdout}\n{stderr}"
    );
}

/// `link-bench` moves a few MiB each way through the device link in-process
/// and prints a figure for both directions.
/// Under either record cipher (`--cipher`), and it says which it used; a
/// cipher it does not know is refused.
#[test]
fn the_link_benchmark_measures_both_directions() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_link-bench"));
    let aes = proto::Ciphers::hardware().contains(proto::Ciphers::AES_256_GCM);
    for (arg, used) in [
        (
            "auto",
            if aes {
                "aes-256-gcm"
            } else {
                "chacha20-poly1305"
            },
        ),
        ("chacha20-poly1305", "chacha20-poly1305"),
    ] {
        let (stdout, stderr) = run_ok(
            Command::new(&bench)
                .args(["--mib=2", "--rounds=1", "--timeout=60"])
                .arg(format!("--cipher={arg}")),
        );
        assert!(
            stdout.contains(&format!("KiB sends, {used} records,")),
            "--cipher {arg}:\n{stdout}"
        );
        for row in ["gateway → device", "device → gateway"] {
            assert_figure(&stdout, row, 2, &stderr);
        }
    }
    let stderr =
        refused(Command::new(&bench).args(["--mib=2", "--rounds=1", "--cipher=aes-128-ocb"]));
    assert!(
        stderr.contains("expected auto or chacha20-poly1305"),
        "{stderr}"
    );
}

/// `kx-bench` times both X25519 implementations and prints their median;
/// zero rounds or exchanges are refused.
#[test]
fn the_key_exchange_benchmark_times_both_implementations() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_kx-bench"));
    let (stdout, _) = run_ok(Command::new(&bench).args(["--rounds=1", "--count=50"]));
    let median = stdout
        .lines()
        .find(|l| l.starts_with("median of 1: ring "))
        .unwrap_or_else(|| panic!("no median line:\n{stdout}"));
    assert!(
        median.contains(" µs, AWS-LC ") && median.ends_with("×)"),
        "{median}"
    );
    for bad in ["--rounds=0", "--count=0"] {
        let stderr = refused(Command::new(&bench).arg(bad));
        assert!(
            stderr.contains(bad.split('=').next().unwrap_or(bad)),
            "{bad}: {stderr}"
        );
    }
}

/// `record-bench` seals and opens records of both sizes through both
/// implementations and prints a median per size; zero rounds, zero MiB or
/// more than 4 GiB are refused.
#[test]
fn the_record_benchmark_times_both_implementations() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_record-bench"));
    let (stdout, _) = run_ok(Command::new(&bench).args(["--rounds=1", "--mib=1"]));
    for size in ["16384 B", "64 B"] {
        let median = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{size}, median of 1: seal + open ring ")))
            .unwrap_or_else(|| panic!("no median line for {size}:\n{stdout}"));
        assert!(
            median.contains(" ns, AWS-LC ") && median.ends_with("×)"),
            "{median}"
        );
    }
    for bad in ["--rounds=0", "--mib=0", "--mib=4097"] {
        let stderr = refused(Command::new(&bench).arg(bad));
        assert!(
            stderr.contains(bad.split('=').next().unwrap_or(bad)),
            "{bad}: {stderr}"
        );
    }
}

/// Runs `cmd` to its end: its standard output and error. Fails the test,
/// with both, when it does not exit successfully.
fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Runs `cmd`, which must refuse its arguments: its standard error.
fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} was accepted:\n{stderr}");
    stderr
}

/// The Markdown table row `row` of `report` has a number in `column`
/// (1 is the row's name).
fn assert_figure(report: &str, row: &str, column: usize, stderr: &str) {
    let (line, cell) = cell(report, row, column, stderr);
    assert!(
        cell.starts_with(|c: char| c.is_ascii_digit()),
        "no figure in column {column} of {line:?}:\n{stderr}"
    );
}

/// The row `row` of `report` has no figure ("—") in `column`.
fn assert_no_figure(report: &str, row: &str, column: usize, stderr: &str) {
    let (line, cell) = cell(report, row, column, stderr);
    assert_eq!(
        cell, "—",
        "a figure in column {column} of {line:?}:\n{stderr}"
    );
}

/// The row `row` of the Markdown table in `report`, and its cell `column`.
fn cell<'a>(report: &'a str, row: &str, column: usize, stderr: &str) -> (&'a str, &'a str) {
    let line = report
        .lines()
        .find(|l| l.starts_with(&format!("| {row} |")))
        .unwrap_or_else(|| panic!("no row {row:?} in the report:\n{report}\n{stderr}"));
    (line, line.split('|').nth(column).unwrap_or("").trim())
}
