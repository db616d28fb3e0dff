//! The gateway's WebSocket connections (RFC 6455): the browser's, in the
//! server role, for the link, raw-tunnel and direct bridges, and the
//! direct relay's to the upstream, in the client role. Frames in and out
//! over the upgraded connection, with nothing on the heap while the socket
//! is idle.
//!
//! tungstenite, used before, allocated its read buffer when the
//! connection started and kept it for the connection's life, and splitting
//! it for the two directions put the whole connection behind an `Arc`'d
//! lock. Here a poll reads into a buffer on its own stack and keeps on the
//! heap only what a message in flight needs, at most a part (256 KiB) of a
//! binary message, and a large payload is not copied on its way through:
//!
//! ```text
//!  recv: io ─read─▶ stack buffer (READ) ─feed─▶ header, 14 bytes inline
//!                                          ├──▶ payload, unmasked, into the message (or control payload)
//!                                          └──▶ bytes past a finished message ─▶ `rest`, until consumed
//!        io ─read─▶ the message itself, for the rest of a data frame of DIRECT_READ (4 KiB) or more
//!        a binary message handed on (`Incoming::Part`) each time it holds PART bytes
//!  send: [owed pong] + header + payload, one buffer ─write─▶ io ─flush
//!        a payload of DIRECT_MIN (32 KiB) or more (server role, or an owned payload
//!        masked in place in the client role): header + its first 16 KiB through
//!        that buffer, the rest written from the sender's buffer
//!        a fragment whose successor is already at hand (`send_fragment`
//!        without `flush`) skips the flush: both leave in one system call
//! ```
//!
//! Both directions run in one task (the bridge's `up` and `down` halves
//! under one `select!`): each takes the connection's lock only inside a
//! poll, never across an await, so the lock is never contended. A ping
//! from the browser leaves its pong with the writer, which sends it before
//! its next frame, or at once when it has nothing to send (its task is
//! woken for that).
//!
//! # What the reader enforces (RFC 6455 §5, §7.4)
//!
//! A failure ends reading for good and names the close code the bridge
//! sends ([`RecvError::close`]):
//! - 1002: a reserved bit set (no extension is ever agreed), a reserved
//!   opcode, an unmasked frame, a 64-bit length with its top bit set, a
//!   fragmented or over-125-byte control frame, a continuation with no
//!   message begun or a new message inside a fragmented one, a close
//!   payload of one byte or with a code a peer may not send.
//! - 1009: a frame over `max_frame` or a message over `max_message`,
//!   refused at its header, before its payload is read.
//! - 1007: a text message or close reason that is not UTF-8 (checked when
//!   the message is whole).
//!
//! The writer sends a message as one frame ([`WsConn::send`]) or as the
//! frames its sender cuts it into ([`WsConn::send_fragment`]), masked only
//! in the client role, and nothing after its close frame. A write dropped
//! midway keeps what it had not written, so the frame goes out whole
//! before the next one.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::BufMut as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one poll reads: one TLS record's plaintext.
const READ: usize = 16 * 1024;

/// Continuation frame.
pub(super) const OP_CONT: u8 = 0x0;
/// Text frame.
pub(super) const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub(super) const OP_BINARY: u8 = 0x2;
/// Close frame.
const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub(super) const OP_PING: u8 = 0x9;
/// Pong frame.
const OP_PONG: u8 = 0xA;

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Which end of the WebSocket the gateway is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Toward a browser: frames in are masked, frames out are not.
    Server,
    /// Toward an upstream WebSocket server (direct upstreams): frames out
    /// are masked with a fresh random key each, frames in must not be.
    Client,
}

/// Size limits: what the peer may send, what may wait toward it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// The largest frame payload.
    pub(super) max_frame: usize,
    /// The largest message, all its frames together.
    pub(super) max_message: usize,
    /// How much of what is sent may wait unwritten while the sender goes
    /// on (`[websocket] write_buffer`).
    pub(super) write_buffer: usize,
}

/// A binary message is handed on in parts of this size as it arrives
/// ([`Incoming::Part`]) rather than gathered whole: a 1 MiB message costs
/// the gateway at most this much, and its first bytes are on their way
/// before its last have arrived. Smaller parts cost more per byte: 64 KiB
/// parts took a third more CPU per MB on the bulk benchmark.
pub(super) const PART: usize = 256 << 10;

/// What the browser sent.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    /// A whole text message (valid UTF-8).
    Text(Vec<u8>),
    /// A binary message, or the last bytes of one whose first came as
    /// [`Self::Part`]s.
    Binary(Vec<u8>),
    /// The next [`PART`] bytes of a binary message still arriving (more
    /// follow, then `Binary` with the rest, at most `PART` bytes). Only
    /// from a connection made [`WsConn::in_parts`]. Text is not
    /// cut: it is checked as UTF-8 once whole.
    Part(Vec<u8>),
    /// A ping; its pong is owed and goes out with the next write.
    Ping,
    /// A pong.
    Pong,
    /// A close frame's payload as received: empty, or a code a peer may
    /// send and a UTF-8 reason. Nothing more is read after it.
    Close(Vec<u8>),
}

/// Why reading from the browser ended.
#[derive(Debug)]
pub(super) enum RecvError {
    /// The connection failed.
    Io(io::Error),
    /// The connection ended (also mid-frame), or reading had already ended.
    Eof,
    /// A frame broke the protocol.
    Protocol(&'static str),
    /// A frame or message over the limits.
    TooBig,
    /// A text message or close reason that is not UTF-8.
    Utf8,
}

impl RecvError {
    /// The close code and reason to send the browser for this failure;
    /// `None` when the connection itself is gone.
    pub(super) fn close(&self) -> Option<(u16, &'static str)> {
        match self {
            Self::Io(_) | Self::Eof => None,
            Self::Protocol(_) => Some((1002, "protocol error")),
            Self::TooBig => Some((1009, "message too big")),
            Self::Utf8 => Some((1007, "invalid UTF-8")),
        }
    }
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Eof => f.write_str("connection ended"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
            Self::TooBig => f.write_str("frame or message over the limit"),
            Self::Utf8 => f.write_str("text that is not UTF-8"),
        }
    }
}

/// A close code that may appear in a close frame on the wire: the
/// defined ones (RFC 6455 §7.4.1 and the IANA registry) and the ranges
/// for libraries and applications.
pub(super) fn wire_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The frame being read.
#[derive(Debug)]
struct Frame {
    op: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes read so far, modulo 4 (where the mask stands).
    phase: usize,
    /// Payload bytes still to come.
    left: u64,
}

/// The reader's state between polls. Idle, it holds no allocation.
#[derive(Debug, Default)]
struct Reader {
    /// A client (frames in unmasked).
    client: bool,
    hdr: [u8; 14],
    hdr_len: usize,
    frame: Option<Frame>,
    /// The data message being assembled: its opcode (text or binary).
    msg_op: Option<u8>,
    msg: Vec<u8>,
    /// Bytes of this message already handed on as parts.
    streamed: usize,
    /// Binary messages are handed on in parts ([`WsConn::in_parts`]).
    parts: bool,
    /// The control frame's payload being read.
    ctl: Vec<u8>,
    /// Bytes read past a finished message, and how many of them are used.
    rest: Vec<u8>,
    rest_at: usize,
    /// A close or a failure was read: nothing more is.
    done: bool,
}

