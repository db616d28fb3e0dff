//! `bench-proxies`: the gateway side by side with nginx and HAProxy, one run,
//! alternating A/B rounds. Run through `scripts/bench-proxies`, which
//! installs the peers and builds the binaries first.
//!
//! Targets, each a TLS 1.3 (ECDSA P-256, resumption on, one worker, logs off)
//! WebSocket proxy on 127.0.0.1, pinned to `--proxy-core`:
//!
//! - `gw-direct`: the gateway, device `direct` with a direct upstream to
//!   `ws-echo` (skipped, and said so, when this build does not serve
//!   direct upstreams);
//! - `gw-link`: the gateway, 100 `EchoApp` devices (`echo-devices`) over the link,
//!   each connection on its own device;
//! - `gw-link-1`: the same gateway and devices, all 100 connections on the
//!   first device (many browsers on one controller: their messages share
//!   the device leg's records and writes); echo workloads only;
//! - `nginx` and `haproxy` in front of the same `ws-echo`.
//!
//! The load generator (`loadgen`), `ws-echo` and `echo-devices` run on
//! `--load-core`. Every workload runs once per target per round, the
//! targets' order rotating each round; the table gives each figure's median
//! over the rounds and its spread (min – max), and ratios against nginx and
//! HAProxy. During the half-load echo both cores are kept from halting
//! (`procs::KeepAwake`; `--let-idle` turns it off): an idle vCPU here takes
//! milliseconds to wake, which would set every proxy's tail latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use e2e::load::Report;
use e2e::procs::{KeepAwake, Proc, free_port, loadavg, pin_prefix, sibling, wait_listening};
use e2e::setup::{BenchDir, DIRECT_DEVICE, DOMAIN};

#[derive(Parser, Debug)]
#[command(
    about = "The gateway against nginx and HAProxy: echo, latency, idle memory, handshakes, bulk"
)]
struct Args {
    /// Rounds of the echo, handshake and bulk workloads.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rounds of the idle-memory workload. Only the first sees fresh
    /// processes; later rounds reuse memory the first freed.
    #[arg(long, default_value_t = 1)]
    idle_rounds: usize,
    /// Idle connections per idle round (0: skip).
    #[arg(long, default_value_t = 9_500)]
    idle: usize,
    /// Seconds per echo measurement.
    #[arg(long, default_value_t = 5.0)]
    echo_seconds: f64,
    /// Seconds per handshake and bulk measurement.
    #[arg(long, default_value_t = 3.0)]
    short_seconds: f64,
    /// Echo devices behind the gateway's link.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Record ciphers the echo devices offer: `auto` (AES-256-GCM where this
    /// machine has AES instructions, as a host device would offer) or
    /// `chacha20-poly1305` (a microcontroller's offer).
    #[arg(long, default_value = "auto", value_parser = ["auto", "chacha20-poly1305"])]
    link_cipher: String,
    /// Core for the proxy under test.
    #[arg(long, default_value_t = 0)]
    proxy_core: usize,
    /// Core for the load generator and the upstreams.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// Message rate of the paced echo (default: half of nginx's median
    /// peak, or of the first target's without nginx). A fixed rate
    /// compares runs that do not measure nginx.
    #[arg(long)]
    rate: Option<f64>,
    /// Let the cores idle during the half-load echo (by default a
    /// spinning thread at SCHED_IDLE on each core keeps them awake there:
    /// an idle vCPU here takes milliseconds to wake).
    #[arg(long)]
    let_idle: bool,
    /// WebSockets over HTTP/2 (RFC 8441) for the echo, idle and bulk
    /// workloads (`loadgen --h2`), as a browser opens them where the
    /// server offers it: the gateway and HAProxy (which then offers h2 in
    /// ALPN) take them as HTTP/2 streams; nginx takes no extended CONNECT,
    /// so its WebSockets stay HTTP/1.1 upgrades, as a browser's would.
    #[arg(long)]
    h2: bool,
    /// Write each half-load round's per-message trace here
    /// (`<target>-<round>.txt`: connection, send µs, latency µs per line).
    #[arg(long)]
    trace_dir: Option<PathBuf>,
    /// Targets to run (gw-direct, gw-link, gw-link-1, nginx, haproxy); default: all found.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Workloads to run (echo, rate, handshake, bulk, idle); default: all.
    #[arg(long, value_delimiter = ',')]
    work: Vec<String>,
    /// Also write the markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory with loadgen, ws-echo, echo-devices and gateway. Default:
    /// next to this program.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A running target.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
    /// `--host` for loadgen (empty: the echo devices' names).
    host: Option<String>,
    /// Measured in the echo workloads only (the others would repeat
    /// another target's figures).
    echo_only: bool,
    /// Its WebSockets are opened as HTTP/2 streams (`loadgen --h2`).
    h2: bool,
    _procs: Vec<Proc>,
}

