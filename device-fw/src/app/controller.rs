//! The sample controller: what a vendor would ship on the device.
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | the web UI from flash (gzip when accepted), `ETag`, `304` on a match |
//! | `GET /api/status` | readings and outputs as JSON |
//! | `POST /api/led/<0-2>` body `on`/`off`/`toggle` | switches an LED, answers the status |
//! | `POST /api/setpoint` body centidegrees (`2150`) | sets the setpoint (5.00–40.00 °C) |
//! | WebSocket `/ws` (subprotocol `readings.v1`) | status every 100 ms; takes `led <i> on|off|toggle`, `setpoint <centi>`, answers `{"ok":true}` or `{"error":"…"}` |
//!
//! Errors are answered, never dropped: 404, 405 with `allow`, 400 for a bad
//! command, 413 for a large body, 431 for a large head.

use core::fmt::Write as _;

use heapless::{String, Vec};
use proto::wire::Header;
use proto::{
    Code, Hello, Instant, MsgKind, Service, ServiceKind, ServiceList, StrList, StreamId, StreamKind,
};

use super::board::{Board, LEDS};
use super::exchange::{Body, Exchange, MAX_BODY, MAX_HEAD, MAX_OUT, MAX_REPLY, MAX_WS_IN};
use crate::link::{App, LinkEvent, Streams};

/// The WebSocket subprotocol of the readings feed.
pub const SUBPROTOCOL: &str = "readings.v1";
/// Interval between readings on the WebSocket, in milliseconds.
pub const TICK_MS: u64 = 100;
/// Concurrent streams the application serves (matches the link's default).
pub const STREAMS: usize = 4;

static PROTOCOLS: [&str; 1] = [SUBPROTOCOL];
static SERVICES: [Service<'static>; 1] = [Service {
    name: "web",
    kind: ServiceKind::Http,
    subprotocols: StrList::Slice(&PROTOCOLS),
}];

static PAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html"));
static PAGE_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html.gz"));
static ETAG: &str = include_str!(concat!(env!("OUT_DIR"), "/etag.txt"));

/// The sample application over a [`Board`].
pub struct Controller<B> {
    board: B,
    device_id: String<63>,
    firmware: String<32>,
    exchanges: [Option<Exchange>; STREAMS],
    leds: [bool; LEDS],
    setpoint: i32,
    started: Option<Instant>,
    next_tick: Option<Instant>,
    /// Commands applied, for tests and the status page.
    pub commands: u32,
}

impl<B: Board> Controller<B> {
    /// A controller named `device_id` (a lower-case DNS label) running `firmware`.
    pub fn new(board: B, device_id: &str, firmware: &str) -> Self {
        let mut id = String::new();
        let _ = id.push_str(&device_id[..device_id.len().min(63)]);
        let mut fw = String::new();
        let _ = fw.push_str(&firmware[..firmware.len().min(32)]);
        Self {
            board,
            device_id: id,
            firmware: fw,
            exchanges: [const { None }; STREAMS],
            leds: [false; LEDS],
            setpoint: 2150,
            started: None,
            next_tick: None,
            commands: 0,
        }
    }

    /// The board, for its owner.
    pub fn board(&mut self) -> &mut B {
        &mut self.board
    }

    /// LED states as the application set them.
    pub fn leds(&self) -> [bool; LEDS] {
        self.leds
    }

    /// The setpoint in centidegrees.
    pub fn setpoint(&self) -> i32 {
        self.setpoint
    }

    fn slot(&mut self, stream: StreamId) -> Option<&mut Exchange> {
        self.exchanges
            .iter_mut()
            .flatten()
            .find(|e| e.stream == stream)
    }

    fn status_json(&mut self, now: Instant) -> Vec<u8, MAX_OUT> {
        let r = self.board.readings();
        let uptime = self
            .started
            .map_or(0, |s| now.saturating_since(s).as_secs());
        let mut s: String<MAX_OUT> = String::new();
        let l = |b: bool| u8::from(b);
        let _ = write!(
            s,
            "{{\"device\":\"{}\",\"firmware\":\"{}\",\"uptime\":{},\"temp\":{},\"button\":{},\"presses\":{},\"leds\":[{},{},{}],\"setpoint\":{}}}",
            self.device_id,
            self.firmware,
            uptime,
            r.temperature_centi,
            r.button,
            r.presses,
            l(self.leds[0]),
            l(self.leds[1]),
            l(self.leds[2]),
            self.setpoint
        );
        let mut v = Vec::new();
        let _ = v.extend_from_slice(s.as_bytes());
        v
    }

