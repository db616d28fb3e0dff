//! Devices in their runtime form: id, key, upstream, the normalization
//! policy of [`crate::normalize`] and the service routes, all checked, with
//! lookups by id (routing) and by public key (the link handshake).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use proto::PublicKey;
use serde_spanned::Spanned;

use super::error::{ErrorKind, Location};
use super::file;
use super::settings::Listener;
use super::value::{Ctx, check_origin};
use crate::edge::listener::{DEFAULT_MSS, MAX_MSS, MIN_MSS, SocketOptions};
use crate::keys;
use crate::normalize::{OriginPolicy, Policy, SubprotocolPolicy};

/// Longest service name a device may announce (`proto::wire::Hello`).
const MAX_SERVICE_NAME: usize = 32;
/// Longest subprotocol name a device may announce.
const MAX_PROTOCOL: usize = 64;

/// A device the gateway serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The routing name (a DNS label).
    pub id: String,
    /// A name for people. Default: the id.
    pub name: String,
    /// Its static key (always present for [`Upstream::Link`]).
    pub public_key: Option<PublicKey>,
    /// Reachable without login. Default false.
    pub public: bool,
    /// How it is reached. Default [`Upstream::Link`].
    pub upstream: Upstream,
    /// Origin check and what the device receives.
    pub policy: Policy,
    /// Path prefixes to services, longest first. Default: empty, meaning
    /// every path goes to the first HTTP service the device announces.
    pub services: Vec<ServiceRoute>,
}

/// Which service answers a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceChoice<'a> {
    /// No routes are configured: the first HTTP service the device announces.
    FirstHttp,
    /// The configured route with the longest matching prefix.
    Route(&'a ServiceRoute),
    /// Routes are configured and none matches (404).
    None,
}

impl Device {
    /// The service for a request path (without query).
    pub fn service_for(&self, path: &str) -> ServiceChoice<'_> {
        if self.services.is_empty() {
            return ServiceChoice::FirstHttp;
        }
        // Sorted longest first, so the first match is the longest.
        self.services
            .iter()
            .find(|s| path_matches(&s.path, path))
            .map_or(ServiceChoice::None, ServiceChoice::Route)
    }
}

fn path_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How the gateway reaches a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The device dials the link listener.
    Link,
    /// A server at a fixed address.
    Direct(Direct),
}

/// A direct upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Direct {
    /// The server.
    pub address: SocketAddr,
    /// TLS toward it, if any.
    pub tls: Option<DirectTls>,
    /// The MSS clamp (default 1360) and TCP options for the connection.
    pub socket: SocketOptions,
}

/// TLS toward a direct upstream, with a pinned certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectTls {
    /// SNI. Default: the normalized Host.
    pub server_name: String,
    /// SHA-256 of the certificate's DER.
    pub pinned_cert_sha256: [u8; 32],
}

/// A path prefix served by a named device service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    /// The service's announced name.
    pub name: String,
    /// The prefix: `/`, or `/x/y` without a trailing slash.
    pub path: String,
    /// How browsers reach it.
    pub expose: Exposure,
}

/// How browsers reach a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    /// HTTP and WebSocket (structured for HTTP services; HTTP/1.1 spoken
    /// over the bytes of a raw service).
    Http,
    /// A WebSocket carrying a raw service's bytes as binary messages.
    WebSocket,
}

/// All devices, with lookups.
#[derive(Clone, Debug, Default)]
pub struct Devices {
    list: Vec<Device>,
    by_id: HashMap<String, usize>,
    by_key: HashMap<PublicKey, usize>,
}

impl Devices {
    /// From devices with distinct ids and keys (as loading guarantees).
    pub fn new(list: Vec<Device>) -> Self {
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let by_key = list
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.public_key.map(|k| (k, i)))
            .collect();
        Self {
            list,
            by_id,
            by_key,
        }
    }

    /// The device with this id.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.by_id.get(id).map(|&i| &self.list[i])
    }

    /// The device with this public key.
    pub fn by_key(&self, key: &PublicKey) -> Option<&Device> {
        self.by_key.get(key).map(|&i| &self.list[i])
    }

    /// In file order: the configuration's, then the devices file's.
    pub fn iter(&self) -> std::slice::Iter<'_, Device> {
        self.list.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl<'a> IntoIterator for &'a Devices {
    type Item = &'a Device;
    type IntoIter = std::slice::Iter<'a, Device>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// What every device's checks need: the gateway's identity and what was
/// seen so far (ids and keys must be unique across both files).
pub(crate) struct Known<'a> {
    pub(crate) domain: &'a str,
    pub(crate) listeners: &'a [Listener],
    pub(crate) public_port: Option<u16>,
    pub(crate) ids: HashMap<String, Location>,
    pub(crate) keys: HashMap<PublicKey, (String, Location)>,
}

