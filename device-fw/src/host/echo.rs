//! `EchoApp`: a device with fixed, predictable answers, for the gateway's
//! integration tests and benchmarks. It runs under the real link runtime
//! ([`crate::link::run`]) like any other [`App`].
//!
//! Services, in HELLO order:
//!
//! | # | name | kind | what it does |
//! |---|---|---|---|
//! | 0 | `web` | http | the routes below; WebSocket streams echo messages |
//! | 1 | `raw` | raw | only with [`EchoOptions::raw_service`]: echoes bytes, FIN answers FIN |
//!
//! Routes of `web` (by path; the query is ignored except for `/bytes`):
//!
//! | path | answer |
//! |---|---|
//! | `/echo` | 200 `application/octet-stream`, no length; the body is streamed back, FIN after the request's FIN |
//! | `/bytes?n=N` | 200, `content-length: N`, bytes `(i % 251) as u8` |
//! | `/upload` | once the body ends: 200 `application/json` `{"bytes":N,"sum":S}` (S: wrapping u64 sum of the bytes) |
//! | `/head` | 200 `application/json`: the request head as received (method, target, headers in order) |
//! | `/slow` | nothing; the stream stays open until the gateway resets it |
//! | `/status/NNN` | status NNN (200–999) with body `status NNN` (none for 204 and 304) |
//! | anything else | 404 with a text body |
//!
//! Routes other than `/echo` and `/upload` answer as soon as the head is
//! complete; a body still arriving is discarded.
//!
//! WebSocket streams: `/ws-refuse` is answered 403; any other target 101
//! (`/ws-head` then sends the upgrade request as received, the JSON of
//! `/head`, as its first text message),
//! naming the first offered `sec-websocket-protocol` that is in
//! [`EchoOptions::subprotocols`]. Text and binary messages come back with
//! the same kind, frame by frame. A text message that is exactly
//! `close:NNNN:reason` makes the device close with that code and reason; a
//! close from the gateway is echoed with its payload, then FIN.
//!
//! ## Limits
//!
//! - Credit is returned only once received bytes are sent back or
//!   discarded, so each stream holds at most its receive window of echo
//!   bytes, in one buffer; a request head is capped at 8 KiB (announced as
//!   `max_head`) and a
//!   candidate `close:` command at 135 bytes.
//! - Bad input never panics: a head that does not decode, is larger than
//!   8 KiB or ends with FIN unfinished resets the stream with
//!   `PROTOCOL`; an OPEN for a service that does not exist (or of the wrong
//!   kind) with `UNKNOWN_SERVICE`.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proto::wire::{Header, HeaderList, RequestHead, ResponseHead};
use proto::{
    Code, Config, Hello, Instant, MsgKind, ServiceKind, ServiceList, StreamError, StreamId,
    StreamKind,
};

use crate::link::{App, LinkEvent, Streams};

/// Largest request head the device takes (announced as `max_head`), bytes.
const MAX_HEAD: usize = 8 * 1024;

/// Period of the `/bytes` pattern.
const PERIOD: usize = 251;
/// Most bytes of the `/bytes` pattern handed to one send.
const CHUNK: usize = 4096;
/// Prefix of the text command that makes the device close.
const COMMAND: &[u8] = b"close:";
/// Longest possible command: prefix, five digits, colon, a 123-byte reason.
const MAX_COMMAND: usize = COMMAND.len() + 6 + 123;
/// Most subprotocols a service may announce.
const MAX_PROTOCOLS: usize = 8;

/// What an [`EchoApp`] announces.
#[derive(Clone, Debug, Default)]
pub struct EchoOptions {
    /// Device id (a lower-case DNS label).
    pub device_id: String,
    /// Firmware version string.
    pub firmware: String,
    /// WebSocket subprotocols of the `web` service, in preference order.
    /// Invalid ones (empty, longer than 64 bytes, not tokens) and any past
    /// the eighth are left out, with a warning.
    pub subprotocols: Vec<String>,
    /// Also announce the raw service `raw` (service 1), which echoes bytes.
    pub raw_service: bool,
}

