//! The runtime form of everything but the devices: checked values in the
//! types the gateway uses (`SocketAddr`, `Duration`, keys, loaded
//! certificates), built once from [`super::file`]. Defaults are the
//! `Default` impls here, and the same values are documented on the file's
//! fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::{PublicKey, SecretKey};
use serde_spanned::Spanned;

use super::Secret;
use super::error::{ErrorKind, Location};
use super::file;
use super::value::Ctx;
use crate::edge::listener::{DEFAULT_MSS, MAX_MSS, MIN_MSS, SocketOptions};
use crate::edge::tls::CertPair;
use crate::keys::{self, KeyError};

/// `[gateway]`: identity and files.
#[derive(Clone, Debug)]
pub struct Gateway {
    /// The public DNS name, lower case.
    pub domain: String,
    /// The HTTPS port browsers use when it is not the TLS listeners' own. Default: none.
    pub public_port: Option<u16>,
    /// Base of relative paths. Default: the configuration file's directory.
    pub data_dir: PathBuf,
    /// The key file, resolved. Default `<data_dir>/gateway.key`.
    pub key_file: PathBuf,
    /// The gateway's static private key.
    pub key: Secret<SecretKey>,
    /// Its public key, which devices pin.
    pub public_key: PublicKey,
    /// The devices file, resolved, if any. Default: none.
    pub devices_file: Option<PathBuf>,
    /// Graceful shutdown deadline. Default 10 s.
    pub drain_timeout: Duration,
    /// Runtime threads; 0 (the default) is one per CPU available.
    pub threads: usize,
    /// `[gateway.limits]`: connection caps, overload, slow-client timers.
    pub limits: Limits,
}

/// `[gateway.limits]`: connection caps, overload thresholds and the
/// timers against slow browsers (see `edge::admission` and `edge::guard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Browser connections at once, all listeners. Default 10000.
    pub max_connections: usize,
    /// Browser connections at once per IPv4 address or IPv6 /64. Default 256.
    pub max_connections_per_address: usize,
    /// RSS that starts overload protection. Default 1 GiB.
    pub overload_memory: u64,
    /// Open descriptors that start overload protection. Default 16000.
    pub overload_open_files: u64,
    /// No write progress toward a browser for this long closes it. Default 30 s.
    pub send_timeout: Duration,
    /// Slowest HTTP/1.1 request body, bytes per second; 0 is off. Default 256.
    pub min_body_rate: u64,
    /// Slowest reader of responses while writes block, bytes per second;
    /// 0 is off. Default 1024.
    pub min_send_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_address: 256,
            overload_memory: 1 << 30,
            overload_open_files: 16_000,
            send_timeout: Duration::from_secs(30),
            min_body_rate: 256,
            min_send_rate: 1024,
        }
    }
}

pub(crate) fn limits(ctx: &mut Ctx<'_>, raw: &file::LimitsSection) -> Limits {
    let d = Limits::default();
    Limits {
        max_connections: ctx.int(
            "max_connections",
            raw.max_connections.as_ref(),
            d.max_connections as u64,
            1..=1_000_000,
        ) as usize,
        max_connections_per_address: ctx.int(
            "max_connections_per_address",
            raw.max_connections_per_address.as_ref(),
            d.max_connections_per_address as u64,
            1..=1_000_000,
        ) as usize,
        overload_memory: ctx.size(
            "overload_memory",
            raw.overload_memory.as_ref(),
            d.overload_memory,
            16 << 20..=1 << 40,
        ),
        overload_open_files: ctx.int(
            "overload_open_files",
            raw.overload_open_files.as_ref(),
            d.overload_open_files,
            64..=10_000_000,
        ),
        send_timeout: ctx.duration(raw.send_timeout.as_ref(), d.send_timeout),
        min_body_rate: ctx.size(
            "min_body_rate",
            raw.min_body_rate.as_ref(),
            d.min_body_rate,
            0..=1 << 30,
        ),
        min_send_rate: ctx.size(
            "min_send_rate",
            raw.min_send_rate.as_ref(),
            d.min_send_rate,
            0..=1 << 30,
        ),
    }
}

/// Default `[gateway] drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `[[listen]]`: a browser-facing listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Where it binds.
    pub address: SocketAddr,
    /// HTTPS (true, the default) or plain HTTP.
    pub tls: bool,
    /// MSS clamp (default 1360), TCP keepalive (60 s), backlog (4096).
    pub socket: SocketOptions,
}

