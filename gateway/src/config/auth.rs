//! Who may open which device: users, groups (expanded at load), API
//! tokens, session and throttling settings, the client-certificate CA.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_spanned::Spanned;

use super::Secret;
use super::error::{ErrorKind, Location, Source};
use super::file;
use super::value::Ctx;
use crate::auth::password;

/// Devices a principal may open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSet {
    /// Every device (`"*"`).
    All,
    /// These ids (groups expanded).
    Some(BTreeSet<String>),
}

impl DeviceSet {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Some(s) => s.contains(id),
        }
    }
}

/// A person who may log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// argon2id PHC string, if password login is allowed.
    pub password_hash: Option<Secret<String>>,
    /// What the user may open.
    pub devices: DeviceSet,
    /// Common name of the user's client certificate, if any.
    pub client_cert_cn: Option<String>,
}

/// An API bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Name (logs, revocation).
    pub name: String,
    /// SHA-256 of the token, lower-case hex.
    pub sha256: String,
    /// What it may open.
    pub devices: DeviceSet,
}

/// `[auth]` and the principals.
#[derive(Clone, Debug)]
pub struct Auth {
    /// Users, from the file and the users file.
    pub users: Vec<User>,
    /// Tokens.
    pub tokens: Vec<Token>,
    /// Idle session expiry. Default 30 min.
    pub session_idle: Duration,
    /// Absolute session expiry. Default 12 h.
    pub session_max: Duration,
    /// Failed logins per address and per name within `login_window`. Default 5.
    pub login_attempts: u32,
    /// Default 15 min.
    pub login_window: Duration,
    /// CA for client certificates, loaded.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
    /// The users file, resolved.
    pub users_file: Option<PathBuf>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            tokens: Vec::new(),
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            login_attempts: 5,
            login_window: Duration::from_secs(15 * 60),
            client_ca: None,
            users_file: None,
        }
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-@".contains(&c))
}

/// What the entries of both files are checked against.
struct Seen {
    users: HashMap<String, Location>,
    tokens: HashMap<String, Location>,
    cns: HashMap<String, Location>,
    groups: HashMap<String, (BTreeSet<String>, Location)>,
}

/// Converts `[auth]`, `[[user]]`, `[[group]]`, `[[token]]` and the users
/// file.
pub(crate) fn auth(ctx: &mut Ctx<'_>, raw: &file::File, data_dir: &Path) -> Auth {
    let a = &raw.auth;
    let defaults = Auth::default();
    let mut out = Auth {
        session_idle: ctx.duration(a.session_idle.as_ref(), defaults.session_idle),
        session_max: ctx.duration(a.session_max.as_ref(), defaults.session_max),
        login_attempts: ctx.int("login_attempts", a.login_attempts.as_ref(), 5, 1..=1000) as u32,
        login_window: ctx.duration(a.login_window.as_ref(), defaults.login_window),
        ..defaults
    };
    if let Some(ca) = &a.client_ca {
        let path = data_dir.join(ca.get_ref());
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok(certs) if !certs.is_empty() => out.client_ca = Some(certs),
            Ok(_) => ctx.invalid(ca, "client_ca", ca.get_ref(), "no certificate in the file"),
            Err(e) => ctx.error_at(ca, ErrorKind::Read { path, reason: e }),
        }
    }
    let mut seen = Seen {
        users: HashMap::new(),
        tokens: HashMap::new(),
        cns: HashMap::new(),
        groups: HashMap::new(),
    };
    entries(ctx, &raw.group, &raw.user, &raw.token, &mut seen, &mut out);
    if let Some(field) = &a.users_file {
        let path = data_dir.join(field.get_ref());
        match std::fs::read_to_string(&path) {
            Err(e) => ctx.error_at(
                field,
                ErrorKind::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                },
            ),
            Ok(text) => {
                let src = Source::new(&path, text);
                match toml::from_str::<file::UsersFile>(src.text()) {
                    Err(e) => ctx.errors.push(src.toml_error(&e)),
                    Ok(u) => {
                        let mut uctx = Ctx {
                            src: &src,
                            errors: &mut *ctx.errors,
                        };
                        entries(&mut uctx, &u.group, &u.user, &u.token, &mut seen, &mut out);
                    }
                }
            }
        }
        out.users_file = Some(path);
    }
    out
}

