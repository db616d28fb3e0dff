//! HTTP/3 for browsers: QUIC (quinn) on UDP at each TLS listener's address
//! and port, HTTP/3 (h3) on top, every request into the same
//! [`Bridge`](crate::bridge::Bridge) as HTTP/1.1 and HTTP/2.
//!
//! ```text
//!  UDP datagram ─▶ quinn endpoint ─▶ admission (caps, overload) ─▶ QUIC + TLS 1.3
//!    handshake within [tls] handshake_timeout (ALPN h3, the TLS edge's certificates)
//!  ─▶ h3 connection ─▶ request stream ─▶ the checks of the TCP edge (405, 421)
//!  ─▶ bridge (routing, access, normalization, exchange) ─▶ response head
//!  ─▶ response body, chunk by chunk, into the stream's send side
//! ```
//!
//! # Lifecycle of a connection
//!
//! Incoming (refused at once past the connection caps, counted with the
//! TCP edge's refusals) → handshake (`gateway_quic_handshakes_total` by
//! `ok`, `failed`, or `timeout`) → requests, each on a task of its own →
//! closed by the client, by the idle timeout, or drained on shutdown
//! (HTTP/3 GOAWAY, then the requests in flight finish) → path statistics
//! recorded: RTT, path MTU, lost and sent packets, MTU black holes.
//!
//! Datagrams that are not QUIC are dropped by quinn without an answer, and
//! before a client's address is validated quinn sends at most three times
//! what it received (RFC 9000 §8.1), so the UDP port cannot be used to
//! amplify traffic toward a spoofed source.
//!
//! # Limits (from `[http3]`, defaults next to the TCP edge's)
//!
//! | limit | HTTP/3 default | HTTP/1.1 and HTTP/2 |
//! |---|---|---|
//! | idle connection | 30 s (`idle_timeout`, QUIC's own timer) | 60 s (`[http] idle_timeout`) |
//! | requests at once per connection | 100 (`max_concurrent_streams`) | 100 (`h2_max_concurrent_streams`) |
//! | request body read ahead, per stream | 1 MiB (`stream_window`) | one socket buffer / h2 window |
//! | request body read ahead, per connection | 4 MiB (`conn_window`; quinn: unbounded) | one socket buffer / h2 window |
//! | unacknowledged response bytes | 4 MiB (`send_window`; quinn: 10 MB) | the socket's send buffer |
//! | request head | `[http] max_header_bytes` (QPACK field section) | the same |
//! | stalled response write | `[gateway.limits] send_timeout` | the same |
//! | datagram size | 1200 bytes, raised only by MTU discovery up to `max_mtu` (1452) | MSS clamp 1360 |
//!
//! # Datagram size
//!
//! A connection starts with 1200-byte datagrams (QUIC's minimum, which
//! every path that carries QUIC at all carries) and sends larger ones only
//! after a probe of that size was acknowledged (DPLPMTUD, RFC 8899). When
//! larger packets start to vanish, quinn's black-hole detection falls back
//! to 1200. So no datagram ever exceeds the path MTU proven on that path,
//! and the browser leg cannot hit the PMTU black hole of seed 000, which
//! on TCP needs the MSS clamp. The TCP edge's ICMP-dependent failure mode
//! does not exist here.
//!
//! # Not offered
//!
//! Extended CONNECT: WebSockets over HTTP/3 (RFC 9220), WebTransport,
//! CONNECT-UDP. The gateway does not announce
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so clients must not send one
//! (browsers open their WebSockets over HTTP/2 or HTTP/1.1). One that
//! arrives anyway is refused: a `:protocol` h3 knows (`webtransport`,
//! `connect-udp`) gets 501 `h3_extended_connect`; any other, `websocket`
//! included, is a malformed request to h3, which resets the stream with
//! `H3_MESSAGE_ERROR` (counted in `gateway_browser_malformed_requests_total`). 0-RTT
//! is off (see [`super::tls::quic_config`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use http::{HeaderMap, Method, Request, Response, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tracing::field::Empty;
use tracing::{Instrument as _, Span, debug, info_span};