impl Reader {
    /// Consumes `data` up to the end of one message, a control frame, or
    /// `data`; returns how much was used and what was completed.
    fn feed(&mut self, data: &[u8], lim: &Limits) -> Result<(usize, Option<Incoming>), RecvError> {
        let mut at = 0;
        loop {
            if self.frame.is_none() {
                // The header: two bytes say how long it is.
                let want = if self.hdr_len < 2 {
                    2
                } else {
                    header_len(self.hdr[1])
                };
                let take = (want - self.hdr_len).min(data.len() - at);
                self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[at..at + take]);
                self.hdr_len += take;
                at += take;
                if self.hdr_len < want {
                    return Ok((at, None));
                }
                if want == 2 && header_len(self.hdr[1]) > 2 {
                    continue;
                }
                self.start_frame(lim)?;
            }
            let Some(f) = self.frame.as_mut() else {
                continue;
            };
            let mut take = usize::try_from(f.left)
                .unwrap_or(usize::MAX)
                .min(data.len() - at);
            let to = if f.op >= OP_CLOSE {
                &mut self.ctl
            } else {
                if self.cut() {
                    // Up to the end of the part.
                    take = take.min(PART.saturating_sub(self.msg.len()));
                }
                &mut self.msg
            };
            let start = to.len();
            to.extend_from_slice(&data[at..at + take]);
            at += take;
            match self.took(start, take)? {
                None => return Ok((at, None)),
                Some(Some(done)) => return Ok((at, Some(done))),
                Some(None) => {}
            }
        }
    }

    /// The current frame's next `n` payload bytes are at `start` of its
    /// buffer: unmasks them and counts them. `None` while the frame has
    /// more to come; otherwise what the frame completed.
    fn took(&mut self, start: usize, n: usize) -> Result<Option<Option<Incoming>>, RecvError> {
        let Some(f) = self.frame.as_mut() else {
            return Ok(None);
        };
        let to = if f.op >= OP_CLOSE {
            &mut self.ctl
        } else {
            &mut self.msg
        };
        if f.mask != [0; 4] {
            unmask(&mut to[start..start + n], f.mask, f.phase);
        }
        f.phase = (f.phase + n) % 4;
        f.left -= n as u64;
        if f.left > 0 {
            return Ok(self.part().map(Some));
        }
        let (op, fin) = (f.op, f.fin);
        self.frame = None;
        match self.finish_frame(op, fin)? {
            Some(done) => Ok(Some(Some(done))),
            // A frame of a message that goes on.
            None => Ok(Some(self.part())),
        }
    }

    /// The binary message's bytes so far, once there are [`PART`] of
    /// them: handed on, the message's buffer made ready for what is left
    /// of its frame.
    fn part(&mut self) -> Option<Incoming> {
        if !self.cut() || self.msg.len() < PART {
            return None;
        }
        let next = self.frame.as_ref().map_or(0, |f| {
            usize::try_from(f.left).unwrap_or(usize::MAX).min(PART)
        });
        let part = std::mem::replace(&mut self.msg, Vec::with_capacity(next));
        self.streamed += part.len();
        Some(Incoming::Part(part))
    }

    /// The message being read is handed on in parts.
    fn cut(&self) -> bool {
        self.parts && self.msg_op == Some(OP_BINARY)
    }

    /// How much of a data frame's payload to read straight into the
    /// message, when that is worth it (see [`DIRECT_READ`]): what is
    /// still to come of the frame, for a binary message at most what
    /// completes its next [`PART`].
    fn direct_read(&self) -> Option<usize> {
        let f = self.frame.as_ref()?;
        if f.op >= OP_CLOSE || self.rest_at < self.rest.len() || f.left < DIRECT_READ as u64 {
            return None;
        }
        let left = usize::try_from(f.left).ok()?;
        Some(if self.cut() {
            left.min(PART - self.msg.len())
        } else {
            left
        })
    }

    /// Checks a whole header and starts its frame.
    fn start_frame(&mut self, lim: &Limits) -> Result<(), RecvError> {
        let h = &self.hdr;
        self.hdr_len = 0;
        let fin = h[0] & 0x80 != 0;
        let op = h[0] & 0x0F;
        if h[0] & 0x70 != 0 {
            return Err(RecvError::Protocol("reserved bit set"));
        }
        let masked = h[1] & 0x80 != 0;
        if masked == self.client {
            return Err(RecvError::Protocol(if masked {
                "masked frame from a server"
            } else {
                "unmasked frame from a client"
            }));
        }
        let (len, ext) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 2),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(RecvError::Protocol("frame length with its top bit set"));
                }
                (len, 8)
            }
            n => (u64::from(n), 0),
        };
        let mask = if masked {
            [h[2 + ext], h[3 + ext], h[4 + ext], h[5 + ext]]
        } else {
            [0; 4]
        };
        match op {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(RecvError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL as u64 {
                    return Err(RecvError::Protocol("control frame over 125 bytes"));
                }
                self.ctl = Vec::with_capacity(len as usize);
            }
            OP_CONT | OP_TEXT | OP_BINARY => {
                match (op, self.msg_op) {
                    (OP_CONT, None) => {
                        return Err(RecvError::Protocol("continuation without a message"));
                    }
                    (OP_TEXT | OP_BINARY, Some(_)) => {
                        return Err(RecvError::Protocol("new message inside a fragmented one"));
                    }
                    _ => {}
                }
                let len = usize::try_from(len).map_err(|_| RecvError::TooBig)?;
                if len > lim.max_frame || self.streamed + self.msg.len() + len > lim.max_message {
                    return Err(RecvError::TooBig);
                }
                if op != OP_CONT {
                    self.msg_op = Some(op);
                }
                // A binary message is held a part at a time.
                self.msg.reserve(if self.cut() {
                    len.min(PART.saturating_sub(self.msg.len()))
                } else {
                    len
                });
            }
            _ => return Err(RecvError::Protocol("reserved opcode")),
        }
        self.frame = Some(Frame {
            op,
            fin,
            mask,
            phase: 0,
            left: len,
        });
        Ok(())
    }

    /// What a frame completes: a message, a control frame, or nothing yet.
    fn finish_frame(&mut self, op: u8, fin: bool) -> Result<Option<Incoming>, RecvError> {
        match op {
            OP_PING => Ok(Some(Incoming::Ping)),
            OP_PONG => {
                self.ctl = Vec::new();
                Ok(Some(Incoming::Pong))
            }
            OP_CLOSE => {
                let p = std::mem::take(&mut self.ctl);
                if p.len() == 1 {
                    return Err(RecvError::Protocol("one-byte close payload"));
                }
                if p.len() >= 2 {
                    if !wire_close_code(u16::from_be_bytes([p[0], p[1]])) {
                        return Err(RecvError::Protocol("close code a peer may not send"));
                    }
                    if std::str::from_utf8(&p[2..]).is_err() {
                        return Err(RecvError::Utf8);
                    }
                }
                self.done = true;
                Ok(Some(Incoming::Close(p)))
            }
            _ if !fin => Ok(None),
            _ => {
                let body = std::mem::take(&mut self.msg);
                self.streamed = 0;
                if self.msg_op.take() == Some(OP_TEXT) {
                    if std::str::from_utf8(&body).is_err() {
                        return Err(RecvError::Utf8);
                    }
                    Ok(Some(Incoming::Text(body)))
                } else {
                    Ok(Some(Incoming::Binary(body)))
                }
            }
        }
    }
}

