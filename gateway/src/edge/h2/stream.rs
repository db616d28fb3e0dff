//! The state a connection shares with its streams' handles: each stream's
//! received bytes and its queued output, the flow-control windows, and the
//! wakers of the driver and of each stream's reader and writer.
//!
//! One lock per connection guards it all ([`Mux`]). The driver takes it
//! once per frame it dispatches and once per batch it writes; a handle
//! takes it once per read or write. A stream's buffers are allocated while
//! bytes wait in them and freed the moment they are empty, so an idle
//! stream (a WebSocket between messages) holds only its [`Slot`].

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::AbortHandle;

use super::frame::{DEFAULT_WINDOW, Reason};
use super::hpack;

/// Bytes a stream's writer may queue before `poll_write` waits.
pub(super) const OUT_HIGH: usize = 64 * 1024;

/// The receive window each stream starts with (announced in SETTINGS):
/// half the connection's, so that one upload of large messages keeps
/// 256 KiB to 512 KiB in flight between window updates.
pub(crate) const STREAM_WINDOW: u32 = 512 * 1024;
/// The connection's receive window: what a client can make the gateway
/// hold for its unread bodies at most (hyper's default too).
pub(crate) const CONN_WINDOW: u32 = 1024 * 1024;

/// What a handle may do with its stream.
pub(super) mod role {
    /// Read the request body (or a WebSocket's bytes).
    pub(crate) const READ: u8 = 1;
    /// Send the response (or a WebSocket's bytes).
    pub(crate) const WRITE: u8 = 2;
}

/// A connection's shared state.
pub(crate) struct Mux {
    state: Mutex<State>,
}

impl Mux {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                slots: Vec::new(),
                driver: None,
                ready: Vec::new(),
                send_window: DEFAULT_WINDOW,
                peer_window: DEFAULT_WINDOW,
                conn_unacked: 0,
                recv_window: i64::from(CONN_WINDOW),
                updates_due: false,
                dead: false,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while locked would be a bug in this module; the state is
        // still consistent enough to close every stream.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// See [`Mux`].
pub(crate) struct State {
    pub(super) slots: Vec<Slot>,
    /// The driver, woken when output is queued or a window is due.
    pub(super) driver: Option<Waker>,
    /// Streams with something to send, oldest first.
    pub(super) ready: Vec<u32>,
    /// The connection's send window (the peer's receive window).
    pub(super) send_window: i64,
    /// The peer's `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub(super) peer_window: i64,
    /// Bytes read by handles (or dropped unread) and not yet given back
    /// to the peer with a connection WINDOW_UPDATE.
    pub(super) conn_unacked: u32,
    /// What the peer may still send on the connection.
    pub(super) recv_window: i64,
    /// A window update may be due (a handle consumed bytes).
    pub(super) updates_due: bool,
    /// The connection is gone: every handle fails.
    pub(super) dead: bool,
}

/// One stream.
pub(crate) struct Slot {
    pub(super) id: u32,
    /// Received DATA not yet read, from `recv_pos` on.
    pub(super) recv: Vec<u8>,
    pub(super) recv_pos: usize,
    /// END_STREAM received.
    pub(super) recv_eof: bool,
    /// What the peer may still send on this stream.
    pub(super) recv_window: i64,
    /// Bytes read, not yet given back with a WINDOW_UPDATE.
    pub(super) unacked: u32,
    pub(super) reader: Option<Waker>,
    /// A header block to send, and whether it ends the stream.
    pub(super) head: Option<(Vec<u8>, bool)>,
    /// Queued output, from `out_pos` on.
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    /// END_STREAM goes after the queued output.
    pub(super) out_eof: bool,
    /// The response's trailers: a header block that carries END_STREAM
    /// after the queued output.
    pub(super) trailers: Option<Vec<u8>>,
    /// END_STREAM (or a reset) was sent.
    pub(super) sent_eof: bool,
    /// The peer's receive window for this stream.
    pub(super) send_window: i64,
    pub(super) writer: Option<Waker>,
    /// Reset by either side: reads and writes fail with this.
    pub(super) reset: Option<Reason>,
    /// An RST_STREAM to send.
    pub(super) send_reset: Option<Reason>,
    /// In [`State::ready`].
    pub(super) queued: bool,
    /// Roles held by live handles.
    pub(super) roles: u8,
    /// The request's task while it answers, aborted when the stream is
    /// reset or the connection ends.
    pub(super) task: Option<AbortHandle>,
    /// The response head was queued.
    pub(super) answered: bool,
    /// A request's task answers it (not the driver's 431): its response
    /// pays back one early reset.
    pub(super) dispatched: bool,
    /// The request's `content-length`, and the DATA bytes received.
    pub(super) length: Option<u64>,
    pub(super) received: u64,
}

impl Slot {
    pub(super) fn new(id: u32, recv_eof: bool, peer_window: i64, roles: u8) -> Self {
        Self {
            id,
            recv: Vec::new(),
            recv_pos: 0,
            recv_eof,
            recv_window: i64::from(STREAM_WINDOW),
            unacked: 0,
            reader: None,
            head: None,
            out: Vec::new(),
            out_pos: 0,
            out_eof: false,
            trailers: None,
            sent_eof: false,
            send_window: peer_window,
            writer: None,
            reset: None,
            send_reset: None,
            queued: false,
            roles,
            task: None,
            answered: false,
            dispatched: false,
            length: None,
            received: 0,
        }
    }