use super::admission::Permit;
use super::http::{Shared, TlsSni, request_span, screen, stopping};
use super::tls::CertResolver;
use crate::bridge::page::ErrorPage;
use crate::bridge::{Body, ClientCn, Conn, RequestBody};
use crate::config::Http3;

/// The h3 request stream over quinn.
type Stream<S> = h3::server::RequestStream<S, Bytes>;

/// Counters and histograms of the HTTP/3 edge, registered beside the
/// gateway's own (`gateway_quic_*`).
#[derive(Clone)]
pub struct QuicStats {
    /// Handshakes by `result`: `ok`, `failed` (bad client, wrong ALPN,
    /// protocol error), `timeout` (not done within `[tls] handshake_timeout`).
    pub handshakes: IntCounterVec,
    /// QUIC connections open now.
    pub open: IntGauge,
    /// Packets the gateway sent on connections that have ended.
    pub sent_packets: IntCounter,
    /// Of those, packets declared lost.
    pub lost_packets: IntCounter,
    /// MTU black holes quinn detected (larger datagrams lost: fell back to 1200).
    pub black_holes: IntCounter,
    /// Smoothed RTT of each connection, sampled when it ends.
    pub rtt: Histogram,
    /// Path MTU each connection had reached when it ended.
    pub mtu: Histogram,
}

/// Buckets of [`QuicStats::rtt`], seconds: 1 ms to 10 s.
const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of [`QuicStats::mtu`], bytes: QUIC's minimum, common tunnel
/// sizes, Ethernet.
const MTU_BUCKETS: &[f64] = &[1200.0, 1280.0, 1350.0, 1400.0, 1420.0, 1452.0, 1472.0];

impl Default for QuicStats {
    fn default() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
        };
        let handshakes = IntCounterVec::new(
            Opts::new(
                "gateway_quic_handshakes_total",
                "QUIC handshakes with browsers by result: ok, failed (bad client, wrong ALPN, protocol error), or timeout (not done within [tls] handshake_timeout).",
            ),
            &["result"],
        )
        .unwrap_or_else(|e| unreachable!("metric gateway_quic_handshakes_total: {e}"));
        for r in ["ok", "failed", "timeout"] {
            handshakes.with_label_values(&[r]);
        }
        Self {
            handshakes,
            open: IntGauge::new(
                "gateway_quic_connections_open",
                "QUIC (HTTP/3) connections with browsers open now.",
            )
            .unwrap_or_else(|e| unreachable!("metric gateway_quic_connections_open: {e}")),
            sent_packets: counter(
                "gateway_quic_sent_packets_total",
                "Packets sent on QUIC connections that have ended.",
            ),
            lost_packets: counter(
                "gateway_quic_lost_packets_total",
                "Packets declared lost on QUIC connections that have ended.",
            ),
            black_holes: counter(
                "gateway_quic_mtu_black_holes_total",
                "Path MTU black holes detected on QUIC connections (datagram size fell back to 1200 bytes).",
            ),
            rtt: histogram(
                "gateway_quic_rtt_seconds",
                "Smoothed round-trip time of each QUIC connection, sampled when it ends.",
                RTT_BUCKETS,
            ),
            mtu: histogram(
                "gateway_quic_path_mtu_bytes",
                "Datagram size each QUIC connection had proven when it ended (starts at 1200).",
                MTU_BUCKETS,
            ),
        }
    }
}

impl QuicStats {
    /// The collectors, for a registry.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.handshakes.clone()),
            Box::new(self.open.clone()),
            Box::new(self.sent_packets.clone()),
            Box::new(self.lost_packets.clone()),
            Box::new(self.black_holes.clone()),
            Box::new(self.rtt.clone()),
            Box::new(self.mtu.clone()),
        ]
    }

    fn handshake(&self, result: &str) {
        self.handshakes.with_label_values(&[result]).inc();
    }

    /// Records the path statistics of a connection that ended.
    fn ended(&self, conn: &quinn::Connection) {
        let path = conn.stats().path;
        self.sent_packets.inc_by(path.sent_packets);
        self.lost_packets.inc_by(path.lost_packets);
        self.black_holes.inc_by(path.black_holes_detected);
        self.rtt.observe(path.rtt.as_secs_f64());
        self.mtu.observe(f64::from(path.current_mtu));
    }
}

