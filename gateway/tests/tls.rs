//! The TLS edge against a real rustls client on loopback.

use std::sync::Arc;
use std::time::Duration;

use gateway::edge::tls::{CertPair, CertResolver, LocalCa, Tls, TlsError, local_ca};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn client(
    ca: &LocalCa,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg.resumption = Resumption::in_memory_sessions(16);
    Arc::new(cfg)
}

/// A server that completes handshakes and answers with the ALPN it chose.
async fn server(tls: Tls) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                if let Ok(mut s) = tls.accept(tcp).await {
                    let alpn = s.alpn_protocol().map(<[u8]>::to_vec).unwrap_or_default();
                    let _ = s.write_all(&alpn).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
    cfg: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<(String, Option<HandshakeKind>, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let mut s = TlsConnector::from(cfg)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).await?;
    let (_, conn) = s.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].to_vec();
    Ok((String::from_utf8(got).unwrap(), conn.handshake_kind(), leaf))
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn alpn_versions_and_resumption() {
    let ca = local_ca(&names(&["localhost"])).unwrap();
    let tls = Tls::new(
        CertResolver::new(vec![ca.pair().unwrap()]),
        Duration::from_secs(5),
    );
    let addr = server(tls).await;
    let v13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let v12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let h2 = client(&ca, &[b"h2", b"http/1.1"], v13);
    let (alpn, kind, _) = connect(addr, h2.clone(), "localhost").await.unwrap();
    assert_eq!((alpn.as_str(), kind), ("h2", Some(HandshakeKind::Full)));
    let (_, kind, _) = connect(addr, h2, "localhost").await.unwrap();
    assert_eq!(kind, Some(HandshakeKind::Resumed), "TLS 1.3 resumption");
    let h1 = client(&ca, &[b"http/1.1"], v12);
    let (alpn, _, _) = connect(addr, h1.clone(), "localhost").await.unwrap();
    assert_eq!(alpn, "http/1.1");
    let (_, kind, _) = connect(addr, h1, "localhost").await.unwrap();
    assert_eq!(kind, Some(HandshakeKind::Resumed), "TLS 1.2 resumption");
}

#[tokio::test]
async fn sni_selects_the_certificate_and_reload_swaps_it() {
    let a = local_ca(&names(&["a.test"])).unwrap();
    let b = local_ca(&names(&["*.b.test"])).unwrap();
    let resolver = CertResolver::new(vec![a.pair().unwrap(), b.pair().unwrap()]);
    let tls = Tls::new(resolver.clone(), Duration::from_secs(5));
    let addr = server(tls).await;
    let v: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    assert!(connect(addr, client(&a, &[], v), "a.test").await.is_ok());
    assert!(
        connect(addr, client(&b, &[], v), "plc-7.b.test")
            .await
            .is_ok(),
        "wildcard by SNI"
    );
    assert!(
        connect(addr, client(&b, &[], v), "a.test").await.is_err(),
        "a.test is not b's"
    );

    let renewed = local_ca(&names(&["a.test"])).unwrap();
    resolver.replace(vec![renewed.pair().unwrap()]);
    assert!(
        connect(addr, client(&renewed, &[], v), "a.test")
            .await
            .is_ok(),
        "new certificate served"
    );
    assert!(
        connect(addr, client(&a, &[], v), "a.test").await.is_err(),
        "old one gone"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_is_reported_as_stalled() {
    let ca = local_ca(&names(&["localhost"])).unwrap();
    let tls = Tls::new(
        CertResolver::new(vec![ca.pair().unwrap()]),
        Duration::from_millis(300),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = l.accept().await.unwrap();
    let t = std::time::Instant::now();
    let err = tls.accept(tcp).await.unwrap_err();
    assert!(matches!(err, TlsError::Stalled(_)), "{err}");
    assert_eq!(err.outcome(), "stalled");
    assert!(t.elapsed() < Duration::from_secs(2));

    // Garbage instead of a ClientHello is a failed handshake, not a stall.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = l.accept().await.unwrap();
    let err = tls.accept(tcp).await.unwrap_err();
    assert_eq!(err.outcome(), "failed", "{err}");
}

#[test]
fn bad_certificate_files_are_named() {
    let dir = std::env::temp_dir().join(format!("gw-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.pem");
    let err = CertPair::load(&missing, &missing).unwrap_err().to_string();
    assert!(err.contains("missing.pem"), "{err}");
    let one = local_ca(&names(&["x.test"])).unwrap();
    let other = local_ca(&names(&["x.test"])).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &one.chain_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let err = CertPair::load(&cert, &key).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    std::fs::write(&key, &one.key_pem).unwrap();
    let pair = CertPair::load(&cert, &key).unwrap();
    assert_eq!(pair.names, vec!["x.test".to_string()]);
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(
        CertPair::load(&cert, &key)
            .unwrap_err()
            .to_string()
            .contains("cert.pem")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
