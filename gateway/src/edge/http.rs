//! The browser-facing accept loop: TCP (MSS clamped at the listener) →
//! TLS within the handshake deadline → hyper, HTTP/1.1 or HTTP/2 by ALPN
//! (or by preface on plain listeners), with upgrades for WebSockets.
//!
//! # Lifecycle of a connection
//!
//! accepted (options applied) → TLS handshake (a stall past the deadline is
//! counted as `stalled`: TCP up, TLS never finished, the mark of a path MTU
//! black hole) → HTTP served → closed by the client, by hyper's header
//! timeout, by an idle timeout, or drained on shutdown (HTTP/2 GOAWAY,
//! HTTP/1.1 closes after the response in flight).
//!
//! # Limits (from `[http]`)
//!
//! HTTP/1.1: request head `max_header_bytes` and `max_headers` (431 past
//! either), `header_timeout` for every request head, which also bounds an
//! idle keep-alive connection (hyper starts the header timer while it waits
//! for the next request). HTTP/2: `h2_max_concurrent_streams`, header list
//! `max_header_bytes`, `h2_max_pending_resets` and
//! `h2_max_local_error_resets` (rapid-reset defences), keepalive pings
//! every `idle_timeout / 2`, and the connection closed when it has had no
//! open stream for `idle_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::header;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{Histogram, HistogramOpts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument as _, Span, debug, info_span, warn};

use super::listener::{SocketOptions, tune_accepted};
use super::tls::{Tls, TlsError};
use crate::bridge::route::{self, Route};
use crate::bridge::{Bridge, ClientCn, Conn};
use crate::config;

/// Counters for the metrics endpoint.
#[derive(Debug)]
pub struct EdgeStats {
    /// TCP connections accepted.
    pub accepted: AtomicU64,
    /// TLS handshakes completed.
    pub tls_ok: AtomicU64,
    /// TLS handshakes that failed (bad client, protocol mismatch).
    pub tls_failed: AtomicU64,
    /// TCP up, TLS never finished within the deadline.
    pub tls_stalled: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections that ended with an HTTP error (header timeout, bad request, reset).
    pub http_errors: AtomicU64,
    /// Durations of completed TLS handshakes
    /// (`gateway_tls_handshake_duration_seconds`).
    pub tls_handshake: Histogram,
}

/// Buckets of [`EdgeStats::tls_handshake`], in seconds: 1 ms to 10 s (the
/// default handshake deadline).
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for EdgeStats {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "gateway_tls_handshake_duration_seconds",
            "Durations of completed TLS handshakes with browsers.",
        )
        .buckets(HANDSHAKE_BUCKETS.to_vec());
        Self {
            accepted: AtomicU64::new(0),
            tls_ok: AtomicU64::new(0),
            tls_failed: AtomicU64::new(0),
            tls_stalled: AtomicU64::new(0),
            open: AtomicU64::new(0),
            http_errors: AtomicU64::new(0),
            tls_handshake: Histogram::with_opts(opts)
                .unwrap_or_else(|e| unreachable!("constant histogram options: {e}")),
        }
    }
}

/// One browser-facing listener.
pub struct Edge {
    /// The bound socket.
    pub listener: TcpListener,
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Tls>,
    /// Options applied to accepted sockets.
    pub socket: SocketOptions,
}

/// Serves browsers on `edge` until `shutdown` turns true; connections then
/// drain (see the module docs). `domain` is the gateway's (to name the
/// device of a request in logs).
///
/// Each connection runs in a `conn` span with the peer's address and,
/// once a request names one, the device; each request in a `request`
/// span with its method and device. Neither carries the path, query or
/// any header value: those may hold credentials.
pub async fn serve(
    edge: Edge,
    bridge: Arc<Bridge>,
    http: config::Http,
    domain: Arc<str>,
    stats: Arc<EdgeStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(&http));
    let tls = edge.tls.map(Arc::new);
    loop {
        let (tcp, peer) = tokio::select! {
            r = edge.listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopping(&mut shutdown) => return,
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tune_accepted(&tcp, &edge.socket) {
            debug!(%peer, "socket options not applied: {e}");
        }
        let conn = Connection {
            bridge: bridge.clone(),
            domain: domain.clone(),
            builder: builder.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            idle: http.idle_timeout,
        };
        let tls = tls.clone();
        let span = info_span!("conn", %peer, device = Empty);
        tokio::spawn(conn.run(tcp, peer, tls).instrument(span));
    }
}

