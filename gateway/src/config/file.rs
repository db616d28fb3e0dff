//! The configuration file as written: serde structs that mirror the TOML,
//! `deny_unknown_fields` everywhere, values kept as written (with their
//! spans) so that [`super::load`] can check them all and report every
//! problem with its line. Each option's default is documented here, where
//! it is defined, and applied during conversion into the runtime types of
//! [`super::settings`] and [`super::device`].
//!
//! Durations are strings in humantime form (`"10s"`, `"1m 30s"`,
//! `"250ms"`). Sizes are a number of bytes or a string with a unit
//! (`"64KiB"`, `"1 MiB"`, `"16384"`; `KiB`/`MiB`/`GiB` are powers of 1024,
//! `KB`/`MB`/`GB` powers of 1000).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_spanned::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[gateway]`: identity and files. Required.
    pub gateway: GatewaySection,
    /// `[[listen]]`: browser-facing listeners. At least one is required.
    #[serde(default)]
    pub listen: Vec<ListenSection>,
    /// `[tls]`: certificates for the TLS listeners.
    #[serde(default)]
    pub tls: TlsSection,
    /// `[http]`: HTTP limits and timeouts.
    #[serde(default)]
    pub http: HttpSection,
    /// `[http3]`: HTTP/3 over QUIC beside the TLS listeners.
    #[serde(default)]
    pub http3: Http3Section,
    /// `[websocket]`: WebSocket limits.
    #[serde(default)]
    pub websocket: WebSocketSection,
    /// `[link]`: the listener devices dial.
    #[serde(default)]
    pub link: LinkSection,
    /// `[metrics]`: Prometheus and health endpoints.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[[device]]`: devices (more may come from `gateway.devices_file`).
    #[serde(default)]
    pub device: Vec<DeviceSection>,
    /// `[auth]`: sessions, login throttling, the users file, client certificates.
    #[serde(default)]
    pub auth: AuthSection,
    /// `[[user]]`: people who may log in (more may come from `auth.users_file`).
    #[serde(default)]
    pub user: Vec<UserSection>,
    /// `[[group]]`: named sets of devices.
    #[serde(default)]
    pub group: Vec<GroupSection>,
    /// `[[token]]`: API bearer tokens for scripts.
    #[serde(default)]
    pub token: Vec<TokenSection>,
    /// `[acme]`: certificates obtained and renewed automatically. Default:
    /// none (certificates come from `[tls]` only).
    pub acme: Option<AcmeSection>,
}

/// `[acme]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// The CA's ACME directory URL (`https://...`). Required.
    pub directory: Spanned<String>,
    /// Contact URLs for the account (`mailto:ops@example.com`). Default: none.
    #[serde(default)]
    pub contact: Vec<Spanned<String>>,
    /// Names on the certificate. Default: the domain and `<id>.<domain>`
    /// for every configured device (wildcards need DNS-01, not offered).
    pub names: Option<Vec<Spanned<String>>>,
    /// Renew this long before expiry. Default `"30d"`.
    pub renew_before: Option<Spanned<String>>,
    /// PEM file of a root to trust for the ACME server's own TLS (a
    /// private CA, a test server), relative to `data_dir`. Default: the
    /// system's web roots.
    pub ca_root: Option<Spanned<String>>,
    /// How the CA checks the names: `"http-01"` (port 80 must reach a
    /// plain listener) or `"tls-alpn-01"` (port 443, the TLS listener
    /// itself). Default `"http-01"`.
    pub challenge: Option<Spanned<String>>,
}

