//! Test support shared by the gateway's integration tests.

#![allow(dead_code, unreachable_pub)]

pub mod harness;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use gateway::keys;
use proto::PublicKey;

/// A free loopback port: bound and released (an outside program binds it
/// next), and never one this test binary has handed out before. Tests run
/// in parallel, and the kernel may give a released port to the next
/// `bind(0)`: without the record two tests could start their servers
/// (pebble, prometheus) on one port, and one's client would reach the
/// other's server.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..64 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no free port this test binary has not handed out already (64 tries)")
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory; `name` makes failures easy to trace.
    pub fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gw-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` at `name` (parents created); returns the path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A gateway key at `gateway.key`; returns its public key.
    pub fn key(&self) -> PublicKey {
        let k = keys::generate().unwrap();
        keys::write_key_file(&self.0.join("gateway.key"), &k, false).unwrap();
        k.public_key()
    }

    /// A certificate for gw.example.com at tls/fullchain.pem and tls/privkey.pem.
    pub fn certs(&self) {
        let ca = gateway::edge::tls::local_ca(&[
            "gw.example.com".to_string(),
            "*.gw.example.com".to_string(),
        ])
        .unwrap();
        self.write("tls/fullchain.pem", &ca.chain_pem);
        self.write("tls/privkey.pem", &ca.key_pem);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
