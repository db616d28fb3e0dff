//! WebSockets: the gateway terminates the browser's WebSocket (HTTP/1.1
//! Upgrade or HTTP/2 extended CONNECT, RFC 8441) and carries whole
//! messages over a device stream of kind WebSocket.
//!
//! ```text
//!  browser ──frames──▶ tungstenite ──messages──▶ up half ──Text/Binary/WsClose──▶ device
//!  browser ◀─frames── tungstenite ◀─messages── down loop ◀─Text/Binary/WsClose── device
//!                                   ▲ pings every ping_interval; control from the up half
//! ```
//!
//! Both halves run in one task per socket, and nothing is allocated per
//! socket that an idle one does not use (BENCHMARKS.md, "Idle WebSocket
//! memory").
//!
//! # Lifecycle
//!
//! handshake checked (no device contact on failure) → upgrade head to the
//! device → the device's 101 (anything else is passed back as an HTTP
//! response) → 101 / 200 to the browser → messages both ways → closing
//! handshake carried both ways (codes and reasons as sent) → both sides
//! closed, or [`CLOSE_GRACE`] elapsed.
//!
//! Endings the gateway decides: a browser message over `max_message` →
//! 1009 to the browser and to the device; a device message over it →
//! 1011; the link to the device lost → 1011, or 1001 when the gateway is
//! shutting down; no answer to two pings in a row → 1001; access revoked
//! by a reload (user, token or device permission removed) → 1008. Pings from the
//! browser are answered here (tungstenite's automatic pong).
//!
//! # Limits
//!
//! Message `max_message` (default 1 MiB), frame `max_frame` (64 KiB), at
//! most `write_buffer` + one message queued toward a browser, a 2 KiB
//! read buffer (tungstenite allocates it up front, so it counts for every
//! idle socket; the TLS stream under it holds no buffer while idle, see
//! [`crate::edge::tls_stream`]); permessage-deflate is never negotiated (no
//! `Sec-WebSocket-Extensions` in the answer).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RequestBody;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proto::{Code, MsgKind};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{Instrument as _, debug};

use super::exchange::{download, link_lost, read_head};
use super::gate::LiveGuard;
use super::page::{ErrorPage, full};
use super::{Body, Bridge, response_from_head};
use crate::link::{DeviceStream, StreamEvent, StreamSender};

/// How long a closing handshake may take once one side has closed.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Which handshake the browser used.
#[derive(Clone, Debug)]
pub(super) enum Handshake {
    /// HTTP/1.1 Upgrade, with the `Sec-WebSocket-Accept` to answer.
    Upgrade { accept: String },
    /// HTTP/2 extended CONNECT.
    Connect,
}

