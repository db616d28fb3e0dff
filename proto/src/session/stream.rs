//! Per-stream state: credit both ways and the message sequence rules.
//!
//! Lifecycle of a slot:
//!
//! ```text
//!   free ──open()/OPEN──▶ open ──FIN sent + FIN received──▶ free
//!                          │
//!                          ├── RESET received ─────────────▶ free
//!                          └── reset() / rule broken ──▶ RESET queued ──sent──▶ free
//! ```
//!
//! Per direction, the message sequence is checked the same way for what
//! this side sends (an application bug is refused) and what it receives (a
//! peer bug resets the stream):
//!
//! - `Http`: a head (one or more HEAD frames, the last with END_MSG), then body bytes;
//! - `WebSocket`: a head, then body bytes (a refused upgrade) or text,
//!   binary and close messages, each possibly in several frames;
//! - `Raw`: bytes only.
//!
//! Nothing follows FIN.

use crate::code::Code;
use crate::wire::{MsgKind, StreamId, StreamKind};

use super::MAX_WINDOW;

/// One slot of a session's stream table. The application provides the
/// table (`[StreamSlot; N]` on a device, a `Vec` on the gateway); its
/// contents are private to the session.
#[derive(Clone, Copy, Debug)]
pub struct StreamSlot {
    pub(crate) id: u32,
    pub(crate) kind: StreamKind,
    pub(crate) send_credit: u32,
    /// Credit the peer still has on this stream.
    pub(crate) recv_credit: u32,
    /// Received and not yet consumed by the application.
    pub(crate) unconsumed: u32,
    /// Consumed and not yet returned in a WINDOW.
    pub(crate) to_return: u32,
    pub(crate) tx: Direction,
    pub(crate) rx: Direction,
    pub(crate) local: bool,
    pub(crate) window_pending: bool,
    /// OPEN written to the staging buffer but not yet in a sent record.
    pub(crate) open_unsent: bool,
    pub(crate) reset: Option<Code>,
    /// A reset this session made on its own (a stall) still to be reported.
    pub(crate) notify: bool,
    /// Since when a send has been cut short by missing stream credit.
    pub(crate) blocked_since: Option<u64>,
}

impl Default for StreamSlot {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl StreamSlot {
    /// A free slot, for initializing tables in `const` context.
    pub const EMPTY: Self = Self {
        id: 0,
        kind: StreamKind::Raw,
        send_credit: 0,
        recv_credit: 0,
        unconsumed: 0,
        to_return: 0,
        tx: Direction::NEW,
        rx: Direction::NEW,
        local: false,
        window_pending: false,
        open_unsent: false,
        reset: None,
        notify: false,
        blocked_since: None,
    };

    pub(crate) fn new(id: StreamId, kind: StreamKind, local: bool, send: u32, recv: u32) -> Self {
        Self {
            id: id.get(),
            kind,
            send_credit: send,
            recv_credit: recv,
            local,
            ..Self::default()
        }
    }

    pub(crate) fn is_free(&self) -> bool {
        self.id == 0
    }

    pub(crate) fn stream_id(&self) -> StreamId {
        StreamId::new(self.id).unwrap_or(StreamId::CONNECTION)
    }

    /// Both directions are over: the slot can be freed.
    pub(crate) fn is_done(&self) -> bool {
        self.tx.fin && self.rx.fin && self.reset.is_none()
    }
}

/// Where one direction of a stream stands in its message sequence.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Direction {
    /// The head has been completed.
    pub(crate) head_done: bool,
    /// A text, binary or close message is open (no END_MSG yet).
    pub(crate) open_msg: Option<MsgKind>,
    /// A WebSocket close was sent: only its own continuation may follow.
    pub(crate) closed_ws: bool,
    /// FIN was seen.
    pub(crate) fin: bool,
}

impl Direction {
    pub(crate) const NEW: Self = Self {
        head_done: false,
        open_msg: None,
        closed_ws: false,
        fin: false,
    };

    /// Whether a frame of `msg` may come next on a stream of `kind`.
    pub(crate) fn allows(&self, kind: StreamKind, msg: MsgKind) -> bool {
        if self.fin {
            return false;
        }
        if let Some(open) = self.open_msg {
            return open == msg;
        }
        match (kind, msg) {
            (StreamKind::Raw, MsgKind::Bytes) => true,
            (StreamKind::Raw, _) => false,
            (_, MsgKind::Head) => !self.head_done,
            (_, MsgKind::Bytes) => self.head_done,
            (StreamKind::WebSocket, MsgKind::Text | MsgKind::Binary | MsgKind::WsClose) => {
                self.head_done && !self.closed_ws
            }
            (StreamKind::Http, _) => false,
        }
    }

    /// Records a frame that `allows` accepted.
    pub(crate) fn advance(&mut self, msg: MsgKind, end_msg: bool, fin: bool) {
        match msg {
            MsgKind::Bytes => {}
            MsgKind::Head => {
                self.open_msg = if end_msg { None } else { Some(msg) };
                self.head_done = end_msg;
            }
            MsgKind::Text | MsgKind::Binary | MsgKind::WsClose => {
                self.open_msg = if end_msg { None } else { Some(msg) };
                if msg == MsgKind::WsClose {
                    self.closed_ws = true;
                }
            }
        }
        self.fin |= fin;
    }
}

/// Adds `inc` to a credit, refusing to pass [`MAX_WINDOW`].
pub(crate) fn add_credit(credit: u32, inc: u64) -> Option<u32> {
    let sum = u64::from(credit).checked_add(inc)?;
    if sum > u64::from(MAX_WINDOW) {
        None
    } else {
        u32::try_from(sum).ok()
    }
}

/// Queues a WINDOW for `slot` when the peer's remaining credit has fallen to
/// half the initial window or below and consumed bytes wait to be returned.
pub(crate) fn maybe_window(slot: &mut StreamSlot, initial: u32) {
    if slot.to_return > 0 && slot.recv_credit <= initial / 2 && !slot.rx.fin && slot.reset.is_none()
    {
        slot.window_pending = true;
    }
}