    /// Bytes queued to send.
    pub(super) fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Nothing left to send, and no handle left to queue more.
    pub(super) fn finished(&self) -> bool {
        self.roles == 0 && self.head.is_none() && self.send_reset.is_none() && !self.wants_send()
    }

    /// Output (or END_STREAM) waits to be sent.
    pub(super) fn wants_send(&self) -> bool {
        self.reset.is_none() && (self.pending_out() > 0 || (self.out_eof && !self.sent_eof))
    }

    /// Resets the stream (`send`: with an RST_STREAM of the gateway's):
    /// its buffers go, its request task is aborted (unless `keep_task`:
    /// the task itself resets it), its handles woken. Returns the
    /// received bytes dropped unread. `None` if it was reset before.
    pub(super) fn reset(&mut self, reason: Reason, send: bool, keep_task: bool) -> Option<usize> {
        if self.reset.is_some() {
            return None;
        }
        self.reset = Some(reason);
        self.send_reset = send.then_some(reason);
        self.head = None;
        let dropped = self.recv.len() - self.recv_pos;
        self.recv = Vec::new();
        self.recv_pos = 0;
        self.out = Vec::new();
        self.out_pos = 0;
        if !keep_task && let Some(t) = self.task.take() {
            t.abort();
        }
        self.wake_all();
        Some(dropped)
    }