/// Recognizes a WebSocket handshake; `Ok(None)` for ordinary requests.
pub(super) fn handshake_kind(req: &Request<RequestBody>) -> Result<Option<Handshake>, ErrorPage> {
    let h = req.headers();
    let connect = req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = req.method() == Method::GET && has_token(header::UPGRADE, "websocket");
    if !connect && !upgrade {
        return Ok(None);
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ErrorPage::new(
            426,
            "websocket_version",
            "Only WebSocket version 13 is supported.",
        ));
    }
    if connect {
        return Ok(Some(Handshake::Connect));
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Err(ErrorPage::new(
            400,
            "websocket_handshake",
            "A WebSocket upgrade needs Connection: Upgrade.",
        ));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(HeaderValue::as_bytes)
        .filter(|k| k.len() == 24 && k.ends_with(b"=="));
    let Some(key) = key else {
        return Err(ErrorPage::new(
            400,
            "websocket_handshake",
            "A WebSocket upgrade needs a valid Sec-WebSocket-Key.",
        ));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    Ok(Some(Handshake::Upgrade { accept }))
}

/// The close code browsers get when the link to the device ends.
pub fn close_code_for_link_end(gateway_shutting_down: bool) -> u16 {
    if gateway_shutting_down { 1001 } else { 1011 }
}

/// What a WebSocket session needs besides the device stream.
pub(super) struct Session {
    /// The browser's handshake.
    pub(super) handshake: Handshake,
    /// The subprotocol to answer the browser with.
    pub(super) subprotocol: Option<String>,
    /// hyper's upgrade of the browser's connection.
    pub(super) upgrade: OnUpgrade,
    /// How long the device has to answer the upgrade.
    pub(super) timeout: Duration,
    /// Its entry among the live sockets, and the signal that access was revoked.
    pub(super) live: (LiveGuard, Arc<Notify>),
}

/// Sends the upgrade to the device and, on its 101, answers the browser and
/// starts the session.
pub(super) async fn bridge(
    bridge: Arc<Bridge>,
    mut stream: DeviceStream,
    head: Vec<u8>,
    ws: Session,
) -> Result<Response<Body>, ErrorPage> {
    let Session {
        handshake,
        subprotocol,
        upgrade,
        timeout,
        live,
    } = ws;
    let device = stream.device().to_string();
    stream
        .send(MsgKind::Head, head, true, false)
        .await
        .map_err(|_| link_lost(&device))?;
    let head = match tokio::time::timeout(timeout, read_head(&mut stream, &device)).await {
        Ok(h) => h?,
        Err(_) => {
            bridge.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            stream.reset(Code::CANCEL);
            return Err(ErrorPage::new(
                504,
                "device_timeout",
                format!("Device {device} did not answer the WebSocket upgrade within {timeout:?}."),
            ));
        }
    };
    let parsed = proto::wire::ResponseHead::parse(&head.bytes).map_err(|e| {
        ErrorPage::new(
            502,
            "bad_device_response",
            format!("Device {device} sent a response head that does not decode: {e}."),
        )
    })?;
    if parsed.status != 101 {
        // The device refused the upgrade: its answer, as an HTTP response.
        let resp = response_from_head(&parsed, &device)?;
        let body = if head.fin {
            full(Bytes::new())
        } else {
            download(stream, None, None)
        };
        return Ok(resp.map(|()| body));
    }
    if head.fin {
        return Err(ErrorPage::new(
            502,
            "bad_device_response",
            format!("Device {device} accepted the WebSocket and ended the stream at once."),
        ));
    }
    let mut resp = Response::new(full(Bytes::new()));
    match &handshake {
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
    if let Some(p) = subprotocol
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    let span = tracing::info_span!("websocket", device = %device);
    tokio::spawn(
        async move {
            let (_guard, revoked) = live;
            match upgrade.await {
                Ok(io) => session(bridge, stream, TokioIo::new(io), revoked).await,
                Err(e) => debug!("WebSocket upgrade did not complete: {e}"),
            }
        }
        .instrument(span),
    );
    Ok(resp)
}

/// What the up half tells the down loop, once, as it ends. (Signs of life
/// go through [`LastSeen`], not here: one wake-up of the down loop less per
/// message.) A oneshot, not a channel: a tokio mpsc channel allocates a
/// 32-slot block up front, about a kilobyte per idle socket.
enum Ctl {
    /// Close the browser's WebSocket with this code and reason.
    Close(u16, &'static str),
    /// The browser sent its close (already answered by tungstenite), and
    /// it went on to the device.
    BrowserClosed,
    /// The browser's connection is gone.
    Gone,
}

/// When the browser last showed life (a message, ping or pong), in
/// milliseconds since the session started; written by the up half, read by
/// the down loop on its ping ticks.
struct LastSeen {
    start: Instant,
    ms: std::sync::atomic::AtomicU64,
}

impl LastSeen {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.ms.store(ms, Ordering::Relaxed);
    }

    fn elapsed(&self) -> Duration {
        let at = self.start + Duration::from_millis(self.ms.load(Ordering::Relaxed));
        at.elapsed()
    }
}

/// The browser side's WebSocket settings (link and raw tunnel alike). The
/// read buffer is what tungstenite keeps per connection, idle or not, and
/// the most it reads per call (1 KiB measured no smaller per idle
/// connection than 2 KiB: BENCHMARKS.md, "TLS buffers freed while idle").
pub(super) fn ws_config(bridge: &Bridge) -> WebSocketConfig {
    let w = &bridge.websocket;
    WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(w.write_buffer + w.max_message)
        .max_message_size(Some(w.max_message))
        .max_frame_size(Some(w.max_frame))
}

async fn session<S>(bridge: Arc<Bridge>, stream: DeviceStream, io: S, revoked: Arc<Notify>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config(&bridge))).await;
    let (sink, src) = ws.split();
    let (ctl_tx, ctl_rx) = oneshot::channel();
    let seen = LastSeen::new();
    bridge.stats.ws_opened.fetch_add(1, Ordering::Relaxed);
    bridge.stats.ws_open.fetch_add(1, Ordering::Relaxed);
    // Both halves run in this task (a task of its own for the up half cost
    // its allocation for every idle socket).
    let up = up(&bridge, src, stream.sender(), ctl_tx, &seen);
    tokio::pin!(up);
    let mut up_done = false;
    let mut stream = stream;
    {
        let down = down(&bridge, &mut stream, sink, ctl_rx, &revoked, &seen);
        tokio::pin!(down);
        loop {
            tokio::select! {
                () = &mut down => break,
                () = &mut up, if !up_done => up_done = true,
            }
        }
    }
    // The stream stays open until the browser's side is done, so the
    // closing handshake can finish toward the device.
    if !up_done {
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
    }
    drop(stream);
    bridge.stats.ws_open.fetch_sub(1, Ordering::Relaxed);
}

