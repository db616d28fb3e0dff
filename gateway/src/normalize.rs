//! What goes toward the device, per device policy: the browser's request is
//! checked, then rebuilt (never forwarded as bytes), so smuggling cannot
//! pass and each device sees exactly the headers its server expects.
//!
//! - **Origin** is validated first against the device's allowed public
//!   origins: a WebSocket upgrade without one, or any request with a
//!   foreign one, is refused (403) before the device is contacted
//!   (cross-site WebSocket hijacking). Then it is rewritten, kept, removed or
//!   set, as the device needs (seed 003).
//! - **Sec-WebSocket-Protocol**: the browser is answered with the first
//!   protocol it offered that the device's service announced (or maps to
//!   one); the device receives only a protocol it supports, or none. No
//!   choice ever fails the request (seeds 001, 003).
//! - **Host** becomes the device's virtual-host name, with a port only
//!   where it is not the default (seed 004).
//! - `Forwarded` and `X-Forwarded-For/-Proto/-Host` are set from the
//!   connection; what the client sent under those names is dropped, as are
//!   hop-by-hop headers and the WebSocket handshake headers (the gateway
//!   terminates WebSocket).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The device's limit on header fields in a head (`proto::wire`).
pub const MAX_HEADERS: usize = 128;

/// What to do with Origin toward the device, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Rewrite to `http://<host>[:port]`, what a device's own page would send. Default.
    Rewrite,
    /// Forward the browser's (validated) Origin.
    Keep,
    /// Send none.
    Strip,
    /// Send this value.
    Set(String),
}

/// What to do with WebSocket subprotocols toward the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubprotocolPolicy {
    /// Only a protocol the browser offered and the device announced. Default.
    Negotiate,
    /// Never send one to the device (servers that reject any); the browser
    /// still gets an answer from the device's announced list.
    Strip,
    /// Browser name → device name, tried in the browser's order; names
    /// without a mapping negotiate as themselves.
    Map(Vec<(String, String)>),
}

/// A device's normalization policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Host toward the device (its virtual-host name).
    pub host: String,
    /// Port appended to Host, unless it is 80 (the device speaks plain HTTP
    /// on the link). Default: none.
    pub host_port: Option<u16>,
    /// Origins browsers may come from, `scheme://host[:port]` in lower case.
    pub allowed_origins: Vec<String>,
    /// Origin toward the device.
    pub origin: OriginPolicy,
    /// Subprotocols toward the device.
    pub subprotocol: SubprotocolPolicy,
    /// Subprotocols the device's server supports when it cannot announce
    /// them (raw services, direct upstreams).
    pub protocols: Vec<String>,
}

/// Why a request was refused before reaching the device.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A WebSocket upgrade without Origin.
    #[error("WebSocket upgrade without an Origin header")]
    MissingOrigin,
    /// An Origin the device does not allow.
    #[error("origin {0:?} is not allowed for this device")]
    ForeignOrigin(String),
    /// More header fields than the device accepts.
    #[error("too many header fields ({0})")]
    TooManyHeaders(usize),
    /// A target the device cannot be given.
    #[error("request target must be origin-form")]
    BadTarget,
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingOrigin | Self::ForeignOrigin(_) => 403,
            Self::TooManyHeaders(_) => 431,
            Self::BadTarget => 400,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingOrigin => "origin_missing",
            Self::ForeignOrigin(_) => "origin_foreign",
            Self::TooManyHeaders(_) => "too_many_headers",
            Self::BadTarget => "bad_target",
        }
    }
}

/// Checks Origin: required and allowed on a WebSocket upgrade; allowed if
/// present on any other request.
pub fn check_origin(
    headers: &HeaderMap,
    allowed: &[String],
    websocket: bool,
) -> Result<(), Rejection> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(origin) = values.next() else {
        return if websocket {
            Err(Rejection::MissingOrigin)
        } else {
            Ok(())
        };
    };
    let text = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
    // Two Origin fields, or "null" (sandboxed frames, file:), are never allowed.
    if values.next().is_some()
        || text == "null"
        || !allowed.iter().any(|a| a.eq_ignore_ascii_case(&text))
    {
        return Err(Rejection::ForeignOrigin(text));
    }
    Ok(())
}

/// The subprotocols a browser offered, in order (invalid tokens skipped).
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.bytes().all(is_tchar))
        .map(str::to_string)
        .collect()
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The subprotocol answered to the browser and the one sent to the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubprotocolChoice {
    /// In the 101 to the browser (one it offered), if any.
    pub browser: Option<String>,
    /// In the head to the device (one it announced), if any.
    pub device: Option<String>,
}

