//! The browser-facing accept loop: TCP (MSS clamped at the listener) →
//! TLS within the handshake deadline → HTTP by ALPN: HTTP/2 on the
//! gateway's own server ([`super::h2`]), HTTP/1.1 on hyper, with upgrades
//! for WebSockets (plain listeners: hyper, HTTP/2 by preface too).
//!
//! # Lifecycle of a connection
//!
//! accepted (options applied) → TLS handshake (a stall past the deadline is
//! counted as `stalled`: TCP up, TLS never finished, the mark of a path MTU
//! black hole) → HTTP served → closed by the client, by hyper's header
//! timeout, by an idle timeout, by an unanswered HTTP/2 keepalive PING,
//! or drained on shutdown (HTTP/2 GOAWAY, then the end with the last open
//! stream; HTTP/1.1 closes after the response in flight).
//!
//! # HTTP/3
//!
//! When `[http3]` is on, every response of a TLS listener carries
//! `Alt-Svc: h3=":<port>"; ma=86400`, the port being the listener's own
//! (or `[gateway] public_port`): browsers then try QUIC on that UDP port
//! (see [`super::quic`]) and stay on TCP if it is blocked.
//!
//! # Limits (from `[http]`)
//!
//! HTTP/1.1: request head `max_header_bytes` and `max_headers` (431 past
//! either), `header_timeout` for every request head, which also bounds an
//! idle keep-alive connection (hyper starts the header timer while it waits
//! for the next request). HTTP/2: `h2_max_concurrent_streams`, header list
//! `max_header_bytes` and `max_headers` (431 past either),
//! `h2_max_pending_resets` and `h2_max_local_error_resets` (rapid-reset
//! defences, see [`super::h2`]), a keepalive PING after `idle_timeout / 2`
//! without a frame from the client (no answer within 20 s ends the
//! connection), and GOAWAY once no request has been in flight for
//! `idle_timeout` (its WebSockets carry on).
//!
//! # WebSockets over HTTP/2
//!
//! With `[http] websocket_over_http2` (the default) the gateway announces
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, and a browser holding an HTTP/2
//! connection opens its WebSockets as streams of it (RFC 8441). Off, an
//! extended CONNECT is a malformed request (the stream is reset), and
//! browsers open each WebSocket on an HTTP/1.1 connection of its own: one
//! more TLS handshake when the socket opens, and about 3 KB less for as
//! long as it lives (the HTTP/2 connection's task, its state and HPACK
//! table stay beside the socket's; BENCHMARKS.md, "The gateway's own
//! HTTP/2 server").
//!
//! # Hardening (from `[gateway.limits]`)
//!
//! - Before TLS, [`super::admission`] applies the global and per-source
//!   caps and overload protection; a refused connection is closed at once.
//! - The socket is wrapped in [`super::guard::Guarded`]: a write stalled
//!   for `send_timeout` ends the connection, and so does a client that,
//!   while the gateway's writes block, reads slower than `min_send_rate`
//!   for longer than `send_timeout` (slow readers: over TLS a reader
//!   drains a whole record at a time, so a stall timer alone never fires).
//! - HTTP/1.1 request bodies slower than `min_body_rate` (averaged from
//!   the request on, checked once the request is older than
//!   `header_timeout` and while bytes still trickle in) end the
//!   connection (slow-body attacks). Every request body, HTTP/2's
//!   streams included, is also held to `min_body_rate` on its own by the
//!   bridge's upload (408, see `bridge::exchange::Pace`).
//! - Before the bridge: a request whose host (Host, or the authority of an
//!   HTTP/2 or absolute-form target) is not covered by the TLS SNI the
//!   client used gets 421 `misdirected` (RFC 9110 §15.5.20). Covered means
//!   equal to the SNI, or named by the certificate the gateway presented
//!   for that SNI: that is the check a browser makes before it reuses an
//!   HTTP/2 connection for another name (RFC 9113 §9.1.1), so with a
//!   `*.<domain>` certificate a connection opened for one device may carry
//!   requests for another, while a name the presented certificate does
//!   not cover (another certificate's, or a foreign host) never rides on
//!   it; browsers answer 421 by retrying on a fresh connection. CONNECT
//!   other than the WebSocket extended CONNECT (RFC 8441) gets 405
//!   `connect_refused`: the gateway is never an open proxy. The SNI
//!   travels with each request as a [`TlsSni`] extension.
//!
//! # Timeouts
//!
//! | timer | default | where |
//! |---|---|---|
//! | TLS handshake | 10 s | `[tls] handshake_timeout` |
//! | request head (also idle HTTP/1.1 keep-alive) | 10 s | `[http] header_timeout` |
//! | idle connection | 60 s | `[http] idle_timeout` |
//! | HTTP/2 ping answer | 20 s | fixed |
//! | request body rate (connection: HTTP/1.1; each request: all versions) | 256 B/s after `header_timeout` | `[gateway.limits] min_body_rate` |
//! | stalled write | 30 s | `[gateway.limits] send_timeout` |
//! | response read rate while writes block | 1 KiB/s after `send_timeout` | `[gateway.limits] min_send_rate` |
//! | device response head | 30 s | `[http] response_timeout` |
//! | WebSocket pings, two unanswered close | 20 s | `[websocket] ping_interval` |
//! | device-link handshake | 10 s | `[link] handshake_timeout` |

