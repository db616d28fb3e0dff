//! Network namespaces that a test creates and removes, and tokio runtimes
//! whose threads live inside one.
//!
//! - [`Netns`]: one namespace, named `e2e-<tag>-<pid>-<role>` so parallel
//!   runs never collide; deleted on drop (its veth ends go with it), also
//!   when the test panics. Namespaces left behind by a killed run (their
//!   pid no longer exists) are removed by the next [`BlackHole::create`].
//! - [`NsRuntime`]: a multi-thread tokio runtime whose every thread (the
//!   workers and the blocking pool) calls `setns(CLONE_NEWNET)` when it
//!   starts, so any socket a task creates lives in that namespace. A socket
//!   keeps its namespace for life, whichever thread uses it later.
//!   [`NsRuntime::run`] spawns the future onto the runtime (not `block_on`,
//!   which would poll it on the caller's thread, in the caller's namespace).
//! - [`BlackHole`]: client ↔ router ↔ server with a PMTU black hole in the
//!   router (seed 000 of `SEEDS.md`):
//!
//! ```text
//!  client 10.200.1.2/24 ── c0 ═ r0 10.200.1.1 ─ router ─ 10.200.2.1 r1 ═ s0 ── 10.200.2.2/24 server
//!   links MTU 1500           routes `mtu lock 1400` both ways     links MTU 1500
//!                            nft: ICMP frag-needed / packet-too-big dropped (counted)
//! ```
//!
//! The endpoints' links stay at 1500, so their TCP announces MSS 1460 and
//! sends full-size segments; the router cannot forward them (DF set, 1400
//! locked, so PMTU discovery on the router cannot change it) and the ICMP
//! that would tell the sender is dropped: the segments vanish.
//!
//! [`preflight`] says whether this machine can run such tests (root, `ip`,
//! `nft`); [`skip_or_fail`] skips loudly, or fails when `CI=true`.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Whether namespace tests can run here: root, `ip` and `nft` present.
pub fn preflight() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "`{tool}` is missing (Debian: apt-get install iproute2 nftables)"
            ));
        }
    }
    Ok(())
}

/// Skips `test` loudly (straight to stderr, past the harness's output
/// capture); panics instead when `CI=true`: CI must run it.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why} (CI=true: this test must run in CI)");
    }
    let _ = io::Write::write_all(
        &mut io::stderr(),
        format!(
            "\n\n======================================================================\n\
             SKIPPED: {test}: {why}\n\
             ======================================================================\n\n"
        )
        .as_bytes(),
    );
}

/// Runs `program args` (stdin from `input`), failing with its stderr.
pub fn cmd(program: &str, args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut c = Command::new(program);
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        io::Write::write_all(&mut stdin, text.as_bytes())
            .map_err(|e| format!("{program}: stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn add(name: &str) -> Result<Self, String> {
        cmd("ip", &["netns", "add", name], None)?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name (under `/run/netns`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <name> args…`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        cmd("ip", &all, None)
    }

    /// `ip netns exec <name> program args…` with `input` on stdin.
    pub fn exec(
        &self,
        program: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        cmd("ip", &all, input)
    }

    /// Writes `value` to `/proc/sys/<key>` inside the namespace (`key` with
    /// slashes, e.g. `net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        self.exec(
            "sh",
            &["-c", &format!("echo {value} > /proc/sys/{key}")],
            None,
        )
        .map(drop)
    }

    /// The namespace's inode (what `/proc/thread-self/ns/net` of a thread
    /// inside it shows).
    pub fn inode(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path())?.ino())
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A runtime with `threads` workers whose threads all live in this
    /// namespace (checked before it is returned).
    pub fn runtime(&self, threads: usize) -> io::Result<NsRuntime> {
        let fd = Arc::new(File::open(self.path())?);
        let name = self.name.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(4)
            .thread_name(format!("ns-{name}"))
            .enable_all()
            .on_thread_start(move || {
                // A thread left in the caller's namespace would put its
                // sockets on the wrong network: the check below fails.
                if let Err(e) = setns(fd.as_ref(), CloneFlags::CLONE_NEWNET) {
                    let _ = io::Write::write_all(
                        &mut io::stderr(),
                        format!("setns into {name} failed: {e}\n").as_bytes(),
                    );
                }
            })
            .build()?;
        let want = self.inode()?;
        let got = rt.block_on(rt.spawn(async { thread_netns() }));
        match got {
            Ok(Ok(got)) if got == want => Ok(NsRuntime { rt: Some(rt) }),
            other => Err(io::Error::other(format!(
                "runtime threads are not in namespace {} ({want}): {other:?}",
                self.name
            ))),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd("ip", &["netns", "del", &self.name], None) {
            let _ = io::Write::write_all(&mut io::stderr(), format!("cleanup: {e}\n").as_bytes());
        }
    }
}

/// The network namespace inode of the calling thread.
pub fn thread_netns() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// A tokio runtime inside a namespace (see [`Netns::runtime`]); shut down
/// on drop without waiting more than a second for blocking tasks.
#[derive(Debug)]
pub struct NsRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl NsRuntime {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only on drop"))
    }

    /// Runs `fut` on a worker (inside the namespace) and waits for it;
    /// a panic in it is resumed here.
    pub fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.rt().block_on(self.rt().spawn(fut)) {
            Ok(v) => v,
            Err(e) => match e.try_into_panic() {
                Ok(p) => std::panic::resume_unwind(p),
                Err(e) => panic!("task in namespace runtime: {e}"),
            },
        }
    }

    /// Spawns `fut` inside the namespace.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(fut)
    }

    /// A handle (to spawn from other runtimes).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt().handle()
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Addresses of [`BlackHole`].
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 2);
/// The server's address.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 2, 2);
/// The MTU of the router's hop (routes with `mtu lock`).
pub const HOP_MTU: u32 = 1400;

