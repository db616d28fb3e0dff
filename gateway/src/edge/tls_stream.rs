//! The browser side's TLS stream: rustls' unbuffered server connection
//! under buffers this module owns, so that an idle connection holds none.
//!
//! rustls' buffered `ServerConnection` (what `tokio-rustls` drives) keeps a
//! 4 KiB receive buffer for the life of the connection, grown at the first
//! read and never given back below that. With thousands of idle WebSockets
//! that buffer is a third of the gateway's memory per connection. Here the
//! received TLS bytes (`rx`), the encrypted bytes not yet written (`tx`) and
//! the decrypted bytes not yet read (`plain`) are this stream's own; each is
//! freed as soon as it is empty, so a connection between messages holds only
//! rustls' keys and state.
//!
//! How it drives rustls: every call into the connection goes through
//! [`TlsStream::pump`], which calls `process_tls_records` on all received
//! bytes and handles the state it returns until the caller's need is met:
//! plaintext for a read, room to encrypt for a write, a close_notify for a
//! shutdown, the end of the handshake for [`accept`]. Bytes rustls asks to
//! transmit (handshake flights, tickets, a key update, alerts) go to the end
//! of `tx`, so they leave in the order rustls made them, before any
//! application data encrypted after them (RFC 8446 §4.6.3 asks for exactly
//! that order after a peer's key update). rustls itself handles key updates,
//! the cipher suites' confidentiality limits and alerts.
//!
//! The received bytes are always given to rustls whole and only shrunk from
//! the front by the amount rustls says to discard: rustls joins handshake
//! messages in place and remembers offsets into that buffer.
//!
//! Encrypted application data waits in `tx` until the caller flushes, a
//! read is about to wait (or sees the end), or `TX_HIGH` bytes are queued:
//! a WebSocket frame written in pieces (its head and first record from a
//! queue, the rest from the sender's buffer) leaves in one system call.
//! Every writer here flushes once it has nothing more at hand, as
//! `AsyncWrite` asks: hyper after a response's bytes, the WebSocket
//! connection after a message, or after the last of several device chunks
//! that were already queued. The handshake's last bytes wait the same way:
//! TLS 1.3's session tickets, made when the client's Finished arrives,
//! leave with the first response (a browser sends its request right
//! behind its Finished), one system call and one segment instead of two.
//!
//! A write can meet application data that arrived before the reader asked
//! for it (rustls decrypts the next record whenever it is called). Those
//! bytes wait in `plain`, and the reader is woken, since its wait was on the
//! socket.
//!
//! The server name: rustls' unbuffered server connection does not expose
//! it, so [`super::client_hello::scan`] reads it from the ClientHello before
//! rustls sees the bytes.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::client_hello::{self, Scan};

/// Bytes asked of the socket per read at least: small enough that the
/// allocator serves it from its per-thread cache (the buffer is taken and
/// given back around every wait) and that a read into an empty buffer
/// goes to the stack first (a wake that finds the socket empty takes no
/// buffer; [`TlsStream::poll_fill`]), large enough for a typical small
/// WebSocket message's record. A larger record is read whole once its
/// header is in.
const READ_MIN: usize = 1024;
/// Bytes asked of the socket per read at most in a transfer: four full
/// records. A read that got all it asked for left more in the socket, most
/// likely, so the next one asks twice as much, up to this; one that got
/// less halves it. A bulk upload takes four records per system call, not
/// one (or two, the record's header first), and small messages go back to
/// small reads.
const READ_BULK: usize = 4 * RECORD_MAX;
/// The most received bytes held at once: a handshake message of up to
/// 64 KiB (rustls' own cap) joined in place, and a record after it.
const RX_MAX: usize = 0xffff + 2 * RECORD_MAX;
/// A TLS record on the wire at most: header, 16 KiB of plaintext and the
/// largest expansion rustls' suites add.
const RECORD_MAX: usize = 5 + 16_384 + 256;
/// Plaintext taken per `poll_write`; larger writes return a partial count.
const WRITE_CHUNK: usize = 64 * 1024;
/// Encrypted bytes a writer may queue before `poll_write` waits for the
/// socket.
const TX_HIGH: usize = 64 * 1024;

/// A server-side TLS stream over `IO`.
pub struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// Received, not yet discarded TLS bytes.
    rx: Vec<u8>,
    /// Decrypted application data not yet read, with the read offset into
    /// the first chunk.
    plain: VecDeque<Vec<u8>>,
    plain_pos: usize,
    /// Encrypted bytes to write, from `tx_pos` on.
    tx: Vec<u8>,
    tx_pos: usize,
    /// Bytes the next read asks for ([`READ_MIN`] to [`READ_BULK`]): grown
    /// by reads that got all they asked for, shrunk by those that did not.
    read_hint: u32,
    /// The reader's waker while it waits on the socket.
    read_waker: Option<Waker>,
    /// The peer ended its side (close_notify, or TCP end between records).
    read_done: bool,
    /// This side sent its close_notify.
    close_sent: bool,
    /// rustls failed: every later call fails the same way.
    failed: Option<Failed>,
    sni: Option<String>,
    hello_scanned: bool,
}