/// The span of one request: its method and, when the route names one, its
/// device (also recorded on the connection's span, where the first wins).
fn request_span<B>(domain: &str, req: &hyper::Request<B>, conn: &Span, named: &AtomicBool) -> Span {
    let host = route::request_host(
        req.uri(),
        req.headers().get(header::HOST).map(|v| v.as_bytes()),
    );
    let span = info_span!("request", method = %req.method(), device = Empty);
    if let Route::Device(target) = route::route(domain, host.as_deref(), req.uri()) {
        span.record("device", target.device.as_str());
        if !named.swap(true, Ordering::Relaxed) {
            conn.record("device", target.device.as_str());
        }
    }
    span
}

/// Resolves once the shutdown flag is set (never if the sender is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn builder(http: &config::Http) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_buf_size(http.max_header_bytes.max(8192))
        .max_headers(http.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(http.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(http.h2_max_pending_resets)
        .max_local_error_reset_streams(http.h2_max_local_error_resets)
        .keep_alive_interval(http.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

struct Connection {
    bridge: Arc<Bridge>,
    domain: Arc<str>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stats: Arc<EdgeStats>,
    shutdown: watch::Receiver<bool>,
    idle: Duration,
}

impl Connection {
    async fn run(self, tcp: TcpStream, peer: SocketAddr, tls: Option<Arc<Tls>>) {
        let started = std::time::Instant::now();
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        match tls {
            Some(tls) => match tls.accept(tcp).await {
                Ok(stream) => {
                    self.stats.tls_ok.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .tls_handshake
                        .observe(started.elapsed().as_secs_f64());
                    let cn = crate::edge::tls::client_common_name(&stream).map(Arc::<str>::from);
                    self.http(stream, peer, "https", cn).await;
                }
                Err(e @ TlsError::Stalled(_)) => {
                    self.stats.tls_stalled.fetch_add(1, Ordering::Relaxed);
                    warn!(outcome = e.outcome(), "{e}");
                }
                Err(e) => {
                    self.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    debug!(outcome = e.outcome(), "{e}");
                }
            },
            None => self.http(tcp, peer, "http", None).await,
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    async fn http<I>(
        &self,
        io: I,
        client: SocketAddr,
        scheme: &'static str,
        client_cn: Option<Arc<str>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let bridge = self.bridge.clone();
        let domain = self.domain.clone();
        let conn_info = Conn { client, scheme };
        let active = Arc::new(AtomicU64::new(0));
        let counter = active.clone();
        let conn_span = Span::current();
        let named = Arc::new(AtomicBool::new(false));
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(cn) = &client_cn {
                req.extensions_mut().insert(ClientCn(cn.clone()));
            }
            let bridge = bridge.clone();
            let active = counter.clone();
            active.fetch_add(1, Ordering::Relaxed);
            let span = request_span(&domain, &req, &conn_span, &named);
            async move {
                let r = bridge.handle(conn_info, req).await;
                active.fetch_sub(1, Ordering::Relaxed);
                r
            }
            .instrument(span)
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut shutdown = self.shutdown.clone();
        let mut idle_since = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(self.idle.min(Duration::from_secs(5)));
        let mut draining = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        self.stats.http_errors.fetch_add(1, Ordering::Relaxed);
                        debug!("connection ended: {e}");
                    }
                    return;
                }
                () = stopping(&mut shutdown), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick(), if !draining => {
                    // Responses in flight keep a connection busy; streams
                    // (bodies, WebSockets) carry on outside this counter.
                    if active.load(Ordering::Relaxed) > 0 {
                        idle_since = tokio::time::Instant::now();
                    } else if idle_since.elapsed() >= self.idle {
                        debug!("idle for {:?}; closing", self.idle);
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}
