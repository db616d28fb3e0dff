//! WebSockets: the gateway terminates the browser's WebSocket (HTTP/1.1
//! Upgrade or HTTP/2 extended CONNECT, RFC 8441) and carries whole
//! messages over a device stream of kind WebSocket.
//!
//! ```text
//!  browser ──frames──▶ WsConn ──messages──▶ up half ──Text/Binary/WsClose──▶ device
//!  browser ◀─frames── WsConn ◀─messages── down loop ◀─Text/Binary/WsClose── device
//!                              ▲ pings every ping_interval, owed pongs, control from the up half
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
//! by a reload (user, token or device permission removed) → 1008; a frame
//! that breaks RFC 6455 → 1002; text that is not UTF-8 → 1007. Pings
//! from the browser are answered here ([`super::wsconn`]).
//!
//! # Limits
//!
//! Message `max_message` (default 1 MiB) and frame `max_frame` (64 KiB),
//! refused at the frame's header; toward a browser, the next message is
//! taken from the device stream once at most `write_buffer` (128 KiB) of
//! the last is still unwritten, so beyond that the device's window is what
//! queues. No buffer is held by an idle socket:
//! [`super::wsconn`] reads on the stack and the TLS stream under it frees
//! its buffers ([`crate::edge::tls_stream`]). permessage-deflate is never
//! negotiated (no `Sec-WebSocket-Extensions` in the answer).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RequestBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proto::{Code, MsgKind};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{Instrument as _, debug};

use super::exchange::{download, link_lost, read_head};
use super::gate::LiveGuard;
use super::page::{ErrorPage, full};
use super::wsconn::{
    Incoming, Limits, OP_BINARY, OP_PING, OP_TEXT, Role, WsConn, close_payload, wire_close_code,
};
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
    /// The browser sent its close (this payload); answer it with its code.
    BrowserClosed(Vec<u8>),
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

/// The WebSocket limits (link, raw tunnel and relay alike).
pub(super) fn limits(bridge: &Bridge) -> Limits {
    Limits {
        max_frame: bridge.websocket.max_frame,
        max_message: bridge.websocket.max_message,
        write_buffer: bridge.websocket.write_buffer,
    }
}