/// Why the stream stopped working.
#[derive(Debug, Clone)]
enum Failed {
    Tls(rustls::Error),
    Io(io::ErrorKind, String),
}

impl Failed {
    fn to_io(&self) -> io::Error {
        match self {
            Self::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, e.clone()),
            Self::Io(kind, msg) => io::Error::new(*kind, msg.clone()),
        }
    }
}

/// What [`TlsStream::pump`] is asked for.
enum Want<'a, 'b> {
    /// Plaintext into this buffer.
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt (a prefix of) this plaintext.
    Write(&'a [u8]),
    /// Queue a close_notify.
    Close,
    /// Progress on the handshake.
    Handshake,
}

/// What [`TlsStream::pump`] achieved.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Plaintext was put in the read buffer.
    Read,
    /// This much plaintext was encrypted into `tx`.
    Wrote(usize),
    /// The close_notify is in `tx`.
    Closed,
    /// Nothing more can happen without more bytes from the peer.
    NeedInput,
    /// The peer ended its side: no more plaintext will come.
    PeerDone,
}

/// Runs a server handshake on `io` under `config`. The server name, ALPN
/// and client certificate are known when it returns.
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream {
        io,
        conn,
        rx: Vec::new(),
        plain: VecDeque::new(),
        plain_pos: 0,
        tx: Vec::new(),
        tx_pos: 0,
        read_hint: 0,
        read_waker: None,
        read_done: false,
        close_sent: false,
        failed: None,
        sni: None,
        hello_scanned: false,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<IO> TlsStream<IO> {
    /// The server name the client asked for (lower case, no trailing dot).
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The protocol ALPN chose.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The client's certificate chain, when it sent one that verified.
    pub fn peer_certificates(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The negotiated cipher suite.
    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The socket under the TLS.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Heap bytes this stream holds in its own buffers (not rustls' state):
    /// zero between messages.
    pub fn buffered_capacity(&self) -> usize {
        self.rx.capacity()
            + self.tx.capacity()
            + self.plain.iter().map(Vec::capacity).sum::<usize>()
    }

    fn fail(&mut self, f: Failed) -> io::Error {
        let e = f.to_io();
        self.failed = Some(f);
        e
    }

    /// Drives rustls until `want` is met or more input is needed.
    fn pump(&mut self, mut want: Want<'_, '_>) -> io::Result<Pumped> {
        if let Some(f) = &self.failed {
            return Err(f.to_io());
        }
        loop {
            let Self {
                conn,
                rx,
                plain,
                tx,
                read_waker,
                read_done,
                close_sent,
                ..
            } = self;
            let status = conn.process_tls_records(rx);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    return Err(self.tls_failed(discard, e));
                }
            };
            let outcome = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    let mut delivered = false;
                    while let Some(record) = records.next_record() {
                        let record = match record {
                            Ok(r) => r,
                            Err(e) => {
                                drop(records);
                                return Err(self.tls_failed(discard, e));
                            }
                        };
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Want::Read(dst) = &mut want
                            && !delivered
                            && plain.is_empty()
                            && !payload.is_empty()
                        {
                            let n = payload.len().min(dst.remaining());
                            dst.put_slice(&payload[..n]);
                            payload = &payload[n..];
                            delivered = true;
                        }
                        if !payload.is_empty() {
                            plain.push_back(payload.to_vec());
                        }
                    }
                    if !delivered
                        && !plain.is_empty()
                        && let Some(w) = read_waker.take()
                    {
                        w.wake();
                    }
                    match want {
                        Want::Read(_) if delivered => Some(Pumped::Read),
                        _ => None,
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    let start = tx.len();
                    let need = match data.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => required_size,
                        Ok(_) | Err(_) => 0,
                    };
                    tx.resize(start + need, 0);
                    match data.encode(&mut tx[start..]) {
                        Ok(n) => tx.truncate(start + n),
                        Err(e) => {
                            tx.truncate(start);
                            let e = Failed::Io(io::ErrorKind::Other, format!("TLS encode: {e}"));
                            return Err(self.fail(e));
                        }
                    }
                    None
                }
                ConnectionState::TransmitTlsData(data) => {
                    // The bytes are at the end of `tx`, after everything
                    // queued before them: they leave in order.
                    data.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Pumped::NeedInput),
                ConnectionState::WriteTraffic(mut traffic) => match &want {
                    Want::Write(data) => {
                        let data = &data[..data.len().min(WRITE_CHUNK)];
                        let start = tx.len();
                        let records = data.len().div_ceil(16_384).max(1);
                        tx.resize(start + data.len() + records * 64, 0);
                        let mut r = traffic.encrypt(data, &mut tx[start..]);
                        if let Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) = r
                        {
                            tx.resize(start + required_size, 0);
                            r = traffic.encrypt(data, &mut tx[start..]);
                        }
                        match r {
                            Ok(n) => {
                                tx.truncate(start + n);
                                Some(Pumped::Wrote(data.len()))
                            }
                            Err(e) => {
                                tx.truncate(start);
                                let e = Failed::Io(io::ErrorKind::Other, format!("TLS: {e}"));
                                return Err(self.fail(e));
                            }
                        }
                    }
                    Want::Close => {
                        let start = tx.len();
                        tx.resize(start + 64, 0);
                        match traffic.queue_close_notify(&mut tx[start..]) {
                            Ok(n) => tx.truncate(start + n),
                            Err(_) => tx.truncate(start),
                        }
                        *close_sent = true;
                        Some(Pumped::Closed)
                    }
                    Want::Read(_) | Want::Handshake => Some(Pumped::NeedInput),
                },
                ConnectionState::PeerClosed => {
                    // Writing and closing go on after the peer's end.
                    *read_done = true;
                    match want {
                        Want::Write(_) | Want::Close => None,
                        Want::Read(_) | Want::Handshake => Some(Pumped::PeerDone),
                    }
                }
                ConnectionState::Closed => {
                    // Both ends closed: no room to encrypt ever again.
                    *read_done = true;
                    match want {
                        Want::Write(_) | Want::Close => {
                            discard_front(rx, discard);
                            return Err(io::ErrorKind::BrokenPipe.into());
                        }
                        Want::Read(_) | Want::Handshake => Some(Pumped::PeerDone),
                    }
                }
                ConnectionState::ReadEarlyData(_) => {
                    discard_front(rx, discard);
                    let e = Failed::Io(io::ErrorKind::InvalidData, "TLS early data".into());
                    return Err(self.fail(e));
                }
                _ => {
                    discard_front(rx, discard);
                    let e = Failed::Io(io::ErrorKind::Other, "TLS: unknown state".into());
                    return Err(self.fail(e));
                }
            };
            discard_front(rx, discard);
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    /// rustls failed on the received bytes: drops what it consumed, queues
    /// its alert and fails the stream.
    fn tls_failed(&mut self, discard: usize, e: rustls::Error) -> io::Error {
        discard_front(&mut self.rx, discard);
        self.queue_alert();
        self.fail(Failed::Tls(e))
    }

    /// After rustls failed: takes the alert it queued, if any, into `tx`
    /// (sent on a best-effort basis by the caller's next flush). rustls
    /// hands out queued bytes before it looks at received ones, and at the
    /// failure its queue held only the alert; it is asked once, since a
    /// second call would read the bad bytes again.
    fn queue_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut self.rx);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            let start = self.tx.len();
            self.tx.resize(start + 64, 0);
            match data.encode(&mut self.tx[start..]) {
                Ok(n) => self.tx.truncate(start + n),
                Err(_) => self.tx.truncate(start),
            }
        }
    }

    /// Frees the buffers that are empty: an idle connection holds none.
    /// The receive buffer only when the reader is about to wait (the
    /// caller of a read that delivered usually reads again at once).
    fn release(&mut self, waiting: bool) {
        if waiting && self.rx.is_empty() && self.rx.capacity() != 0 && !self.conn.is_handshaking() {
            self.rx = Vec::new();
        }
        if self.tx_pos == self.tx.len() && self.tx.capacity() != 0 {
            self.tx = Vec::new();
            self.tx_pos = 0;
        }
        if self.plain.is_empty() && self.plain.capacity() != 0 {
            self.plain = VecDeque::new();
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Reads more TLS bytes from the socket into `rx`: at least the rest of
    /// the record `rx` ends in (a large record takes one read, not four),
    /// and as much as [`Self::read_hint`] says a transfer is sending.
    /// `Ok(0)` is the TCP end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let have = self.rx.len();
        let hint = self.read_hint as usize;
        let want = last_record_missing(&self.rx)
            .map_or(hint, |missing| missing.max(hint))
            .max(READ_MIN)
            .min(RX_MAX.saturating_sub(have));
        if want == 0 {
            let e = Failed::Io(io::ErrorKind::InvalidData, "TLS message too large".into());
            return Poll::Ready(Err(self.fail(e)));
        }
        if self.rx.capacity() == 0 && want <= READ_MIN {
            // No buffer (it was given back at the last wait): read on the
            // stack first, so a wake that finds nothing to read allocates
            // nothing. A relay's task is woken for either of its
            // connections and polls both readers: one of them finds its
            // socket empty on most wakes.
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_MIN];
            let mut rb = ReadBuf::uninit(&mut stack[..want]);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if !got.is_empty() {
                self.rx.reserve_exact(want);
                self.rx.extend_from_slice(got);
            }
            self.read_hint = next_read_hint(want, got.len());
            return Poll::Ready(Ok(got.len()));
        }
        // Into the spare capacity, unzeroed (tokio-util does the
        // bookkeeping of what the read initialized).
        self.rx.reserve_exact(want);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rx
        ))?;
        self.read_hint = next_read_hint(want, n);
        Poll::Ready(Ok(n))
    }

    /// Writes `tx` out; `Ready(Ok)` once it is all on the socket.
    fn poll_flush_tx(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx_pos < self.tx.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.tx[self.tx_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.tx_pos += n;
        }
        self.tx = Vec::new();
        self.tx_pos = 0;
        Poll::Ready(Ok(()))
    }

    /// Before a reader waits or sees the end: what waits in `tx` (the
    /// handshake's tickets, the answer to a key update, an alert, data a
    /// writer queued) goes out as far as the socket takes it now; a full
    /// socket is the writer's concern.
    fn send_queued(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.tx_pos < self.tx.len()
            && let Poll::Ready(Err(e)) = self.poll_flush_tx(cx)
        {
            return Err(e);
        }
        Ok(())
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.hello_scanned {
                match client_hello::scan(&self.rx) {
                    Scan::NeedMore => {}
                    Scan::Done(name) => {
                        self.sni = name;
                        self.hello_scanned = true;
                    }
                    Scan::Invalid => self.hello_scanned = true,
                }
            }
            if self.hello_scanned {
                let pumped = match self.pump(Want::Handshake) {
                    Ok(p) => p,
                    Err(e) => {
                        // The alert, if the socket takes it now.
                        let _ = self.poll_flush_tx(cx);
                        return Poll::Ready(Err(e));
                    }
                };
                // A close_notify right behind the client's Finished (a
                // client that only wanted a session ticket) ends a finished
                // handshake: the tickets still go out, and the first read
                // sees the end.
                if pumped == Pumped::PeerDone && self.conn.is_handshaking() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the TLS handshake",
                    )));
                }
            }
            if self.hello_scanned && !self.conn.is_handshaking() {
                // TLS 1.3 ends at the client's Finished, and what rustls
                // queued then is the session tickets, which no client
                // waits for: they leave with the first response, or when
                // the first read has to wait. TLS 1.2's last flight is the
                // server's Finished, which the client does wait for.
                if self.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
                    ready!(self.poll_flush_tx(cx))?;
                }
                self.release(true);
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_flush_tx(cx))?;
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                )));
            }
        }
    }
}

