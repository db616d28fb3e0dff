//! From a browser request to a device stream and back.
//!
//! ```text
//!  request ─────▶ route (host / path) ─▶ device config ─▶ checks that need no device:
//!                   Origin (403), WebSocket handshake (400/426), limits (431)
//!               ─▶ online? (502 at once) ─▶ service ─▶ normalized head ─▶ open stream
//!               ─▶ exchange: request body ⇉ device, response head (504 after the
//!                  response timeout) ─▶ response body ⇇ device
//!               ─▶ or WebSocket: 101 (HTTP/1.1) / 200 (HTTP/2 extended CONNECT),
//!                  then whole messages both ways (module `ws`)
//! ```
//!
//! Every answer the gateway makes itself says which side failed, with a
//! stable label (`x-gateway-error` and JSON `error`): `device_offline`,
//! `device_timeout`, `device_reset`, `bad_device_response` for the device;
//! `origin_foreign`, `origin_missing`, `headers_too_large` and the like for
//! the browser.
//!
//! # Memory
//!
//! Bodies are streamed: per direction at most one device window plus one
//! chunk is held (request chunks wait for device credit; response chunks
//! are credited back only once hyper has taken them). WebSocket messages
//! are whole, so at most `max_message` per direction and connection.
//!
//! # Upstreams
//!
//! The bridge talks to a [`DeviceStream`] for every upstream kind; the
//! raw-bytes stream kind and `direct` upstreams (a later step) plug in at
//! [`Bridge::device_request`], where the stream is opened.
//!
//! ## Layout
//!
//! - `gate`: access control: login pages, principals, live WebSockets.
//! - `route`: host- and path-based routing.
//! - `exchange`: the HTTP exchange over a device stream.
//! - `ws`: the WebSocket bridge.
//! - `wsconn`: the browser's WebSocket connection (frames), for `ws` and `tunnel`.
//! - `page`: error pages and the landing page.
//! - `stats`: the counters behind the metrics.

mod exchange;
mod gate;
pub mod page;
mod relay;
pub mod route;
mod stats;
mod tunnel;
mod upgrade;
mod upstream;
mod ws;
mod wsconn;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use proto::{ServiceKind, StreamKind};
use tracing::{debug, info};

use crate::auth::Access;
use crate::auth::login::Site;
use crate::config::auth::Auth;
use crate::config::{self, Device, Devices, ServiceChoice, Upstream};
use crate::link::{DeviceHandle, Hub, OpenError};
use crate::normalize::{self, Incoming as Inbound};
use gate::LiveSockets;
use page::ErrorPage;
use route::{DeviceTarget, Route};
use upstream::UpstreamRequest;

pub use stats::BridgeStats;
pub use ws::close_code_for_link_end;

/// Response bodies: streamed from a device or made by the gateway.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Request bodies: boxed at the edge from hyper's (HTTP/1.1, HTTP/2) or
/// from an HTTP/3 request stream (`edge::quic`), so one bridge serves both.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

/// The connection a request came in on.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    /// The browser's address.
    pub client: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
}

/// The common name of the verified client certificate of the connection a
/// request came in on (a request extension).
#[derive(Clone, Debug)]
pub struct ClientCn(pub Arc<str>);

/// The bridge: routing, checks and the exchanges.
pub struct Bridge {
    hub: Arc<Hub>,
    devices: RwLock<Arc<Devices>>,
    access: Access,
    site: RwLock<Site>,
    live: LiveSockets,
    direct: upstream::DirectClients,
    acme: RwLock<Option<Arc<crate::acme::Challenges>>>,
    domain: String,
    http: config::Http,
    websocket: config::WebSocket,
    /// `[gateway.limits] min_body_rate`, bytes/s (0: off).
    min_body_rate: std::sync::atomic::AtomicU64,
    /// Counters.
    pub stats: BridgeStats,
}

impl Bridge {
    /// A bridge to the devices of `hub`, configured by `devices`.
    pub fn new(
        hub: Arc<Hub>,
        devices: Devices,
        domain: String,
        http: config::Http,
        websocket: config::WebSocket,
    ) -> Arc<Self> {
        let site = Site {
            origins: vec![format!("https://{domain}")],
            domain: domain.clone(),
        };
        Arc::new(Self {
            hub,
            devices: RwLock::new(Arc::new(devices)),
            access: Access::new(Auth::default()),
            site: RwLock::new(site),
            live: LiveSockets::default(),
            direct: upstream::DirectClients::default(),
            acme: RwLock::new(None),
            domain,
            http,
            websocket,
            min_body_rate: std::sync::atomic::AtomicU64::new(0),
            stats: BridgeStats::default(),
        })
    }