/// The echo device. See the module docs for what it answers.
pub struct EchoApp {
    device_id: String,
    firmware: String,
    protocols: Vec<String>,
    raw_service: bool,
    /// The services, encoded as HELLO carries them.
    services: Vec<u8>,
    service_count: u8,
    streams: HashMap<StreamId, Exchange>,
    requests: Arc<AtomicUsize>,
    /// The `/bytes` pattern, long enough to slice `CHUNK` bytes at any phase.
    pattern: Vec<u8>,
}

/// What happens to the bytes the gateway sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// Collecting the request head.
    Head,
    /// Body or raw bytes go back as they are.
    EchoBytes,
    /// WebSocket messages go back, message by message.
    EchoMessages,
    /// Taken and dropped.
    Discard,
    /// Taken, counted and summed; answered at FIN.
    Upload { bytes: u64, sum: u64 },
}

/// Bytes waiting to go out, in order.
struct Segment {
    msg: MsgKind,
    data: Vec<u8>,
    /// How much of `data` is sent.
    pos: usize,
    end_msg: bool,
    fin: bool,
    /// Received bytes sent back: their credit returns as they go out.
    echoed: bool,
}

/// One stream.
struct Exchange {
    kind: StreamKind,
    input: Input,
    /// The request head so far.
    head: Vec<u8>,
    /// An incoming WebSocket message is unfinished.
    msg_open: bool,
    /// A text message that may be a `close:` command, held until it ends.
    command: Option<Vec<u8>>,
    out: VecDeque<Segment>,
    /// `/bytes`: next index and total.
    generate: Option<(u64, u64)>,
    /// The gateway's FIN arrived.
    fin_in: bool,
    /// A FIN is queued: nothing more is added to `out`.
    fin_queued: bool,
    /// The FIN went out.
    fin_sent: bool,
}

impl Exchange {
    fn new(kind: StreamKind, input: Input) -> Self {
        Self {
            kind,
            input,
            head: Vec::new(),
            msg_open: false,
            command: None,
            out: VecDeque::new(),
            generate: None,
            fin_in: false,
            fin_queued: false,
            fin_sent: false,
        }
    }

    /// Received bytes this stream holds without having returned their credit.
    fn held(&self) -> usize {
        let queued: usize = self
            .out
            .iter()
            .filter(|s| s.echoed)
            .map(|s| s.data.len() - s.pos)
            .sum();
        queued + self.command.as_ref().map_or(0, Vec::len)
    }

    fn finished(&self) -> bool {
        self.fin_in && self.fin_sent
    }

    /// Queues received bytes to go back, in the buffer of the message (or
    /// body) they continue when there is one. False if they were not taken
    /// (the device's FIN is already queued): the caller discards them.
    fn echo(&mut self, msg: MsgKind, data: &[u8], end_msg: bool, fin: bool) -> bool {
        if self.fin_queued {
            return false;
        }
        if data.is_empty() && !end_msg && !fin {
            return true;
        }
        self.fin_queued |= fin;
        if let Some(last) = self.out.back_mut()
            && last.echoed
            && last.msg == msg
            && !last.end_msg
            && !last.fin
        {
            last.data.drain(..last.pos);
            last.pos = 0;
            last.data.extend_from_slice(data);
            last.end_msg = end_msg;
            last.fin = fin;
            return true;
        }
        self.push(msg, data.to_vec(), end_msg, fin, true);
        true
    }

    fn push(&mut self, msg: MsgKind, data: Vec<u8>, end_msg: bool, fin: bool, echoed: bool) {
        self.fin_queued |= fin;
        self.out.push_back(Segment {
            msg,
            data,
            pos: 0,
            end_msg,
            fin,
            echoed,
        });
    }

