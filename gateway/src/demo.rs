//! `gateway demo`: the whole product on one machine with no set-up.
//!
//! Into a data directory (created once, reused on later runs so a trusted
//! CA stays trusted) it writes a local ECDSA P-256 CA and a certificate for
//! `localhost`, `demo.localhost` and `127.0.0.1`, the gateway's key, a key
//! for the simulated device and a `gateway.toml` naming all of them. The
//! configuration is then loaded exactly as `gateway run` loads one, and a
//! device running the `device-fw` sample application (the same code as the
//! firmware, on the host platform) dials the link listener in-process.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{SimApp, SimBoard, TokioPlatform};
use device_fw::link::{Identity, LinkConfig};
use proto::{PublicKey, SecretKey};

use crate::config::{self, Config};
use crate::edge::tls::local_ca;
use crate::keys;

/// The simulated device's id.
pub const DEVICE_ID: &str = "demo";

/// Ports the demo listens on (0 picks a free one).
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// HTTPS for browsers.
    pub https: u16,
    /// The device link.
    pub link: u16,
    /// Metrics.
    pub metrics: u16,
}

/// The files of a demo data directory.
#[derive(Clone, Debug)]
pub struct DemoFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The configuration written for these ports.
    pub config: PathBuf,
    /// The CA to trust.
    pub ca: PathBuf,
    /// The device's key file.
    pub device_key: PathBuf,
    /// The demo user's password, new on every start (only its hash is written).
    pub password: String,
    /// An API token for the demo device, new on every start.
    pub token: String,
}

/// The demo user's name.
pub const USER: &str = "demo";

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Creates what is missing in `dir` and (re)writes the configuration for
/// `ports`.
pub fn prepare(dir: &Path, ports: Ports) -> anyhow::Result<DemoFiles> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let gateway_key = dir.join("gateway.key");
    if !gateway_key.exists() {
        keys::write_key_file(&gateway_key, &keys::generate()?, false)?;
    }
    let device_key = dir.join("device.key");
    if !device_key.exists() {
        keys::write_key_file(&device_key, &keys::generate()?, false)?;
    }
    let device = keys::read_key_file(&device_key)?.into_inner();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("cert.key"),
    );
    if !(ca.exists() && cert.exists() && key.exists()) {
        let names = [
            "localhost".to_string(),
            format!("{DEVICE_ID}.localhost"),
            "127.0.0.1".to_string(),
        ];
        let made = local_ca(&names).context("cannot make the demo certificate authority")?;
        write_private(&key, &made.key_pem)?;
        fs::write(&cert, &made.chain_pem)
            .with_context(|| format!("cannot write {}", cert.display()))?;
        fs::write(&ca, &made.ca_pem).with_context(|| format!("cannot write {}", ca.display()))?;
    }
    let config = dir.join("gateway.toml");
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).context("no randomness for the demo password")?;
    let password = crate::auth::password::base64url(&raw);
    let token = crate::auth::password::new_token();
    let text = format!(
        r#"# Written by `gateway demo` on every start; edit a copy for `gateway run`.
[gateway]
domain = "localhost"
key_file = "gateway.key"

[[listen]]
address = "127.0.0.1:{https}"
tls = true

[tls]
certificates = [{{ cert = "cert.pem", key = "cert.key" }}]

[http]
# No HSTS on localhost: a browser would keep it for a year, for every port.
hsts_max_age = "off"

[link]
address = "127.0.0.1:{link}"

[metrics]
address = "127.0.0.1:{metrics}"

[[device]]
id = "{DEVICE_ID}"
name = "Demo controller (simulated)"
public_key = "{public}"

# The password is printed at start and changes on every start.
[[user]]
name = "{USER}"
password_hash = "{hash}"
devices = ["*"]

[[token]]
name = "demo-script"
sha256 = "{digest}"
devices = ["{DEVICE_ID}"]
"#,
        https = ports.https,
        link = ports.link,
        metrics = ports.metrics,
        public = device.public_key(),
        hash = crate::auth::password::hash(&password),
        digest = crate::auth::password::token_digest(&token),
    );
    fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    Ok(DemoFiles {
        dir: dir.to_path_buf(),
        config,
        ca,
        device_key,
        password,
        token,
    })
}

/// Loads the demo configuration the way `gateway run` would.
pub fn load(files: &DemoFiles) -> anyhow::Result<Config> {
    config::load(&files.config).map_err(|e| anyhow::anyhow!("demo configuration: {e}"))
}

/// Runs the simulated device against `link` until the task is dropped.
pub async fn run_device(link: SocketAddr, device: SecretKey, gateway: PublicKey) {
    let mut platform = TokioPlatform::new(link);
    let mut app = SimApp::new(
        SimBoard::new(u64::from_le_bytes(
            gateway.as_bytes()[..8].try_into().unwrap_or([0; 8]),
        )),
        DEVICE_ID,
        concat!("demo-", env!("CARGO_PKG_VERSION")),
        Vec::new(),
        None,
    );
    let identity = Identity {
        key: device,
        gateway,
    };
    let mut memory = Box::new(DeviceLinkMemory::new());
    device_fw::link::run(
        &mut platform,
        &mut app,
        &identity,
        &LinkConfig::DEFAULT,
        &mut memory,
    )
    .await;
}

/// The device link address a local device dials (the listener may be on
/// an unspecified address).
pub fn dial_address(bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port()))
    } else {
        bound
    }
}

/// What the demo prints once it serves.
pub fn banner(
    files: &DemoFiles,
    https: SocketAddr,
    link: SocketAddr,
    metrics: Option<SocketAddr>,
    gateway: &PublicKey,
) -> String {
    let port = https.port();
    let metrics = metrics.map_or_else(
        || "not served".to_string(),
        |m| format!("http://{m}/metrics (also /healthz, /readyz)"),
    );
    format!(
        "\
gateway demo is running.

  Open:        https://localhost:{port}/d/{DEVICE_ID}/    (path-based routing)
               https://{DEVICE_ID}.localhost:{port}/      (host-based routing)
  Login:       user {USER}, password {password}   (new on every start)
  Trust:       the local CA {ca}
               browsers: import it as an authority, or accept the warning once
  Scripts:     curl --cacert {ca} -H 'Authorization: Bearer {token}' \\
                    https://localhost:{port}/d/{DEVICE_ID}/api/status
  Metrics:     {metrics}
  Device link: {link} (gateway key {gateway}); more devices:
               device-sim --gateway {link} --gateway-key {gateway} ...
  Files:       {dir} (configuration: {config})

Stop with Ctrl-C.
",
        ca = files.ca.display(),
        password = files.password,
        token = files.token,
        dir = files.dir.display(),
        config = files.config.display(),
    )
}