/// The gateway's own origins for a device: `<scheme>://<id>.<domain>` and
/// `<scheme>://<domain>` for each listener, with its port (for TLS
/// listeners `public_port` if set) where it is not the scheme's default.
pub fn own_origins(
    id: &str,
    domain: &str,
    listeners: &[Listener],
    public_port: Option<u16>,
) -> Vec<String> {
    let mut out = Vec::new();
    for l in listeners {
        let port = match public_port {
            Some(p) if l.tls => p,
            _ => l.address.port(),
        };
        let default = if l.tls { 443 } else { 80 };
        let suffix = if port == default {
            String::new()
        } else {
            format!(":{port}")
        };
        for host in [format!("{id}.{domain}"), domain.to_string()] {
            let o = format!("{}://{host}{suffix}", l.scheme());
            if !out.contains(&o) {
                out.push(o);
            }
        }
    }
    out
}

fn span<T>(v: Option<&Spanned<T>>) -> Option<Range<usize>> {
    v.map(Spanned::span)
}

pub(crate) fn device(
    ctx: &mut Ctx<'_>,
    raw: &file::DeviceSection,
    known: &mut Known<'_>,
) -> Option<Device> {
    let id = raw.id.get_ref().clone();
    let id_ok = proto::wire::valid_device_id(&id);
    if !id_ok {
        ctx.error_at(&raw.id, ErrorKind::DeviceId(id.clone()));
    } else if let Some(first) = known.ids.get(&id) {
        let kind = ErrorKind::DuplicateDevice {
            id: id.clone(),
            first: first.clone(),
        };
        ctx.error_at(&raw.id, kind);
    } else {
        known.ids.insert(id.clone(), ctx.locate(&raw.id));
    }

    let public_key = raw
        .public_key
        .as_ref()
        .and_then(|k| key(ctx, k, &id, known));
    let upstream = match raw.upstream.as_ref().map(Spanned::get_ref) {
        None | Some(file::UpstreamSection::Link) => {
            if raw.public_key.is_none() {
                ctx.error_at(&raw.id, ErrorKind::MissingKey(id.clone()));
            }
            Some(Upstream::Link)
        }
        Some(file::UpstreamSection::Direct(d)) => direct(ctx, d, raw, &id),
    };

    let n = &raw.normalize;
    let host = match &n.host {
        Some(h) => ctx.host_name("host", h),
        None => Some(id.clone()),
    };
    let host_port = n
        .port
        .as_ref()
        .map(|p| ctx.int("port", Some(p), 80, 1..=65535) as u16);
    let origin = origin_policy(ctx, n.origin.as_ref());
    let subprotocol = subprotocol_policy(ctx, n.subprotocol.as_ref());
    let allowed_origins = match &raw.allowed_origins {
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for o in list {
                if let Some(o) = ctx.origin("allowed origin", o)
                    && !out.contains(&o)
                {
                    out.push(o);
                }
            }
            out
        }
        None => own_origins(&id, known.domain, known.listeners, known.public_port),
    };
    let services = services(ctx, &raw.service);

    if !id_ok {
        return None;
    }
    Some(Device {
        name: raw.name.clone().unwrap_or_else(|| id.clone()),
        public_key,
        public: raw.public,
        upstream: upstream?,
        policy: Policy {
            host: host?,
            host_port,
            allowed_origins,
            origin: origin?,
            subprotocol: subprotocol?,
            protocols: protocols(ctx, &n.protocols),
        },
        services: services?,
        id,
    })
}

