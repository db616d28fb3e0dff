//! The configuration: one TOML file (and an optional devices file), typed
//! once at load.
//!
//! ```text
//!  gateway.toml ──toml + serde (deny_unknown_fields, spans)──▶ file::File
//!  devices.toml ──────────────────────────────────────────────▶ file::DevicesFile
//!        │ check every value, resolve paths, read the key, load certificates,
//!        │ apply defaults; collect every error with FILE:LINE:COLUMN
//!        ▼
//!  Config { gateway, listeners, tls, http, http3, websocket, link, metrics, devices }
//! ```
//!
//! The rest of the gateway uses [`Config`] and never re-checks it:
//! addresses are `SocketAddr`, durations `Duration`, keys `PublicKey` and
//! `Secret<SecretKey>`, certificates loaded, device policies the types of
//! [`crate::normalize`]. [`load`] reports all problems it finds, not only the
//! first, each as `FILE:LINE:COLUMN: message` ([`ConfigErrors`]).
//!
//! # The file
//!
//! ```toml
//! [gateway]
//! domain = "gw.example.com"      # devices at https://<id>.gw.example.com/ and /d/<id>/
//! data_dir = "/var/lib/devlink-gateway"   # relative paths resolve here (default: this file's dir)
//! key_file = "gateway.key"       # default; `gateway keygen --out gateway.key`
//! devices_file = "devices.toml"  # optional, more [[device]] entries
//! # public_port = 443            # when a port mapping sits in front
//! # drain_timeout = "10s"
//! # threads = 0                  # 0: one per CPU; 1: the current-thread scheduler
//!
//! [[listen]]                     # one or more
//! address = "[::]:443"
//! # tls = true                   # default
//! # mss = 1360                   # TCP_MAXSEG clamp, default 1360 (536..=8960)
//! # tcp_keepalive = "60s"
//! # backlog = 4096
//!
//! [tls]                          # required if a listener has tls = true
//! certificates = [{ cert = "fullchain.pem", key = "privkey.pem" }]   # SNI picks
//! # handshake_timeout = "10s"
//!
//! [http]                         # all optional; defaults shown
//! # header_timeout = "10s"
//! # idle_timeout = "60s"
//! # response_timeout = "30s"     # 504 after this
//! # max_header_bytes = "16KiB"
//! # max_headers = 100
//! # h2_max_concurrent_streams = 100
//! # h2_max_pending_resets = 20
//! # h2_max_local_error_resets = 1024
//! # hsts_max_age = "365d"        # Strict-Transport-Security over TLS; "off": none
//! # websocket_over_http2 = true # WebSockets as HTTP/2 streams (RFC 8441); false: over HTTP/1.1
//!
//! [http3]                        # QUIC on UDP at each TLS listener's port
//! # enabled = true               # also adds Alt-Svc to HTTP/1.1 and HTTP/2 answers
//! # idle_timeout = "30s"
//! # max_concurrent_streams = 100
//! # stream_window = "1MiB"
//! # conn_window = "4MiB"
//! # send_window = "4MiB"
//! # max_mtu = 1452               # datagrams start at 1200, grow only by MTU discovery
//!
//! [websocket]
//! # max_message = "1MiB"
//! # max_frame = "64KiB"
//! # write_buffer = "128KiB"
//! # ping_interval = "20s"
//!
//! [link]                         # defaults: proto::Config::GATEWAY, larger windows
//! # address = "[::]:7000"
//! # mss = 1360
//! # handshake_timeout = "10s"
//! # keepalive = "15s"
//! # idle_timeout = "45s"
//! # stall_timeout = "60s"        # or "off"
//! # max_record = 16402
//! # max_streams = 16
//! # stream_window = "1MiB"
//! # conn_window = "4MiB"
//!
//! [metrics]
//! # address = "127.0.0.1:9100"  # /metrics, /healthz, /readyz
//! # max_device_series = 1000
//!
//! [[device]]
//! id = "plc-7"                   # DNS label
//! public_key = "<64 hex digits>" # required for upstream = "link"
//! # name = "Line 7 PLC"          # default: the id
//! # public = false               # true: no login needed
//! # upstream = "link"            # or { direct = { address = "10.0.0.5:443", tls = true, pinned_cert_sha256 = "…" } }
//! # allowed_origins = ["https://plc-7.gw.example.com"]   # default: the gateway's own origins
//! [device.normalize]
//! host = "plc-7.local"           # default: the id
//! # port = 8080                  # appended to Host unless 80
//! origin = "rewrite"             # "rewrite" | "keep" | "strip" | { set = "http://x" }
//! subprotocol = "negotiate"      # "negotiate" | "strip" | { map = { "chat" = "lws-mirror-protocol" } }
//! [[device.service]]             # optional: default, everything to the first HTTP service
//! name = "modbus"
//! path = "/modbus"
//! expose = "websocket"           # "http" (default) | "websocket"
//! ```
//!
//! Every option, its default and its range are documented on the structs of
//! [`file`](mod@file).
//!
//! # Layout
//!
//! - [`file`](mod@file): the serde structs, as written.
//! - [`settings`]: runtime types of the gateway-wide sections.
//! - [`device`]: runtime devices and their lookups.
//! - [`error`]: located errors.
//! - `value`: checks of single values.
//! - [`Secret`]: the wrapper that keeps secrets out of logs.

