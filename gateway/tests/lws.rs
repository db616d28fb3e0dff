//! The real libwebsockets test server (Debian `libwebsockets-test-server`)
//! behind the gateway, both as a raw service (the way a libwebsockets
//! firmware that adopts sockets sits behind `device-sim --forward`) and as
//! a direct upstream: the seed failures of libwebsockets devices (a
//! subprotocol list the server does not know, a strict Host, a server that
//! closes before its 101) do not reach the browser as hangs or 5xx
//! surprises.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::{DOMAIN, Dev, Gw, WsClient, link_config};
use device_fw::host::Forward;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

const LWS: &str = "/usr/bin/libwebsockets-test-server";

/// The lws test server on a loopback port, stopped (by its pid) on drop.
struct Lws {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Lws {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lws() -> Option<Lws> {
    if !std::path::Path::new(LWS).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{LWS} is missing in CI (.ci/run installs libwebsockets-test-server)"
        );
        eprintln!("SKIP: {LWS} is not installed (apt-get install libwebsockets-test-server)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(LWS)
        .args([&format!("--port={port}"), "-i", "lo"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "lws did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Lws { child, addr })
}

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

/// What the gateway knows of the server: lws's vhost name and protocols
/// (plus one it does not know, to make lws refuse a handshake).
const NORMALIZE: &str = "[device.normalize]\nhost = \"localhost\"\nprotocols = [\"dumb-increment-protocol\", \"lws-mirror-protocol\", \"no-such-lws-protocol\"]\n";

async fn next_text(ws: &mut WsClient) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message from lws within 5 s")
            .expect("socket ended")
            .expect("socket failed");
        if let Message::Text(t) = m {
            return t.to_string();
        }
    }
}

async fn scenario(gw: &Gw, id: &str) {
    let o = format!("https://{}:{}", host(id), gw.addr.port());
    for v in [1u8, 2] {
        // The browser offers a protocol lws does not know first: lws hears
        // only the one it knows, the counter runs.
        let (mut ws, proto) = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "chat, dumb-increment-protocol"),
                ],
            )
            .await
            .unwrap_or_else(|r| panic!("{id} h{v}: {r:?}"));
        assert_eq!(proto.as_deref(), Some("dumb-increment-protocol"));
        let a: u64 = next_text(&mut ws).await.trim().parse().unwrap();
        let b: u64 = next_text(&mut ws).await.trim().parse().unwrap();
        assert!(b > a, "the counter did not increase: {a} then {b}");
        ws.close(None).await.unwrap();

        // Only protocols nobody knows: an explained refusal, at once.
        let started = Instant::now();
        let r = gw
            .ws(
                v,
                &host(id),
                "/",
                &[("origin", &o), ("sec-websocket-protocol", "chat")],
            )
            .await
            .err()
            .expect("accepted without a common subprotocol");
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains("lws-mirror-protocol"), "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(2));

        // Mirror: what one client draws, the other sees (lws accepted the Host).
        let (mut a, _) = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "lws-mirror-protocol"),
                ],
            )
            .await
            .unwrap();
        let (mut b, _) = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "lws-mirror-protocol"),
                ],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("d #{v:06x} 10 20 30 40;");
        a.send(Message::text(line.clone())).await.unwrap();
        let seen = loop {
            let t = next_text(&mut b).await;
            if t.contains(&line) {
                break t;
            }
        };
        assert!(seen.contains(&line));

        // lws closes a handshake for a protocol it does not have, before any
        // 101: the browser is told the server refused, with a 502 at once.
        let before = gw
            .server()
            .bridge
            .stats
            .upstream_rejected
            .load(std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let r = gw
            .ws(
                v,
                &host(id),
                "/",
                &[
                    ("origin", &o),
                    ("sec-websocket-protocol", "no-such-lws-protocol"),
                ],
            )
            .await
            .err()
            .expect("lws accepted an unknown protocol");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            r.body.contains("upstream_rejected") || r.body.contains("refused"),
            "{}",
            r.body
        );
        assert!(
            gw.server()
                .bridge
                .stats
                .upstream_rejected
                .load(std::sync::atomic::Ordering::Relaxed)
                > before
        );
    }
}

#[tokio::test]
async fn lws_behind_device_sim_forward() {
    let Some(lws) = lws() else { return };
    let gw = Gw::start(
        "",
        &[Dev(
            "lws",
            &format!("{NORMALIZE}[[device.service]]\nname = \"lws\"\npath = \"/\"\n"),
        )],
    )
    .await;
    let _dev = gw.forwarding(
        "lws",
        vec![Forward {
            service: "lws".into(),
            target: lws.addr,
        }],
        link_config(4096, 16384, 1024),
    );
    gw.wait_online("lws").await;
    scenario(&gw, "lws").await;
    gw.stop().await;
}

#[tokio::test]
async fn lws_as_a_direct_upstream() {
    let Some(lws) = lws() else { return };
    let gw = Gw::start(
        "",
        &[Dev(
            "lwsd",
            &format!(
                "upstream = {{ direct = {{ address = \"{}\" }} }}\n{NORMALIZE}",
                lws.addr
            ),
        )],
    )
    .await;
    scenario(&gw, "lwsd").await;
    gw.stop().await;
}
