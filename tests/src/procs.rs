//! Processes the benchmarks start and measure: CPU time and RSS from
//! `/proc`, children pinned to a core, stopped by their own id.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of a process so far, nanoseconds: the sum of its threads'
/// `schedstat` run times (nanosecond resolution), or, where that is not
/// available, user + system time from `/proc/<pid>/stat` (10 ms ticks,
/// threads that exited included).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let from_schedstat = || -> Option<u64> {
        let mut sum = 0u64;
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let p = t.ok()?.path().join("schedstat");
            let s = std::fs::read_to_string(p).ok()?;
            sum += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(sum)
    };
    from_schedstat().or_else(|| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(ticks * 10_000_000)
    })
}

/// User and system CPU time of a process so far, in clock ticks (100 a
/// second), from `/proc/<pid>/stat`: the split that [`cpu_ns`] does not
/// give (threads that exited included).
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// Time the machine's CPUs were runnable but the hypervisor ran something
/// else ("steal", the eighth figure of `/proc/stat`'s `cpu` line), summed
/// over the CPUs, in milliseconds (the file counts 100 ticks a second). A
/// VM stopped by its host for 20 ms stalls every connection in flight,
/// and that alone sets a p99 over a few seconds; this says when it
/// happened.
pub fn steal_ms() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    steal_ms_of(&s)
}

fn steal_ms_of(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks * 10)
}

/// A free TCP port on 127.0.0.1: bound and released, and never one this
/// process has handed out before.
///
/// Tests in one binary run in parallel, and the kernel may give a released
/// port to the next `bind(0)`: without the record, two tests could be
/// handed the same port, and one's server would answer the other's client
/// (a chromedriver that failed to bind still "listens", through the other
/// test's server). Programs outside this process binding port 0 at the same
/// moment remain a race; callers check who answers.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    not_handed_out(&mut handed_out, || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"))
    })
}

/// The first port from `bind` that is not in `handed_out`, recorded there.
fn not_handed_out(handed_out: &mut BTreeSet<u16>, mut bind: impl FnMut() -> u16) -> u16 {
    for _ in 0..64 {
        let port = bind();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free port this process has not handed out already (64 tries)")
}

/// A child process, terminated (SIGTERM, then SIGKILL after 5 s) by its id
/// when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Starts `program args` with stdout and stderr to `log` (or nowhere),
    /// pinned to `core` when given (`taskset`), with the open-files limit
    /// raised to the hard limit (`ulimit -n`).
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        core: Option<usize>,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut cmd = Command::new("sh");
        let pin = core.map(pin_prefix).unwrap_or_default();
        cmd.arg("-c")
            .arg(format!("ulimit -n $(ulimit -Hn); exec {pin}\"$@\""))
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match log {
            Some(p) => {
                let f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let g = f.try_clone().map_err(|e| e.to_string())?;
                cmd.stdout(f).stderr(g);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", program.display()))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    /// Its process id (the program itself: `sh` and `taskset` exec it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// `taskset -c CORE ` when this machine has that core and `taskset`
/// works; empty otherwise (the benchmark then runs unpinned).
pub fn pin_prefix(core: usize) -> String {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let works = core < cores
        && Command::new("taskset")
            .args(["-c", &core.to_string(), "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if works {
        format!("taskset -c {core} ")
    } else {
        String::new()
    }
}

/// A program built next to the running one (`target/<profile>/NAME`), or
/// next to its parent directory (test binaries run from `deps/`).
pub fn sibling(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// A workspace binary in the profile directory of the running test
/// (`target/<profile>/NAME`, from `target/<profile>/deps/<test>`), built
/// with the cargo that runs the test and `build` (`["-p", "gateway",
/// "--bin", "gateway"]`) when it is missing: `cargo test --workspace`
/// builds it, `cargo test -p e2e` alone may not.
pub fn workspace_binary(name: &str, build: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(name);
    if bin.is_file() {
        return bin;
    }
    let target = dir.parent().expect("target dir");
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(build).arg("--target-dir").arg(target);
    if profile == "release" {
        cmd.arg("--release");
    }
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(
        ok && bin.is_file(),
        "{} is missing and could not be built: cargo build {}",
        bin.display(),
        build.join(" ")
    );
    bin
}

/// Waits until `addr` accepts TCP connections, at most `limit`.
pub fn wait_listening(addr: std::net::SocketAddr, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The 1-minute load average, for the record.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A sample's value from a Prometheus endpoint at `addr` (`GET /metrics`).
pub fn metric(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Threads that keep `cores` from going idle while it lives: one per core,
/// pinned to it, spinning at `SCHED_IDLE`, the lowest policy, so any other
/// runnable thread on the core preempts it at once and the processes
/// measured keep all the CPU they want (their CPU time in `/proc` is their
/// own). What it removes is the idle core's halt: on this machine's VMs a
/// halted vCPU takes 0.5 to several milliseconds to run again when a packet
/// wakes it (a TCP ping-pong between the two cores with 10 ms pauses: p50
/// 583 µs, p99 7.8 ms; with the cores kept awake, 276 µs and 2.2 ms; 33 µs
/// and 64 µs without pauses), which would otherwise dominate latency at
/// partial load for every proxy alike.
pub struct KeepAwake {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAwake {
    /// Starts the spinners. A core the threads cannot be pinned to, or a
    /// policy that cannot be set, ends that thread (said on stderr): the
    /// measurement goes on with that core allowed to idle.
    pub fn new(cores: &[usize]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = cores
            .iter()
            .map(|&core| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    if let Err(e) = idle_on(core) {
                        eprintln!("keep-awake thread for core {core}: {e}; that core may idle");
                        return;
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for KeepAwake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pins the calling thread to `core` and gives it `SCHED_IDLE`.
fn idle_on(core: usize) -> Result<(), String> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(core).map_err(|e| format!("core {core}: {e}"))?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning: {e}"))?;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call; pid
    // 0 is the calling thread, the only one this changes.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(format!("SCHED_IDLE: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        let mut handed_out = BTreeSet::new();
        let mut kernel = [5, 5, 6, 5, 6, 7].into_iter();
        let mut bind = || kernel.next().unwrap();
        assert_eq!(not_handed_out(&mut handed_out, &mut bind), 5);
        assert_eq!(not_handed_out(&mut handed_out, &mut bind), 6);
        assert_eq!(not_handed_out(&mut handed_out, &mut bind), 7);
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), ports.len());
    }

    #[test]
    fn steal_is_read_from_the_cpu_line() {
        let stat = "cpu  8140714 861404 2003028 4122948 91562 0 300936 109905 0 0\n\
                    cpu0 4032552 418150 978137 2151491 23829 0 162071 53143 0 0\n";
        assert_eq!(steal_ms_of(stat), Some(1_099_050));
        assert_eq!(steal_ms_of("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(steal_ms_of("cpu  1 2 3\n"), None);
        assert!(
            steal_ms().is_some(),
            "this machine's /proc/stat has a steal figure"
        );
    }
}
