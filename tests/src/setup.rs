//! A benchmark directory: an ECDSA P-256 CA and leaf for `bench.test` and
//! `*.bench.test`, the gateway's key, a fleet of echo devices and the
//! gateway's configuration, all on loopback addresses.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use device_fw::host::{DeviceSpec, fleet};

/// The domain every benchmark uses.
pub const DOMAIN: &str = "bench.test";
/// Seed of the echo devices' keys.
pub const SEED: &str = "bench";
/// Prefix of the echo devices' ids (`dev-0000`, …).
pub const PREFIX: &str = "dev";
/// The device id that names the direct upstream.
pub const DIRECT_DEVICE: &str = "direct";

/// The record ciphers benchmark devices offer (`--cipher`): `auto`, what
/// this machine runs fast (AES-256-GCM with AES instructions, as a host
/// device would offer), or `chacha20-poly1305`, what a microcontroller
/// offers.
pub fn device_ciphers(arg: &str) -> Result<proto::Ciphers, String> {
    match arg {
        "auto" => Ok(proto::Ciphers::hardware()),
        "chacha20-poly1305" => Ok(proto::Ciphers::NONE),
        other => Err(format!(
            "--cipher {other:?}: expected auto or chacha20-poly1305"
        )),
    }
}

/// Files of one benchmark run, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct BenchDir {
    /// The directory.
    pub dir: PathBuf,
    /// The CA the clients trust, PEM.
    pub ca_pem: String,
    /// The gateway's public key, hex.
    pub gateway_public: String,
    /// The echo devices.
    pub devices: Vec<DeviceSpec>,
}

impl BenchDir {
    /// Creates the directory with the certificates (`chain.pem`, `key.pem`,
    /// `ca.pem`, `combined.pem` for HAProxy) and the gateway's key.
    pub fn create(tag: &str, devices: usize) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let ca = gateway::edge::tls::local_ca(&[DOMAIN.into(), format!("*.{DOMAIN}")])
            .map_err(|e| format!("CA: {e}"))?;
        let w = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        w("chain.pem", &ca.chain_pem)?;
        w("key.pem", &ca.key_pem)?;
        w("ca.pem", &ca.ca_pem)?;
        w("combined.pem", &format!("{}{}", ca.chain_pem, ca.key_pem))?;
        let key = gateway::keys::generate().map_err(|e| format!("key: {e}"))?;
        gateway::keys::write_key_file(&dir.join("gateway.key"), &key, true)
            .map_err(|e| format!("key file: {e}"))?;
        Ok(Self {
            dir,
            ca_pem: ca.ca_pem,
            gateway_public: key.public_key().to_string(),
            devices: fleet(SEED, PREFIX, devices),
        })
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Host names of the echo devices (`dev-0000.bench.test`, …).
    pub fn device_hosts(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| format!("{}.{DOMAIN}", d.id))
            .collect()
    }

    /// Writes `name` as the gateway's configuration: TLS on `https`, the
    /// link on `link`, metrics on `metrics`, the echo devices public (no
    /// login), WebSocket messages and frames up to 2 MiB (the bulk
    /// workload sends 1 MiB messages as single frames), the connection
    /// caps raised to 20,000 (every browser of a benchmark is on loopback,
    /// the idle workload's 9,500 WebSockets from four addresses, and each
    /// WebSocket keeps its connection's place) and, with `direct`, a
    /// public device `direct` served from that address.
    pub fn write_gateway_config(
        &self,
        name: &str,
        https: SocketAddr,
        link: SocketAddr,
        metrics: SocketAddr,
        direct: Option<SocketAddr>,
    ) -> Result<PathBuf, String> {
        let mut c = format!(
            "[gateway]\ndomain = \"{DOMAIN}\"\n\n[[listen]]\naddress = \"{https}\"\n\n\
             [tls]\ncertificates = [{{ cert = \"chain.pem\", key = \"key.pem\" }}]\n\n\
             [websocket]\nping_interval = \"60s\"\nmax_message = \"2MiB\"\nmax_frame = \"2MiB\"\n\n\
             [link]\naddress = \"{link}\"\n\n[metrics]\naddress = \"{metrics}\"\n\n\
             [gateway.limits]\nmax_connections = 20000\nmax_connections_per_address = 20000\n"
        );
        for d in &self.devices {
            let _ = write!(
                c,
                "\n[[device]]\nid = \"{}\"\npublic = true\npublic_key = \"{}\"\n",
                d.id,
                d.key.public_key()
            );
        }
        if let Some(a) = direct {
            let _ = write!(
                c,
                "\n[[device]]\nid = \"{DIRECT_DEVICE}\"\npublic = true\nupstream = {{ direct = {{ address = \"{a}\" }} }}\n"
            );
        }
        let p = self.path(name);
        std::fs::write(&p, c).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