/// A header's length, from its second byte: two bytes, the extended
/// length, the mask if the mask bit is set (whether it may be is checked
/// once the header is whole).
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// XORs `buf` with the mask, starting at mask byte `phase`.
fn unmask(buf: &mut [u8], mask: [u8; 4], phase: usize) {
    let m = [
        mask[phase % 4],
        mask[(phase + 1) % 4],
        mask[(phase + 2) % 4],
        mask[(phase + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Appends one frame (FIN set) to `out`, masked with `mask` if given.
fn encode(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_frame(out, op, true, payload, mask);
}

/// Appends one frame to `out`, the last of its message if `fin`.
fn encode_frame(out: &mut Vec<u8>, op: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    encode_head(out, op, fin, payload.len(), mask.is_some());
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            let start = out.len();
            out.extend_from_slice(payload);
            unmask(&mut out[start..], m, 0);
        }
        None => out.extend_from_slice(payload),
    }
}

/// Appends a frame's first two bytes and its extended length (the mask
/// key, if `masked`, follows).
fn encode_head(out: &mut Vec<u8>, op: u8, fin: bool, len: usize, masked: bool) {
    let (h, n) = head(op, fin, len, masked);
    out.extend_from_slice(&h[..n]);
}

/// A frame's first two bytes and its extended length: `h[..n]`.
fn head(op: u8, fin: bool, len: usize, masked: bool) -> ([u8; 10], usize) {
    let bit = if masked { 0x80 } else { 0 };
    let mut h = [0; 10];
    h[0] = if fin { 0x80 | op } else { op };
    let n = match len {
        0..=125 => {
            h[1] = bit | len as u8;
            2
        }
        126..=0xFFFF => {
            h[1] = bit | 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            h[1] = bit | 127;
            h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (h, n)
}

/// Payloads up to this long are framed on the stack and written from
/// there when nothing is queued before them ([`Inner::queue_frame`]).
const SMALL_FRAME: usize = 256;

/// One frame of at most [`SMALL_FRAME`] payload bytes, as
/// [`encode_frame`] makes it, into `buf` (not zeroed first: only what is
/// written counts as filled).
fn encode_small(buf: &mut ReadBuf<'_>, op: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) {
    let (h, n) = head(op, fin, payload.len(), mask.is_some());
    // All ten bytes (a copy of a fixed size), then only the head's count.
    buf.put_slice(&h);
    buf.set_filled(n);
    if let Some(m) = mask {
        buf.put_slice(&m);
    }
    let at = buf.filled().len();
    buf.put_slice(payload);
    if let Some(m) = mask {
        unmask(&mut buf.filled_mut()[at..], m, 0);
    }
}

/// A close frame's payload: the code and as much of the reason as fits
/// (cut at a character boundary).
pub(super) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

struct Inner<S> {
    io: S,
    rd: Reader,
    /// The pong owed for the peer's last ping: its payload.
    pong: Option<Vec<u8>>,
    /// Frames not yet written, and how much of them is. Kept here, not in
    /// a write's future, so a write dropped midway leaves the rest to go
    /// out first with the next one; freed once written.
    out: Vec<u8>,
    out_at: usize,
    /// Nothing written since the last flush.
    flushed: bool,
    /// The sender said more follows at once ([`WsConn::send_fragment`]
    /// with `flush` false): [`WsConn::drive`] leaves the flush to the next
    /// write, so both frames leave in one system call.
    hold: bool,
    /// A close frame went out: nothing more does.
    close_sent: bool,
}

impl<S: AsyncWrite + Unpin> Inner<S> {
    /// Puts one frame (after any owed pong) where [`Self::poll_out`]
    /// writes it from. A small one with nothing queued before it is framed
    /// on the stack and handed to the stream at once; only what the stream
    /// does not take goes into `out`. So a small message's write allocates
    /// nothing when the socket takes it.
    fn queue_frame(
        &mut self,
        cx: &mut Context<'_>,
        op: u8,
        fin: bool,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> io::Result<()> {
        self.flushed = false;
        self.hold = false;
        if op == OP_CLOSE {
            self.close_sent = true;
        }
        if self.out.is_empty() && self.pong.is_none() && payload.len() <= SMALL_FRAME {
            let mut buf = [MaybeUninit::uninit(); SMALL_FRAME + 14];
            let mut buf = ReadBuf::uninit(&mut buf);
            encode_small(&mut buf, op, fin, payload, mask);
            let frame = buf.filled();
            let mut at = 0;
            return match poll_write_from(&mut self.io, cx, frame, &mut at) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    self.out = frame[at..].to_vec();
                    self.out_at = 0;
                    Ok(())
                }
            };
        }
        self.queue_pong(payload.len(), mask.is_some());
        encode_frame(&mut self.out, op, fin, payload, mask);
        Ok(())
    }

    /// Makes room in `out` for a frame with `len` bytes of payload, after
    /// the owed pong, which it queues first (`masked` in the client role,
    /// with a key of its own, as every frame a client sends).
    fn queue_pong(&mut self, len: usize, masked: bool) {
        let more = self.pong.as_ref().map_or(0, |p| 6 + p.len()) + 14 + len;
        if self.out.is_empty() {
            self.out = Vec::with_capacity(more);
        } else {
            self.out.reserve(more);
        }
        if let Some(p) = self.pong.take() {
            encode(&mut self.out, OP_PONG, &p, masked.then(rand::random));
        }
    }

    /// Writes `out`; ready once at most `queue` bytes of it are left, or,
    /// with `queue` 0, once all of it is written and flushed. Without
    /// `flush`, written is enough: the stream keeps what it buffers until
    /// the next flush.
    fn poll_out(
        &mut self,
        cx: &mut Context<'_>,
        queue: usize,
        flush: bool,
    ) -> Poll<io::Result<()>> {
        match poll_write_from(&mut self.io, cx, &self.out, &mut self.out_at) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending if self.out.len() - self.out_at <= queue => return Poll::Ready(Ok(())),
            other => return other,
        }
        self.out = Vec::new();
        self.out_at = 0;
        self.hold = !flush;
        if !flush {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.flushed = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if queue > 0 => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

/// Writes `buf` from `*at` on, moving `at`; ready once all of it is written.
fn poll_write_from<S: AsyncWrite + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &[u8],
    at: &mut usize,
) -> Poll<io::Result<()>> {
    while *at < buf.len() {
        match ready!(Pin::new(&mut *io).poll_write(cx, &buf[*at..])) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *at += n,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// A data frame with at least this much payload still to come is read
/// straight into its message; smaller ones go through the reader's buffer
/// on the stack, which can take several frames in one read.
const DIRECT_READ: usize = 4 << 10;

/// Payloads from this long on are written from the sender's buffer
/// rather than copied into the write queue ([`WsConn::send`]).
const DIRECT_MIN: usize = 32 << 10;
/// How much of such a payload is copied all the same: with the frame's
/// head (at most 10 bytes here), a full TLS record of 16 KiB.
const DIRECT_FIRST: usize = (16 << 10) - 10;

/// How a frame's payload is masked.
#[derive(Clone, Copy)]
enum Mask {
    /// With a fresh key in the client role, none in the server role.
    Fresh,
    /// Already, with this key (client role).
    Done([u8; 4]),
}

/// The part of a large payload a write has not written yet. It goes
/// straight from the sender's buffer to the stream once `out` (the frame's
/// head and what was queued before it) is written. A write dropped midway
/// copies what is left into `out`, so the frame is whole when the next
/// write finishes it.
struct Unwritten<'a, S: AsyncRead + AsyncWrite + Unpin> {
    conn: &'a WsConn<S>,
    rest: &'a [u8],
    at: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Unwritten<'_, S> {
    /// As [`Inner::poll_out`], for `out` and then the rest.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        queue: usize,
        flush: bool,
    ) -> Poll<io::Result<()>> {
        let mut g = self.conn.lock();
        let inner = &mut *g;
        ready!(poll_write_from(
            &mut inner.io,
            cx,
            &inner.out,
            &mut inner.out_at
        ))?;
        inner.out = Vec::new();
        inner.out_at = 0;
        match poll_write_from(&mut inner.io, cx, self.rest, &mut self.at) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending if self.rest.len() - self.at <= queue => {
                // Within the write buffer: queued, written by `drive`.
                inner.out.extend_from_slice(&self.rest[self.at..]);
                self.at = self.rest.len();
                return Poll::Ready(Ok(()));
            }
            other => return other,
        }
        inner.poll_out(cx, queue, flush)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Drop for Unwritten<'_, S> {
    fn drop(&mut self) {
        if self.at < self.rest.len() {
            let mut g = self.conn.lock();
            g.out.extend_from_slice(&self.rest[self.at..]);
            g.flushed = false;
            g.hold = false;
        }
    }
}

/// One WebSocket, both directions. Share it by reference between the
/// reading and the writing half of one task; one writer at a time.
pub(super) struct WsConn<S> {
    inner: Mutex<Inner<S>>,
    role: Role,
    limits: Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsConn<S> {
    /// A connection over an upgraded stream.
    pub(super) fn new(io: S, role: Role, limits: Limits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                io,
                rd: Reader {
                    client: role == Role::Client,
                    ..Reader::default()
                },
                pong: None,
                out: Vec::new(),
                out_at: 0,
                flushed: true,
                hold: false,
                close_sent: false,
            }),
            role,
            limits,
        }
    }

    /// Hands binary messages on in parts ([`Incoming::Part`]) from now on.
    /// For the relays that pass bytes on as they come (direct upstreams,
    /// raw tunnels); the link bridge takes messages whole: parts sent down
    /// the link measured more CPU per MB there.
    pub(super) fn in_parts(mut self) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .rd
            .parts = true;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // Nothing panics while holding it; a poisoned lock's data is whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next message or control frame from the browser.
    pub(super) async fn recv(&self) -> Result<Incoming, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Incoming, RecvError>> {
        let mut g = self.lock();
        let inner = &mut *g;
        if inner.rd.done {
            return Poll::Ready(Err(RecvError::Eof));
        }
        let got = loop {
            if inner.rd.rest_at < inner.rd.rest.len() {
                // Bytes left over from an earlier read come first.
                let rest = std::mem::take(&mut inner.rd.rest);
                let from = inner.rd.rest_at;
                let fed = inner.rd.feed(&rest[from..], &self.limits);
                if let Ok((used, _)) = &fed
                    && from + used < rest.len()
                {
                    inner.rd.rest = rest;
                    inner.rd.rest_at = from + used;
                } else {
                    inner.rd.rest_at = 0;
                }
                match fed {
                    Ok((_, Some(m))) => break Ok(m),
                    Ok((_, None)) => continue,
                    Err(e) => break Err(e),
                }
            }
            if let Some(left) = inner.rd.direct_read() {
                // The rest of a large frame: read into the message itself
                // (reserved at its header, or when a part was handed on),
                // not through the buffer below and a copy.
                inner.rd.msg.reserve(left);
                let start = inner.rd.msg.len();
                let mut into = (&mut inner.rd.msg).limit(left);
                match tokio_util::io::poll_read_buf(Pin::new(&mut inner.io), cx, &mut into) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => break Err(RecvError::Io(e)),
                    Poll::Ready(Ok(0)) => break Err(RecvError::Eof),
                    Poll::Ready(Ok(n)) => match inner.rd.took(start, n) {
                        Ok(Some(Some(m))) => break Ok(m),
                        Ok(_) => continue,
                        Err(e) => break Err(e),
                    },
                }
            }
            let mut buf = [MaybeUninit::<u8>::uninit(); READ];
            let mut rb = ReadBuf::uninit(&mut buf);
            match Pin::new(&mut inner.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => break Err(RecvError::Io(e)),
                Poll::Ready(Ok(())) => {}
            }
            let data = rb.filled();
            if data.is_empty() {
                break Err(RecvError::Eof);
            }
            match inner.rd.feed(data, &self.limits) {
                Ok((used, m)) => {
                    if used < data.len() {
                        inner.rd.rest = data[used..].to_vec();
                        inner.rd.rest_at = 0;
                    }
                    if let Some(m) = m {
                        break Ok(m);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match got {
            Ok(Incoming::Ping) => {
                // The writer owes a pong; wake the task so a writer with
                // nothing else to send sends it now.
                inner.pong = Some(std::mem::take(&mut inner.rd.ctl));
                cx.waker().wake_by_ref();
                Poll::Ready(Ok(Incoming::Ping))
            }
            Ok(m) => Poll::Ready(Ok(m)),
            Err(e) => {
                // Reading is over: drop what it held.
                inner.rd = Reader {
                    done: true,
                    ..Reader::default()
                };
                Poll::Ready(Err(e))
            }
        }
    }

    /// Writes what is owed without a new message: an owed pong, frames
    /// left queued by [`Self::send`], the flush after them. Ready when it
    /// has written and flushed all of it (or failed); pending while there
    /// is nothing to do. Poll it beside the writer's other work: the reader
    /// wakes the task when it leaves a pong.
    pub(super) async fn drive(&self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut g = self.lock();
            let inner = &mut *g;
            if let Some(p) = inner.pong.take()
                && !inner.close_sent
            {
                encode(&mut inner.out, OP_PONG, &p, self.mask());
                inner.flushed = false;
                inner.hold = false;
            }
            if inner.flushed || inner.hold {
                return Poll::Pending;
            }
            inner.poll_out(cx, 0, true)
        })
        .await
    }

    /// Sends a whole message (a text payload must be UTF-8) or a ping,
    /// after any owed pong. Returns once the frame is written, or queued
    /// with at most `write_buffer` bytes still unwritten ([`Self::drive`]
    /// writes the rest).
    pub(super) fn send(&self, op: u8, payload: &[u8]) -> impl Future<Output = io::Result<()>> {
        self.write_frame(
            op,
            true,
            payload,
            Mask::Fresh,
            self.limits.write_buffer,
            true,
        )
    }

    /// Sends one frame of a data message: `op` is the message's opcode for
    /// its first frame and [`OP_CONT`] after it; `fin` marks the last.
    /// Control frames ([`Self::send`]) may go between the frames of a
    /// message; other data frames must not. Returns as [`Self::send`] does.
    ///
    /// Without `flush` (the sender has the next frame at hand) the frame
    /// is handed to the stream but not flushed: a buffering stream (TLS
    /// here) sends it with the next one in one system call, or on its own
    /// once its buffer fills. The next write flushes; [`Self::drive`] does
    /// not, unless a pong is owed.
    pub(super) fn send_fragment(
        &self,
        op: u8,
        payload: &[u8],
        fin: bool,
        flush: bool,
    ) -> impl Future<Output = io::Result<()>> {
        self.write_frame(
            op,
            fin,
            payload,
            Mask::Fresh,
            self.limits.write_buffer,
            flush,
        )
    }

    /// Sends a close frame (its payload from [`close_payload`], or empty)
    /// after what is queued, and returns once all of it is written and
    /// flushed; nothing is sent after it. A second close is not sent.
    pub(super) fn send_close(&self, payload: &[u8]) -> impl Future<Output = io::Result<()>> {
        self.write_frame(OP_CLOSE, true, payload, Mask::Fresh, 0, true)
    }

    /// Whether a close frame went out.
    pub(super) fn close_sent(&self) -> bool {
        self.lock().close_sent
    }

    fn mask(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(rand::random)
    }

    /// Sends a whole message as [`Self::send`] does, taking the payload:
    /// in the client role a large one is masked where it lies and written
    /// from there, not copied to be masked.
    pub(super) async fn send_owned(&self, op: u8, payload: Vec<u8>) -> io::Result<()> {
        self.send_owned_fragment(op, payload, true).await
    }

    /// Sends one frame of a data message as [`Self::send_fragment`] does
    /// (flushed), taking the payload as [`Self::send_owned`] does.
    pub(super) async fn send_owned_fragment(
        &self,
        op: u8,
        mut payload: Vec<u8>,
        fin: bool,
    ) -> io::Result<()> {
        let queue = self.limits.write_buffer;
        match self.mask() {
            Some(key) if payload.len() >= DIRECT_MIN => {
                unmask(&mut payload, key, 0); // XOR: masks as well
                self.write_frame(op, fin, &payload, Mask::Done(key), queue, true)
                    .await
            }
            _ => {
                self.write_frame(op, fin, &payload, Mask::Fresh, queue, true)
                    .await
            }
        }
    }

    /// Writes one frame after any owed pong (what the `send` functions do).
    ///
    /// A function that returns its future rather than an `async fn` (here,
    /// in the `send` functions over it, and in the bridges' halves): an
    /// `async fn` keeps its arguments twice in its future, and these
    /// futures are part of every socket's task.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice in its future"
    )]
    fn write_frame(
        &self,
        op: u8,
        fin: bool,
        payload: &[u8],
        mask: Mask,
        queue: usize,
        flush: bool,
    ) -> impl Future<Output = io::Result<()>> {
        async move {
            // A large payload that needs no masking here is written from the
            // caller's buffer; only the frame's head and its first bytes (one
            // full TLS record with the head) go through `out`.
            let (direct, key) = match mask {
                Mask::Done(key) => (true, Some(key)),
                Mask::Fresh => (
                    self.role == Role::Server && payload.len() >= DIRECT_MIN,
                    None,
                ),
            };
            if !direct {
                // The frame is put out at the first poll, then written
                // with what was queued before it.
                let mut first = true;
                return poll_fn(move |cx| {
                    let mut g = self.lock();
                    let inner = &mut *g;
                    if std::mem::take(&mut first) {
                        if inner.close_sent {
                            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                        }
                        inner.queue_frame(cx, op, fin, payload, self.mask())?;
                    }
                    inner.poll_out(cx, queue, flush)
                })
                .await;
            }
            let first = DIRECT_FIRST - if key.is_some() { 4 } else { 0 };
            let (copied, rest) = if direct {
                payload.split_at(first.min(payload.len()))
            } else {
                (payload, &[][..])
            };
            {
                let mut g = self.lock();
                let inner = &mut *g;
                if inner.close_sent {
                    return Err(io::ErrorKind::NotConnected.into());
                }
                inner.queue_pong(copied.len(), self.role == Role::Client);
                encode_head(&mut inner.out, op, fin, payload.len(), key.is_some());
                if let Some(k) = key {
                    inner.out.extend_from_slice(&k);
                }
                inner.out.extend_from_slice(copied);
                inner.flushed = false;
                inner.hold = false;
                if op == OP_CLOSE {
                    inner.close_sent = true;
                }
            }
            if rest.is_empty() {
                return poll_fn(|cx| self.lock().poll_out(cx, queue, flush)).await;
            }
            let mut rest = Unwritten {
                conn: self,
                rest,
                at: 0,
            };
            poll_fn(|cx| rest.poll_write(cx, queue, flush)).await
        }
    }

    /// Ends the connection's sending side (TLS close_notify, then FIN).
    pub(super) async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut self.lock().io).poll_shutdown(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_frame: 1000,
        max_message: 3000,
        write_buffer: 0,
    };

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// Feeds `wire` in pieces of `step` bytes; returns every event, or the
    /// first error.
    fn run(wire: &[u8], step: usize) -> Result<Vec<Incoming>, RecvError> {
        let mut r = Reader::default();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            let mut at = 0;
            while at < piece.len() {
                let (used, m) = r.feed(&piece[at..], &LIM)?;
                at += used;
                out.extend(m);
            }
        }
        // A zero-length last frame completes with no more bytes.
        let (_, m) = r.feed(&[], &LIM)?;
        out.extend(m);
        Ok(out)
    }

    fn code(wire: &[u8]) -> u16 {
        run(wire, wire.len()).unwrap_err().close().unwrap().0
    }

    #[test]
    fn messages_in_every_split_of_the_bytes() {
        let big: Vec<u8> = (0..900u32).map(|i| (i * 7) as u8).collect();
        let mut wire = frame(0x81, "héllo".as_bytes(), M);
        wire.extend(frame(0x82, &big, M));
        wire.extend(frame(0x89, b"pi", M));
        // A text message in three fragments, a ping between them.
        wire.extend(frame(0x01, b"ab", [1, 2, 3, 4]));
        wire.extend(frame(0x89, b"", M));
        wire.extend(frame(0x00, b"", M));
        wire.extend(frame(0x80, b"c", [9, 9, 9, 9]));
        wire.extend(frame(0x82, b"", M));
        wire.extend(frame(0x8A, b"po", M));
        wire.extend(frame(0x88, &[0x03, 0xE8, b'o', b'k'], M));
        let want = vec![
            Incoming::Text("héllo".into()),
            Incoming::Binary(big.clone()),
            Incoming::Ping,
            Incoming::Ping,
            Incoming::Text(b"abc".to_vec()),
            Incoming::Binary(Vec::new()),
            Incoming::Pong,
            Incoming::Close(vec![0x03, 0xE8, b'o', b'k']),
        ];
        for step in [1, 2, 3, 5, 7, 13, 64, 1000, wire.len()] {
            assert_eq!(run(&wire, step).unwrap(), want, "step {step}");
        }
    }

    #[test]
    fn extended_lengths_and_mask_phases() {
        let lim = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            write_buffer: 0,
        };
        for len in [125usize, 126, 127, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = frame(0x82, &payload, M);
            let mut r = Reader::default();
            let mut got = None;
            for piece in wire.chunks(4093) {
                let (used, m) = r.feed(piece, &lim).unwrap();
                assert_eq!(used, piece.len());
                got = got.or(m);
            }
            assert_eq!(got, Some(Incoming::Binary(payload)), "len {len}");
        }
    }

    #[test]
    fn protocol_violations_close_1002() {
        assert_eq!(code(&frame(0xC1, b"x", M)), 1002, "RSV1");
        assert_eq!(code(&frame(0xA1, b"x", M)), 1002, "RSV2");
        assert_eq!(code(&frame(0x83, b"x", M)), 1002, "reserved data opcode");
        assert_eq!(code(&frame(0x8B, b"", M)), 1002, "reserved control opcode");
        assert_eq!(code(&[0x81, 0x01, b'x']), 1002, "unmasked");
        assert_eq!(code(&frame(0x09, b"", M)), 1002, "fragmented ping");
        assert_eq!(code(&frame(0x89, &[0; 126], M)), 1002, "long ping");
        assert_eq!(code(&frame(0x80, b"x", M)), 1002, "lone continuation");
        let mut w = frame(0x01, b"a", M);
        w.extend(frame(0x81, b"b", M));
        assert_eq!(code(&w), 1002, "new message mid-message");
        assert_eq!(code(&frame(0x88, &[3], M)), 1002, "one-byte close");
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let p = bad.to_be_bytes();
            assert_eq!(code(&frame(0x88, &p, M)), 1002, "close code {bad}");
        }
        let mut top = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        top.extend_from_slice(&M);
        assert_eq!(code(&top), 1002, "64-bit length, top bit set");
    }

    #[test]
    fn limits_close_1009_at_the_header() {
        // Only the header: refused before any payload.
        let mut w = frame(0x82, &[0; 1001], M);
        w.truncate(8);
        assert_eq!(code(&w), 1009, "frame over max_frame");
        let mut w = frame(0x02, &[0; 1000], M);
        w.extend(frame(0x00, &[0; 1000], M));
        w.extend(frame(0x00, &[0; 1000], M));
        w.extend(frame(0x80, &[0; 1], M));
        assert_eq!(code(&w), 1009, "message over max_message");
        let mut huge = vec![
            0x82,
            0x80 | 127,
            0x7F,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        huge.extend_from_slice(&M);
        assert_eq!(code(&huge), 1009, "2^63 - 1 bytes");
    }

    #[test]
    fn bad_utf8_closes_1007() {
        assert_eq!(code(&frame(0x81, &[0xC3], M)), 1007, "cut sequence");
        assert_eq!(code(&frame(0x81, &[0xFF, b'a'], M)), 1007, "invalid byte");
        // Valid only when the fragments are joined: accepted.
        let mut w = frame(0x01, &[0xC3], M);
        w.extend(frame(0x80, &[0xA9], M));
        assert_eq!(run(&w, 1).unwrap(), vec![Incoming::Text("é".into())]);
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.push(0xFF);
        assert_eq!(code(&frame(0x88, &close, M)), 1007, "close reason");
    }

    #[test]
    fn a_close_or_failure_ends_reading() {
        let mut w = frame(0x88, b"", M);
        w.extend(frame(0x81, b"after", M));
        let mut r = Reader::default();
        let (used, m) = r.feed(&w, &LIM).unwrap();
        assert_eq!(m, Some(Incoming::Close(Vec::new())));
        assert_eq!(used, 6, "nothing past the close is consumed");
        assert!(r.done);
    }

    #[test]
    fn unmask_matches_bytewise_at_every_phase() {
        let data: Vec<u8> = (0..77u8).collect();
        for phase in 0..4 {
            let mut fast = data.clone();
            unmask(&mut fast, M, phase);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ M[(i + phase) % 4])
                .collect();
            assert_eq!(fast, slow, "phase {phase}");
        }
    }

    #[test]
    fn frames_out_and_close_payloads() {
        let mut out = Vec::new();
        encode(&mut out, OP_TEXT, b"hi", None);
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        // A message in two frames: FIN only on the last, which continues.
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, false, b"h", None);
        encode_frame(&mut out, OP_CONT, true, b"i", None);
        assert_eq!(out, [0x01, 1, b'h', 0x80, 1, b'i']);
        let mut r = Reader {
            client: true,
            ..Reader::default()
        };
        let got = r.feed(&out, &LIM).unwrap();
        assert_eq!(got, (6, Some(Incoming::Text(b"hi".to_vec()))));
        for (len, head) in [(125usize, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(&mut out, OP_BINARY, &vec![7; len], None);
            assert_eq!(out.len(), head + len, "len {len}");
            assert_eq!(out[0], 0x82);
        }
        let long = "é".repeat(100);
        let p = close_payload(1011, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &1011u16.to_be_bytes());
    }

    #[test]
    fn the_client_role_reads_unmasked_and_sends_masked() {
        let client = || Reader {
            client: true,
            ..Reader::default()
        };
        // A server's frame is unmasked; a masked one is refused.
        let mut r = client();
        let (_, m) = r.feed(&[0x82, 2, 7, 8], &LIM).unwrap();
        assert_eq!(m, Some(Incoming::Binary(vec![7, 8])));
        let mut r = client();
        assert!(matches!(
            r.feed(&frame(0x82, b"x", M), &LIM),
            Err(RecvError::Protocol(_))
        ));
        // What the client role sends, a server reads back.
        let mut out = Vec::new();
        encode(&mut out, OP_TEXT, b"hello, device", Some(M));
        assert_eq!(out, frame(0x81, b"hello, device", M));
        let mut r = Reader::default();
        let (_, m) = r.feed(&out, &LIM).unwrap();
        assert_eq!(m, Some(Incoming::Text(b"hello, device".to_vec())));
    }

    /// A write dropped midway (its task's `select!` took another branch)
    /// leaves the rest of its frame to go out before the next frame.
    #[tokio::test]
    async fn a_dropped_write_finishes_before_the_next() {
        use tokio::io::AsyncReadExt as _;
        let (a, mut b) = tokio::io::duplex(100);
        let conn = WsConn::new(a, Role::Server, LIM);
        let big = vec![1u8; 1000];
        let first = conn.send(OP_BINARY, &big);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), first)
                .await
                .is_err(),
            "the peer reads nothing, so the write stalls"
        );
        let reader = async move {
            let mut got = vec![0u8; 4 + 1000 + 2 + 2];
            b.read_exact(&mut got).await.unwrap();
            got
        };
        let (got, sent) = tokio::join!(reader, conn.send(OP_TEXT, b"ok"));
        sent.unwrap();
        assert_eq!(&got[..4], &[0x82, 126, 0x03, 0xE8]);
        assert!(got[4..1004].iter().all(|&x| x == 1));
        assert_eq!(&got[1004..], &[0x81, 2, b'o', b'k']);
        assert!(conn.lock().out.capacity() == 0, "freed once written");
    }

    /// A small frame is framed on the stack and handed to the stream at
    /// once; what the stream does not take is queued, goes out first when
    /// the write is dropped, and the next small frame, with something
    /// queued before it, is queued behind it.
    #[tokio::test]
    async fn a_small_frame_the_stream_takes_in_part_is_finished_in_order() {
        use std::time::Duration;
        use tokio::io::AsyncReadExt as _;
        let (a, mut b) = tokio::io::duplex(100);
        let conn = WsConn::new(a, Role::Client, LIM);
        let first: Vec<u8> = (0..200u8).collect();
        let stalled = tokio::time::timeout(
            Duration::from_millis(50),
            conn.send_owned(OP_BINARY, first.clone()),
        )
        .await;
        assert!(stalled.is_err(), "the peer reads nothing: the write stalls");
        assert_eq!(
            conn.lock().out.len(),
            4 + 4 + 200 - 100,
            "what the stream did not take is queued"
        );
        let reader = async move {
            let mut got = vec![0u8; 4 + 4 + 200 + 2 + 4 + 2];
            b.read_exact(&mut got).await.unwrap();
            got
        };
        let (got, sent) = tokio::join!(reader, conn.send(OP_TEXT, b"ok"));
        sent.unwrap();
        assert_eq!(&got[..4], &[0x82, 0x80 | 126, 0, 200]);
        let key = [got[4], got[5], got[6], got[7]];
        let mut payload = got[8..208].to_vec();
        unmask(&mut payload, key, 0);
        assert_eq!(payload, first, "the first frame, whole and unmasked right");
        assert_eq!(&got[208..210], &[0x81, 0x80 | 2]);
        let key = [got[210], got[211], got[212], got[213]];
        let mut ok = got[214..].to_vec();
        unmask(&mut ok, key, 0);
        assert_eq!(ok, b"ok");
        let inner = conn.lock();
        assert!(inner.out.capacity() == 0, "freed once written");
    }

    /// A stream that records what is written and how often it is flushed
    /// (as the TLS stream, it sends only at a flush); it never has
    /// anything to read.
    #[derive(Default)]
    struct Recorder {
        written: Vec<u8>,
        flushed_at: Vec<usize>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.flushed_at.push(this.written.len());
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A frame sent without `flush` waits for the next one: `drive` leaves
    /// it, and the next write flushes both at once. An owed pong ends the
    /// wait.
    #[tokio::test]
    async fn a_held_frame_is_flushed_with_the_next() {
        use futures_util::FutureExt as _;
        let conn = WsConn::new(Recorder::default(), Role::Server, LIM);
        let big = vec![7u8; 40_000];
        conn.send_fragment(OP_BINARY, &big, false, false)
            .await
            .unwrap();
        assert!(conn.lock().io.flushed_at.is_empty(), "held: not flushed");
        assert!(
            conn.drive().now_or_never().is_none(),
            "drive leaves a held frame to the next write"
        );
        conn.send_fragment(OP_CONT, b"end", true, true)
            .await
            .unwrap();
        let total = 4 + 40_000 + 2 + 3;
        assert_eq!(conn.lock().io.written.len(), total);
        assert_eq!(conn.lock().io.flushed_at, [total], "one flush for both");
        assert!(conn.drive().now_or_never().is_none(), "nothing left");

        // Held again; then a ping arrives and its pong is owed.
        conn.send_fragment(OP_BINARY, b"a", false, false)
            .await
            .unwrap();
        conn.lock().pong = Some(b"p".to_vec());
        conn.drive().now_or_never().unwrap().unwrap();
        let g = conn.lock();
        assert_eq!(g.io.written.len(), total + 3 + 3);
        assert_eq!(g.io.flushed_at, [total, total + 6], "the pong flushes");
    }

    /// A large payload goes out from the sender's buffer; dropped midway,
    /// what is left is kept and goes out whole before the next frame.
    #[tokio::test]
    async fn a_large_payload_dropped_midway_is_finished_by_the_next_write() {
        use std::time::Duration;
        use tokio::io::AsyncReadExt as _;
        let (a, mut b) = tokio::io::duplex(4096);
        let conn = WsConn::new(a, Role::Server, LIM);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut first = Box::pin(conn.send_fragment(OP_BINARY, &big, false, true));
        // The peer takes 40 KB, past the copied first part, then stops.
        let reader = async {
            let mut got = vec![0u8; 40_000];
            b.read_exact(&mut got).await.unwrap();
            got
        };
        let (head, stalled) = tokio::join!(reader, async {
            tokio::time::timeout(Duration::from_millis(200), &mut first).await
        });
        assert!(
            stalled.is_err(),
            "the peer stopped reading: the write stalls"
        );
        assert_eq!(
            conn.lock().out.capacity(),
            0,
            "past the first part, the payload is written from the sender's buffer"
        );
        drop(first);
        let kept = conn.lock().out.len();
        assert!(
            kept > 0 && kept < 100_000 - 40_000,
            "dropped, what was not written is kept ({kept} bytes)"
        );
        let reader = async move {
            let mut rest = vec![0u8; 10 + 100_000 + 2 + 2 - 40_000];
            b.read_exact(&mut rest).await.unwrap();
            [head, rest].concat()
        };
        let (got, sent) = tokio::join!(reader, conn.send_fragment(OP_CONT, b"ok", true, true));
        sent.unwrap();
        assert_eq!(
            &got[..2],
            &[0x02, 127],
            "binary, not the last frame, 64-bit length"
        );
        assert_eq!(&got[2..10], &100_000u64.to_be_bytes());
        assert!(
            got[10..100_010] == big[..],
            "the payload, whole and in order"
        );
        assert_eq!(&got[100_010..], &[0x80, 2, b'o', b'k']);
        assert!(conn.lock().out.capacity() == 0, "freed once written");
    }

    /// With a write buffer, a send to a peer that does not read returns
    /// with the frame queued; `drive` writes it once the peer reads. Over
    /// the buffer, the send waits.
    #[tokio::test]
    async fn sends_queue_up_to_the_write_buffer_and_drive_writes_them() {
        use std::time::Duration;
        use tokio::io::AsyncReadExt as _;
        let lim = Limits {
            write_buffer: 2000,
            ..LIM
        };
        let (a, mut b) = tokio::io::duplex(100);
        let conn = WsConn::new(a, Role::Server, lim);
        let quick = tokio::time::timeout(Duration::from_secs(5), conn.send(OP_BINARY, &[1; 1500]));
        quick.await.expect("queued, not waited for").unwrap();
        assert!(conn.lock().out.len() > 1000, "the rest waits in the queue");
        let over = conn.send(OP_BINARY, &[2; 1500]);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), over)
                .await
                .is_err(),
            "over the buffer: the send waits"
        );
        let reader = async move {
            let mut got = vec![0u8; 2 * (4 + 1500)];
            b.read_exact(&mut got).await.unwrap();
            got
        };
        let (got, driven) = tokio::join!(reader, conn.drive());
        driven.unwrap();
        assert_eq!(&got[..4], &[0x82, 126, 0x05, 0xDC]);
        assert!(got[4..1504].iter().all(|&x| x == 1));
        assert_eq!(&got[1504..1508], &[0x82, 126, 0x05, 0xDC]);
        assert!(got[1508..].iter().all(|&x| x == 2));
        let inner = conn.lock();
        assert!(inner.flushed && inner.out.capacity() == 0);
    }

    /// The whole connection over a socket pair: echo, owed pongs, close.
    #[tokio::test]
    async fn over_a_stream() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (a, mut b) = tokio::io::duplex(64);
        let conn = WsConn::new(a, Role::Server, LIM);
        // Two messages and a ping in one write; the reader keeps the rest.
        let mut w = frame(0x81, b"one", M);
        w.extend(frame(0x89, b"p", M));
        w.extend(frame(0x82, &[5; 300], M));
        let client = async move {
            b.write_all(&w).await.unwrap();
            let mut got = vec![0u8; 3 + 5 + 304];
            b.read_exact(&mut got).await.unwrap();
            b.write_all(&frame(0x88, &1000u16.to_be_bytes(), M))
                .await
                .unwrap();
            let mut close = [0u8; 4];
            b.read_exact(&mut close).await.unwrap();
            (got, close)
        };
        let server = async {
            assert_eq!(conn.recv().await.unwrap(), Incoming::Text(b"one".to_vec()));
            assert_eq!(conn.recv().await.unwrap(), Incoming::Ping);
            conn.send(OP_TEXT, b"one").await.unwrap(); // the pong goes first
            assert_eq!(conn.recv().await.unwrap(), Incoming::Binary(vec![5; 300]));
            conn.send(OP_BINARY, &[6; 300]).await.unwrap();
            let Incoming::Close(p) = conn.recv().await.unwrap() else {
                panic!("no close")
            };
            conn.send_close(&p).await.unwrap();
            assert!(conn.send(OP_TEXT, b"late").await.is_err());
            assert!(matches!(conn.recv().await, Err(RecvError::Eof)));
        };
        let ((got, close), ()) = tokio::join!(client, server);
        assert_eq!(&got[..3], &[0x8A, 1, b'p']);
        assert_eq!(&got[3..8], &[0x81, 3, b'o', b'n', b'e']);
        assert_eq!(&got[8..12], &[0x82, 126, 1, 44]);
        assert_eq!(close, [0x88, 2, 0x03, 0xE8]);
        let inner = conn.lock();
        assert!(inner.rd.rest.is_empty() && inner.rd.msg.capacity() == 0);
    }

    /// In the client role, a large owned payload is masked in place and
    /// written from there; a server reads it back whole.
    #[tokio::test]
    async fn a_large_owned_payload_is_masked_in_place() {
        let lim = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            write_buffer: 0,
        };
        let (a, b) = tokio::io::duplex(3000);
        let client = WsConn::new(a, Role::Client, lim);
        let server = WsConn::new(b, Role::Server, lim);
        let body: Vec<u8> = (0..70_001u32).map(|i| (i * 13 % 256) as u8).collect();
        let (sent, got) = tokio::join!(client.send_owned(OP_BINARY, body.clone()), server.recv());
        sent.unwrap();
        assert_eq!(got.unwrap(), Incoming::Binary(body));
        // A small one takes the copying path, masked as well.
        let (sent, got) = tokio::join!(client.send_owned(OP_TEXT, b"hi".to_vec()), server.recv());
        sent.unwrap();
        assert_eq!(got.unwrap(), Incoming::Text(b"hi".to_vec()));
    }

    /// Large frames are read straight into their message, in pieces of
    /// any size, at every mask phase, with a ping and a small frame between.
    #[tokio::test]
    async fn large_frames_are_read_into_the_message() {
        use tokio::io::AsyncWriteExt as _;
        let lim = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            write_buffer: 0,
        };
        let (a, mut b) = tokio::io::duplex(1000);
        let conn = WsConn::new(a, Role::Server, lim);
        let body: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 256) as u8).collect();
        let (x, rest) = body.split_at(50_001);
        let (y, z) = rest.split_at(7);
        let mut w = frame(0x02, x, M);
        w.extend(frame(0x89, b"p", M));
        w.extend(frame(0x00, y, [9, 8, 7, 6]));
        w.extend(frame(0x80, z, [1, 2, 3, 4]));
        w.extend(frame(0x81, b"after", M));
        let client = async move {
            // Odd-sized writes: reads end at every phase of the mask.
            for piece in w.chunks(997) {
                b.write_all(piece).await.unwrap();
            }
            b
        };
        let server = async {
            assert_eq!(conn.recv().await.unwrap(), Incoming::Ping);
            assert_eq!(conn.recv().await.unwrap(), Incoming::Binary(body.clone()));
            assert_eq!(
                conn.recv().await.unwrap(),
                Incoming::Text(b"after".to_vec())
            );
        };
        let (_b, ()) = tokio::join!(client, server);
    }

    /// Joins a binary message's parts and its last bytes; checks that each
    /// part is [`PART`] bytes.
    fn joined(events: Vec<Incoming>) -> Vec<u8> {
        let mut all = Vec::new();
        let n = events.len();
        for (i, e) in events.into_iter().enumerate() {
            match e {
                Incoming::Part(p) if i + 1 < n => {
                    assert_eq!(p.len(), PART);
                    all.extend(p);
                }
                Incoming::Binary(b) if i + 1 == n => all.extend(b),
                other => panic!("event {i} of {n}: {other:?}"),
            }
        }
        all
    }

    #[test]
    fn binary_messages_come_in_parts_text_whole() {
        let lim = Limits {
            max_frame: 1 << 20,
            max_message: 2 << 20,
            write_buffer: 0,
        };
        let feed_all = |wire: &[u8], step: usize| {
            let mut r = Reader {
                parts: true,
                ..Reader::default()
            };
            let mut out = Vec::new();
            for piece in wire.chunks(step) {
                let mut at = 0;
                while at < piece.len() {
                    let (used, m) = r.feed(&piece[at..], &lim).unwrap();
                    at += used;
                    out.extend(m);
                }
                if r.msg_op == Some(OP_BINARY) {
                    assert!(r.msg.len() < PART, "{} bytes held", r.msg.len());
                }
            }
            out
        };
        let body: Vec<u8> = (0..3 * PART as u32 + 101)
            .map(|i| (i % 253) as u8)
            .collect();
        // One frame; and fragments that do not line up with the parts.
        let one = frame(0x82, &body, M);
        let mut frags = Vec::new();
        for (i, c) in body.chunks(100_000).enumerate() {
            let last = (i + 1) * 100_000 >= body.len();
            let b0 = if i == 0 { 0x02 } else { 0x00 } | if last { 0x80 } else { 0 };
            frags.extend(frame(b0, c, [i as u8, 1, 2, 3]));
        }
        for wire in [&one, &frags] {
            for step in [4093, READ, 70_000, wire.len()] {
                let got = feed_all(wire, step);
                assert!(got.len() >= 4, "{} events", got.len());
                assert!(joined(got) == body, "step {step}: bytes differ");
            }
        }
        // Without parts, the same message comes whole.
        let mut r = Reader::default();
        let (used, m) = r.feed(&one, &lim).unwrap();
        assert_eq!((used, m), (one.len(), Some(Incoming::Binary(body.clone()))));
        // A message of exactly one part comes whole.
        let exact = vec![3u8; PART];
        assert_eq!(
            feed_all(&frame(0x82, &exact, M), 4093),
            vec![Incoming::Binary(exact)]
        );
        // Text is not cut: its UTF-8 is checked whole.
        let text = "é".repeat(PART);
        assert_eq!(
            feed_all(&frame(0x81, text.as_bytes(), M), 4093),
            vec![Incoming::Text(text.into_bytes())]
        );
    }

    #[test]
    fn the_parts_count_against_max_message() {
        let lim = Limits {
            max_frame: PART,
            max_message: 2 * PART,
            write_buffer: 0,
        };
        let mut w = frame(0x02, &vec![1; PART], M);
        w.extend(frame(0x00, &vec![2; PART], M));
        w.extend(frame(0x80, &[3], M));
        let mut r = Reader {
            parts: true,
            ..Reader::default()
        };
        let mut at = 0;
        let mut parts = 0;
        let err = loop {
            match r.feed(&w[at..], &lim) {
                Ok((used, m)) => {
                    assert!(used > 0 || m.is_some(), "stuck");
                    at += used;
                    parts += usize::from(matches!(m, Some(Incoming::Part(_))));
                }
                Err(e) => break e,
            }
        };
        assert_eq!(parts, 2);
        assert_eq!(err.close().unwrap().0, 1009);
    }

    /// Over a stream, a large binary frame is read straight into parts.
    #[tokio::test]
    async fn large_binary_frames_are_read_in_parts() {
        use tokio::io::AsyncWriteExt as _;
        let lim = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
            write_buffer: 0,
        };
        let (a, mut b) = tokio::io::duplex(40_000);
        let conn = WsConn::new(a, Role::Server, lim).in_parts();
        let body: Vec<u8> = (0..(1u32 << 20) - 5).map(|i| (i * 7 % 256) as u8).collect();
        let w = frame(0x82, &body, M);
        let client = async move {
            b.write_all(&w).await.unwrap();
            b
        };
        let server = async {
            let mut got = Vec::new();
            loop {
                let m = conn.recv().await.unwrap();
                let last = matches!(m, Incoming::Binary(_));
                got.push(m);
                if last {
                    break;
                }
            }
            assert_eq!(got.len(), body.len().div_ceil(PART));
            assert!(joined(got) == body, "bytes differ");
        };
        let (_b, ()) = tokio::join!(client, server);
    }
}
