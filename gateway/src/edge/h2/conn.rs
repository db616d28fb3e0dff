//! The connection driver: reads frames from the TLS stream and dispatches
//! them, and writes what the streams queued. See the module docs of
//! [`super`] for the design.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::frame::{
    self, DEFAULT_WINDOW, HEAD_LEN, Head, MAX_FRAME, MAX_WINDOW, PREFACE, Reason, flag, kind,
    setting,
};
use super::hpack::{self, Decoded};
use super::stream::{CONN_WINDOW, Mux, STREAM_WINDOW, Slot, Stream, role};
use super::{Body, Upgrade};
use crate::bridge::RequestBody;
use crate::edge::http::EdgeStats;

/// Output the driver queues before it stops reading (a client that sends
/// PINGs or SETTINGS and never reads its answers stalls here, and the
/// socket's send timeout ends it).
const WBUF_HIGH: usize = 64 * 1024;

/// What the write buffer is first given when a batch starts.
const WBUF_FIRST: usize = 1024;

/// Turns of read, dispatch and write per poll before the driver yields.
const TURNS: usize = 16;

/// What the connection is held to (from `[http]`).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Streams open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub(crate) max_streams: u32,
    /// Header list size (`SETTINGS_MAX_HEADER_LIST_SIZE`); larger requests get 431.
    pub(crate) max_header_bytes: usize,
    /// Header fields per request; more get 431.
    pub(crate) max_headers: usize,
    /// Extended CONNECT (RFC 8441) is announced and taken.
    pub(crate) connect_protocol: bool,
    /// Streams the client may reset before their response, beyond the
    /// responses it let finish and beyond `max_streams`.
    pub(crate) max_early_resets: usize,
    /// Streams the gateway may reset for the client's errors.
    pub(crate) max_local_resets: usize,
    /// A PING goes out after this long without a frame from the client.
    pub(crate) keepalive: Duration,
    /// ... and the connection ends when its answer takes longer than this.
    pub(crate) ping_timeout: Duration,
}

/// A request as the driver hands it on: its handle for the response, and
/// for an extended CONNECT where to send the stream once answered.
pub(crate) struct Dispatched {
    pub(crate) request: Request<RequestBody>,
    pub(crate) responder: Stream,
    pub(crate) upgrade: Option<oneshot::Sender<Stream>>,
}

/// Why a connection ended badly.
#[derive(Debug)]
pub(crate) enum Error {
    /// The socket or TLS failed.
    Io(io::Error),
    /// The client broke the protocol; GOAWAY went out with this code.
    Protocol(Reason, &'static str),
    /// A keepalive PING went unanswered.
    PingTimeout,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "HTTP/2 connection: {e}"),
            Self::Protocol(r, what) => write!(f, "HTTP/2 connection error ({r}): {what}"),
            Self::PingTimeout => f.write_str("HTTP/2 connection: keepalive PING unanswered"),
        }
    }
}

impl std::error::Error for Error {}

/// A connection error: GOAWAY with `reason`, then the end.
#[derive(Debug)]
struct Fatal(Reason, &'static str);

/// A header block being joined from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    buf: Vec<u8>,
}

/// One HTTP/2 server connection over `io` (after TLS chose `h2`).
pub(crate) struct Conn<I, D> {
    io: I,
    mux: Arc<Mux>,
    cfg: Settings,
    stats: Arc<EdgeStats>,
    dispatch: D,
    decoder: hpack::Decoder,
    /// Received bytes of an incomplete frame.
    rbuf: Vec<u8>,
    /// Output not yet written, from `wpos` on.
    wbuf: Vec<u8>,
    wpos: usize,
    /// The preface and the client's first SETTINGS arrived.
    preface: bool,
    settings_seen: bool,
    block: Option<Block>,
    /// The highest stream the client opened.
    last_id: u32,
    /// GOAWAY sent (draining): the last stream taken.
    goaway: Option<u32>,
    /// A connection error: GOAWAY queued, the end once it is written.
    failed: Option<Fatal>,
    /// The client ended the TCP stream.
    eof: bool,
    /// Streams the client reset before their response, net of responses.
    early_resets: usize,
    /// Streams reset for the client's errors.
    local_resets: usize,
    /// Frames received, and their count at the last tick.
    frames: u64,
    frames_at_tick: u64,
    /// Since when no frame arrived (at tick granularity).
    quiet_since: Option<Instant>,
    /// A keepalive PING is out since then.
    ping_sent: Option<Instant>,
}

