//! One stream's worth of application state: the request being assembled and
//! the response being streamed, in fixed buffers.
//!
//! Everything received is copied into these buffers and its credit returned
//! at once, so the gateway is never held up by the application; what does
//! not fit is refused with 431 (head) or 413 (body) instead of growing.

use heapless::{Deque, String, Vec};
use proto::wire::{Header, HeaderList, RequestHead, ResponseHead};
use proto::{MsgKind, StreamId, StreamKind};

use crate::link::Streams;

/// Largest request head the application accepts (announced in HELLO).
pub const MAX_HEAD: usize = 512;
/// Largest request body (commands are small).
pub const MAX_BODY: usize = 64;
/// Largest WebSocket message received.
pub const MAX_WS_IN: usize = 128;
/// Largest WebSocket message or dynamic body sent.
pub const MAX_OUT: usize = 320;
const MAX_RESPONSE_HEAD: usize = 256;
/// Largest reply to a WebSocket command.
pub const MAX_REPLY: usize = 64;
/// Replies that may wait while a readings message is in flight.
const REPLIES: usize = 4;

/// Where a response body comes from. (Dynamic bodies live inline: the
/// exchange is a fixed slot anyway, boxing is not an option without a heap.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Body {
    Empty,
    Static(&'static [u8]),
    Dynamic(Vec<u8, MAX_OUT>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Empty => &[],
            Self::Static(b) => b,
            Self::Dynamic(v) => v,
        }
    }
}

pub(crate) struct Response {
    head: Vec<u8, MAX_RESPONSE_HEAD>,
    head_pos: usize,
    body: Body,
    body_pos: usize,
    /// FIN after the body (false for an accepted WebSocket).
    fin: bool,
}

/// The state of one stream.
pub(crate) struct Exchange {
    pub(crate) stream: StreamId,
    pub(crate) kind: StreamKind,
    pub(crate) head: Vec<u8, MAX_HEAD>,
    pub(crate) head_done: bool,
    pub(crate) head_overflow: bool,
    pub(crate) body: Vec<u8, MAX_BODY>,
    pub(crate) body_overflow: bool,
    pub(crate) request_done: bool,
    pub(crate) handled: bool,
    pub(crate) response: Option<Response>,
    /// A WebSocket was accepted (101 queued or sent).
    pub(crate) ws_open: bool,
    pub(crate) ws_in: Vec<u8, MAX_WS_IN>,
    pub(crate) ws_in_overflow: bool,
    ws_out: Vec<u8, MAX_OUT>,
    ws_out_kind: MsgKind,
    ws_out_pos: usize,
    ws_out_fin: bool,
    pub(crate) ws_closed: bool,
    /// Answers to commands, sent before the next readings message.
    pub(crate) replies: Deque<String<MAX_REPLY>, REPLIES>,
}

impl Exchange {
    pub(crate) fn new(stream: StreamId, kind: StreamKind) -> Self {
        Self {
            stream,
            kind,
            head: Vec::new(),
            head_done: false,
            head_overflow: false,
            body: Vec::new(),
            body_overflow: false,
            request_done: false,
            handled: false,
            response: None,
            ws_open: false,
            ws_in: Vec::new(),
            ws_in_overflow: false,
            ws_out: Vec::new(),
            ws_out_kind: MsgKind::Text,
            ws_out_pos: 0,
            ws_out_fin: false,
            ws_closed: false,
            replies: Deque::new(),
        }
    }

    /// The parsed request head, once complete and valid.
    pub(crate) fn request(&self) -> Option<RequestHead<'_>> {
        if !self.head_done || self.head_overflow {
            return None;
        }
        RequestHead::parse(&self.head).ok()
    }

    /// Queues a response: status, headers, body. `fin` ends the stream after it.
    pub(crate) fn respond(&mut self, status: u16, headers: &[Header<'_>], body: Body, fin: bool) {
        let mut head = Vec::new();
        let _ = head.resize(MAX_RESPONSE_HEAD, 0);
        let h = ResponseHead {
            status,
            headers: HeaderList::Slice(headers),
        };
        let n = match h.emit(&mut head) {
            Ok(n) => n,
            // Headers built by this application always fit; fall back to a bare 500.
            Err(_) => ResponseHead {
                status: 500,
                headers: HeaderList::Slice(&[]),
            }
            .emit(&mut head)
            .unwrap_or(0),
        };
        head.truncate(n);
        self.handled = true;
        self.response = Some(Response {
            head,
            head_pos: 0,
            body,
            body_pos: 0,
            fin,
        });
    }

    /// Whether a WebSocket message can be queued now.
    pub(crate) fn ws_idle(&self) -> bool {
        self.ws_open
            && !self.ws_closed
            && self.response.is_none()
            && self.ws_out_pos >= self.ws_out.len()
    }

    /// Queues one WebSocket message (text, binary or close).
    pub(crate) fn ws_send(&mut self, kind: MsgKind, data: &[u8], fin: bool) -> bool {
        if !self.ws_idle() {
            return false;
        }
        self.ws_out.clear();
        if self
            .ws_out
            .extend_from_slice(&data[..data.len().min(MAX_OUT)])
            .is_err()
        {
            return false;
        }
        self.ws_out_kind = kind;
        self.ws_out_pos = 0;
        self.ws_out_fin = fin;
        if kind == MsgKind::WsClose {
            self.ws_closed = true;
        }
        true
    }

    /// Writes what is queued, within credit. Returns true when the stream is
    /// finished on this side (everything sent with FIN).
    pub(crate) fn flush(&mut self, link: &mut dyn Streams) -> bool {
        if let Some(r) = self.response.as_mut() {
            let body = r.body.bytes();
            while r.head_pos < r.head.len() {
                let last = body.is_empty();
                let part = &r.head[r.head_pos..];
                match link.send(self.stream, MsgKind::Head, part, true, last && r.fin) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => r.head_pos += n,
                }
                if r.head_pos == r.head.len() && last {
                    let fin = r.fin;
                    self.response = None;
                    return fin;
                }
            }
            while r.body_pos < body.len() {
                match link.send(
                    self.stream,
                    MsgKind::Bytes,
                    &body[r.body_pos..],
                    false,
                    r.fin,
                ) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => r.body_pos += n,
                }
            }
            let fin = r.fin;
            self.response = None;
            return fin;
        }
        if self.ws_idle()
            && let Some(reply) = self.replies.pop_front()
        {
            self.ws_send(MsgKind::Text, reply.as_bytes(), false);
        }
        while self.ws_out_pos < self.ws_out.len() || (self.ws_out_fin && self.ws_out.is_empty()) {
            let part = &self.ws_out[self.ws_out_pos..];
            match link.send(self.stream, self.ws_out_kind, part, true, self.ws_out_fin) {
                Ok(n) if n == part.len() => {
                    self.ws_out_pos = self.ws_out.len();
                    return self.ws_out_fin;
                }
                Ok(0) | Err(_) => return false,
                Ok(n) => self.ws_out_pos += n,
            }
        }
        false
    }
}
