//! The transmit half: handshake messages, then records whose plaintext is
//! the pending control frames first and the staged stream frames after.
//!
//! Control frames (PONG, WINDOW, RESET, GOAWAY, PING, CLOSE) never wait
//! behind data: they are generated from state at the moment a record is
//! built and placed at its front. Staged data joins the record only when
//! all control frames fit; otherwise it goes in the next one.

use crate::code::Code;
use crate::time::Instant;
use crate::wire::{FrameRepr, StreamId};

use super::stream::StreamSlot;
use super::{MSG_INIT, Phase, RECORD_OVERHEAD, Session, SessionError};
use crate::noise::TAG_LEN;

impl<B, S> Session<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[StreamSlot]> + AsMut<[StreamSlot]>,
{
    /// Writes the next record (or handshake message) into `out`, returning
    /// its length, or `None` when there is nothing to send. `out` should
    /// hold [`Session::max_transmit`] bytes; a smaller one gets control
    /// frames only.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.now = self.now.max(now);
        if self.parked {
            return None;
        }
        if matches!(self.phase, Phase::Open) {
            // The common case, without moving the phase out and back.
            let len = self.compose(out);
            if len == 0 {
                return None;
            }
            let Some(n) = self.seal(out, len) else {
                self.fail(SessionError::NonceExhausted);
                return None;
            };
            self.maybe_drained();
            return Some(self.count_sent(n));
        }
        let n = match core::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::DeviceInit(mut hs, init) => {
                let mut p = [0u8; crate::wire::InitPayload::MAX_LEN];
                let written = init
                    .emit(&mut p)
                    .ok()
                    .and_then(|n| hs.write_message(&p[..n], out.get_mut(3..)?).ok());
                let Some(len) = written else {
                    // Only a buffer too small for msg1 gets here: wait for a larger one.
                    self.phase = Phase::DeviceInit(hs, init);
                    return None;
                };
                out[..2].copy_from_slice(&((len + 1) as u16).to_be_bytes());
                out[2] = MSG_INIT;
                self.phase = Phase::DeviceAwaitResp(hs);
                len + 3
            }
            Phase::GatewayResp(accepted) => {
                let len = self.tx_len;
                let Some(dst) = out.get_mut(..len) else {
                    self.phase = Phase::GatewayResp(accepted);
                    return None;
                };
                dst.copy_from_slice(&self.tx.as_ref()[..len]);
                self.tx_len = 0;
                self.phase = if accepted {
                    Phase::GatewayAwaitHello
                } else {
                    Phase::Closed
                };
                len
            }
            Phase::Closing(code) => {
                let close = FrameRepr::Close { code };
                if out.len() < close.buffer_len() + RECORD_OVERHEAD {
                    // Too small for the CLOSE record: keep it for a larger buffer.
                    self.phase = Phase::Closing(code);
                    return None;
                }
                let len = close.emit(&mut out[2..]).ok()?;
                // After CLOSE nothing more is sent, whatever happens.
                self.seal(out, len)?
            }
            // Open went above; the rest have nothing to send.
            other => {
                self.phase = other;
                return None;
            }
        };
        Some(self.count_sent(n))
    }

    fn count_sent(&mut self, n: usize) -> usize {
        self.stats.records_sent += 1;
        self.stats.bytes_sent += n as u64;
        n
    }

    /// Encrypts the `len` plaintext bytes at `out[2..]`, writing the length
    /// prefix and tag. Returns the record length.
    fn seal(&mut self, out: &mut [u8], len: usize) -> Option<usize> {
        let send = self.send.as_mut()?;
        let total = len + RECORD_OVERHEAD;
        let (body, rest) = out.get_mut(2..total)?.split_at_mut(len);
        let tag = send.seal(&[], body)?;
        rest.copy_from_slice(&tag);
        out[..2].copy_from_slice(&((len + TAG_LEN) as u16).to_be_bytes());
        Some(total)
    }

    /// Builds a record's plaintext at `out[2..]`; returns its length.
    fn compose(&mut self, out: &mut [u8]) -> usize {
        let cap = self.tx_cap().min(out.len().saturating_sub(RECORD_OVERHEAD));
        let Some(buf) = out.get_mut(2..2 + cap) else {
            return 0;
        };
        let mut w = Composer {
            buf,
            len: 0,
            full: false,
        };
        if self.hello_unsent {
            // The device's first record carries the HELLO first (key
            // confirmation); control frames wait for the next record.
            if self.tx_len > w.buf.len() {
                return 0;
            }
            w.buf[..self.tx_len].copy_from_slice(&self.tx.as_ref()[..self.tx_len]);
            w.len = self.tx_len;
            self.tx_len = 0;
            self.hello_unsent = false;
            // Any OPEN staged behind the HELLO went out with it.
            for slot in self.streams.as_mut() {
                slot.open_unsent = false;
            }
            self.opens_unsent = false;
            return w.len;
        }

        if let Some(token) = self.pong_due
            && w.put(&FrameRepr::Pong { token })
        {
            self.pong_due = None;
        }
        if self.conn_to_return > 0 && self.conn_recv_credit <= self.config.params.conn_window / 2 {
            let inc = u64::from(self.conn_to_return);
            if w.put(&FrameRepr::Window {
                stream: StreamId::CONNECTION,
                increment: inc,
            }) {
                self.conn_recv_credit += self.conn_to_return;
                self.conn_to_return = 0;
            }
        }
        while let Some(id) = self.refusals.iter().copied().find(|r| *r != 0) {
            let Some(stream) = StreamId::new(id) else {
                break;
            };
            if !w.put(&FrameRepr::Reset {
                stream,
                code: Code::REFUSED,
            }) {
                break;
            }
            self.take_refusal();
        }
        let staged_flushable = self.tx_len <= cap;
        if self.slots_dirty {
            // Whether a slot still has something to send after this walk.
            let mut left = false;
            for slot in self.streams.as_mut() {
                if slot.is_free() {
                    continue;
                }
                let stream = slot.stream_id();
                if let Some(code) = slot.reset {
                    // A RESET must not overtake the OPEN still in the staging buffer.
                    if slot.open_unsent || slot.notify {
                        left = true;
                        continue;
                    }
                    if w.put(&FrameRepr::Reset { stream, code }) {
                        *slot = StreamSlot::default();
                    } else {
                        left = true;
                    }
                    continue;
                }
                if slot.window_pending && slot.to_return > 0 {
                    let inc = u64::from(slot.to_return);
                    if w.put(&FrameRepr::Window {
                        stream,
                        increment: inc,
                    }) {
                        slot.recv_credit += slot.to_return;
                        slot.to_return = 0;
                        slot.window_pending = false;
                    } else {
                        left = true;
                    }
                }
            }
            self.slots_dirty = left;
        }
        if let (Some(code), false) = (self.goaway_due, self.goaway_sent) {
            let last = StreamId::new(self.max_peer_opened).unwrap_or(StreamId::CONNECTION);
            if w.put(&FrameRepr::GoAway {
                last_stream: last,
                code,
            }) {
                self.goaway_sent = true;
            }
        }
        if self.ping_due && self.ping_out.is_none() {
            self.ping_token = self.ping_token.wrapping_add(1);
            if w.put(&FrameRepr::Ping {
                token: self.ping_token,
            }) {
                self.ping_due = false;
                self.ping_out = Some((self.ping_token, self.now));
            }
        }
        if !w.full && staged_flushable && self.tx_len > 0 && self.tx_len <= w.buf.len() - w.len {
            w.buf[w.len..w.len + self.tx_len].copy_from_slice(&self.tx.as_ref()[..self.tx_len]);
            w.len += self.tx_len;
            self.tx_len = 0;
            // Any OPEN staged went out with it (the table is walked only
            // when one was staged, not for every record of data).
            if core::mem::take(&mut self.opens_unsent) {
                for slot in self.streams.as_mut() {
                    if slot.open_unsent {
                        slot.open_unsent = false;
                        if slot.is_done() {
                            *slot = StreamSlot::default();
                        }
                    }
                }
            }
        }
        w.len
    }
}

/// Appends frames while they fit; remembers the first that did not.
struct Composer<'a> {
    buf: &'a mut [u8],
    len: usize,
    full: bool,
}

impl Composer<'_> {
    fn put(&mut self, frame: &FrameRepr<'_>) -> bool {
        if self.full || frame.buffer_len() > self.buf.len() - self.len {
            self.full = true;
            return false;
        }
        match frame.emit(&mut self.buf[self.len..]) {
            Ok(n) => {
                self.len += n;
                true
            }
            Err(_) => {
                self.full = true;
                false
            }
        }
    }
}
