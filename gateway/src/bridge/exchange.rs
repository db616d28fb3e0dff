//! One HTTP exchange over a device stream.
//!
//! The request head goes first (with FIN when there is no body); the
//! request body follows from a task of its own, one chunk at a time, each
//! sent only once the device has credit for it. The response head is
//! awaited for at most the response timeout, counted from the last
//! progress of the upload (a long upload is not a silent device). The
//! response body is handed to hyper through a channel of one chunk; the
//! device's credit for a chunk returns only once hyper has taken it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Frame, SizeHint};
use proto::{Code, MsgKind};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::page::ErrorPage;
use super::{Body, Bridge, RequestBody, response_from_head};
use crate::link::{DeviceStream, StreamEvent, StreamSender};

/// Largest response head the gateway accepts from a device.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A response head as received, and whether the device finished with it.
pub(super) struct Head {
    pub(super) bytes: Vec<u8>,
    pub(super) fin: bool,
}

/// How fast a request body must arrive: `min_rate` bytes per second of the
/// time spent waiting on the browser, judged once that time exceeds
/// `grace`. Time the upload spends waiting for the device's credit does
/// not count: a slow device never makes its browser look slow.
///
/// This is the per-request slow-body defence for every HTTP version (an
/// HTTP/2 or HTTP/3 client can trickle many bodies on one busy
/// connection, which a per-connection byte count cannot see). A body too
/// slow is abandoned: the device's stream is reset, the browser gets 408
/// if no response has started (its stream reset otherwise), and
/// `gateway_browser_timeouts_total{timer="body_rate"}` counts it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    pub(super) min_rate: u64,
    pub(super) grace: Duration,
}

impl Pace {
    /// How much longer to wait for the next frame, having waited `waited`
    /// in all for `received` bytes; `None` without a minimum.
    fn allowance(self, waited: Duration, received: u64) -> Option<Duration> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        Some(self.grace.max(earned).saturating_sub(waited))
    }
}

/// Where the upload stands, for the response deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upload {
    /// Bytes handed to the device so far.
    Sent(u64),
    /// The browser sent its body slower than the minimum rate.
    TooSlow,
}

/// Runs the exchange; returns the response to stream back.
pub(super) async fn exchange(
    bridge: Arc<Bridge>,
    mut stream: DeviceStream,
    head: Vec<u8>,
    body: RequestBody,
    timeout: Duration,
) -> Result<Response<Body>, ErrorPage> {
    let device = stream_device(&stream);
    let empty = body.is_end_stream();
    stream
        .send(MsgKind::Head, head, true, empty)
        .await
        .map_err(|_| link_lost(&device))?;
    let (progress_tx, mut progress) = watch::channel(Upload::Sent(0));
    let pace = bridge.body_pace();
    let upload = (!empty).then(|| {
        Abort(tokio::spawn(upload(
            body,
            stream.sender(),
            progress_tx,
            pace,
        )))
    });
    let mut deadline = Instant::now() + timeout;
    let head = loop {
        tokio::select! {
            h = read_head(&mut stream, &device) => break h?,
            Ok(()) = progress.changed() => {
                if *progress.borrow_and_update() == Upload::TooSlow {
                    bridge.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                    stream.reset(Code::CANCEL);
                    return Err(ErrorPage::new(
                        408,
                        "body_too_slow",
                        format!(
                            "The request body arrived slower than {} bytes/s.",
                            pace.min_rate
                        ),
                    ));
                }
                deadline = Instant::now() + timeout;
            }
            () = tokio::time::sleep_until(deadline) => {
                bridge.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                stream.reset(Code::CANCEL);
                return Err(ErrorPage::new(
                    504,
                    "device_timeout",
                    format!("Device {device} did not answer within {timeout:?}."),
                ));
            }
        }
    };
    let parsed = proto::wire::ResponseHead::parse(&head.bytes).map_err(|e| {
        ErrorPage::new(
            502,
            "bad_device_response",
            format!("Device {device} sent a response head that does not decode: {e}."),
        )
    })?;
    let resp = response_from_head(&parsed, &device)?;
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if head.fin {
        super::page::full(Bytes::new())
    } else {
        download(stream, upload, length)
    };
    Ok(resp.map(|()| body))
}

/// The device id a stream belongs to, for messages.
fn stream_device(stream: &DeviceStream) -> String {
    stream.device().to_string()
}

pub(super) fn link_lost(device: &str) -> ErrorPage {
    ErrorPage::new(
        502,
        "device_offline",
        format!("Device {device} went offline during the request."),
    )
}

