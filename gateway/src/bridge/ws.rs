//! WebSockets: the gateway terminates the browser's WebSocket (HTTP/1.1
//! Upgrade or HTTP/2 extended CONNECT, RFC 8441) and carries messages
//! over a device stream of kind WebSocket.
//!
//! ```text
//!  browser ──frames──▶ WsConn ──messages──▶ up half ──Text/Binary/WsClose──▶ device
//!  browser ◀─frames── WsConn ◀─frame per chunk── down loop ◀─Text/Binary/WsClose── device
//!                              ▲ pings every ping_interval, owed pongs, control from the up half
//! ```
//!
//! Toward the browser, each chunk of a device message that the link
//! delivers goes on as a frame of its own ([`DownMessage`]): the first
//! with the message's opcode, the rest as continuations, the last with
//! FIN. Nothing gathers a whole message (a 1 MiB message is not copied
//! into one buffer and held), and text is checked as UTF-8 across the
//! chunks, a character split between two included, before any of it is
//! sent. Only a device's close payload is gathered, into one close frame.
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
//! 1009 to the browser and to the device; a device message over it, text
//! from the device that is not UTF-8, or a device message of one kind
//! continued as another → 1011 (the frames sent before it are a message
//! the close cuts short; counted in `gateway_websocket_device_errors_total`); the link to the device lost → 1011, or 1001 when the gateway is
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

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use super::RequestBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use proto::{Code, MsgKind};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::exchange::{download, link_lost, read_head};
use super::gate::LiveGuard;
use super::page::{ErrorPage, full};
use super::stats::BridgeStats;
use super::upgrade::OnBrowser;
use super::wsconn::{
    Incoming, Limits, OP_BINARY, OP_CONT, OP_PING, OP_TEXT, Role, WsConn, close_payload,
    wire_close_code,
};
use super::{Body, Bridge, response_from_head};
use crate::beside::Beside;
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

impl Handshake {
    /// The browser's 101 (HTTP/1.1) or 200 (HTTP/2 extended CONNECT),
    /// with the chosen subprotocol; counted in
    /// `gateway_websocket_handshakes_total{http}`.
    pub(super) fn answer(&self, subprotocol: Option<&str>, stats: &BridgeStats) -> Response<Body> {
        let mut resp = Response::new(full(Bytes::new()));
        let http = match self {
            Self::Upgrade { accept } => {
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                if let Ok(v) = HeaderValue::from_str(accept) {
                    h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
                }
                0
            }
            Self::Connect => {
                *resp.status_mut() = StatusCode::OK;
                1
            }
        };
        if let Some(p) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        stats.ws_handshakes[http].fetch_add(1, Ordering::Relaxed);
        resp
    }
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
    pub(super) upgrade: OnBrowser,
    /// How long the device has to answer the upgrade.
    pub(super) timeout: Duration,
    /// Its place among the live sockets, with the signal that access was revoked.
    pub(super) live: LiveGuard,
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
    let resp = handshake.answer(subprotocol.as_deref(), &bridge.stats);
    super::spawn_websocket(&device, "link", session(bridge, stream, upgrade, live));
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

/// What woke the down loop.
enum Down {
    /// The device's stream.
    Device(Option<StreamEvent>),
    /// The connection's owed writes, written (or failed).
    Driven(std::io::Result<()>),
    /// The up half's word (or its end).
    Ctl(Result<Ctl, oneshot::error::RecvError>),
    /// Time to ping the browser.
    Ping,
    /// Access was revoked.
    Revoked,
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

/// The socket's task: the browser's upgrade completed, then both halves
/// until the closing handshake.
///
/// Everything the task owns is captured once and used where it lies. This
/// future is most of what an idle WebSocket costs, and an `async fn` keeps
/// its arguments twice (as captured and as locals), a value moved into an
/// inner future is kept again in that one, and a `match` on an awaited
/// `Result` keeps the `Result`: 350 bytes per socket before
/// (`the_websocket_task_stays_small`).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn session(
    bridge: Arc<Bridge>,
    mut stream: DeviceStream,
    upgrade: OnBrowser,
    live: LiveGuard,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => {
                debug!("WebSocket upgrade did not complete: {e}");
                return;
            }
        };
        let conn = WsConn::new(io, Role::Server, limits(&bridge));
        let (ctl_tx, ctl_rx) = oneshot::channel();
        let seen = LastSeen::new();
        let _open = bridge.stats.ws_session();
        // Both halves run in this task (a task of its own for the up half
        // cost its allocation for every idle socket).
        let up = up(&bridge, &conn, stream.sender(), ctl_tx, &seen);
        tokio::pin!(up);
        let mut up_done = false;
        {
            let down = down(&bridge, &mut stream, &conn, ctl_rx, live.revoked(), &seen);
            tokio::pin!(down);
            loop {
                // `biased`: each half is ready once, at its end, so the
                // order cannot starve either; no random draw per wake.
                tokio::select! {
                    biased;
                    () = &mut down => break,
                    () = &mut up, if !up_done => up_done = true,
                }
            }
        }
        // The stream stays open until the browser's side is done, so the
        // closing handshake can finish toward the device. (One deadline,
        // not one timer for both waits: a timer kept across two waits
        // would have a place of its own beside the loop's futures.)
        let deadline = Instant::now() + CLOSE_GRACE;
        if !up_done {
            let _ = tokio::time::timeout_at(deadline, &mut up).await;
        }
        drop(stream);
        // TLS close_notify and FIN (the server closes first, RFC 6455 §7.1.1).
        let _ = tokio::time::timeout_at(deadline, conn.shutdown()).await;
    }
}