/// A users file (`auth.users_file`): `[[user]]`, `[[group]]` and
/// `[[token]]` entries, re-read on every reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Users.
    #[serde(default)]
    pub user: Vec<UserSection>,
    /// Groups.
    #[serde(default)]
    pub group: Vec<GroupSection>,
    /// Tokens.
    #[serde(default)]
    pub token: Vec<TokenSection>,
}

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// A file of `[[user]]`, `[[group]]` and `[[token]]` entries, relative
    /// to `data_dir`. Default: none.
    pub users_file: Option<Spanned<String>>,
    /// A session ends after this long without a request. Default `"30m"`.
    pub session_idle: Option<Spanned<String>>,
    /// A session ends this long after login, whatever happens. Default `"12h"`.
    pub session_max: Option<Spanned<String>>,
    /// Failed logins tolerated per source address and per user name within
    /// `login_window` before further attempts get 429. Default 5.
    pub login_attempts: Option<Spanned<i64>>,
    /// The window of `login_attempts`. Default `"15m"`.
    pub login_window: Option<Spanned<String>>,
    /// PEM file of the CA that signs client certificates (optional mTLS);
    /// a certificate whose common name is a user's `client_cert_cn` logs
    /// that user in. Default: none (no client certificates requested).
    pub client_ca: Option<Spanned<String>>,
}

/// `[[user]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    /// Login name: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`, `@`. Required.
    pub name: Spanned<String>,
    /// argon2id PHC string from `gateway hash-password`. Default: none
    /// (the user can only log in with a client certificate).
    pub password_hash: Option<Spanned<String>>,
    /// Devices the user may open: device ids, `"group:<name>"`, or `"*"`
    /// for all. Default: none.
    #[serde(default)]
    pub devices: Vec<Spanned<String>>,
    /// Common name of this user's client certificate. Default: none.
    pub client_cert_cn: Option<Spanned<String>>,
}

/// `[[group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Name, referred to as `"group:<name>"`. Required.
    pub name: Spanned<String>,
    /// Device ids. Required.
    pub devices: Vec<Spanned<String>>,
}

/// `[[token]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// A name for logs and revocation. Required.
    pub name: Spanned<String>,
    /// SHA-256 of the token, 64 hex digits (`gateway token` prints both). Required.
    pub sha256: Spanned<String>,
    /// Devices the token may open, as for users. Required.
    pub devices: Vec<Spanned<String>>,
}

/// A devices file (`gateway.devices_file`): `[[device]]` entries only, the
/// format `device-sim --write-registry` writes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesFile {
    /// The devices.
    #[serde(default)]
    pub device: Vec<DeviceSection>,
}

/// `[gateway]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The public DNS name. Devices are reached at `https://<device>.<domain>/`
    /// (recommended: a device UI's absolute paths keep working) and at
    /// `https://<domain>/d/<device>/`. Required.
    pub domain: Spanned<String>,
    /// The port browsers use for HTTPS, when something in front maps ports
    /// (a container, a load balancer), 1 to 65535. Default: each TLS
    /// listener's own port. Used for the default allowed origins.
    pub public_port: Option<Spanned<i64>>,
    /// Base for the relative paths in this file (key, devices file,
    /// certificates). A relative `data_dir` is itself relative to this
    /// file's directory. Default: this file's directory.
    pub data_dir: Option<Spanned<String>>,
    /// The gateway's X25519 private key: 64 hex digits (`gateway keygen
    /// --out FILE` makes one). Default `"gateway.key"`.
    pub key_file: Option<Spanned<String>>,
    /// A file of more `[[device]]` entries (see [`DevicesFile`]). Default: none.
    pub devices_file: Option<Spanned<String>>,
    /// How long a graceful shutdown (SIGTERM) waits for in-flight requests
    /// and device sessions before closing them. Default `"10s"`.
    pub drain_timeout: Option<Spanned<String>>,
    /// Threads that run connections and device sessions, 0 to 1024; 0 is
    /// one per CPU the gateway may use (its CPU affinity, as `taskset`
    /// sets it, and its cgroup CPU quota, as a container's limit sets it). With one (also the default on a one-CPU
    /// machine) everything runs on tokio's current-thread scheduler, which
    /// hands no wake-ups between threads. Takes effect on restart.
    /// Default 0.
    pub threads: Option<Spanned<i64>>,
    /// `[gateway.limits]`: connection caps, overload protection and the
    /// browser timeouts that guard against slow clients.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// `[gateway.limits]`: what hostile or simply too many clients may hold.
