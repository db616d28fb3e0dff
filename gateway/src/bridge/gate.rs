//! Access control in front of the devices: the gateway's own pages (login,
//! logout, the landing page, `/api/devices`), the principal of each device
//! request, and the live WebSockets a reload may have to close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::RequestBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tokio::sync::Notify;

use super::page::{self, ErrorPage, full};
use super::{Body, Bridge, Conn};
use crate::auth::login::{self, encode};
use crate::auth::{Anonymous, Principal, audit};
use crate::config::Device;
use crate::edge::admission::Place;

/// A WebSocket that is open now, and who opened it.
struct Live {
    principal: Option<Principal>,
    device: String,
    stop: Arc<Notify>,
    /// The browser connection's place under the caps, kept while the
    /// socket is registered (`edge::admission::Place`; none over HTTP/3,
    /// which carries no WebSockets, and in unit tests). Kept here rather
    /// than in the guard, so the socket's task does not grow.
    _place: Option<Place>,
}

/// The open WebSockets, to close those a reload no longer allows.
#[derive(Default)]
pub(super) struct LiveSockets {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Live>>,
}

/// A WebSocket's place among the live ones: the signal that its access
/// was revoked, and its unregistration when dropped. A socket's task keeps
/// it whole for its life (a task that captured only the signal would drop
/// the rest, and the socket would leave the registry at once).
pub(super) struct LiveGuard {
    bridge: Arc<Bridge>,
    id: u64,
    stop: Arc<Notify>,
}

impl LiveGuard {
    /// Notified when a reload no longer allows this socket.
    pub(super) fn revoked(&self) -> &Notify {
        &self.stop
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let gone = self
            .bridge
            .live
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        // Its place goes back to the caps (their lock) after the map's
        // lock is released.
        drop(gone);
    }
}

impl LiveSockets {
    /// Registers a WebSocket of `principal` on `device`; its guard keeps
    /// `place`, its browser connection's place under the caps.
    pub(super) fn register(
        bridge: &Arc<Bridge>,
        principal: Option<Principal>,
        device: &str,
        place: Option<Place>,
    ) -> LiveGuard {
        let id = bridge.live.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        bridge
            .live
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                Live {
                    principal,
                    device: device.to_string(),
                    stop: stop.clone(),
                    _place: place,
                },
            );
        LiveGuard {
            bridge: bridge.clone(),
            id,
            stop,
        }
    }
}

impl Bridge {
    /// Closes (1008) the WebSockets whose principal may no longer open
    /// their device. Returns how many.
    pub(super) fn recheck_live(&self) -> usize {
        let devices = self.devices();
        let map = self.live.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for l in map.values() {
            let public = devices.get(&l.device).is_some_and(|d| d.public);
            let allowed = public
                || l.principal
                    .as_ref()
                    .is_some_and(|p| self.access.may_open(p, &l.device));
            if !allowed {
                l.stop.notify_one();
                n += 1;
            }
        }
        n
    }

    /// The principal of a request for `device`, or the answer to give.
    pub(super) fn gate(
        &self,
        conn: Conn,
        req: &Request<RequestBody>,
        device: Option<&Device>,
        websocket: bool,
    ) -> Result<Option<Principal>, Box<Response<Body>>> {
        if device.is_some_and(|d| d.public) {
            return Ok(None);
        }
        let cn = req
            .extensions()
            .get::<super::ClientCn>()
            .map(|c| c.0.clone());
        let principal = match self.access.authenticate(req.headers(), cn.as_deref()) {
            Ok(p) => p,
            Err(why) => return Err(Box::new(self.unauthenticated(conn, req, websocket, why))),
        };
        if principal.is_token {
            audit(
                "token_used",
                Some(&principal.name),
                conn.client,
                &format!("{} {}", req.method(), req.uri().path()),
            );
        }
        let Some(device) = device else {
            return Ok(Some(principal));
        };
        if !self.access.may_open(&principal, &device.id) {
            audit(
                "access_denied",
                Some(&principal.name),
                conn.client,
                &device.id,
            );
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let e = ErrorPage::new(
                403,
                "access_denied",
                format!("{} may not open device {}.", principal.name, device.name),
            );
            return Err(Box::new(e.render(req.headers())));
        }
        // Cookies ride along on cross-site requests; a state change must
        // prove where it comes from (check_origin refuses foreign ones).
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if principal.via == crate::auth::Via::Cookie
            && !safe
            && !req.headers().contains_key(header::ORIGIN)
        {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let e = ErrorPage::new(
                403,
                "origin_required",
                "A state-changing request authorized by the session cookie must carry Origin.",
            );
            return Err(Box::new(e.render(req.headers())));
        }
        let document = req.method() == Method::GET
            && (websocket
                || req
                    .headers()
                    .get("sec-fetch-dest")
                    .is_some_and(|v| v == "document"));
        if document {
            audit(
                "device_opened",
                Some(&principal.name),
                conn.client,
                &device.id,
            );
        }
        Ok(Some(principal))
    }