/// Chooses subprotocols. Never fails: with nothing in common, neither side
/// gets one and the upgrade proceeds (RFC 6455 lets a server pick none).
pub fn choose_subprotocol(
    offered: &[String],
    announced: &[String],
    policy: &SubprotocolPolicy,
) -> SubprotocolChoice {
    let supports = |name: &str| announced.iter().any(|a| a == name);
    for o in offered {
        let target = match policy {
            SubprotocolPolicy::Map(map) => map
                .iter()
                .find(|(from, _)| from == o)
                .map_or(o.as_str(), |(_, to)| to.as_str()),
            _ => o.as_str(),
        };
        if supports(target) {
            let device = (*policy != SubprotocolPolicy::Strip).then(|| target.to_string());
            return SubprotocolChoice {
                browser: Some(o.clone()),
                device,
            };
        }
    }
    SubprotocolChoice::default()
}

/// Hop-by-hop and gateway-owned fields never forwarded as they came.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "origin",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "http2-settings",
];

/// The browser's side of a request, as the edge received it.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// Header fields after hyper's parsing.
    pub headers: &'a HeaderMap,
    /// The client's address.
    pub client: SocketAddr,
    /// The public Host (authority) the browser used.
    pub public_host: &'a str,
    /// `https` on TLS listeners.
    pub scheme: &'a str,
}

/// The header fields toward the device, in order, names in lower case.
pub fn device_headers(
    incoming: &Incoming<'_>,
    policy: &Policy,
    subprotocol: Option<&str>,
) -> Result<Vec<(HeaderName, Vec<u8>)>, Rejection> {
    let mut named_hop: Vec<String> = Vec::new();
    for v in incoming.headers.get_all(header::CONNECTION) {
        if let Ok(s) = v.to_str() {
            named_hop.extend(
                s.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let mut out: Vec<(HeaderName, Vec<u8>)> = Vec::new();
    let host = match policy.host_port {
        Some(p) if p != 80 => format!("{}:{p}", policy.host),
        _ => policy.host.clone(),
    };
    out.push((header::HOST, host.clone().into_bytes()));
    for (name, value) in incoming.headers {
        let n = name.as_str();
        if DROPPED.contains(&n) || named_hop.iter().any(|h| h == n) {
            continue;
        }
        out.push((name.clone(), value.as_bytes().to_vec()));
    }
    if incoming.headers.contains_key(header::ORIGIN) {
        match &policy.origin {
            OriginPolicy::Rewrite => {
                out.push((header::ORIGIN, format!("http://{host}").into_bytes()))
            }
            OriginPolicy::Keep => {
                if let Some(o) = incoming.headers.get(header::ORIGIN) {
                    out.push((header::ORIGIN, o.as_bytes().to_vec()));
                }
            }
            OriginPolicy::Strip => {}
            OriginPolicy::Set(v) => out.push((header::ORIGIN, v.clone().into_bytes())),
        }
    }
    if let Some(p) = subprotocol {
        out.push((header::SEC_WEBSOCKET_PROTOCOL, p.as_bytes().to_vec()));
    }
    let ip = incoming.client.ip();
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let public = incoming.public_host;
    out.push((
        HeaderName::from_static("forwarded"),
        format!("for={node};proto={};host=\"{public}\"", incoming.scheme).into_bytes(),
    ));
    out.push((
        HeaderName::from_static("x-forwarded-for"),
        ip.to_string().into_bytes(),
    ));
    out.push((
        HeaderName::from_static("x-forwarded-proto"),
        incoming.scheme.as_bytes().to_vec(),
    ));
    out.push((
        HeaderName::from_static("x-forwarded-host"),
        public.as_bytes().to_vec(),
    ));
    if out.len() > MAX_HEADERS {
        return Err(Rejection::TooManyHeaders(out.len()));
    }
    Ok(out)
}

/// Encodes a request head for the device (`proto::wire::RequestHead`).
pub fn encode_request_head(
    method: &str,
    target: &str,
    headers: &[(HeaderName, Vec<u8>)],
) -> Result<Vec<u8>, Rejection> {
    if !(target.starts_with('/') || target == "*") {
        return Err(Rejection::BadTarget);
    }
    let fields: Vec<proto::wire::Header<'_>> = headers
        .iter()
        .map(|(n, v)| proto::wire::Header {
            name: n.as_str(),
            value: v,
        })
        .collect();
    let head = proto::wire::RequestHead {
        method,
        target,
        headers: proto::wire::HeaderList::Slice(&fields),
    };
    let mut buf = vec![0u8; head.buffer_len()];
    // hyper's parsing and the filtering above leave only encodable fields;
    // anything else is refused rather than forwarded.
    head.emit(&mut buf).map_err(|_| Rejection::BadTarget)?;
    Ok(buf)
}