    /// Sets the slowest request body the bridge waits for, in bytes per
    /// second of the time spent waiting on the browser (0: no minimum);
    /// see [`exchange`].
    pub fn set_min_body_rate(&self, rate: u64) {
        self.min_body_rate.store(rate, Ordering::Relaxed);
    }

    /// The minimum body rate and the grace before it is judged (the
    /// request head timeout).
    fn body_pace(&self) -> exchange::Pace {
        exchange::Pace {
            min_rate: self.min_body_rate.load(Ordering::Relaxed),
            grace: self.http.header_timeout,
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Replaces the device configuration (reload); WebSockets to devices
    /// their principal may no longer open are closed.
    pub fn set_devices(&self, devices: Devices) {
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(devices);
        self.recheck_live();
    }

    /// Sets users, tokens and session settings, and where the gateway is
    /// (`origins`: its own `scheme://domain[:port]`). On reload, sessions of
    /// removed users end and WebSockets no longer allowed close (1008);
    /// returns how many closed.
    pub fn set_access(&self, auth: Auth, origins: Vec<String>) -> usize {
        self.access.set(auth);
        let mut site = self.site.write().unwrap_or_else(|e| e.into_inner());
        site.origins = origins;
        drop(site);
        self.recheck_live()
    }

    /// Answers ACME HTTP-01 challenges from `challenges` (on any host and
    /// listener, before routing and access control).
    pub fn set_acme(&self, challenges: Arc<crate::acme::Challenges>) {
        *self.acme.write().unwrap_or_else(|e| e.into_inner()) = Some(challenges);
    }

    fn acme_answer(&self, req: &Request<RequestBody>) -> Option<Response<Body>> {
        let token = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")?;
        let challenges = self
            .acme
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let mut resp = match challenges.answer(token) {
            Some(ka) => Response::new(page::full(ka)),
            None => {
                let mut r = Response::new(page::full("no such challenge\n"));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        };
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Some(resp)
    }

    /// Users, sessions and tokens.
    pub fn access(&self) -> &Access {
        &self.access
    }

    fn site(&self) -> Site {
        self.site.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn devices(&self) -> Arc<Devices> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers one request (hyper's service function).
    pub async fn handle(
        self: Arc<Self>,
        conn: Conn,
        req: Request<RequestBody>,
    ) -> Result<Response<Body>, Infallible> {
        let started = std::time::Instant::now();
        let headers = req.headers().clone();
        let resp = match self.dispatch(conn, req).await {
            Ok(r) => r,
            Err(e) => {
                debug!(status = e.status.as_u16(), error = e.label, "{}", e.message);
                if e.status.is_server_error() {
                    info!(status = e.status.as_u16(), error = e.label, "{}", e.message);
                }
                e.render(&headers)
            }
        };
        self.stats
            .observe_response(resp.status().as_u16(), started.elapsed());
        Ok(resp)
    }

    async fn dispatch(
        self: &Arc<Self>,
        conn: Conn,
        req: Request<RequestBody>,
    ) -> Result<Response<Body>, ErrorPage> {
        if let Some(answer) = self.acme_answer(&req) {
            return Ok(answer);
        }
        let host = route::request_host(
            req.uri(),
            req.headers().get(header::HOST).map(HeaderValue::as_bytes),
        );
        match route::route(&self.domain, host.as_deref(), req.uri()) {
            Route::Device(target) => self.device_request(conn, req, target).await,
            Route::Redirect(location) => Ok(page::redirect(&location)),
            Route::Gateway { path } => self.gateway_page(conn, req, &path).await,
            Route::ForeignHost(h) => Err(self.refuse(ErrorPage::new(
                421,
                "unknown_host",
                format!("This gateway does not serve {h}."),
            ))),
            Route::NoHost => {
                Err(self.refuse(ErrorPage::new(400, "no_host", "The request names no host.")))
            }
        }
    }

    fn refuse(&self, e: ErrorPage) -> ErrorPage {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        e
    }

    async fn device_request(
        self: &Arc<Self>,
        conn: Conn,
        mut req: Request<RequestBody>,
        target: DeviceTarget,
    ) -> Result<Response<Body>, ErrorPage> {
        let devices = self.devices();
        let device = devices.get(&target.device);
        let websocket = ws::handshake_kind(&req).map_err(|e| self.refuse(e))?;
        // Who is asking comes first: without a login, an unknown device and
        // a known one get the same answer.
        let principal = match self.gate(conn, &req, device, websocket.is_some()) {
            Ok(p) => p,
            Err(resp) => return Ok(*resp),
        };
        let Some(device) = device else {
            return Err(self.refuse(ErrorPage::new(
                404,
                "unknown_device",
                format!("There is no device named {}.", target.device),
            )));
        };
        if req.method() == Method::CONNECT && websocket.is_none() {
            return Err(self.refuse(ErrorPage::new(
                405,
                "connect_refused",
                "CONNECT is only accepted for WebSockets (RFC 8441).",
            )));
        }
        normalize::check_origin(
            req.headers(),
            &device.policy.allowed_origins,
            websocket.is_some(),
        )
        .map_err(|r| {
            self.stats.origin_rejected.fetch_add(1, Ordering::Relaxed);
            self.refuse(ErrorPage::new(r.status(), r.label(), r.to_string()))
        })?;
        // Which server answers: a link HTTP service, a link raw service
        // (HTTP/1.1 over its bytes) or a direct upstream.
        let (upstream, announced) = match &device.upstream {
            Upstream::Direct(d) => (Target::Direct(d), None),
            Upstream::Link => {
                let Some(handle) = self.hub.device(&device.id) else {
                    self.stats.offline.fetch_add(1, Ordering::Relaxed);
                    return Err(offline(device));
                };
                let (service, kind, announced) = pick_service(device, &handle, &target.path)?;
                let tunnel = matches!(
                    device.service_for(&target.path),
                    ServiceChoice::Route(r) if r.expose == config::Exposure::WebSocket
                );
                match kind {
                    ServiceKind::Raw if tunnel => {
                        let Some(hs) = websocket else {
                            return Err(self.refuse(ErrorPage::new(
                                426,
                                "websocket_required",
                                format!("{} is a WebSocket carrying a device service's bytes; open it as a WebSocket.", target.path),
                            )));
                        };
                        let stream = handle
                            .open(StreamKind::Raw, service)
                            .await
                            .map_err(|e| open_error(device, e))?;
                        let browser = upgrade::on(&mut req);
                        let live = LiveSockets::register(
                            self,
                            principal,
                            &device.id,
                            take_place(&mut req),
                        );
                        tunnel::spawn(self.clone(), browser, stream, live, &device.id);
                        return Ok(hs.answer(None, &self.stats));
                    }
                    ServiceKind::Raw => (Target::Raw(handle, service), None),
                    _ => (Target::Link(handle, service), Some(announced)),
                }
            }
        };
        let offered = normalize::offered_subprotocols(req.headers());
        // Link services announce their subprotocols; other servers have them
        // configured, or get the browser's offer as it is.
        let known = announced.unwrap_or_else(|| device.policy.protocols.clone());
        let transparent =
            websocket.is_some() && known.is_empty() && !matches!(upstream, Target::Link(..));
        let choice = websocket.as_ref().map(|_| {
            if transparent {
                let all = (!offered.is_empty()
                    && device.policy.subprotocol != normalize::SubprotocolPolicy::Strip)
                    .then(|| offered.join(", "));
                return normalize::SubprotocolChoice {
                    browser: None,
                    device: all,
                };
            }
            let c = normalize::choose_subprotocol(&offered, &known, &device.policy.subprotocol);
            if offered.first() != c.device.as_ref() {
                self.stats
                    .subprotocol_rewritten
                    .fetch_add(1, Ordering::Relaxed);
            }
            c
        });
        if let Some(c) = &choice
            && !matches!(upstream, Target::Link(..))
            && !offered.is_empty()
            && c.browser.is_none()
            && !transparent
        {
            // A server with a fixed list would refuse or misroute the socket:
            // say so now instead of letting the browser wait.
            return Err(self.refuse(ErrorPage::new(
                400,
                "no_common_subprotocol",
                format!(
                    "None of the offered WebSocket subprotocols ({}) is one device {} supports ({}).",
                    offered.join(", "),
                    device.name,
                    known.join(", ")
                ),
            )));
        }
        let mut normalized = self.normalized(conn, &req, device, &target, choice.as_ref())?;
        let timeout = self.http.response_timeout;
        let (handle, service) = match upstream {
            Target::Link(handle, service) => (handle, service),
            Target::Raw(handle, service) => {
                let stream = handle
                    .open(StreamKind::Raw, service)
                    .await
                    .map_err(|e| open_error(device, e))?;
                let io = upstream::raw_io(stream);
                return self
                    .http1(
                        req,
                        normalized,
                        websocket,
                        choice,
                        principal,
                        device,
                        transparent,
                        |r, body| {
                            Box::pin(async move {
                                upstream::send_on(io, &r, body, timeout, &device.id).await
                            })
                        },
                    )
                    .await;
            }
            Target::Direct(d) => {
                let direct = d.clone();
                let id = device.id.clone();
                let bridge = self.clone();
                return self
                    .http1(
                        req,
                        normalized,
                        websocket,
                        choice,
                        principal,
                        device,
                        transparent,
                        move |r, body| {
                            Box::pin(async move {
                                bridge.direct.send(&id, &direct, &r, body, timeout).await
                            })
                        },
                    )
                    .await;
            }
        };
        normalized.ws_key = None;
        let head = self.fit_head(&mut normalized, usize::from(handle.max_head))?;
        if head.len() > usize::from(handle.max_head) {
            return Err(self.refuse(ErrorPage::new(
                431,
                "headers_too_large",
                format!(
                    "The request head is {} bytes after normalization; device {} accepts at most {}.",
                    head.len(),
                    device.id,
                    handle.max_head
                ),
            )));
        }
        let kind = if websocket.is_some() {
            StreamKind::WebSocket
        } else {
            StreamKind::Http
        };
        let stream = handle
            .open(kind, service)
            .await
            .map_err(|e| open_error(device, e))?;
        match (websocket, choice) {
            (Some(hs), Some(choice)) => {
                let upgrade = upgrade::on(&mut req);
                let live = LiveSockets::register(self, principal, &device.id, take_place(&mut req));
                let session = ws::Session {
                    handshake: hs,
                    subprotocol: choice.browser,
                    upgrade,
                    timeout,
                    live,
                };
                ws::bridge(self.clone(), stream, head, session).await
            }
            _ => exchange::exchange(self.clone(), stream, head, req.into_body(), timeout).await,
        }
    }

    /// An exchange with an HTTP/1.1 upstream (raw service or direct):
    /// `send` delivers the request; a WebSocket is relayed after a valid 101.
    #[allow(clippy::too_many_arguments)]
    async fn http1<'a, F>(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        mut normalized: UpstreamRequest,
        websocket: Option<ws::Handshake>,
        choice: Option<normalize::SubprotocolChoice>,
        principal: Option<crate::auth::Principal>,
        device: &'a Device,
        transparent: bool,
        send: F,
    ) -> Result<Response<Body>, ErrorPage>
    where
        F: FnOnce(UpstreamRequest, Body) -> Sending<'a>,
    {
        let Some(hs) = websocket else {
            let resp = send(normalized, req.into_body())
                .await
                .inspect_err(|e| self.count_upstream(e))?;
            return Ok(upstream::pass_back(resp));
        };
        let key = upstream::ws_key();
        normalized.ws_key = Some(key.clone());
        let browser = upgrade::on(&mut req);
        let resp = send(normalized, upstream::no_body())
            .await
            .inspect_err(|e| self.count_upstream(e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            self.stats.upstream_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %device.id, status = resp.status().as_u16(), "upstream refused the WebSocket upgrade");
            return Ok(upstream::pass_back(resp));
        }
        if !upstream::accept_matches(&key, resp.headers().get(header::SEC_WEBSOCKET_ACCEPT)) {
            self.stats.upstream_rejected.fetch_add(1, Ordering::Relaxed);
            return Err(upstream::bad_upgrade(&device.id, resp.status()));
        }
        let offered = normalize::offered_subprotocols(req.headers());
        let chosen = resp
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let browser_protocol = if transparent {
            chosen.filter(|c| offered.contains(c))
        } else {
            choice.and_then(|c| c.browser)
        };
        let answer = hs.answer(browser_protocol.as_deref(), &self.stats);
        let live = LiveSockets::register(self, principal, &device.id, take_place(&mut req));
        relay::spawn(
            self.clone(),
            browser,
            hyper::upgrade::on(resp),
            live,
            &device.id,
        );
        Ok(answer)
    }

    /// Encodes the head for a link service; when it is larger than the
    /// device takes, drops what only browsers need (client hints, fetch
    /// metadata, user agent, language, referrer, ...) until it fits.
    fn fit_head(&self, req: &mut UpstreamRequest, max: usize) -> Result<Vec<u8>, ErrorPage> {
        let encode = |r: &UpstreamRequest| {
            normalize::encode_request_head(&r.method, &r.target, &r.fields)
                .map_err(|e| self.refuse(ErrorPage::new(e.status(), e.label(), e.to_string())))
        };
        let mut head = encode(req)?;
        for expendable in EXPENDABLE {
            if head.len() <= max {
                break;
            }
            let before = req.fields.len();
            req.fields.retain(|(n, _)| !expendable(n.as_str()));
            if req.fields.len() != before {
                self.stats.trimmed.fetch_add(1, Ordering::Relaxed);
                head = encode(req)?;
            }
        }
        Ok(head)
    }

    fn count_upstream(&self, e: &ErrorPage) {
        if e.label == "upstream_rejected" {
            self.stats.upstream_rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The request toward the device, normalized per its policy.
    fn normalized(
        &self,
        conn: Conn,
        req: &Request<RequestBody>,
        device: &Device,
        target: &DeviceTarget,
        choice: Option<&normalize::SubprotocolChoice>,
    ) -> Result<UpstreamRequest, ErrorPage> {
        let public_host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let inbound = Inbound {
            headers: req.headers(),
            client: conn.client,
            public_host: &public_host,
            scheme: conn.scheme,
        };
        let device_host = match device.policy.host_port {
            Some(p) if p != 80 => format!("{}:{p}", device.policy.host),
            _ => device.policy.host.clone(),
        };
        if !public_host.eq_ignore_ascii_case(&device_host) {
            self.stats.host_rewritten.fetch_add(1, Ordering::Relaxed);
        }
        let mut fields = normalize::device_headers(
            &inbound,
            &device.policy,
            choice.and_then(|c| c.device.as_deref()),
        )
        .map_err(|r| self.refuse(ErrorPage::new(r.status(), r.label(), r.to_string())))?;
        if let Some(prefix) = &target.prefix {
            fields.push((
                HeaderName::from_static("x-forwarded-prefix"),
                prefix.as_bytes().to_vec(),
            ));
        }
        strip_gateway_credentials(&mut fields);
        // An HTTP/2 extended CONNECT is, toward the device, the GET of RFC 6455.
        let method = if choice.is_some() {
            "GET".to_string()
        } else {
            req.method().as_str().to_string()
        };
        Ok(UpstreamRequest {
            method,
            target: target.target.clone(),
            fields,
            ws_key: None,
        })
    }
}

/// Header fields dropped, group by group in this order, when a request head
/// does not fit the device's `max_head`: what only browsers and caches use.
const EXPENDABLE: &[fn(&str) -> bool] = &[
    |n| n.starts_with("sec-ch-"),
    |n| n.starts_with("sec-fetch-") || n == "priority" || n == "upgrade-insecure-requests",
    |n| n == "user-agent",
    |n| n == "accept-language" || n == "dnt" || n == "sec-gpc",
    |n| n == "referer",
    |n| n == "cache-control" || n == "pragma",
    |n| n == "x-forwarded-host" || n == "x-forwarded-proto" || n == "x-forwarded-for",
    |n| n == "accept",
];

/// Removes the gateway's own credentials from what the device receives:
/// its session and login cookies, and its API bearer tokens. (A device
/// must never learn a credential it could replay at the gateway.)
fn strip_gateway_credentials(fields: &mut Vec<(HeaderName, Vec<u8>)>) {
    fields.retain_mut(|(name, value)| {
        if *name == header::COOKIE {
            let text = String::from_utf8_lossy(value);
            let kept: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|kv| {
                    let k = kv.split('=').next().unwrap_or("");
                    !kv.is_empty()
                        && k != crate::auth::COOKIE
                        && k != crate::auth::login::LOGIN_COOKIE
                })
                .collect();
            *value = kept.join("; ").into_bytes();
            !value.is_empty()
        } else if *name == header::AUTHORIZATION {
            !value.starts_with(b"Bearer dlt_")
        } else {
            true
        }
    });
}

/// A request on its way to an HTTP/1.1 upstream.
type Sending<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<Incoming>, ErrorPage>> + Send + 'a>>;

/// Where a device request goes.
enum Target<'a> {
    /// A link HTTP service.
    Link(DeviceHandle, u8),
    /// A link raw service: HTTP/1.1 over its bytes.
    Raw(DeviceHandle, u8),
    /// A direct upstream.
    Direct(&'a config::Direct),
}

/// The browser connection's place under the caps, for a WebSocket's task
/// to keep (`edge::admission::Place`).
fn take_place(req: &mut Request<RequestBody>) -> Option<crate::edge::admission::Place> {
    req.extensions_mut().remove()
}

fn offline(device: &Device) -> ErrorPage {
    ErrorPage::new(
        502,
        "device_offline",
        format!(
            "Device {} is offline: it is not connected to the gateway.",
            device.name
        ),
    )
}

fn open_error(device: &Device, e: OpenError) -> ErrorPage {
    match e {
        OpenError::Offline => offline(device),
        OpenError::Busy => ErrorPage::new(
            503,
            "device_busy",
            format!(
                "Device {} is serving as many requests as it can; try again.",
                device.name
            ),
        ),
        OpenError::GoingAway => ErrorPage::new(
            503,
            "device_going_away",
            format!(
                "Device {} is reconnecting; try again in a moment.",
                device.name
            ),
        ),
    }
}

/// The service number for `path`, its kind and its announced subprotocols.
fn pick_service(
    device: &Device,
    handle: &DeviceHandle,
    path: &str,
) -> Result<(u8, ServiceKind, Vec<String>), ErrorPage> {
    let found = match device.service_for(path) {
        ServiceChoice::FirstHttp => handle
            .services
            .iter()
            .enumerate()
            .find(|(_, s)| s.kind == ServiceKind::Http)
            .map(|(i, s)| (i as u8, s)),
        ServiceChoice::Route(r) => handle.service(&r.name),
        ServiceChoice::None => {
            return Err(ErrorPage::new(
                404,
                "no_service",
                format!("No service of device {} serves {path}.", device.name),
            ));
        }
    };
    let Some((number, service)) = found else {
        return Err(ErrorPage::new(
            502,
            "service_unavailable",
            format!(
                "Device {} does not announce the service for {path}.",
                device.name
            ),
        ));
    };
    Ok((number, service.kind, service.subprotocols.clone()))
}

/// Hop-by-hop and framing fields never copied from a device's response.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// Spawns a browser WebSocket's task (`upstream`: "link", "http1" or
/// "raw") under a `websocket{device, upstream}` span at debug level, as
/// every event of those tasks is. A span is entered and left on every poll
/// of its task, two or three per relayed message: enabled (an `info` span
/// at the default log level), that cost about 5 % of the gateway's
/// instructions per message (BENCHMARKS.md, "Log spans off the message
/// path").
fn spawn_websocket(
    device: &str,
    upstream: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) {
    use tracing::Instrument as _;
    let span = tracing::debug_span!("websocket", device = %device, upstream);
    tokio::spawn(task.instrument(span));
}

/// Builds a response from a device's head.
fn response_from_head(
    head: &proto::wire::ResponseHead<'_>,
    device: &str,
) -> Result<Response<()>, ErrorPage> {
    let bad = |what: String| {
        ErrorPage::new(
            502,
            "bad_device_response",
            format!("Device {device} sent an invalid response: {what}."),
        )
    };
    let status =
        StatusCode::from_u16(head.status).map_err(|_| bad(format!("status {}", head.status)))?;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let mut map = HeaderMap::with_capacity(head.headers.len());
    for h in head.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad(format!("header name {:?}", h.name)))?;
        if hop_by_hop(&name) {
            continue;
        }
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| bad(format!("value of {}", h.name)))?;
        map.append(name, value);
    }
    *resp.headers_mut() = map;
    Ok(resp)
}
/// The size of the future `f` returns, without calling it: the tests that
/// keep the sockets' tasks small (an idle socket's task is most of its
/// memory).
#[cfg(test)]
fn returned_size<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
    size_of::<R>()
}
