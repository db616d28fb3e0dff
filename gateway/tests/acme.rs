//! Certificates from a real ACME server: Debian's `pebble`, with
//! `pebble-challtestsrv` answering its DNS queries with 127.0.0.1, all on
//! loopback; pebble's roots are trusted for this test only. Issue (HTTP-01
//! through the gateway's own plain listener), serve, reuse the stored
//! certificate after a restart, renew, and a failed renewal that keeps the
//! old certificate serving.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TempDir, free_port};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpStream;

/// A child process, killed by its id on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(bin: &str) -> bool {
    std::path::Path::new("/usr/bin").join(bin).exists()
}

struct Pebble {
    _ca: Proc,
    dns: Option<Proc>,
    dir_url: String,
    mgmt: u16,
    /// pebble's own TLS root (for the ACME client).
    tls_root: std::path::PathBuf,
    tls_root_pem: String,
}

async fn wait_port(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "port {port} never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pebble(dir: &TempDir, http_port: u16, tls_port: u16) -> Pebble {
    let ca =
        gateway::edge::tls::local_ca(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = dir.write("pebble/cert.pem", &ca.chain_pem);
    let key = dir.write("pebble/key.pem", &ca.key_pem);
    let tls_root = dir.write("pebble/root.pem", &ca.ca_pem);
    let (listen, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.write(
        "pebble/config.json",
        &format!(
            r#"{{"pebble":{{"listenAddress":"127.0.0.1:{listen}","managementListenAddress":"127.0.0.1:{mgmt}",
"certificate":"{}","privateKey":"{}","httpPort":{http_port},"tlsPort":{tls_port},
"ocspResponderURL":"","externalAccountBindingRequired":false}}}}"#,
            cert.display(),
            key.display()
        ),
    );
    let dns_proc = Proc(
        Command::new("/usr/bin/pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca_proc = Proc(
        Command::new("/usr/bin/pebble")
            .args([
                "-config",
                config.to_str().unwrap(),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(listen).await;
    wait_port(mgmt).await;
    Pebble {
        _ca: ca_proc,
        dns: Some(dns_proc),
        dir_url: format!("https://127.0.0.1:{listen}/dir"),
        mgmt,
        tls_root,
        tls_root_pem: ca.ca_pem,
    }
}

/// pebble's issuing root, from its management interface.
async fn issuing_root(p: &Pebble) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(p.tls_root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", p.mgmt)).await.unwrap();
    let io = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, common::harness::ReqBody>(
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            http::Request::get("/roots/0")
                .header("host", "127.0.0.1")
                .body(common::harness::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt as _;
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

/// The leaf the gateway serves for `sni`, verified against `root_pem`.
async fn served(addr: SocketAddr, sni: &str, root_pem: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to the gateway for {sni}: {e}"));
    io.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// A gateway on `https` (and a plain listener on `http`, when given)
/// whose `[acme]` has `extra` lines (renew_before, challenge, ...).
async fn start_with(
    dir: &TempDir,
    https: u16,
    http: Option<u16>,
    p: &Pebble,
    extra: &str,
) -> Server {
    let opts = SocketOptions::default();
    let mut edges = vec![listener::bind(SocketAddr::from(([127, 0, 0, 1], https)), &opts).unwrap()];
    let mut plain = String::new();
    if let Some(http) = http {
        edges.push(listener::bind(SocketAddr::from(([127, 0, 0, 1], http)), &opts).unwrap());
        plain = format!("[[listen]]\naddress = \"127.0.0.1:{http}\"\ntls = false\n\n");
    }
    let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let text = format!(
        "[gateway]\ndomain = \"gw.example.com\"\n\n\
         [[listen]]\naddress = \"127.0.0.1:{https}\"\n\n{plain}\
         [link]\naddress = \"{}\"\n\n[metrics]\naddress = \"127.0.0.1:0\"\n\n\
         [acme]\ndirectory = \"{}\"\ncontact = [\"mailto:ops@gw.example.com\"]\nca_root = \"{}\"\n{extra}\n\
         [[device]]\nid = \"plc\"\npublic_key = \"{}\"\n",
        link.local_addr().unwrap(),
        p.dir_url,
        p.tls_root.display(),
        common::harness::device_key("plc").public_key(),
    );
    let file = dir.write("gateway.toml", &text);
    let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    Server::start_on(&config, Listeners { link, edges }).unwrap()
}

async fn start(dir: &TempDir, https: u16, http: u16, p: &Pebble, renew_before: &str) -> Server {
    let extra = format!("renew_before = \"{renew_before}\"\n");
    start_with(dir, https, Some(http), p, &extra).await
}

async fn eventually(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn certificates_from_a_real_acme_server() {
    if !(have("pebble") && have("pebble-challtestsrv")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble is missing in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: pebble is not installed (apt-get install pebble)");
        return;
    }
    let dir = TempDir::new("acme");
    dir.key();
    let (https, http) = (free_port(), free_port());
    let mut p = pebble(&dir, http, https).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], https));

    // Issue: HTTP-01 answered by the gateway itself; served at once.
    let server = start(&dir, https, http, &p, "30d").await;
    let acme = server.acme.clone().unwrap();
    eventually("the first certificate", 60, || acme.stats.issued.get() >= 1).await;
    let root = issuing_root(&p).await;
    let first = served(addr, "plc.gw.example.com", &root).await;
    assert_eq!(served(addr, "gw.example.com", &root).await, first);
    assert!(acme.stats.expiry_unix.get() > 0);
    let exposition = server.metrics.render();
    let line = exposition
        .lines()
        .find(|l| l.starts_with("gateway_tls_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no expiry metric in:\n{exposition}"));
    assert!(!line.ends_with(" 0"), "{line}");
    assert!(exposition.contains("gateway_acme_certificates_issued_total 1"));
    let key_mode = std::fs::metadata(dir.path().join("acme/key.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);
    }
    server.shutdown().await;

    // A restart serves the stored certificate: no new order.
    let server = start(&dir, https, http, &p, "30d").await;
    eventually("the stored certificate", 10, || {
        server.acme.as_ref().unwrap().stats.expiry_unix.get() > 0
    })
    .await;
    assert_eq!(served(addr, "plc.gw.example.com", &root).await, first);
    assert_eq!(server.acme.as_ref().unwrap().stats.issued.get(), 0);
    server.shutdown().await;

    // Renewal (a margin longer than the certificate's life): a new one.
    let server = start(&dir, https, http, &p, "100000d").await;
    let acme = server.acme.clone().unwrap();
    eventually("the renewed certificate", 60, || {
        acme.stats.issued.get() >= 1
    })
    .await;
    let second = served(addr, "plc.gw.example.com", &root).await;
    assert_ne!(second, first, "not renewed");
    server.shutdown().await;

    // Renewal failing (the CA's DNS is gone, so validation fails): the old
    // certificate keeps serving, and the failure is counted.
    p.dns = None;
    let server = start(&dir, https, http, &p, "100000d").await;
    let acme = server.acme.clone().unwrap();
    eventually("a failed renewal", 60, || acme.stats.failures.get() >= 1).await;
    assert_eq!(served(addr, "plc.gw.example.com", &root).await, second);
    assert_eq!(acme.stats.issued.get(), 0);
    server.shutdown().await;
}

/// What a client offering only `acme-tls/1` gets for `sni`: the
/// certificate, or the handshake error.
async fn alpn_probe(addr: SocketAddr, sni: &str) -> Result<Vec<u8>, String> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(io.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec())
}

#[tokio::test]
async fn tls_alpn_01_through_the_tls_listener_alone() {
    if !(have("pebble") && have("pebble-challtestsrv")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble is missing in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: pebble is not installed (apt-get install pebble)");
        return;
    }
    let dir = TempDir::new("acme-alpn");
    dir.key();
    // No plain listener at all: pebble's HTTP-01 port leads nowhere.
    let (https, nowhere) = (free_port(), free_port());
    let p = pebble(&dir, nowhere, https).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], https));
    // HTTP-01 cannot work here; the order must go through TLS-ALPN-01.
    let server = start_with(&dir, https, None, &p, "challenge = \"tls-alpn-01\"\n").await;
    let acme = server.acme.clone().unwrap();
    eventually("the certificate over TLS-ALPN-01", 60, || {
        acme.stats.issued.get() >= 1
    })
    .await;
    let root = issuing_root(&p).await;
    let leaf = served(addr, "plc.gw.example.com", &root).await;
    assert_eq!(served(addr, "gw.example.com", &root).await, leaf);
    // The challenge certificates are gone once the order is done.
    let after = alpn_probe(addr, "plc.gw.example.com").await;
    assert!(after.is_err(), "a challenge certificate is still served");
    assert_eq!(acme.stats.failures.get(), 0);
    server.shutdown().await;
}