fn key(
    ctx: &mut Ctx<'_>,
    text: &Spanned<String>,
    id: &str,
    known: &mut Known<'_>,
) -> Option<PublicKey> {
    let key = match keys::parse_public_key(text.get_ref()) {
        Ok(k) => k,
        Err(e) => {
            let kind = ErrorKind::Key {
                what: "public_key",
                reason: e.to_string(),
            };
            ctx.error_at(text, kind);
            return None;
        }
    };
    if let Some((owner, first)) = known.keys.get(&key) {
        let kind = ErrorKind::DuplicateKey {
            key: key.to_string(),
            id: id.to_string(),
            owner: owner.clone(),
            first: first.clone(),
        };
        ctx.error_at(text, kind);
        return None;
    }
    known
        .keys
        .insert(key, (format!("device {id:?}"), ctx.locate(text)));
    Some(key)
}

fn direct(
    ctx: &mut Ctx<'_>,
    d: &file::DirectSection,
    raw: &file::DeviceSection,
    id: &str,
) -> Option<Upstream> {
    let address = ctx.address(&d.address);
    let socket = SocketOptions {
        mss: ctx.int(
            "mss",
            d.mss.as_ref(),
            u64::from(DEFAULT_MSS),
            u64::from(MIN_MSS)..=u64::from(MAX_MSS),
        ) as u32,
        ..SocketOptions::default()
    };
    let pin = d.pinned_cert_sha256.as_ref().and_then(|p| {
        let hex: String = p.get_ref().chars().filter(|&c| c != ':').collect();
        match keys::parse_hex32(&hex) {
            Ok(b) => Some(b),
            Err(e) => {
                let kind = ErrorKind::Key {
                    what: "pinned_cert_sha256",
                    reason: e.to_string(),
                };
                ctx.error_at(p, kind);
                None
            }
        }
    });
    let tls = match (d.tls, &d.pinned_cert_sha256) {
        (true, None) => {
            ctx.error_at(
                &d.address,
                ErrorKind::Conflict(format!(
                    "device {id:?}: a direct upstream with tls = true needs pinned_cert_sha256 \
                     (device certificates are self-signed; there is no CA to check them against)"
                )),
            );
            None
        }
        (false, Some(p)) => {
            let kind = ErrorKind::Conflict("pinned_cert_sha256 needs tls = true".into());
            ctx.error_at(p, kind);
            None
        }
        (false, None) => Some(None),
        (true, Some(_)) => {
            let server_name = match (&d.server_name, &raw.normalize.host) {
                (Some(s), _) => ctx.host_name("server_name", s),
                (None, Some(h)) => Some(h.get_ref().to_ascii_lowercase()),
                (None, None) => Some(id.to_string()),
            };
            Some(Some(DirectTls {
                server_name: server_name?,
                pinned_cert_sha256: pin?,
            }))
        }
    };
    if d.server_name.is_some() && !d.tls {
        let kind = ErrorKind::Conflict("server_name needs tls = true".into());
        ctx.error(span(d.server_name.as_ref()), kind);
    }
    Some(Upstream::Direct(Direct {
        address: address?,
        tls: tls?,
        socket,
    }))
}

fn origin_policy(
    ctx: &mut Ctx<'_>,
    v: Option<&Spanned<file::OriginSection>>,
) -> Option<OriginPolicy> {
    let Some(v) = v else {
        return Some(OriginPolicy::Rewrite);
    };
    Some(match v.get_ref() {
        file::OriginSection::Rewrite => OriginPolicy::Rewrite,
        file::OriginSection::Keep => OriginPolicy::Keep,
        file::OriginSection::Strip => OriginPolicy::Strip,
        file::OriginSection::Set(o) => match check_origin(o) {
            Ok(o) => OriginPolicy::Set(o),
            Err(reason) => {
                ctx.invalid(v, "origin", o, reason);
                return None;
            }
        },
    })
}

fn protocols(ctx: &mut Ctx<'_>, list: &[Spanned<String>]) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        let v = p.get_ref();
        let ok = (1..=MAX_PROTOCOL).contains(&v.len())
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
        if ok {
            out.push(v.clone());
        } else {
            ctx.invalid(p, "protocol", v, "1 to 64 token characters (RFC 9110)");
        }
    }
    out
}