impl Listener {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }
}

/// `[tls]`.
#[derive(Clone, Debug)]
pub struct Tls {
    /// Loaded certificates, in file order. Default: none.
    pub certificates: Vec<Certificate>,
    /// Handshake deadline. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            certificates: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Tls {
    /// The certificate pairs, for `edge::tls::CertResolver::new`.
    pub fn pairs(&self) -> Vec<CertPair> {
        self.certificates.iter().map(|c| c.pair.clone()).collect()
    }
}

/// A certificate, loaded and checked against its key.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// The chain file, resolved (for reloads).
    pub cert: PathBuf,
    /// The key file, resolved.
    pub key: PathBuf,
    /// As loaded.
    pub pair: CertPair,
}

/// `[http]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http {
    /// Request head deadline. Default 10 s.
    pub header_timeout: Duration,
    /// Idle connection deadline. Default 60 s.
    pub idle_timeout: Duration,
    /// Time a device has to answer before a 504. Default 30 s.
    pub response_timeout: Duration,
    /// Largest request head in bytes (8 KiB to 1 MiB: hyper needs 8 KiB). Default 16 KiB.
    pub max_header_bytes: usize,
    /// Most header fields. Default 100.
    pub max_headers: usize,
    /// HTTP/2 concurrent streams per connection. Default 100.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before their response, beyond
    /// `h2_max_concurrent_streams` and the responses it let finish (each
    /// pays one back); past that, GOAWAY (rapid reset). Default 20.
    pub h2_max_pending_resets: usize,
    /// HTTP/2 streams the gateway may reset for a client's errors before
    /// it ends the connection. Default 1024.
    pub h2_max_local_error_resets: usize,
    /// `Strict-Transport-Security` max-age sent on every response over
    /// TLS (browsers then never try plain HTTP for the name); `None`
    /// (`"off"`) sends none. Default 365 days.
    pub hsts_max_age: Option<Duration>,
    /// WebSockets as HTTP/2 streams (RFC 8441: the gateway announces
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL`). Off, browsers open each
    /// WebSocket on an HTTP/1.1 connection of its own. Default on.
    pub websocket_over_http2: bool,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            h2_max_concurrent_streams: 100,
            h2_max_pending_resets: 20,
            h2_max_local_error_resets: 1024,
            hsts_max_age: Some(Duration::from_secs(365 * 24 * 3600)),
            websocket_over_http2: true,
        }
    }
}

/// `[http3]`: HTTP/3 over QUIC (see `edge::quic`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http3 {
    /// Served on every TLS listener's port over UDP, and advertised. Default true.
    pub enabled: bool,
    /// QUIC idle timeout. Default 30 s.
    pub idle_timeout: Duration,
    /// Concurrent requests (bidirectional streams) per connection. Default 100.
    pub max_concurrent_streams: u32,
    /// Receive window of one request stream, bytes. Default 1 MiB.
    pub stream_window: u32,
    /// Receive window of a connection, bytes. Default 4 MiB.
    pub conn_window: u32,
    /// Unacknowledged bytes sent per connection. Default 4 MiB.
    pub send_window: u32,
    /// Upper bound of path MTU discovery and largest UDP payload
    /// accepted; every connection starts at [`Http3::INITIAL_MTU`]. Default 1452.
    pub max_mtu: u16,
}

impl Http3 {
    /// The datagram size every connection starts with and never goes
    /// below: QUIC's minimum, which any path that carries QUIC carries.
    pub const INITIAL_MTU: u16 = 1200;
}

impl Default for Http3 {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            stream_window: 1 << 20,
            conn_window: 4 << 20,
            send_window: 4 << 20,
            max_mtu: 1452,
        }
    }
}

pub(crate) fn http3(ctx: &mut Ctx<'_>, raw: &file::Http3Section) -> Http3 {
    let d = Http3::default();
    let idle_timeout = ctx.duration(raw.idle_timeout.as_ref(), d.idle_timeout);
    if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&idle_timeout)
        && let Some(v) = &raw.idle_timeout
    {
        ctx.invalid(v, "idle_timeout", v.get_ref(), "must be 1s to 10m");
    }
    let stream_window = ctx.size(
        "stream_window",
        raw.stream_window.as_ref(),
        u64::from(d.stream_window),
        16 << 10..=64 << 20,
    );
    let conn_window = ctx.size(
        "conn_window",
        raw.conn_window.as_ref(),
        u64::from(d.conn_window),
        16 << 10..=256 << 20,
    );
    if conn_window < stream_window {
        let at = raw.conn_window.as_ref().or(raw.stream_window.as_ref());
        ctx.error(
            at.map(Spanned::span),
            ErrorKind::Conflict(format!(
                "conn_window ({conn_window} bytes) is smaller than stream_window ({stream_window} bytes)"
            )),
        );
    }
    Http3 {
        enabled: raw.enabled.unwrap_or(d.enabled),
        idle_timeout,
        max_concurrent_streams: ctx.int(
            "max_concurrent_streams",
            raw.max_concurrent_streams.as_ref(),
            u64::from(d.max_concurrent_streams),
            1..=10_000,
        ) as u32,
        stream_window: stream_window as u32,
        conn_window: conn_window as u32,
        send_window: ctx.size(
            "send_window",
            raw.send_window.as_ref(),
            u64::from(d.send_window),
            64 << 10..=256 << 20,
        ) as u32,
        max_mtu: ctx.int(
            "max_mtu",
            raw.max_mtu.as_ref(),
            u64::from(d.max_mtu),
            u64::from(Http3::INITIAL_MTU)..=65527,
        ) as u16,
    }
}

/// `[websocket]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebSocket {
    /// Largest message. Default 1 MiB.
    pub max_message: usize,
    /// Largest frame. Default 64 KiB.
    pub max_frame: usize,
    /// Bytes queued toward one browser. Default 128 KiB.
    pub write_buffer: usize,
    /// Ping interval toward browsers. Default 20 s.
    pub ping_interval: Duration,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            max_message: 1 << 20,
            max_frame: 64 << 10,
            write_buffer: 128 << 10,
            ping_interval: Duration::from_secs(20),
        }
    }
}

