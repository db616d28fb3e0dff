//! WebSocket to WebSocket: the browser's socket (terminated here, with the
//! gateway's limits) and an HTTP/1.1 upstream's socket (raw services,
//! direct upstreams), whole messages relayed each way by a task of its own,
//! close frames passed on as sent.
//!
//! Both directions run in the one task of the socket pair (an idle pair
//! costs one task, not three).
//!
//! Endings: either side's close is forwarded and the relay waits up to
//! [`CLOSE_GRACE`] for the other's; a message over the limit closes the
//! browser with 1009 (and the upstream with 1001); an upstream connection
//! lost closes the browser with 1011; access revoked by a reload, 1008.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, Notify};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument as _, debug};

use super::gate::LiveGuard;
use super::page::full;
use super::ws::Handshake;
use super::{Body, Bridge};

/// How long a closing handshake may take once one side has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The browser's 101 (HTTP/1.1) or 200 (HTTP/2 extended CONNECT).
pub(super) fn browser_answer(handshake: &Handshake, subprotocol: Option<&str>) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    match handshake {
        Handshake::Upgrade { accept } => {
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
        }
        Handshake::Connect => *resp.status_mut() = StatusCode::OK,
    }
    if let Some(p) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

fn config(bridge: &Bridge) -> WebSocketConfig {
    let w = &bridge.websocket;
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(w.write_buffer + w.max_message)
        .max_message_size(Some(w.max_message))
        .max_frame_size(Some(w.max_frame))
}

/// Starts the relay once both upgrades complete.
pub(super) fn spawn(
    bridge: Arc<Bridge>,
    browser: OnUpgrade,
    upstream: OnUpgrade,
    live: (LiveGuard, Arc<Notify>),
    device: &str,
) {
    let span = tracing::info_span!("websocket", device = %device, upstream = "http1");
    tokio::spawn(
        async move {
            let (_guard, revoked) = live;
            let (b, u) = match tokio::join!(browser, upstream) {
                (Ok(b), Ok(u)) => (b, u),
                (b, u) => {
                    debug!(
                        browser = b.is_ok(),
                        upstream = u.is_ok(),
                        "an upgrade did not complete"
                    );
                    return;
                }
            };
            let cfg = config(&bridge);
            let browser =
                WebSocketStream::from_raw_socket(TokioIo::new(b), Role::Server, Some(cfg)).await;
            let upstream =
                WebSocketStream::from_raw_socket(TokioIo::new(u), Role::Client, Some(cfg)).await;
            bridge
                .stats
                .ws_opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bridge
                .stats
                .ws_open
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            relay(browser, upstream, &revoked).await;
            bridge
                .stats
                .ws_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        .instrument(span),
    );
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }))
}

/// What ended one direction.
enum End {
    /// The source sent Close (already forwarded).
    Closed,
    /// The source's message was too big.
    TooBig,
    /// The source's connection failed or ended without Close.
    Lost,
}

/// One direction: `from`'s messages into `to`.
async fn pump(
    mut from: futures_util::stream::SplitStream<Socket>,
    to: &Mutex<futures_util::stream::SplitSink<Socket, Message>>,
) -> End {
    loop {
        match from.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                if to.lock().await.send(m).await.is_err() {
                    return End::Lost;
                }
            }
            Some(Ok(Message::Close(f))) => {
                let _ = to.lock().await.send(Message::Close(f)).await;
                return End::Closed;
            }
            Some(Ok(_)) => {}
            Some(Err(WsError::Capacity(_))) => return End::TooBig,
            Some(Err(_)) | None => return End::Lost,
        }
    }
}

/// Both directions in this one task (two tasks of their own cost a task
/// allocation each, and shared sinks behind an `Arc`, for every idle
/// socket).
async fn relay(browser: Socket, upstream: Socket, revoked: &Notify) {
    let (b_sink, b_src) = browser.split();
    let (u_sink, u_src) = upstream.split();
    let b_sink = Mutex::new(b_sink);
    let u_sink = Mutex::new(u_sink);
    let first = {
        let up = pump(b_src, &u_sink);
        let down = pump(u_src, &b_sink);
        tokio::pin!(up, down);
        let first = tokio::select! {
            r = &mut up => Some((true, r)),
            r = &mut down => Some((false, r)),
            () = revoked.notified() => None,
        };
        if let Some((from_browser, End::Closed)) = first {
            // Wait for the other side's close to come through.
            if from_browser {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut down).await;
            } else {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
            }
        }
        first
        // The pumps end here, with any sink lock one held mid-send (a frame
        // it had started stays queued in the sink and goes out first).
    };
    match first {
        None => {
            let _ = b_sink
                .lock()
                .await
                .send(close(1008, "access revoked"))
                .await;
            let _ = u_sink.lock().await.send(close(1001, "going away")).await;
        }
        Some((from_browser, end)) => match end {
            End::Closed => {}
            End::TooBig if from_browser => {
                let _ = b_sink
                    .lock()
                    .await
                    .send(close(1009, "message too big"))
                    .await;
                let _ = u_sink.lock().await.send(close(1001, "going away")).await;
            }
            End::TooBig => {
                let _ = b_sink
                    .lock()
                    .await
                    .send(close(1011, "upstream message too big"))
                    .await;
                let _ = u_sink
                    .lock()
                    .await
                    .send(close(1009, "message too big"))
                    .await;
            }
            End::Lost if from_browser => {
                let _ = u_sink.lock().await.send(close(1001, "browser gone")).await;
            }
            End::Lost => {
                let _ = b_sink
                    .lock()
                    .await
                    .send(close(1011, "upstream connection lost"))
                    .await;
            }
        },
    }
}