fn close_payload(frame: Option<&CloseFrame>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(f) = frame {
        out.extend_from_slice(&u16::from(f.code).to_be_bytes());
        out.extend_from_slice(f.reason.as_bytes());
    }
    out
}

type Source<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;
type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// Browser → device.
async fn up<S>(
    bridge: &Bridge,
    mut src: Source<S>,
    to: StreamSender,
    ctl: oneshot::Sender<Ctl>,
    seen: &LastSeen,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let close_device = |code: u16, reason: &str| {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    };
    let mut device_gone = false;
    loop {
        let (msg, data) = match src.next().await {
            // Without a copy where tungstenite's buffer is not shared.
            Some(Ok(Message::Text(t))) => (MsgKind::Text, Vec::from(Bytes::from(t))),
            Some(Ok(Message::Binary(b))) => (MsgKind::Binary, Vec::from(b)),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                seen.touch();
                continue;
            }
            Some(Ok(Message::Close(frame))) => {
                // tungstenite has answered the browser; the close goes on to
                // the device (for at most CLOSE_GRACE), then the down loop
                // ends the session.
                let close = to.send(MsgKind::WsClose, close_payload(frame.as_ref()), true, true);
                let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
                let _ = ctl.send(Ctl::BrowserClosed);
                return;
            }
            Some(Err(e)) => {
                let (code, reason) = match &e {
                    WsError::Capacity(_) => (1009, "message too big"),
                    WsError::Utf8(_) => (1007, "invalid UTF-8"),
                    WsError::Protocol(_) => (1002, "protocol error"),
                    _ => {
                        debug!("browser WebSocket failed: {e}");
                        let _ = to
                            .send(
                                MsgKind::WsClose,
                                close_device(1001, "browser gone"),
                                true,
                                true,
                            )
                            .await;
                        let _ = ctl.send(Ctl::Gone);
                        return;
                    }
                };
                debug!(code, "closing the browser's WebSocket: {e}");
                let _ = ctl.send(Ctl::Close(code, reason));
                let _ = to
                    .send(MsgKind::WsClose, close_device(code, reason), true, true)
                    .await;
                return;
            }
            None => {
                let _ = to
                    .send(
                        MsgKind::WsClose,
                        close_device(1001, "browser gone"),
                        true,
                        true,
                    )
                    .await;
                let _ = ctl.send(Ctl::Gone);
                return;
            }
        };
        seen.touch();
        if device_gone {
            continue;
        }
        if to.send(msg, data, true, false).await.is_err() {
            // The device side ended; the down loop closes the browser. Keep
            // reading (and dropping) what the browser still sends until its
            // close: closing a socket with unread data would reset it, and
            // the browser would never see the close frame.
            device_gone = true;
            continue;
        }
        bridge.stats.ws_messages_up.fetch_add(1, Ordering::Relaxed);
    }
}

