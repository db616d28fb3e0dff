//! HTTP/1.1 upstreams: a device's raw service (HTTP/1.1 spoken over the
//! bytes of a Raw link stream, the way a libwebsockets server that adopts
//! sockets sits behind `device-sim --forward`) and `direct` upstreams (a
//! server by address, MSS-clamped, optionally TLS with a pinned
//! certificate, connections reused).
//!
//! The request is the same normalized one a link HTTP service gets, written
//! by hyper's HTTP/1.1 client; bodies stream both ways. A WebSocket
//! upgrade carries a fresh `Sec-WebSocket-Key`, and after the upstream's
//! 101 (its `Sec-WebSocket-Accept` checked) the gateway relays whole
//! messages between the browser's socket and the upstream's (module
//! `relay`). An upstream that closes before answering is reported as a
//! handshake rejection (502 `upstream_rejected`), at once.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::{Code, MsgKind};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tracing::info;

use super::page::ErrorPage;
use super::{Body, hop_by_hop};
use crate::config::{Direct, DirectTls};
use crate::edge::listener;
use crate::link::{DeviceStream, StreamEvent};

/// Bytes buffered per direction between a raw stream and hyper.
const RAW_BUFFER: usize = 16 * 1024;

/// Any byte stream an upstream connection runs on.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A request for an upstream, normalized.
pub(super) struct UpstreamRequest {
    pub(super) method: String,
    /// Origin-form target.
    pub(super) target: String,
    /// Header fields, Host first.
    pub(super) fields: Vec<(HeaderName, Vec<u8>)>,
    /// `Sec-WebSocket-Key` for an upgrade.
    pub(super) ws_key: Option<String>,
}

impl UpstreamRequest {
    fn build(&self, absolute: Option<&str>, body: Body) -> Result<Request<Body>, ErrorPage> {
        let uri = match absolute {
            Some(authority) => format!("http://{authority}{}", self.target),
            None => self.target.clone(),
        };
        let mut b = Request::builder().method(self.method.as_str()).uri(uri);
        for (n, v) in &self.fields {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                b = b.header(n, v);
            }
        }
        if let Some(key) = &self.ws_key {
            b = b
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_VERSION, "13")
                .header(header::SEC_WEBSOCKET_KEY, key.as_str());
        }
        b.body(body).map_err(|e| {
            ErrorPage::new(
                502,
                "bad_upstream_request",
                format!("cannot build the upstream request: {e}"),
            )
        })
    }

    fn host(&self) -> String {
        self.fields
            .iter()
            .find(|(n, _)| n == header::HOST)
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
            .unwrap_or_else(|| "device".into())
    }
}

/// A new `Sec-WebSocket-Key`.
pub(super) fn ws_key() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("no randomness for a WebSocket key: {e}"));
    base64_std(&b)
}

fn base64_std(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sends `req` over HTTP/1.1 on `io` (one connection: raw streams).
pub(super) async fn send_on(
    io: impl Io + 'static,
    req: &UpstreamRequest,
    body: Body,
    timeout: Duration,
    device: &str,
) -> Result<Response<Incoming>, ErrorPage> {
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(io))
        .await
        .map_err(|e| rejected(device, &e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let request = req.build(None, body)?;
    match tokio::time::timeout(timeout, send.send_request(request)).await {
        Err(_) => Err(timed_out(device, timeout)),
        Ok(Err(e)) => Err(rejected(device, &e.to_string())),
        Ok(Ok(r)) => Ok(r),
    }
}

fn rejected(device: &str, why: &str) -> ErrorPage {
    info!(device, "upstream rejected the request: {why}");
    ErrorPage::new(
        502,
        "upstream_rejected",
        format!("The server of device {device} closed the connection without answering ({why})."),
    )
}

fn timed_out(device: &str, timeout: Duration) -> ErrorPage {
    ErrorPage::new(
        504,
        "device_timeout",
        format!("Device {device} did not answer within {timeout:?}."),
    )
}

/// The upstream's response as the browser's (hop-by-hop fields dropped,
/// the body streamed).
pub(super) fn pass_back(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let names: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|n| hop_by_hop(n))
        .cloned()
        .collect();
    for n in names {
        parts.headers.remove(n);
    }
    Response::from_parts(parts, body.map_err(io::Error::other).boxed())
}

/// A Raw device stream as a byte stream for hyper: two pumps through an
/// in-memory pipe of [`RAW_BUFFER`] bytes per direction. Device data is
/// credited back only once written into the pipe; FIN maps to EOF both ways.
pub(super) fn raw_io(mut stream: DeviceStream) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(RAW_BUFFER);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let sender = stream.sender();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; RAW_BUFFER];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = sender.send(MsgKind::Bytes, Vec::new(), false, true).await;
                    return;
                }
                Ok(n) => {
                    if sender
                        .send(MsgKind::Bytes, buf[..n].to_vec(), false, false)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match stream.recv().await {
                Some(StreamEvent::Data {
                    msg: MsgKind::Bytes,
                    data,
                    fin,
                    ..
                }) => {
                    if wr.write_all(&data).await.is_err() {
                        stream.reset(Code::CANCEL);
                        break;
                    }
                    if fin {
                        let _ = wr.shutdown().await;
                        // Half-closed: keep the stream until our side is done.
                        let _ = up.await;
                        return;
                    }
                }
                Some(StreamEvent::Data { .. }) => {
                    stream.reset(Code::PROTOCOL);
                    break;
                }
                Some(StreamEvent::Reset(_) | StreamEvent::Closed) | None => break,
            }
        }
        up.abort();
    });
    ours
}

