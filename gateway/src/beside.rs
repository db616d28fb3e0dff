//! Futures that wait beside a task's busy ones, polled only once they wake.
//!
//! A connection's task waits on a few things at once: its traffic, which
//! wakes it for every message, and a few rare events (a drain signal, a
//! periodic tick, a revocation, a word from the other half of a
//! WebSocket). `tokio::select!` polls every branch on every wake, and each
//! of those polls of a rare event re-arms it: a timer's waker is compared
//! and stored again, a `Notify` wait takes the notifier's lock, a watch
//! checks its version. On the message path of a WebSocket that was about
//! 5 % of the gateway's instructions per message (BENCHMARKS.md,
//! "WebSockets over HTTP/2; rare events polled only when they wake").
//!
//! [`Beside`] polls the rare futures with a waker of its own. That waker
//! notes that one of them woke and wakes the task; until it has, a poll
//! of the task skips them (one atomic swap and the task's waker compared
//! with the one kept). Every future here keeps the waker of its latest
//! poll and wakes it when it becomes ready, so none is lost: it is polled
//! at the next wake of the task after it woke.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The rare futures' wake-up note (see the module docs). One per task
/// that waits on rare events: an allocation of 48 bytes, and 8 in the
/// task's future.
#[derive(Debug)]
pub struct Beside(Arc<Note>);

#[derive(Debug)]
struct Note {
    /// Set by the rare futures' waker, and at first (so that they are
    /// polled once, and from then on keep that waker).
    woken: AtomicBool,
    /// The task to wake.
    task: AtomicWaker,
}

impl Wake for Note {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for Beside {
    fn default() -> Self {
        Self::new()
    }
}

impl Beside {
    /// A note that has "woken", so that the first poll polls the rare
    /// futures.
    pub fn new() -> Self {
        Self(Arc::new(Note {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }))
    }

    /// Runs `poll`, which polls the rare futures with the context it is
    /// given, if one of them has woken since it last ran; `Pending`
    /// otherwise. When it returns `Ready`, the next call runs it again
    /// (another of its futures may be ready too).
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // The task's waker is kept before the note is read: a wake in
        // between finds it and wakes the task again.
        self.0.task.register(cx.waker());
        if !self.0.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.0.clone());
        let r = poll(&mut Context::from_waker(&waker));
        if r.is_ready() {
            self.0.woken.store(true, Ordering::Release);
        }
        r
    }
}

/// A future polled only once it has woken (see the module docs): for a
/// rare branch of a `select!`, whose other branches wake the task often.
/// The future is `Unpin`: pin one that is not (`std::pin::pin!`) and pass
/// the pinned reference.
#[derive(Debug)]
pub struct Rare<F> {
    beside: Beside,
    inner: F,
}

impl<F: Future + Unpin> Rare<F> {
    /// `inner`, polled only once it has woken.
    pub fn new(inner: F) -> Self {
        Self {
            beside: Beside::new(),
            inner,
        }
    }
}

impl<F: Future + Unpin> Future for Rare<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.beside
            .poll(cx, |cx| Pin::new(&mut this.inner).poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// Polls of the rare future counted; the task is woken by something
    /// else in between (a busy future).
    #[tokio::test(start_paused = true)]
    async fn rare_futures_are_polled_once_until_they_wake() {
        let beside = Beside::new();
        let rare = Notify::new();
        let mut waiting = pin!(rare.notified());
        let polls = AtomicUsize::new(0);
        let mut step = || {
            let mut cx = Context::from_waker(Waker::noop());
            beside.poll(&mut cx, |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                waiting.as_mut().poll(cx)
            })
        };
        // The first poll arms it.
        assert!(step().is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Wakes of the task for other reasons skip it.
        for _ in 0..10 {
            assert!(step().is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Once it has woken it is polled, and is ready.
        rare.notify_one();
        assert!(step().is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    /// A rare future that becomes ready wakes the task, and the task's
    /// next poll returns it; one that was ready is polled again after.
    #[tokio::test(start_paused = true)]
    async fn a_rare_timer_wakes_the_task_and_is_seen() {
        let beside = Beside::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let busy = Notify::new();
        let mut ticks = 0;
        let mut busy_wakes = 0;
        // A task that counts ticks and busy wakes for 3.5 s of paused time.
        let run = async {
            let mut busy_wait = pin!(busy.notified());
            loop {
                let ticked = poll_fn(|cx| {
                    if busy_wait.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    beside.poll(cx, |cx| tick.poll_tick(cx).map(|_| true))
                })
                .await;
                if ticked {
                    ticks += 1;
                } else {
                    busy_wakes += 1;
                    busy_wait.set(busy.notified());
                }
            }
        };
        let poke = async {
            for _ in 0..35 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                busy.notify_one();
            }
        };
        tokio::select! {
            () = run => unreachable!("the loop runs until dropped"),
            () = poke => {}
        }
        // The immediate first tick, then one at 1, 2 and 3 s.
        assert_eq!(ticks, 4);
        assert!(busy_wakes >= 30, "busy wakes seen: {busy_wakes}");
    }

    /// When two rare futures are ready at once, the second is returned by
    /// the next poll without another wake.
    #[test]
    fn a_ready_rare_future_does_not_hide_another() {
        let beside = Beside::new();
        let (a, b) = (Notify::new(), Notify::new());
        let (mut wa, mut wb) = (pin!(a.notified()), pin!(b.notified()));
        let (mut a_done, mut b_done) = (false, false);
        let polls = AtomicUsize::new(0);
        let mut step = || {
            let mut cx = Context::from_waker(Waker::noop());
            beside.poll(&mut cx, |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                if !a_done && wa.as_mut().poll(cx).is_ready() {
                    a_done = true;
                    return Poll::Ready('a');
                }
                if !b_done && wb.as_mut().poll(cx).is_ready() {
                    b_done = true;
                    return Poll::Ready('b');
                }
                Poll::Pending
            })
        };
        assert!(step().is_pending());
        a.notify_one();
        b.notify_one();
        assert_eq!(step(), Poll::Ready('a'));
        assert_eq!(step(), Poll::Ready('b'));
        // Polled once more after a ready one, then skipped until a wake.
        assert!(step().is_pending());
        assert!(step().is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 4);
    }
}