    pub(super) fn wake_all(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

impl State {
    /// Adds a stream. The list grows one slot at a time while short: most
    /// connections carry a stream or two (an idle WebSocket's), and a
    /// doubling `Vec` would hold four slots for one.
    pub(super) fn open(&mut self, slot: Slot) {
        if self.slots.len() < 4 {
            self.slots.reserve_exact(1);
        }
        self.slots.push(slot);
    }

    pub(super) fn slot(&mut self, id: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    /// Puts the stream among those with output and wakes the driver.
    pub(super) fn queue(&mut self, id: u32) {
        let Some(s) = self.slot(id) else { return };
        if s.queued {
            return;
        }
        s.queued = true;
        self.ready.push(id);
        self.wake_driver();
    }

    pub(super) fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// Gives back received bytes nobody will read.
    pub(super) fn release(&mut self, n: usize) {
        self.conn_unacked = self
            .conn_unacked
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if self.conn_update_due() {
            self.updates_due = true;
            self.wake_driver();
        }
    }

    /// A connection WINDOW_UPDATE is due: half the window was consumed,
    /// or as much as the peer has left (a few stalled streams holding the
    /// rest must not stop the others).
    pub(super) fn conn_update_due(&self) -> bool {
        self.conn_unacked > 0
            && (self.conn_unacked >= CONN_WINDOW / 2
                || i64::from(self.conn_unacked) >= self.recv_window)
    }

    /// Counts `n` bytes of stream `id` as consumed (read, or padding), and
    /// asks the driver for WINDOW_UPDATEs once they are due.
    pub(super) fn consumed(&mut self, id: u32, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut due = false;
        if let Some(s) = self.slot(id) {
            s.unacked = s.unacked.saturating_add(n);
            due = s.unacked >= STREAM_WINDOW / 2 && !s.recv_eof;
        }
        self.conn_unacked = self.conn_unacked.saturating_add(n);
        if due || self.conn_update_due() {
            self.updates_due = true;
            self.wake_driver();
        }
    }

    /// Removes the stream if it is done.
    pub(super) fn reap(&mut self, id: u32) {
        if let Some(i) = self.slots.iter().position(|s| s.id == id)
            && self.slots[i].finished()
            && !self.slots[i].queued
        {
            self.remove(i);
        }
    }

    /// Drops slot `i`; the list gives back what it no longer needs (a
    /// page's burst of requests leaves one WebSocket behind).
    pub(super) fn remove(&mut self, i: usize) {
        self.slots.swap_remove(i);
        if self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len());
        }
        if self.slots.is_empty() {
            // A draining connection ends with its last stream.
            self.wake_driver();
        }
    }
}

fn stream_error(reason: Reason) -> io::Error {
    let kind = if reason == Reason::CANCEL || reason == Reason::NO_ERROR {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::InvalidData
    };
    io::Error::new(kind, format!("HTTP/2 stream reset: {reason}"))
}

fn connection_gone() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "HTTP/2 connection closed")
}

/// A handle on one stream: the request body's, the response's, or, for
/// an extended CONNECT, the WebSocket's (both).
pub(crate) struct Stream {
    mux: Arc<Mux>,
    id: u32,
    roles: u8,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h2::Stream").field("id", &self.id).finish()
    }
}

impl Stream {
    pub(super) fn new(mux: Arc<Mux>, id: u32, roles: u8) -> Self {
        Self { mux, id, roles }
    }

    /// Queues the response head; `end` ends the stream with it.
    pub(crate) fn send_head(&self, status: u16, headers: &HeaderMap, end: bool) -> io::Result<()> {
        let mut block = Vec::new();
        hpack::encode_response(status, headers, &mut block);
        let mut st = self.mux.lock();
        if st.dead {
            return Err(connection_gone());
        }
        let Some(s) = st.slot(self.id) else {
            return Err(connection_gone());
        };
        if let Some(r) = s.reset {
            return Err(stream_error(r));
        }
        s.head = Some((block, end));
        s.answered = true;
        if end {
            s.out_eof = true;
        }
        st.queue(self.id);
        Ok(())
    }

    /// The request's task is done with the stream (it handed it to a
    /// WebSocket's task): its abort handle goes, and with it the last
    /// reference to the finished task's memory.
    pub(crate) fn detach(&self) {
        if let Some(s) = self.mux.lock().slot(self.id) {
            s.task = None;
        }
    }

    /// Resets the stream (an error while sending the response).
    pub(crate) fn reset(&self, reason: Reason) {
        let mut st = self.mux.lock();
        let Some(s) = st.slot(self.id) else { return };
        if let Some(dropped) = s.reset(reason, true, true) {
            st.release(dropped);
            st.queue(self.id);
        }
    }