/// Drops the `n` bytes rustls consumed from the front of `rx`.
fn discard_front(rx: &mut Vec<u8>, n: usize) {
    rx.drain(..n.min(rx.len()));
}

/// The next read's size after a read of `want` bytes got `got`: twice as
/// much when it got all (the socket likely holds more), half as much when
/// it got less, never below what it got; within [`READ_MIN`] and
/// [`READ_BULK`].
fn next_read_hint(want: usize, got: usize) -> u32 {
    let next = if got >= want {
        want.saturating_mul(2)
    } else {
        (want / 2).max(got)
    };
    // Both bounds are far below u32::MAX.
    next.clamp(READ_MIN, READ_BULK) as u32
}

/// When `rx` ends inside a record: how many bytes that record still
/// misses. `None` when it ends on a record boundary or inside a header.
fn last_record_missing(rx: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let header = rx.get(at..at + 5)?;
        let end = at + 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if end > rx.len() {
            return Some(end - rx.len());
        }
        at = end;
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(front) = this.plain.front() {
                let n = (front.len() - this.plain_pos).min(buf.remaining());
                buf.put_slice(&front[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == front.len() {
                    this.plain.pop_front();
                    this.plain_pos = 0;
                }
                this.release(false);
                return Poll::Ready(Ok(()));
            }
            if this.read_done {
                // The peer is done sending; it may still read what waits.
                this.send_queued(cx)?;
                return Poll::Ready(Ok(()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let pumped = match this.pump(Want::Read(buf)) {
                Ok(p) => p,
                Err(e) => {
                    // The alert rustls queued, if the socket takes it now.
                    let _ = this.send_queued(cx);
                    return Poll::Ready(Err(e));
                }
            };
            match pumped {
                Pumped::Read => {
                    this.release(false);
                    return Poll::Ready(Ok(()));
                }
                Pumped::PeerDone => {
                    this.read_done = true;
                    continue;
                }
                Pumped::NeedInput | Pumped::Wrote(_) | Pumped::Closed => {}
            }
            if !this.plain.is_empty() {
                continue;
            }
            match this.poll_fill(cx) {
                Poll::Pending => {
                    this.send_queued(cx)?;
                    match &this.read_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => this.read_waker = Some(cx.waker().clone()),
                    }
                    this.release(true);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    this.read_done = true;
                    this.send_queued(cx)?;
                    if this.rx.is_empty() {
                        // The TCP end between records: the end of the
                        // stream (HTTP and WebSocket frame their own ends).
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS record cut short by the end of the connection",
                    )));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tx.len() - this.tx_pos >= TX_HIGH {
            ready!(this.poll_flush_tx(cx))?;
        }
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = match this.pump(Want::Write(data))? {
            Pumped::Wrote(n) => n,
            other => {
                return Poll::Ready(Err(io::Error::other(format!(
                    "TLS: no room to write ({other:?})"
                ))));
            }
        };
        // Out once a full batch is queued, or at the caller's flush (hyper
        // and the WebSocket connection flush once nothing more is at hand;
        // a read about to wait sends what waits, too): a frame written in
        // pieces (its head and first record, then the rest from the
        // sender's buffer) leaves in one system call instead of one per
        // piece.
        if this.tx.len() - this.tx_pos >= TX_HIGH
            && let Poll::Ready(Err(e)) = this.poll_flush_tx(cx)
        {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent && this.failed.is_none() {
            // A peer that already closed both ends leaves nothing to tell.
            match this.pump(Want::Close) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            this.close_sent = true;
        }
        ready!(this.poll_flush_tx(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sni", &self.sni)
            .field("rx", &self.rx.len())
            .field("tx", &(self.tx.len() - self.tx_pos))
            .field("read_done", &self.read_done)
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;
    use crate::edge::tls::{CertResolver, LocalCa, Tls, local_ca};

    fn server() -> (Tls, LocalCa) {
        let ca = local_ca(&["plc-1.gw.example".into()]).unwrap();
        let tls = Tls::new(
            CertResolver::new(vec![ca.pair().unwrap()]),
            Duration::from_secs(5),
        );
        (tls, ca)
    }

    fn client_config(
        ca: &LocalCa,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// A handshaken pair over an in-memory pipe of `pipe` bytes.
    async fn pair(
        versions: &[&'static rustls::SupportedProtocolVersion],
        pipe: usize,
    ) -> (
        TlsStream<DuplexStream>,
        tokio_rustls::client::TlsStream<DuplexStream>,
    ) {
        let (tls, ca) = server();
        let (a, b) = duplex(pipe);
        let connector = tokio_rustls::TlsConnector::from(client_config(&ca, versions));
        let name = ServerName::try_from("PLC-1.gw.example").unwrap();
        let (s, c) = tokio::join!(tls.accept(a), connector.connect(name, b));
        (s.unwrap(), c.unwrap())
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// `len` bytes from the client, then `len` back from the server;
    /// whether each side read what the other wrote.
    async fn exchange(
        s: &mut TlsStream<DuplexStream>,
        c: &mut tokio_rustls::client::TlsStream<DuplexStream>,
        len: usize,
        seed: u8,
    ) -> (bool, bool) {
        let (up, down) = (pattern(len, seed), pattern(len, seed.wrapping_add(100)));
        let (mut got_up, mut got_down) = (vec![0; len], vec![0; len]);
        let server = async {
            s.read_exact(&mut got_up).await.unwrap();
            s.write_all(&down).await.unwrap();
            s.flush().await.unwrap();
        };
        let client = async {
            c.write_all(&up).await.unwrap();
            c.flush().await.unwrap();
            c.read_exact(&mut got_down).await.unwrap();
        };
        tokio::join!(server, client);
        (got_up == up, got_down == down)
    }

    #[tokio::test]
    async fn data_crosses_both_ways_and_an_idle_stream_holds_no_buffers() {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let (mut s, mut c) = pair(versions, 64 * 1024).await;
            assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert_eq!(s.server_name(), Some("plc-1.gw.example"));
            // The server's order: AES-128-GCM first, whatever the client
            // (rustls: AES-256-GCM first) prefers.
            let suite = s.negotiated_cipher_suite().unwrap().suite();
            assert!(
                matches!(
                    suite,
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                ),
                "{suite:?}"
            );
            // Past the handshake nothing is buffered but, under TLS 1.3,
            // the tickets, which wait for the first response.
            let tickets = s.tx.len() - s.tx_pos;
            assert_eq!(s.buffered_capacity(), s.tx.capacity(), "{s:?}");
            if versions[0] == &rustls::version::TLS13 {
                assert!(tickets > 0, "{s:?}");
            } else {
                assert_eq!(tickets, 0, "{s:?}");
            }
            for (i, len) in [1usize, 64, 16_384, 16_385, 100_000, 1 << 20]
                .into_iter()
                .enumerate()
            {
                let (up, down) = exchange(&mut s, &mut c, len, i as u8).await;
                assert!(up, "{len} bytes up");
                assert!(down, "{len} bytes down");
                // Waiting for the next message, it holds nothing.
                let mut one = [0u8; 1];
                let wait = tokio::time::timeout(Duration::from_millis(5), s.read(&mut one));
                assert!(wait.await.is_err(), "nothing more was sent");
                assert_eq!(s.buffered_capacity(), 0, "idle after {len} bytes: {s:?}");
            }
        }
    }

    /// TLS 1.3's AES-GCM suites record on AWS-LC (`super::super::gcm`), and
    /// a ring client (what the records must interoperate with) reads and
    /// writes through them: records of one byte, full ones and many.
    #[tokio::test]
    async fn aes_gcm_records_are_aws_lc_and_a_ring_client_reads_them() {
        use rustls::crypto::ring::cipher_suite as ring_suites;
        for (ring, ours) in [
            (
                ring_suites::TLS13_AES_128_GCM_SHA256,
                &*crate::edge::gcm::TLS13_AES_128_GCM_SHA256,
            ),
            (
                ring_suites::TLS13_AES_256_GCM_SHA384,
                &*crate::edge::gcm::TLS13_AES_256_GCM_SHA384,
            ),
        ] {
            let (tls, ca) = server();
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = vec![ring];
            let cfg = ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let (a, b) = duplex(64 * 1024);
            let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
            let name = ServerName::try_from("PLC-1.gw.example").unwrap();
            let (s, c) = tokio::join!(tls.accept(a), connector.connect(name, b));
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let negotiated = s.negotiated_cipher_suite().unwrap();
            assert_eq!(negotiated.suite(), ring.suite());
            let aead = negotiated.tls13().unwrap().aead_alg;
            assert!(
                std::ptr::addr_eq(aead, ours.tls13().unwrap().aead_alg),
                "ring's records"
            );
            for (i, len) in [1usize, 16_384, 100_000].into_iter().enumerate() {
                let (up, down) = exchange(&mut s, &mut c, len, i as u8).await;
                assert!(up && down, "{len} bytes, {:?}", ring.suite());
            }
        }
    }

    /// The handshake's key exchange is the gateway's X25519 on AWS-LC
    /// (`super::super::kx`), not ring's, under both TLS versions.
    #[tokio::test]
    async fn the_key_exchange_is_x25519_on_aws_lc() {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let (s, _c) = pair(versions, 64 * 1024).await;
            let group = s.conn.negotiated_key_exchange_group().unwrap();
            assert_eq!(group.name(), rustls::NamedGroup::X25519);
            assert_eq!(format!("{group:?}"), "X25519Group", "ring's group was used");
        }
    }

    /// A socket that counts the reads that returned bytes, and the writes.
    struct Counted {
        io: DuplexStream,
        reads: Arc<std::sync::atomic::AtomicUsize>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Counted {
        fn new(io: DuplexStream) -> Self {
            Self {
                io,
                reads: Arc::default(),
                writes: Arc::default(),
            }
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let r = Pin::new(&mut self.io).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            r
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.io).poll_write(cx, data);
            if let Poll::Ready(Ok(n)) = r
                && n > 0
            {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// A transfer that keeps the socket full is read several records per
    /// system call; a small message after it still arrives whole, and the
    /// stream holds no buffer once it waits again.
    #[tokio::test]
    async fn a_full_socket_is_read_several_records_at_a_time() {
        let (tls, ca) = server();
        let (a, b) = duplex(4 << 20);
        let counted = Counted::new(a);
        let reads = counted.reads.clone();
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&ca, &[&rustls::version::TLS13]));
        let name = ServerName::try_from("plc-1.gw.example").unwrap();
        let (s, c) = tokio::join!(tls.accept(counted), connector.connect(name, b));
        let (mut s, mut c) = (s.unwrap(), c.unwrap());
        let big = pattern(1 << 20, 7);
        c.write_all(&big).await.unwrap();
        c.flush().await.unwrap();
        let before = reads.load(std::sync::atomic::Ordering::Relaxed);
        let mut got = vec![0u8; big.len()];
        s.read_exact(&mut got).await.unwrap();
        assert!(got == big);
        let bulk_reads = reads.load(std::sync::atomic::Ordering::Relaxed) - before;
        // 64 records of 16 KiB: a read per record (or two) took 64 to 128
        // reads; four records per read after the first few, about 22.
        assert!(bulk_reads <= 32, "{bulk_reads} reads for 64 records");
        c.write_all(b"small after bulk").await.unwrap();
        c.flush().await.unwrap();
        let mut small = [0u8; 16];
        s.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"small after bulk");
        let mut one = [0u8; 1];
        let wait = tokio::time::timeout(Duration::from_millis(5), s.read(&mut one));
        assert!(wait.await.is_err(), "nothing more was sent");
        assert_eq!(s.buffered_capacity(), 0, "{s:?}");
    }

    /// Drives a client's handshake over `b` until rustls says it is done;
    /// its last flight (TLS 1.3: the Finished) is still queued in `conn`.
    async fn client_handshake(conn: &mut ClientConnection, b: &mut DuplexStream) {
        let mut buf = vec![0u8; 32 * 1024];
        while conn.is_handshaking() {
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            b.write_all(&out).await.unwrap();
            if conn.is_handshaking() {
                let n = b.read(&mut buf).await.unwrap();
                conn.read_tls(&mut &buf[..n]).unwrap();
                conn.process_new_packets().unwrap();
            }
        }
    }

    /// TLS 1.3's tickets leave with the first response, in one write: a
    /// handshake and a request/response cost the server two writes, not
    /// three, and the client still resumes with the tickets. A client that
    /// sends nothing gets them when the server's read waits.
    #[tokio::test]
    async fn the_tickets_leave_with_the_first_response() {
        let (tls, ca) = server();
        let mut cfg = (*client_config(&ca, &[&rustls::version::TLS13])).clone();
        cfg.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let name = ServerName::try_from("plc-1.gw.example").unwrap();
        for round in 0..2 {
            let (a, b) = duplex(64 * 1024);
            let counted = Counted::new(a);
            let writes = counted.writes.clone();
            let (s, c) = tokio::join!(tls.accept(counted), connector.connect(name.clone(), b));
            let (mut s, mut c) = (s.unwrap(), c.unwrap());
            let kind = c.get_ref().1.handshake_kind();
            let want = [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed][round];
            assert_eq!(kind, Some(want), "round {round}");
            // The request is there when the server reads (a browser
            // sends it right behind its Finished).
            c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            c.flush().await.unwrap();
            let mut req = [0u8; 18];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            s.flush().await.unwrap();
            let mut resp = [0u8; 27];
            c.read_exact(&mut resp).await.unwrap();
            assert_eq!(&resp[..12], b"HTTP/1.1 204");
            // The server's flight, then the tickets with the response.
            assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 2);
        }
        // A client that only listens: the server's read waits, and the
        // tickets go before it does.
        let (a, mut b) = duplex(64 * 1024);
        let cfg = client_config(&ca, &[&rustls::version::TLS13]);
        let mut conn = ClientConnection::new(cfg, name.clone()).unwrap();
        let client = async {
            let mut buf = vec![0u8; 32 * 1024];
            client_handshake(&mut conn, &mut b).await;
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            b.write_all(&out).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), b.read(&mut buf))
                .await
                .expect("the tickets did not come")
                .unwrap();
            conn.read_tls(&mut &buf[..n]).unwrap();
            conn.process_new_packets().unwrap();
            n
        };
        let server = async {
            let mut s = tls.accept(a).await.unwrap();
            let mut one = [0u8; 1];
            let wait = tokio::time::timeout(Duration::from_millis(300), s.read(&mut one));
            assert!(wait.await.is_err(), "the client sent nothing");
            assert_eq!(s.buffered_capacity(), 0, "{s:?}");
        };
        let (n, ()) = tokio::join!(client, server);
        assert!(n > 0);
    }

    /// The read size grows while reads fill and falls back when they do not.
    #[test]
    fn read_sizes_follow_what_the_socket_held() {
        assert_eq!(next_read_hint(READ_MIN, READ_MIN) as usize, 2 * READ_MIN);
        assert_eq!(next_read_hint(READ_BULK, READ_BULK) as usize, READ_BULK);
        assert_eq!(next_read_hint(40_000, 40_000) as usize, READ_BULK);
        assert_eq!(next_read_hint(40_000, 30_000), 30_000);
        assert_eq!(next_read_hint(40_000, 100), 20_000);
        assert_eq!(next_read_hint(READ_MIN, 100) as usize, READ_MIN);
        // A read may get more than it asked (the buffer's spare room).
        assert_eq!(next_read_hint(2_000, 9_000), 4_000);
    }

    /// Whether nothing arrives at `c` for a moment.
    async fn nothing_arrives(c: &mut tokio_rustls::client::TlsStream<DuplexStream>) -> bool {
        let mut one = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(150), c.read(&mut one))
            .await
            .is_err()
    }

    /// Encrypted bytes wait for the caller's flush, unless a full batch is
    /// queued: a frame written in pieces (its head and first record, then
    /// the rest) leaves in one write, not one per piece.
    #[tokio::test]
    async fn writes_wait_for_the_flush_or_a_full_batch() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13], 1 << 20).await;
        s.write_all(b"small").await.unwrap();
        assert!(nothing_arrives(&mut c).await, "sent before the flush");
        s.flush().await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"small");

        let (head, rest) = (pattern(16 * 1024, 1), pattern(48 * 1024, 2));
        s.write_all(&head).await.unwrap();
        assert!(nothing_arrives(&mut c).await, "the first piece went alone");
        // The batch is full: both pieces go now, without a flush.
        s.write_all(&rest).await.unwrap();
        let mut got = vec![0u8; head.len() + rest.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut got))
            .await
            .expect("a full batch is written without a flush")
            .unwrap();
        assert_eq!(&got[..head.len()], &head[..]);
        assert_eq!(&got[head.len()..], &rest[..]);
    }

    #[tokio::test]
    async fn close_notify_ends_reads_and_shutdown_sends_one() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13], 4096).await;
        c.write_all(b"last words").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        // Writing after the peer's close_notify still works, then ours.
        s.write_all(b"reply").await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        // A clean close_notify: read_to_end sees no UnexpectedEof.
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        assert!(
            s.write_all(b"more").await.is_err(),
            "write after our close_notify"
        );
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_answered_in_order() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
        for round in 0..3u8 {
            // The client asks for new keys both ways (update_requested).
            c.get_mut().1.refresh_traffic_keys().unwrap();
            c.write_all(&[round; 300]).await.unwrap();
            c.flush().await.unwrap();
            let mut got = [0u8; 300];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round; 300]);
            // Our answer goes out before our data, under the old keys; the
            // data under the new ones: the client reads it.
            s.write_all(&[round + 10; 500]).await.unwrap();
            s.flush().await.unwrap();
            let mut back = [0u8; 500];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round + 10; 500]);
        }
    }

    #[tokio::test]
    async fn data_a_write_decrypts_waits_for_the_reader() {
        // Two records in one delivery: the first read takes the first; a
        // write then makes rustls decrypt the second, which must not be
        // lost.
        let (tls, ca) = server();
        let (a, mut b) = duplex(64 * 1024);
        let cfg = client_config(&ca, &[&rustls::version::TLS13]);
        let mut conn =
            ClientConnection::new(cfg, ServerName::try_from("plc-1.gw.example").unwrap()).unwrap();
        let client = async {
            client_handshake(&mut conn, &mut b).await;
            io::Write::write_all(&mut conn.writer(), b"first").unwrap();
            io::Write::write_all(&mut conn.writer(), b"second").unwrap();
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            b.write_all(&out).await.unwrap();
        };
        let (s, ()) = tokio::join!(tls.accept(a), client);
        let mut s = s.unwrap();
        let mut first = [0u8; 5];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"first");
        s.write_all(b"x").await.unwrap();
        let mut second = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut second))
            .await
            .expect("the second record was lost")
            .unwrap();
        assert_eq!(&second, b"second");
    }

    #[tokio::test]
    async fn a_close_notify_behind_the_finished_still_gets_its_tickets() {
        let (tls, ca) = server();
        let mut cfg = (*client_config(&ca, &[&rustls::version::TLS13])).clone();
        cfg.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let cfg = Arc::new(cfg);
        for round in 0..2 {
            let (a, mut b) = duplex(64 * 1024);
            let mut conn = ClientConnection::new(
                cfg.clone(),
                ServerName::try_from("plc-1.gw.example").unwrap(),
            )
            .unwrap();
            let client = async {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let mut out = Vec::new();
                    while conn.wants_write() {
                        conn.write_tls(&mut out).unwrap();
                    }
                    if !conn.is_handshaking() {
                        // The Finished and the close_notify in one delivery.
                        conn.send_close_notify();
                        while conn.wants_write() {
                            conn.write_tls(&mut out).unwrap();
                        }
                        b.write_all(&out).await.unwrap();
                        break;
                    }
                    b.write_all(&out).await.unwrap();
                    let n = b.read(&mut buf).await.unwrap();
                    conn.read_tls(&mut &buf[..n]).unwrap();
                    conn.process_new_packets().unwrap();
                }
                // Read what the server sends until it closes: the tickets.
                loop {
                    let n = b.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    conn.read_tls(&mut &buf[..n]).unwrap();
                    conn.process_new_packets().unwrap();
                }
                conn.handshake_kind()
            };
            let server = async {
                let mut s = tls.accept(a).await.expect("a finished handshake");
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
                s.shutdown().await.unwrap();
            };
            let (kind, ()) = tokio::join!(client, server);
            let want = if round == 0 {
                rustls::HandshakeKind::Full
            } else {
                rustls::HandshakeKind::Resumed
            };
            assert_eq!(kind, Some(want), "round {round}");
        }
    }

    #[tokio::test]
    async fn a_forged_record_fails_the_stream_with_an_alert() {
        let (mut s, mut c) = pair(&[&rustls::version::TLS13], 4096).await;
        // An application-data record no key made.
        let mut forged = vec![23, 3, 3, 0, 40];
        forged.extend([0x5a; 40]);
        c.get_mut().0.write_all(&forged).await.unwrap();
        let mut buf = [0u8; 16];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // It stays failed, for reads and writes alike.
        assert!(s.read(&mut buf).await.is_err());
        assert!(s.write_all(b"x").await.is_err());
        // The client got the alert.
        let err = c.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("BadRecordMac"), "{err}");
    }

    #[tokio::test]
    async fn random_bytes_after_the_handshake_fail_cleanly() {
        // Whatever follows the handshake, a read ends in an error or the
        // end of the stream: no panic, no hang.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..64 {
            let (mut s, mut c) = pair(&[&rustls::version::TLS13], 64 * 1024).await;
            let len = (next() % 300) as usize + 1;
            let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the rounds look like records (a valid type and version).
            if round % 2 == 0 && junk.len() >= 5 {
                junk[0] = [20, 21, 22, 23][(next() % 4) as usize];
                junk[1..3].copy_from_slice(&[3, 3]);
            }
            c.get_mut().0.write_all(&junk).await.unwrap();
            c.get_mut().0.shutdown().await.unwrap();
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(r.is_ok(), "round {round}: the read hung on {junk:?}");
        }
    }

    #[tokio::test]
    async fn handshake_failures_are_errors() {
        let (tls, _) = server();
        // The peer leaves in the middle of its ClientHello.
        let (a, mut b) = duplex(4096);
        b.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252]).await.unwrap();
        drop(b);
        let err = tls.accept(a).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        // A record longer than TLS allows.
        let (a, mut b) = duplex(4096);
        b.write_all(&[22, 3, 1, 0xff, 0xff]).await.unwrap();
        b.write_all(&[0; 1000]).await.unwrap();
        let err = tls.accept(a).await.unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn the_missing_part_of_the_last_record_is_known() {
        assert_eq!(last_record_missing(&[]), None);
        assert_eq!(last_record_missing(&[23, 3, 3]), None);
        assert_eq!(last_record_missing(&[23, 3, 3, 0, 10, 1, 2]), Some(8));
        let mut two = vec![23, 3, 3, 0, 2, 1, 2];
        assert_eq!(last_record_missing(&two), None);
        two.extend([23, 3, 3, 0x40, 0]);
        assert_eq!(last_record_missing(&two), Some(0x4000));
    }
}
