//! The gateway's own answers: errors that say which side failed, as a
//! short HTML page for browsers or JSON for scripts, and the landing page.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};

use super::Body;

/// An error the gateway answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPage {
    /// The status.
    pub status: StatusCode,
    /// A stable label (JSON `error`, header `x-gateway-error`, metrics).
    pub label: &'static str,
    /// One sentence for people.
    pub message: String,
}

impl ErrorPage {
    /// An error page.
    pub fn new(status: u16, label: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            label,
            message: message.into(),
        }
    }

    /// Renders it for a request with these headers: HTML when the client
    /// prefers it (browsers), JSON otherwise.
    pub fn render(&self, request: &HeaderMap) -> Response<Body> {
        let html = request
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        let (ctype, body) = if html {
            let title = self.status.canonical_reason().unwrap_or("Error");
            let page = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
                 <style>body{{font:16px system-ui,sans-serif;margin:3em auto;max-width:40em;color:#222}}\
                 code{{color:#666}}</style></head>\n<body><h1>{code} {title}</h1>\n<p>{msg}</p>\n\
                 <p><code>{label}</code></p></body></html>\n",
                code = self.status.as_u16(),
                msg = escape_html(&self.message),
                label = self.label,
            );
            ("text/html; charset=utf-8", page)
        } else {
            let json = format!(
                "{{\"error\":\"{}\",\"status\":{},\"message\":{}}}\n",
                self.label,
                self.status.as_u16(),
                json_string(&self.message)
            );
            ("application/json", json)
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-gateway-error", HeaderValue::from_static(self.label));
        resp
    }
}

/// A body from bytes.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A redirect (308 keeps the method).
pub fn redirect(location: &str) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A 303 (after a form, or to the login page).
pub fn redirect_see_other(location: &str) -> Response<Body> {
    let mut resp = redirect(location);
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp
}

/// One row of the landing page.
pub struct DeviceRow {
    /// Id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Online now.
    pub online: bool,
    /// Firmware version from its HELLO, when online.
    pub firmware: Option<String>,
    /// When it was last connected (now, if online), if ever.
    pub last_seen: Option<std::time::SystemTime>,
    /// Its last link round trip.
    pub rtt: Option<std::time::Duration>,
    /// A direct upstream (reached on demand; no session to show).
    pub direct: bool,
}

impl DeviceRow {
    /// "online, firmware 1.2, RTT 3 ms" or "offline, last seen ...".
    pub fn state(&self) -> String {
        if self.direct {
            return "direct upstream, reached on demand".to_string();
        }
        if self.online {
            let mut s = String::from("online");
            if let Some(fw) = &self.firmware {
                s.push_str(&format!(", firmware {fw}"));
            }
            if let Some(rtt) = self.rtt {
                s.push_str(&format!(", RTT {:.1} ms", rtt.as_secs_f64() * 1000.0));
            }
            s
        } else {
            match self.last_seen {
                Some(t) => format!(
                    "offline, last seen {}",
                    humantime::format_rfc3339_seconds(t)
                ),
                None => "offline, never connected since the gateway started".to_string(),
            }
        }
    }
}

/// The landing page: the devices `user` may open, with links to them, and
/// a logout form when the user logged in with a session (`csrf`).
pub fn landing(domain: &str, user: &str, rows: &[DeviceRow], csrf: Option<&str>) -> Response<Body> {
    let mut list = String::new();
    for r in rows {
        let state = escape_html(&r.state());
        list.push_str(&format!(
            "<li><a href=\"/d/{id}/\">{name}</a> <code>{id}</code> — {state}</li>\n",
            id = r.id,
            name = escape_html(&r.name),
        ));
    }
    if rows.is_empty() {
        list.push_str("<li>No devices you may open.</li>\n");
    }
    let logout = csrf.map_or(String::new(), |c| {
        format!(
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button>Log out</button></form>\n",
            escape_html(c)
        )
    });
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{d}</title>\
         <style>body{{font:16px system-ui,sans-serif;margin:3em auto;max-width:40em}}</style>\
         </head>\n<body><h1>Devices at {d}</h1>\n<p>Logged in as {u}.</p>\n{logout}<ul>\n{list}</ul></body></html>\n",
        d = escape_html(domain),
        u = escape_html(user),
    );
    let mut resp = Response::new(full(page));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(resp: Response<Body>) -> String {
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn html_for_browsers_json_for_scripts() {
        let e = ErrorPage::new(502, "device_offline", "Device <x> is \"offline\".");
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*"));
        let r = e.render(&h);
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["x-gateway-error"], "device_offline");
        let page = text(r).await;
        assert!(page.contains("Device &lt;x&gt; is &quot;offline&quot;."));
        let json = text(e.render(&HeaderMap::new())).await;
        assert_eq!(
            json,
            "{\"error\":\"device_offline\",\"status\":502,\"message\":\"Device <x> is \\\"offline\\\".\"}\n"
        );
    }
}