    /// Queues a response head; false if it does not encode.
    fn head(&mut self, status: u16, headers: &[Header<'_>], fin: bool) -> bool {
        let head = ResponseHead {
            status,
            headers: HeaderList::Slice(headers),
        };
        let mut buf = vec![0u8; head.buffer_len()];
        match head.emit(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                self.push(MsgKind::Head, buf, true, fin, false);
                true
            }
            Err(e) => {
                log::warn!("response head {status} does not encode: {e}");
                false
            }
        }
    }

    /// Queues a whole response with a body of known length, then FIN.
    fn respond(&mut self, status: u16, content_type: &str, body: Vec<u8>) -> bool {
        let length = body.len().to_string();
        let headers = [
            Header {
                name: "content-type",
                value: content_type.as_bytes(),
            },
            Header {
                name: "content-length",
                value: length.as_bytes(),
            },
        ];
        if !self.head(status, &headers, body.is_empty()) {
            return false;
        }
        if !body.is_empty() {
            self.push(MsgKind::Bytes, body, false, true, false);
        }
        true
    }

    /// Sends what is queued, then the `/bytes` pattern, within credit.
    fn pump(
        &mut self,
        link: &mut dyn Streams,
        stream: StreamId,
        pattern: &[u8],
    ) -> Result<(), StreamError> {
        while let Some(seg) = self.out.front_mut() {
            let rest = &seg.data[seg.pos..];
            let n = match link.send(stream, seg.msg, rest, seg.end_msg, seg.fin) {
                Ok(n) => n,
                Err(StreamError::Blocked) => return Ok(()),
                Err(e) => return Err(e),
            };
            seg.pos += n;
            if seg.echoed && n > 0 {
                link.consume(stream, n);
            }
            if seg.pos < seg.data.len() {
                return Ok(());
            }
            self.fin_sent |= seg.fin;
            self.out.pop_front();
        }
        while let Some((next, total)) = self.generate {
            let left = total - next;
            let room = link.capacity(stream);
            if left > 0 && room == 0 {
                return Ok(());
            }
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(room)
                .min(CHUNK);
            let phase = (next % PERIOD as u64) as usize;
            let fin = n as u64 == left;
            let sent = match link.send(
                stream,
                MsgKind::Bytes,
                &pattern[phase..phase + n],
                false,
                fin,
            ) {
                Ok(k) => k,
                Err(StreamError::Blocked) => return Ok(()),
                Err(e) => return Err(e),
            };
            if sent == n && fin {
                self.generate = None;
                self.fin_sent = true;
            } else {
                self.generate = Some((next + sent as u64, total));
                if sent < n {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// What a stream needs after an event.
enum Next {
    Keep,
    /// Reset it with this code and forget it.
    Reset(Code),
}

impl EchoApp {
    /// A device announcing `opts`.
    pub fn new(opts: EchoOptions) -> Self {
        let mut protocols = Vec::new();
        for p in opts.subprotocols {
            if !valid_protocol(&p) {
                log::warn!("subprotocol {p:?} is not a token of 1 to 64 bytes: left out");
            } else if protocols.len() == MAX_PROTOCOLS {
                log::warn!("subprotocol {p:?}: more than {MAX_PROTOCOLS}, left out");
            } else {
                protocols.push(p);
            }
        }
        let mut services = Vec::new();
        services.push(3);
        services.extend_from_slice(b"web");
        services.push(ServiceKind::Http as u8);
        services.push(protocols.len() as u8);
        for p in &protocols {
            services.push(p.len() as u8);
            services.extend_from_slice(p.as_bytes());
        }
        if opts.raw_service {
            services.push(3);
            services.extend_from_slice(b"raw");
            services.push(ServiceKind::Raw as u8);
            services.push(0);
        }
        let pattern = (0..PERIOD + CHUNK).map(|i| (i % PERIOD) as u8).collect();
        Self {
            device_id: opts.device_id,
            firmware: opts.firmware,
            protocols,
            raw_service: opts.raw_service,
            services,
            service_count: 1 + u8::from(opts.raw_service),
            streams: HashMap::new(),
            requests: Arc::new(AtomicUsize::new(0)),
            pattern,
        }
    }

    /// Request heads received on Http and WebSocket streams, all sessions
    /// (a head that does not decode counts too).
    pub fn requests(&self) -> Arc<AtomicUsize> {
        self.requests.clone()
    }

    fn on_data(
        &self,
        link: &mut dyn Streams,
        ex: &mut Exchange,
        stream: StreamId,
        msg: MsgKind,
        end_msg: bool,
        data: &[u8],
    ) -> Next {
        match ex.input {
            Input::Head => {
                link.consume(stream, data.len());
                if msg != MsgKind::Head || ex.head.len() + data.len() > MAX_HEAD {
                    return Next::Reset(Code::PROTOCOL);
                }
                ex.head.extend_from_slice(data);
                if !end_msg {
                    return Next::Keep;
                }
                self.requests.fetch_add(1, Ordering::Relaxed);
                let head = core::mem::take(&mut ex.head);
                let Ok(req) = RequestHead::parse(&head) else {
                    log::debug!("stream {stream}: request head does not decode");
                    return Next::Reset(Code::PROTOCOL);
                };
                let routed = match ex.kind {
                    StreamKind::WebSocket => self.upgrade(ex, &req),
                    _ => self.route(ex, &req),
                };
                if !routed {
                    return Next::Reset(Code::INTERNAL);
                }
            }
            Input::EchoBytes => {
                if msg != MsgKind::Bytes {
                    link.consume(stream, data.len());
                    return Next::Reset(Code::PROTOCOL);
                }
                if !ex.echo(msg, data, false, false) {
                    link.consume(stream, data.len());
                }
            }
            Input::EchoMessages => Self::on_message(link, ex, stream, msg, end_msg, data),
            Input::Discard => link.consume(stream, data.len()),
            Input::Upload { bytes, sum } => {
                link.consume(stream, data.len());
                let add = data.iter().fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
                ex.input = Input::Upload {
                    bytes: bytes + data.len() as u64,
                    sum: sum.wrapping_add(add),
                };
            }
        }
        Next::Keep
    }

    /// One frame of a WebSocket message after the 101.
    fn on_message(
        link: &mut dyn Streams,
        ex: &mut Exchange,
        stream: StreamId,
        msg: MsgKind,
        end_msg: bool,
        data: &[u8],
    ) {
        let starts = !ex.msg_open;
        ex.msg_open = !end_msg;
        if ex.fin_queued || msg == MsgKind::Bytes {
            // After the device's close nothing more goes back; bytes have
            // no place between messages.
            link.consume(stream, data.len());
            return;
        }
        if starts && msg == MsgKind::Text {
            ex.command = Some(Vec::new());
        }
        let Some(mut command) = ex.command.take() else {
            let fin = msg == MsgKind::WsClose && end_msg;
            if !ex.echo(msg, data, end_msg, fin) {
                link.consume(stream, data.len());
            }
            return;
        };
        command.extend_from_slice(data);
        if could_be_command(&command) && !end_msg {
            ex.command = Some(command);
        } else if let Some(payload) = close_payload(&command).filter(|_| end_msg) {
            link.consume(stream, command.len());
            ex.push(MsgKind::WsClose, payload, true, true, false);
        } else if !ex.echo(MsgKind::Text, &command, end_msg, false) {
            link.consume(stream, command.len());
        }
    }

    /// The gateway finished its side.
    fn on_fin(ex: &mut Exchange) -> Next {
        ex.fin_in = true;
        match ex.input {
            // FIN inside a head: an incomplete exchange.
            Input::Head => Next::Reset(Code::PROTOCOL),
            Input::EchoMessages if ex.msg_open => Next::Reset(Code::PROTOCOL),
            Input::EchoMessages => {
                // Ended without a close message: close with none.
                if !ex.fin_queued {
                    ex.push(MsgKind::WsClose, Vec::new(), true, true, false);
                }
                Next::Keep
            }
            Input::EchoBytes => {
                ex.echo(MsgKind::Bytes, &[], false, true);
                Next::Keep
            }
            Input::Upload { bytes, sum } => {
                let body = format!("{{\"bytes\":{bytes},\"sum\":{sum}}}");
                ex.input = Input::Discard;
                if ex.respond(200, "application/json", body.into_bytes()) {
                    Next::Keep
                } else {
                    Next::Reset(Code::INTERNAL)
                }
            }
            Input::Discard => Next::Keep,
        }
    }

    /// Answers an HTTP request head; false if the answer does not encode.
    fn route(&self, ex: &mut Exchange, req: &RequestHead<'_>) -> bool {
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        ex.input = Input::Discard;
        match path {
            "/echo" => {
                ex.input = Input::EchoBytes;
                let headers = [Header {
                    name: "content-type",
                    value: b"application/octet-stream",
                }];
                ex.head(200, &headers, false)
            }
            "/bytes" => {
                let n = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("n="))
                    .and_then(|v| v.parse::<u64>().ok());
                let Some(n) = n else {
                    return ex.respond(400, "text/plain", b"bytes: give n=N\n".to_vec());
                };
                let length = n.to_string();
                let headers = [
                    Header {
                        name: "content-type",
                        value: b"application/octet-stream",
                    },
                    Header {
                        name: "content-length",
                        value: length.as_bytes(),
                    },
                ];
                ex.generate = Some((0, n));
                ex.fin_queued = true;
                ex.head(200, &headers, false)
            }
            "/upload" => {
                ex.input = Input::Upload { bytes: 0, sum: 0 };
                true
            }
            "/head" => ex.respond(200, "application/json", head_json(req).into_bytes()),
            "/slow" => true,
            _ => match path.strip_prefix("/status/") {
                Some(code) => match code.parse::<u16>() {
                    Ok(status @ (204 | 304)) => ex.head(status, &[], true),
                    Ok(status @ 200..=999) => {
                        let body = format!("status {status}");
                        ex.respond(status, "text/plain", body.into_bytes())
                    }
                    _ => ex.respond(400, "text/plain", b"status: 200 to 999\n".to_vec()),
                },
                None => {
                    let body = format!("no route for {path}\n");
                    ex.respond(404, "text/plain", body.into_bytes())
                }
            },
        }
    }

    /// Answers a WebSocket upgrade; false if the answer does not encode.
    fn upgrade(&self, ex: &mut Exchange, req: &RequestHead<'_>) -> bool {
        let path = req.target.split_once('?').map_or(req.target, |(p, _)| p);
        if path == "/ws-refuse" {
            ex.input = Input::Discard;
            return ex.respond(403, "text/plain", b"upgrade refused\n".to_vec());
        }
        ex.input = Input::EchoMessages;
        let chosen = req
            .headers
            .iter()
            .filter(|h| h.name == "sec-websocket-protocol")
            .flat_map(|h| h.value.split(|&c| c == b','))
            .map(|p| p.trim_ascii())
            .find(|p| self.protocols.iter().any(|ours| ours.as_bytes() == *p));
        let accepted = match chosen {
            Some(p) => {
                let headers = [Header {
                    name: "sec-websocket-protocol",
                    value: p,
                }];
                ex.head(101, &headers, false)
            }
            None => ex.head(101, &[], false),
        };
        if accepted && path == "/ws-head" {
            // What the device received, as the first message (tests of normalization).
            ex.push(
                MsgKind::Text,
                head_json(req).into_bytes(),
                true,
                false,
                false,
            );
        }
        accepted
    }

    /// Forgets `stream`, returning the credit of what it held.
    fn forget(&mut self, link: &mut dyn Streams, stream: StreamId) {
        if let Some(ex) = self.streams.remove(&stream) {
            link.consume(stream, ex.held());
        }
    }
}

impl App for EchoApp {
    fn hello(&self) -> Hello<'_> {
        Hello {
            device_id: &self.device_id,
            firmware: &self.firmware,
            // The runtime replaces these with its configuration's.
            params: Config::DEVICE.params,
            max_head: MAX_HEAD as u16,
            services: ServiceList::Wire {
                bytes: &self.services,
                count: self.service_count,
            },
        }
    }

    fn on_event(&mut self, link: &mut dyn Streams, event: LinkEvent<'_>, _now: Instant) {
        match event {
            LinkEvent::Up | LinkEvent::Credit { .. } => {}
            LinkEvent::Down => self.streams.clear(),
            LinkEvent::Opened {
                stream,
                kind,
                service,
            } => {
                let input = match (service, kind) {
                    (0, StreamKind::Http | StreamKind::WebSocket) => Input::Head,
                    (1, StreamKind::Raw) if self.raw_service => Input::EchoBytes,
                    _ => {
                        link.reset(stream, Code::UNKNOWN_SERVICE);
                        return;
                    }
                };
                // Ids are never reused in a session; should one be, the
                // old stream's bytes are discarded, not lost.
                self.forget(link, stream);
                self.streams.insert(stream, Exchange::new(kind, input));
            }
            LinkEvent::Data {
                stream,
                msg,
                end_msg,
                fin,
                data,
            } => {
                let Some(mut ex) = self.streams.remove(&stream) else {
                    // A stream already forgotten: its bytes are discarded.
                    link.consume(stream, data.len());
                    return;
                };
                let mut next = self.on_data(link, &mut ex, stream, msg, end_msg, data);
                if fin && let Next::Keep = next {
                    next = Self::on_fin(&mut ex);
                }
                if let Next::Keep = next
                    && let Err(e) = ex.pump(link, stream, &self.pattern)
                {
                    log::warn!("stream {stream}: send failed: {e}");
                    next = Next::Reset(Code::INTERNAL);
                }
                match next {
                    Next::Keep if ex.finished() => link.consume(stream, ex.held()),
                    Next::Keep => {
                        self.streams.insert(stream, ex);
                    }
                    Next::Reset(code) => {
                        link.reset(stream, code);
                        link.consume(stream, ex.held());
                    }
                }
            }
            LinkEvent::Reset { stream, .. } => self.forget(link, stream),
        }
    }

    fn poll(&mut self, link: &mut dyn Streams, _now: Instant) {
        let pattern = &self.pattern;
        self.streams.retain(|&stream, ex| {
            if let Err(e) = ex.pump(link, stream, pattern) {
                log::warn!("stream {stream}: send failed: {e}");
                link.reset(stream, Code::INTERNAL);
                link.consume(stream, ex.held());
                return false;
            }
            if ex.finished() {
                link.consume(stream, ex.held());
                return false;
            }
            true
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }
}

/// Whether `p` may be announced as a subprotocol (1–64 bytes of `tchar`).
fn valid_protocol(p: &str) -> bool {
    (1..=64).contains(&p.len())
        && p.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Whether a text message that begins with `buf` may still be a command.
fn could_be_command(buf: &[u8]) -> bool {
    let n = buf.len().min(COMMAND.len());
    buf[..n] == COMMAND[..n] && buf.len() <= MAX_COMMAND
}

/// The close payload a `close:NNNN:reason` command asks for.
fn close_payload(cmd: &[u8]) -> Option<Vec<u8>> {
    let rest = cmd.strip_prefix(COMMAND)?;
    let colon = rest.iter().position(|&c| c == b':')?;
    let (digits, reason) = (&rest[..colon], &rest[colon + 1..]);
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code: u16 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    std::str::from_utf8(reason).ok()?;
    if 2 + reason.len() > 125 {
        return None;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    Some(payload)
}

/// `{"method":…,"target":…,"headers":[[name,value],…]}`.
fn head_json(req: &RequestHead<'_>) -> String {
    let mut out = String::from("{\"method\":");
    json_string(&mut out, req.method);
    out.push_str(",\"target\":");
    json_string(&mut out, req.target);
    out.push_str(",\"headers\":[");
    for (i, h) in req.headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        json_string(&mut out, h.name);
        out.push(',');
        json_string(&mut out, &String::from_utf8_lossy(h.value));
        out.push(']');
    }
    out.push_str("]}");
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link that takes sends up to `cap` bytes and records everything.
    #[derive(Default)]
    struct Link {
        cap: usize,
        sent: Vec<(MsgKind, Vec<u8>, bool, bool)>,
        consumed: usize,
        resets: Vec<(StreamId, Code)>,
    }

    impl Streams for Link {
        fn send(
            &mut self,
            _: StreamId,
            msg: MsgKind,
            data: &[u8],
            end_msg: bool,
            fin: bool,
        ) -> Result<usize, StreamError> {
            let n = data.len().min(self.cap);
            if n == 0 && !data.is_empty() {
                return Ok(0);
            }
            self.cap -= n;
            let whole = n == data.len();
            self.sent
                .push((msg, data[..n].to_vec(), end_msg && whole, fin && whole));
            Ok(n)
        }
        fn capacity(&self, _: StreamId) -> usize {
            self.cap
        }
        fn consume(&mut self, _: StreamId, n: usize) {
            self.consumed += n;
        }
        fn reset(&mut self, stream: StreamId, code: Code) {
            self.resets.push((stream, code));
        }
        fn open(&mut self, _: StreamKind, _: u8) -> Result<StreamId, StreamError> {
            Err(StreamError::NotReady)
        }
    }

    fn app() -> EchoApp {
        EchoApp::new(EchoOptions {
            device_id: "unit".into(),
            firmware: String::new(),
            subprotocols: vec![],
            raw_service: true,
        })
    }

    fn data(
        stream: StreamId,
        msg: MsgKind,
        end_msg: bool,
        fin: bool,
        data: &[u8],
    ) -> LinkEvent<'_> {
        LinkEvent::Data {
            stream,
            msg,
            end_msg,
            fin,
            data,
        }
    }

    #[test]
    fn echo_returns_credit_only_for_what_went_back() {
        let (mut app, mut link) = (app(), Link::default());
        let t = Instant::from_millis(0);
        let id = StreamId::new(2).unwrap();
        let opened = LinkEvent::Opened {
            stream: id,
            kind: StreamKind::Http,
            service: 0,
        };
        app.on_event(&mut link, opened, t);
        let head = RequestHead {
            method: "POST",
            target: "/echo",
            headers: HeaderList::Slice(&[]),
        };
        let mut buf = vec![0u8; head.buffer_len()];
        head.emit(&mut buf).unwrap();
        app.on_event(&mut link, data(id, MsgKind::Head, true, false, &buf), t);
        assert_eq!(link.consumed, buf.len(), "a head is taken at once");
        app.on_event(
            &mut link,
            data(id, MsgKind::Bytes, false, false, &[7; 600]),
            t,
        );
        app.on_event(
            &mut link,
            data(id, MsgKind::Bytes, false, true, &[8; 400]),
            t,
        );
        assert_eq!(link.consumed, buf.len(), "nothing echoed, nothing returned");
        assert_eq!(
            app.streams[&id].out.len(),
            2,
            "the response head and one body buffer"
        );
        link.cap = 100;
        app.poll(&mut link, t);
        let head_len = link.sent[0].1.len();
        assert_eq!(link.consumed, buf.len() + 100 - head_len);
        link.cap = 10_000;
        app.poll(&mut link, t);
        assert_eq!(link.consumed, buf.len() + 1000);
        let last = link.sent.last().unwrap();
        assert!(last.3, "FIN follows the request's FIN");
        assert!(app.streams.is_empty(), "a finished stream is forgotten");
    }

    /// Random events never panic, and every delivered byte is consumed once
    /// the streams are gone.
    #[test]
    fn random_input_is_survived_and_all_credit_returns() {
        let kinds = [StreamKind::Http, StreamKind::WebSocket, StreamKind::Raw];
        let msgs = [
            MsgKind::Bytes,
            MsgKind::Head,
            MsgKind::Text,
            MsgKind::Binary,
            MsgKind::WsClose,
        ];
        let heads: Vec<Vec<u8>> = [
            "/echo",
            "/bytes?n=5000",
            "/upload",
            "/head",
            "/slow",
            "/ws-refuse",
            "/x",
        ]
        .iter()
        .map(|target| {
            let h = RequestHead {
                method: "GET",
                target,
                headers: HeaderList::Slice(&[Header {
                    name: "sec-websocket-protocol",
                    value: b"a, b",
                }]),
            };
            let mut b = vec![0u8; h.buffer_len()];
            h.emit(&mut b).unwrap();
            b
        })
        .collect();
        let mut x = 0x9e37_79b9u32;
        let mut rnd = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as usize % n
        };
        let t = Instant::from_millis(0);
        let (mut app, mut link) = (app(), Link::default());
        let mut delivered = 0;
        for round in 0..2000u32 {
            let id = StreamId::new(2 * (1 + rnd(6) as u32)).unwrap();
            link.cap = rnd(3000);
            match rnd(10) {
                0 => {
                    let ev = LinkEvent::Opened {
                        stream: id,
                        kind: kinds[rnd(3)],
                        service: rnd(3) as u8,
                    };
                    app.on_event(&mut link, ev, t);
                }
                1 => app.on_event(
                    &mut link,
                    LinkEvent::Reset {
                        stream: id,
                        code: Code::CANCEL,
                    },
                    t,
                ),
                2 | 3 => {
                    let head = &heads[rnd(heads.len())];
                    let cut = rnd(head.len() + 1);
                    let part = if rnd(2) == 0 { &head[..] } else { &head[..cut] };
                    delivered += part.len();
                    app.on_event(
                        &mut link,
                        data(id, MsgKind::Head, rnd(2) == 0, rnd(8) == 0, part),
                        t,
                    );
                }
                _ => {
                    let mut payload = vec![0u8; rnd(700)];
                    if rnd(4) == 0 {
                        payload = b"close:1000:x".to_vec();
                    }
                    payload
                        .iter_mut()
                        .for_each(|b| *b = (round as u8).wrapping_add(*b));
                    delivered += payload.len();
                    let ev = data(id, msgs[rnd(5)], rnd(2) == 0, rnd(10) == 0, &payload);
                    app.on_event(&mut link, ev, t);
                }
            }
            app.poll(&mut link, t);
        }
        for n in 1..=6 {
            let stream = StreamId::new(2 * n).unwrap();
            app.on_event(
                &mut link,
                LinkEvent::Reset {
                    stream,
                    code: Code::CANCEL,
                },
                t,
            );
        }
        assert!(app.streams.is_empty());
        assert_eq!(link.consumed, delivered);
    }

    #[test]
    fn commands() {
        assert_eq!(
            close_payload(b"close:4001:bye"),
            Some(b"\x0f\xa1bye".to_vec())
        );
        assert_eq!(close_payload(b"close:1000:"), Some(vec![0x03, 0xe8]));
        assert_eq!(close_payload(b"close:70000:x"), None);
        assert_eq!(close_payload(b"close:abc:x"), None);
        assert_eq!(close_payload(b"close:1000"), None);
        assert!(could_be_command(b"clo"));
        assert!(could_be_command(b"close:1"));
        assert!(!could_be_command(b"closx"));
        assert!(!could_be_command(&[b'c'; 2]));
    }

    #[test]
    fn json_escapes() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\td\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\u0009d\\u0001é\"");
    }
}
