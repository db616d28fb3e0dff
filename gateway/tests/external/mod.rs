//! Real outside programs the operations tests run (Debian `prometheus`,
//! which ships `promtool`), and a small HTTP GET for their APIs and ours.
//!
//! A missing program skips its test with a loud message on a developer's
//! machine, and fails it in CI (`CI=true`), where `.ci/run` installs it.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;

use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

/// The program `name` from `PATH`; `None` (after a loud message) when it is
/// missing outside CI. Panics when it is missing in CI.
pub fn program(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "`{name}` is not installed (Debian package `prometheus`: apt-get install prometheus)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true, so this is a failure");
        }
        // Straight to stderr: the test harness does not capture this, so
        // the skip shows even when the test passes.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!\nSKIPPED: {msg}\n!!!!!!!!!!\n"
        );
    }
    found
}

/// GET `path` from `addr` over HTTP/1.1: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample `series` (name and labels exactly as exposed).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
