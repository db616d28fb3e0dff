//! A real browser for the end-to-end scenarios: Debian's headless Chromium
//! driven through WebDriver (`chromedriver` on a loopback port, `fantoccini`
//! as the client).
//!
//! - [`tools`] finds `chromium` and `chromedriver`; outside CI a missing one
//!   skips the scenario with a loud message, in CI (`CI=true`) it fails it.
//! - [`ChromeDriver`] runs `chromedriver` on `127.0.0.1:<free port>`; on drop
//!   it ends the processes it started (chromedriver and the browsers under
//!   it), each by its pid.
//! - [`Browser`] holds the chromium flags of one session: headless, no
//!   background networking, a fresh profile, the test certificate trusted
//!   by its public key only (`--ignore-certificate-errors-spki-list`, the
//!   machine's trust store untouched), and host names mapped to loopback
//!   (`--host-resolver-rules`).
//! - [`Artifacts`] saves screenshots and page sources under
//!   `<target>/browser-artifacts/`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fantoccini::{Client, ClientBuilder};
use sha2::{Digest as _, Sha256};

/// The programs a browser scenario needs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Whether this run is CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or `None` (with a loud message) when one is
/// missing outside CI. Panics in CI when one is missing: `.ci/run`
/// installs both (`apt-get install chromium chromium-driver`).
pub fn tools() -> Option<Tools> {
    let chromium = which(&["chromium", "chromium-browser"]);
    let chromedriver = which(&["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Tools {
            chromium,
            chromedriver,
        }),
        (chromium, chromedriver) => {
            let missing = [
                chromium.is_none().then_some("chromium"),
                chromedriver.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ");
            assert!(
                !in_ci(),
                "CI: {missing} missing; the browser scenario must run in CI \
                 (apt-get install -y chromium chromium-driver)"
            );
            eprintln!(
                "\n==================== SKIPPED: BROWSER SCENARIO ====================\n\
                 {missing} not found; this test did NOT run.\n\
                 Install with: apt-get install -y chromium chromium-driver\n\
                 ===================================================================\n"
            );
            None
        }
    }
}

/// The base64 SHA-256 of the leaf certificate's SubjectPublicKeyInfo in
/// `chain_pem` (the form `--ignore-certificate-errors-spki-list` takes).
pub fn spki_sha256_base64(chain_pem: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .expect("no certificate in the chain")
        .expect("a malformed certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("an unparsable certificate");
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(cert.public_key().raw))
}

pub use crate::tempdir::TempDir;

pub use crate::procs::free_port;

/// Waits until `child` itself listens on `addr`'s port and accepts a TCP
/// connection there; an error if it exits first.
///
/// A connection alone is not proof: if another test's server bound the
/// port first, `child` fails its bind and exits, and the connection
/// reaches the other server. So the listening socket must be one of
/// `child`'s open files (`/proc/<pid>/fd` against `/proc/<pid>/net/tcp*`).
pub fn wait_listening(addr: SocketAddr, what: &str, child: &mut Child) -> Result<(), String> {
    let started = Instant::now();
    while !(listens(child.id(), addr.port())
        && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited before listening on {addr}: {status}"
            ));
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what} did not listen on {addr} within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Whether process `pid` holds a listening TCP socket on `port`.
fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: Vec<u64> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|table| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .is_ok_and(|t| listening_inodes(&t, port).any(|i| sockets.contains(&i)))
    })
}

/// The inodes of the sockets listening on `port` in a `/proc/net/tcp`
/// (or `tcp6`) table.
fn listening_inodes(table: &str, port: u16) -> impl Iterator<Item = u64> + '_ {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(move |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port && *f.get(3)? == LISTEN).then_some(())?;
        f.get(9)?.parse().ok()
    })
}

/// The pids of every live descendant of `root` (from `/proc`).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &pp) in &parent {
            if pp == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// `chromedriver` on a loopback port; it and the browsers it started are
