//! WSS clients for the load generator: rustls + tungstenite over a real
//! socket, bounded buffers, and a latency recorder. A WebSocket opens with
//! an HTTP/1.1 upgrade or as an HTTP/2 stream (RFC 8441, as browsers open
//! it over a connection they already hold): [`connect`], by what its TLS
//! settings offer.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// A connected WSS client.
pub type Wss = WebSocketStream<Io>;

/// What a client's WebSocket runs on: its own TLS connection (HTTP/1.1
/// upgrade), or one stream of an HTTP/2 connection whose frames a task of
/// its own reads and writes (RFC 8441).
pub enum Io {
    /// HTTP/1.1: the WebSocket owns the TLS connection.
    Tls(Box<TlsStream<TcpStream>>),
    /// HTTP/2: the extended CONNECT stream.
    H2(TokioIo<Upgraded>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::H2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

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

/// `tls` offering only HTTP/2 in ALPN: [`connect`] then opens WebSockets
/// as HTTP/2 streams.
pub fn with_h2(tls: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::clone(tls);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
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

/// A TCP connection to `addr` from `source` (an address of the
/// 127.0.0.0/8 loopback net, so many clients fit in the port space), then
/// TLS for `host`.
async fn tls_connect(
    tls: &Arc<ClientConfig>,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    host: &str,
) -> Result<TlsStream<TcpStream>, ConnectError> {
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
    TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| err("tls", &e))
}

fn err(what: &str, e: &dyn std::fmt::Display) -> ConnectError {
    ConnectError(format!("{what}: {e}"))
}

/// The client's WebSocket settings: a 4 KiB read buffer, each message
/// written at once.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens `wss://<host><path>` at `addr` from `source`, on a connection of
/// its own: as an HTTP/2 stream (RFC 8441 extended CONNECT) when `tls`
/// offers `h2` ([`with_h2`]; a server that does not agree to it is an
/// error), with an HTTP/1.1 upgrade otherwise.
pub async fn connect(
    tls: &Arc<ClientConfig>,
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    host: &str,
    path: &str,
    origin: &str,
) -> Result<Wss, ConnectError> {
    let io = tls_connect(tls, addr, source, host).await?;
    if offers_h2(tls) {
        return over_h2(io, host, path, origin).await;
    }
    let mut req = format!("wss://{host}{path}")
        .into_client_request()
        .map_err(|e| err("request", &e))?;
    req.headers_mut()
        .insert("origin", origin.parse().map_err(|e| err("origin", &e))?);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, Io::Tls(Box::new(io)), Some(ws_config()))
            .await
            .map_err(|e| err("upgrade", &e))?;
    Ok(ws)
}

/// Whether `tls` offers HTTP/2 ([`with_h2`]).
pub fn offers_h2(tls: &ClientConfig) -> bool {
    tls.alpn_protocols.iter().any(|p| p == b"h2")
}

/// [`connect`]'s HTTP/2 way: a connection driven by a task of its own
/// until the WebSocket ends, and the WebSocket as one of its streams.
async fn over_h2(
    io: TlsStream<TcpStream>,
    host: &str,
    path: &str,
    origin: &str,
) -> Result<Wss, ConnectError> {
    if io.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError("the server did not agree to HTTP/2".into()));
    }
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| err("http/2", &e))?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{host}{path}"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .header("origin", origin)
        .body(Empty::<Bytes>::new())
        .map_err(|e| err("request", &e))?;
    send.ready().await.map_err(|e| err("http/2", &e))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| err("extended CONNECT", &e))?;
    if resp.status() != http::StatusCode::OK {
        return Err(ConnectError(format!(
            "extended CONNECT: status {}",
            resp.status()
        )));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| err("extended CONNECT", &e))?;
    Ok(WebSocketStream::from_raw_socket(
        Io::H2(TokioIo::new(upgraded)),
        Role::Client,
        Some(ws_config()),
    )
    .await)
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