    /// Applies a text command; `Err` carries the reason for a 400.
    fn command(&mut self, text: &[u8]) -> Result<(), &'static str> {
        let text = core::str::from_utf8(text).map_err(|_| "not UTF-8")?.trim();
        let mut words = text.split_ascii_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("led"), Some(i), Some(state), None) => self.led(i, state),
            (Some("setpoint"), Some(v), None, None) => self.set_setpoint(v),
            _ => Err("unknown command"),
        }
    }

    fn led(&mut self, index: &str, state: &str) -> Result<(), &'static str> {
        let i: usize = index.parse().map_err(|_| "bad LED index")?;
        if i >= LEDS {
            return Err("bad LED index");
        }
        let on = match state {
            "on" => true,
            "off" => false,
            "toggle" => !self.leds[i],
            _ => return Err("LED state must be on, off or toggle"),
        };
        self.leds[i] = on;
        self.board.set_led(i, on);
        self.commands += 1;
        Ok(())
    }

    fn set_setpoint(&mut self, value: &str) -> Result<(), &'static str> {
        let v: i32 = value
            .trim()
            .parse()
            .map_err(|_| "setpoint must be centidegrees")?;
        if !(500..=4000).contains(&v) {
            return Err("setpoint out of range (500..=4000)");
        }
        self.setpoint = v;
        self.board.set_setpoint(v);
        self.commands += 1;
        Ok(())
    }

    /// Answers a complete request on exchange `i`.
    fn handle(&mut self, i: usize, now: Instant) {
        let Some(ex) = self.exchanges[i].as_ref() else {
            return;
        };
        if ex.head_overflow {
            let ex = self.exchanges[i].as_mut().unwrap_or_else(|| unreachable!());
            return text(ex, 431, "request head too large\n");
        }
        if ex.body_overflow {
            let ex = self.exchanges[i].as_mut().unwrap_or_else(|| unreachable!());
            return text(ex, 413, "request body too large\n");
        }
        let Some(req) = ex.request() else {
            let ex = self.exchanges[i].as_mut().unwrap_or_else(|| unreachable!());
            return text(ex, 400, "malformed request head\n");
        };
        let (method, kind) = (req.method, ex.kind);
        let path = req.target.split('?').next().unwrap_or("");
        let gzip = req
            .headers
            .get("accept-encoding")
            .is_some_and(|v| contains(v, b"gzip"));
        let fresh = req
            .headers
            .get("if-none-match")
            .is_some_and(|v| contains(v, ETAG.as_bytes()));
        let ws_proto = req
            .headers
            .get("sec-websocket-protocol")
            .is_some_and(|v| contains(v, SUBPROTOCOL.as_bytes()));
        let mut route: Route = match (kind, method, path) {
            (StreamKind::WebSocket, "GET", "/ws") => Route::WebSocket,
            (StreamKind::WebSocket, _, _) => Route::Text(404, "no WebSocket here\n"),
            (_, "GET" | "HEAD", "/" | "/index.html") if fresh => Route::NotModified,
            (_, "GET" | "HEAD", "/" | "/index.html") => Route::Page,
            (_, "GET" | "HEAD", "/api/status") => Route::Status,
            (_, "POST", "/api/setpoint") => Route::Command(Cmd::Setpoint),
            (_, "POST", p) if p.starts_with("/api/led/") => Route::Command(Cmd::Led),
            (_, _, "/" | "/index.html" | "/api/status") => Route::NotAllowed("GET, HEAD"),
            (_, _, "/api/setpoint") => Route::NotAllowed("POST"),
            (_, _, p) if p.starts_with("/api/led/") => Route::NotAllowed("POST"),
            _ => Route::Text(404, "not found\n"),
        };
        log::debug!("{} {} {:?}", method, path, kind);
        let head_only = method == "HEAD";
        let mut led_index: Vec<u8, 4> = Vec::new();
        if let Some(rest) = path.strip_prefix("/api/led/") {
            let _ = led_index.extend_from_slice(rest.as_bytes());
        }
        if let Route::Command(cmd) = route {
            let body: Vec<u8, MAX_BODY> = ex.body.clone();
            let result = match cmd {
                Cmd::Setpoint => core::str::from_utf8(&body)
                    .map_err(|_| "not UTF-8")
                    .and_then(|v| self.set_setpoint(v)),
                Cmd::Led => {
                    let idx = core::str::from_utf8(&led_index).unwrap_or("x");
                    let state = core::str::from_utf8(&body)
                        .map_err(|_| "not UTF-8")
                        .map(str::trim)
                        .unwrap_or("");
                    self.led(idx, state)
                }
            };
            route = match result {
                Ok(()) => Route::Status,
                Err(why) => Route::Text(400, why),
            };
        }
        let status = matches!(route, Route::Status).then(|| self.status_json(now));
        let ex = self.exchanges[i].as_mut().unwrap_or_else(|| unreachable!());
        match route {
            Route::WebSocket => {
                ex.ws_open = true;
                if ws_proto {
                    ex.respond(
                        101,
                        &[Header {
                            name: "sec-websocket-protocol",
                            value: SUBPROTOCOL.as_bytes(),
                        }],
                        Body::Empty,
                        false,
                    );
                } else {
                    ex.respond(101, &[], Body::Empty, false);
                }
            }
            Route::Page => {
                let (body, enc): (&'static [u8], &[u8]) = if gzip {
                    (PAGE_GZ, b"gzip")
                } else {
                    (PAGE, b"identity")
                };
                let mut len: String<12> = String::new();
                let _ = write!(len, "{}", body.len());
                let headers = [
                    Header {
                        name: "content-type",
                        value: b"text/html; charset=utf-8",
                    },
                    Header {
                        name: "content-encoding",
                        value: enc,
                    },
                    Header {
                        name: "content-length",
                        value: len.as_bytes(),
                    },
                    Header {
                        name: "etag",
                        value: ETAG.as_bytes(),
                    },
                    Header {
                        name: "cache-control",
                        value: b"no-cache",
                    },
                    Header {
                        name: "vary",
                        value: b"accept-encoding",
                    },
                ];
                let body = if head_only {
                    Body::Empty
                } else {
                    Body::Static(body)
                };
                ex.respond(200, &headers, body, true);
            }
            Route::NotModified => {
                let headers = [Header {
                    name: "etag",
                    value: ETAG.as_bytes(),
                }];
                ex.respond(304, &headers, Body::Empty, true);
            }
            Route::Status => {
                let json = status.unwrap_or_default();
                let mut len: String<12> = String::new();
                let _ = write!(len, "{}", json.len());
                let headers = [
                    Header {
                        name: "content-type",
                        value: b"application/json",
                    },
                    Header {
                        name: "content-length",
                        value: len.as_bytes(),
                    },
                    Header {
                        name: "cache-control",
                        value: b"no-store",
                    },
                ];
                let body = if head_only {
                    Body::Empty
                } else {
                    Body::Dynamic(json)
                };
                ex.respond(200, &headers, body, true);
            }
            Route::NotAllowed(allow) => {
                let headers = [
                    Header {
                        name: "allow",
                        value: allow.as_bytes(),
                    },
                    Header {
                        name: "content-type",
                        value: b"text/plain",
                    },
                ];
                ex.respond(405, &headers, Body::Static(b"method not allowed\n"), true);
            }
            Route::Text(code, msg) => text(ex, code, msg),
            Route::Command(_) => {}
        }
    }

    fn on_ws_message(&mut self, stream: StreamId) {
        let Some(ex) = self.slot(stream) else { return };
        let overflow = ex.ws_in_overflow;
        let msg: Vec<u8, MAX_WS_IN> = core::mem::take(&mut ex.ws_in);
        ex.ws_in_overflow = false;
        let result = if overflow {
            Err("message too large")
        } else {
            self.command(&msg)
        };
        // The effect shows in the next readings message; the reply only confirms.
        let mut reply: String<MAX_REPLY> = String::new();
        let _ = match result {
            Ok(()) => write!(reply, "{{\"ok\":true}}"),
            Err(why) => write!(reply, "{{\"error\":\"{why}\"}}"),
        };
        if let Some(ex) = self.slot(stream)
            && ex.replies.push_back(reply).is_err()
        {
            log::warn!("stream {stream}: command replies backed up, one dropped");
        }
    }
}