use std::future::{Future as _, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use http::{HeaderValue, Method, header};
use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{Histogram, HistogramOpts};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument as _, Span, debug, info_span, warn};

use super::admission::{Admission, Overload, Permit, Place, Refused};
use super::framing::{Framing, Verdict};
use super::guard::{Guarded, Meter};
use super::listener::{SocketOptions, tune_accepted};
use super::tls::{CertResolver, Tls, TlsError};
use crate::beside::Beside;
use crate::bridge::page::ErrorPage;
use crate::bridge::route::{self, Route};
use crate::bridge::{Bridge, ClientCn, Conn};
use crate::config;
use crate::config::settings::Limits;

/// The server name (SNI) the client sent in its TLS handshake, lower case
/// (a request extension, like [`ClientCn`]).
#[derive(Clone, Debug)]
pub struct TlsSni(pub Arc<str>);

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
    /// Connections refused before TLS, by reason.
    pub refused: Refused,
    /// Connections closed because a request head did not arrive within
    /// `[http] header_timeout`.
    pub header_timeouts: AtomicU64,
    /// Connections closed because a write stalled for `send_timeout`.
    pub send_timeouts: Arc<AtomicU64>,
    /// Connections closed because a request body came slower than `min_body_rate`.
    pub body_timeouts: AtomicU64,
    /// Connections closed because the client read slower than `min_send_rate`.
    pub send_rate_timeouts: AtomicU64,
    /// Connections closed after `[http] idle_timeout` without requests.
    pub idle_timeouts: AtomicU64,
    /// Requests refused as malformed before the gateway saw them: hyper's
    /// 400 and 431, the HTTP/2 server's 431s, reset streams and GOAWAYs.
    pub malformed: AtomicU64,
    /// Requests whose host differs from the TLS SNI (421).
    pub misdirected: AtomicU64,
    /// CONNECT requests that are not WebSockets (405).
    pub connect_refused: AtomicU64,
    /// Overload state and the last process sample.
    pub overload: Arc<Overload>,
}

/// Buckets of [`EdgeStats::tls_handshake`], in seconds: 1 ms to 10 s (the
/// default handshake deadline).
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for EdgeStats {
    fn default() -> Self {
        Self::new(Overload::new(&Limits::default()))
    }
}

