//! A stream's inbox: the events the session hands to the one task that
//! reads the stream.
//!
//! An unbounded single-producer, single-consumer queue that holds no
//! memory while it is empty. tokio's unbounded channel allocates a
//! cache-padded channel and a first block of 32 slots when it is made, and
//! keeps them: about 1.7 KiB for every open stream, most of which are idle
//! (a WebSocket waiting for its next message). Here an idle stream costs
//! one small `Arc`; the queue grows while events wait and is given back
//! once drained.
//!
//! The session's own command queue is one too, with many senders (the
//! device's handle and each of its streams hold a clone): an idle device
//! session then holds no channel block either.
//!
//! Endings: dropping the last sender ends the inbox once its events are
//! read (`recv` gives `None`); dropping the receiver makes `send` give the
//! event back, as a closed channel does.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    queue: VecDeque<T>,
    waker: Option<Waker>,
    senders: usize,
    receiver_gone: bool,
}

/// The session's end.
pub(crate) struct InboxSender<T>(Arc<Mutex<State<T>>>);

/// The reader's end.
pub(crate) struct Inbox<T>(Arc<Mutex<State<T>>>);

/// A new, empty inbox (nothing allocated but the shared state).
pub(crate) fn inbox<T>() -> (InboxSender<T>, Inbox<T>) {
    let state = Arc::new(Mutex::new(State {
        queue: VecDeque::new(),
        waker: None,
        senders: 1,
        receiver_gone: false,
    }));
    (InboxSender(state.clone()), Inbox(state))
}