    /// The next chunk of the request body.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let mut st = self.mux.lock();
        let st = &mut *st;
        let dead = st.dead;
        let Some(s) = st.slots.iter_mut().find(|s| s.id == self.id) else {
            return Poll::Ready(Some(Err(connection_gone())));
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Some(Err(stream_error(r))));
        }
        let n = s.recv.len() - s.recv_pos;
        if n > 0 {
            let mut data = std::mem::take(&mut s.recv);
            if s.recv_pos > 0 {
                data.drain(..s.recv_pos);
            }
            s.recv_pos = 0;
            st.consumed(self.id, n);
            return Poll::Ready(Some(Ok(Bytes::from(data))));
        }
        if s.recv_eof {
            return Poll::Ready(None);
        }
        if dead {
            return Poll::Ready(Some(Err(connection_gone())));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The request body has ended.
    pub(crate) fn at_end(&self) -> bool {
        let mut st = self.mux.lock();
        st.slot(self.id)
            .is_some_and(|s| s.recv_eof && s.recv.len() == s.recv_pos)
    }

    /// Ends the stream after the queued output (END_STREAM), with these
    /// trailers if any.
    pub(crate) fn finish(&self, trailers: Option<&HeaderMap>) {
        let block = trailers.filter(|t| !t.is_empty()).map(|t| {
            let mut block = Vec::new();
            hpack::encode_fields(t, &mut block);
            block
        });
        let mut st = self.mux.lock();
        let Some(s) = st.slot(self.id) else { return };
        if s.reset.is_some() || s.out_eof {
            return;
        }
        s.out_eof = true;
        s.trailers = block;
        st.queue(self.id);
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let id = self.id;
        let mut st = self.mux.lock();
        let st = &mut *st;
        let dead = st.dead;
        let Some(s) = st.slots.iter_mut().find(|s| s.id == id) else {
            return Poll::Ready(Err(connection_gone()));
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Err(stream_error(r)));
        }
        let avail = s.recv.len() - s.recv_pos;
        if avail > 0 {
            let n = avail.min(buf.remaining());
            buf.put_slice(&s.recv[s.recv_pos..s.recv_pos + n]);
            s.recv_pos += n;
            if s.recv_pos == s.recv.len() {
                s.recv = Vec::new();
                s.recv_pos = 0;
            }
            st.consumed(id, n);
            return Poll::Ready(Ok(()));
        }
        if s.recv_eof {
            return Poll::Ready(Ok(()));
        }
        if dead {
            return Poll::Ready(Err(connection_gone()));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let id = self.id;
        let mut st = self.mux.lock();
        if st.dead {
            return Poll::Ready(Err(connection_gone()));
        }
        let Some(s) = st.slot(id) else {
            return Poll::Ready(Err(connection_gone()));
        };
        if let Some(r) = s.reset {
            return Poll::Ready(Err(stream_error(r)));
        }
        if s.out_eof {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "HTTP/2 stream already ended",
            )));
        }
        let queued = s.pending_out();
        if queued >= OUT_HIGH {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(OUT_HIGH - queued);
        if s.out_pos > 0 {
            // What the driver sent goes; at most `OUT_HIGH` bytes move.
            s.out.drain(..s.out_pos);
            s.out_pos = 0;
        }
        s.out.extend_from_slice(&data[..n]);
        st.queue(id);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The driver writes and flushes whatever is queued as soon as it
        // runs; queued output is on its way.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish(None);
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.mux.lock();
        let id = self.id;
        let Some(s) = st.slot(id) else { return };
        s.roles &= !self.roles;
        let mut dropped = 0;
        if self.roles & role::READ != 0 {
            // Nobody reads what arrives from now on: give it back.
            dropped = s.recv.len() - s.recv_pos;
            s.recv = Vec::new();
            s.recv_pos = 0;
            s.reader = None;
        }
        if self.roles & role::WRITE != 0 {
            // The response's sender is done: nothing left to abort (and
            // an abort handle keeps its task's memory).
            s.task = None;
            s.writer = None;
            if s.reset.is_none() {
                if !s.out_eof {
                    // The response was abandoned midway.
                    s.reset = Some(Reason::CANCEL);
                    s.send_reset = Some(Reason::CANCEL);
                    s.out = Vec::new();
                    s.out_pos = 0;
                } else if !s.recv_eof && s.roles & role::READ == 0 {
                    // Answered in full while the client still sends: ask it
                    // to stop, without error (RFC 9113 §8.1).
                    s.send_reset = Some(Reason::NO_ERROR);
                }
            }
        }
        if s.roles == 0 && s.reset.is_none() && !s.recv_eof && s.send_reset.is_none() {
            s.send_reset = Some(Reason::NO_ERROR);
        }
        let send = s.send_reset.is_some();
        st.release(dropped);
        if send {
            st.queue(id);
        }
        st.reap(id);
    }
}
