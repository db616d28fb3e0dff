//! A second look at HTTP/1.1 request framing, on the decrypted bytes
//! before hyper parses them, for the one ambiguity hyper accepts: a
//! request with both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper follows RFC 9112 §6.3 there (the chunked coding wins, the
//! connection closes after the response), so the message itself cannot
//! desynchronize the gateway. But such a request is a smuggling attempt or
//! a broken intermediary, and it would still reach a device. The RFC
//! allows refusing it; the gateway does, with 400 `ambiguous_framing`, and
//! the device never sees it.
//!
//! [`Framing`] follows the byte stream as hyper will: heads (up to
//! `max_head` bytes, found by their blank line and parsed with httparse),
//! then the body by `Content-Length` or the chunked coding. A head with
//! both fields marks its request by number ([`Verdict::first_bad`]);
//! anything it cannot follow (a parse error hyper will refuse anyway, an
//! upgrade, HTTP/2) ends the watch for the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What [`Framing`] found, shared with the connection's service.
#[derive(Debug)]
pub struct Verdict {
    first_bad: AtomicU64,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            first_bad: AtomicU64::new(u64::MAX),
        }
    }
}

impl Verdict {
    /// Whether request number `n` (from 0, in connection order) or one
    /// before it had both `Content-Length` and `Transfer-Encoding`.
    pub fn is_bad(&self, n: u64) -> bool {
        n >= self.first_bad.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a head.
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not watching any more.
    Done,
}

#[derive(Debug)]
enum Chunk {
    /// The size line so far.
    Size(Vec<u8>),
    /// Data bytes left, then CRLF.
    Data(u64),
    /// The CRLF after the data: bytes of it still expected.
    DataEnd(u8),
    /// Trailer lines, then a blank line; the current line so far.
    Trailers(Vec<u8>),
}

/// Reads through `inner`, following the framing of the requests in it.
#[derive(Debug)]
pub struct Framing<I> {
    inner: I,
    state: State,
    max_head: usize,
    heads: u64,
    verdict: Arc<Verdict>,
}

impl<I> Framing<I> {
    /// Watches `inner` (decrypted HTTP/1.1) for heads up to `max_head` bytes.
    pub fn new(inner: I, max_head: usize, verdict: Arc<Verdict>) -> Self {
        Self {
            inner,
            state: State::Head(Vec::new()),
            max_head,
            heads: 0,
            verdict,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match &mut self.state {
                State::Done => return,
                State::Head(buf) => {
                    let from = buf.len().saturating_sub(3);
                    buf.extend_from_slice(data);
                    let Some(end) = find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
                        if buf.len() > self.max_head {
                            self.state = State::Done;
                        }
                        return;
                    };
                    let used = data.len() - (buf.len() - end);
                    let head = std::mem::take(buf);
                    self.state = self.head(&head[..end]);
                    used
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                    n as usize
                }
                State::Chunked(c) => match chunk(c, data) {
                    Some((used, next)) => {
                        if let Some(s) = next {
                            self.state = s;
                        }
                        used
                    }
                    None => {
                        self.state = State::Done;
                        return;
                    }
                },
            };
            data = &data[used..];
        }
    }

    /// The state after a complete head.
    fn head(&mut self, head: &[u8]) -> State {
        // Blank lines before a request line are allowed (RFC 9112 §2.2).
        let trimmed = head.iter().position(|&b| b != b'\r' && b != b'\n');
        let Some(start) = trimmed else {
            return State::Head(Vec::new());
        };
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut fields);
        if !matches!(req.parse(&head[start..]), Ok(httparse::Status::Complete(_))) {
            return State::Done;
        }
        let n = self.heads;
        self.heads += 1;
        let (mut cl, mut te, mut upgrade) = (None, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if cl.is_none() {
                    return State::Done;
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if te && cl.is_some() {
            self.verdict.first_bad.fetch_min(n, Ordering::Relaxed);
            return State::Done;
        }
        if upgrade || req.method == Some("CONNECT") {
            return State::Done;
        }
        match (te, cl) {
            (true, _) => State::Chunked(Chunk::Size(Vec::new())),
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head(Vec::new()),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Longest chunk-size line followed (size, extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Advances a chunked body over `data`: bytes used and, when the body
/// changes state, the next state; `None` when it cannot be followed.
fn chunk(c: &mut Chunk, data: &[u8]) -> Option<(usize, Option<State>)> {
    match c {
        Chunk::Size(line) => {
            let Some(i) = data.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(data);
                return (line.len() <= MAX_CHUNK_LINE).then_some((data.len(), None));
            };
            line.extend_from_slice(&data[..i]);
            let text = std::str::from_utf8(line).ok()?;
            let hex = text.trim_end_matches('\r').split(';').next()?.trim();
            let size = u64::from_str_radix(hex, 16).ok()?;
            *c = if size == 0 {
                Chunk::Trailers(Vec::new())
            } else {
                Chunk::Data(size)
            };
            Some((i + 1, None))
        }
        Chunk::Data(left) => {
            let n = (*left).min(data.len() as u64);
            *left -= n;
            if *left == 0 {
                *c = Chunk::DataEnd(2);
            }
            Some((n as usize, None))
        }
        Chunk::DataEnd(left) => {
            let n = usize::from(*left).min(data.len());
            *left -= n as u8;
            if *left == 0 {
                *c = Chunk::Size(Vec::new());
            }
            Some((n, None))
        }
        Chunk::Trailers(line) => {
            let Some(i) = data.iter().position(|&b| b == b'\n') else {
                line.extend_from_slice(data);
                return (line.len() <= MAX_CHUNK_LINE).then_some((data.len(), None));
            };
            line.extend_from_slice(&data[..i]);
            let blank = line.iter().all(|&b| b == b'\r');
            line.clear();
            let next = blank.then(|| State::Head(Vec::new()));
            Some((i + 1, next))
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Framing<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if !matches!(self.state, State::Done) && buf.filled().len() > before {
            self.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Framing<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(stream: &[u8], split: usize) -> (Arc<Verdict>, u64) {
        let v = Arc::new(Verdict::default());
        let mut f = Framing::new(tokio::io::empty(), 16 << 10, v.clone());
        for part in stream.chunks(split) {
            f.feed(part);
        }
        let heads = f.heads;
        (v, heads)
    }

    #[test]
    fn follows_bodies_and_flags_cl_with_te() {
        let stream = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
            5;ext\r\nGET /\r\n0\r\nx-trailer: 1\r\n\r\n\
            GET /c HTTP/1.1\r\nhost: x\r\n\r\n\
            POST /d HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1, 2, 7, 1000] {
            let (v, heads) = verdict(stream, split);
            assert_eq!(heads, 4, "split {split}");
            assert!(!v.is_bad(2), "split {split}");
            assert!(v.is_bad(3), "split {split}");
        }
    }

    #[test]
    fn stops_at_upgrades_and_garbage() {
        let (v, heads) = verdict(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n\r\n\
              POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            5,
        );
        assert_eq!(heads, 1);
        assert!(!v.is_bad(5));
        let (_, heads) = verdict(b"\x16\x03\x01garbage\r\n\r\nGET / HTTP/1.1\r\n\r\n", 3);
        assert_eq!(heads, 0);
    }
}
