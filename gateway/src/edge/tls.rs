//! TLS for browsers: rustls with TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, session tickets and a session cache for resumption, SNI
//! certificate selection, certificates swapped at run time, and a handshake
//! deadline whose expiry is its own outcome ("TCP up, TLS stalled": the
//! signature of the PMTU black hole of seed 000). The connections run on
//! [`super::tls_stream`], whose buffers an idle connection does not hold.
//!
//! Certificates are ECDSA P-256 when the gateway makes them (the demo's
//! local CA): a small certificate flight is the other half of the remedy
//! for seed 000.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::tls_stream::TlsStream;

/// Why TLS set-up or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused it.
    #[error("certificate {path}: {reason}")]
    Key {
        /// The certificate file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// TCP connected but the handshake did not finish in time.
    #[error("TLS handshake did not finish within {0:?} (TCP up, TLS stalled)")]
    Stalled(Duration),
    /// The handshake failed (client error, protocol mismatch, reset).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

impl TlsError {
    /// A short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Stalled(_) => "stalled",
            Self::Handshake(_) => "failed",
            Self::File { .. } | Self::Key { .. } => "config",
        }
    }
}

/// ring, with AES-128-GCM first in the server's order. Its TLS 1.3 suite
/// runs the key schedule on SHA-256, which this machine's CPU does in
/// hardware (SHA extensions), where AES-256-GCM's SHA-384 runs in
/// portable code: about a tenth of a full handshake's CPU (perf, see
/// BENCHMARKS.md "Handshake CPU"). Every record is cheaper too (10 AES
/// rounds, not 14). AES-256-GCM and ChaCha20-Poly1305 stay on offer.
/// X25519, the key exchange browsers choose, runs on AWS-LC
/// ([`super::kx`]): half of ring's time for the largest item of a
/// handshake. So do TLS 1.3's AES-GCM records ([`super::gcm`]): half of
/// ring's time per byte where the CPU has 512-bit vector AES. Random
/// values come from AWS-LC's generator too ([`super::tickets`]): ring makes
/// a system call for each, seven per full handshake.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = super::kx::groups();
    p.secure_random = super::tickets::RANDOM;
    p.cipher_suites = vec![
        *super::gcm::TLS13_AES_128_GCM_SHA256,
        *super::gcm::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// A certificate chain and its key, as loaded.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The rustls form.
    pub key: Arc<CertifiedKey>,
    /// DNS names the leaf covers (for SNI selection; `*.x` wildcards kept as is).
    pub names: Vec<String>,
}

impl CertPair {
    /// Loads PEM files: the chain (leaf first) and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let file_err = |p: &Path, reason: String| TlsError::File {
            path: p.display().to_string(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(cert, "no certificate in file".into()));
        }
        let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
        Self::from_der(chain, der, &cert.display().to_string())
    }

    /// From DER parts (used by the demo and tests).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        label: &str,
    ) -> Result<Self, TlsError> {
        let key_err = |reason: String| TlsError::Key {
            path: label.to_string(),
            reason,
        };
        let names = leaf_names(&chain[0]).map_err(key_err)?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_err(e.to_string()))?;
        let ck = CertifiedKey::new(chain, signing);
        ck.keys_match()
            .map_err(|e| key_err(format!("key does not match the certificate: {e}")))?;
        Ok(Self {
            key: Arc::new(ck),
            names,
        })
    }
}

/// The DNS subject alternative names of a certificate (for choosing a
/// certificate by SNI; verification is the client's business).
fn leaf_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    Ok(ee.valid_dns_names().map(str::to_ascii_lowercase).collect())
}

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Picks a certificate by SNI: exact name, then a `*.` wildcard one label
/// up, then the first certificate. Swappable at run time.
///
/// A client offering only the ALPN protocol `acme-tls/1` is an ACME CA
/// validating a TLS-ALPN-01 challenge: it gets the challenge certificate
/// for its SNI while one is pending (see [`crate::acme`]), and no
/// certificate (a failed handshake) otherwise.
#[derive(Debug)]
pub struct CertResolver {
    inner: RwLock<Certs>,
    /// Pending TLS-ALPN-01 challenge certificates, by name.
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

#[derive(Debug, Default)]
struct Certs {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// Every certificate with the names it covers.
    all: Vec<(Arc<CertifiedKey>, Vec<String>)>,
}

impl CertResolver {
    /// A resolver over `pairs` (the first is the default).
    pub fn new(pairs: Vec<CertPair>) -> Arc<Self> {
        let r = Arc::new(Self {
            inner: RwLock::new(Certs::default()),
            alpn_challenges: RwLock::new(HashMap::new()),
        });
        r.replace(pairs);
        r
    }

