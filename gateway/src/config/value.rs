//! Checking one value at a time: addresses, durations, sizes, ranges, names,
//! origins and keys. Each check records a located error and returns `None`
//! (or the default) so that loading goes on and finds the next problem.

use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use serde_spanned::Spanned;

use super::error::{ConfigError, ErrorKind, Location, Source};
use super::file::Size;

/// One file being checked, and the errors found so far (in all files).
pub(crate) struct Ctx<'a> {
    pub(crate) src: &'a Source,
    pub(crate) errors: &'a mut Vec<ConfigError>,
}

fn span<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    Some(v.span())
}

impl Ctx<'_> {
    pub(crate) fn error(&mut self, span: Option<Range<usize>>, kind: ErrorKind) {
        self.errors.push(self.src.error(span, kind));
    }

    pub(crate) fn error_at<T>(&mut self, v: &Spanned<T>, kind: ErrorKind) {
        self.error(span(v), kind);
    }

    pub(crate) fn locate<T>(&self, v: &Spanned<T>) -> Location {
        self.src.locate(span(v))
    }

    pub(crate) fn invalid<T>(
        &mut self,
        v: &Spanned<T>,
        what: &'static str,
        value: &str,
        reason: impl Into<String>,
    ) {
        self.error_at(
            v,
            ErrorKind::Invalid {
                what,
                value: value.to_string(),
                reason: reason.into(),
            },
        );
    }

    pub(crate) fn address(&mut self, v: &Spanned<String>) -> Option<SocketAddr> {
        match v.get_ref().trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error_at(
                    v,
                    ErrorKind::Address {
                        value: v.get_ref().clone(),
                    },
                );
                None
            }
        }
    }

    /// An optional address with a default.
    pub(crate) fn address_or(
        &mut self,
        v: Option<&Spanned<String>>,
        default: &str,
    ) -> Option<SocketAddr> {
        match v {
            Some(v) => self.address(v),
            None => Some(default.parse().expect("default address")),
        }
    }

    /// A duration above zero.
    pub(crate) fn duration(&mut self, v: Option<&Spanned<String>>, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref().trim()) {
            Ok(d) if d.is_zero() => {
                self.error_at(
                    v,
                    ErrorKind::Duration {
                        value: v.get_ref().clone(),
                        reason: "must be above zero".into(),
                    },
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.error_at(
                    v,
                    ErrorKind::Duration {
                        value: v.get_ref().clone(),
                        reason: format!("{e} (write e.g. \"10s\", \"2m\", \"500ms\")"),
                    },
                );
                default
            }
        }
    }

    /// A duration, or `"off"`.
    pub(crate) fn duration_or_off(
        &mut self,
        v: Option<&Spanned<String>>,
        default: Option<Duration>,
    ) -> Option<Duration> {
        match v {
            Some(v) if v.get_ref().trim() == "off" => None,
            Some(v) => Some(self.duration(Some(v), Duration::ZERO)),
            None => default,
        }
    }

    /// A size within `range`.
    pub(crate) fn size(
        &mut self,
        field: &'static str,
        v: Option<&Spanned<Size>>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> u64 {
        let Some(v) = v else { return default };
        let bytes = match v.get_ref() {
            Size::Bytes(n) => u64::try_from(*n).ok(),
            Size::Text(t) => match parse_size(t) {
                Ok(n) => Some(n),
                Err(reason) => {
                    self.error_at(
                        v,
                        ErrorKind::Size {
                            value: t.clone(),
                            reason,
                        },
                    );
                    return default;
                }
            },
        };
        match bytes {
            Some(n) if range.contains(&n) => n,
            _ => {
                self.error_at(
                    v,
                    ErrorKind::Range {
                        field,
                        value: v.get_ref().to_string(),
                        range: format!(
                            "{}..={}",
                            show_size(*range.start()),
                            show_size(*range.end())
                        ),
                    },
                );
                default
            }
        }
    }

    /// An integer within `range`.
    pub(crate) fn int(
        &mut self,
        field: &'static str,
        v: Option<&Spanned<i64>>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> u64 {
        let Some(v) = v else { return default };
        match u64::try_from(*v.get_ref()) {
            Ok(n) if range.contains(&n) => n,
            _ => {
                self.error_at(
                    v,
                    ErrorKind::Range {
                        field,
                        value: v.get_ref().to_string(),
                        range: format!("{}..={}", range.start(), range.end()),
                    },
                );
                default
            }
        }
    }

    /// A DNS name (lower-cased), or an IP address.
    pub(crate) fn host_name(&mut self, what: &'static str, v: &Spanned<String>) -> Option<String> {
        let value = v.get_ref();
        match check_host(value) {
            Ok(h) => Some(h),
            Err(reason) => {
                self.invalid(v, what, value, reason);
                None
            }
        }
    }

    /// An origin `scheme://host[:port]`, lower-cased, default port removed.
    pub(crate) fn origin(&mut self, what: &'static str, v: &Spanned<String>) -> Option<String> {
        match check_origin(v.get_ref()) {
            Ok(o) => Some(o),
            Err(reason) => {
                self.invalid(v, what, v.get_ref(), reason);
                None
            }
        }
    }

    /// An HTTP token (subprotocol, service name) of at most `max` bytes.
    pub(crate) fn token<T>(
        &mut self,
        what: &'static str,
        v: &Spanned<T>,
        value: &str,
        max: usize,
    ) -> bool {
        let reason = if value.is_empty() {
            "must not be empty".to_string()
        } else if value.len() > max {
            format!("longer than {max} bytes")
        } else if !value.bytes().all(is_tchar) {
            "only letters, digits and !#$%&'*+-.^_`|~ are allowed".to_string()
        } else {
            return true;
        };
        self.invalid(v, what, value, reason);
        false
    }
}

fn show_size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    n.to_string()
}

