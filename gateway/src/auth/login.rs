//! The gateway's login and logout pages.
//!
//! - `GET /login?next=URL`: the form, with a CSRF token also set as a
//!   short-lived `devlink_login` cookie (double submit).
//! - `POST /login`: Origin (when sent) must be the gateway's own; the CSRF
//!   token must match its cookie; throttled per address and per submitted
//!   name (429 with `Retry-After`); a wrong password and an unknown user
//!   get the same 401 page after the same argon2id work. Success starts a
//!   session, sets the cookie and redirects (303) to `next` if it points
//!   at this gateway, else to `/`.
//! - `POST /logout`: needs the session's CSRF token; ends the session.

use std::net::SocketAddr;

use crate::bridge::RequestBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt as _;

use super::{Access, COOKIE, LoginCounts, audit, cookie, password, session};
use crate::bridge::Body;
use crate::bridge::page::full;

/// The pre-login CSRF cookie.
pub const LOGIN_COOKIE: &str = "devlink_login";
/// Largest login or logout form accepted.
const MAX_FORM: usize = 8 * 1024;

/// Where the gateway is, for cookies and redirects.
#[derive(Clone, Debug)]
pub struct Site {
    /// The domain (cookie `Domain`, unless it is `localhost`).
    pub domain: String,
    /// Origins of the gateway itself (`https://<domain>[:port]`).
    pub origins: Vec<String>,
}

impl Site {
    /// Whether the session cookie covers `<device>.<domain>` (browsers do
    /// not take `Domain=localhost`).
    pub fn shared_cookie(&self) -> bool {
        self.domain != "localhost"
    }

    fn cookie_attrs(&self, secure: bool) -> String {
        let mut a = String::from("; Path=/; HttpOnly; SameSite=Lax");
        if secure {
            a.push_str("; Secure");
        }
        if self.shared_cookie() {
            a.push_str("; Domain=");
            a.push_str(&self.domain);
        }
        a
    }

    /// `next` if it points at this gateway (or a device under it), else `/`.
    /// Without a shared cookie, a device host becomes its `/d/<id>/` path.
    pub fn safe_next(&self, next: &str) -> String {
        if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
            return next.to_string();
        }
        let rest = next
            .strip_prefix("https://")
            .or_else(|| next.strip_prefix("http://"));
        let Some(rest) = rest else {
            return "/".into();
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if authority.contains('@') {
            return "/".into();
        }
        if host == self.domain {
            return next.to_string();
        }
        match host
            .strip_suffix(&self.domain)
            .and_then(|l| l.strip_suffix('.'))
        {
            Some(label) if proto::wire::valid_device_id(label) => {
                if self.shared_cookie() {
                    next.to_string()
                } else {
                    format!("/d/{label}{}", if path.is_empty() { "/" } else { path })
                }
            }
            _ => "/".into(),
        }
    }
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        // No form-action: it would also govern the redirect after login, to
        // a device's own host.
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn form_page(csrf: &str, next: &str, message: Option<&str>, any_users: bool) -> String {
    let msg = message.map_or(String::new(), |m| {
        format!("<p class=\"err\" role=\"alert\">{}</p>\n", escape(m))
    });
    let none = if any_users {
        ""
    } else {
        "<p>No users are configured on this gateway: add <code>[[user]]</code> entries (see <code>gateway hash-password</code>).</p>\n"
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Log in</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font:16px system-ui,sans-serif;margin:4em auto;max-width:22em}}\
         input{{display:block;width:100%;margin:.3em 0 1em;padding:.4em;font:inherit}}\
         .err{{color:#b00}}</style></head>\n<body><h1>Log in</h1>\n{none}{msg}\
         <form method=\"post\" action=\"/login\">\n\
         <label>User <input name=\"user\" autocomplete=\"username\" required autofocus></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <button>Log in</button></form></body></html>\n",
        csrf = escape(csrf),
        next = escape(next),
    )
}

/// `GET /login`.
pub fn login_form(access: &Access, next: &str, secure: bool, site: &Site) -> Response<Body> {
    let csrf = session::random_id();
    let mut r = html(
        StatusCode::OK,
        form_page(&csrf, &site.safe_next(next), None, access.has_users()),
    );
    set_login_cookie(&mut r, &csrf, secure);
    r
}

fn set_login_cookie(r: &mut Response<Body>, csrf: &str, secure: bool) {
    let v = format!(
        "{LOGIN_COOKIE}={csrf}; Path=/login; Max-Age=3600; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Reads an `application/x-www-form-urlencoded` body of at most 8 KiB.
async fn form(body: RequestBody) -> Option<Vec<(String, String)>> {
    let bytes = http_body_util::Limited::new(body, MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).ok()?;
    Some(
        text.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k), decode(v))
            })
            .collect(),
    )
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Percent-decoding with `+` as space.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of everything but unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.bytes() {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn origin_ok(headers: &HeaderMap, site: &Site) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(o) => site.origins.iter().any(|own| own.eq_ignore_ascii_case(o)),
    }
}