    /// Swaps in new certificates; handshakes in progress keep the old ones.
    pub fn replace(&self, pairs: Vec<CertPair>) {
        let mut certs = Certs {
            default: pairs.first().map(|p| p.key.clone()),
            ..Certs::default()
        };
        for p in pairs {
            for n in &p.names {
                certs
                    .by_name
                    .entry(n.clone())
                    .or_insert_with(|| p.key.clone());
            }
            certs.all.push((p.key, p.names));
        }
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = certs;
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let certs = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some(k) = certs.by_name.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = certs.by_name.get(&format!("*.{parent}"))
            {
                return Some(k.clone());
            }
        }
        certs.default.clone()
    }
}

impl CertResolver {
    /// Whether the certificate served to a client that asked for `sni`
    /// is also valid for `host` (lower case, no port): the test a client
    /// makes before it reuses a connection for another name (RFC 9113
    /// §9.1.1). A name is covered by an equal SAN, or by `*.<parent>`
    /// when it is one label below `<parent>`.
    pub fn covers(&self, sni: &str, host: &str) -> bool {
        if sni == host {
            return true;
        }
        let Some(key) = self.pick(Some(sni)) else {
            return false;
        };
        let certs = self.inner.read().unwrap_or_else(|e| e.into_inner());
        certs
            .all
            .iter()
            .filter(|(k, _)| Arc::ptr_eq(k, &key))
            .flat_map(|(_, names)| names)
            .any(|n| name_matches(n, host))
    }
}

/// A certificate name (`x.example` or `*.example`) against a host name.
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        None => name == host,
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
    }
}