async fn session<S>(bridge: Arc<Bridge>, stream: DeviceStream, io: S, revoked: Arc<Notify>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = WsConn::new(io, Role::Server, limits(&bridge));
    let (ctl_tx, ctl_rx) = oneshot::channel();
    let seen = LastSeen::new();
    bridge.stats.ws_opened.fetch_add(1, Ordering::Relaxed);
    bridge.stats.ws_open.fetch_add(1, Ordering::Relaxed);
    // Both halves run in this task (a task of its own for the up half cost
    // its allocation for every idle socket).
    let up = up(&bridge, &conn, stream.sender(), ctl_tx, &seen);
    tokio::pin!(up);
    let mut up_done = false;
    let mut stream = stream;
    {
        let down = down(&bridge, &mut stream, &conn, ctl_rx, &revoked, &seen);
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
    let grace = tokio::time::sleep(CLOSE_GRACE);
    tokio::pin!(grace);
    if !up_done {
        tokio::select! {
            () = &mut up => {}
            () = &mut grace => {}
        }
    }
    drop(stream);
    // TLS close_notify and FIN (the server closes first, RFC 6455 §7.1.1).
    tokio::select! {
        _ = conn.shutdown() => {}
        () = &mut grace => {}
    }
    bridge.stats.ws_open.fetch_sub(1, Ordering::Relaxed);
}

/// Browser → device.
async fn up<S>(
    bridge: &Bridge,
    conn: &WsConn<S>,
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
        let (msg, data) = match conn.recv().await {
            Ok(Incoming::Text(t)) => (MsgKind::Text, t),
            Ok(Incoming::Binary(b)) => (MsgKind::Binary, b),
            Ok(Incoming::Ping | Incoming::Pong) => {
                seen.touch();
                continue;
            }
            Ok(Incoming::Close(payload)) => {
                // The down loop answers the browser (unless the gateway
                // closed first and this is the answer); the close goes on
                // to the device (for at most CLOSE_GRACE).
                let _ = ctl.send(Ctl::BrowserClosed(payload.clone()));
                let close = to.send(MsgKind::WsClose, payload, true, true);
                let _ = tokio::time::timeout(CLOSE_GRACE, close).await;
                return;
            }
            Err(e) => {
                let Some((code, reason)) = e.close() else {
                    debug!("browser WebSocket ended: {e}");
                    let _ = ctl.send(Ctl::Gone);
                    let _ = to
                        .send(
                            MsgKind::WsClose,
                            close_device(1001, "browser gone"),
                            true,
                            true,
                        )
                        .await;
                    return;
                };
                debug!(code, "closing the browser's WebSocket: {e}");
                bridge.stats.count_ws_refusal(code);
                let _ = ctl.send(Ctl::Close(code, reason));
                let _ = to
                    .send(MsgKind::WsClose, close_device(code, reason), true, true)
                    .await;
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

/// What the down loop sends the browser for a device event.
enum Out {
    /// A message: its opcode and payload.
    Message(u8, Vec<u8>),
    /// A close frame's payload.
    Close(Vec<u8>),
}

/// Device → browser, pings, owed pongs, and the closing handshake.
async fn down<S>(
    bridge: &Bridge,
    stream: &mut DeviceStream,
    conn: &WsConn<S>,
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
    let close = |code: u16, reason: &str| Out::Close(close_payload(code, reason));
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
                            Some((close(1011, "device message too big"), true))
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
                                    MsgKind::Text if std::str::from_utf8(&body).is_ok() => {
                                        Some((Out::Message(OP_TEXT, body), fin))
                                    }
                                    MsgKind::Text => {
                                        stream.reset(Code::PROTOCOL);
                                        Some((close(1011, "device sent invalid UTF-8"), true))
                                    }
                                    MsgKind::Binary => Some((Out::Message(OP_BINARY, body), fin)),
                                    _ => Some((Out::Close(device_close(&body)), true)),
                                }
                            } else if fin {
                                Some((close(1011, "device ended the stream mid-message"), true))
                            } else {
                                None
                            }
                        }
                    }
                    Some(StreamEvent::Data { fin: true, .. }) => {
                        Some((close(1011, "device ended the stream"), true))
                    }
                    Some(StreamEvent::Data { .. }) => {
                        stream.reset(Code::PROTOCOL);
                        Some((close(1011, "device broke the message sequence"), true))
                    }
                    Some(StreamEvent::Reset(code)) => {
                        Some((close(1011, &format!("device reset the stream ({code})")), true))
                    }
                    Some(StreamEvent::Closed) | None => {
                        let code = close_code_for_link_end(bridge.hub().is_shutting_down());
                        Some((close(code, "device link lost"), true))
                    }
                };
                let Some((m, last)) = out else { continue };
                match m {
                    Out::Message(op, body) => {
                        if conn.send(op, &body).await.is_err() {
                            break;
                        }
                        bridge.stats.ws_messages_down.fetch_add(1, Ordering::Relaxed);
                        if last {
                            // The device ended its stream with this message.
                            let _ = conn.send_close(&[]).await;
                            break;
                        }
                    }
                    Out::Close(p) => {
                        let _ = conn.send_close(&p).await;
                        break;
                    }
                }
            }
            // Every word from the up half ends the loop (so the oneshot is
            // never polled again).
            c = &mut ctl => {
                match c {
                    Ok(Ctl::Close(code, reason)) => {
                        let _ = conn.send_close(&close_payload(code, reason)).await;
                    }
                    Ok(Ctl::BrowserClosed(p)) => {
                        // Answered with the browser's code (RFC 6455 §5.5.1).
                        let _ = conn.send_close(&p[..p.len().min(2)]).await;
                    }
                    Ok(Ctl::Gone) | Err(_) => {}
                }
                break;
            }
            r = conn.drive() => {
                if r.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                if seen.elapsed() > interval * 2 {
                    debug!("browser did not answer pings; closing");
                    let _ = conn.send_close(&close_payload(1001, "ping timeout")).await;
                    break;
                }
                if conn.send(OP_PING, &[]).await.is_err() {
                    break;
                }
            }
            () = &mut revoked => {
                debug!("access revoked; closing");
                let _ = conn.send_close(&close_payload(1008, "access revoked")).await;
                stream.reset(Code::CANCEL);
                break;
            }
        }
    }
}

/// The browser's close payload for a device's close payload: its code if
/// a peer may send it (1011 otherwise) and its reason, made UTF-8 and cut
/// to fit a control frame.
fn device_close(payload: &[u8]) -> Vec<u8> {
    if payload.len() < 2 {
        return Vec::new();
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let code = if wire_close_code(code) { code } else { 1011 };
    close_payload(code, &String::from_utf8_lossy(&payload[2..]))
}
