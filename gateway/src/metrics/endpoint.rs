//! The metrics listener: plain HTTP/1.1, for Prometheus and health checks.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | 200, the exposition in text format 0.0.4; 500 if a collector panicked |
//! | `/healthz` | 200 `ok` while the process serves |
//! | `/readyz` | 200 `ready` once the listeners are bound; 503 `draining` from SIGTERM on |
//! | other | 404 |
//!
//! The exposition is rendered on tokio's blocking pool, not on a thread
//! that serves browsers and devices, one scrape at a time ([`render`]).
//!
//! Only GET and HEAD; request heads must arrive within 10 s. Bind it to
//! loopback (the default) or a private interface: it needs no secret and
//! tells anyone who can reach it which devices exist.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, debug, info_span, warn};

use super::Metrics;

/// The content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    // One rendering at a time: a burst of scrapes waits its turn rather
    // than walking the descriptors on as many threads at once.
    let renders = Arc::new(Semaphore::new(1));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopping(&mut stop) => return,
        };
        crate::edge::admission::socket_opened();
        let metrics = metrics.clone();
        let renders = renders.clone();
        let service = service_fn(move |req| {
            let metrics = metrics.clone();
            let renders = renders.clone();
            async move { Ok::<_, Infallible>(answer(metrics, &renders, &req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .serve_connection(TokioIo::new(tcp), service);
        tokio::spawn(
            async move {
                if let Err(e) = conn.await {
                    debug!("metrics connection: {e}");
                }
            }
            .instrument(info_span!("metrics_conn", %peer)),
        );
    }
}

/// Resolves once the flag is set (never if the sender is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The exposition, rendered on the blocking pool, or `None` if a
/// collector panicked. A scrape walks `/proc/self/fd` for
/// `process_open_fds` (about 0.6 µs per descriptor) and encodes up to a
/// thousand devices' series: 3 – 8 ms with 10,000 device sessions, which
/// on a runtime thread would hold up every connection that thread serves
/// (all of them with `[gateway] threads = 1`). One rendering at a time:
/// the turn (`renders`) is held by the blocking job itself, so a scraper
/// that hangs up mid-render does not let another start beside it.
async fn render(metrics: Arc<Metrics>, renders: &Arc<Semaphore>) -> Option<String> {
    // The semaphore is never closed.
    let turn = renders.clone().acquire_owned().await.ok()?;
    match tokio::task::spawn_blocking(move || {
        let _turn = turn;
        metrics.render()
    })
    .await
    {
        Ok(text) => Some(text),
        Err(e) => {
            warn!("metrics rendering failed: {e}");
            None
        }
    }
}

async fn answer<B>(
    metrics: Arc<Metrics>,
    renders: &Arc<Semaphore>,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let Some(body) = render(metrics, renders).await else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics rendering failed\n",
                );
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(TEXT_FORMAT),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    }
}