pub mod acme;
pub mod auth;
pub mod device;
pub mod error;
pub mod file;
mod secret;
pub mod settings;
mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

pub use device::{
    Device, Devices, Direct, DirectTls, Exposure, ServiceChoice, ServiceRoute, Upstream,
};
pub use error::{ConfigError, ConfigErrors, ErrorKind, Location, Position};
pub use secret::Secret;
pub use settings::{Certificate, Gateway, Http, Http3, Link, Listener, Metrics, Tls, WebSocket};

use error::Source;
use value::Ctx;

/// The gateway's configuration, checked.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// `[gateway]`.
    pub gateway: Gateway,
    /// `[[listen]]`, at least one.
    pub listeners: Vec<Listener>,
    /// `[tls]`.
    pub tls: Tls,
    /// `[http]`.
    pub http: Http,
    /// `[http3]`.
    pub http3: Http3,
    /// `[websocket]`.
    pub websocket: WebSocket,
    /// `[link]`.
    pub link: Link,
    /// `[metrics]`.
    pub metrics: Metrics,
    /// `[[device]]` from the file, then from the devices file.
    pub devices: Devices,
    /// `[auth]`, users, groups and tokens.
    pub auth: auth::Auth,
    /// `[acme]`, if certificates are obtained automatically.
    pub acme: Option<acme::Acme>,
}

/// Loads and checks the configuration at `path`, and the files it names
/// (key, certificates, devices file).
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            at: Location {
                file: path.to_path_buf(),
                position: None,
            },
            kind: ErrorKind::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        }])
    })?;
    load_str(path, text)
}

/// Checks `text` as if read from `path`: relative paths resolve against
/// `path`'s directory, and the files the configuration names are read.
pub fn load_str(path: impl AsRef<Path>, text: impl Into<String>) -> Result<Config, ConfigErrors> {
    let path = path.as_ref();
    let src = Source::new(path, text.into());
    let raw: file::File =
        toml::from_str(src.text()).map_err(|e| ConfigErrors(vec![src.toml_error(&e)]))?;
    let mut errors = Vec::new();
    let config = convert(&src, &raw, &mut errors);
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => {
            let main = src.path().to_path_buf();
            errors.sort_by_key(|e| (e.at.file != main, e.at.position));
            if errors.is_empty() {
                errors.push(src.error(None, ErrorKind::Conflict("invalid configuration".into())));
            }
            Err(ConfigErrors(errors))
        }
    }
}