/// ended by pid on drop.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver on `127.0.0.1:<free port>` (local clients only),
    /// logging to `log`.
    ///
    /// The port is free when chosen but may be taken before chromedriver
    /// binds it (tests run in parallel): chromedriver then exits at once,
    /// and another port is tried, up to five.
    pub fn start(tools: &Tools, log: &Path) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&tools.chromedriver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.chromedriver.display()));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match wait_listening(addr, "chromedriver", &mut child) {
                Ok(()) => {
                    return Self {
                        child,
                        port,
                        log: log.to_path_buf(),
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let why = std::fs::read_to_string(log).unwrap_or_default();
                    eprintln!("{e}; trying another port. Its log:\n{why}");
                    last = e;
                }
            }
        }
        panic!("{last} (five ports tried)");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// chromedriver's log (the browser's arguments, its errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the browsers chromedriver started and chromedriver itself, each
    /// by its pid.
    pub fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id();
        // Stop the parent first so it starts nothing new, then its tree.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
        for d in descendants(pid) {
            let _ = kill(Pid::from_raw(d as i32), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One browser session's settings.
#[derive(Clone, Debug, Default)]
pub struct Browser {
    /// Base64 SHA-256 SPKI hashes of certificates to accept for this session.
    pub trusted_spki: Vec<String>,
    /// Host patterns (`gw.example.com`, `*.gw.example.com`) mapped to 127.0.0.1.
    pub loopback_hosts: Vec<String>,
    /// The window size.
    pub window: (u32, u32),
    /// Where Chromium writes its network log (`--log-net-log`), if anywhere.
    pub net_log: Option<PathBuf>,
    /// More chromium arguments.
    pub extra_args: Vec<String>,
}

impl Browser {
    /// The chromium arguments for this session, with its profile in `profile`.
    pub fn args(&self, profile: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--metrics-recording-only",
            "--no-proxy-server",
            "--password-store=basic",
            "--use-mock-keychain",
            "--no-pings",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--disable-field-trial-config",
            "--disable-features=AutofillServerCommunication,OptimizationHints,\
             OptimizationGuideModelDownloading,MediaRouter,Translate,InterestFeedContentSuggestions,\
             CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying,HttpsUpgrades",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        let (w, h) = if self.window == (0, 0) {
            (1280, 900)
        } else {
            self.window
        };
        args.push(format!("--window-size={w},{h}"));
        if let Some(p) = &self.net_log {
            args.push(format!("--log-net-log={}", p.display()));
            args.push("--net-log-capture-mode=Everything".into());
        }
        if !self.trusted_spki.is_empty() {
            args.push(format!(
                "--ignore-certificate-errors-spki-list={}",
                self.trusted_spki.join(",")
            ));
        }
        // The test's names resolve to loopback; every other name resolves
        // to nothing, so whatever the browser still tries on its own never
        // leaves the machine.
        let mut rules: Vec<String> = self
            .loopback_hosts
            .iter()
            .map(|h| format!("MAP {h} 127.0.0.1"))
            .collect();
        rules.push("MAP * ~NOTFOUND".into());
        args.push(format!("--host-resolver-rules={}", rules.join(", ")));
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Opens a session on `driver`, with its profile in `profile`.
    pub async fn open(
        &self,
        tools: &Tools,
        driver: &ChromeDriver,
        profile: &Path,
    ) -> Result<Client, fantoccini::error::NewSessionError> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": tools.chromium,
                "args": self.args(profile),
            }),
        );
        // The certificate is trusted through its SPKI, not by accepting anything.
        caps.insert("acceptInsecureCerts".into(), serde_json::Value::Bool(false));
        caps.insert("pageLoadStrategy".into(), "normal".into());
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await
    }
}

/// Where a scenario's screenshots go: `<target>/browser-artifacts/<name>/`.
#[derive(Debug)]
pub struct Artifacts {
    pub dir: PathBuf,
}

impl Artifacts {
    /// A fresh directory for scenario `name` under the cargo target
    /// directory (`CARGO_TARGET_DIR` or the workspace's `target/`).
    pub fn new(name: &str) -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
            Some(t) => workspace.join(t),
            None => workspace.join("target"),
        };
        let dir = target.join("browser-artifacts").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// Saves a PNG screenshot of the page as `<name>.png`.
    pub async fn screenshot(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<PathBuf, fantoccini::error::CmdError> {
        let png = client.screenshot().await?;
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        Ok(path)
    }

    /// Saves `text` as `name`.
    pub fn save(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_among_its_owners_files_only() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listens(std::process::id(), port));
        let mut other = Command::new("sleep").arg("5").spawn().unwrap();
        assert!(!listens(other.id(), port), "sleep holds no socket");
        other.kill().unwrap();
        other.wait().unwrap();
        drop(l);
        assert!(!listens(std::process::id(), port), "closed");
    }

    /// The CI failure this guards against: a child that fails to bind (the
    /// port is another server's) must not count as listening, although a
    /// connection to the port succeeds.
    #[test]
    fn a_child_is_not_listening_through_another_processs_socket() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let e = wait_listening(addr, "sleep", &mut child).unwrap_err();
        assert!(e.contains("exited before listening"), "{e}");
    }

    #[test]
    fn listening_inodes_reads_listen_rows_of_the_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0
";
        assert_eq!(listening_inodes(table, 8080).collect::<Vec<_>>(), [4242]);
        assert_eq!(listening_inodes(table, 8081).collect::<Vec<_>>(), [4444]);
        assert_eq!(listening_inodes(table, 80).count(), 0);
        assert_eq!(listening_inodes("garbage\n0: x y", 8080).count(), 0);
    }
}
