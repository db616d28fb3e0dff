//! The receive half: record assembly, handshake messages, frame dispatch.

use crate::code::Code;
use crate::noise::{MSG1_OVERHEAD, TAG_LEN};
use crate::time::Instant;
use crate::wire::{
    Cipher, Ciphers, FrameRepr, Hello, InitPayload, RespPayload, Status, StreamId, WireError,
};

use super::stream::{StreamSlot, add_credit, maybe_window};
use super::{
    CloseReason, Event, MAX_HANDSHAKE, MSG_INIT, MSG_RESP, Pending, Phase, REFUSAL_QUEUE, Session,
    SessionError, VERSION_MAX, VERSION_MIN,
};

/// What a processed frame turns into, with payloads as ranges of `rx`.
enum Out {
    None,
    Hello(usize, usize),
    Data {
        stream: StreamId,
        msg: crate::wire::MsgKind,
        end_msg: bool,
        fin: bool,
        at: usize,
        len: usize,
    },
    Event(Event<'static>),
}

impl<B, S> Session<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[StreamSlot]> + AsMut<[StreamSlot]>,
{
    /// Feeds bytes read from the transport. Returns how many were taken: at
    /// most up to the end of one record, and none while frames of the
    /// previous record still wait in `poll_event`.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        self.now = self.now.max(now);
        if matches!(self.phase, Phase::Closed | Phase::Closing(_)) {
            return input.len();
        }
        if self.rx_pos < self.rx_end || self.pending.is_some() || self.parked {
            return 0;
        }
        let handshake = !matches!(self.phase, Phase::Open | Phase::GatewayAwaitHello);
        let limit = if handshake {
            MAX_HANDSHAKE
        } else {
            usize::from(self.config.params.max_record)
        };
        let mut taken = 0;
        if self.rx_fill < 2 {
            let n = (2 - self.rx_fill).min(input.len());
            self.rx.as_mut()[self.rx_fill..self.rx_fill + n].copy_from_slice(&input[..n]);
            self.rx_fill += n;
            taken += n;
            if self.rx_fill < 2 {
                self.stats.bytes_received += taken as u64;
                return taken;
            }
        }
        let rx = self.rx.as_ref();
        let total = 2 + usize::from(u16::from_be_bytes([rx[0], rx[1]]));
        if total > limit {
            self.stats.bytes_received += taken as u64;
            self.fail(if handshake {
                SessionError::BadHandshakeMessage
            } else {
                SessionError::RecordTooLarge(total)
            });
            return input.len();
        }
        let n = (total - self.rx_fill).min(input.len() - taken);
        self.rx.as_mut()[self.rx_fill..self.rx_fill + n].copy_from_slice(&input[taken..taken + n]);
        self.rx_fill += n;
        taken += n;
        self.stats.bytes_received += taken as u64;
        if self.rx_fill == total {
            self.rx_fill = 0;
            self.stats.records_received += 1;
            self.last_rx = self.now;
            if handshake {
                self.handshake_message(total);
            } else {
                self.open_record(total);
            }
        }
        taken
    }