fn lock<T>(state: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // The state stays consistent whatever panicked while holding the lock.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> InboxSender<T> {
    /// Queues `item`; gives it back when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut s = lock(&self.0);
            if s.receiver_gone {
                return Err(item);
            }
            s.queue.push_back(item);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> InboxSender<T> {
    /// Queues `item` without waking the reader: it is read at the reader's
    /// next wake-up, whatever causes it. For what may wait (a credit
    /// return that is not yet needed) and is not worth a task wake-up.
    pub(crate) fn send_quiet(&self, item: T) -> Result<(), T> {
        let mut s = lock(&self.0);
        if s.receiver_gone {
            return Err(item);
        }
        s.queue.push_back(item);
        Ok(())
    }
}

impl<T> std::fmt::Debug for InboxSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxSender").finish_non_exhaustive()
    }
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        lock(&self.0).senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for InboxSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.0);
            s.senders -= 1;
            if s.senders > 0 {
                return;
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Inbox<T> {
    /// The next event; `None` once the sender is gone and all is read.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        self.wait_for(|queue| {
            let item = queue.pop_front()?;
            if queue.is_empty() {
                // Drained: hold nothing while idle.
                *queue = VecDeque::new();
            }
            Some(item)
        })
        .await
    }

    /// Whether an event waits, or the inbox has ended: `recv` would not
    /// wait.
    pub(crate) fn has_next(&self) -> bool {
        let s = lock(&self.0);
        !s.queue.is_empty() || s.senders == 0
    }

    /// [`Self::poll_recv_all`] as a future.
    #[cfg(test)]
    pub(crate) async fn recv_all(&mut self) -> Option<VecDeque<T>> {
        poll_fn(|cx| self.poll_recv_all(cx)).await
    }

    /// Everything queued, at once (one lock for a burst of events); `None`
    /// once the sender is gone and all is read. The inbox keeps no queue
    /// afterwards. Registers the task's waker when nothing is queued.
    pub(crate) fn poll_recv_all(&mut self, cx: &mut Context<'_>) -> Poll<Option<VecDeque<T>>> {
        self.poll_take(cx, |queue| {
            (!queue.is_empty()).then(|| std::mem::take(queue))
        })
    }

    /// Waits until `take` gets something from the queue, or the senders
    /// are all gone (`None`).
    async fn wait_for<R>(
        &mut self,
        mut take: impl FnMut(&mut VecDeque<T>) -> Option<R>,
    ) -> Option<R> {
        poll_fn(|cx| self.poll_take(cx, &mut take)).await
    }

    /// One poll of [`Self::wait_for`].
    fn poll_take<R>(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut VecDeque<T>) -> Option<R>,
    ) -> Poll<Option<R>> {
        let mut s = lock(&self.0);
        if let Some(r) = take(&mut s.queue) {
            return Poll::Ready(Some(r));
        }
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.0);
        f.debug_struct("Inbox")
            .field("queued", &s.queue.len())
            .field("senders", &s.senders)
            .finish()
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        let queued = {
            let mut s = lock(&self.0);
            s.receiver_gone = true;
            s.waker = None;
            std::mem::take(&mut s.queue)
        };
        // Dropped outside the lock.
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_arrive_in_order_then_end() {
        let (tx, mut rx) = inbox();
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        drop(tx);
        for i in 0..100 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.recv().await, None);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn has_next_says_whether_recv_would_wait() {
        let (tx, mut rx) = inbox();
        assert!(!rx.has_next(), "empty, with a sender");
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert!(rx.has_next());
        assert_eq!(rx.recv().await, Some(1));
        assert!(rx.has_next(), "one left");
        assert_eq!(rx.recv().await, Some(2));
        assert!(!rx.has_next(), "drained");
        drop(tx);
        assert!(rx.has_next(), "ended: recv answers None at once");
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let (tx, mut rx) = inbox();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(v) = rx.recv().await {
                got.push(v);
            }
            got
        });
        for i in 0..10u32 {
            tokio::task::yield_now().await;
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(reader.await.unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn sending_to_a_dropped_reader_gives_the_event_back() {
        let (tx, rx) = inbox();
        tx.send(1).unwrap();
        drop(rx);
        assert_eq!(tx.send(2), Err(2));
    }

    #[tokio::test]
    async fn it_ends_when_the_last_of_several_senders_goes() {
        let (tx, mut rx) = inbox();
        let other = tx.clone();
        tx.send(1).unwrap();
        drop(tx);
        other.send(2).unwrap();
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        let third = other.clone();
        drop(other);
        third.send(3).unwrap();
        drop(third);
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn everything_queued_arrives_at_once_in_order() {
        let (tx, mut rx) = inbox();
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let got: Vec<_> = rx.recv_all().await.unwrap().into_iter().collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(lock(&rx.0).queue.capacity(), 0, "nothing kept");
        tx.send(5).unwrap();
        drop(tx);
        assert_eq!(rx.recv_all().await.map(Vec::from), Some(vec![5]));
        assert_eq!(rx.recv_all().await, None);
    }

    #[tokio::test]
    async fn a_quiet_send_waits_for_the_next_wake_up() {
        use std::task::{Context, Poll, Wake};
        struct Count(std::sync::atomic::AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = inbox();
        let woken = || count.0.load(std::sync::atomic::Ordering::Relaxed);
        {
            let mut recv = std::pin::pin!(rx.recv_all());
            assert!(recv.as_mut().poll(&mut cx).is_pending());
            tx.send_quiet(1).unwrap();
            assert_eq!(woken(), 0, "a quiet send wakes nobody");
            tx.send(2).unwrap();
            assert_eq!(woken(), 1);
            let Poll::Ready(Some(got)) = recv.as_mut().poll(&mut cx) else {
                panic!("both are there");
            };
            assert_eq!(Vec::from(got), vec![1, 2], "in order");
        }
        drop(rx);
        assert_eq!(tx.send_quiet(3), Err(3));
    }

    #[tokio::test]
    async fn a_drained_inbox_holds_no_queue() {
        let (tx, mut rx) = inbox();
        for i in 0..64 {
            tx.send(i).unwrap();
        }
        while !lock(&rx.0).queue.is_empty() {
            rx.recv().await;
        }
        assert_eq!(lock(&rx.0).queue.capacity(), 0);
    }
}
