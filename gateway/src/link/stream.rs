//! A stream to a device, as the bridge uses it.

use proto::{Code, MsgKind, StreamId};
use tokio::sync::oneshot;

use super::inbox::Inbox;
use super::session::{Cmd, CmdSender};

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
    /// Bytes handed out by the last `recv`, whose credit is still owed.
    owed: usize,
    done: bool,
}

impl DeviceStream {
    pub(crate) fn new(id: StreamId, cmd: CmdSender, rx: Inbox<StreamEvent>) -> Self {
        Self {
            id,
            device: String::new(),
            cmd,
            rx,
            owed: 0,
            done: false,
        }
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
    pub async fn recv(&mut self) -> Option<StreamEvent> {
        if self.owed > 0 {
            let _ = self.cmd.send(Cmd::Consume(self.id, self.owed));
            self.owed = 0;
        }
        let ev = self.rx.recv().await;
        match &ev {
            Some(StreamEvent::Data { data, .. }) => self.owed = data.len(),
            Some(StreamEvent::Reset(_) | StreamEvent::Closed) | None => self.done = true,
        }
        ev
    }

    /// Sends `data` as `msg`; completes once the session has taken all of
    /// it within the device's credit (the browser side waits meanwhile).
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
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Send {
                stream: self.id,
                msg,
                data,
                end_msg,
                fin,
                done: tx,
            })
            .map_err(|_| StreamClosed)?;
        rx.await.map_err(|_| StreamClosed)?
    }

    /// Aborts the stream (the browser side failed).
    pub fn reset(&self, code: Code) {
        let _ = self.cmd.send(Cmd::Reset(self.id, code));
    }
}