impl<I, D> Conn<I, D>
where
    I: AsyncRead + AsyncWrite + Unpin,
    D: FnMut(Dispatched) -> AbortHandle,
{
    pub(crate) fn new(io: I, cfg: Settings, stats: Arc<EdgeStats>, dispatch: D) -> Self {
        let mut wbuf = Vec::new();
        let mut values = vec![
            (setting::MAX_CONCURRENT_STREAMS, cfg.max_streams),
            (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (
                setting::MAX_HEADER_LIST_SIZE,
                u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX),
            ),
        ];
        if cfg.connect_protocol {
            values.push((setting::ENABLE_CONNECT_PROTOCOL, 1));
        }
        frame::put_settings(&mut wbuf, &values);
        frame::put_window_update(&mut wbuf, 0, CONN_WINDOW - DEFAULT_WINDOW as u32);
        Self {
            io,
            mux: Mux::new(),
            cfg,
            stats,
            dispatch,
            decoder: hpack::Decoder::new(4096),
            rbuf: Vec::new(),
            wbuf,
            wpos: 0,
            preface: false,
            settings_seen: false,
            block: None,
            last_id: 0,
            goaway: None,
            failed: None,
            eof: false,
            early_resets: 0,
            local_resets: 0,
            frames: 0,
            frames_at_tick: 0,
            quiet_since: None,
            ping_sent: None,
        }
    }

    /// Sends GOAWAY: no new streams; the connection ends once the open
    /// ones are done.
    pub(crate) fn drain(&mut self) {
        if self.goaway.is_none() && self.failed.is_none() {
            frame::put_goaway(&mut self.wbuf, self.last_id, Reason::NO_ERROR);
            self.goaway = Some(self.last_id);
            self.mux.lock().wake_driver();
        }
    }

    /// What the connection is held to.
    #[cfg(test)]
    pub(crate) fn config(&self) -> &Settings {
        &self.cfg
    }

    /// Bytes of buffers the connection and its streams hold.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let st = self.mux.lock();
        self.rbuf.capacity()
            + self.wbuf.capacity()
            + st.slots
                .iter()
                .map(|s| s.recv.capacity() + s.out.capacity())
                .sum::<usize>()
    }

    /// Streams holding their request task's abort handle.
    #[cfg(test)]
    pub(crate) fn tasks_held(&self) -> usize {
        self.mux
            .lock()
            .slots
            .iter()
            .filter(|s| s.task.is_some())
            .count()
    }

    /// Streams open now (WebSockets included).
    pub(crate) fn open_streams(&self) -> usize {
        self.mux.lock().slots.len()
    }

    /// The periodic check: keepalive PING out, or its answer overdue
    /// (then `Err`).
    pub(crate) fn tick(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        if self.frames != self.frames_at_tick {
            self.frames_at_tick = self.frames;
            self.quiet_since = None;
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if now.duration_since(sent) >= self.cfg.ping_timeout {
                return Err(Error::PingTimeout);
            }
            return Ok(());
        }
        let quiet = *self.quiet_since.get_or_insert(now);
        if now.duration_since(quiet) >= self.cfg.keepalive && self.failed.is_none() {
            frame::put_ping(&mut self.wbuf, false, *b"gw-alive");
            self.ping_sent = Some(now);
            self.mux.lock().wake_driver();
        }
        Ok(())
    }

    /// Drives the connection: `Ready` once it is over.
    pub(crate) fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        {
            let mut st = self.mux.lock();
            if !st.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.driver = Some(cx.waker().clone());
            }
        }
        for _ in 0..TURNS {
            let mut read = false;
            // Reading waits while the output backs up; once it is written,
            // the next turn reads (nothing else re-arms the socket's read).
            let paused = self.backlog() >= WBUF_HIGH;
            if self.failed.is_none() && !self.eof && !paused {
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(true)) => read = true,
                    Poll::Ready(Ok(false)) => self.eof = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => {}
                }
            }
            let more = self.collect();
            let flushed = match self.poll_flush_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => false,
            };
            if flushed {
                if let Some(Fatal(reason, what)) = self.failed.take() {
                    return Poll::Ready(Err(Error::Protocol(reason, what)));
                }
                if self.eof {
                    return Poll::Ready(Ok(()));
                }
                if self.goaway.is_some() && self.open_streams() == 0 {
                    let _ = Pin::new(&mut self.io).poll_shutdown(cx);
                    return Poll::Ready(Ok(()));
                }
            } else if self.eof {
                return Poll::Ready(Ok(()));
            }
            if !(read || (more || paused) && flushed) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Queues GOAWAY for a connection error; the connection ends once it
    /// is written.
    fn fail(&mut self, reason: Reason, what: &'static str) {
        if self.failed.is_some() {
            return;
        }
        if reason != Reason::NO_ERROR {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
        frame::put_goaway(&mut self.wbuf, self.last_id, reason);
        self.failed = Some(Fatal(reason, what));
        self.block = None;
    }

    /// One read: `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.rbuf.is_empty() {
            // Most reads hold whole frames: they are read on the stack and
            // only a partial frame's bytes are kept.
            let mut stack = [MaybeUninit::<u8>::uninit(); MAX_FRAME + HEAD_LEN];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                return Poll::Ready(Ok(false));
            }
            let used = self.frames_in(got);
            if used < got.len() && self.failed.is_none() {
                self.rbuf.extend_from_slice(&got[used..]);
            }
            return Poll::Ready(Ok(true));
        }
        let need = if self.rbuf.len() >= HEAD_LEN && self.preface {
            let mut h = [0; HEAD_LEN];
            h.copy_from_slice(&self.rbuf[..HEAD_LEN]);
            HEAD_LEN + Head::parse(&h).len
        } else {
            MAX_FRAME + HEAD_LEN
        };
        self.rbuf
            .reserve(need.saturating_sub(self.rbuf.len()).max(4096));
        let spare = self.rbuf.spare_capacity_mut();
        let mut rb = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            return Poll::Ready(Ok(false));
        }
        let len = self.rbuf.len() + n;
        // SAFETY: `poll_read` initialized `n` bytes of the spare capacity.
        unsafe { self.rbuf.set_len(len) };
        let buf = std::mem::take(&mut self.rbuf);
        let used = self.frames_in(&buf);
        if used < buf.len() && self.failed.is_none() {
            let mut buf = buf;
            buf.drain(..used);
            self.rbuf = buf;
        }
        Poll::Ready(Ok(true))
    }

    /// Dispatches the complete frames at the start of `data`; returns the
    /// bytes used.
    fn frames_in(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        if !self.preface {
            let n = data.len().min(PREFACE.len());
            if data[..n] != PREFACE[..n] {
                self.fail(Reason::PROTOCOL_ERROR, "not the HTTP/2 connection preface");
                return data.len();
            }
            if n < PREFACE.len() {
                return 0;
            }
            self.preface = true;
            at = PREFACE.len();
        }
        while self.failed.is_none() {
            let Some(h) = data.get(at..at + HEAD_LEN) else {
                break;
            };
            let mut b = [0; HEAD_LEN];
            b.copy_from_slice(h);
            let head = Head::parse(&b);
            if head.len > MAX_FRAME {
                self.fail(
                    Reason::FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                );
                break;
            }
            let Some(payload) = data.get(at + HEAD_LEN..at + HEAD_LEN + head.len) else {
                break;
            };
            at += HEAD_LEN + head.len;
            self.frames += 1;
            if let Err(Fatal(reason, what)) = self.frame(head, payload) {
                self.fail(reason, what);
            }
        }
        if self.failed.is_some() {
            data.len()
        } else {
            at
        }
    }

    fn frame(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if let Some(b) = &self.block
            && (h.kind != kind::CONTINUATION || h.stream != b.stream)
        {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "a header block was interrupted",
            ));
        }
        if !self.settings_seen && h.kind != kind::SETTINGS {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "the first frame was not SETTINGS",
            ));
        }
        match h.kind {
            kind::DATA => self.data(h, p),
            kind::HEADERS => self.headers(h, p),
            kind::CONTINUATION => self.continuation(h, p),
            kind::PRIORITY => {
                if h.stream == 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if p.len() != 5 {
                    self.stream_error(h.stream, Reason::FRAME_SIZE_ERROR)?;
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if h.stream == 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0"));
                }
                let Ok(code) = <[u8; 4]>::try_from(p) else {
                    return Err(Fatal(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes"));
                };
                if h.stream > self.last_id {
                    return Err(Fatal(
                        Reason::PROTOCOL_ERROR,
                        "RST_STREAM on an idle stream",
                    ));
                }
                self.peer_reset(h.stream, Reason(u32::from_be_bytes(code)))
            }
            kind::SETTINGS => self.settings(h, p),
            kind::PUSH_PROMISE => Err(Fatal(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            kind::PING => {
                let Ok(data) = <[u8; 8]>::try_from(p) else {
                    return Err(Fatal(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"));
                };
                if h.stream != 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "PING on a stream"));
                }
                if h.flags & flag::ACK != 0 {
                    self.ping_sent = None;
                } else {
                    frame::put_ping(&mut self.wbuf, true, data);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if h.stream != 0 {
                    return Err(Fatal(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                if p.len() < 8 {
                    return Err(Fatal(
                        Reason::FRAME_SIZE_ERROR,
                        "GOAWAY shorter than 8 bytes",
                    ));
                }
                // The client opens nothing more; what is open finishes.
                if self.goaway.is_none() {
                    self.goaway = Some(self.last_id);
                }
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(h, p),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn settings(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.stream != 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if h.flags & flag::ACK != 0 {
            if !p.is_empty() {
                return Err(Fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            return Ok(());
        }
        if !p.len().is_multiple_of(6) {
            return Err(Fatal(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        self.settings_seen = true;
        for s in p.chunks_exact(6) {
            let id = u16::from_be_bytes([s[0], s[1]]);
            let v = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match id {
                setting::ENABLE_PUSH if v > 1 => {
                    return Err(Fatal(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_ENABLE_PUSH above 1",
                    ));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > MAX_WINDOW {
                        return Err(Fatal(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    let mut st = self.mux.lock();
                    let delta = v - st.peer_window;
                    st.peer_window = v;
                    let mut wake = Vec::new();
                    for s in &mut st.slots {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(Fatal(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream's window grew past 2^31-1",
                            ));
                        }
                        if delta > 0 && s.wants_send() {
                            wake.push(s.id);
                        }
                    }
                    for id in wake {
                        st.queue(id);
                    }
                }
                setting::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&v) => {
                    return Err(Fatal(
                        Reason::PROTOCOL_ERROR,
                        "SETTINGS_MAX_FRAME_SIZE out of range",
                    ));
                }
                // The gateway never pushes, never opens streams, and its
                // header blocks never use the client's table; other values
                // are the client's business, and unknown ones are ignored.
                _ => {}
            }
        }
        frame::put_head(&mut self.wbuf, 0, kind::SETTINGS, flag::ACK, 0);
        Ok(())
    }

    fn window_update(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        let Ok(b) = <[u8; 4]>::try_from(p) else {
            return Err(Fatal(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes"));
        };
        let inc = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
        let mut st = self.mux.lock();
        if h.stream == 0 {
            if inc == 0 {
                return Err(Fatal(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
            }
            st.send_window += inc;
            if st.send_window > MAX_WINDOW {
                return Err(Fatal(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection's window grew past 2^31-1",
                ));
            }
            let waiting: Vec<u32> = st
                .slots
                .iter()
                .filter(|s| s.wants_send() && !s.queued)
                .map(|s| s.id)
                .collect();
            for id in waiting {
                st.queue(id);
            }
            return Ok(());
        }
        if h.stream > self.last_id {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = st.slot(h.stream) else {
            // A closed stream: a window update may cross its end.
            return Ok(());
        };
        if inc == 0 {
            drop(st);
            return self.stream_error(h.stream, Reason::PROTOCOL_ERROR);
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            drop(st);
            return self.stream_error(h.stream, Reason::FLOW_CONTROL_ERROR);
        }
        if s.wants_send() {
            st.queue(h.stream);
        }
        Ok(())
    }

    fn data(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.stream == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        if h.stream > self.last_id {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
        }
        let len = p.len();
        let Some(body) = frame::unpad(h.flags, p) else {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "padding longer than the frame",
            ));
        };
        let end = h.flags & flag::END_STREAM != 0;
        let mut st = self.mux.lock();
        st.recv_window -= len as i64;
        if st.recv_window < 0 {
            return Err(Fatal(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        let Some(s) = st.slot(h.stream) else {
            // A stream already closed (or reset by the gateway): its bytes
            // still count against the connection's window.
            st.release(len);
            return Ok(());
        };
        if s.recv_eof {
            st.release(len);
            drop(st);
            return self.stream_error(h.stream, Reason::STREAM_CLOSED);
        }
        if len as i64 > s.recv_window {
            st.release(len);
            drop(st);
            return self.stream_error(h.stream, Reason::FLOW_CONTROL_ERROR);
        }
        s.recv_window -= len as i64;
        s.received += body.len() as u64;
        let bad_length = s
            .length
            .is_some_and(|l| s.received > l || (end && s.received != l));
        if bad_length {
            st.release(len);
            drop(st);
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return self.stream_error(h.stream, Reason::PROTOCOL_ERROR);
        }
        let read = s.reset.is_none() && s.roles & role::READ != 0;
        if read {
            s.recv.extend_from_slice(body);
        }
        if end {
            s.recv_eof = true;
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        if !read {
            st.release(len);
        } else if len > body.len() {
            // Padding is consumed on arrival, for the stream's window too.
            st.consumed(h.stream, len - body.len());
        }
        Ok(())
    }

    fn headers(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        if h.stream == 0 {
            return Err(Fatal(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        let Some(mut fragment) = frame::unpad(h.flags, p) else {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "padding longer than the frame",
            ));
        };
        if h.flags & flag::PRIORITY != 0 {
            let Some(rest) = fragment.get(5..) else {
                return Err(Fatal(
                    Reason::FRAME_SIZE_ERROR,
                    "HEADERS priority cut short",
                ));
            };
            fragment = rest;
        }
        let end_stream = h.flags & flag::END_STREAM != 0;
        if h.flags & flag::END_HEADERS != 0 {
            return self.header_block(h.stream, end_stream, fragment);
        }
        self.block = Some(Block {
            stream: h.stream,
            end_stream,
            buf: fragment.to_vec(),
        });
        Ok(())
    }

    fn continuation(&mut self, h: Head, p: &[u8]) -> Result<(), Fatal> {
        let Some(b) = self.block.as_mut() else {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        // An encoded block is at most about its decoded size; one twice
        // the limit is a flood (and cannot be answered without decoding).
        if b.buf.len() + p.len() > 2 * self.cfg.max_header_bytes + MAX_FRAME {
            return Err(Fatal(Reason::ENHANCE_YOUR_CALM, "header block too large"));
        }
        b.buf.extend_from_slice(p);
        if h.flags & flag::END_HEADERS == 0 {
            return Ok(());
        }
        let Some(b) = self.block.take() else {
            return Ok(());
        };
        self.header_block(b.stream, b.end_stream, &b.buf)
    }

    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Fatal> {
        if id.is_multiple_of(2) {
            return Err(Fatal(
                Reason::PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        if id <= self.last_id {
            return self.trailers(id, end_stream, block);
        }
        self.last_id = id;
        let mut head = ReqHead::new(self.cfg.max_headers);
        let decoded = self
            .decoder
            .decode(block, self.cfg.max_header_bytes, |n, v| head.field(n, v))
            .map_err(|_| Fatal(Reason::COMPRESSION_ERROR, "header block does not decode"))?;
        if self.goaway.is_some() {
            // Past the last stream announced in GOAWAY: not processed,
            // and the client knows to retry it elsewhere.
            return Ok(());
        }
        if self.open_streams() >= self.cfg.max_streams as usize {
            // Not counted as the client's error: a stream it sees closed
            // may still be ending here.
            frame::put_reset(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let status = match decoded {
            Decoded::TooLarge => Some(431),
            Decoded::Complete if head.too_many => Some(431),
            Decoded::Complete => None,
            Decoded::Refused => {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                return self.stream_error(id, Reason::PROTOCOL_ERROR);
            }
        };
        if let Some(status) = status {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            self.answer_now(id, end_stream, status);
            return Ok(());
        }
        // A request that ends with its head has no body, whatever its
        // content-length says (RFC 9113 §8.1.1).
        let request = head
            .build(self.cfg.connect_protocol)
            .ok()
            .filter(|r| !end_stream || r.length.is_none_or(|l| l == 0));
        let Some(request) = request else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        };
        self.open(id, end_stream, request);
        Ok(())
    }

    /// A header block on a stream the client opened before: trailers
    /// (ignored) or an error. Decoded either way, to keep HPACK in step.
    fn trailers(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Fatal> {
        self.decoder
            .decode(block, self.cfg.max_header_bytes, |_, _| Ok(()))
            .map_err(|_| Fatal(Reason::COMPRESSION_ERROR, "header block does not decode"))?;
        let mut st = self.mux.lock();
        let Some(s) = st.slot(id) else {
            return Ok(());
        };
        if s.recv_eof {
            drop(st);
            return self.stream_error(id, Reason::STREAM_CLOSED);
        }
        if !end_stream {
            drop(st);
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        }
        s.recv_eof = true;
        if let Some(l) = s.length
            && s.received != l
        {
            drop(st);
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return self.stream_error(id, Reason::PROTOCOL_ERROR);
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
        Ok(())
    }

    /// Answers a request the gateway will not take (431) without a task.
    fn answer_now(&mut self, id: u32, recv_eof: bool, status: u16) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut block = Vec::new();
        hpack::encode_response(status, &headers, &mut block);
        let mut st = self.mux.lock();
        let mut s = Slot::new(id, recv_eof, st.peer_window, 0);
        s.head = Some((block, true));
        s.answered = true;
        s.out_eof = true;
        if !recv_eof {
            s.send_reset = Some(Reason::NO_ERROR);
        }
        st.open(s);
        st.queue(id);
    }

    /// Opens stream `id` for a request and hands it on.
    fn open(&mut self, id: u32, end_stream: bool, req: Built) {
        let Built {
            mut request,
            upgrade,
            length,
        } = req;
        let body_role = if end_stream || upgrade { 0 } else { role::READ };
        let responder_roles = if upgrade {
            role::READ | role::WRITE
        } else {
            role::WRITE
        };
        {
            let mut st = self.mux.lock();
            let mut s = Slot::new(id, end_stream, st.peer_window, body_role | responder_roles);
            s.length = length;
            s.dispatched = true;
            st.open(s);
        }
        if body_role != 0 {
            let stream = Stream::new(self.mux.clone(), id, role::READ);
            *request.body_mut() = Body::new(stream, length).boxed();
        }
        let responder = Stream::new(self.mux.clone(), id, responder_roles);
        let upgrade = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            request.extensions_mut().insert(Upgrade::new(rx));
            tx
        });
        let task = (self.dispatch)(Dispatched {
            request,
            responder,
            upgrade,
        });
        let mut st = self.mux.lock();
        match st.slot(id) {
            Some(s) if s.reset.is_none() => s.task = Some(task),
            // Reset while it was handed on.
            Some(_) => task.abort(),
            None => {}
        }
    }

    /// The client reset stream `id`.
    fn peer_reset(&mut self, id: u32, reason: Reason) -> Result<(), Fatal> {
        let mut st = self.mux.lock();
        let Some(s) = st.slot(id) else {
            return Ok(());
        };
        let early = !s.answered;
        let Some(dropped) = s.reset(reason, false, false) else {
            return Ok(());
        };
        st.release(dropped);
        st.reap(id);
        drop(st);
        if early {
            self.early_resets += 1;
            if self.early_resets > self.cfg.max_early_resets + self.cfg.max_streams as usize {
                return Err(Fatal(
                    Reason::ENHANCE_YOUR_CALM,
                    "too many streams reset before their response",
                ));
            }
        }
        Ok(())
    }

    /// Resets stream `id` for the client's error.
    fn stream_error(&mut self, id: u32, reason: Reason) -> Result<(), Fatal> {
        {
            let mut st = self.mux.lock();
            match st.slot(id) {
                Some(s) => {
                    if let Some(dropped) = s.reset(reason, true, false) {
                        st.release(dropped);
                        st.queue(id);
                    }
                }
                None => frame::put_reset(&mut self.wbuf, id, reason),
            }
        }
        self.local_resets += 1;
        if self.local_resets > self.cfg.max_local_resets {
            return Err(Fatal(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset for the client's errors",
            ));
        }
        Ok(())
    }

    /// Moves window updates, resets, response heads and queued output
    /// into the write buffer, up to [`WBUF_HIGH`]; true when streams
    /// still have output the windows allow (the batch was full).
    fn collect(&mut self) -> bool {
        let mut st = self.mux.lock();
        let st = &mut *st;
        if st.updates_due {
            st.updates_due = false;
            if st.conn_update_due() {
                frame::put_window_update(&mut self.wbuf, 0, st.conn_unacked);
                st.recv_window += i64::from(st.conn_unacked);
                st.conn_unacked = 0;
            }
            for s in &mut st.slots {
                if s.unacked >= STREAM_WINDOW / 2 && !s.recv_eof && s.reset.is_none() {
                    frame::put_window_update(&mut self.wbuf, s.id, s.unacked);
                    s.recv_window += i64::from(s.unacked);
                    s.unacked = 0;
                }
            }
        }
        if st.ready.is_empty() {
            return false;
        }
        if self.wbuf.capacity() == 0 {
            // One allocation for a batch of small messages (a growing
            // `Vec` took two or three), given back once it is written.
            self.wbuf.reserve(WBUF_FIRST);
        }
        let mut ready = std::mem::take(&mut st.ready);
        let mut again = Vec::new();
        let mut answered = 0;
        for &id in &ready {
            let Some(i) = st.slots.iter().position(|s| s.id == id) else {
                continue;
            };
            let s = &mut st.slots[i];
            s.queued = false;
            if self.wbuf.len() - self.wpos >= WBUF_HIGH {
                s.queued = true;
                again.push(id);
                continue;
            }
            if let Some((block, end)) = s.head.take() {
                let end = end && s.pending_out() == 0;
                frame::put_headers(&mut self.wbuf, id, &block, end, MAX_FRAME);
                if end {
                    s.sent_eof = true;
                }
                if s.dispatched {
                    answered += 1;
                }
            }
            let before = s.pending_out();
            while s.reset.is_none() && s.pending_out() > 0 {
                let room = WBUF_HIGH.saturating_sub(self.wbuf.len() - self.wpos);
                let window = s.send_window.min(st.send_window).max(0) as usize;
                let n = s.pending_out().min(window).min(MAX_FRAME).min(room);
                if n == 0 {
                    break;
                }
                let end = s.out_eof && n == s.pending_out() && s.trailers.is_none();
                let flags = if end { flag::END_STREAM } else { 0 };
                frame::put_head(&mut self.wbuf, n, kind::DATA, flags, id);
                self.wbuf
                    .extend_from_slice(&s.out[s.out_pos..s.out_pos + n]);
                s.out_pos += n;
                s.send_window -= n as i64;
                st.send_window -= n as i64;
                if end {
                    s.sent_eof = true;
                }
            }
            if s.pending_out() == 0 {
                s.out = Vec::new();
                s.out_pos = 0;
            }
            if s.pending_out() < before
                && let Some(w) = s.writer.take()
            {
                w.wake();
            }
            if s.reset.is_none() && s.out_eof && !s.sent_eof && s.pending_out() == 0 {
                match s.trailers.take() {
                    Some(block) => frame::put_headers(&mut self.wbuf, id, &block, true, MAX_FRAME),
                    None => frame::put_head(&mut self.wbuf, 0, kind::DATA, flag::END_STREAM, id),
                }
                s.sent_eof = true;
            }
            if let Some(r) = s.send_reset
                && (r != Reason::NO_ERROR || s.sent_eof)
            {
                s.send_reset = None;
                frame::put_reset(&mut self.wbuf, id, r);
                s.sent_eof = true;
            }
            let blocked_by_window = s.send_window <= 0 || st.send_window <= 0;
            if s.wants_send() && !blocked_by_window {
                s.queued = true;
                again.push(id);
            }
            if s.finished() && !s.queued {
                st.remove(i);
            }
        }
        let more = !again.is_empty();
        // The list keeps its allocation: a stream is queued for every
        // message it sends.
        ready.clear();
        ready.append(&mut again);
        st.ready = ready;
        self.early_resets = self.early_resets.saturating_sub(answered);
        more
    }

    /// Writes the output and flushes the TLS stream.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        if !self.wbuf.is_empty() {
            self.wbuf = Vec::new();
            self.wpos = 0;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<I, D> Drop for Conn<I, D> {
    fn drop(&mut self) {
        let mut st = self.mux.lock();
        st.dead = true;
        st.driver = None;
        for s in &mut st.slots {
            // A response still on its way has no one to go to.
            if let Some(t) = s.task.take() {
                t.abort();
            }
            s.wake_all();
        }
    }
}

/// A request's head as HPACK decodes it.
struct ReqHead {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
    headers: HeaderMap,
    regular: bool,
    count: usize,
    max: usize,
    too_many: bool,
}

/// A request ready to hand on.
struct Built {
    request: Request<RequestBody>,
    /// An extended CONNECT: the stream becomes the WebSocket's.
    upgrade: bool,
    length: Option<u64>,
}

impl ReqHead {
    fn new(max: usize) -> Self {
        Self {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            protocol: None,
            headers: HeaderMap::new(),
            regular: false,
            count: 0,
            max,
            too_many: false,
        }
    }

    /// One decoded field; `Err` makes the request malformed.
    fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), ()> {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular {
                return Err(());
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return Err(());
                    }
                    self.method = Some(Method::from_bytes(value).map_err(|_| ())?);
                    return Ok(());
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                b"protocol" => &mut self.protocol,
                _ => return Err(()),
            };
            if slot.is_some() {
                return Err(());
            }
            *slot = Some(Bytes::copy_from_slice(value));
            return Ok(());
        }
        self.regular = true;
        self.count += 1;
        if self.count > self.max {
            self.too_many = true;
            return Ok(());
        }
        let name = HeaderName::from_lowercase(name).map_err(|_| ())?;
        if super::CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err(());
        }
        if name == header::TE && value != b"trailers" {
            return Err(());
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| ())?;
        self.headers.append(name, value);
        Ok(())
    }

    fn build(self, connect_protocol: bool) -> Result<Built, ()> {
        let method = self.method.ok_or(())?;
        let mut upgrade = false;
        let uri = if method == Method::CONNECT && self.protocol.is_none() {
            // A tunnel: the authority only (refused later, 405).
            if self.scheme.is_some() || self.path.is_some() {
                return Err(());
            }
            Uri::from_maybe_shared(self.authority.ok_or(())?).map_err(|_| ())?
        } else {
            if self.protocol.is_some() {
                if method != Method::CONNECT || !connect_protocol || self.authority.is_none() {
                    return Err(());
                }
                upgrade = true;
            }
            let (scheme, path) = (self.scheme.ok_or(())?, self.path.ok_or(())?);
            if path.is_empty() {
                return Err(());
            }
            let path = PathAndQuery::from_maybe_shared(path).map_err(|_| ())?;
            let b = Uri::builder().path_and_query(path);
            let b = match self.authority {
                Some(a) => {
                    let a = Authority::from_maybe_shared(a).map_err(|_| ())?;
                    b.scheme(Scheme::try_from(&scheme[..]).map_err(|_| ())?)
                        .authority(a)
                }
                None => b,
            };
            b.build().map_err(|_| ())?
        };
        let mut length = None;
        for v in self.headers.get_all(header::CONTENT_LENGTH) {
            let n: u64 = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
        let mut request = Request::new(super::empty());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = self.headers;
        if let Some(p) = &self.protocol {
            if &p[..] == b"websocket" {
                request
                    .extensions_mut()
                    .insert(hyper::ext::Protocol::from_static("websocket"));
            } else {
                // Only WebSockets are taken; the request is refused (405)
                // as a CONNECT that is not one.
                upgrade = false;
            }
        }
        Ok(Built {
            request,
            upgrade,
            length,
        })
    }
}
