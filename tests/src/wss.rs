//! WSS clients for the load generator: rustls + tungstenite over a real
//! socket, bounded buffers, and a latency recorder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A connected WSS client.
pub type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// TLS settings trusting `ca_pem`, ALPN http/1.1 (WebSocket upgrade).
/// ring, with the gateway's X25519 on AWS-LC ([`gateway::edge::kx`]): the
/// load generator's side of a handshake costs less, so the handshake
/// workloads leave less of the measured server's time idle.
pub fn tls_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = gateway::edge::kx::groups();
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| unreachable!("ring supports the defaults: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Why a client could not connect.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens `wss://<host><path>` at `addr` from `source` (an address of the
/// 127.0.0.0/8 loopback net, so many clients fit in the port space).
pub async fn connect(
    tls: &Arc<ClientConfig>,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    host: &str,
    path: &str,
    origin: &str,
) -> Result<Wss, ConnectError> {
    let err = |what: &str, e: &dyn std::fmt::Display| ConnectError(format!("{what}: {e}"));
    let tcp = match source {
        Some(ip) => {
            let s = tokio::net::TcpSocket::new_v4().map_err(|e| err("socket", &e))?;
            s.bind(SocketAddr::new(ip, 0))
                .map_err(|e| err("bind", &e))?;
            s.connect(addr).await.map_err(|e| err("connect", &e))?
        }
        None => TcpStream::connect(addr)
            .await
            .map_err(|e| err("connect", &e))?,
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(host.to_string()).map_err(|e| err("name", &e))?;
    let io = TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| err("tls", &e))?;
    let mut req = format!("wss://{host}{path}")
        .into_client_request()
        .map_err(|e| err("request", &e))?;
    req.headers_mut()
        .insert("origin", origin.parse().map_err(|e| err("origin", &e))?);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, io, Some(cfg))
        .await
        .map_err(|e| err("upgrade", &e))?;
    Ok(ws)
}

/// Latencies in microseconds.
#[derive(Default, Debug, Clone)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    /// Records one.
    pub fn record(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Percentile `p` (0..=100) in microseconds, after sorting.
    pub fn percentile(&mut self, p: f64) -> u32 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() - 1) as f64 * p / 100.0).round() as usize;
        self.0[i.min(self.0.len() - 1)]
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process so far (from `/proc/<pid>/stat`).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}