/// A close code the gateway may send to a browser (RFC 6455 §7.4).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Device → browser, pings, and the closing handshake.
async fn down<S>(
    bridge: &Bridge,
    stream: &mut DeviceStream,
    mut sink: Sink<S>,
    mut ctl: oneshot::Receiver<Ctl>,
    revoked: &Notify,
    seen: &LastSeen,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let max = bridge.websocket.max_message;
    let interval = bridge.websocket.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut message: Vec<u8> = Vec::new();
    let close = |code: u16, reason: String| {
        Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
    };
    // Made once: a wait made anew on every turn cost a lock to register
    // with the `Notify` and one to leave it, per message.
    let revoked = revoked.notified();
    tokio::pin!(revoked);
    loop {
        tokio::select! {
            ev = stream.recv() => {
                let out = match ev {
                    Some(StreamEvent::Data { msg: msg @ (MsgKind::Text | MsgKind::Binary | MsgKind::WsClose), data, end_msg, fin }) => {
                        if message.len() + data.len() > max {
                            stream.reset(Code::PROTOCOL);
                            Some((close(1011, "device message too big".into()), true))
                        } else {
                            // A whole message in one chunk goes on as it is.
                            if message.is_empty() && end_msg {
                                message = data;
                            } else {
                                message.extend_from_slice(&data);
                            }
                            if end_msg {
                                let body = std::mem::take(&mut message);
                                match msg {
                                    MsgKind::Text => match String::from_utf8(body) {
                                        Ok(t) => Some((Message::text(t), fin)),
                                        Err(_) => {
                                            stream.reset(Code::PROTOCOL);
                                            Some((close(1011, "device sent invalid UTF-8".into()), true))
                                        }
                                    },
                                    MsgKind::Binary => Some((Message::binary(body), fin)),
                                    _ => Some((device_close(&body), true)),
                                }
                            } else if fin {
                                Some((close(1011, "device ended the stream mid-message".into()), true))
                            } else {
                                None
                            }
                        }
                    }
                    Some(StreamEvent::Data { fin: true, .. }) => {
                        Some((close(1011, "device ended the stream".into()), true))
                    }
                    Some(StreamEvent::Data { .. }) => {
                        stream.reset(Code::PROTOCOL);
                        Some((close(1011, "device broke the message sequence".into()), true))
                    }
                    Some(StreamEvent::Reset(code)) => {
                        Some((close(1011, format!("device reset the stream ({code})")), true))
                    }
                    Some(StreamEvent::Closed) | None => {
                        let code = close_code_for_link_end(bridge.hub().is_shutting_down());
                        Some((close(code, "device link lost".into()), true))
                    }
                };
                let Some((m, last)) = out else { continue };
                let is_close = matches!(m, Message::Close(_));
                let sent = sink.send(m).await.is_ok();
                if sent && !is_close {
                    bridge.stats.ws_messages_down.fetch_add(1, Ordering::Relaxed);
                }
                if !sent || last || is_close {
                    break;
                }
            }
            // Every word from the up half ends the loop (so the oneshot is
            // never polled again).
            c = &mut ctl => {
                if let Ok(Ctl::Close(code, reason)) = c {
                    let _ = sink.send(close(code, reason.into())).await;
                }
                break;
            }
            _ = ping.tick() => {
                if seen.elapsed() > interval * 2 {
                    debug!("browser did not answer pings; closing");
                    let _ = sink.send(close(1001, "ping timeout".into())).await;
                    break;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            () = &mut revoked => {
                debug!("access revoked; closing");
                let _ = sink.send(close(1008, "access revoked".into())).await;
                stream.reset(Code::CANCEL);
                break;
            }
        }
    }
    let _ = sink.close().await;
}

/// The browser's close frame for a device's close payload.
fn device_close(payload: &[u8]) -> Message {
    if payload.len() < 2 {
        return Message::Close(None);
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
    let code = if sendable(code) { code } else { 1011 };
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}
