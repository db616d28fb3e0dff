//! Access control: who is asking, and may they open this device.
//!
//! ```text
//!  request ─▶ device public? ── yes ─▶ bridge
//!             │ no
//!             ▼
//!  Authorization: Bearer <token> ──▶ token (SHA-256 lookup)      ┐
//!  Cookie: devlink_session=<id>  ──▶ session (idle + absolute)  ├─▶ principal ─▶ allowed? ─▶ bridge
//!  client certificate (mTLS)     ──▶ user with that common name ┘        │ no: 403, audit
//!  none: HTML navigation → 303 to /login; API or WebSocket → 401 (device never contacted)
//! ```
//!
//! Sessions live in memory (a restart logs everyone out). Their ids are 128
//! random bits; cookies are `HttpOnly; Secure; SameSite=Lax` with
//! `Domain=<gateway domain>`, so one login covers `<device>.<domain>` too
//! (see the README for the trade-off). State-changing requests authorized
//! by the cookie must carry an allowed Origin (the CSRF defence for device
//! UIs); the gateway's own forms also carry a CSRF token.
//!
//! Every decision is logged on the `audit` target: login success and
//! failure, logout, device opened, access denied, token used.
//!
//! ## Layout
//!
//! - `password`: argon2id hashes, tokens.
//! - `session`: the session store.
//! - `throttle`: failed-login limits per address and per name.
//! - `login`: the login and logout pages.

pub mod login;
pub mod password;
pub mod session;
pub mod throttle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http::HeaderMap;
use http::header;

use crate::config::auth::{Auth, DeviceSet};
use session::Sessions;
use throttle::Throttle;

/// The session cookie's name.
pub const COOKIE: &str = "devlink_session";

/// How a request proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The session cookie.
    Cookie,
    /// `Authorization: Bearer`.
    Token,
    /// A client certificate.
    Certificate,
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User or token name.
    pub name: String,
    /// A token (not a user).
    pub is_token: bool,
    /// How.
    pub via: Via,
    /// The session id, for cookie logins.
    pub session: Option<String>,
}

/// Why a request has no principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anonymous {
    /// Nothing presented.
    None,
    /// A bearer token that is not (or no longer) valid.
    BadToken,
}

struct Tables {
    auth: Arc<Auth>,
    users: HashMap<String, usize>,
    tokens: HashMap<String, usize>,
    cns: HashMap<String, usize>,
}

impl Tables {
    fn new(auth: Auth) -> Self {
        let users = auth
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        let tokens = auth
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.sha256.clone(), i))
            .collect();
        let cns = auth
            .users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.client_cert_cn.clone().map(|cn| (cn, i)))
            .collect();
        Self {
            auth: Arc::new(auth),
            users,
            tokens,
            cns,
        }
    }
}

/// Users, tokens, sessions and throttling, replaceable on reload.
pub struct Access {
    tables: RwLock<Tables>,
    /// Login sessions.
    pub sessions: Sessions,
    /// Failed-login limits.
    pub throttle: Throttle,
    /// Login attempts by outcome (`gateway_logins_total{outcome}`).
    pub logins: LoginCounts,
}

/// Login attempts by outcome.
#[derive(Debug, Default)]
pub struct LoginCounts {
    /// Logged in.
    pub ok: std::sync::atomic::AtomicU64,
    /// Wrong user name or password (the two are not told apart).
    pub failed: std::sync::atomic::AtomicU64,
    /// The form's CSRF token or origin did not check out.
    pub csrf: std::sync::atomic::AtomicU64,
    /// Refused by the failed-login throttle (429).
    pub throttled: std::sync::atomic::AtomicU64,
}

impl LoginCounts {
    fn count(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Access {
    /// From the configuration's `[auth]`.
    pub fn new(auth: Auth) -> Self {
        let sessions = Sessions::new(auth.session_idle, auth.session_max);
        let throttle = Throttle::new(auth.login_attempts, auth.login_window);
        Self {
            tables: RwLock::new(Tables::new(auth)),
            sessions,
            throttle,
            logins: LoginCounts::default(),
        }
    }

    /// Replaces users and tokens (reload); sessions of users who are gone
    /// end at once.
    pub fn set(&self, auth: Auth) {
        self.sessions
            .set_limits(auth.session_idle, auth.session_max);
        self.throttle
            .set_limits(auth.login_attempts, auth.login_window);
        let tables = Tables::new(auth);
        self.sessions.retain_users(|u| tables.users.contains_key(u));
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = tables;
    }

    fn tables(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any user could log in (otherwise the login page says so).
    pub fn has_users(&self) -> bool {
        !self.tables().auth.users.is_empty()
    }

    /// The password hash of `user`, if the user exists and has one.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        let t = self.tables();
        let i = *t.users.get(user)?;
        t.auth.users[i]
            .password_hash
            .as_ref()
            .map(|h| h.expose().clone())
    }

    /// Who sent `headers` (and the client certificate's common name, if
    /// one was verified).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client_cn: Option<&str>,
    ) -> Result<Principal, Anonymous> {
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let token = auth
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let t = self.tables();
            let found = token
                .map(password::token_digest)
                .and_then(|d| t.tokens.get(&d).map(|i| &t.auth.tokens[*i]));
            return match found {
                Some(tok) => Ok(Principal {
                    name: tok.name.clone(),
                    is_token: true,
                    via: Via::Token,
                    session: None,
                }),
                None => Err(Anonymous::BadToken),
            };
        }
        if let Some(id) = cookie(headers, COOKIE)
            && let Some(s) = self.sessions.touch(&id)
            && self.tables().users.contains_key(&s.user)
        {
            return Ok(Principal {
                name: s.user,
                is_token: false,
                via: Via::Cookie,
                session: Some(id),
            });
        }
        if let Some(cn) = client_cn {
            let t = self.tables();
            if let Some(i) = t.cns.get(cn) {
                return Ok(Principal {
                    name: t.auth.users[*i].name.clone(),
                    is_token: false,
                    via: Via::Certificate,
                    session: None,
                });
            }
        }
        Err(Anonymous::None)
    }

    /// Whether `p` may open device `id` (false for principals removed by a
    /// reload).
    pub fn may_open(&self, p: &Principal, id: &str) -> bool {
        self.devices_of(p).is_some_and(|d| d.contains(id))
    }

    /// What `p` may open, if it still exists.
    pub fn devices_of(&self, p: &Principal) -> Option<DeviceSet> {
        let t = self.tables();
        if p.is_token {
            t.auth
                .tokens
                .iter()
                .find(|tok| tok.name == p.name)
                .map(|tok| tok.devices.clone())
        } else {
            t.users
                .get(&p.name)
                .map(|i| t.auth.users[*i].devices.clone())
        }
    }

    /// The session of `p`, if it logged in with the cookie and the session
    /// is still live (for the logout form's CSRF token).
    pub fn session_of(&self, p: &Principal) -> Option<session::Session> {
        p.session.as_deref().and_then(|id| self.sessions.touch(id))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Logs an audit event (target `audit`).
pub fn audit(event: &'static str, who: Option<&str>, client: SocketAddr, detail: &str) {
    tracing::info!(target: "audit", event, who = who.unwrap_or("-"), client = %client, "{detail}");
}