/// Why the HTTP/3 endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The TLS configuration offers no cipher suite QUIC can start with.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Tls(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// A configured value quinn refused.
    #[error("[http3] {0}")]
    Config(String),
    /// The socket could not be used.
    #[error("QUIC endpoint: {0}")]
    Io(#[from] io::Error),
}

/// A quinn endpoint on `socket`, serving `tls` (from
/// [`super::tls::quic_config`]) with the limits of `cfg`.
pub fn endpoint(
    socket: std::net::UdpSocket,
    tls: rustls::ServerConfig,
    cfg: &Http3,
) -> Result<quinn::Endpoint, QuicError> {
    let crypto = QuicServerConfig::try_from(Arc::new(tls))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport(cfg)?));
    let mut endpoint = EndpointConfig::default();
    endpoint
        .max_udp_payload_size(cfg.max_mtu)
        .map_err(|e| QuicError::Config(format!("max_mtu {}: {e}", cfg.max_mtu)))?;
    let runtime = Arc::new(quinn::TokioRuntime);
    Ok(quinn::Endpoint::new(
        endpoint,
        Some(server),
        socket,
        runtime,
    )?)
}

/// Unidirectional streams a client may open: HTTP/3 needs three (control,
/// QPACK encoder and decoder); the rest is room for grease.
const MAX_UNI_STREAMS: u32 = 8;

fn transport(cfg: &Http3) -> Result<TransportConfig, QuicError> {
    let mut t = TransportConfig::default();
    let idle = IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|e| QuicError::Config(format!("idle_timeout: {e}")))?;
    t.max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(cfg.stream_window))
        .receive_window(VarInt::from_u32(cfg.conn_window))
        .send_window(u64::from(cfg.send_window))
        .initial_mtu(Http3::INITIAL_MTU)
        .min_mtu(Http3::INITIAL_MTU);
    let discovery = (cfg.max_mtu > Http3::INITIAL_MTU).then(|| {
        let mut d = MtuDiscoveryConfig::default();
        d.upper_bound(cfg.max_mtu);
        d
    });
    t.mtu_discovery_config(discovery);
    Ok(t)
}

/// One HTTP/3 listener.
pub struct Quic {
    /// The endpoint (its UDP socket bound).
    pub endpoint: quinn::Endpoint,
    /// Certificates, for the 421 check (the TLS edge's resolver).
    pub resolver: Arc<CertResolver>,
    /// Handshake deadline (`[tls] handshake_timeout`).
    pub handshake_timeout: Duration,
    /// Counters.
    pub stats: Arc<QuicStats>,
}

/// Serves browsers over HTTP/3 until `shutdown` turns true; then refuses
/// new connections and drains the open ones (GOAWAY).
pub async fn serve(quic: Quic, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let quic = Arc::new(quic);
    loop {
        let incoming = tokio::select! {
            i = quic.endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            () = stopping(&mut shutdown) => {
                quic.endpoint.set_server_config(None);
                return;
            }
        };
        let peer = incoming.remote_address();
        let permit = match shared.admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                shared.stats.refused.count(why);
                debug!(%peer, reason = why.label(), "QUIC connection refused");
                incoming.refuse();
                continue;
            }
        };
        let span = info_span!("conn", %peer, proto = "h3", device = Empty);
        let conn = Connection {
            quic: quic.clone(),
            shared: shared.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(conn.run(incoming, peer, permit).instrument(span));
    }
}