fn entries(
    ctx: &mut Ctx<'_>,
    groups: &[file::GroupSection],
    users: &[file::UserSection],
    tokens: &[file::TokenSection],
    seen: &mut Seen,
    out: &mut Auth,
) {
    for g in groups {
        let name = g.name.get_ref();
        if !valid_name(name) {
            ctx.invalid(
                &g.name,
                "group name",
                name,
                "1 to 64 of a-z, 0-9, '.', '_', '-', '@'",
            );
            continue;
        }
        if let Some(first) = seen.groups.get(name).map(|(_, at)| at.clone()) {
            ctx.invalid(
                &g.name,
                "group name",
                name,
                format!("defined twice (first at {first})"),
            );
            continue;
        }
        let mut ids = BTreeSet::new();
        for d in &g.devices {
            if proto::wire::valid_device_id(d.get_ref()) {
                ids.insert(d.get_ref().clone());
            } else {
                ctx.error_at(d, ErrorKind::DeviceId(d.get_ref().clone()));
            }
        }
        seen.groups.insert(name.clone(), (ids, ctx.locate(&g.name)));
    }
    for u in users {
        let name = u.name.get_ref();
        if !valid_name(name) {
            ctx.invalid(
                &u.name,
                "user name",
                name,
                "1 to 64 of a-z, 0-9, '.', '_', '-', '@'",
            );
            continue;
        }
        if let Some(first) = seen.users.get(name) {
            let first = first.clone();
            ctx.invalid(
                &u.name,
                "user name",
                name,
                format!("defined twice (first at {first})"),
            );
            continue;
        }
        seen.users.insert(name.clone(), ctx.locate(&u.name));
        let password_hash =
            u.password_hash
                .as_ref()
                .and_then(|h| match password::check(h.get_ref()) {
                    Ok(()) => Some(Secret::new(h.get_ref().clone())),
                    Err(e) => {
                        ctx.invalid(h, "password_hash", "(hidden)", e.to_string());
                        None
                    }
                });
        let client_cert_cn = u.client_cert_cn.as_ref().and_then(|cn| {
            if let Some(first) = seen.cns.get(cn.get_ref()) {
                let first = first.clone();
                ctx.invalid(
                    cn,
                    "client_cert_cn",
                    cn.get_ref(),
                    format!("already used (at {first})"),
                );
                return None;
            }
            seen.cns.insert(cn.get_ref().clone(), ctx.locate(cn));
            Some(cn.get_ref().clone())
        });
        let devices = device_set(ctx, &u.devices, seen);
        out.users.push(User {
            name: name.clone(),
            password_hash,
            devices,
            client_cert_cn,
        });
    }
    for t in tokens {
        let name = t.name.get_ref();
        let digest = t.sha256.get_ref().to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            ctx.invalid(
                &t.sha256,
                "sha256",
                t.sha256.get_ref(),
                "64 hex digits (`gateway token` prints them)",
            );
            continue;
        }
        if let Some(first) = seen.tokens.get(&digest) {
            let first = first.clone();
            ctx.invalid(
                &t.sha256,
                "sha256",
                &digest,
                format!("the same token is listed at {first}"),
            );
            continue;
        }
        seen.tokens.insert(digest.clone(), ctx.locate(&t.sha256));
        let devices = device_set(ctx, &t.devices, seen);
        out.tokens.push(Token {
            name: name.clone(),
            sha256: digest,
            devices,
        });
    }
}

/// Device ids, `group:<name>` and `*`. Ids of devices that are not
/// configured are kept (removing a device must not invalidate its users).
fn device_set(ctx: &mut Ctx<'_>, list: &[Spanned<String>], seen: &Seen) -> DeviceSet {
    let mut ids = BTreeSet::new();
    for d in list {
        let v = d.get_ref();
        if v == "*" {
            return DeviceSet::All;
        }
        if let Some(g) = v.strip_prefix("group:") {
            match seen.groups.get(g) {
                Some((members, _)) => ids.extend(members.iter().cloned()),
                None => ctx.invalid(
                    d,
                    "device",
                    v,
                    "no [[group]] of that name in this file or the main configuration",
                ),
            }
        } else if proto::wire::valid_device_id(v) {
            ids.insert(v.clone());
        } else {
            ctx.error_at(d, ErrorKind::DeviceId(v.clone()));
        }
    }
    DeviceSet::Some(ids)
}
