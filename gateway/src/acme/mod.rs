//! Certificates from an ACME CA (RFC 8555), obtained and renewed without
//! an operator: HTTP-01 challenges answered by the gateway's own HTTP
//! listeners (`/.well-known/acme-challenge/<token>`), or TLS-ALPN-01
//! (RFC 8737, `[acme] challenge = "tls-alpn-01"`) answered by its TLS
//! listeners (a self-signed certificate with the `acmeIdentifier`
//! extension, served only to clients offering ALPN `acme-tls/1`; see
//! [`crate::edge::tls::CertResolver`]), an ECDSA P-256 key
//! per certificate, the account key kept, everything stored under
//! `<data_dir>/acme` so a restart reuses what it has (no new order per
//! start).
//!
//! ```text
//!  start ─▶ stored certificate still good? ── yes ─▶ serve it ─┐
//!                 │ no                                          │
//!                 ▼                                             ▼
//!          order ─▶ HTTP-01 ─▶ finalize ─▶ store ─▶ serve ─▶ sleep until expiry − renew_before
//!                 │ failure: the old certificate keeps serving;  ▲   (± 10 % jitter)
//!                 └─ metric, log line, retry in 1 min … 1 h ─────┘
//! ```
//!
//! DNS-01 (the only way to a wildcard) is an extension point: its
//! answerer would plug in at `authorize` next to the other two.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use prometheus::{IntCounter, IntGauge};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tracing::{info, warn};

use crate::config::acme::{Acme, Challenge};
use crate::edge::tls::{CertPair, CertResolver, alpn_challenge_key};

/// The shortest time between two orders that succeeded.
const MIN_REORDER: Duration = Duration::from_secs(3600);

/// Why obtaining a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused or failed (account, order, challenge, finalize).
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The order ended invalid (a challenge failed).
    #[error("the order for {names} is {status:?}: {detail}")]
    Order {
        /// Its names.
        names: String,
        /// Its status.
        status: OrderStatus,
        /// What the CA said about the failed authorizations.
        detail: String,
    },
    /// Reading or writing the stored account or certificate.
    #[error("{}: {reason}", path.display())]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The issued certificate does not load.
    #[error("the issued certificate does not load: {0}")]
    Certificate(String),
}

/// HTTP-01 tokens and their key authorizations, served by the bridge.
#[derive(Debug, Default)]
pub struct Challenges {
    map: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The key authorization for `token`, if a challenge is pending.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: &str, key_authorization: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Counters for the metrics endpoint (registered by the server).
#[derive(Debug, Clone)]
pub struct AcmeStats {
    /// Certificates obtained.
    pub issued: IntCounter,
    /// Attempts that failed.
    pub failures: IntCounter,
    /// Expiry of the certificate served, Unix seconds (0: none yet).
    pub expiry_unix: IntGauge,
}

impl Default for AcmeStats {
    fn default() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
        };
        Self {
            issued: counter(
                "gateway_acme_certificates_issued_total",
                "Certificates obtained from the ACME CA.",
            ),
            failures: counter(
                "gateway_acme_failures_total",
                "ACME orders that failed (the current certificate kept serving).",
            ),
            expiry_unix: IntGauge::new(
                "gateway_tls_certificate_expiry_timestamp_seconds",
                "Expiry of the ACME certificate served, Unix time (0 before the first).",
            )
            .unwrap_or_else(|e| unreachable!("metric: {e}")),
        }
    }
}

impl AcmeStats {
    /// The collectors, for a registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.issued.clone()),
            Box::new(self.failures.clone()),
            Box::new(self.expiry_unix.clone()),
        ]
    }
}

/// Obtains, stores, installs and renews the certificate.
pub struct Manager {
    cfg: Acme,
    /// Pending challenges.
    pub challenges: Arc<Challenges>,
    resolver: Arc<CertResolver>,
    static_pairs: Mutex<Vec<CertPair>>,
    /// Counters.
    pub stats: AcmeStats,
}