/// Browser → device.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn up<S>(
    bridge: &Bridge,
    conn: &WsConn<S>,
    to: StreamSender,
    ctl: oneshot::Sender<Ctl>,
    seen: &LastSeen,
) -> impl Future<Output = ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async move {
        let close_device = |code: u16, reason: &str| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            p
        };
        let mut device_gone = false;
        loop {
            // This bridge reads messages whole (its connection is not made
            // `in_parts`); a part would go on as a DATA frame without END_MSG.
            let (msg, data, end_msg) = match conn.recv().await {
                Ok(Incoming::Text(t)) => (MsgKind::Text, t, true),
                Ok(Incoming::Binary(b)) => (MsgKind::Binary, b, true),
                Ok(Incoming::Part(b)) => (MsgKind::Binary, b, false),
                Ok(Incoming::Ping | Incoming::Pong) => {
                    seen.touch();
                    continue;
                }
                Ok(Incoming::Close(payload)) => {
                    // The down loop answers the browser (unless the gateway
                    // closed first and this is the answer); the close goes on
                    // to the device (for at most CLOSE_GRACE).
                    let _ = ctl.send(Ctl::BrowserClosed(payload.clone()));
                    // Boxed: this wait happens once per socket, and in
                    // place it would be part of every idle socket's task.
                    let close = to.send(MsgKind::WsClose, payload, true, true);
                    let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, close)).await;
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
            if to.send(msg, data, end_msg, false).await.is_err() {
                // The device side ended; the down loop closes the browser. Keep
                // reading (and dropping) what the browser still sends until its
                // close: closing a socket with unread data would reset it, and
                // the browser would never see the close frame.
                device_gone = true;
                continue;
            }
            if end_msg {
                bridge.stats.ws_messages_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the down loop sends the browser for a device event.
enum Out {
    /// A frame of a data message: its opcode ([`OP_CONT`] after the
    /// first), payload, and whether it ends the message.
    Frame(u8, Vec<u8>, bool),
    /// A close frame's payload.
    Close(Vec<u8>),
}

/// A device message on its way to the browser. Each chunk the link
/// delivers goes on as a frame of its own as soon as it is checked: the
/// gateway holds no whole message (a 1 MiB message is never copied into
/// one buffer), and the browser sees its first bytes while the rest is
/// still on the device link. Only a device's close payload, which becomes
/// one control frame, is gathered.
#[derive(Default)]
struct DownMessage {
    /// The kind of the message whose first frame went out, until its last.
    open: Option<MsgKind>,
    /// Its bytes so far, against `max_message`.
    len: usize,
    /// Where a text message's UTF-8 check stands.
    utf8: Utf8Check,
    /// A device close payload gathered so far.
    close: Vec<u8>,
}

/// A device event's answer for the browser: a frame or a close, and
/// whether the device's stream ended with it.
type Answer = Option<(Out, bool)>;

/// Device data the browser cannot be given: the reason for the 1011
/// close, whether the stream is reset (it is not when the device already
/// ended it), and the code a browser sending the same would get (for
/// `gateway_websocket_device_errors_total`).
#[derive(Debug, PartialEq)]
struct Broken(&'static str, bool, u16);

impl DownMessage {
    /// What the browser gets for one chunk of device data (`kind` is a
    /// WebSocket kind); `Ok(None)` while a close payload is gathered.
    fn chunk(
        &mut self,
        max: usize,
        kind: MsgKind,
        data: Vec<u8>,
        end_msg: bool,
        fin: bool,
    ) -> Result<Answer, Broken> {
        if self.open.is_some_and(|k| k != kind) {
            return Err(Broken("device broke the message sequence", true, 1002));
        }
        if self.len + data.len() > max {
            return Err(Broken("device message too big", true, 1009));
        }
        if !end_msg && fin {
            return Err(Broken("device ended the stream mid-message", false, 1002));
        }
        if kind == MsgKind::WsClose {
            self.close.extend_from_slice(&data);
            self.len += data.len();
            self.open = (!end_msg).then_some(kind);
            return Ok(end_msg.then(|| (Out::Close(device_close(&self.close)), true)));
        }
        if kind == MsgKind::Text && !self.utf8.feed(&data, end_msg) {
            return Err(Broken("device sent invalid UTF-8", true, 1007));
        }
        if data.is_empty() && !end_msg {
            // Nothing to frame yet.
            return Ok(None);
        }
        let op = match (self.open, kind) {
            (Some(_), _) => OP_CONT,
            (None, MsgKind::Text) => OP_TEXT,
            (None, _) => OP_BINARY,
        };
        if end_msg {
            *self = Self::default();
        } else {
            self.open = Some(kind);
            self.len += data.len();
        }
        Ok(Some((Out::Frame(op, data, end_msg), fin)))
    }
}

/// UTF-8 checked across the chunks of one text message: a character may
/// be split between two chunks.
#[derive(Default)]
struct Utf8Check {
    /// The start of a character the last chunk ended in.
    carry: [u8; 3],
    carry_len: usize,
}

impl Utf8Check {
    /// Whether `data` continues valid UTF-8; with `last`, whether the text
    /// also ends on a whole character. Call it again only after `true`.
    fn feed(&mut self, mut data: &[u8], last: bool) -> bool {
        if self.carry_len > 0 {
            // Finish the split character first, from its lead byte's width.
            let width = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let have = self.carry_len;
            let take = (width - have).min(data.len());
            let mut ch = [0u8; 4];
            ch[..have].copy_from_slice(&self.carry[..have]);
            ch[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            match std::str::from_utf8(&ch[..have + take]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() => {
                    // Still short of its width, and `data` is used up.
                    self.carry[..have + take].copy_from_slice(&ch[..have + take]);
                    self.carry_len = have + take;
                    return !last;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let rest = &data[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len();
                !last
            }
            Err(_) => false,
        }
    }
}

/// Device → browser, pings, owed pongs, and the closing handshake.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn down<S>(
    bridge: &Bridge,
    stream: &mut DeviceStream,
    conn: &WsConn<S>,
    mut ctl: oneshot::Receiver<Ctl>,
    revoked: &Notify,
    seen: &LastSeen,
) -> impl Future<Output = ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async move {
        let max = bridge.websocket.max_message;
        let interval = bridge.websocket.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        let mut message = DownMessage::default();
        let close = |code: u16, reason: &str| Out::Close(close_payload(code, reason));
        // Made once: a wait made anew on every turn cost a lock to register
        // with the `Notify` and one to leave it, per message.
        let revoked = revoked.notified();
        tokio::pin!(revoked);
        // The ping tick, the up half's word and a revocation are polled
        // only once they wake (`crate::beside`); the device's stream and
        // the connection's writes on every wake.
        let beside = Beside::new();
        loop {
            let event = {
                let mut recv = pin!(stream.recv());
                let mut drive = pin!(conn.drive());
                poll_fn(|cx| {
                    // The rare ones first: a busy device must not keep
                    // the browser's close or a revocation waiting.
                    if let Poll::Ready(ev) = beside.poll(cx, |cx| {
                        if let Poll::Ready(c) = Pin::new(&mut ctl).poll(cx) {
                            return Poll::Ready(Down::Ctl(c));
                        }
                        if revoked.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Down::Revoked);
                        }
                        ping.poll_tick(cx).map(|_| Down::Ping)
                    }) {
                        return Poll::Ready(ev);
                    }
                    if let Poll::Ready(ev) = recv.as_mut().poll(cx) {
                        return Poll::Ready(Down::Device(ev));
                    }
                    drive.as_mut().poll(cx).map(Down::Driven)
                })
                .await
            };
            match event {
                Down::Device(ev) => {
                    let out = match ev {
                        Some(StreamEvent::Data {
                            msg: msg @ (MsgKind::Text | MsgKind::Binary | MsgKind::WsClose),
                            data,
                            end_msg,
                            fin,
                        }) => message.chunk(max, msg, data, end_msg, fin).unwrap_or_else(
                            |Broken(reason, reset, code)| {
                                if reset {
                                    stream.reset(Code::PROTOCOL);
                                }
                                bridge.stats.count_ws_device_error(code);
                                Some((close(1011, reason), true))
                            },
                        ),
                        Some(StreamEvent::Data { fin: true, .. }) => {
                            Some((close(1011, "device ended the stream"), true))
                        }
                        Some(StreamEvent::Data { .. }) => {
                            stream.reset(Code::PROTOCOL);
                            bridge.stats.count_ws_device_error(1002);
                            Some((close(1011, "device broke the message sequence"), true))
                        }
                        Some(StreamEvent::Reset(code)) => Some((
                            close(1011, &format!("device reset the stream ({code})")),
                            true,
                        )),
                        Some(StreamEvent::Closed) | None => {
                            let code = close_code_for_link_end(bridge.hub().is_shutting_down());
                            Some((close(code, "device link lost"), true))
                        }
                    };
                    let Some((m, last)) = out else { continue };
                    match m {
                        Out::Frame(op, body, end_msg) => {
                            // With the device's next chunk already here, this
                            // frame leaves with it (one system call for both).
                            let flush = last || !stream.has_next();
                            if conn.send_fragment(op, &body, end_msg, flush).await.is_err() {
                                break;
                            }
                            if end_msg {
                                bridge
                                    .stats
                                    .ws_messages_down
                                    .fetch_add(1, Ordering::Relaxed);
                            }
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
                Down::Ctl(c) => {
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
                Down::Driven(r) => {
                    if r.is_err() {
                        break;
                    }
                }
                Down::Ping => {
                    if seen.elapsed() > interval * 2 {
                        debug!("browser did not answer pings; closing");
                        let _ = conn.send_close(&close_payload(1001, "ping timeout")).await;
                        break;
                    }
                    if conn.send(OP_PING, &[]).await.is_err() {
                        break;
                    }
                }
                Down::Revoked => {
                    debug!("access revoked; closing");
                    let _ = conn
                        .send_close(&close_payload(1008, "access revoked"))
                        .await;
                    stream.reset(Code::CANCEL);
                    break;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle socket's task is this future (in tokio's task cell, with
    /// the span). It was 2,120 bytes in a release build, with the
    /// arguments kept twice, the device stream three times, the upgrade's
    /// `Result`, a timer beside the loop and the send functions' futures
    /// nested three deep (BENCHMARKS.md, "A smaller WebSocket task").
    /// The test build measured 1,352 bytes, then 1,368 with the down
    /// loop's rare events polled only once they wake (`crate::beside`),
    /// 1,376 with the browser's side either hyper's upgrade or an HTTP/2
    /// stream (`super::upgrade::Io`).
    #[test]
    fn the_websocket_task_stays_small() {
        let f: fn(Arc<Bridge>, DeviceStream, OnBrowser, LiveGuard) -> _ = session;
        let size = super::super::returned_size(f);
        eprintln!("WebSocket task future: {size} bytes");
        assert!(size <= 1_376, "the WebSocket task grew to {size} bytes");
    }

    /// Every way of cutting `text` in two and in three agrees with
    /// checking it whole.
    #[test]
    fn utf8_is_checked_across_chunks() {
        let cases: &[&[u8]] = &[
            "plain".as_bytes(),
            "é → 😀 ok".as_bytes(),
            "€€€".as_bytes(),
            b"\xF0\x9F\x98",     // a cut-off character at the end
            b"ab\xC3(",          // a bad continuation byte
            b"\xED\xA0\x80",     // a surrogate
            b"\xF4\x90\x80\x80", // above U+10FFFF
            b"\xC0\xAF",         // overlong
            b"x\xE2\x82",        // cut-off three-byte character
            b"\xFF",
            b"",
        ];
        for &text in cases {
            let whole = std::str::from_utf8(text).is_ok();
            for i in 0..=text.len() {
                for j in i..=text.len() {
                    let mut c = Utf8Check::default();
                    let got = c.feed(&text[..i], false)
                        && c.feed(&text[i..j], false)
                        && c.feed(&text[j..], true);
                    assert_eq!(got, whole, "{text:?} cut at {i} and {j}");
                }
            }
        }
    }

    fn frames(m: &mut DownMessage, kind: MsgKind, chunks: &[&[u8]]) -> Vec<(u8, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            match m.chunk(100, kind, c.to_vec(), last, false) {
                Ok(Some((Out::Frame(op, d, end), false))) => out.push((op, d, end)),
                Ok(None) => {}
                Ok(Some(_)) => panic!("not a data frame"),
                Err(e) => panic!("refused: {e:?}"),
            }
        }
        out
    }

    #[test]
    fn a_device_message_goes_on_chunk_by_chunk() {
        let mut m = DownMessage::default();
        // A character split between chunks, and an empty chunk skipped.
        let text = "h€llo".as_bytes();
        let got = frames(&mut m, MsgKind::Text, &[&text[..2], &[], &text[2..], b"!"]);
        assert_eq!(
            got,
            vec![
                (OP_TEXT, text[..2].to_vec(), false),
                (OP_CONT, text[2..].to_vec(), false),
                (OP_CONT, b"!".to_vec(), true),
            ]
        );
        // The next message starts afresh, with its own opcode.
        let got = frames(&mut m, MsgKind::Binary, &[b"\xFF"]);
        assert_eq!(got, vec![(OP_BINARY, vec![0xFF], true)]);
    }

    #[test]
    fn broken_device_messages_are_refused() {
        // What a text message's incomplete first character sends: a frame
        // that opens the message (the character waits for its rest).
        let mut m = DownMessage::default();
        assert!(matches!(
            m.chunk(100, MsgKind::Text, b"\xE2\x82".to_vec(), false, false),
            Ok(Some((Out::Frame(OP_TEXT, _, false), false)))
        ));
        // Chunks in order: all but the last are taken, the last is refused.
        type Chunk = (MsgKind, &'static [u8], bool, bool);
        let cases: [(&[Chunk], Broken); 4] = [
            (
                &[
                    (MsgKind::Text, b"\xE2\x82", false, false),
                    (MsgKind::Text, b"x", true, false),
                ],
                Broken("device sent invalid UTF-8", true, 1007),
            ),
            (
                &[
                    (MsgKind::Binary, &[0; 60], false, false),
                    (MsgKind::Binary, &[0; 41], true, false),
                ],
                Broken("device message too big", true, 1009),
            ),
            (
                &[
                    (MsgKind::Binary, &[1], false, false),
                    (MsgKind::Text, b"a", true, false),
                ],
                Broken("device broke the message sequence", true, 1002),
            ),
            (
                &[(MsgKind::Binary, &[1], false, true)],
                Broken("device ended the stream mid-message", false, 1002),
            ),
        ];
        for (chunks, want) in cases {
            let mut m = DownMessage::default();
            let Some(((kind, data, end_msg, fin), taken)) = chunks.split_last() else {
                unreachable!()
            };
            for &(k, d, e, f) in taken {
                assert!(
                    m.chunk(100, k, d.to_vec(), e, f).is_ok(),
                    "{want:?} too early"
                );
            }
            let got = m.chunk(100, *kind, data.to_vec(), *end_msg, *fin).err();
            assert_eq!(got, Some(want));
        }
    }

    #[test]
    fn a_device_close_is_gathered_into_one_close_frame() {
        let mut m = DownMessage::default();
        assert!(matches!(
            m.chunk(100, MsgKind::WsClose, vec![0x0F], false, false),
            Ok(None)
        ));
        match m.chunk(
            100,
            MsgKind::WsClose,
            vec![0xA0, b'b', b'y', b'e'],
            true,
            false,
        ) {
            Ok(Some((Out::Close(p), true))) => assert_eq!(p, [0x0F, 0xA0, b'b', b'y', b'e']),
            _ => panic!("no close"),
        }
    }
}