fn convert(src: &Source, raw: &file::File, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let mut ctx = Ctx { src, errors };
    let config_dir = match src.path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let gateway = settings::gateway(&mut ctx, &raw.gateway, &config_dir);
    let data_dir = gateway.as_ref().map_or_else(
        || settings::data_dir(&raw.gateway, &config_dir),
        |g| g.data_dir.clone(),
    );

    let mut bound = Vec::new();
    if raw.listen.is_empty() {
        ctx.error(None, ErrorKind::NoListener);
    }
    let mut listeners = Vec::new();
    for r in &raw.listen {
        if let Some(l) = settings::listener(&mut ctx, r, &mut bound) {
            if l.tls && raw.tls.certificates.is_empty() && raw.acme.is_none() {
                let kind = ErrorKind::MissingCertificates { address: l.address };
                ctx.error_at(&r.address, kind);
            }
            listeners.push(l);
        }
    }
    let tls = settings::tls(&mut ctx, &raw.tls, &data_dir);
    let http = settings::http(&mut ctx, &raw.http);
    let http3 = settings::http3(&mut ctx, &raw.http3);
    let websocket = settings::websocket(&mut ctx, &raw.websocket);
    let link = settings::link(&mut ctx, &raw.link, &mut bound);
    let metrics = settings::metrics(&mut ctx, &raw.metrics, &mut bound);
    settings::check_conflicts(&mut ctx, &bound);

    let domain = gateway.as_ref().map_or_else(
        || raw.gateway.domain.get_ref().to_ascii_lowercase(),
        |g| g.domain.clone(),
    );
    let mut known = device::Known {
        domain: &domain,
        listeners: &listeners,
        public_port: gateway.as_ref().and_then(|g| g.public_port),
        ids: HashMap::new(),
        keys: HashMap::new(),
    };
    if let Some(g) = &gateway {
        let at = src.locate(raw.gateway.key_file.as_ref().map(Spanned::span));
        known
            .keys
            .insert(g.public_key, ("the gateway's own key".to_string(), at));
    }
    let mut devices: Vec<Device> = raw
        .device
        .iter()
        .filter_map(|d| device::device(&mut ctx, d, &mut known))
        .collect();

    // Read even when [gateway] has errors (a missing key), so that one run
    // reports the devices file's problems too.
    if let Some(field) = &raw.gateway.devices_file {
        let file = data_dir.join(field.get_ref());
        match std::fs::read_to_string(&file) {
            Err(e) => ctx.error_at(
                field,
                ErrorKind::Read {
                    path: file.clone(),
                    reason: e.to_string(),
                },
            ),
            Ok(text) => {
                let dsrc = Source::new(&file, text);
                match toml::from_str::<file::DevicesFile>(dsrc.text()) {
                    Err(e) => ctx.errors.push(dsrc.toml_error(&e)),
                    Ok(draw) => {
                        let mut dctx = Ctx {
                            src: &dsrc,
                            errors: &mut *ctx.errors,
                        };
                        devices.extend(
                            draw.device
                                .iter()
                                .filter_map(|d| device::device(&mut dctx, d, &mut known)),
                        );
                    }
                }
            }
        }
    }

    let auth = auth::auth(&mut ctx, raw, &data_dir);
    let acme = raw.acme.as_ref().and_then(|a| {
        let mut names = vec![domain.clone()];
        names.extend(devices.iter().map(|d| format!("{}.{domain}", d.id)));
        acme::acme(&mut ctx, a, &data_dir, names)
    });

    Some(Config {
        acme,
        auth,
        path: src.path().to_path_buf(),
        gateway: gateway?,
        listeners,
        tls,
        http,
        http3,
        websocket,
        link: link?,
        metrics: metrics?,
        devices: Devices::new(devices),
    })
}

impl Config {
    /// The gateway's own origins (`scheme://domain[:port]` per listener):
    /// where its login form may be posted from.
    pub fn gateway_origins(&self) -> Vec<String> {
        let marker = "devlink-origin-probe";
        device::own_origins(
            marker,
            &self.gateway.domain,
            &self.listeners,
            self.gateway.public_port,
        )
        .into_iter()
        .filter(|o| !o.contains(marker))
        .collect()
    }

    /// A one-paragraph summary for `gateway check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let listeners: Vec<String> = self
            .listeners
            .iter()
            .map(|l| format!("{} {} (mss {})", l.scheme(), l.address, l.socket.mss))
            .collect();
        let direct = self
            .devices
            .iter()
            .filter(|d| matches!(d.upstream, Upstream::Direct(_)))
            .count();
        let public = self.devices.iter().filter(|d| d.public).count();
        format!(
            "{}: domain {}; listening on {}; {} certificate(s); device link on {} (mss {}); \
             metrics on {}; {} device(s) ({} on the link, {} direct, {} public); \
             gateway public key {}.",
            self.path.display(),
            self.gateway.domain,
            listeners.join(", "),
            self.tls.certificates.len(),
            self.link.address,
            self.link.socket.mss,
            self.metrics.address,
            self.devices.len(),
            self.devices.len() - direct,
            direct,
            public,
            self.gateway.public_key,
        )
    }
}