impl Manager {
    /// A manager installing into `resolver` next to `static_pairs` (the
    /// `[tls]` certificates, served for names the ACME one lacks).
    pub fn new(cfg: Acme, resolver: Arc<CertResolver>, static_pairs: Vec<CertPair>) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            challenges: Arc::new(Challenges::default()),
            resolver,
            static_pairs: Mutex::new(static_pairs),
            stats: AcmeStats::default(),
        })
    }

    /// Replaces the `[tls]` certificates (reload), keeping the ACME one.
    pub fn set_static(&self, pairs: Vec<CertPair>) {
        *self.static_pairs.lock().unwrap_or_else(|e| e.into_inner()) = pairs;
        if let Ok((pair, _)) = self.stored() {
            self.install(pair);
        } else {
            self.resolver.replace(
                self.static_pairs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            );
        }
    }

    fn paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        let d = &self.cfg.dir;
        (
            d.join("account.json"),
            d.join("cert.pem"),
            d.join("key.pem"),
        )
    }

    fn install(&self, pair: CertPair) {
        let mut pairs = vec![pair];
        pairs.extend(
            self.static_pairs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        self.resolver.replace(pairs);
    }

    /// The stored certificate and its expiry, if it loads and covers every
    /// configured name.
    fn stored(&self) -> Result<(CertPair, SystemTime), AcmeError> {
        let (_, cert, key) = self.paths();
        let pair =
            CertPair::load(&cert, &key).map_err(|e| AcmeError::Certificate(e.to_string()))?;
        if let Some(missing) = self.cfg.names.iter().find(|n| !pair.names.contains(n)) {
            return Err(AcmeError::Certificate(format!(
                "it does not name {missing}"
            )));
        }
        let pem = std::fs::read(&cert).map_err(|e| store(&cert, &e))?;
        let leaf = CertificateDer::pem_slice_iter(&pem)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| AcmeError::Certificate("no certificate".into()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| AcmeError::Certificate(e.to_string()))?;
        let not_after = x509.validity().not_after.timestamp();
        let expiry =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
        Ok((pair, expiry))
    }

    /// Runs forever: serve what is stored, renew ahead of expiry, retry
    /// failures with growing, jittered delays.
    pub async fn run(self: Arc<Self>) {
        let mut retry = Duration::from_secs(60);
        loop {
            let due = match self.stored() {
                Ok((pair, expiry)) => {
                    self.install(pair);
                    self.note_expiry(expiry);
                    expiry
                        .checked_sub(self.cfg.renew_before)
                        .and_then(|t| t.duration_since(SystemTime::now()).ok())
                }
                Err(_) => None,
            };
            if let Some(wait) = due {
                info!(renew_in = ?wait, "ACME certificate is current");
                tokio::time::sleep(jitter(wait)).await;
                continue;
            }
            match self.obtain().await {
                Ok(expiry) => {
                    self.stats.issued.inc();
                    info!(names = ?self.cfg.names, ?expiry, "ACME certificate obtained");
                    retry = Duration::from_secs(60);
                    // Never order again at once, even if renew_before is
                    // longer than the CA's certificate lifetime.
                    let next = expiry
                        .checked_sub(self.cfg.renew_before)
                        .and_then(|t| t.duration_since(SystemTime::now()).ok())
                        .unwrap_or_default()
                        .max(MIN_REORDER);
                    if next == MIN_REORDER {
                        warn!(
                            "ACME: renew_before is longer than the certificates' lifetime; renewing hourly"
                        );
                    }
                    tokio::time::sleep(jitter(next)).await;
                }
                Err(e) => {
                    self.stats.failures.inc();
                    warn!(retry_in = ?retry, "ACME: could not obtain a certificate; the current one keeps serving: {e}");
                    tokio::time::sleep(jitter(retry)).await;
                    retry = (retry * 2).min(Duration::from_secs(3600));
                }
            }
        }
    }

    fn note_expiry(&self, expiry: SystemTime) {
        let secs = expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stats
            .expiry_unix
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let (path, _, _) = self.paths();
        let builder = match &self.cfg.ca_root {
            Some(root) => Account::builder_with_root(root)?,
            None => Account::builder()?,
        };
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(creds) = serde_json::from_str::<AccountCredentials>(&text)
        {
            return Ok(builder.from_credentials(creds).await?);
        }
        let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
        let (account, creds) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.cfg.directory.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_string(&creds).map_err(|e| AcmeError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_private(&path, json.as_bytes())?;
        info!("ACME account created");
        Ok(account)
    }

    /// One order, start to finish; returns the new certificate's expiry.
    pub async fn obtain(&self) -> Result<SystemTime, AcmeError> {
        std::fs::create_dir_all(&self.cfg.dir).map_err(|e| store(&self.cfg.dir, &e))?;
        let account = self.account().await?;
        let ids: Vec<Identifier> = self
            .cfg
            .names
            .iter()
            .map(|n| Identifier::Dns(n.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let result = self.authorize(&mut order).await;
        if let Err(e) = result {
            self.clear_challenges();
            return Err(e);
        }
        let status = order.poll_ready(&RetryPolicy::default()).await;
        self.clear_challenges();
        let status = status?;
        if status != OrderStatus::Ready {
            let mut detail = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let a = a?;
                for c in &a.challenges {
                    if let Some(err) = &c.error {
                        detail.push(format!(
                            "{}: {}",
                            a.identifier(),
                            err.detail.as_deref().unwrap_or("failed")
                        ));
                    }
                }
            }
            return Err(AcmeError::Order {
                names: self.cfg.names.join(", "),
                status,
                detail: detail.join("; "),
            });
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
        let (_, cert, key) = self.paths();
        write_private(&key, key_pem.as_bytes())?;
        std::fs::write(&cert, chain_pem.as_bytes()).map_err(|e| store(&cert, &e))?;
        let (pair, expiry) = self.stored()?;
        self.install(pair);
        self.note_expiry(expiry);
        Ok(expiry)
    }

    fn clear_challenges(&self) {
        self.challenges.clear();
        self.resolver.clear_alpn_challenges();
    }

    async fn authorize(&self, order: &mut instant_acme::Order) -> Result<(), AcmeError> {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            if a.status != AuthorizationStatus::Pending {
                continue;
            }
            let name = match a.identifier().identifier {
                Identifier::Dns(n) => n.clone(),
                other => {
                    return Err(AcmeError::Order {
                        names: self.cfg.names.join(", "),
                        status: OrderStatus::Invalid,
                        detail: format!("the CA asks about {other:?}, not a DNS name"),
                    });
                }
            };
            let (kind, label) = match self.cfg.challenge {
                Challenge::Http01 => (ChallengeType::Http01, "HTTP-01"),
                Challenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "TLS-ALPN-01"),
            };
            let Some(mut challenge) = a.challenge(kind) else {
                return Err(AcmeError::Order {
                    names: self.cfg.names.join(", "),
                    status: OrderStatus::Invalid,
                    detail: format!("the CA offers no {label} challenge for {name}"),
                });
            };
            let ka = challenge.key_authorization();
            match self.cfg.challenge {
                Challenge::Http01 => self.challenges.set(&challenge.token, ka.as_str()),
                Challenge::TlsAlpn01 => {
                    let key = alpn_challenge_key(&name, ka.digest().as_ref())
                        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
                    self.resolver.set_alpn_challenge(&name, key);
                }
            }
            challenge.set_ready().await?;
        }
        Ok(())
    }
}

fn store(path: &Path, e: &std::io::Error) -> AcmeError {
    AcmeError::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| store(path, &e))
}

/// `d` ± 10 %, so a fleet of gateways does not renew in lockstep.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX); // 0..=1
    d.mul_f64(0.9 + 0.2 * r)
}