/// `[link]`: the device listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Where it binds. Default `[::]:7000`.
    pub address: SocketAddr,
    /// MSS clamp (default 1360) and TCP options.
    pub socket: SocketOptions,
    /// Session limits and timers. Default `proto::Config::GATEWAY`.
    pub session: proto::Config,
    /// Unauthenticated handshakes in progress at once. Default 4096.
    pub max_handshakes: usize,
    /// Of those, from one source address (IPv6: one /64). Default 1024.
    pub max_handshakes_per_address: usize,
    /// Connections that may wait for a place when a cap is full. Default 8192.
    pub max_handshakes_waiting: usize,
}

/// Default `[link] address`.
pub const DEFAULT_LINK_ADDRESS: &str = "[::]:7000";
/// Default `[link] max_handshakes`: at most this many connections hold
/// session buffers before authenticating (about 35 KB each, so about
/// 140 MiB at the cap). A gateway restart brings every device back at
/// once; a handshake takes milliseconds, so this many at a time lets
/// thousands through per second, while a refused device waits for its
/// backoff (5,000 devices were all back in 5.1 s with these defaults,
/// 18.7 s with 1,024 and 256; BENCHMARKS.md).
pub const DEFAULT_MAX_HANDSHAKES: usize = 4096;
/// Default `[link] max_handshakes_per_address`: generous for a fleet
/// behind one NAT reconnecting at once.
pub const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS: usize = 1024;
/// Default `[link] max_handshakes_waiting`: a connection that finds a cap
/// full waits (at most a quarter of `handshake_timeout`) for a place instead of
/// being reset at once, so a reconnect storm from one address is served in
/// turn instead of sending most devices into their backoff. Each waiting
/// connection holds a descriptor and a small task, nothing else.
pub const DEFAULT_MAX_HANDSHAKES_WAITING: usize = 8192;

/// `[metrics]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Where it binds. Default `127.0.0.1:9100`.
    pub address: SocketAddr,
    /// Per-device series cap. Default 1000.
    pub max_device_series: usize,
}

/// Default `[metrics] address`.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9100";
/// Default `[metrics] max_device_series`.
pub const DEFAULT_MAX_DEVICE_SERIES: usize = 1000;

const MSS_RANGE: std::ops::RangeInclusive<u64> = MIN_MSS as u64..=MAX_MSS as u64;

/// A listening address with where it was written, for conflict checks.
pub(crate) struct Bound {
    pub(crate) what: String,
    pub(crate) address: SocketAddr,
    pub(crate) at: Location,
}