#[derive(Clone, Copy)]
enum Cmd {
    Setpoint,
    Led,
}

enum Route {
    WebSocket,
    Page,
    NotModified,
    Status,
    Command(Cmd),
    NotAllowed(&'static str),
    Text(u16, &'static str),
}

fn text(ex: &mut Exchange, status: u16, msg: &'static str) {
    let headers = [Header {
        name: "content-type",
        value: b"text/plain; charset=utf-8",
    }];
    ex.respond(status, &headers, Body::Static(msg.as_bytes()), true);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

impl<B: Board> App for Controller<B> {
    fn hello(&self) -> Hello<'_> {
        Hello {
            device_id: &self.device_id,
            firmware: &self.firmware,
            params: proto::Config::DEVICE.params,
            max_head: MAX_HEAD as u16,
            services: ServiceList::Slice(&SERVICES),
        }
    }

    fn on_event(&mut self, link: &mut dyn Streams, event: LinkEvent<'_>, now: Instant) {
        match event {
            LinkEvent::Up => {
                self.started.get_or_insert(now);
                self.next_tick = Some(now);
            }
            LinkEvent::Down => {
                self.exchanges = [const { None }; STREAMS];
                self.next_tick = None;
            }
            LinkEvent::Opened {
                stream,
                kind,
                service,
            } => {
                if service != 0 || kind == StreamKind::Raw {
                    link.reset(stream, Code::UNKNOWN_SERVICE);
                    return;
                }
                match self.exchanges.iter_mut().find(|e| e.is_none()) {
                    Some(slot) => *slot = Some(Exchange::new(stream, kind)),
                    None => link.reset(stream, Code::REFUSED),
                }
            }
            LinkEvent::Data {
                stream,
                msg,
                end_msg,
                fin,
                data,
            } => {
                link.consume(stream, data.len());
                let Some(i) = self
                    .exchanges
                    .iter()
                    .position(|e| e.as_ref().is_some_and(|e| e.stream == stream))
                else {
                    return;
                };
                let ex = self.exchanges[i].as_mut().unwrap_or_else(|| unreachable!());
                match msg {
                    MsgKind::Head => {
                        ex.head_overflow |= ex.head.extend_from_slice(data).is_err();
                        ex.head_done |= end_msg;
                    }
                    MsgKind::Bytes => ex.body_overflow |= ex.body.extend_from_slice(data).is_err(),
                    MsgKind::Text | MsgKind::Binary => {
                        ex.ws_in_overflow |= ex.ws_in.extend_from_slice(data).is_err();
                    }
                    MsgKind::WsClose => {
                        // Echo the close (code only) and finish our side.
                        let code = if data.len() >= 2 {
                            [data[0], data[1]]
                        } else {
                            [0x03, 0xe8]
                        };
                        ex.ws_closed = false;
                        ex.ws_open = true;
                        if !ex.ws_send(MsgKind::WsClose, &code, true) {
                            link.reset(stream, Code::NO_ERROR);
                            self.exchanges[i] = None;
                        }
                        return;
                    }
                }
                ex.request_done |= fin;
                let ws_message = matches!(msg, MsgKind::Text | MsgKind::Binary) && end_msg;
                let ready = ex.head_done
                    && !ex.handled
                    && (ex.request_done
                        || ex.kind == StreamKind::WebSocket
                        || ex.head_overflow
                        || ex.body_overflow
                        || {
                            let m = ex.request().map(|r| r.method);
                            matches!(m, Some("GET" | "HEAD"))
                        });
                if ready {
                    self.handle(i, now);
                }
                if ws_message {
                    self.on_ws_message(stream);
                }
                if fin
                    && let Some(ex) = self.exchanges[i].as_mut()
                    && ex.ws_open
                    && !ex.ws_closed
                {
                    // The gateway ended the WebSocket without a close message.
                    ex.ws_send(MsgKind::WsClose, &[0x03, 0xe8], true);
                }
            }
            LinkEvent::Reset { stream, .. } => {
                for e in &mut self.exchanges {
                    if e.as_ref().is_some_and(|x| x.stream == stream) {
                        *e = None;
                    }
                }
            }
            LinkEvent::Credit { .. } => {}
        }
    }

    fn poll(&mut self, link: &mut dyn Streams, now: Instant) {
        if self.next_tick.is_some_and(|t| now >= t) {
            self.next_tick = Some(now.saturating_add(core::time::Duration::from_millis(TICK_MS)));
            if self.exchanges.iter().flatten().any(Exchange::ws_idle) {
                let json = self.status_json(now);
                for ex in self.exchanges.iter_mut().flatten() {
                    if ex.ws_idle() {
                        ex.ws_send(MsgKind::Text, &json, false);
                    }
                }
            }
        }
        for slot in &mut self.exchanges {
            if let Some(ex) = slot
                && ex.flush(link)
            {
                *slot = None;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.exchanges.iter().flatten().any(|e| e.ws_open) {
            self.next_tick
        } else {
            None
        }
    }
}