/// `POST /login`.
pub async fn login(
    access: &Access,
    headers: &HeaderMap,
    body: RequestBody,
    client: SocketAddr,
    secure: bool,
    site: &Site,
) -> Response<Body> {
    let Some(form) = form(body).await else {
        return html(StatusCode::BAD_REQUEST, "bad form\n".into());
    };
    let (user, pass, csrf, next) = (
        field(&form, "user").trim().to_ascii_lowercase(),
        field(&form, "password").to_string(),
        field(&form, "csrf"),
        site.safe_next(field(&form, "next")),
    );
    let again = |status: StatusCode, msg: &str| {
        let token = session::random_id();
        let mut r = html(
            status,
            form_page(&token, &next, Some(msg), access.has_users()),
        );
        set_login_cookie(&mut r, &token, secure);
        r
    };
    if !origin_ok(headers, site)
        || csrf.is_empty()
        || cookie(headers, LOGIN_COOKIE).as_deref() != Some(csrf)
    {
        LoginCounts::count(&access.logins.csrf);
        audit("login_failed", Some(&user), client, "CSRF check failed");
        return again(StatusCode::FORBIDDEN, "The form expired; please try again.");
    }
    let ip_key = format!("ip:{}", client.ip());
    let user_key = format!("user:{user}");
    let keys = [ip_key.as_str(), user_key.as_str()];
    if let Err(wait) = access.throttle.check(&keys) {
        LoginCounts::count(&access.logins.throttled);
        audit(
            "login_throttled",
            Some(&user),
            client,
            "too many failed logins",
        );
        let mut r = again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins; wait a few minutes.",
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let hash = access.password_hash(&user);
    let ok = tokio::task::spawn_blocking(move || password::verify(hash.as_deref(), &pass))
        .await
        .unwrap_or(false);
    if !ok {
        access.throttle.fail(&keys);
        LoginCounts::count(&access.logins.failed);
        audit(
            "login_failed",
            Some(&user),
            client,
            "wrong user name or password",
        );
        return again(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    access.throttle.clear(&keys);
    let id = access.sessions.create(&user);
    LoginCounts::count(&access.logins.ok);
    audit("login", Some(&user), client, "logged in");
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&next) {
        h.insert(header::LOCATION, v);
    }
    let c = format!(
        "{COOKIE}={id}; Max-Age={}{}",
        access.sessions.max_age().as_secs(),
        site.cookie_attrs(secure)
    );
    if let Ok(v) = HeaderValue::from_str(&c) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{LOGIN_COOKIE}=; Path=/login; Max-Age=0")) {
        h.append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`.
pub async fn logout(
    access: &Access,
    headers: &HeaderMap,
    body: RequestBody,
    client: SocketAddr,
    secure: bool,
    site: &Site,
) -> Response<Body> {
    let form = form(body).await.unwrap_or_default();
    let id = cookie(headers, COOKIE);
    let session = id.as_deref().and_then(|i| access.sessions.touch(i));
    let Some(session) = session else {
        return redirect("/login");
    };
    if !origin_ok(headers, site) || field(&form, "csrf") != session.csrf {
        audit(
            "logout_refused",
            Some(&session.user),
            client,
            "CSRF check failed",
        );
        return html(
            StatusCode::FORBIDDEN,
            "The logout form expired; reload the page.\n".into(),
        );
    }
    if let Some(id) = id {
        access.sessions.remove(&id);
    }
    audit("logout", Some(&session.user), client, "logged out");
    let mut r = redirect("/login");
    let c = format!("{COOKIE}=; Max-Age=0{}", site.cookie_attrs(secure));
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn redirect(to: &str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(domain: &str) -> Site {
        Site {
            domain: domain.into(),
            origins: vec![format!("https://{domain}")],
        }
    }

    #[test]
    fn next_never_leaves_the_gateway() {
        let s = site("gw.example.com");
        assert_eq!(s.safe_next("/d/plc/x?y"), "/d/plc/x?y");
        assert_eq!(
            s.safe_next("https://plc.gw.example.com:8443/a"),
            "https://plc.gw.example.com:8443/a"
        );
        assert_eq!(
            s.safe_next("https://gw.example.com/"),
            "https://gw.example.com/"
        );
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "https://gw.example.com.evil.example/",
            "javascript:alert(1)",
            "https://u@evil.example/",
            "/\\evil",
        ] {
            assert_eq!(s.safe_next(bad), "/", "{bad}");
        }
        let local = site("localhost");
        assert_eq!(
            local.safe_next("https://demo.localhost:8443/api"),
            "/d/demo/api"
        );
        assert_eq!(local.safe_next("https://demo.localhost:8443"), "/d/demo/");
    }

    #[test]
    fn form_encoding_round_trips() {
        assert_eq!(decode("a+b%20c%2Fd%zz%"), "a b c/d%zz%");
        assert_eq!(encode("https://x/y?z=1"), "https%3A%2F%2Fx%2Fy%3Fz%3D1");
        assert_eq!(decode(&encode("ü &=")), "ü &=");
    }
}