/// The defaults suit a small VPS with 20,000 file descriptors, where one
/// browser connection or device session costs one descriptor.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Browser connections open at once, all listeners together, 1 to
    /// 1000000; more are closed right after `accept`, before TLS.
    /// Default 10000 (half the descriptors, the rest for devices).
    pub max_connections: Option<Spanned<i64>>,
    /// Browser connections open at once from one source: an IPv4 address
    /// or an IPv6 /64, 1 to 1000000. Default 256 (an office behind one
    /// NAT address with a few dozen browsers).
    pub max_connections_per_address: Option<Spanned<i64>>,
    /// Resident memory (RSS) above which new browser connections are
    /// refused until it falls below 90 % of this again, 16 MiB to 1 TiB.
    /// Device sessions and open connections are kept. Default 1 GiB.
    pub overload_memory: Option<Spanned<Size>>,
    /// Open file descriptors above which new browser connections are
    /// refused until they fall below 90 % of this again, 64 to 10000000.
    /// Default 16000 (80 % of a 20,000 descriptor limit: devices can still
    /// connect while browsers are turned away).
    pub overload_open_files: Option<Spanned<i64>>,
    /// A write toward a browser that makes no progress for this long ends
    /// the connection (slow readers). Default `"30s"`.
    pub send_timeout: Option<Spanned<String>>,
    /// Slowest HTTP/1.1 request body accepted, bytes per second averaged
    /// from the request head on, checked once the request is older than
    /// `[http] header_timeout` and the client is still sending; 0 turns
    /// the check off, at most 1 GiB. Default 256 (slow-body attacks send a
    /// few bytes every few seconds; a phone on GPRS sends 5,000).
    pub min_body_rate: Option<Spanned<Size>>,
    /// Slowest reader of responses, bytes per second: while the gateway's
    /// writes find the socket full, the bytes sent, averaged over that
    /// time, must keep up with this once it lasts `send_timeout`; 0 turns
    /// the check off, at most 1 GiB. Default 1 KiB (slow-read attacks
    /// drain a TLS record every few seconds, holding a device stream for
    /// minutes).
    pub min_send_rate: Option<Spanned<Size>>,
}

/// `[[listen]]`: one browser-facing listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// `IP:PORT`, e.g. `"[::]:443"` (IPv6 and IPv4) or `"0.0.0.0:443"`. Required.
    pub address: Spanned<String>,
    /// Serve HTTPS (true) or plain HTTP (false). Default `true`.
    pub tls: Option<bool>,
    /// The MSS clamp (`TCP_MAXSEG`), 536 to 8960. Default 1360: segments
    /// fit WireGuard over IPv6 (MTU 1420), PPPoE and most tunnels even when
    /// ICMP "fragmentation needed" is filtered (seed 000).
    pub mss: Option<Spanned<i64>>,
    /// Idle time before TCP keepalive probes. Default `"60s"`.
    pub tcp_keepalive: Option<Spanned<String>>,
    /// Pending-connection backlog, 1 to 65535. Default 4096.
    pub backlog: Option<Spanned<i64>>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chains and keys (PEM). The one whose names match the
    /// client's SNI is used; the first one otherwise. Required when a
    /// listener has `tls = true`. Default: none.
    #[serde(default)]
    pub certificates: Vec<CertificateSection>,
    /// A TLS handshake not finished after this is dropped and counted as
    /// "TCP up, TLS stalled". Default `"10s"`.
    pub handshake_timeout: Option<Spanned<String>>,
}

