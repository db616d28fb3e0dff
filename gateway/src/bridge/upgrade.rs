//! The browser's side of a WebSocket once its handshake is answered: the
//! HTTP/1.1 connection hyper upgraded, or a stream of the gateway's own
//! HTTP/2 server (RFC 8441, [`crate::edge::h2`]). The WebSocket tasks
//! (`ws`, `relay`, `tunnel`) take either through [`on`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::RequestBody;
use crate::edge::h2;

/// The upgrade of `req`'s connection or stream, ready once the response
/// head is on its way.
pub(crate) fn on(req: &mut Request<RequestBody>) -> OnBrowser {
    match req
        .extensions_mut()
        .remove::<h2::Upgrade>()
        .and_then(|u| u.take())
    {
        Some(rx) => OnBrowser::H2(rx),
        None => OnBrowser::Hyper(hyper::upgrade::on(req)),
    }
}

/// See [`on`].
pub(crate) enum OnBrowser {
    Hyper(OnUpgrade),
    H2(oneshot::Receiver<h2::Stream>),
}

impl Future for OnBrowser {
    type Output = io::Result<Io>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Hyper(u) => Pin::new(u).poll(cx).map(|r| {
                r.map(|u| Io::Hyper(TokioIo::new(u)))
                    .map_err(io::Error::other)
            }),
            Self::H2(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.map(Io::H2).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the stream was not answered",
                    )
                })
            }),
        }
    }
}

/// An upgraded connection (either side of a relay) or an HTTP/2 stream.
pub(crate) enum Io {
    Hyper(TokioIo<Upgraded>),
    H2(h2::Stream),
}

impl From<Upgraded> for Io {
    fn from(u: Upgraded) -> Self {
        Self::Hyper(TokioIo::new(u))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Hyper(io) => Pin::new(io).poll_read(cx, buf),
            Self::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Hyper(io) => Pin::new(io).poll_write(cx, data),
            Self::H2(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Hyper(io) => Pin::new(io).poll_flush(cx),
            Self::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Hyper(io) => Pin::new(io).poll_shutdown(cx),
            Self::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