impl EdgeStats {
    /// Counters at zero, reporting `overload`'s state.
    pub fn new(overload: Arc<Overload>) -> Self {
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
            refused: Refused::default(),
            header_timeouts: AtomicU64::new(0),
            send_timeouts: Arc::new(AtomicU64::new(0)),
            body_timeouts: AtomicU64::new(0),
            send_rate_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            misdirected: AtomicU64::new(0),
            connect_refused: AtomicU64::new(0),
            overload,
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
    /// `Alt-Svc` added to every response when HTTP/3 serves this port
    /// (`h3=":<port>"; ma=86400`).
    pub alt_svc: Option<HeaderValue>,
}

/// What every browser listener shares.
pub struct Shared {
    /// Where requests go.
    pub bridge: Arc<Bridge>,
    /// `[http]`.
    pub http: config::Http,
    /// `[gateway.limits]`.
    pub limits: Limits,
    /// The caps and the overload state.
    pub admission: Arc<Admission>,
    /// The gateway's domain (to name the device of a request in logs).
    pub domain: Arc<str>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
}

/// Serves browsers on `edge` until `shutdown` turns true; connections then
/// drain (see the module docs).
///
/// Each connection has a `conn` span with the peer's address and, once a
/// request names one, the device; each request a `request` span (its
/// child) with its method and device. Neither carries the path, query or
/// any header value: those may hold credentials.
///
/// The connection's task does not enter its span on every poll: an
/// HTTP/2 connection carries its WebSockets' messages, and entering a
/// span costs a trip through the subscriber each time (see "Log spans off
/// the message path" in BENCHMARKS.md). The span is entered around the
/// TLS handshake, each request's future runs in its own `request` span,
/// and the connection's own events name `conn` as their parent.
pub async fn serve(edge: Edge, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let builder = Arc::new(builder(&shared.http));
    let tls = edge.tls.map(Arc::new);
    let stats = &shared.stats;
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
        super::admission::socket_opened();
        let permit = match shared.admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                stats.refused.count(why);
                debug!(%peer, reason = why.label(), "browser connection refused");
                // A reset, not a FIN: nothing lingers in TIME_WAIT.
                let _ = SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                drop(tcp);
                continue;
            }
        };
        if let Err(e) = tune_accepted(&tcp, &edge.socket) {
            debug!(%peer, "socket options not applied: {e}");
        }
        let conn = Connection {
            shared: shared.clone(),
            alt_svc: edge.alt_svc.clone(),
            builder: builder.clone(),
            shutdown: shutdown.clone(),
            meter: Arc::new(Meter::default()),
        };
        let tls = tls.clone();
        let span = info_span!("conn", %peer, device = Empty);
        tokio::spawn(conn.run(tcp, peer, tls, permit, span));
    }
}

/// The span of one request, a child of its connection's `conn`: its method
/// and, when the route names one, its device (also recorded on the
/// connection's span, where the first wins).
pub(super) fn request_span<B>(
    domain: &str,
    req: &hyper::Request<B>,
    conn: &Span,
    named: &AtomicBool,
) -> Span {
    let host = request_host(req);
    let span = info_span!(parent: conn, "request", method = %req.method(), device = Empty);
    if let Route::Device(target) = route::route(domain, host.as_deref(), req.uri()) {
        span.record("device", target.device.as_str());
        if !named.swap(true, Ordering::Relaxed) {
            conn.record("device", target.device.as_str());
        }
    }
    span
}

fn request_host<B>(req: &hyper::Request<B>) -> Option<String> {
    route::request_host(
        req.uri(),
        req.headers().get(header::HOST).map(|v| v.as_bytes()),
    )
}

/// The checks made before the bridge sees a request: CONNECT that is not
/// a WebSocket (405), and a host other than the TLS SNI (421).
pub(super) fn screen<B>(
    req: &hyper::Request<B>,
    sni: Option<(&str, &CertResolver)>,
    stats: &EdgeStats,
) -> Option<ErrorPage> {
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_none() {
        stats.connect_refused.fetch_add(1, Ordering::Relaxed);
        return Some(ErrorPage::new(
            405,
            "connect_refused",
            "CONNECT is only accepted for WebSockets (RFC 8441): this gateway is not a proxy.",
        ));
    }
    let (sni, certs) = sni?;
    // No host at all is the bridge's 400.
    let host = request_host(req)?;
    if certs.covers(sni, &host) {
        return None;
    }
    stats.misdirected.fetch_add(1, Ordering::Relaxed);
    Some(ErrorPage::new(
        421,
        "misdirected",
        format!(
            "This connection was opened for {sni}, whose certificate does not cover {host}; requests for {host} need a connection of their own."
        ),
    ))
}