/// One certificate: `{ cert = "fullchain.pem", key = "privkey.pem" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// The chain, leaf first (PEM). Required.
    pub cert: Spanned<String>,
    /// Its private key (PEM, PKCS#8, PKCS#1 or SEC1). Required.
    pub key: Spanned<String>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// A request head must arrive within this. Default `"10s"`.
    pub header_timeout: Option<Spanned<String>>,
    /// A connection with no request in flight is closed after this. Default `"60s"`.
    pub idle_timeout: Option<Spanned<String>>,
    /// A device that has not answered within this gets a 504. Default `"30s"`.
    pub response_timeout: Option<Spanned<String>>,
    /// Largest request head, 8 KiB to 1 MiB (larger: 431). Default 16 KiB.
    pub max_header_bytes: Option<Spanned<Size>>,
    /// Most header fields in a request, 1 to 1024 (more: 431). Default 100.
    pub max_headers: Option<Spanned<i64>>,
    /// HTTP/2 streams a client may have open, 1 to 10000. Default 100.
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    /// HTTP/2 streams reset by the client before the gateway took them
    /// (rapid reset), 1 to 10000. Default 20.
    pub h2_max_pending_resets: Option<Spanned<i64>>,
    /// HTTP/2 streams the gateway may reset because of client errors
    /// before the connection is closed, 1 to 100000. Default 1024.
    pub h2_max_local_error_resets: Option<Spanned<i64>>,
    /// `Strict-Transport-Security: max-age` on every response over TLS;
    /// `"0s"` sends none. Default `"365d"`.
    pub hsts_max_age: Option<Spanned<String>>,
    /// WebSockets as HTTP/2 streams (RFC 8441 extended CONNECT); `false`:
    /// browsers open them over HTTP/1.1. Default `true`.
    pub websocket_over_http2: Option<bool>,
}

/// `[http3]`: HTTP/3 over QUIC (quinn), on UDP at every TLS listener's
/// address and port, with the TLS listeners' certificates. quinn's own
/// defaults are set aside on purpose: its connection receive window is
/// unbounded and its stream window and send buffer are sized for
/// throughput, not for thousands of browsers on a small VPS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http3Section {
    /// Serve HTTP/3 and advertise it to HTTP/1.1 and HTTP/2 clients with
    /// `Alt-Svc`. Only TLS listeners get it. Default true.
    pub enabled: Option<bool>,
    /// A connection on which nothing arrived for this long is closed
    /// (QUIC `max_idle_timeout`; the smaller of both sides' applies),
    /// 1 s to 10 min. Default `"30s"`.
    pub idle_timeout: Option<Spanned<String>>,
    /// Requests a client may have in flight on one connection (QUIC
    /// bidirectional streams), 1 to 10000. Default 100.
    pub max_concurrent_streams: Option<Spanned<i64>>,
    /// Request body bytes a client may send on one stream ahead of the
    /// gateway reading them (QUIC stream receive window), 16 KiB to
    /// 64 MiB. Default 1 MiB.
    pub stream_window: Option<Spanned<Size>>,
    /// The same for all streams of a connection together (QUIC connection
    /// receive window), `stream_window` to 256 MiB. Default 4 MiB.
    pub conn_window: Option<Spanned<Size>>,
    /// Response bytes sent and not yet acknowledged per connection (QUIC
    /// send window), 64 KiB to 256 MiB. Default 4 MiB.
    pub send_window: Option<Spanned<Size>>,
    /// Largest UDP payload the gateway sends or accepts. Every connection
    /// starts at 1200 bytes (QUIC's minimum) and raises its datagram size
    /// only by path MTU discovery, up to this; 1200 turns discovery off.
    /// 1200 to 65527. Default 1452 (a 1500-byte path, IPv6 and UDP headers off).
    pub max_mtu: Option<Spanned<i64>>,
}

/// `[websocket]`: limits for the WebSockets the gateway terminates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSection {
    /// Largest message (larger: close 1009), 1 KiB to 64 MiB. Default 1 MiB.
    pub max_message: Option<Spanned<Size>>,
    /// Largest frame, 1 KiB to `max_message`. Default 64 KiB.
    pub max_frame: Option<Spanned<Size>>,
    /// Bytes queued toward one browser before the device is slowed down,
    /// 4 KiB to 64 MiB. Default 128 KiB.
    pub write_buffer: Option<Spanned<Size>>,
    /// The gateway pings browsers this often. Default `"20s"`.
    pub ping_interval: Option<Spanned<String>>,
}

