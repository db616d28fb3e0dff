//! A raw device service exposed as a WebSocket (`expose = "websocket"`):
//! each browser message's bytes go down the Raw stream in order, and the
//! device's bytes come back as binary messages as they arrive (one per
//! received chunk, at most one stream window). A browser close ends the
//! stream with FIN; the device's FIN closes the browser's socket with 1000;
//! a lost link with 1011; access revoked, 1008.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proto::{Code, MsgKind};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tracing::Instrument as _;

use super::Bridge;
use super::gate::LiveGuard;
use crate::link::{DeviceStream, StreamEvent};

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }))
}

/// Runs the tunnel once the browser's upgrade completes.
pub(super) fn spawn(
    bridge: Arc<Bridge>,
    browser: OnUpgrade,
    mut stream: DeviceStream,
    live: (LiveGuard, Arc<Notify>),
    device: &str,
) {
    let span = tracing::info_span!("websocket", device = %device, upstream = "raw");
    tokio::spawn(
        async move {
            let (_guard, revoked) = live;
            let Ok(io) = browser.await else { return };
            let cfg = super::ws::ws_config(&bridge);
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(cfg)).await;
            let (mut sink, mut src) = ws.split();
            bridge.stats.ws_opened.fetch_add(1, Ordering::Relaxed);
            bridge.stats.ws_open.fetch_add(1, Ordering::Relaxed);
            let sender = stream.sender();
            let up = tokio::spawn(async move {
                while let Some(Ok(m)) = src.next().await {
                    let data = match m {
                        Message::Binary(b) => b.to_vec(),
                        Message::Text(t) => t.as_bytes().to_vec(),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if sender
                        .send(MsgKind::Bytes, data, false, false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = sender.send(MsgKind::Bytes, Vec::new(), false, true).await;
            });
            let end = loop {
                tokio::select! {
                    ev = stream.recv() => match ev {
                        Some(StreamEvent::Data { msg: MsgKind::Bytes, data, fin, .. }) => {
                            if !data.is_empty() && sink.send(Message::binary(data)).await.is_err() {
                                break None;
                            }
                            if fin {
                                break Some(close(1000, "device closed the service"));
                            }
                        }
                        Some(StreamEvent::Data { .. }) => {
                            stream.reset(Code::PROTOCOL);
                            break Some(close(1011, "device broke the stream"));
                        }
                        Some(StreamEvent::Reset(_)) | Some(StreamEvent::Closed) | None => {
                            break Some(close(1011, "device link lost"));
                        }
                    },
                    () = revoked.notified() => break Some(close(1008, "access revoked")),
                }
            };
            if let Some(c) = end {
                let _ = sink.send(c).await;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), up).await;
            bridge.stats.ws_open.fetch_sub(1, Ordering::Relaxed);
        }
        .instrument(span),
    );
}
