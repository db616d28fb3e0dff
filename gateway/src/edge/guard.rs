//! The socket of a browser connection, watched: bytes received and sent
//! and whether writes are blocked are counted in a [`Meter`] (for the
//! slow-body and slow-read rate checks in [`super::http`]), and a write
//! that makes no progress for `[gateway.limits] send_timeout` fails with
//! `TimedOut`, which ends the connection (slow readers, `slowhttptest -X`).
//!
//! It sits under TLS, so it sees the TLS handshake, every HTTP version and
//! upgraded WebSockets alike: a browser that stops reading its WebSocket
//! is cut off the same way once the gateway's writes stall.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What a connection's socket did, shared with its HTTP task.
#[derive(Debug, Default)]
pub struct Meter {
    /// Bytes read.
    pub received: AtomicU64,
    /// Bytes written.
    pub sent: AtomicU64,
    /// Writes that found the socket full (the client reads slower than
    /// the gateway sends).
    pub stalls: AtomicU64,
    /// The last write found the socket full and none went through since.
    pub blocked: AtomicBool,
}

/// `inner`, metered, with a send stall timer.
#[derive(Debug)]
pub struct Guarded<I> {
    inner: I,
    meter: Arc<Meter>,
    send_timeouts: Arc<AtomicU64>,
    send_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl<I> Guarded<I> {
    /// Watches `inner` into `meter`; `send_timeouts` counts connections
    /// ended by a stalled write.
    pub fn new(
        inner: I,
        send_timeout: Duration,
        meter: Arc<Meter>,
        send_timeouts: Arc<AtomicU64>,
    ) -> Self {
        Self {
            inner,
            meter,
            send_timeouts,
            send_timeout,
            stall: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// A write returned `Pending`: arms the stall timer (once per stall)
    /// and fails once it fires.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.meter.blocked.swap(true, Ordering::Relaxed) {
            self.meter.stalls.fetch_add(1, Ordering::Relaxed);
        }
        let timeout = self.send_timeout;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        self.stall = None;
        self.send_timeouts.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("send timeout: the browser read nothing for {timeout:?}"),
        )))
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                self.meter.blocked.store(false, Ordering::Relaxed);
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }

    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = r {
            self.meter.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.meter.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_times_out_and_progress_resets_the_timer() {
        let (a, mut b) = tokio::io::duplex(64);
        let meter = Arc::new(Meter::default());
        let timeouts = Arc::new(AtomicU64::new(0));
        let mut g = Guarded::new(a, Duration::from_secs(5), meter.clone(), timeouts.clone());
        // Progress within the timeout keeps the connection.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                let _ = b.read(&mut buf).await.unwrap();
            }
            b.write_all(b"hello").await.unwrap();
            b
        });
        g.write_all(&[0u8; 200]).await.unwrap();
        let _b = reader.await.unwrap();
        let mut buf = [0u8; 5];
        g.read_exact(&mut buf).await.unwrap();
        assert_eq!(meter.received.load(Ordering::Relaxed), 5);
        assert_eq!(meter.sent.load(Ordering::Relaxed), 200);
        assert!(meter.stalls.load(Ordering::Relaxed) >= 1);
        // Nobody reads: the write fails after 5 s.
        let e = g.write_all(&[0u8; 200]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(timeouts.load(Ordering::Relaxed), 1);
    }
}