/// `[link]`: the listener devices dial. Session values default to
/// `proto::Config::GATEWAY`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    /// `IP:PORT`. Default `"[::]:7000"`.
    pub address: Option<Spanned<String>>,
    /// The MSS clamp, 536 to 8960. Default 1360.
    pub mss: Option<Spanned<i64>>,
    /// The handshake (through the device's HELLO) must finish within this. Default `"10s"`.
    pub handshake_timeout: Option<Spanned<String>>,
    /// A PING goes to each device this often. Default `"15s"`.
    pub keepalive: Option<Spanned<String>>,
    /// A session with nothing received for this long ends; longer than
    /// `keepalive`. Default `"45s"`.
    pub idle_timeout: Option<Spanned<String>>,
    /// A stream waiting for credit longer than this is reset; `"off"`
    /// disables. Default `"60s"`.
    pub stall_timeout: Option<Spanned<String>>,
    /// Largest record the gateway receives, length prefix and tag included,
    /// 512 to 65535. Default 16402 (16 KiB of payload).
    pub max_record: Option<Spanned<Size>>,
    /// Streams a device may open toward the gateway, 0 to 65535. Default 16.
    pub max_streams: Option<Spanned<i64>>,
    /// Credit per stream from device to gateway, 1 byte to 2 GiB - 1. Default 1 MiB.
    pub stream_window: Option<Spanned<Size>>,
    /// Credit for a whole session, `stream_window` to 2 GiB - 1. Default 4 MiB.
    pub conn_window: Option<Spanned<Size>>,
    /// Unauthenticated handshakes in progress at once, 1 to 1000000. Default 4096.
    pub max_handshakes: Option<Spanned<i64>>,
    /// Of those, from one source address (IPv6: one /64), 1 to 1000000. Default 1024.
    pub max_handshakes_per_address: Option<Spanned<i64>>,
    /// Connections that wait for a place (at most a quarter of
    /// `handshake_timeout`) when a cap is full, 0 to 1000000; past that
    /// they are reset at once. Default 8192.
    pub max_handshakes_waiting: Option<Spanned<i64>>,
}

/// `[metrics]`: Prometheus `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:PORT`. Default `"127.0.0.1:9100"` (loopback: scrape it locally or through a tunnel).
    pub address: Option<Spanned<String>>,
    /// Devices with their own per-device series, 0 to 100000; the rest
    /// are aggregated. Default 1000.
    pub max_device_series: Option<Spanned<i64>>,
}

/// `[[device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// The routing name: `<id>.<domain>` and `/d/<id>/`. A DNS label: 1 to
    /// 63 of `a-z`, `0-9`, `-`, not starting or ending with `-`. Required.
    pub id: Spanned<String>,
    /// A name for people (the landing page). Default: the id.
    pub name: Option<String>,
    /// The device's X25519 public key, 64 hex digits. Required for
    /// `upstream = "link"`.
    pub public_key: Option<Spanned<String>>,
    /// Reachable without login. Default `false`.
    #[serde(default)]
    pub public: bool,
    /// How the gateway reaches the device. Default `"link"`.
    pub upstream: Option<Spanned<UpstreamSection>>,
    /// Origins (`scheme://host[:port]`) browsers may come from; anything
    /// else is refused with 403 before the device is contacted. Default:
    /// the gateway's own origins for this device, `https://<id>.<domain>`
    /// and `https://<domain>` (with the port where it is not the default).
    pub allowed_origins: Option<Vec<Spanned<String>>>,
    /// `[device.normalize]`: what the device receives.
    #[serde(default)]
    pub normalize: NormalizeSection,
    /// `[[device.service]]`: which device service answers which paths.
    /// Default: none, every path goes to the first HTTP service the device
    /// announces.
    #[serde(default)]
    pub service: Vec<ServiceSection>,
}