    /// 303 to the login page for a browser navigating; 401 otherwise.
    fn unauthenticated(
        &self,
        conn: Conn,
        req: &Request<RequestBody>,
        websocket: bool,
        why: Anonymous,
    ) -> Response<Body> {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let navigating = matches!(*req.method(), Method::GET | Method::HEAD)
            && !websocket
            && why == Anonymous::None
            && req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
        if navigating {
            let here = format!(
                "{}://{}{}",
                conn.scheme,
                public_authority(req),
                req.uri()
                    .path_and_query()
                    .map_or("/", http::uri::PathAndQuery::as_str)
            );
            let base = self.gateway_base(conn, req);
            return page::redirect_see_other(&format!("{base}/login?next={}", encode(&here)));
        }
        let (label, msg) = match why {
            Anonymous::BadToken => ("invalid_token", "The bearer token is not valid."),
            Anonymous::None => ("login_required", "Log in, or send an API token."),
        };
        let mut r = ErrorPage::new(401, label, msg).render(req.headers());
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"devlink\""),
        );
        r
    }

    /// `<scheme>://<domain>[:port]` as the browser reaches this gateway.
    fn gateway_base(&self, conn: Conn, req: &Request<RequestBody>) -> String {
        let authority = public_authority(req);
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.contains(']'));
        match port {
            Some(p) => format!("{}://{}:{p}", conn.scheme, self.domain),
            None => format!("{}://{}", conn.scheme, self.domain),
        }
    }

    /// The gateway's own paths.
    pub(super) async fn gateway_page(
        self: &Arc<Self>,
        conn: Conn,
        req: Request<RequestBody>,
        path: &str,
    ) -> Result<Response<Body>, ErrorPage> {
        let secure = conn.scheme == "https";
        let site = self.site();
        match (req.method().clone(), path) {
            (Method::GET, "/login") => {
                let next = query_param(req.uri().query().unwrap_or(""), "next").unwrap_or_default();
                Ok(login::login_form(&self.access, &next, secure, &site))
            }
            (Method::POST, "/login") => {
                let (parts, body) = req.into_parts();
                Ok(login::login(
                    &self.access,
                    &parts.headers,
                    body,
                    conn.client,
                    secure,
                    &site,
                )
                .await)
            }
            (Method::POST, "/logout") => {
                let (parts, body) = req.into_parts();
                Ok(login::logout(
                    &self.access,
                    &parts.headers,
                    body,
                    conn.client,
                    secure,
                    &site,
                )
                .await)
            }
            (Method::GET, "/" | "/api/devices") => {
                let principal = match self.gate(conn, &req, None, false) {
                    Ok(p) => p,
                    Err(r) => return Ok(*r),
                };
                let Some(p) = principal else {
                    return Ok(page::redirect_see_other("/login"));
                };
                if path == "/" {
                    Ok(self.landing(&p))
                } else {
                    Ok(self.device_list(&p))
                }
            }
            (_, "/login" | "/logout" | "/" | "/api/devices") => Err(ErrorPage::new(
                405,
                "method_not_allowed",
                format!("{} is not allowed on {path}.", req.method()),
            )),
            _ => Err(ErrorPage::new(
                404,
                "not_found",
                format!(
                    "Nothing here: {path}. Devices are at /d/<device>/ or <device>.{}.",
                    self.domain
                ),
            )),
        }
    }

    fn rows(&self, p: &Principal) -> Vec<page::DeviceRow> {
        let allowed = self.access.devices_of(p);
        let devices = self.devices();
        devices
            .iter()
            .filter(|d| d.public || allowed.as_ref().is_some_and(|a| a.contains(&d.id)))
            .map(|d| {
                let online = self.hub.device(&d.id);
                let presence = self.hub.presence(&d.id);
                page::DeviceRow {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    online: online.is_some(),
                    firmware: online.map(|h| h.firmware),
                    last_seen: presence.map(|p| p.last_seen),
                    rtt: presence.and_then(|p| p.rtt),
                    direct: matches!(d.upstream, crate::config::Upstream::Direct(_)),
                }
            })
            .collect()
    }

    fn landing(&self, p: &Principal) -> Response<Body> {
        let csrf = self.access.session_of(p).map(|s| s.csrf);
        page::landing(&self.domain, &p.name, &self.rows(p), csrf.as_deref())
    }

    fn device_list(&self, p: &Principal) -> Response<Body> {
        let mut json = String::from("[");
        for (i, r) in self.rows(p).iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let last_seen = r.last_seen.map_or("null".to_string(), |t| {
                format!("\"{}\"", humantime::format_rfc3339_seconds(t))
            });
            let rtt = r.rtt.map_or("null".to_string(), |d| {
                format!("{:.3}", d.as_secs_f64() * 1000.0)
            });
            json.push_str(&format!(
                "{{\"id\":\"{}\",\"name\":{},\"online\":{},\"last_seen\":{last_seen},\"rtt_ms\":{rtt}}}",
                r.id,
                page::json_string(&r.name),
                r.online
            ));
        }
        json.push_str("]\n");
        let mut resp = Response::new(full(Bytes::from(json)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        *resp.status_mut() = StatusCode::OK;
        resp
    }
}

/// The authority the browser used (`:authority` or Host).
fn public_authority(req: &Request<RequestBody>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| login::decode(v))
}