fn subprotocol_policy(
    ctx: &mut Ctx<'_>,
    v: Option<&Spanned<file::SubprotocolSection>>,
) -> Option<SubprotocolPolicy> {
    let Some(v) = v else {
        return Some(SubprotocolPolicy::Negotiate);
    };
    Some(match v.get_ref() {
        file::SubprotocolSection::Negotiate => SubprotocolPolicy::Negotiate,
        file::SubprotocolSection::Strip => SubprotocolPolicy::Strip,
        file::SubprotocolSection::Map(map) => {
            let mut ok = true;
            for (from, to) in map {
                ok &= ctx.token("subprotocol", v, from, MAX_PROTOCOL);
                ok &= ctx.token("subprotocol", v, to, MAX_PROTOCOL);
            }
            if !ok {
                return None;
            }
            SubprotocolPolicy::Map(map.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
        }
    })
}

fn services(ctx: &mut Ctx<'_>, raw: &[file::ServiceSection]) -> Option<Vec<ServiceRoute>> {
    let mut out: Vec<ServiceRoute> = Vec::new();
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut ok = true;
    for s in raw {
        ok &= ctx.token("service name", &s.name, s.name.get_ref(), MAX_SERVICE_NAME);
        let path = match &s.path {
            Some(p) => match check_path(p.get_ref()) {
                Ok(path) => path,
                Err(reason) => {
                    ctx.invalid(p, "service path", p.get_ref(), reason);
                    ok = false;
                    continue;
                }
            },
            None => "/".to_string(),
        };
        let at = span(s.path.as_ref()).unwrap_or_else(|| s.name.span());
        if let Some(first) = seen.get(&path) {
            let kind =
                ErrorKind::Conflict(format!("service path {path:?} is already routed ({first})"));
            ctx.error(Some(at), kind);
            ok = false;
            continue;
        }
        seen.insert(path.clone(), ctx.src.locate(Some(at)));
        out.push(ServiceRoute {
            name: s.name.get_ref().clone(),
            path,
            expose: match s.expose.as_ref().map(|e| *e.get_ref()) {
                None | Some(file::ExposeSection::Http) => Exposure::Http,
                Some(file::ExposeSection::Websocket) => Exposure::WebSocket,
            },
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.path.len()));
    ok.then_some(out)
}

/// `/` or `/a/b` (a trailing `/` removed): no query, fragment, empty, `.`
/// or `..` segments.
fn check_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err("must start with '/'".into());
    }
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    for seg in trimmed[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("empty, '.' and '..' segments are not allowed".into());
        }
        if !seg
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&c))
        {
            return Err("only URL path characters are allowed (no '?', '#' or spaces)".into());
        }
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check_path("/"), Ok("/".into()));
        assert_eq!(check_path("/modbus/"), Ok("/modbus".into()));
        assert_eq!(check_path("/a/b"), Ok("/a/b".into()));
        assert!(check_path("a").is_err());
        assert!(check_path("/a//b").is_err());
        assert!(check_path("/a/../b").is_err());
        assert!(check_path("/a?x").is_err());
        assert!(path_matches("/a", "/a"));
        assert!(path_matches("/a", "/a/b"));
        assert!(!path_matches("/a", "/ab"));
        assert!(path_matches("/", "/anything"));
    }

    #[test]
    fn own_origins_carry_non_default_ports() {
        let l = |a: &str, tls| Listener {
            address: a.parse().unwrap(),
            tls,
            socket: SocketOptions::default(),
        };
        assert_eq!(
            own_origins("d", "gw.example.com", &[l("[::]:443", true)], None),
            ["https://d.gw.example.com", "https://gw.example.com"]
        );
        assert_eq!(
            own_origins(
                "d",
                "localhost",
                &[l("[::]:8443", true), l("[::]:8080", false)],
                None
            ),
            [
                "https://d.localhost:8443",
                "https://localhost:8443",
                "http://d.localhost:8080",
                "http://localhost:8080"
            ]
        );
        assert_eq!(
            own_origins(
                "d",
                "x.org",
                &[l("[::]:8443", true), l("[::]:8080", false)],
                Some(443)
            ),
            [
                "https://d.x.org",
                "https://x.org",
                "http://d.x.org:8080",
                "http://x.org:8080"
            ]
        );
    }
}