struct Bench {
    args: Args,
    bin: PathBuf,
    dir: BenchDir,
    /// (target, workload key) → one report per round.
    results: BTreeMap<(String, String), Vec<Report>>,
    notes: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-proxies: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    // Before any target starts: a trace directory that cannot be made
    // would otherwise fail each half-load round after it ran.
    if let Some(dir) = &args.trace_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("--trace-dir {}: {e}", dir.display()))?;
    }
    let bin = match &args.bin_dir {
        Some(d) => d.clone(),
        None => sibling("loadgen")
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or("loadgen not found next to this program; build -p e2e --bins")?,
    };
    let dir = BenchDir::create("bench-proxies", args.devices)?;
    let mut b = Bench {
        args,
        bin,
        dir,
        results: BTreeMap::new(),
        notes: Vec::new(),
    };
    let want = |n: &str| b.args.only.is_empty() || b.args.only.iter().any(|o| o == n);
    let up_port = free_port();
    let upstream = SocketAddr::from(([127, 0, 0, 1], up_port));
    let mut shared = vec![b.start(
        "ws-echo",
        &b.bin.join("ws-echo"),
        &[format!("--listen={upstream}")],
        b.args.load_core,
    )?];
    if !wait_listening(upstream, Duration::from_secs(10)) {
        return Err("ws-echo did not start".into());
    }
    let mut targets = Vec::new();
    if want("gw-direct") || want("gw-link") || want("gw-link-1") {
        let (gw, devices, cipher_note) = b.start_gateway(upstream)?;
        b.notes.push(cipher_note);
        let gw_addr = gw.1;
        let pid = gw.0.pid();
        let direct_ok = want("gw-direct") && b.direct_works(gw_addr);
        shared.push(devices);
        // One gateway process serves both modes; they are measured apart.
        let mut procs = vec![gw.0];
        if want("gw-link") {
            targets.push(Target {
                name: "gw-link",
                addr: gw_addr,
                pid,
                host: None,
                echo_only: false,
                h2: b.args.h2,
                _procs: std::mem::take(&mut procs),
            });
        }
        if want("gw-link-1") {
            match b.dir.device_hosts().into_iter().next() {
                Some(first) => targets.push(Target {
                    name: "gw-link-1",
                    addr: gw_addr,
                    pid,
                    host: Some(first),
                    echo_only: true,
                    h2: b.args.h2,
                    _procs: std::mem::take(&mut procs),
                }),
                None => b
                    .notes
                    .push("gw-link-1: not measured, --devices is 0 (no device to share)".into()),
            }
        }
        if direct_ok {
            targets.push(Target {
                name: "gw-direct",
                addr: gw_addr,
                pid,
                host: Some(format!("{DIRECT_DEVICE}.{DOMAIN}")),
                echo_only: false,
                h2: b.args.h2,
                _procs: procs,
            });
        } else if want("gw-direct") {
            b.notes.push(
                "gw-direct: not measured, the probe echo through the direct device failed \
                 (see the gateway's log in the work directory); the gateway is measured in \
                 link mode only."
                    .into(),
            );
        }
    }
    if want("nginx") {
        match b.start_nginx(upstream) {
            Ok(t) => targets.push(t),
            Err(e) => b.notes.push(format!("nginx: not measured: {e}")),
        }
    }
    if want("haproxy") {
        match b.start_haproxy(upstream) {
            Ok(t) => targets.push(t),
            Err(e) => b.notes.push(format!("haproxy: not measured: {e}")),
        }
    }
    if targets.is_empty() {
        return Err(format!("no target could be started: {}", b.notes.join(" ")));
    }
    eprintln!(
        "targets: {}",
        targets
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if b.args.h2 {
        let over = |h2: bool| {
            targets
                .iter()
                .filter(|t| t.h2 == h2)
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        b.notes.push(format!(
            "WebSockets as HTTP/2 streams (RFC 8441): {}; as HTTP/1.1 upgrades: {} \
             (nginx takes no extended CONNECT; a browser reaches it that way too).",
            over(true),
            over(false)
        ));
    }
    b.rounds(&targets);
    let report = b.report(&targets);
    println!("{report}");
    if let Some(p) = &b.args.out {
        std::fs::write(p, &report).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    drop(targets);
    drop(shared);
    Ok(())
}

impl Bench {
    fn start(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        core: usize,
    ) -> Result<Proc, String> {
        let log = self.dir.path(&format!("{name}.log"));
        Proc::start(
            name,
            program,
            args,
            Some(core),
            Some(&log),
            &[("RUST_LOG", "error")],
        )
    }

    fn work(&self, w: &str) -> bool {
        self.args.work.is_empty() || self.args.work.iter().any(|x| x == w)
    }

    /// The gateway and its echo devices, all online; with a note naming
    /// the device link's record cipher.
    fn start_gateway(
        &self,
        upstream: SocketAddr,
    ) -> Result<((Proc, SocketAddr), Proc, String), String> {
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let link = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg =
            self.dir
                .write_gateway_config("gateway.toml", https, link, metrics, Some(upstream))?;
        let gw = self.start(
            "gateway",
            &self.bin.join("gateway"),
            &["run".into(), "--config".into(), cfg.display().to_string()],
            self.args.proxy_core,
        )?;
        if !wait_listening(https, Duration::from_secs(20)) {
            return Err(format!(
                "the gateway did not listen; see its log: {}",
                std::fs::read_to_string(self.dir.path("gateway.log")).unwrap_or_default()
            ));
        }
        let devices = self.start(
            "echo-devices",
            &self.bin.join("echo-devices"),
            &[
                format!("--link={link}"),
                format!("--gateway-key={}", self.dir.gateway_public),
                format!("--count={}", self.args.devices),
                format!("--cipher={}", self.args.link_cipher),
            ],
            self.args.load_core,
        )?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let online = e2e::procs::metric(metrics, "gateway_devices_online")
                .map(|v| v as usize)
                .unwrap_or(0);
            if online >= self.args.devices {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "only {online} of {} devices online",
                    self.args.devices
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let sessions = |cipher: proto::Cipher| {
            let name = format!(
                "gateway_link_connects_by_cipher_total{{cipher=\"{}\"}}",
                cipher.name()
            );
            e2e::procs::metric(metrics, &name).unwrap_or(0.0)
        };
        let (aes, chacha) = (
            sessions(proto::Cipher::Aes256Gcm),
            sessions(proto::Cipher::ChaCha20Poly1305),
        );
        let note = format!(
            "Device link records (echo devices' --cipher {}): {aes} sessions AES-256-GCM, \
             {chacha} ChaCha20-Poly1305.",
            self.args.link_cipher
        );
        Ok(((gw, https), devices, note))
    }

    /// One echo through the direct device: does this build serve it?
    fn direct_works(&self, addr: SocketAddr) -> bool {
        let out = self.loadgen(
            "probe",
            addr,
            &[],
            Some(&format!("{DIRECT_DEVICE}.{DOMAIN}")),
            self.args.h2,
            &["echo", "--connections=1", "--seconds=0.2", "--warmup=0"],
        );
        out.is_some()
    }

    fn start_nginx(&self, upstream: SocketAddr) -> Result<Target, String> {
        let nginx = which("nginx").ok_or("nginx is not installed (scripts/bench-install-peers)")?;
        let port = free_port();
        let d = &self.dir.dir;
        for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let _ = std::fs::create_dir_all(d.join(format!("nginx-{t}")));
        }
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\n\
             pid {d}/nginx.pid;\nerror_log {d}/nginx-error.log crit;\n\
             events {{ worker_connections 20000; }}\n\
             http {{\n  access_log off;\n\
             \x20 client_body_temp_path {d}/nginx-client_body;\n  proxy_temp_path {d}/nginx-proxy;\n\
             \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
             \x20 upstream echo {{ server {upstream}; }}\n\
             \x20 server {{\n    listen 127.0.0.1:{port} ssl;\n\
             \x20   ssl_certificate {d}/chain.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             \x20   ssl_protocols TLSv1.3;\n    ssl_session_cache shared:SSL:10m;\n    ssl_session_tickets on;\n\
             \x20   location / {{\n      proxy_pass http://echo;\n      proxy_http_version 1.1;\n\
             \x20     proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
             \x20     proxy_set_header Host $host;\n      proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n\
             \x20   }}\n  }}\n}}\n",
            d = d.display()
        );
        let path = self.dir.path("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let p = self.start(
            "nginx",
            &nginx,
            &[
                "-p".into(),
                d.display().to_string(),
                "-e".into(),
                self.dir.path("nginx-error.log").display().to_string(),
                "-c".into(),
                path.display().to_string(),
            ],
            self.args.proxy_core,
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_listening(addr, Duration::from_secs(10)) {
            return Err(format!(
                "did not listen: {}",
                std::fs::read_to_string(self.dir.path("nginx.log")).unwrap_or_default()
            ));
        }
        Ok(Target {
            name: "nginx",
            addr,
            pid: p.pid(),
            host: None,
            echo_only: false,
            // nginx takes no extended CONNECT (RFC 8441): a browser opens
            // its WebSockets to nginx with an HTTP/1.1 upgrade.
            h2: false,
            _procs: vec![p],
        })
    }

    fn start_haproxy(&self, upstream: SocketAddr) -> Result<Target, String> {
        let haproxy =
            which("haproxy").ok_or("haproxy is not installed (scripts/bench-install-peers)")?;
        let port = free_port();
        let conf = format!(
            "global\n  nbthread 1\n  maxconn 9900\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout tunnel 1h\n\n\
             frontend fe\n  bind 127.0.0.1:{port} ssl crt {crt} alpn {alpn}\n  default_backend be\n\n\
             backend be\n  server echo {upstream}\n",
            crt = self.dir.path("combined.pem").display(),
            // With --h2 HAProxy offers HTTP/2 and takes WebSockets as
            // extended CONNECT streams (RFC 8441), as a browser opens them.
            alpn = if self.args.h2 {
                "h2,http/1.1"
            } else {
                "http/1.1"
            },
        );
        let path = self.dir.path("haproxy.cfg");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let p = self.start(
            "haproxy",
            &haproxy,
            &["-db".into(), "-f".into(), path.display().to_string()],
            self.args.proxy_core,
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_listening(addr, Duration::from_secs(10)) {
            return Err(format!(
                "did not listen: {}",
                std::fs::read_to_string(self.dir.path("haproxy.log")).unwrap_or_default()
            ));
        }
        Ok(Target {
            name: "haproxy",
            addr,
            pid: p.pid(),
            host: None,
            echo_only: false,
            h2: self.args.h2,
            _procs: vec![p],
        })
    }

    /// Runs loadgen pinned to the load core; its RESULT line. `h2`: the
    /// WebSockets as HTTP/2 streams.
    fn loadgen(
        &self,
        label: &str,
        addr: SocketAddr,
        pids: &[u32],
        host: Option<&str>,
        h2: bool,
        work: &[&str],
    ) -> Option<Report> {
        let mut cmd = format!(
            "ulimit -n $(ulimit -Hn); exec timeout 300 {}{} --addr={addr} --ca={} --devices={} --label={label}",
            pin_prefix(self.args.load_core),
            self.bin.join("loadgen").display(),
            self.dir.path("ca.pem").display(),
            self.args.devices,
        );
        for p in pids {
            let _ = write!(cmd, " --pid={p}");
        }
        if h2 {
            cmd.push_str(" --h2");
        }
        if let Some(h) = host {
            let _ = write!(cmd, " --host={h}");
        }
        for w in work {
            let _ = write!(cmd, " {w}");
        }
        let out = Command::new("sh").args(["-c", &cmd]).output().ok()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let r = stdout.lines().find_map(Report::parse);
        if r.is_none() {
            eprintln!(
                "  {label}: failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        r
    }

    fn measure(&mut self, t: &Target, key: &str, work: &[&str]) {
        let r = self.loadgen(t.name, t.addr, &[t.pid], t.host.as_deref(), t.h2, work);
        if let Some(r) = r {
            eprintln!("  {key:>12} {}", r.line());
            self.results
                .entry((t.name.to_string(), key.to_string()))
                .or_default()
                .push(r);
        }
        // Let the target settle (closing sockets, TIME_WAIT reuse).
        std::thread::sleep(Duration::from_millis(300));
    }

    fn rounds(&mut self, targets: &[Target]) {
        let es = format!("--seconds={}", self.args.echo_seconds);
        let ss = format!("--seconds={}", self.args.short_seconds);
        let n = targets.len();
        // Idle memory first, on fresh processes: an allocator keeps what a
        // process freed, so RSS after earlier load is no clean baseline.
        if self.work("idle") && self.args.idle > 0 {
            let count = format!("--count={}", self.args.idle);
            // gw-link and gw-direct are one gateway process: the second
            // measured would reuse what the first freed, so only the first
            // of a process is measured.
            let mut idle: Vec<&Target> = Vec::new();
            for t in targets.iter().filter(|t| !t.echo_only) {
                if idle.iter().any(|o| o.pid == t.pid) {
                    self.notes.push(format!(
                        "{}: idle memory not measured, its process is another target's; \
                         measure it alone: --only {} --work idle",
                        t.name, t.name
                    ));
                } else {
                    idle.push(t);
                }
            }
            let k = idle.len();
            for round in 0..self.args.idle_rounds {
                eprintln!("idle round {} (load {})", round + 1, loadavg());
                for i in 0..k {
                    let t = idle[(i + round) % k];
                    self.measure(t, "idle", &["idle", &count, "--sources=4"]);
                }
            }
        }
        for round in 0..self.args.rounds {
            eprintln!(
                "round {} of {} (load {})",
                round + 1,
                self.args.rounds,
                loadavg()
            );
            let mut order: Vec<&Target> = (0..n).map(|i| &targets[(i + round) % n]).collect();
            if self.work("echo") {
                for t in &order {
                    self.measure(
                        t,
                        "echo64",
                        &["echo", "--connections=100", "--size=64", &es],
                    );
                }
            }
            order.retain(|t| !t.echo_only);
            if self.work("handshake") {
                for t in &order {
                    self.measure(t, "tls_full", &["handshake", &ss]);
                }
                for t in &order {
                    self.measure(t, "tls_resumed", &["handshake", "--resume", &ss]);
                }
            }
            if self.work("bulk") {
                for t in &order {
                    self.measure(t, "bulk64k", &["bulk", "--size=65536", &ss]);
                }
                for t in &order {
                    self.measure(t, "bulk1m", &["bulk", "--size=1048576", &ss]);
                }
            }
        }
        if self.work("rate") {
            // Half of nginx's peak (or of the first target's without nginx).
            let peak_of = |name: &str| self.median(name, "echo64", "msg_per_s");
            let (rate, why) = match self.args.rate {
                Some(r) => (r, "given by --rate"),
                None => match peak_of("nginx") {
                    Some(p) => (p / 2.0, "half of nginx's median peak"),
                    None => (
                        targets
                            .first()
                            .and_then(|t| peak_of(t.name))
                            .unwrap_or(2000.0)
                            / 2.0,
                        "half of the first target's median peak (nginx not measured)",
                    ),
                },
            };
            self.notes.push(format!(
                "echo at half load: {rate:.0} msg/s over 100 connections, {why}."
            ));
            let rate = format!("--rate={rate:.0}");
            // The cores kept from idling for these rounds only (see
            // `KeepAwake`): at partial load an idle vCPU's wake-up, not
            // the proxy, would set the latency.
            let _awake = (!self.args.let_idle)
                .then(|| KeepAwake::new(&[self.args.proxy_core, self.args.load_core]));
            if !self.args.let_idle {
                self.notes.push(
                    "echo at half load: both cores kept from idling (a spinning thread at SCHED_IDLE on each; --let-idle turns it off)."
                        .to_string(),
                );
            }
            for round in 0..self.args.rounds {
                eprintln!("rate round {} (load {})", round + 1, loadavg());
                for i in 0..n {
                    let t = &targets[(i + round) % n];
                    let trace = self.args.trace_dir.as_ref().map(|d| {
                        format!(
                            "--trace={}",
                            d.join(format!("{}-{}.txt", t.name, round + 1)).display()
                        )
                    });
                    let mut work = vec!["echo", "--connections=100", "--size=64", &rate, &es];
                    work.extend(trace.as_deref());
                    self.measure(t, "echo_half", &work);
                }
            }
        }
    }

    fn values(&self, target: &str, key: &str, metric: &str) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .results
            .get(&(target.to_string(), key.to_string()))
            .map(|rs| rs.iter().filter_map(|r| r.num(metric)).collect())
            .unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self, target: &str, key: &str, metric: &str) -> Option<f64> {
        let v = self.values(target, key, metric);
        (!v.is_empty()).then(|| v[v.len() / 2])
    }

    fn report(&self, targets: &[Target]) -> String {
        let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Rounds: {} (idle: {}); proxy on core {}, load on core {}; load average at the end {}.\n",
            self.args.rounds,
            self.args.idle_rounds,
            self.args.proxy_core,
            self.args.load_core,
            loadavg()
        );
        let _ = write!(s, "| workload | figure |");
        for n in &names {
            let _ = write!(s, " {n} |");
        }
        for n in names.iter().filter(|n| n.starts_with("gw-")) {
            let _ = write!(s, " {n} ÷ nginx | {n} ÷ haproxy |");
        }
        s.push('\n');
        let cols = names.len() + 2 * names.iter().filter(|n| n.starts_with("gw-")).count();
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(cols));
        let rows: &[(&str, &str, &str)] = &[
            ("echo64", "msg_per_s", "WSS echo 64 B ×100, msg/s"),
            (
                "echo64",
                "cpu_us_per_msg",
                "WSS echo 64 B ×100, proxy CPU µs/msg",
            ),
            (
                "echo64",
                "kernel_pct",
                "WSS echo 64 B ×100, proxy CPU in the kernel, %",
            ),
            ("echo64", "p50_us", "WSS echo 64 B ×100, p50 µs"),
            ("echo64", "p99_us", "WSS echo 64 B ×100, p99 µs"),
            ("echo_half", "p50_us", "echo at half nginx peak, p50 µs"),
            ("echo_half", "p99_us", "echo at half nginx peak, p99 µs"),
            ("echo_half", "max_us", "echo at half nginx peak, max µs"),
            (
                "echo_half",
                "cpu_us_per_msg",
                "echo at half nginx peak, proxy CPU µs/msg",
            ),
            (
                "echo_half",
                "stall_windows",
                "echo at half nginx peak, stall windows (20 ms, half the connections ≥ 2 ms)",
            ),
            (
                "echo_half",
                "steal_ms",
                "echo at half nginx peak, VM steal ms (both CPUs)",
            ),
            ("idle", "bytes_per_conn", "RSS per idle WSS, bytes"),
            ("tls_full", "per_s", "TLS 1.3 full handshakes/s"),
            (
                "tls_full",
                "cpu_us_per_handshake",
                "full handshake, proxy CPU µs",
            ),
            ("tls_resumed", "per_s", "TLS 1.3 resumed handshakes/s"),
            (
                "tls_resumed",
                "cpu_us_per_handshake",
                "resumed handshake, proxy CPU µs",
            ),
            ("bulk64k", "mb_per_s", "bulk 64 KiB msgs, 1 conn, MB/s"),
            ("bulk64k", "cpu_us_per_mb", "bulk 64 KiB, proxy CPU µs/MB"),
            (
                "bulk64k",
                "kernel_pct",
                "bulk 64 KiB, proxy CPU in the kernel, %",
            ),
            ("bulk1m", "mb_per_s", "bulk 1 MiB msgs, 1 conn, MB/s"),
            ("bulk1m", "cpu_us_per_mb", "bulk 1 MiB, proxy CPU µs/MB"),
        ];
        for (key, metric, label) in rows {
            if names.iter().all(|n| self.median(n, key, metric).is_none()) {
                continue;
            }
            let _ = write!(s, "| {label} | median (min – max) |");
            for n in &names {
                let v = self.values(n, key, metric);
                if v.is_empty() {
                    s.push_str(" — |");
                } else {
                    let _ = write!(
                        s,
                        " {} ({} – {}) |",
                        fmt(v[v.len() / 2]),
                        fmt(v[0]),
                        fmt(v[v.len() - 1])
                    );
                }
            }
            for n in names.iter().filter(|n| n.starts_with("gw-")) {
                for peer in ["nginx", "haproxy"] {
                    match (self.median(n, key, metric), self.median(peer, key, metric)) {
                        (Some(a), Some(b)) if b > 0.0 => {
                            let _ = write!(s, " {:.2}× |", a / b);
                        }
                        _ => s.push_str(" — |"),
                    }
                }
            }
            s.push('\n');
        }
        let resumed: Vec<String> = names
            .iter()
            .filter_map(|n| {
                let h = self.values(n, "tls_resumed", "handshakes");
                let r = self.values(n, "tls_resumed", "resumed");
                let (h, r): (f64, f64) = (h.iter().sum(), r.iter().sum());
                (h > 0.0).then(|| format!("{n} {:.0} %", 100.0 * r / h))
            })
            .collect();
        if !resumed.is_empty() {
            let _ = writeln!(
                s,
                "\nResumed share of the resumed-handshake runs: {}.",
                resumed.join(", ")
            );
        }
        s.push_str(&self.chart(&names));
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }

    /// Latency distribution at half load: one bar per percentile and target.
    fn chart(&self, names: &[&str]) -> String {
        const PS: [&str; 12] = [
            "p10", "p20", "p30", "p40", "p50", "p60", "p70", "p80", "p90", "p95", "p99", "p99.9",
        ];
        let mut dists: Vec<(&str, Vec<f64>)> = Vec::new();
        for n in names {
            let Some(rs) = self.results.get(&(n.to_string(), "echo_half".into())) else {
                continue;
            };
            let per: Vec<Vec<f64>> = rs
                .iter()
                .filter_map(|r| {
                    r.get("dist_us")
                        .map(|d| d.split(',').filter_map(|x| x.parse().ok()).collect())
                })
                .collect();
            let med: Vec<f64> = (0..PS.len())
                .map(|i| {
                    let mut v: Vec<f64> = per.iter().filter_map(|d| d.get(i).copied()).collect();
                    v.sort_by(f64::total_cmp);
                    v.get(v.len() / 2).copied().unwrap_or(0.0)
                })
                .collect();
            dists.push((n, med));
        }
        if dists.is_empty() {
            return String::new();
        }
        let top = dists
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .fold(1.0, f64::max);
        let mut s = String::from(
            "\nLatency distribution, echo 64 B ×100 at half nginx's peak (median of rounds; \
             bar length linear, full width = the largest value):\n\n```text\n",
        );
        for (i, p) in PS.iter().enumerate() {
            for (n, d) in &dists {
                let v = d[i];
                let w = ((v / top) * 50.0).round() as usize;
                let _ = writeln!(
                    s,
                    "{p:>6} {n:<10} {:<50} {:>7.0} µs",
                    "█".repeat(w.max(1)),
                    v
                );
            }
        }
        s.push_str("```\n");
        s
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        let n = v.round() as u64;
        let mut s = n.to_string();
        let mut i = s.len() as isize - 3;
        while i > 0 {
            s.insert(i as usize, ',');
            i -= 3;
        }
        s
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn which(name: &str) -> Option<PathBuf> {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}