/// The `Strict-Transport-Security` value for responses on a connection of
/// `scheme`: over TLS with a max-age configured, else none (RFC 6797
/// §7.2: a host sends it over secure transport only). It carries no
/// `includeSubDomains`: each device name gets its own from the responses
/// served for it, and the operator's other names under the domain are
/// left alone.
pub(super) fn hsts(scheme: &str, max_age: Option<Duration>) -> Option<HeaderValue> {
    let age = max_age.filter(|_| scheme == "https")?;
    HeaderValue::from_str(&format!("max-age={}", age.as_secs())).ok()
}

/// Resolves once the shutdown flag is set (never if the sender is gone).
pub(super) async fn stopping(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long hyper's HTTP/2 keepalive waits for a PING answer.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

fn builder(http: &config::Http) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_buf_size(http.max_header_bytes.max(8192))
        .max_headers(http.max_headers);
    let mut h2 = b.http2();
    if http.websocket_over_http2 {
        h2.enable_connect_protocol();
    }
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(http.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(http.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(http.h2_max_pending_resets)
        .max_local_error_reset_streams(http.h2_max_local_error_resets)
        .keep_alive_interval(http.idle_timeout / 2)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    b
}

struct Connection {
    shared: Arc<Shared>,
    alt_svc: Option<HeaderValue>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: watch::Receiver<bool>,
    /// What the socket did (TLS records included).
    meter: Arc<Meter>,
}

/// The HTTP stage of a connection, boxed (its type depends on the stream).
type Serving<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What the HTTP stage knows of the TLS stage.
struct Session {
    client: SocketAddr,
    scheme: &'static str,
    client_cn: Option<Arc<str>>,
    /// The SNI and the certificates it was matched against.
    sni: Option<(Arc<str>, Arc<CertResolver>)>,
    /// ALPN chose HTTP/2.
    h2: bool,
    /// HTTP/1.1 framing watch (see [`super::framing`]).
    framing: Option<Arc<Verdict>>,
    /// The connection's place under the caps, given to each request.
    place: Place,
}

impl Connection {
    async fn run(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<Tls>>,
        permit: Permit,
        span: Span,
    ) {
        let started = std::time::Instant::now();
        let stats = self.shared.stats.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        let place = Place::new(permit);
        let io = Guarded::new(
            tcp,
            self.shared.limits.send_timeout,
            self.meter.clone(),
            stats.send_timeouts.clone(),
        );
        // The handshake and the HTTP stage each run boxed, one after the
        // other, and what the handshake returned is gone before HTTP is
        // served: held in this task's future, the handshake's state, its
        // result and the three HTTP futures (one per kind of stream) each
        // kept a place of their own for the connection's life (11.8 KB in
        // a test build; now under 0.5 KB, and the one HTTP future that
        // runs is on the heap).
        let serve: Option<Serving<'_>> = match tls {
            Some(tls) => {
                let accepted = Box::pin(tls.accept(io)).instrument(span.clone()).await;
                match accepted {
                    Ok(stream)
                        if stream.alpn_protocol() == Some(crate::edge::tls::ACME_TLS_ALPN) =>
                    {
                        // An ACME CA saw the TLS-ALPN-01 certificate; RFC 8737
                        // ends the connection here.
                        stats.tls_ok.fetch_add(1, Ordering::Relaxed);
                        debug!(parent: &span, "TLS-ALPN-01 validation handshake done; closing");
                        None
                    }
                    Ok(stream) => {
                        stats.tls_ok.fetch_add(1, Ordering::Relaxed);
                        stats.tls_handshake.observe(started.elapsed().as_secs_f64());
                        let mut session = Session {
                            client: peer,
                            scheme: "https",
                            client_cn: crate::edge::tls::client_common_name(&stream)
                                .map(Arc::<str>::from),
                            sni: crate::edge::tls::server_name(&stream)
                                .map(|n| (Arc::<str>::from(n), tls.resolver.clone())),
                            h2: stream.alpn_protocol() == Some(b"h2"),
                            framing: None,
                            place,
                        };
                        if session.h2 {
                            Some(self.h2(stream, session, &span))
                        } else {
                            let verdict = Arc::new(Verdict::default());
                            session.framing = Some(verdict.clone());
                            let max = self.shared.http.max_header_bytes;
                            Some(self.http(Framing::new(stream, max, verdict), session, &span))
                        }
                    }
                    Err(e @ TlsError::Stalled(_)) => {
                        stats.tls_stalled.fetch_add(1, Ordering::Relaxed);
                        warn!(parent: &span, outcome = e.outcome(), "{e}");
                        None
                    }
                    Err(e) => {
                        stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                        debug!(parent: &span, outcome = e.outcome(), "{e}");
                        None
                    }
                }
            }
            None => {
                let verdict = Arc::new(Verdict::default());
                let session = Session {
                    client: peer,
                    scheme: "http",
                    client_cn: None,
                    sni: None,
                    h2: false,
                    framing: Some(verdict.clone()),
                    place,
                };
                let max = self.shared.http.max_header_bytes;
                Some(self.http(Framing::new(io, max, verdict), session, &span))
            }
        };
        if let Some(serve) = serve {
            serve.await;
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// What the requests of the connection `session` describes share,
    /// with its in-flight count and its HTTP/2 flag.
    fn requests(
        &self,
        session: Session,
        span: &Span,
    ) -> (Arc<Requests>, Arc<AtomicU64>, Arc<AtomicBool>) {
        let active = Arc::new(AtomicU64::new(0));
        let h2 = Arc::new(AtomicBool::new(session.h2));
        let requests = Arc::new(Requests {
            shared: self.shared.clone(),
            conn: Conn {
                client: session.client,
                scheme: session.scheme,
            },
            hsts: hsts(session.scheme, self.shared.http.hsts_max_age),
            client_cn: session.client_cn,
            sni: session.sni,
            framing: session.framing,
            place: session.place,
            active: active.clone(),
            span: span.clone(),
            named: AtomicBool::new(false),
            saw_h2: h2.clone(),
            count: AtomicU64::new(0),
            alt_svc: self.alt_svc.clone(),
        });
        (requests, active, h2)
    }

    /// Serves HTTP/2 (chosen in TLS) on `io` with the gateway's own server
    /// ([`super::h2`]) until the connection ends; `span` is the
    /// connection's (see [`serve`]). The connection is built here and
    /// moved once into the future, which keeps it where it lies: an idle
    /// HTTP/2 connection (a WebSocket's, between messages) is mostly this
    /// future.
    fn h2<'a, I>(&'a self, io: I, session: Session, span: &'a Span) -> Serving<'a>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (requests, active, h2) = self.requests(session, span);
        let http = &self.shared.http;
        let settings = super::h2::Settings {
            max_streams: http.h2_max_concurrent_streams,
            max_header_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            connect_protocol: http.websocket_over_http2,
            max_early_resets: http.h2_max_pending_resets,
            max_local_resets: http.h2_max_local_error_resets,
            keepalive: http.idle_timeout / 2,
            ping_timeout: H2_PING_TIMEOUT,
        };
        let conn = super::h2::Conn::new(
            io,
            settings,
            self.shared.stats.clone(),
            move |d: super::h2::Dispatched| {
                let method = d.request.method().clone();
                let response = requests.call(d.request);
                tokio::spawn(super::h2::respond(d.responder, d.upgrade, method, response))
                    .abort_handle()
            },
        );
        Box::pin(self.serve_until_done(conn, active, h2, span))
    }

    /// Serves HTTP/1.1, and HTTP/2 by prior knowledge on plain listeners,
    /// with hyper on `io` until the connection ends; `span` is the
    /// connection's (see [`serve`]).
    fn http<'a, I>(&'a self, io: I, session: Session, span: &'a Span) -> Serving<'a>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (requests, active, h2) = self.requests(session, span);
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            requests.call(req.map(|b| b.map_err(std::io::Error::other).boxed()))
        });
        Box::pin(async move {
            let conn = self
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let hyper = Hyper {
                conn,
                drain: |c| c.graceful_shutdown(),
            };
            self.serve_until_done(hyper, active, h2, span).await;
        })
    }

    /// Drives `conn` until it ends, with the drain signal, the idle
    /// timeout and the rate checks beside it. Captured once and used where
    /// it lies (an async fn would keep `conn` twice).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice in its future"
    )]
    fn serve_until_done<'a, C: Served + Send + 'a>(
        &'a self,
        mut conn: C,
        active: Arc<AtomicU64>,
        h2: Arc<AtomicBool>,
        span: &'a Span,
    ) -> impl Future<Output = ()> + Send + 'a {
        async move {
            let stats = &self.shared.stats;
            let idle = self.shared.http.idle_timeout;
            let mut shutdown = self.shutdown.clone();
            let mut idle_since = tokio::time::Instant::now();
            let mut body = BodyRate::new(
                self.shared.limits.min_body_rate,
                self.shared.http.header_timeout,
            );
            let mut send = SendRate::new(
                self.shared.limits.min_send_rate,
                self.shared.limits.send_timeout,
            );
            let period = if body.min_rate > 0 || send.min_rate > 0 {
                Duration::from_secs(1)
            } else {
                idle.min(Duration::from_secs(5))
            };
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stop = pin!(stopping(&mut shutdown));
            let beside = Beside::new();
            let mut draining = false;
            loop {
                // The connection first, on every wake; the drain signal and the
                // tick only once they have woken (their polls re-arm a watch and
                // a timer, and an HTTP/2 connection wakes for every message of
                // its WebSockets).
                let event = poll_fn(|cx| {
                    if let Poll::Ready(r) = conn.poll_serve(cx) {
                        return Poll::Ready(Event::Ended(r));
                    }
                    beside.poll(cx, |cx| {
                        if !draining && stop.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Event::Stop);
                        }
                        tick.poll_tick(cx).map(|_| Event::Tick)
                    })
                })
                .await;
                match event {
                    Event::Ended(r) => {
                        if let Err(e) = r {
                            self.classify(&*e);
                            debug!(parent: span, "connection ended: {e}");
                        }
                        return;
                    }
                    Event::Stop => {
                        draining = true;
                        conn.drain();
                    }
                    Event::Tick => {
                        if let Err(e) = conn.tick() {
                            self.classify(&*e);
                            debug!(parent: span, "connection ended: {e}");
                            return;
                        }
                        let busy = active.load(Ordering::Relaxed) > 0;
                        let received = self.meter.received.load(Ordering::Relaxed);
                        if !h2.load(Ordering::Relaxed) && body.too_slow(busy, received) {
                            stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                            debug!(parent: span, min_rate = body.min_rate, "request body slower than the minimum rate; closing");
                            return;
                        }
                        if send.too_slow(&self.meter) {
                            stats.send_rate_timeouts.fetch_add(1, Ordering::Relaxed);
                            debug!(parent: span, min_rate = send.min_rate, "client reads slower than the minimum rate; closing");
                            return;
                        }
                        if draining {
                            continue;
                        }
                        // Requests in flight, response bodies included, keep
                        // a connection busy; upgraded WebSockets carry on
                        // outside this counter.
                        if busy {
                            idle_since = tokio::time::Instant::now();
                        } else if idle_since.elapsed() >= idle {
                            debug!(parent: span, "idle for {idle:?}; closing");
                            stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                            draining = true;
                            conn.drain();
                        }
                    }
                }
            }
        }
    }

    /// Counts why hyper ended a connection.
    fn classify(&self, e: &(dyn std::error::Error + 'static)) {
        let stats = &self.shared.stats;
        stats.http_errors.fetch_add(1, Ordering::Relaxed);
        let Some(h) = e.downcast_ref::<hyper::Error>() else {
            return;
        };
        if h.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        } else if h.is_parse() || h.is_parse_too_large() || h.is_parse_status() {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What woke a connection's serving loop.
enum Event<E> {
    /// hyper is done with the connection.
    Ended(Result<(), E>),
    /// The gateway drains.
    Stop,
    /// The rate and idle checks are due.
    Tick,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection being served: hyper's, or the gateway's own HTTP/2.
trait Served {
    /// Serves; `Ready` once the connection is over.
    fn poll_serve(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>>;
    /// Stops taking requests; the connection ends once those in flight are done.
    fn drain(&mut self);
    /// The periodic check (keepalive); `Err` ends the connection.
    fn tick(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// hyper's connection, with its graceful shutdown.
struct Hyper<'a, C> {
    conn: Pin<&'a mut C>,
    drain: fn(Pin<&mut C>),
}

impl<C: Future<Output = Result<(), BoxError>>> Served for Hyper<'_, C> {
    fn poll_serve(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        self.conn.as_mut().poll(cx)
    }

    fn drain(&mut self) {
        (self.drain)(self.conn.as_mut());
    }
}

impl<I, D> Served for super::h2::Conn<I, D>
where
    I: AsyncRead + AsyncWrite + Unpin,
    D: FnMut(super::h2::Dispatched) -> tokio::task::AbortHandle,
{
    fn poll_serve(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Self::poll_serve(self, cx).map_err(Into::into)
    }

    fn drain(&mut self) {
        Self::drain(self);
    }

    fn tick(&mut self) -> Result<(), BoxError> {
        Self::tick(self).map_err(Into::into)
    }
}

/// What every request of one connection carries to the bridge, and the
/// checks made before it (shared by hyper's service and the HTTP/2
/// server).
struct Requests {
    shared: Arc<Shared>,
    conn: Conn,
    client_cn: Option<Arc<str>>,
    sni: Option<(Arc<str>, Arc<CertResolver>)>,
    framing: Option<Arc<Verdict>>,
    place: Place,
    /// Requests in flight (see [`InFlight`]).
    active: Arc<AtomicU64>,
    /// The connection's span, and whether a device was named on it.
    span: Span,
    named: AtomicBool,
    saw_h2: Arc<AtomicBool>,
    /// Requests so far.
    count: AtomicU64,
    hsts: Option<HeaderValue>,
    alt_svc: Option<HeaderValue>,
}

impl Requests {
    /// Screens `req` and hands it to the bridge; the response gets the
    /// connection's headers (HSTS, Alt-Svc).
    fn call(
        &self,
        mut req: hyper::Request<crate::bridge::RequestBody>,
    ) -> impl Future<Output = Result<hyper::Response<crate::bridge::Body>, std::convert::Infallible>>
    + Send
    + use<> {
        if let Some(cn) = &self.client_cn {
            req.extensions_mut().insert(ClientCn(cn.clone()));
        }
        if let Some((sni, _)) = &self.sni {
            req.extensions_mut().insert(TlsSni(sni.clone()));
        }
        // A WebSocket's task takes it (see `Place`).
        req.extensions_mut().insert(self.place.clone());
        if req.version() == http::Version::HTTP_2 {
            self.saw_h2.store(true, Ordering::Relaxed);
        }
        let shared = &self.shared;
        let bridge = shared.bridge.clone();
        let in_flight = InFlight::new(&self.active);
        let span = request_span(&shared.domain, &req, &self.span, &self.named);
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let ambiguous = req.version() != http::Version::HTTP_2
            && self.framing.as_ref().is_some_and(|v| v.is_bad(n));
        let refused = if ambiguous {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            Some(ErrorPage::new(
                400,
                "ambiguous_framing",
                "The request has both Content-Length and Transfer-Encoding.",
            ))
        } else {
            let sni = self.sni.as_ref().map(|(n, c)| (&**n, &**c));
            screen(&req, sni, &shared.stats)
        };
        let (alt_svc, hsts, conn) = (self.alt_svc.clone(), self.hsts.clone(), self.conn);
        async move {
            let mut r = match refused {
                Some(page) => {
                    let resp = page.render(req.headers());
                    debug!(status = resp.status().as_u16(), "refused before the bridge");
                    Ok(resp)
                }
                None => bridge.handle(conn, req).await,
            };
            if let (Ok(resp), Some(v)) = (&mut r, hsts) {
                resp.headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, v);
            }
            if let (Ok(resp), Some(v)) = (&mut r, alt_svc) {
                resp.headers_mut().insert(header::ALT_SVC, v);
            }
            // In flight until its body is done: a long download
            // keeps its connection from counting as idle.
            r.map(|resp| {
                resp.map(|b| {
                    b.map_frame(move |f| {
                        let _ = &in_flight;
                        f
                    })
                    .boxed()
                })
            })
        }
        .instrument(span)
    }
}

/// A request counted in its connection's in-flight total (which keeps
/// the connection from counting as idle) until this is dropped: with the
/// response body, once it is sent or abandoned.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The slow-body check of one HTTP/1.1 connection: while a request is in
/// flight, the bytes received since it started must keep up with
/// `min_rate` per second, judged only once the request is older than
/// `grace` and only on ticks where bytes still arrive (a request whose
/// body is complete and that waits for its device is never judged).
struct BodyRate {
    min_rate: u64,
    grace: Duration,
    /// Since when a request is in flight, and the byte counts then and at
    /// the last tick.
    period: Option<(tokio::time::Instant, u64, u64)>,
}

impl BodyRate {
    fn new(min_rate: u64, grace: Duration) -> Self {
        Self {
            min_rate,
            grace,
            period: None,
        }
    }

    fn too_slow(&mut self, busy: bool, received: u64) -> bool {
        if self.min_rate == 0 || !busy {
            self.period = None;
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some((start, first, last)) = self.period else {
            self.period = Some((now, received, received));
            return false;
        };
        self.period = Some((start, first, received));
        let elapsed = now.duration_since(start);
        if received == last || elapsed < self.grace {
            return false;
        }
        let floor = self.min_rate as f64 * elapsed.as_secs_f64();
        ((received - first) as f64) < floor
    }
}

/// The slow-read check of one connection: while the gateway's writes find
/// the socket full, the bytes sent since that started must keep up with
/// `min_rate` per second, judged once it lasted `grace`. A tick in which
/// no write blocked (the client kept up) ends the period.
struct SendRate {
    min_rate: u64,
    grace: Duration,
    /// Since when writes block, the bytes sent then, and the stall count
    /// at the last tick.
    period: Option<(tokio::time::Instant, u64)>,
    stalls: u64,
}

impl SendRate {
    fn new(min_rate: u64, grace: Duration) -> Self {
        Self {
            min_rate,
            grace,
            period: None,
            stalls: 0,
        }
    }

    fn too_slow(&mut self, meter: &Meter) -> bool {
        let stalls = meter.stalls.load(Ordering::Relaxed);
        let limited = meter.blocked.load(Ordering::Relaxed) || stalls != self.stalls;
        self.stalls = stalls;
        let sent = meter.sent.load(Ordering::Relaxed);
        if self.min_rate == 0 || !limited {
            self.period = None;
            return false;
        }
        let now = tokio::time::Instant::now();
        let Some((start, first)) = self.period else {
            self.period = Some((now, sent));
            return false;
        };
        let elapsed = now.duration_since(start);
        elapsed >= self.grace
            && ((sent - first) as f64) < self.min_rate as f64 * elapsed.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every browser connection's task is this future (in tokio's task
    /// cell) for as long as the connection is open, an HTTP/2 connection
    /// carrying a WebSocket included: the handshake and the HTTP stage are
    /// boxed apart, and none of their state stays in it (it was 11,824
    /// bytes in a test build).
    #[test]
    fn a_connections_task_stays_small() {
        let f: fn(Connection, TcpStream, SocketAddr, Option<Arc<Tls>>, Permit, Span) -> _ =
            Connection::run;
        let size = returned_size(f);
        eprintln!("connection task future: {size} bytes");
        assert!(size <= 512, "the connection task grew to {size} bytes");
    }

    fn returned_size<A, B, C, D, E, F, R>(_: fn(A, B, C, D, E, F) -> R) -> usize {
        size_of::<R>()
    }

    #[test]
    fn hsts_goes_out_over_tls_only_and_not_when_off() {
        let year = Some(Duration::from_secs(31_536_000));
        assert_eq!(hsts("https", year).unwrap(), "max-age=31536000");
        assert_eq!(hsts("http", year), None);
        assert_eq!(hsts("https", None), None);
    }
}