/// Direct upstreams' HTTP clients, one per device (connection reuse),
/// rebuilt when the device's settings change.
#[derive(Default)]
pub(super) struct DirectClients {
    map: Mutex<HashMap<String, DirectClient>>,
}

/// A direct upstream's settings and its pooled client.
struct DirectClient {
    direct: Direct,
    client: Client<DirectConnector, Body>,
}

impl DirectClients {
    fn client(&self, device: &str, direct: &Direct) -> Client<DirectConnector, Body> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(device)
            && c.direct == *direct
        {
            return c.client.clone();
        }
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(DirectConnector::new(direct));
        map.insert(
            device.to_string(),
            DirectClient {
                direct: direct.clone(),
                client: client.clone(),
            },
        );
        client
    }

    /// Sends `req` to device `device`'s server.
    pub(super) async fn send(
        &self,
        device: &str,
        direct: &Direct,
        req: &UpstreamRequest,
        body: Body,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ErrorPage> {
        let client = self.client(device, direct);
        let request = req.build(Some(&req.host()), body)?;
        match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_) => Err(timed_out(device, timeout)),
            Ok(Err(e)) => {
                let why =
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                if e.is_connect() {
                    Err(ErrorPage::new(
                        502,
                        "device_offline",
                        format!(
                            "Device {device} ({}) cannot be reached: {why}.",
                            direct.address
                        ),
                    ))
                } else {
                    Err(rejected(device, &why))
                }
            }
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// Connects to a direct upstream: MSS clamp before the SYN, then TLS with
/// the pinned certificate when configured.
#[derive(Clone)]
pub(super) struct DirectConnector {
    direct: Direct,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl DirectConnector {
    fn new(direct: &Direct) -> Self {
        let tls = direct.tls.as_ref().map(|t| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(Pinned {
                pin: t.pinned_cert_sha256,
                provider: provider.clone(),
            });
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|e| unreachable!("ring supports the defaults: {e}"))
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        });
        Self {
            direct: direct.clone(),
            tls,
        }
    }
}

/// A connection to a direct upstream.
pub(super) struct DirectIo(Box<dyn Io>);

impl Connection for DirectIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for DirectIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for DirectIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tower_service::Service<Uri> for DirectConnector {
    type Response = TokioIo<DirectIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<DirectIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = listener::connect(this.direct.address, &this.direct.socket).await?;
            let io: Box<dyn Io> = match (&this.tls, &this.direct.tls) {
                (Some(cfg), Some(DirectTls { server_name, .. })) => {
                    let name = if server_name.is_empty() {
                        uri.host().unwrap_or("device").to_string()
                    } else {
                        server_name.clone()
                    };
                    let name = ServerName::try_from(name).map_err(io::Error::other)?;
                    Box::new(
                        tokio_rustls::TlsConnector::from(cfg.clone())
                            .connect(name, tcp)
                            .await?,
                    )
                }
                _ => Box::new(tcp),
            };
            Ok(TokioIo::new(DirectIo(io)))
        })
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned (handshake
/// signatures are still checked with its key).
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the upstream's certificate does not match pinned_cert_sha256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether `accept` answers `key` (RFC 6455 §4.2.2).
pub(super) fn accept_matches(key: &str, accept: Option<&HeaderValue>) -> bool {
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    accept.is_some_and(|a| a.as_bytes() == want.as_bytes())
}

/// 502 for an upstream that answered an upgrade with something else than a
/// valid 101 (its own status otherwise passes back).
pub(super) fn bad_upgrade(device: &str, status: StatusCode) -> ErrorPage {
    ErrorPage::new(
        502,
        "upstream_rejected",
        format!(
            "The server of device {device} refused the WebSocket upgrade with an invalid answer ({status})."
        ),
    )
}

/// The empty body for upgrade requests.
pub(super) fn no_body() -> Body {
    super::page::full(Bytes::new())
}