/// Reads a whole response head.
pub(super) async fn read_head(stream: &mut DeviceStream, device: &str) -> Result<Head, ErrorPage> {
    let mut bytes = Vec::new();
    loop {
        match stream.recv().await {
            Some(StreamEvent::Data {
                msg: MsgKind::Head,
                data,
                end_msg,
                fin,
            }) => {
                if bytes.len() + data.len() > MAX_RESPONSE_HEAD {
                    stream.reset(Code::PROTOCOL);
                    return Err(ErrorPage::new(
                        502,
                        "bad_device_response",
                        format!(
                            "Device {device} sent a response head over {MAX_RESPONSE_HEAD} bytes."
                        ),
                    ));
                }
                bytes.extend_from_slice(&data);
                if end_msg {
                    return Ok(Head { bytes, fin });
                }
                if fin {
                    break;
                }
            }
            Some(StreamEvent::Data { msg, .. }) => {
                stream.reset(Code::PROTOCOL);
                return Err(ErrorPage::new(
                    502,
                    "bad_device_response",
                    format!("Device {device} sent {msg:?} data before its response head."),
                ));
            }
            Some(StreamEvent::Reset(code)) => {
                return Err(ErrorPage::new(
                    502,
                    "device_reset",
                    format!("Device {device} refused the request (stream reset: {code})."),
                ));
            }
            Some(StreamEvent::Closed) | None => return Err(link_lost(device)),
        }
    }
    Err(ErrorPage::new(
        502,
        "bad_device_response",
        format!("Device {device} ended the stream inside its response head."),
    ))
}

/// Aborts a task when dropped.
pub(super) struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the request body to the device, chunk by chunk within credit,
/// as long as the browser keeps to `pace`.
async fn upload(
    mut body: RequestBody,
    to: StreamSender,
    progress: watch::Sender<Upload>,
    pace: Pace,
) {
    let mut sent = 0u64;
    let mut waited = Duration::ZERO;
    loop {
        let started = Instant::now();
        let next = match pace.allowance(waited, sent) {
            None => body.frame().await,
            Some(allowed) => match tokio::time::timeout(allowed, body.frame()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::debug!(
                        received = sent,
                        min_rate = pace.min_rate,
                        "request body slower than the minimum rate; abandoned"
                    );
                    // Before the response head the exchange answers 408 and
                    // resets the device's stream; after it, nobody listens
                    // here and the stream is reset from this side.
                    if progress.send(Upload::TooSlow).is_err() {
                        to.reset(Code::CANCEL);
                    }
                    return;
                }
            },
        };
        waited += started.elapsed();
        match next {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not carried
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if to
                    .send(MsgKind::Bytes, data.to_vec(), false, false)
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = progress.send(Upload::Sent(sent));
            }
            Some(Err(e)) => {
                tracing::debug!("request body aborted by the browser: {e}");
                to.reset(Code::CANCEL);
                return;
            }
            None => {
                let _ = to.send(MsgKind::Bytes, Vec::new(), false, true).await;
                let _ = progress.send(Upload::Sent(sent));
                return;
            }
        }
    }
}

/// The response body: a task moves device data into a one-chunk channel.
pub(super) fn download(
    mut stream: DeviceStream,
    upload: Option<Abort>,
    length: Option<u64>,
) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
    tokio::spawn(async move {
        // Keeps the upload going while the response streams; aborted with us.
        let _upload = upload;
        let device = stream.device().to_string();
        loop {
            let item = match stream.recv().await {
                Some(StreamEvent::Data {
                    msg: MsgKind::Bytes,
                    data,
                    fin,
                    ..
                }) => {
                    if !data.is_empty() && tx.send(Ok(Bytes::from(data))).await.is_err() {
                        return; // the browser went away: dropping the stream resets it
                    }
                    if fin {
                        return;
                    }
                    continue;
                }
                Some(StreamEvent::Data { msg, .. }) => {
                    stream.reset(Code::PROTOCOL);
                    format!("device {device} sent {msg:?} data in a response body")
                }
                Some(StreamEvent::Reset(code)) => {
                    format!("device {device} aborted the response ({code})")
                }
                Some(StreamEvent::Closed) | None => {
                    format!("device {device} went offline during the response")
                }
            };
            tracing::info!("{item}");
            let _ = tx.send(Err(io::Error::other(item))).await;
            return;
        }
    });
    ChannelBody { rx, length }.boxed()
}

/// A body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    length: Option<u64>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