impl CertResolver {
    /// Serves `key` to TLS-ALPN-01 validations of `name` until cleared.
    pub fn set_alpn_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.alpn_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    /// Forgets every TLS-ALPN-01 challenge certificate.
    pub fn clear_alpn_challenges(&self) {
        self.alpn_challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .alpn_challenges
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        self.pick(hello.server_name())
    }
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge for
/// `name` (RFC 8737 §3): `name` as its only SAN, and the critical
/// `acmeIdentifier` extension holding `digest`, the SHA-256 of the key
/// authorization. A fresh P-256 key each time.
pub fn alpn_challenge_key(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let err = |reason: String| TlsError::Key {
        path: format!("TLS-ALPN-01 certificate for {name}"),
        reason,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| err(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| err(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| err(e.to_string()))?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| err(e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The acceptor with its handshake deadline.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    /// Certificates, swappable.
    pub resolver: Arc<CertResolver>,
    /// Deadline for a handshake. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Tls {
    /// TLS 1.2 and 1.3, the server's cipher-suite order, ALPN h2 then
    /// http/1.1, stateless tickets plus a 4096-entry session cache.
    pub fn new(resolver: Arc<CertResolver>, handshake_timeout: Duration) -> Self {
        Self::with_client_ca(resolver, handshake_timeout, None)
            .unwrap_or_else(|e| unreachable!("no client CA to reject: {e}"))
    }

    /// [`Tls::new`], and with `client_ca` clients may present a certificate
    /// signed by it (optional: browsers without one still connect); a
    /// certificate from anyone else fails the handshake.
    pub fn with_client_ca(
        resolver: Arc<CertResolver>,
        handshake_timeout: Duration,
        client_ca: Option<&[CertificateDer<'static>]>,
    ) -> Result<Self, TlsError> {
        let versions: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let mut config = server_config(resolver.clone(), client_ca, versions)?;
        // acme-tls/1 last: only a client offering nothing else gets it
        // (an ACME CA validating TLS-ALPN-01; the connection then closes).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
        // The server's order (the provider's: AES-128-GCM, AES-256-GCM,
        // ChaCha20-Poly1305, every one AEAD with forward secrecy), not the
        // client's: what a client lists first never decides. Auditors
        // (testssl.sh) flag a server without an order; the cost is that a
        // client without AES instructions that prefers ChaCha20 gets
        // AES-GCM.
        config.ignore_client_order = true;
        Ok(Self {
            config: Arc::new(config),
            resolver,
            handshake_timeout,
        })
    }

    /// Runs the handshake on an accepted connection (a `TcpStream`, or
    /// one wrapped by [`super::guard::Guarded`]) within the deadline.
    pub async fn accept<IO>(&self, io: IO) -> Result<TlsStream<IO>, TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = super::tls_stream::accept(io, self.config.clone());
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => Err(TlsError::Stalled(self.handshake_timeout)),
            Ok(Err(e)) => Err(TlsError::Handshake(e)),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

/// The rustls configuration of HTTP/3 (QUIC's TLS): the same certificate
/// resolver (so reloads and ACME renewals reach it too), the same optional
/// client CA, resumption as on TCP, TLS 1.3 only (QUIC has no other) and
/// ALPN `h3`. No 0-RTT: early data could be replayed, and requests reach
/// devices that act on them.
pub fn quic_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&[CertificateDer<'static>]>,
) -> Result<ServerConfig, TlsError> {
    let mut config = server_config(resolver, client_ca, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// What TCP and QUIC share: the provider, `versions`, the client CA and the
/// resolver, stateless tickets plus a 4096-entry session cache.
fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&[CertificateDer<'static>]>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| unreachable!("ring supports TLS 1.2 and 1.3: {e}"));
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c.clone()).map_err(|e| TlsError::Key {
                    path: "client CA".into(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Key {
                path: "client CA".into(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.session_storage = ServerSessionMemoryCache::new(4096);
    if let Ok(t) = super::tickets::ticketer() {
        config.ticketer = t;
    }
    config.send_tls13_tickets = 2;
    Ok(config)
}

/// The server name (SNI) the client asked for, lower case and without a
/// trailing dot; `None` when it sent none (an IP address in the URL).
pub fn server_name<IO>(stream: &TlsStream<IO>) -> Option<String> {
    stream.server_name().map(str::to_string)
}

/// The common name of a verified client certificate, if any (the first
/// CN of the subject).
pub fn client_common_name<IO>(stream: &TlsStream<IO>) -> Option<String> {
    common_name(stream.peer_certificates()?.first()?)
}

/// The first common name of a certificate's subject.
pub fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A local certificate authority and a leaf it signed, in PEM.
#[derive(Debug, Clone)]
pub struct LocalCa {
    /// The CA certificate (to trust in browsers or `curl --cacert`).
    pub ca_pem: String,
    /// The leaf chain: leaf then CA.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

/// Makes an ECDSA P-256 CA and a leaf for `names` (valid 90 days).
pub fn local_ca(names: &[String]) -> Result<LocalCa, rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "devlink gateway local CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf_params = rcgen::CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    let now = std::time::SystemTime::now();
    leaf_params.not_before = now.into();
    leaf_params.not_after = (now + Duration::from_secs(90 * 86_400)).into();
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(LocalCa {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}

impl LocalCa {
    /// The leaf as a certificate pair.
    pub fn pair(&self) -> Result<CertPair, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Key {
                path: "generated".into(),
                reason: e.to_string(),
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Key {
                path: "generated".into(),
                reason: e.to_string(),
            })?;
        CertPair::from_der(chain, key, "generated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random values come from AWS-LC's generator, not ring's system
    /// calls, and the tickets of TCP's and QUIC's configurations open.
    #[test]
    fn randomness_and_tickets_are_the_gateways() {
        let p = provider();
        assert_eq!(
            format!("{:?}", p.secure_random),
            "Random",
            "ring's generator"
        );
        let resolver = CertResolver::new(vec![
            local_ca(&["gw.example".into()]).unwrap().pair().unwrap(),
        ]);
        let tcp = Tls::new(resolver.clone(), Duration::from_secs(5)).config;
        let quic = quic_config(resolver, None).unwrap();
        for config in [&*tcp, &quic] {
            assert_eq!(
                format!("{:?}", config.crypto_provider().secure_random),
                "Random"
            );
            let t = &config.ticketer;
            assert!(t.enabled());
            let sealed = t.encrypt(b"state").unwrap();
            assert_eq!(t.decrypt(&sealed).as_deref(), Some(&b"state"[..]));
        }
        assert_eq!(
            quic.ticketer.decrypt(&tcp.ticketer.encrypt(b"x").unwrap()),
            None
        );
    }

    #[test]
    fn a_name_is_covered_by_the_certificate_served_for_the_sni() {
        let apex = local_ca(&["gw.example".into()]).unwrap().pair().unwrap();
        let wild = local_ca(&["*.gw.example".into()]).unwrap().pair().unwrap();
        let certs = CertResolver::new(vec![apex, wild]);
        // The wildcard certificate, served for any device, covers every device.
        assert!(certs.covers("plc-1.gw.example", "plc-1.gw.example"));
        assert!(certs.covers("plc-1.gw.example", "plc-2.gw.example"));
        assert!(!certs.covers("plc-1.gw.example", "gw.example"));
        assert!(!certs.covers("plc-1.gw.example", "a.b.gw.example"));
        assert!(!certs.covers("plc-1.gw.example", "evil.example"));
        // The apex certificate covers only the apex.
        assert!(!certs.covers("gw.example", "plc-1.gw.example"));
        assert!(certs.covers("gw.example", "gw.example"));
    }
}
