//! The gateway's own HTTP/2 server (RFC 9113) for browsers that chose
//! `h2` in TLS: a frame driver in the connection's task, HPACK, and the
//! extended CONNECT of RFC 8441 that carries WebSockets as streams.
//!
//! ```text
//!  TLS stream ─▶ Conn (driver, in the connection's task)
//!     frames in ─▶ SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, GOAWAY: answered here
//!               ─▶ HEADERS (+ CONTINUATION) ─▶ HPACK ─▶ http::Request ─▶ a task: the bridge
//!               ─▶ DATA ─▶ the stream's receive buffer ─▶ the request body / the WebSocket
//!     frames out ◀─ control frames, then each ready stream's head and DATA,
//!                   within its window and the connection's, in one write per turn
//! ```
//!
//! # Why not hyper's
//!
//! hyper's HTTP/2 server (the `h2` crate) keeps per connection a 16 KiB
//! write buffer, an 8 KiB read buffer and a 4 KiB HPACK table allocated
//! from the start and never given back, and carries every byte of an
//! upgraded stream through a task of its own, a channel and a copy
//! (BENCHMARKS.md, "The browsers' path"). Browsers open their WebSockets
//! to this gateway as HTTP/2 streams, so an idle WebSocket cost about
//! 32 KB instead of the 7 KB it costs over HTTP/1.1. Here:
//!
//! - Reads land on the stack; only a frame cut by the end of a read is
//!   kept on the heap, until it is complete. The write buffer exists while
//!   bytes wait in it. A stream's receive and send buffers likewise.
//! - The response encoder keeps no table ([`hpack::encode_response`]): the
//!   client's decoder holds nothing for this connection.
//! - A WebSocket's bytes go from the driver straight into its stream's
//!   buffer, and from its writer into the next batch the driver writes: no
//!   task or channel between them.
//!
//! Plain-HTTP listeners (`h2c` by prior knowledge) stay on hyper.
//!
//! # Streams and flow control
//!
//! Each request runs on a task of its own ([`respond`]), which sends the
//! response head, body and trailers (a last HEADERS frame) through its
//! [`Stream`] handle; an extended
//! CONNECT's handle goes to the WebSocket's task once the 200 is queued
//! ([`Upgrade`]). A stream's receive window is 512 KiB and the
//! connection's 1 MiB, which bounds what a client can make the gateway
//! hold unread; bytes count as consumed when a handle reads them,
//! and WINDOW_UPDATEs go out once half a window was read. A writer may
//! queue 64 KiB per stream before it waits; the driver sends within the
//! client's windows, 16 KiB frames, ready streams in turn, and stops
//! reading while 64 KiB of its own output waits for the socket.
//!
//! # The client's errors
//!
//! Connection errors (a broken frame, HPACK that does not decode, a
//! window overflow, a header block past twice `max_header_bytes`) send
//! GOAWAY with their code and end the connection; stream errors (a
//! malformed request, a content-length that does not match, DATA past the
//! window) reset the stream and count in
//! `gateway_browser_malformed_requests_total`. A request whose head is
//! past `max_header_bytes` or `max_headers` gets 431. Rapid reset: the
//! client may reset `h2_max_pending_resets` plus `h2_max_concurrent_streams`
//! streams before their response, beyond those it let finish (each
//! response sent pays one back); past that, and past
//! `h2_max_local_error_resets` streams the gateway had to reset, GOAWAY
//! `ENHANCE_YOUR_CALM`. A client reset aborts its request's task.

mod conn;
mod frame;
mod hpack;
mod stream;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Response, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;
use tracing::debug;

pub(crate) use conn::{Conn, Dispatched, Settings};
pub(crate) use stream::Stream;

use crate::bridge::RequestBody;

/// An empty request body.
fn empty() -> RequestBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body: the stream's DATA as it arrives.
struct Body {
    stream: Stream,
    length: Option<u64>,
}

impl Body {
    fn new(stream: Stream, length: Option<u64>) -> Self {
        Self { stream, length }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.stream
            .poll_chunk(cx)
            .map(|c| c.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.length == Some(0) && self.stream.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// An extended CONNECT's stream, handed over once the response head is
/// queued (a request extension, taken by the bridge's WebSocket tasks).
#[derive(Clone)]
pub(crate) struct Upgrade(Arc<Mutex<Option<oneshot::Receiver<Stream>>>>);

impl Upgrade {
    fn new(rx: oneshot::Receiver<Stream>) -> Self {
        Self(Arc::new(Mutex::new(Some(rx))))
    }

    /// The stream, once answered; `None` if it was taken already.
    pub(crate) fn take(&self) -> Option<oneshot::Receiver<Stream>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Fields no HTTP/2 message carries (RFC 9113 §8.2.2): a request with one
/// is malformed, a response loses them.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A request's task: waits for `response`, then sends it on `stream`.
/// An extended CONNECT answered 2xx hands the stream to `upgrade` instead
/// of a body.
pub(crate) async fn respond<F>(
    stream: Stream,
    upgrade: Option<oneshot::Sender<Stream>>,
    method: Method,
    response: F,
) where
    F: Future<Output = Result<Response<crate::bridge::Body>, Infallible>>,
{
    let Ok(resp) = response.await;
    let (mut parts, body) = resp.into_parts();
    for name in CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    let status = parts.status.as_u16();
    if let Some(tx) = upgrade
        && parts.status.is_success()
    {
        parts.headers.remove(header::CONTENT_LENGTH);
        stream.detach();
        if stream.send_head(status, &parts.headers, false).is_ok() {
            // Not taken: the stream is dropped, and reset.
            let _ = tx.send(stream);
        }
        return;
    }
    let empty = method == Method::HEAD || status == 204 || status == 304 || body.is_end_stream();
    if stream.send_head(status, &parts.headers, empty).is_err() || empty {
        return;
    }
    let mut stream = stream;
    let mut body = body;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => {
                    if stream.write_all(&data).await.is_err() {
                        return;
                    }
                }
                // Trailers end the body; they go out as its last frame.
                Err(f) => trailers = f.into_trailers().ok(),
            },
            Err(e) => {
                debug!("response body failed: {e}");
                stream.reset(frame::Reason::INTERNAL_ERROR);
                return;
            }
        }
    }
    stream.finish(trailers.as_ref());
}