struct Connection {
    quic: Arc<Quic>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// What every request of one connection carries.
struct Session {
    conn: Conn,
    sni: Option<Arc<str>>,
    client_cn: Option<Arc<str>>,
    /// The connection's span and whether it has named its device yet.
    span: Span,
    named: AtomicBool,
}

impl Connection {
    async fn run(mut self, incoming: quinn::Incoming, peer: SocketAddr, permit: Permit) {
        let stats = self.quic.stats.clone();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                stats.handshake("failed");
                debug!("QUIC connection not accepted: {e}");
                return;
            }
        };
        let conn = match tokio::time::timeout(self.quic.handshake_timeout, connecting).await {
            Err(_) => {
                stats.handshake("timeout");
                debug!(timeout = ?self.quic.handshake_timeout, "QUIC handshake did not finish in time");
                return;
            }
            Ok(Err(e)) => {
                stats.handshake("failed");
                debug!("QUIC handshake failed: {e}");
                return;
            }
            Ok(Ok(c)) => c,
        };
        stats.handshake("ok");
        stats.open.inc();
        let session = Arc::new(Session {
            conn: Conn {
                client: peer,
                scheme: "https",
            },
            sni: server_name(&conn).map(Arc::from),
            client_cn: client_common_name(&conn).map(Arc::from),
            span: Span::current(),
            named: AtomicBool::new(false),
        });
        self.requests(&conn, session).await;
        stats.ended(&conn);
        stats.open.dec();
        drop(permit);
    }

    /// Accepts requests until the client or the drain ends the connection.
    async fn requests(&mut self, conn: &quinn::Connection, session: Arc<Session>) {
        let mut builder = h3::server::builder();
        builder.max_field_section_size(self.shared.http.max_header_bytes as u64);
        let mut h3 = match builder
            .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                debug!("HTTP/3 set-up failed: {e}");
                return;
            }
        };
        let mut draining = false;
        loop {
            tokio::select! {
                r = h3.accept() => match r {
                    Ok(Some(resolver)) => self.spawn(resolver, &session),
                    // GOAWAY exchanged and every request done.
                    Ok(None) => {
                        conn.close(VarInt::from_u32(H3_NO_ERROR), b"");
                        return;
                    }
                    Err(e) => {
                        self.ended(&e);
                        return;
                    }
                },
                () = stopping(&mut self.shutdown), if !draining => {
                    draining = true;
                    if let Err(e) = h3.shutdown(0).await {
                        debug!("HTTP/3 GOAWAY not sent: {e}");
                        return;
                    }
                }
            }
        }
    }

    /// Reads the request head and answers it on a task of its own.
    fn spawn(&self, resolver: Resolver, session: &Arc<Session>) {
        let shared = self.shared.clone();
        let quic = self.quic.clone();
        let session = session.clone();
        let task = async move {
            match resolver.resolve_request().await {
                Ok((req, stream)) => request(req, stream, &shared, &quic, &session).await,
                Err(e) => {
                    shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    debug!("HTTP/3 request refused: {e}");
                }
            }
        };
        tokio::spawn(task.instrument(Span::current()));
    }

    /// Counts a connection that h3 ended with `e`: a protocol error of the
    /// client's (timeouts and closes are the normal ends).
    fn ended(&self, e: &h3::error::ConnectionError) {
        if !e.is_h3_no_error() && matches!(e, h3::error::ConnectionError::Local { .. }) {
            self.shared
                .stats
                .http_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        debug!("HTTP/3 connection ended: {e}");
    }
}

/// A request whose head h3 has yet to read.
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// The HTTP/3 application error code for a clean close.
const H3_NO_ERROR: u32 = 0x100;

/// The server name the client asked for, lower case, no trailing dot.
fn server_name(conn: &quinn::Connection) -> Option<String> {
    let data = conn.handshake_data()?.downcast::<HandshakeData>().ok()?;
    let name = data.server_name?;
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// The common name of a verified client certificate.
fn client_common_name(conn: &quinn::Connection) -> Option<String> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    super::tls::common_name(chain.first()?)
}