/// Client ↔ router ↔ server namespaces with a PMTU black hole in the
/// router (module docs). Fields drop (namespaces deleted) in order.
#[derive(Debug)]
pub struct BlackHole {
    /// The client side (10.200.1.2).
    pub client: Netns,
    /// The server side (10.200.2.2).
    pub server: Netns,
    /// The router: forwards, 1400-byte hop, drops the ICMP errors.
    pub router: Netns,
}

impl BlackHole {
    /// Creates the three namespaces `e2e-<tag>-<pid>-{c,r,s}`.
    pub fn create(tag: &str) -> Result<Self, String> {
        remove_stale(tag);
        let pid = std::process::id();
        let name = |role: &str| format!("e2e-{tag}-{pid}-{role}");
        let client = Netns::add(&name("c"))?;
        let router = Netns::add(&name("r"))?;
        let server = Netns::add(&name("s"))?;
        cmd(
            "ip",
            &[
                "link",
                "add",
                "c0",
                "netns",
                client.name(),
                "type",
                "veth",
                "peer",
                "name",
                "r0",
                "netns",
                router.name(),
            ],
            None,
        )?;
        cmd(
            "ip",
            &[
                "link",
                "add",
                "r1",
                "netns",
                router.name(),
                "type",
                "veth",
                "peer",
                "name",
                "s0",
                "netns",
                server.name(),
            ],
            None,
        )?;
        for (ns, dev, addr) in [
            (&client, "c0", "10.200.1.2/24"),
            (&router, "r0", "10.200.1.1/24"),
            (&router, "r1", "10.200.2.1/24"),
            (&server, "s0", "10.200.2.2/24"),
        ] {
            ns.ip(&["addr", "add", addr, "dev", dev])?;
            ns.ip(&["link", "set", dev, "mtu", "1500", "up"])?;
        }
        client.ip(&["route", "add", "default", "via", "10.200.1.1"])?;
        server.ip(&["route", "add", "default", "via", "10.200.2.1"])?;
        router.sysctl("net/ipv4/ip_forward", "1")?;
        // No MTU probing on the endpoints (the namespace default, made
        // explicit): nothing but the MSS may rescue a connection.
        for ns in [&client, &server] {
            ns.sysctl("net/ipv4/tcp_mtu_probing", "0")?;
        }
        let mtu = HOP_MTU.to_string();
        for (net, dev) in [("10.200.2.0/24", "r1"), ("10.200.1.0/24", "r0")] {
            router.ip(&["route", "replace", net, "dev", dev, "mtu", "lock", &mtu])?;
        }
        router.exec("nft", &["-f", "-"], Some(NFT_RULES))?;
        Ok(Self {
            client,
            server,
            router,
        })
    }

    /// ICMP "fragmentation needed" / "packet too big" messages the router
    /// dropped so far (its nft counters).
    pub fn icmp_dropped(&self) -> Result<u64, String> {
        let text = self
            .router
            .exec("nft", &["list", "table", "inet", "blackhole"], None)?;
        let mut sum = 0;
        for w in text.split_whitespace().collect::<Vec<_>>().windows(2) {
            if w[0] == "packets" {
                sum += w[1].parse::<u64>().unwrap_or(0);
            }
        }
        Ok(sum)
    }
}

/// The router's black hole: its own ICMP errors (output) and any it would
/// forward, dropped and counted.
const NFT_RULES: &str = "\
table inet blackhole {
  chain out_icmp {
    type filter hook output priority 0; policy accept;
    icmp type destination-unreachable icmp code frag-needed counter drop
    icmpv6 type packet-too-big counter drop
  }
  chain through_icmp {
    type filter hook forward priority 0; policy accept;
    icmp type destination-unreachable icmp code frag-needed counter drop
    icmpv6 type packet-too-big counter drop
  }
}
";

/// Deletes `e2e-<tag>-<pid>-*` namespaces whose process is gone (a run
/// killed before its guards ran).
fn remove_stale(tag: &str) {
    let Ok(list) = cmd("ip", &["netns", "list"], None) else {
        return;
    };
    let prefix = format!("e2e-{tag}-");
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = cmd("ip", &["netns", "del", name], None);
        }
    }
}