pub(crate) fn gateway(
    ctx: &mut Ctx<'_>,
    raw: &file::GatewaySection,
    config_dir: &Path,
) -> Option<Gateway> {
    let mut domain = ctx.host_name("domain", &raw.domain);
    if domain
        .as_deref()
        .is_some_and(|d| d.starts_with('[') || d.parse::<std::net::IpAddr>().is_ok())
    {
        let reason = "must be a DNS name: devices are reached at <device>.<domain>";
        ctx.invalid(&raw.domain, "domain", raw.domain.get_ref(), reason);
        domain = None;
    }
    let public_port = raw
        .public_port
        .as_ref()
        .map(|p| ctx.int("public_port", Some(p), 443, 1..=65535) as u16);
    let data_dir = data_dir(raw, config_dir);
    let key_file = data_dir.join(raw.key_file.as_ref().map_or("gateway.key", |k| k.get_ref()));
    let devices_file = raw
        .devices_file
        .as_ref()
        .map(|f| data_dir.join(f.get_ref()));
    let drain_timeout = ctx.duration(raw.drain_timeout.as_ref(), DEFAULT_DRAIN_TIMEOUT);
    let threads = ctx.int("threads", raw.threads.as_ref(), 0, 0..=1024) as usize;
    let limits = limits(ctx, &raw.limits);
    let key = match keys::read_key_file(&key_file) {
        Ok(k) => Some(k),
        Err(e) => {
            let reason = match e {
                KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    format!(
                        "not found (make one with `gateway keygen --out {}`)",
                        key_file.display()
                    )
                }
                KeyError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            let kind = ErrorKind::KeyFile {
                path: key_file.clone(),
                reason,
            };
            ctx.error(raw.key_file.as_ref().map(Spanned::span), kind);
            None
        }
    };
    let key = key?;
    Some(Gateway {
        domain: domain?,
        public_port,
        data_dir,
        key_file,
        public_key: key.expose().public_key(),
        key,
        devices_file,
        drain_timeout,
        threads,
        limits,
    })
}

/// `data_dir`, resolved against the configuration file's directory
/// (which it defaults to).
pub(crate) fn data_dir(raw: &file::GatewaySection, config_dir: &Path) -> PathBuf {
    raw.data_dir.as_ref().map_or_else(
        || config_dir.to_path_buf(),
        |d| config_dir.join(d.get_ref()),
    )
}

pub(crate) fn listener(
    ctx: &mut Ctx<'_>,
    raw: &file::ListenSection,
    bound: &mut Vec<Bound>,
) -> Option<Listener> {
    let defaults = SocketOptions::default();
    let socket = SocketOptions {
        mss: ctx.int("mss", raw.mss.as_ref(), u64::from(DEFAULT_MSS), MSS_RANGE) as u32,
        keepalive: ctx.duration(raw.tcp_keepalive.as_ref(), defaults.keepalive),
        backlog: ctx.int("backlog", raw.backlog.as_ref(), 4096, 1..=65535) as i32,
    };
    let address = ctx.address(&raw.address)?;
    let tls = raw.tls.unwrap_or(true);
    bound.push(Bound {
        what: format!("listener {address}"),
        address,
        at: ctx.locate(&raw.address),
    });
    Some(Listener {
        address,
        tls,
        socket,
    })
}

pub(crate) fn tls(ctx: &mut Ctx<'_>, raw: &file::TlsSection, data_dir: &Path) -> Tls {
    let mut certificates = Vec::new();
    for c in &raw.certificates {
        let cert = data_dir.join(c.cert.get_ref());
        let key = data_dir.join(c.key.get_ref());
        match CertPair::load(&cert, &key) {
            Ok(pair) => certificates.push(Certificate { cert, key, pair }),
            Err(e) => ctx.error_at(&c.cert, ErrorKind::Certificate(e.to_string())),
        }
    }
    Tls {
        certificates,
        handshake_timeout: ctx.duration(
            raw.handshake_timeout.as_ref(),
            Tls::default().handshake_timeout,
        ),
    }
}