    fn handshake_message(&mut self, total: usize) {
        let mut payload = [0u8; MAX_HANDSHAKE];
        let mut msg = [0u8; MAX_HANDSHAKE];
        msg[..total].copy_from_slice(&self.rx.as_ref()[..total]);
        let (ty, body) = (msg.get(2).copied(), &msg[3.min(total)..total]);
        match core::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::GatewayAwaitInit(mut hs)
                if ty == Some(MSG_INIT) && body.len() >= MSG1_OVERHEAD =>
            {
                let result = hs.read_message(body, &mut payload);
                let (n, device) = match result {
                    Ok(v) => v,
                    Err(e) => return self.closed_now(SessionError::Handshake(e)),
                };
                match InitPayload::parse(&payload[..n]) {
                    Ok(init) => {
                        self.pending = Some(Pending::Authenticate {
                            device,
                            timestamp: init.timestamp,
                        });
                        self.phase = Phase::GatewayDecide(hs, init);
                    }
                    Err(e) => self.closed_now(SessionError::Payload(e)),
                }
            }
            Phase::DeviceAwaitResp(hs) if ty == Some(MSG_RESP) => {
                let (n, keys) = match hs.into_inner().read_message(body, &mut payload) {
                    Ok(v) => v,
                    Err(e) => return self.closed_now(SessionError::Handshake(e)),
                };
                let resp = match RespPayload::parse(&payload[..n]) {
                    Ok(r) => r,
                    Err(e) => return self.closed_now(SessionError::Payload(e)),
                };
                if resp.status != Status::Accepted {
                    self.close_event = Some(CloseReason::Rejected {
                        status: resp.status,
                        info: resp.info,
                    });
                    return;
                }
                if !(VERSION_MIN..=VERSION_MAX).contains(&resp.version) {
                    return self.closed_now(SessionError::Version);
                }
                // Only a cipher this side offered (ChaCha20-Poly1305 always).
                let mut keys = keys;
                let offered = self.config.ciphers.intersection(Ciphers::supported());
                let ok = match resp.cipher {
                    Cipher::ChaCha20Poly1305 => true,
                    Cipher::Aes256Gcm => offered.contains(Ciphers::AES_256_GCM),
                };
                if !ok || !keys.send.set_cipher(resp.cipher) || !keys.recv.set_cipher(resp.cipher) {
                    return self.closed_now(SessionError::Payload(WireError::BadValue("cipher")));
                }
                self.version = resp.version;
                self.peer = resp.params;
                self.conn_send_credit = resp.params.conn_window;
                self.send = Some(keys.send);
                self.recv = Some(keys.recv);
                self.handshake_hash = keys.handshake_hash;
                self.phase = Phase::Open;
                self.next_ping = self.now.saturating_add(self.config.keepalive);
                self.pending = Some(Pending::Connected);
                if self.tx_len > self.tx_cap() {
                    // The HELLO does not fit the gateway's records.
                    self.end(CloseReason::Local(Code::INTERNAL), Code::INTERNAL);
                }
            }
            _ => self.closed_now(SessionError::BadHandshakeMessage),
        }
    }

    /// Ends a session that has no keys yet: nothing to send, nothing to wait for.
    fn closed_now(&mut self, err: SessionError) {
        self.phase = Phase::Closed;
        if self.close_event.is_none() {
            self.close_event = Some(CloseReason::Error(err));
        }
    }

    fn open_record(&mut self, total: usize) {
        let Some(recv) = self.recv.as_mut() else {
            return self.fail(SessionError::UnexpectedFrame);
        };
        if total < 2 + TAG_LEN {
            return self.fail(SessionError::Decrypt);
        }
        let end = total - TAG_LEN;
        let (body, tag_bytes) = self.rx.as_mut()[2..total].split_at_mut(end - 2);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        if recv.open(&[], body, &tag).is_err() {
            return self.fail(SessionError::Decrypt);
        }
        self.rx_pos = 2;
        self.rx_end = end;
    }

    /// The next thing the application must see.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if let Some(p) = self.pending.take() {
            return Some(match p {
                Pending::Authenticate { device, timestamp } => {
                    Event::Authenticate { device, timestamp }
                }
                Pending::Connected => Event::Connected {
                    version: self.version,
                    params: self.peer,
                },
            });
        }
        if self.notify_due {
            for slot in self.streams.as_mut() {
                if slot.notify {
                    slot.notify = false;
                    let (stream, code) = (slot.stream_id(), slot.reset.unwrap_or(Code::TIMEOUT));
                    return Some(Event::Reset {
                        stream,
                        code,
                        by_peer: false,
                    });
                }
            }
            self.notify_due = false;
        }
        loop {
            if self.rx_pos >= self.rx_end {
                break;
            }
            let out = self.next_frame();
            match out {
                Out::None => continue,
                Out::Hello(at, len) => {
                    let body = &self.rx.as_ref()[at..at + len];
                    // Parsed once already in next_frame; cannot fail here.
                    return Hello::parse(body).ok().map(Event::Hello);
                }
                Out::Data {
                    stream,
                    msg,
                    end_msg,
                    fin,
                    at,
                    len,
                } => {
                    let data = &self.rx.as_ref()[at..at + len];
                    return Some(Event::Data {
                        stream,
                        msg,
                        end_msg,
                        fin,
                        data,
                    });
                }
                Out::Event(ev) => return Some(ev),
            }
        }
        if let (false, Some(reason)) = (self.close_reported, self.close_event)
            && matches!(self.phase, Phase::Closed | Phase::Closing(_))
        {
            self.close_reported = true;
            return Some(Event::Closed(reason));
        }
        None
    }

    /// Decodes and applies the frame at `rx_pos`.
    fn next_frame(&mut self) -> Out {
        let start = self.rx_pos;
        let decoded = FrameRepr::decode(&self.rx.as_ref()[start..self.rx_end]);
        let (frame, len) = match decoded {
            Ok(v) => v,
            Err(e) => {
                self.fail(SessionError::Frame(e));
                return Out::None;
            }
        };
        self.rx_pos += len;
        let payload_at = |p: &[u8]| start + len - p.len();
        if matches!(self.phase, Phase::GatewayAwaitHello) {
            let FrameRepr::Hello { body } = frame else {
                self.fail(SessionError::UnexpectedFrame);
                return Out::None;
            };
            let at = payload_at(body);
            let blen = body.len();
            return match Hello::parse(body) {
                Ok(hello) => {
                    self.peer = hello.params;
                    self.conn_send_credit = hello.params.conn_window;
                    self.phase = Phase::Open;
                    self.next_ping = self.now.saturating_add(self.config.keepalive);
                    Out::Hello(at, blen)
                }
                Err(e) => {
                    self.fail(SessionError::Payload(e));
                    Out::None
                }
            };
        }
        match frame {
            FrameRepr::Ping { token } => {
                self.pong_due = Some(token);
                Out::None
            }
            FrameRepr::Pong { token } => match self.ping_out {
                Some((t, sent)) if t == token => {
                    self.ping_out = None;
                    let rtt = self.now.saturating_since(sent);
                    self.rtt = Some(rtt);
                    Out::Event(Event::Rtt(rtt))
                }
                _ => Out::None,
            },
            FrameRepr::Window { stream, increment } => self.on_window(stream, increment),
            FrameRepr::Open {
                stream,
                kind,
                service,
            } => self.on_open(stream, kind, service),
            FrameRepr::Reset { stream, code } => self.on_reset(stream, code),
            FrameRepr::GoAway { code, .. } => {
                self.peer_goaway = true;
                Out::Event(Event::GoAway { code })
            }
            FrameRepr::Close { code } => {
                if self.close_event.is_none() {
                    self.close_event = Some(CloseReason::Peer(code));
                }
                self.phase = Phase::Closed;
                self.rx_pos = self.rx_end;
                Out::None
            }
            FrameRepr::Hello { .. } => {
                self.fail(SessionError::UnexpectedFrame);
                Out::None
            }
            FrameRepr::Data {
                stream,
                msg,
                end_msg,
                fin,
                payload,
            } => {
                let at = payload_at(payload);
                self.on_data(stream, msg, end_msg, fin, at, payload.len())
            }
            FrameRepr::Extension { .. } => Out::None,
        }
    }

    fn on_window(&mut self, stream: StreamId, increment: u64) -> Out {
        if stream == StreamId::CONNECTION {
            let Some(c) = add_credit(self.conn_send_credit, increment) else {
                self.fail(SessionError::CreditOverflow);
                return Out::None;
            };
            self.conn_send_credit = c;
            return Out::Event(Event::Credit { stream });
        }
        match self.slot(stream) {
            Some(i) => {
                let slot = &mut self.streams.as_mut()[i];
                let Some(c) = add_credit(slot.send_credit, increment) else {
                    self.fail(SessionError::CreditOverflow);
                    return Out::None;
                };
                slot.send_credit = c;
                slot.blocked_since = None;
                Out::Event(Event::Credit { stream })
            }
            None if self.is_past(stream) => Out::None,
            None => {
                self.fail(SessionError::UnknownStream(stream));
                Out::None
            }
        }
    }

    fn on_open(&mut self, stream: StreamId, kind: crate::wire::StreamKind, service: u8) -> Out {
        if self.is_local(stream) || stream.get() <= self.max_peer_opened {
            self.fail(SessionError::UnknownStream(stream));
            return Out::None;
        }
        self.max_peer_opened = stream.get();
        let remote = self
            .streams
            .as_ref()
            .iter()
            .filter(|s| !s.is_free() && !s.local)
            .count();
        let free = self.streams.as_ref().iter().position(StreamSlot::is_free);
        let over = self.goaway_due.is_some()
            || self.goaway_sent
            || remote >= usize::from(self.config.params.max_streams);
        match free {
            Some(i) if !over => {
                let slot = StreamSlot::new(
                    stream,
                    kind,
                    false,
                    self.peer.stream_window,
                    self.config.params.stream_window,
                );
                self.streams.as_mut()[i] = slot;
                Out::Event(Event::Opened {
                    stream,
                    kind,
                    service,
                })
            }
            _ => {
                self.stats.refused_streams += 1;
                match self.refusals.iter_mut().find(|r| **r == 0) {
                    Some(r) => *r = stream.get(),
                    None => self.fail(SessionError::UnexpectedFrame),
                }
                Out::Event(Event::Refused { stream })
            }
        }
    }

    fn on_reset(&mut self, stream: StreamId, code: Code) -> Out {
        match self.slot(stream) {
            Some(i) => {
                let slot = &mut self.streams.as_mut()[i];
                let ours = slot.reset.is_some();
                *slot = StreamSlot::default();
                self.maybe_drained();
                if ours {
                    Out::None
                } else {
                    Out::Event(Event::Reset {
                        stream,
                        code,
                        by_peer: true,
                    })
                }
            }
            None if self.is_past(stream) => Out::None,
            None => {
                self.fail(SessionError::UnknownStream(stream));
                Out::None
            }
        }
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        msg: crate::wire::MsgKind,
        end_msg: bool,
        fin: bool,
        at: usize,
        len: usize,
    ) -> Out {
        let n = len as u32;
        if n > self.conn_recv_credit {
            self.fail(SessionError::FlowControl);
            return Out::None;
        }
        self.conn_recv_credit -= n;
        self.stats.payload_received += u64::from(n);
        let Some(i) = self.slot(stream) else {
            if self.is_past(stream) {
                self.discard(n);
            } else {
                self.fail(SessionError::UnknownStream(stream));
            }
            return Out::None;
        };
        let initial = self.config.params.stream_window;
        let slot = &mut self.streams.as_mut()[i];
        if slot.reset.is_some() {
            self.discard(n);
            return Out::None;
        }
        if n > slot.recv_credit {
            self.fail(SessionError::FlowControl);
            return Out::None;
        }
        slot.recv_credit -= n;
        if !slot.rx.allows(slot.kind, msg) {
            slot.reset = Some(Code::PROTOCOL);
            slot.window_pending = false;
            self.slots_dirty = true;
            self.discard(n);
            return Out::Event(Event::Reset {
                stream,
                code: Code::PROTOCOL,
                by_peer: false,
            });
        }
        slot.rx.advance(msg, end_msg, fin);
        slot.unconsumed += n;
        maybe_window(slot, initial);
        // The walk only has work when a WINDOW became due.
        self.slots_dirty |= slot.window_pending;
        if slot.is_done() && !slot.open_unsent {
            *slot = StreamSlot::default();
        }
        self.conn_unconsumed += n;
        self.maybe_drained();
        Out::Data {
            stream,
            msg,
            end_msg,
            fin,
            at,
            len,
        }
    }

    /// Payload nobody will read: its connection credit returns at once.
    fn discard(&mut self, n: u32) {
        self.conn_to_return += n;
    }

    pub(super) fn take_refusal(&mut self) -> Option<StreamId> {
        let r = self.refusals.iter_mut().find(|r| **r != 0)?;
        let id = StreamId::new(*r);
        *r = 0;
        id
    }
}

const _: () = assert!(REFUSAL_QUEUE > 0);
