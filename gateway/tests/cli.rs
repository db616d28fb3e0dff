//! The `gateway` binary: exit codes and output of `check-config`,
//! `keygen`, `run`, `demo` and `--version`, and the example configuration.

use std::path::Path;
use std::process::{Command, Output};

use gateway::keys;
use proto::SecretKey;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

mod common;

use common::TempDir;

fn gateway(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// The hex value of `name = "..."` in TOML output.
fn toml_value(out: &str, name: &str) -> String {
    let prefix = format!("{name} = \"");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {out:?}"));
    line[prefix.len()..line.len() - 1].to_string()
}

#[test]
fn version_and_help() {
    let out = gateway(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let out = gateway(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "run",
        "check-config",
        "keygen",
        "demo",
        "--log-format",
        "RUST_LOG",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let out = gateway(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn keygen_to_stdout_prints_a_matching_pair() {
    let out = gateway(&["keygen"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let private = keys::parse_hex32(&toml_value(&stdout, "private_key")).unwrap();
    let public = keys::parse_public_key(&toml_value(&stdout, "public_key")).unwrap();
    assert_eq!(SecretKey::from_bytes(private).public_key(), public);
    // The output is TOML.
    let parsed: toml::Table = toml::from_str(&stdout).unwrap();
    assert_eq!(parsed.len(), 2);
}

#[cfg(unix)]
#[test]
fn keygen_writes_a_private_file_and_never_overwrites_it() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new("keygen");
    let file = dir.path().join("gateway.key");
    let f = file.to_str().unwrap();
    let out = gateway(&["keygen", "--out", f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("private key written to {f} (mode 0600)")));
    let public = keys::parse_public_key(&toml_value(&stdout, "public_key")).unwrap();

    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let content = std::fs::read_to_string(&file).unwrap();
    assert_eq!(content.len(), 65);
    assert!(content.ends_with('\n'));
    let key = keys::read_key_file(&file).unwrap();
    assert_eq!(key.expose().public_key(), public);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let again = gateway(&["keygen", "--out", f]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("exists; refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content);

    // --force replaces it, still 0600 even if the old file was not.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let forced = gateway(&["keygen", "--out", f, "--force"]);
    assert!(forced.status.success());
    let new_public =
        keys::parse_public_key(&toml_value(&text(&forced.stdout), "public_key")).unwrap();
    assert_ne!(new_public, public);
    assert_eq!(
        keys::read_key_file(&file).unwrap().expose().public_key(),
        new_public
    );
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // --force alone is a usage error.
    assert_eq!(gateway(&["keygen", "--force"]).status.code(), Some(2));
}

const GOOD: &str = r#"[gateway]
domain = "gw.example.com"

[[listen]]
address = "127.0.0.1:0"

[link]
address = "127.0.0.1:0"

[tls]
certificates = [{ cert = "tls/fullchain.pem", key = "tls/privkey.pem" }]

[[device]]
id = "plc-7"
public_key = "1111111111111111111111111111111111111111111111111111111111111111"
"#;

fn good_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.certs();
    keys::write_key_file(
        &dir.path().join("gateway.key"),
        &keys::generate().unwrap(),
        false,
    )
    .unwrap();
    // Metrics on a free port: `run` binds them, and tests run in parallel.
    dir.write(
        "gateway.toml",
        &format!("{GOOD}\n[metrics]\naddress = \"127.0.0.1:0\"\n"),
    );
    dir
}

#[test]
fn check_config_accepts_a_good_file_with_a_summary() {
    let dir = good_dir("check-ok");
    let file = dir.path().join("gateway.toml");
    let out = gateway(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    for needle in [
        "https 127.0.0.1:0 (mss 1360)",
        "device link on 127.0.0.1:0",
        "metrics on 127.0.0.1:0",
        "1 device(s)",
        "gateway public key ",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from {stdout}");
    }
}

#[test]
fn check_config_lists_every_error_with_its_place() {
    let dir = good_dir("check-bad");
    let bad = GOOD
        .replacen("127.0.0.1:0", "127.0.0.1", 1)
        .replace("\"plc-7\"", "\"PLC 7\"");
    let file = dir.write("gateway.toml", &bad);
    let f = file.to_str().unwrap();
    let out = gateway(&["check-config", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{f}:5:11: invalid socket address \"127.0.0.1\"")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{f}:14:6: invalid device id \"PLC 7\"")),
        "{stderr}"
    );
    assert_eq!(lines[2], format!("{f}: 2 errors"));

    // A syntax error.
    let file = dir.write("gateway.toml", "[gateway]\ndomain = \"x\"\nlisten = [\n");
    let out = gateway(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{f}:3:11: unclosed array")),
        "{}",
        text(&out.stderr)
    );

    // A file that is not there.
    let out = gateway(&["check-config", "/nonexistent/gateway.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/gateway.toml"));
}

/// A gateway process, stopped with SIGTERM (by its id) when dropped.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line received so far: stdout and stderr arrive through two
    /// threads, so a log line may come in before a banner line printed
    /// earlier, and a wait for the banner must not lose it.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        Self::start_with(BIN, &[], args)
    }

    /// `program` with `before` and then `args` (`program` runs the gateway
    /// in its own process, as `taskset` does).
    fn start_with(program: &str, before: &[&str], args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = Command::new(program)
            .args(before)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(l);
            }
        });
        Self {
            child,
            lines,
            seen: std::cell::RefCell::default(),
        }
    }

    /// The first output line containing `needle`, among those already
    /// received or arriving within 60 s.
    fn wait_line(&self, needle: &str) -> String {
        if let Some(l) = self.seen.borrow().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.seen.borrow_mut().push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} in {:#?}", self.seen.borrow());
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        status.code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn run_serves_until_sigterm_and_exits_zero() {
    let dir = good_dir("run");
    let file = dir.path().join("gateway.toml");
    let gw = Running::start(&["run", "--config", file.to_str().unwrap()]);
    gw.wait_line("device link listening");
    let line = gw.wait_line("browsers listening");
    assert!(line.contains("127.0.0.1:"), "{line}");
    // One worker per CPU by default.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let line = gw.wait_line("runtime:");
    assert!(line.contains(&format!("runtime: {cpus} thread")), "{line}");
    assert_eq!(gw.stop(), Some(0));

    // `[gateway] threads`: one runs the current-thread scheduler.
    let good = std::fs::read_to_string(&file).unwrap();
    for (n, says) in [
        (1, "runtime: 1 thread (current-thread scheduler)"),
        (3, "runtime: 3 threads (multi-thread scheduler)"),
    ] {
        dir.write(
            "gateway.toml",
            &good.replace("[gateway]\n", &format!("[gateway]\nthreads = {n}\n")),
        );
        let gw = Running::start(&["run", "--config", file.to_str().unwrap()]);
        gw.wait_line(says);
        gw.wait_line("browsers listening");
        if n == 1 {
            // Between its blocking jobs (the overload sampler's descriptor
            // count at start, then every 10 s) the process is one thread:
            // the blocking pool's thread exits a second after its job, not
            // tokio's default 10 s (which would outlast this wait).
            let task = format!("/proc/{}/task", gw.child.id());
            let threads = || std::fs::read_dir(&task).map_or(0, Iterator::count);
            std::thread::sleep(std::time::Duration::from_millis(1500));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(7);
            while threads() != 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert_eq!(threads(), 1, "threads of an idle one-thread gateway");
        }
        assert_eq!(gw.stop(), Some(0));
    }
    dir.write("gateway.toml", &good);

    // A bad configuration stops `run` before it binds anything, with exit code 1.
    dir.write("gateway.toml", "[gateway]\ndomain = \"x\"\n");
    let out = gateway(&["run", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no [[listen]] section"));
}

#[test]
fn demo_serves_its_device_and_reuses_its_files() {
    let dir = TempDir::new("demo");
    let data = dir.path().join("data");
    let args = [
        "demo",
        "--data-dir",
        data.to_str().unwrap(),
        "--https-port",
        "0",
        "--link-port",
        "0",
        "--metrics-port",
        "0",
    ];
    let gw = Running::start(&args);
    let open = gw.wait_line("Open:");
    assert!(
        open.contains("https://localhost:") && open.contains("/d/demo/"),
        "{open}"
    );
    let login = gw.wait_line("Login:");
    let password = login
        .split("password ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    assert!(password.len() >= 16, "{login}");
    // The session's events carry its span (the session task does not enter
    // it; its events name it as their parent): the device and its address.
    let online = without_colours(&gw.wait_line("device online"));
    assert!(
        online.contains("device_link{peer=127.0.0.1:") && online.contains("device=\"demo\"}"),
        "{online}"
    );
    // Only the hash of the password is written down.
    let written = std::fs::read_to_string(data.join("gateway.toml")).unwrap();
    assert!(!written.contains(password));
    assert!(written.contains("$argon2id$"));
    for f in [
        "ca.pem",
        "cert.pem",
        "cert.key",
        "gateway.key",
        "device.key",
        "gateway.toml",
    ] {
        assert!(data.join(f).exists(), "{f} missing");
    }
    // No HSTS from the demo: a browser would pin it on localhost.
    let demo = gateway::config::load(data.join("gateway.toml")).unwrap();
    assert_eq!(demo.http.hsts_max_age, None);
    let ca = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    assert_eq!(gw.stop(), Some(0));
    // The written configuration passes the same checks as any other.
    let out = gateway(&["check-config", data.join("gateway.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A second run keeps the CA a browser may already trust.
    let gw = Running::start(&args);
    gw.wait_line("device online");
    assert_eq!(gw.stop(), Some(0));
    assert_eq!(std::fs::read_to_string(data.join("ca.pem")).unwrap(), ca);

    // A connection's events carry its span, which its task does not enter
    // (they name it as their parent): here a handshake that fails on
    // bytes that are not TLS, logged at debug level.
    let gw = Running::start_with("env", &["RUST_LOG=gateway=debug", BIN], &args);
    let open = gw.wait_line("Open:");
    let port: u16 = open
        .split("https://localhost:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {open}"));
    {
        use std::io::{Read as _, Write as _};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = tcp.read(&mut [0; 64]);
    }
    let failed = without_colours(&gw.wait_line("TLS handshake failed"));
    assert!(failed.contains("conn{peer=127.0.0.1:"), "{failed}");
    assert_eq!(gw.stop(), Some(0));

    // Allowed one CPU, the gateway runs on one thread, and serves: the
    // demo device's session comes up over the link.
    let gw = Running::start_with("taskset", &["-c", "0", BIN], &args);
    gw.wait_line("runtime: 1 thread (current-thread scheduler)");
    gw.wait_line("device online");
    assert_eq!(gw.stop(), Some(0));

    let out = gateway(&["demo", "--https-port", "7000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--link-port 7000 is also given as --https-port"));
}

#[test]
fn logs_can_be_json() {
    let dir = good_dir("json");
    let file = dir.path().join("gateway.toml");
    let gw = Running::start(&[
        "--log-format",
        "json",
        "run",
        "--config",
        file.to_str().unwrap(),
    ]);
    let line = gw.wait_line("configuration");
    assert!(
        line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":\"INFO\""),
        "{line}"
    );
    gw.wait_line("browsers listening");
    assert_eq!(gw.stop(), Some(0));
    // Invalid RUST_LOG is a usage error.
    let out = Command::new(BIN)
        .args(["check-config", file.to_str().unwrap()])
        .env("RUST_LOG", "gateway=loud")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("RUST_LOG"));
}

#[test]
fn the_example_configuration_is_accepted() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let main = std::fs::read_to_string(examples.join("gateway.toml")).unwrap();
    let devices = std::fs::read_to_string(examples.join("devices.toml")).unwrap();
    let dir = TempDir::new("example");
    // Its data_dir is /var/lib/devlink-gateway: point it here, with a key and certificates.
    let line = "data_dir = \"/var/lib/devlink-gateway\"";
    assert!(main.contains(line));
    let main = main.replace(line, &format!("data_dir = {:?}", dir.path()));
    let file = dir.write("gateway.toml", &main);
    dir.write("devices.toml", &devices);
    dir.certs();
    keys::write_key_file(
        &dir.path().join("gateway.key"),
        &keys::generate().unwrap(),
        false,
    )
    .unwrap();
    let out = gateway(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("6 device(s) (5 on the link, 1 direct, 1 public)"),
        "{stdout}"
    );
    // And the library agrees on the details.
    let c = gateway::config::load(&file).unwrap();
    let hvac = c.devices.get("hvac-2").unwrap();
    assert_eq!(hvac.policy.host, "hvac-2.local");
    assert_eq!(hvac.services.len(), 2);
    assert!(c.devices.get("pump-12").is_some());
}

#[test]
fn hash_password_and_token_print_configuration_lines() {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"long enough secret\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hash = toml_value(&stdout, "password_hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(gateway::auth::password::verify(
        Some(&hash),
        "long enough secret"
    ));
    assert!(!stdout.contains("long enough secret"));

    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"short\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("shorter than 8"));

    let out = gateway(&["token"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let token = toml_value(&stdout, "token");
    let digest = toml_value(&stdout, "sha256");
    assert_eq!(gateway::auth::password::token_digest(&token), digest);
}

#[test]
fn the_fleet_example_is_accepted() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let main = std::fs::read_to_string(examples.join("fleet.toml")).unwrap();
    let dir = TempDir::new("fleet-example");
    let line = "data_dir = \"/var/lib/devlink-gateway\"";
    assert!(main.contains(line));
    let file = dir.write(
        "gateway.toml",
        &main.replace(line, &format!("data_dir = {:?}", dir.path())),
    );
    dir.write(
        "users.toml",
        &std::fs::read_to_string(examples.join("users.toml")).unwrap(),
    );
    let fleet = device_fw::host::fleet("example", "sim", 3);
    dir.write("devices.toml", &device_fw::host::registry_toml(&fleet));
    keys::write_key_file(
        &dir.path().join("gateway.key"),
        &keys::generate().unwrap(),
        false,
    )
    .unwrap();
    let out = gateway(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let c = gateway::config::load(&file).unwrap();
    assert_eq!(c.devices.len(), 3);
    assert_eq!(c.auth.users.len(), 2);
    assert!(c.auth.users[0].devices.contains("sim-1"));
    assert_eq!(c.acme.unwrap().names, vec!["fleet.example.com".to_string()]);
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
