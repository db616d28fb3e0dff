//! `[acme]`: automatic certificates, checked once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file;
use super::value::Ctx;

/// Default `renew_before`.
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// The challenge the gateway answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Challenge {
    /// RFC 8555 §8.3: a token over plain HTTP on port 80.
    #[default]
    Http01,
    /// RFC 8737: a self-signed certificate over TLS with ALPN `acme-tls/1`
    /// on port 443 (for gateways without port 80).
    TlsAlpn01,
}

/// Automatic certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acme {
    /// The directory URL.
    pub directory: String,
    /// Account contacts.
    pub contact: Vec<String>,
    /// Names on the certificate.
    pub names: Vec<String>,
    /// Renewal margin. Default 30 days.
    pub renew_before: Duration,
    /// A root for the ACME server's TLS, resolved.
    pub ca_root: Option<PathBuf>,
    /// Where the account, certificate and key are kept: `<data_dir>/acme`.
    pub dir: PathBuf,
    /// The challenge answered. Default HTTP-01.
    pub challenge: Challenge,
}

pub(crate) fn acme(
    ctx: &mut Ctx<'_>,
    raw: &file::AcmeSection,
    data_dir: &Path,
    default_names: Vec<String>,
) -> Option<Acme> {
    let directory = raw.directory.get_ref().trim().to_string();
    if !directory.starts_with("https://") {
        ctx.invalid(
            &raw.directory,
            "directory",
            &directory,
            "an https:// URL of the CA's ACME directory",
        );
    }
    let mut contact = Vec::new();
    for c in &raw.contact {
        if c.get_ref().starts_with("mailto:") {
            contact.push(c.get_ref().clone());
        } else {
            ctx.invalid(c, "contact", c.get_ref(), "a mailto: URL");
        }
    }
    let names = match &raw.names {
        None => default_names,
        Some(list) => list
            .iter()
            .filter_map(|n| ctx.host_name("name", n))
            .collect(),
    };
    let renew_before = ctx.duration(raw.renew_before.as_ref(), DEFAULT_RENEW_BEFORE);
    let ca_root = raw.ca_root.as_ref().map(|r| data_dir.join(r.get_ref()));
    if let (Some(path), Some(field)) = (&ca_root, &raw.ca_root)
        && !path.exists()
    {
        ctx.error_at(
            field,
            super::error::ErrorKind::Read {
                path: path.clone(),
                reason: "not found".into(),
            },
        );
    }
    let challenge = match raw.challenge.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("http-01") => Challenge::Http01,
        Some("tls-alpn-01") => Challenge::TlsAlpn01,
        Some(other) => {
            let field = raw.challenge.as_ref().unwrap_or(&raw.directory);
            ctx.invalid(field, "challenge", other, "\"http-01\" or \"tls-alpn-01\"");
            Challenge::Http01
        }
    };
    directory.starts_with("https://").then(|| Acme {
        directory,
        contact,
        names,
        renew_before,
        ca_root,
        dir: data_dir.join("acme"),
        challenge,
    })
}