/// Parses `"64KiB"`, `"1 MiB"`, `"16384"`, `"2MB"`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err("expected a number of bytes, optionally with a unit (e.g. \"64KiB\")".into());
    }
    let n: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| "number too large".into())
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A DNS name (labels of letters, digits, `-` and `_`), an IPv4 address or
/// a bracketed IPv6 address; lower-cased.
pub(crate) fn check_host(value: &str) -> Result<String, String> {
    let h = value.to_ascii_lowercase();
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| h.clone())
            .map_err(|_| "not an IPv6 address".to_string());
    }
    if h.is_empty() || h.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(
                "only letters, digits, '-', '_' and '.' are allowed (no port, no scheme)".into(),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'".into());
        }
    }
    Ok(h)
}

/// `scheme://host[:port]` with scheme `http` or `https`: lower-cased, the
/// scheme's default port removed, one trailing `/` tolerated; as browsers
/// send it in Origin.
pub(crate) fn check_origin(value: &str) -> Result<String, String> {
    let v = value.trim().to_ascii_lowercase();
    let (scheme, rest) = v
        .split_once("://")
        .ok_or("expected scheme://host[:port], e.g. \"https://plc-7.gw.example.com\"")?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return Err("the scheme must be http or https".into()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an origin has no path, query or user name".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port: u16 = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            (h, Some(port))
        }
        _ => (rest, None),
    };
    let host = check_host(host)?;
    Ok(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16384"), Ok(16384));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size(" 1 MiB "), Ok(1 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1 MeB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(show_size(65536), "64 KiB");
        assert_eq!(show_size(16402), "16402");
    }

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        assert_eq!(
            check_origin("HTTPS://Plc-7.GW.example.com:443/"),
            Ok("https://plc-7.gw.example.com".into())
        );
        assert_eq!(
            check_origin("http://localhost:8080"),
            Ok("http://localhost:8080".into())
        );
        assert_eq!(
            check_origin("https://[::1]:8443"),
            Ok("https://[::1]:8443".into())
        );
        assert!(check_origin("ftp://x").is_err());
        assert!(check_origin("https://x/path").is_err());
        assert!(check_origin("x.com").is_err());
        assert!(check_origin("https://x:99999").is_err());
        assert!(check_origin("https://").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(check_host("PLC-7.local"), Ok("plc-7.local".into()));
        assert_eq!(check_host("10.0.0.5"), Ok("10.0.0.5".into()));
        assert!(check_host("a:80").is_err());
        assert!(check_host("-a").is_err());
        assert!(check_host("a..b").is_err());
        assert!(check_host("[zz]").is_err());
    }
}
