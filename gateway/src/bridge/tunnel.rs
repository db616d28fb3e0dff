//! A raw device service exposed as a WebSocket (`expose = "websocket"`):
//! each browser message's bytes go down the Raw stream in order, and the
//! device's bytes come back as binary messages as they arrive (one per
//! received chunk, at most one stream window). A browser close ends the
//! stream with FIN and is answered with its code; the device's FIN closes
//! the browser's socket with 1000; a lost link with 1011; access revoked,
//! 1008; a browser frame that breaks the protocol or a limit, 1002 / 1007
//! / 1009 (counted in `gateway_websocket_refused_total`). Both directions
//! run in the socket's one task over [`super::wsconn::WsConn`].

use std::pin::pin;
use std::sync::Arc;

use proto::{Code, MsgKind};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Bridge;
use super::gate::LiveGuard;
use super::stats::BridgeStats;
use super::upgrade::OnBrowser;
use super::ws::{CLOSE_GRACE, limits};
use super::wsconn::{Incoming, OP_BINARY, Role, WsConn, close_payload};
use crate::beside::Rare;
use crate::link::{DeviceStream, StreamEvent, StreamSender};

/// Runs the tunnel once the browser's upgrade completes.
pub(super) fn spawn(
    bridge: Arc<Bridge>,
    browser: OnBrowser,
    stream: DeviceStream,
    live: LiveGuard,
    device: &str,
) {
    super::spawn_websocket(device, "raw", task(bridge, browser, stream, live));
}

/// The tunnel's task: the browser's upgrade, then both directions. Captured
/// once and used where it lies, as the link bridge's task is (`super::ws`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn task(
    bridge: Arc<Bridge>,
    browser: OnBrowser,
    stream: DeviceStream,
    live: LiveGuard,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let Ok(io) = browser.await else { return };
        let conn = WsConn::new(io, Role::Server, limits(&bridge)).in_parts();
        let _open = bridge.stats.ws_session();
        run(&conn, stream, live.revoked(), &bridge.stats).await;
    }
}

/// How the browser's side ended.
enum UpEnd {
    /// Its close frame, with this payload.
    Closed(Vec<u8>),
    /// It broke the protocol or a limit: close with this code.
    Failed(u16, &'static str),
    /// Its connection is gone.
    Gone,
}

/// Both directions, in one task, then the closing handshake.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn run<S>(
    conn: &WsConn<S>,
    mut stream: DeviceStream,
    revoked: &Notify,
    stats: &BridgeStats,
) -> impl Future<Output = ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async move {
        let up = up(conn, stream.sender());
        tokio::pin!(up);
        let mut up_done = false;
        // Polled only once it wakes (`crate::beside`), not on every
        // message's wake.
        let revoked = pin!(revoked.notified());
        let mut revoked = Rare::new(revoked);
        let close = loop {
            // `biased`: the revocation and the up half are ready once, and
            // `drive` only until what the connection owes is written, so
            // none of them starves the device's data (an unbiased select
            // draws a random number on every poll).
            tokio::select! {
                biased;
                () = &mut revoked => {
                    stream.reset(Code::CANCEL);
                    break Some(close_payload(1008, "access revoked"));
                }
                end = &mut up, if !up_done => {
                    up_done = true;
                    match end {
                        // Answered with its code (RFC 6455 §5.5.1).
                        UpEnd::Closed(p) => break Some(p[..p.len().min(2)].to_vec()),
                        UpEnd::Failed(code, reason) => {
                            stats.count_ws_refusal(code);
                            break Some(close_payload(code, reason));
                        }
                        UpEnd::Gone => break None,
                    }
                }
                r = conn.drive() => {
                    if r.is_err() {
                        break None;
                    }
                }
                ev = stream.recv() => match ev {
                    Some(StreamEvent::Data { msg: MsgKind::Bytes, data, fin, .. }) => {
                        if !data.is_empty() && conn.send(OP_BINARY, &data).await.is_err() {
                            break None;
                        }
                        if fin {
                            break Some(close_payload(1000, "device closed the service"));
                        }
                    }
                    Some(StreamEvent::Data { .. }) => {
                        stream.reset(Code::PROTOCOL);
                        break Some(close_payload(1011, "device broke the stream"));
                    }
                    Some(StreamEvent::Reset(_) | StreamEvent::Closed) | None => {
                        break Some(close_payload(1011, "device link lost"));
                    }
                },
            }
        };
        // One deadline for both waits (see `super::ws::session`).
        let deadline = Instant::now() + CLOSE_GRACE;
        if let Some(p) = close {
            let _ = conn.send_close(&p).await;
            // The browser's answer ends the up half.
            if !up_done {
                let _ = tokio::time::timeout_at(deadline, &mut up).await;
            }
        }
        drop(stream);
        let _ = tokio::time::timeout_at(deadline, conn.shutdown()).await;
    }
}

/// Browser → device: each message's bytes in order, then FIN.
async fn up<S>(conn: &WsConn<S>, to: StreamSender) -> UpEnd
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut device_gone = false;
    let end = loop {
        match conn.recv().await {
            Ok(Incoming::Binary(data) | Incoming::Part(data) | Incoming::Text(data)) => {
                // Once the device side is gone, what the browser still
                // sends is read and dropped until its close.
                if !device_gone && to.send(MsgKind::Bytes, data, false, false).await.is_err() {
                    device_gone = true;
                }
            }
            Ok(Incoming::Ping | Incoming::Pong) => {}
            Ok(Incoming::Close(p)) => break UpEnd::Closed(p),
            Err(e) => {
                break match e.close() {
                    Some((code, reason)) => UpEnd::Failed(code, reason),
                    None => UpEnd::Gone,
                };
            }
        }
    };
    if !device_gone {
        let _ = to.send(MsgKind::Bytes, Vec::new(), false, true).await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle tunnelled socket's task is this future (in tokio's task
    /// cell, with the span); see `ws::tests::the_websocket_task_stays_small`.
    #[test]
    fn the_tunnel_task_stays_small() {
        let f: fn(Arc<Bridge>, OnBrowser, DeviceStream, LiveGuard) -> _ = task;
        let size = super::super::returned_size(f);
        eprintln!("tunnel task future: {size} bytes");
        assert!(size <= 1_152, "the tunnel task grew to {size} bytes");
    }
}
