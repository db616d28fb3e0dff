//! Which device a browser request is for.
//!
//! Two forms, both always on:
//!
//! - **host-based**: `https://<device>.<domain>/path` → device `<device>`,
//!   path unchanged. The device's UI sees its own root, so absolute links
//!   work.
//! - **path-based**: `https://<domain>/d/<device>/path` → device
//!   `<device>`, path `/path` (the prefix is stripped and passed on as
//!   `X-Forwarded-Prefix`). One certificate name and one origin for every
//!   device, at the price of UIs having to use relative links.
//!
//! `https://<domain>/d/<device>` (no slash) redirects to the slash form so
//! relative links resolve inside the prefix. Any other host is refused with
//! 421 (the gateway is never an open proxy).

use http::Uri;

/// The outcome of routing one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A device request.
    Device(DeviceTarget),
    /// The gateway's own pages under its domain (landing page, 404s).
    Gateway {
        /// The path (without query).
        path: String,
    },
    /// `/d/<device>` without the trailing slash: redirect here.
    Redirect(String),
    /// The Host names neither the domain nor a device under it.
    ForeignHost(String),
    /// No Host at all (HTTP/1.0 without Host, or a bad authority).
    NoHost,
}

/// A request for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTarget {
    /// The device id.
    pub device: String,
    /// The target toward the device: path and query, origin-form.
    pub target: String,
    /// The path alone (for service routes).
    pub path: String,
    /// `/d/<device>` for path-based routing.
    pub prefix: Option<String>,
}

/// The host name (lower case, without port) of a request: the URI's
/// authority (HTTP/2, absolute-form) or the Host header.
pub fn request_host(uri: &Uri, host_header: Option<&[u8]>) -> Option<String> {
    let raw = match uri.authority() {
        Some(a) => a.as_str().to_string(),
        None => std::str::from_utf8(host_header?).ok()?.trim().to_string(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(authority.host().trim_end_matches('.').to_ascii_lowercase())
}

/// Routes a request for `host` and `uri` under `domain`.
pub fn route(domain: &str, host: Option<&str>, uri: &Uri) -> Route {
    let Some(host) = host else {
        return Route::NoHost;
    };
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if let Some(label) = host
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    {
        if proto::wire::valid_device_id(label) {
            return Route::Device(DeviceTarget {
                device: label.to_string(),
                target: format!("{path}{query}"),
                path: path.to_string(),
                prefix: None,
            });
        }
        return Route::ForeignHost(host.to_string());
    }
    if host != domain {
        return Route::ForeignHost(host.to_string());
    }
    let Some(rest) = path.strip_prefix("/d/") else {
        return Route::Gateway {
            path: path.to_string(),
        };
    };
    let (id, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !proto::wire::valid_device_id(id) {
        return Route::Gateway {
            path: path.to_string(),
        };
    }
    if tail.is_empty() {
        return Route::Redirect(format!("/d/{id}/{query}"));
    }
    Route::Device(DeviceTarget {
        device: id.to_string(),
        target: format!("{tail}{query}"),
        path: tail.to_string(),
        prefix: Some(format!("/d/{id}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: &str, uri: &str) -> Route {
        route("gw.example", Some(host), &uri.parse().unwrap())
    }

    #[test]
    fn host_based() {
        assert_eq!(
            r("plc-1.gw.example", "/api/x?y=1"),
            Route::Device(DeviceTarget {
                device: "plc-1".into(),
                target: "/api/x?y=1".into(),
                path: "/api/x".into(),
                prefix: None,
            })
        );
        assert_eq!(
            r("a.b.gw.example", "/"),
            Route::ForeignHost("a.b.gw.example".into())
        );
        assert_eq!(
            r("Evil.example", "/"),
            Route::ForeignHost("Evil.example".into())
        );
    }

    #[test]
    fn path_based() {
        assert_eq!(
            r("gw.example", "/d/plc-1/index.html?q"),
            Route::Device(DeviceTarget {
                device: "plc-1".into(),
                target: "/index.html?q".into(),
                path: "/index.html".into(),
                prefix: Some("/d/plc-1".into()),
            })
        );
        assert_eq!(
            r("gw.example", "/d/plc-1?x=1"),
            Route::Redirect("/d/plc-1/?x=1".into())
        );
        assert_eq!(
            r("gw.example", "/d/Bad_Id/x"),
            Route::Gateway {
                path: "/d/Bad_Id/x".into()
            }
        );
        assert_eq!(r("gw.example", "/"), Route::Gateway { path: "/".into() });
    }

    #[test]
    fn hosts() {
        let u: Uri = "/x".parse().unwrap();
        assert_eq!(
            request_host(&u, Some(b"PLC.gw.example:8443")).as_deref(),
            Some("plc.gw.example")
        );
        assert_eq!(request_host(&u, Some(b"user@host")), None);
        assert_eq!(request_host(&u, None), None);
        let abs: Uri = "https://gw.example./x".parse().unwrap();
        assert_eq!(request_host(&abs, None).as_deref(), Some("gw.example"));
        assert_eq!(route("gw.example", None, &u), Route::NoHost);
    }
}