pub(crate) fn http(ctx: &mut Ctx<'_>, raw: &file::HttpSection) -> Http {
    let d = Http::default();
    Http {
        header_timeout: ctx.duration(raw.header_timeout.as_ref(), d.header_timeout),
        idle_timeout: ctx.duration(raw.idle_timeout.as_ref(), d.idle_timeout),
        response_timeout: ctx.duration(raw.response_timeout.as_ref(), d.response_timeout),
        max_header_bytes: ctx.size(
            "max_header_bytes",
            raw.max_header_bytes.as_ref(),
            d.max_header_bytes as u64,
            8 << 10..=1 << 20,
        ) as usize,
        max_headers: ctx.int(
            "max_headers",
            raw.max_headers.as_ref(),
            d.max_headers as u64,
            1..=1024,
        ) as usize,
        h2_max_concurrent_streams: ctx.int(
            "h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams.as_ref(),
            u64::from(d.h2_max_concurrent_streams),
            1..=10_000,
        ) as u32,
        h2_max_pending_resets: ctx.int(
            "h2_max_pending_resets",
            raw.h2_max_pending_resets.as_ref(),
            d.h2_max_pending_resets as u64,
            1..=10_000,
        ) as usize,
        h2_max_local_error_resets: ctx.int(
            "h2_max_local_error_resets",
            raw.h2_max_local_error_resets.as_ref(),
            d.h2_max_local_error_resets as u64,
            1..=100_000,
        ) as usize,
        hsts_max_age: ctx.duration_or_off(raw.hsts_max_age.as_ref(), d.hsts_max_age),
        websocket_over_http2: raw.websocket_over_http2.unwrap_or(d.websocket_over_http2),
    }
}

pub(crate) fn websocket(ctx: &mut Ctx<'_>, raw: &file::WebSocketSection) -> WebSocket {
    let d = WebSocket::default();
    let max_message = ctx.size(
        "max_message",
        raw.max_message.as_ref(),
        d.max_message as u64,
        1 << 10..=64 << 20,
    );
    let max_frame = ctx.size(
        "max_frame",
        raw.max_frame.as_ref(),
        d.max_frame as u64,
        1 << 10..=64 << 20,
    );
    if max_frame > max_message {
        let at = raw.max_frame.as_ref().or(raw.max_message.as_ref());
        ctx.error(
            at.map(Spanned::span),
            ErrorKind::Conflict(format!(
                "max_frame ({max_frame} bytes) is larger than max_message ({max_message} bytes)"
            )),
        );
    }
    WebSocket {
        max_message: max_message as usize,
        max_frame: max_frame as usize,
        write_buffer: ctx.size(
            "write_buffer",
            raw.write_buffer.as_ref(),
            d.write_buffer as u64,
            4 << 10..=64 << 20,
        ) as usize,
        ping_interval: ctx.duration(raw.ping_interval.as_ref(), d.ping_interval),
    }
}