/// `upstream = "link"` or `upstream = { direct = { address = "10.0.0.5:80" } }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum UpstreamSection {
    /// The device dials the gateway's link listener.
    Link,
    /// The gateway connects to a server at a fixed address (a site VPN).
    Direct(DirectSection),
}

/// A direct upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectSection {
    /// `IP:PORT` of the device's server. Required.
    pub address: Spanned<String>,
    /// Speak TLS to it. Default `false`.
    #[serde(default)]
    pub tls: bool,
    /// SHA-256 of the device's certificate (DER), 64 hex digits, `:`
    /// separators allowed (`openssl x509 -fingerprint -sha256`). Required
    /// with `tls = true`: device certificates are self-signed, there is no
    /// CA to check them against.
    pub pinned_cert_sha256: Option<Spanned<String>>,
    /// SNI sent with `tls = true`. Default: the normalized Host.
    pub server_name: Option<Spanned<String>>,
    /// The MSS clamp toward the device, 536 to 8960. Default 1360.
    pub mss: Option<Spanned<i64>>,
}

/// `[device.normalize]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSection {
    /// The Host the device expects (its virtual-host name). Default: the device id.
    pub host: Option<Spanned<String>>,
    /// A port to append to Host, 1 to 65535; 80 is never appended (seed
    /// 004: a strict host check compares it). Default: none.
    pub port: Option<Spanned<i64>>,
    /// Origin toward the device, after validation. Default `"rewrite"`.
    pub origin: Option<Spanned<OriginSection>>,
    /// WebSocket subprotocols toward the device. Default `"negotiate"`.
    pub subprotocol: Option<Spanned<SubprotocolSection>>,
    /// The WebSocket subprotocols the device's server supports, in its order
    /// of preference, for servers that do not announce them: raw services
    /// and direct upstreams (a link HTTP service announces its own in
    /// HELLO). Default: none (the browser's offer is forwarded, filtered
    /// by `subprotocol`).
    #[serde(default)]
    pub protocols: Vec<Spanned<String>>,
}

/// `origin = "rewrite" | "keep" | "strip" | { set = "http://x" }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum OriginSection {
    /// `http://<host>[:port]`, what the device's own page would send.
    Rewrite,
    /// The browser's (validated) Origin.
    Keep,
    /// None (servers that refuse foreign origins, seed 003).
    Strip,
    /// This origin.
    Set(String),
}

/// `subprotocol = "negotiate" | "strip" | { map = { "chat" = "lws-mirror-protocol" } }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SubprotocolSection {
    /// Only a protocol the browser offered and the device announced (seed 001).
    Negotiate,
    /// Never one toward the device (servers that refuse any, seed 003).
    Strip,
    /// Browser name → device name; other names negotiate as themselves.
    Map(BTreeMap<String, String>),
}

/// `[[device.service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// The service's name as the device announces it. Required.
    pub name: Spanned<String>,
    /// Requests whose path is this or below it go to the service (the
    /// longest match wins; the path is forwarded unchanged). Default `"/"`.
    pub path: Option<Spanned<String>>,
    /// How browsers reach it. Default `"http"`.
    pub expose: Option<Spanned<ExposeSection>>,
}

/// `expose = "http" | "websocket"`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ExposeSection {
    /// HTTP and WebSocket requests: structured for an HTTP service; for a
    /// raw service the gateway speaks HTTP/1.1 over the byte stream (an
    /// existing server adopting it as a socket, seed 004).
    Http,
    /// A raw service as a WebSocket whose binary messages are its bytes.
    Websocket,
}

/// A size as written: bytes, or a string with a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Size {
    /// An integer.
    Bytes(i64),
    /// A string such as `"64KiB"`.
    Text(String),
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{n}"),
            Self::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes as an integer, or a string such as \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}