/// Answers one request: the TCP edge's checks, then the bridge; the
/// response is streamed back.
async fn request<S>(
    req: Request<()>,
    stream: Stream<S>,
    shared: &Shared,
    quic: &Quic,
    session: &Session,
) where
    S: h3::quic::BidiStream<Bytes> + Send + 'static,
    S::RecvStream: Send + Sync + 'static,
    S::SendStream: Send,
{
    let (mut send, recv) = stream.split();
    let mut req = req.map(|()| H3Body::new(recv).boxed());
    if let Some(cn) = &session.client_cn {
        req.extensions_mut().insert(ClientCn(cn.clone()));
    }
    if let Some(sni) = &session.sni {
        req.extensions_mut().insert(TlsSni(sni.clone()));
    }
    let span = request_span(&shared.domain, &req, &session.span, &session.named);
    async {
        let refused = refuse(&req, session, quic, shared);
        let resp = match refused {
            Some(page) => page.render(req.headers()),
            None => match shared.bridge.clone().handle(session.conn, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
        };
        respond(&mut send, resp, shared).await;
    }
    .instrument(span)
    .await;
}

/// The checks made before the bridge: an extended CONNECT (501), then
/// those of the TCP edge (other CONNECT 405, host not covered by the SNI 421).
fn refuse(
    req: &Request<RequestBody>,
    session: &Session,
    quic: &Quic,
    shared: &Shared,
) -> Option<ErrorPage> {
    if req.method() == Method::CONNECT && req.extensions().get::<h3::ext::Protocol>().is_some() {
        shared.stats.connect_refused.fetch_add(1, Ordering::Relaxed);
        return Some(ErrorPage::new(
            501,
            "h3_extended_connect",
            "Extended CONNECT is not offered over HTTP/3 (no WebSockets per RFC 9220, no WebTransport, no CONNECT-UDP); open WebSockets over HTTP/2 or HTTP/1.1.",
        ));
    }
    let sni = session.sni.as_deref().map(|s| (s, &*quic.resolver));
    screen(req, sni, &shared.stats)
}

/// Sends `resp` on `send`: head, body chunks, trailers, end. A write that
/// makes no progress for `send_timeout`, or a body that fails, resets the
/// stream.
async fn respond<S>(send: &mut Stream<S>, resp: Response<Body>, shared: &Shared)
where
    S: h3::quic::SendStream<Bytes>,
{
    let (mut parts, mut body) = resp.into_parts();
    strip_connection_fields(&mut parts.headers);
    if let Some(v) = super::http::hsts("https", shared.http.hsts_max_age) {
        parts.headers.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        debug!("HTTP/3 response head not sent: {e}");
        return;
    }
    let timeout = shared.limits.send_timeout;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                debug!("response body ended early: {e}");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => tokio::time::timeout(timeout, send.send_data(data)).await,
            Err(frame) => match frame.into_trailers() {
                Ok(t) => tokio::time::timeout(timeout, send.send_trailers(t)).await,
                Err(_) => continue,
            },
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("HTTP/3 response not sent: {e}");
                return;
            }
            Err(_) => {
                shared.stats.send_timeouts.fetch_add(1, Ordering::Relaxed);
                debug!(
                    ?timeout,
                    "HTTP/3 response write stalled; resetting the stream"
                );
                send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                return;
            }
        }
    }
    if let Err(e) = send.finish().await {
        debug!("HTTP/3 response not finished: {e}");
    }
}

/// Removes the fields HTTP/3 forbids (RFC 9114 §4.2: connection-specific).
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// A request body read from an HTTP/3 request stream, as the client's
/// DATA frames arrive (QUIC flow control holds the rest back). Trailers
/// are not carried.
struct H3Body<S> {
    recv: Stream<S>,
    /// What [`H3Body::new`] read ahead, handed out first.
    ahead: Option<Result<Frame<Bytes>, io::Error>>,
    done: bool,
}

impl<S: h3::quic::RecvStream> H3Body<S> {
    /// Looks at what already arrived: a GET's stream usually ends with its
    /// HEADERS frame, and a body known to be empty lets the bridge send
    /// the request head to the device with its end (as for HTTP/1.1 and
    /// HTTP/2), instead of an empty body message after it.
    fn new(recv: Stream<S>) -> Self {
        let mut body = Self {
            recv,
            ahead: None,
            done: false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Some(r)) = Pin::new(&mut body).poll_frame(&mut cx) {
            body.ahead = Some(r);
        }
        body
    }
}

impl<S> http_body::Body for H3Body<S>
where
    S: h3::quic::RecvStream,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(r) = self.ahead.take() {
            return Poll::Ready(Some(r));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.recv.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut buf))) => {
                let data = buf.copy_to_bytes(buf.remaining());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ahead.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_connection_fields(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }
}