pub(crate) fn link(
    ctx: &mut Ctx<'_>,
    raw: &file::LinkSection,
    bound: &mut Vec<Bound>,
) -> Option<Link> {
    // The in-process defaults: proto's gateway defaults with the cipher
    // policy (AES-256-GCM records where this machine has AES instructions)
    // and larger windows (1 MiB per stream, 4 MiB per session).
    let d = crate::link::LinkSettings::default().session;
    let window = 1..=u64::from(proto::wire::MAX_WINDOW);
    let params = proto::wire::Params {
        max_record: ctx.size(
            "max_record",
            raw.max_record.as_ref(),
            u64::from(d.params.max_record),
            u64::from(proto::wire::MIN_RECORD)..=u64::from(u16::MAX),
        ) as u16,
        max_streams: ctx.int(
            "max_streams",
            raw.max_streams.as_ref(),
            u64::from(d.params.max_streams),
            0..=u64::from(u16::MAX),
        ) as u16,
        stream_window: ctx.size(
            "stream_window",
            raw.stream_window.as_ref(),
            u64::from(d.params.stream_window),
            window.clone(),
        ) as u32,
        conn_window: ctx.size(
            "conn_window",
            raw.conn_window.as_ref(),
            u64::from(d.params.conn_window),
            window,
        ) as u32,
    };
    // proto takes any pair, but a stream could never use credit beyond the
    // session's: a stream window above the session window is a mistake.
    if params.conn_window < params.stream_window {
        let at = raw.conn_window.as_ref().or(raw.stream_window.as_ref());
        ctx.error(
            at.map(Spanned::span),
            ErrorKind::Conflict(format!(
                "conn_window ({} bytes) is smaller than stream_window ({} bytes): no stream could use its whole window",
                params.conn_window, params.stream_window
            )),
        );
    }
    let keepalive = ctx.duration(raw.keepalive.as_ref(), d.keepalive);
    let idle_timeout = ctx.duration(raw.idle_timeout.as_ref(), d.idle_timeout);
    if keepalive >= idle_timeout {
        let at = raw.keepalive.as_ref().or(raw.idle_timeout.as_ref());
        ctx.error(
            at.map(Spanned::span),
            ErrorKind::Conflict(format!(
                "keepalive ({}) must be shorter than idle_timeout ({}), or sessions end between pings",
                humantime::format_duration(keepalive),
                humantime::format_duration(idle_timeout)
            )),
        );
    }
    let session = proto::Config {
        params,
        keepalive,
        idle_timeout,
        handshake_timeout: ctx.duration(raw.handshake_timeout.as_ref(), d.handshake_timeout),
        stall_timeout: ctx.duration_or_off(raw.stall_timeout.as_ref(), d.stall_timeout),
        // The device's offer decides: nothing to configure.
        ciphers: d.ciphers,
    };
    let socket = SocketOptions {
        mss: ctx.int("mss", raw.mss.as_ref(), u64::from(DEFAULT_MSS), MSS_RANGE) as u32,
        ..SocketOptions::default()
    };
    let address = ctx.address_or(raw.address.as_ref(), DEFAULT_LINK_ADDRESS)?;
    bound.push(Bound {
        what: format!("[link] address {address}"),
        address,
        at: ctx.src.locate(raw.address.as_ref().map(Spanned::span)),
    });
    let handshakes = 1..=1_000_000;
    let max_handshakes = ctx.int(
        "max_handshakes",
        raw.max_handshakes.as_ref(),
        DEFAULT_MAX_HANDSHAKES as u64,
        handshakes.clone(),
    ) as usize;
    let max_handshakes_per_address = ctx.int(
        "max_handshakes_per_address",
        raw.max_handshakes_per_address.as_ref(),
        DEFAULT_MAX_HANDSHAKES_PER_ADDRESS as u64,
        handshakes,
    ) as usize;
    let max_handshakes_waiting = ctx.int(
        "max_handshakes_waiting",
        raw.max_handshakes_waiting.as_ref(),
        DEFAULT_MAX_HANDSHAKES_WAITING as u64,
        0..=1_000_000,
    ) as usize;
    Some(Link {
        address,
        socket,
        session,
        max_handshakes,
        max_handshakes_per_address,
        max_handshakes_waiting,
    })
}

pub(crate) fn metrics(
    ctx: &mut Ctx<'_>,
    raw: &file::MetricsSection,
    bound: &mut Vec<Bound>,
) -> Option<Metrics> {
    let max_device_series = ctx.int(
        "max_device_series",
        raw.max_device_series.as_ref(),
        DEFAULT_MAX_DEVICE_SERIES as u64,
        0..=100_000,
    ) as usize;
    let address = ctx.address_or(raw.address.as_ref(), DEFAULT_METRICS_ADDRESS)?;
    bound.push(Bound {
        what: format!("[metrics] address {address}"),
        address,
        at: ctx.src.locate(raw.address.as_ref().map(Spanned::span)),
    });
    Some(Metrics {
        address,
        max_device_series,
    })
}

/// Two listeners that cannot both bind: the same port on the same address,
/// or on a wildcard that covers the other (`[::]` covers IPv4 too: the
/// listeners are dual-stack). Port 0 (chosen by the system) never conflicts.
pub(crate) fn check_conflicts(ctx: &mut Ctx<'_>, bound: &[Bound]) {
    for (i, b) in bound.iter().enumerate() {
        let Some(first) = bound[..i].iter().find(|a| overlaps(a.address, b.address)) else {
            continue;
        };
        ctx.errors.push(super::ConfigError {
            at: b.at.clone(),
            kind: ErrorKind::AddressConflict {
                what: b.what.clone(),
                address: b.address,
                other: first.what.clone(),
                first: first.at.clone(),
            },
        });
    }
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers =
        |w: SocketAddr, x: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || x.is_ipv4());
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_addresses() {
        let o = |a: &str, b: &str| overlaps(a.parse().unwrap(), b.parse().unwrap());
        assert!(o("[::]:443", "0.0.0.0:443"));
        assert!(o("[::]:443", "127.0.0.1:443"));
        assert!(o("0.0.0.0:443", "10.0.0.1:443"));
        assert!(o("10.0.0.1:443", "10.0.0.1:443"));
        assert!(!o("0.0.0.0:443", "[::1]:443"));
        assert!(!o("10.0.0.1:443", "10.0.0.2:443"));
        assert!(!o("[::]:443", "[::]:80"));
        assert!(!o("127.0.0.1:0", "127.0.0.1:0"));
    }
}
