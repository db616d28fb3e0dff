//! A stream to a device, as the bridge uses it.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use proto::{Code, MsgKind, StreamId};

use super::inbox::Inbox;
use super::session::{Cmd, CmdSender};

/// Bytes one stream's senders may have queued for the session beyond what
/// it has handed to proto (within the device's credit) before `send`
/// waits. Small messages (a WebSocket echo) then go without a round trip
/// through the session task: the sender learns nothing per message and is
/// not woken for it. A large message still waits until all but this much
/// of it was taken, so a slow device holds back the browser as before,
/// with at most this much more buffered at the gateway per stream.
pub(crate) const SEND_AHEAD: usize = 16 << 10;

/// Flow control between a stream's senders and its session task: what was
/// queued and not yet taken, and whether the stream can take more at all.
#[derive(Debug, Default)]
pub(crate) struct SendGate(Mutex<GateState>);

#[derive(Debug, Default)]
struct GateState {
    queued: usize,
    closed: bool,
    waker: Option<Waker>,
}

impl SendGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `n` bytes a sender is about to queue.
    fn queue(&self, n: usize) -> Result<(), StreamClosed> {
        let mut g = self.lock();
        if g.closed {
            return Err(StreamClosed);
        }
        g.queued += n;
        Ok(())
    }

    /// Ready once the queue is back within [`SEND_AHEAD`]; an error once
    /// the stream can take nothing more.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), StreamClosed>> {
        let mut g = self.lock();
        if g.closed {
            return Poll::Ready(Err(StreamClosed));
        }
        if g.queued <= SEND_AHEAD {
            return Poll::Ready(Ok(()));
        }
        match &mut g.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The session handed `n` queued bytes to proto.
    pub(crate) fn taken(&self, n: usize) {
        let waker = {
            let mut g = self.lock();
            g.queued = g.queued.saturating_sub(n);
            if g.queued > SEND_AHEAD {
                return;
            }
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The stream takes nothing more (reset, dropped, or its session
    /// ended): a waiting sender and every later send get an error.
    pub(crate) fn close(&self) {
        let waker = {
            let mut g = self.lock();
            g.closed = true;
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What arrives on a device stream.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// Payload from the device.
    Data {
        /// What it belongs to.
        msg: MsgKind,
        /// The bytes.
        data: Vec<u8>,
        /// Last part of a head or WebSocket message.
        end_msg: bool,
        /// The device sends nothing more.
        fin: bool,
    },
    /// The device (or the session) aborted the stream.
    Reset(Code),
    /// The device's session ended.
    Closed,
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The device is not connected (or its session just ended).
    #[error("device offline")]
    Offline,
    /// The device's stream limit is reached.
    #[error("device busy: stream limit reached")]
    Busy,
    /// The session is draining.
    #[error("device session is going away")]
    GoingAway,
}

/// The stream ended before the data could be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device stream closed")]
pub struct StreamClosed;

/// One stream to a device. Dropping it before both sides finished resets
/// the stream with `CANCEL`.
#[derive(Debug)]
pub struct DeviceStream {
    id: StreamId,
    device: String,
    cmd: CmdSender,
    rx: Inbox<StreamEvent>,
    gate: Arc<SendGate>,
    /// Bytes handed out by the last `recv`, whose credit is still owed.
    owed: usize,
    /// Credit given back since the session was last woken for it, and how
    /// much may be given back that way (0: every return wakes it).
    quiet: usize,
    quiet_max: usize,
    done: bool,
}

impl DeviceStream {
    pub(crate) fn new(
        id: StreamId,
        cmd: CmdSender,
        rx: Inbox<StreamEvent>,
        gate: Arc<SendGate>,
    ) -> Self {
        Self {
            id,
            device: String::new(),
            cmd,
            rx,
            gate,
            owed: 0,
            quiet: 0,
            quiet_max: 0,
            done: false,
        }
    }

    /// Lets `recv` give back up to `max` bytes of credit without waking
    /// the session (it takes them at its next wake-up).
    pub(crate) fn with_quiet_credit(mut self, max: usize) -> Self {
        self.quiet_max = max;
        self
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The id of the device it goes to.
    pub fn device(&self) -> &str {
        &self.device
    }

    pub(crate) fn set_device(&mut self, device: &str) {
        device.clone_into(&mut self.device);
    }

    /// The next event. Receiving returns the credit of the previous chunk,
    /// so call it once that chunk has been passed on (written to the
    /// browser): the device never has more than its window in flight.
    ///
    /// Small returns go to the session without waking it, up to the
    /// session's quiet allowance in all: in an echo the session wakes for
    /// the next message and the device's answer anyway, and a wake-up for
    /// the credit alone was a third one per message.
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        if self.owed > 0 {
            let cmd = Cmd::Consume(self.id, self.owed);
            self.quiet += self.owed;
            if self.quiet <= self.quiet_max {
                let _ = self.cmd.send_quiet(cmd);
            } else {
                let _ = self.cmd.send(cmd);
                self.quiet = 0;
            }
            self.owed = 0;
        }
        let ev = self.rx.recv().await;
        match &ev {
            Some(StreamEvent::Data { data, .. }) => self.owed = data.len(),
            Some(StreamEvent::Reset(_) | StreamEvent::Closed) | None => self.done = true,
        }
        ev
    }

    /// Whether the next event is already here: [`Self::recv`] would
    /// not wait.
    pub fn has_next(&self) -> bool {
        self.rx.has_next()
    }

    /// Sends `data` as `msg`. Completes at once while this stream's queue
    /// toward the session is within [`SEND_AHEAD`], otherwise once the
    /// session has taken all but that much within the device's credit (the
    /// browser side waits meanwhile). An error means the stream takes
    /// nothing more; data queued before it may have been dropped with the
    /// stream.
    pub async fn send(
        &self,
        msg: MsgKind,
        data: Vec<u8>,
        end_msg: bool,
        fin: bool,
    ) -> Result<(), StreamClosed> {
        self.sender().send(msg, data, end_msg, fin).await
    }

    /// A handle that sends on this stream from another task, while this one
    /// receives.
    pub fn sender(&self) -> StreamSender {
        StreamSender {
            id: self.id,
            cmd: self.cmd.clone(),
            gate: self.gate.clone(),
        }
    }

    /// Aborts the stream.
    pub fn reset(&mut self, code: Code) {
        self.done = true;
        let _ = self.cmd.send(Cmd::Reset(self.id, code));
    }
}

impl Drop for DeviceStream {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Dropped {
            stream: self.id,
            owed: self.owed,
            reset: !self.done,
        });
    }
}

/// The sending side of a [`DeviceStream`], for a task of its own.
#[derive(Clone, Debug)]
pub struct StreamSender {
    id: StreamId,
    cmd: CmdSender,
    gate: Arc<SendGate>,
}

impl StreamSender {
    /// See [`DeviceStream::send`]. Sends from one sender complete in order;
    /// dropping the future after it started may still deliver the data.
    pub async fn send(
        &self,
        msg: MsgKind,
        data: Vec<u8>,
        end_msg: bool,
        fin: bool,
    ) -> Result<(), StreamClosed> {
        self.gate.queue(data.len())?;
        let sent = self.cmd.send(Cmd::Send {
            stream: self.id,
            msg,
            data,
            end_msg,
            fin,
        });
        if sent.is_err() {
            self.gate.close();
            return Err(StreamClosed);
        }
        poll_fn(|cx| self.gate.poll_room(cx)).await
    }

    /// Aborts the stream (the browser side failed).
    pub fn reset(&self, code: Code) {
        let _ = self.cmd.send(Cmd::Reset(self.id, code));
    }
}
