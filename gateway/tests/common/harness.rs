//! A gateway on 127.0.0.1:0 with real devices (the `device-fw` runtime and
//! its `EchoApp` or sample controller) and real clients (hyper over rustls,
//! tungstenite).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bytes::Bytes;
use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{EchoApp, EchoOptions, SimApp, SimBoard, TokioPlatform};
use device_fw::link::{Identity, LinkConfig, LinkMemory, run};
use gateway::edge::listener::{self, SocketOptions};
use gateway::server::{Listeners, Server};
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use proto::{Backoff, Config, Params, PublicKey, SecretKey};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::TempDir;

/// The domain every test gateway serves (the test certificate's names).
pub const DOMAIN: &str = "gw.example.com";

/// A device's deterministic key.
pub fn device_key(id: &str) -> SecretKey {
    let mut b = [0x5au8; 32];
    for (i, c) in id.bytes().enumerate() {
        b[i % 32] ^= c;
        b[(i * 7 + 3) % 32] = b[(i * 7 + 3) % 32].wrapping_add(c);
    }
    SecretKey::from_bytes(b)
}

/// A running gateway.
pub struct Gw {
    pub dir: TempDir,
    pub server: Option<Server>,
    /// HTTPS for browsers.
    pub addr: SocketAddr,
    /// The device link.
    pub link: SocketAddr,
    pub gateway_key: PublicKey,
    pub ca_pem: String,
}

/// A device `[[device]]` entry: id and extra TOML lines under it.
pub struct Dev<'a>(pub &'a str, pub &'a str);

impl Gw {
    /// Starts a gateway with `sections` (extra top-level TOML such as
    /// `[http]`) and `devices`.
    pub async fn start(sections: &str, devices: &[Dev<'_>]) -> Self {
        let dir = TempDir::new("gw");
        let ca =
            gateway::edge::tls::local_ca(&[DOMAIN.to_string(), format!("*.{DOMAIN}")]).unwrap();
        dir.write("tls/fullchain.pem", &ca.chain_pem);
        dir.write("tls/privkey.pem", &ca.key_pem);
        let gateway_key = dir.key();
        let opts = SocketOptions::default();
        let https = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let link = listener::bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let port = https.local_addr().unwrap().port();
        let link_port = link.local_addr().unwrap().port();
        let mut text = format!(
            "[gateway]\ndomain = \"{DOMAIN}\"\ndrain_timeout = \"2s\"\n\n\
             [[listen]]\naddress = \"127.0.0.1:{port}\"\n\n\
             [tls]\ncertificates = [{{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }}]\n\n\
             [link]\naddress = \"127.0.0.1:{link_port}\"\n\n{sections}\n"
        );
        // Devices are public unless the test says otherwise (access
        // control has tests of its own).
        for Dev(id, extra) in devices {
            let public = if extra.contains("public =") {
                ""
            } else {
                "public = true\n"
            };
            text.push_str(&format!(
                "\n[[device]]\nid = \"{id}\"\npublic_key = \"{}\"\n{public}{extra}\n",
                device_key(id).public_key()
            ));
        }
        let file = dir.write("gateway.toml", &text);
        let config = gateway::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let server = Server::start_on(
            &config,
            Listeners {
                link,
                edges: vec![https],
            },
        )
        .unwrap();
        Self {
            addr: server.edge_addrs[0],
            link: server.link_addr,
            server: Some(server),
            dir,
            gateway_key,
            ca_pem: ca.ca_pem,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// The value of one sample (`name{labels}` as exposed) in the gateway's
    /// metrics; a panic naming it when it is not there.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = self.server().metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{sample} not in the exposition"))
    }

    fn identity(&self, id: &str) -> Identity {
        Identity {
            key: device_key(id),
            gateway: self.gateway_key,
        }
    }

    /// Runs `app` as device `id` with `link` settings. (Concrete app types:
    /// the runtime's future is `Send` only for those.)
    pub fn device(&self, id: &str, app: EchoApp, link: LinkConfig) -> Device {
        let identity = self.identity(id);
        let addr = self.link;
        let task = tokio::spawn(async move {
            let mut app = app;
            let mut platform = TokioPlatform::new(addr);
            let mut mem = Box::new(DeviceLinkMemory::new());
            run(&mut platform, &mut app, &identity, &link, &mut mem).await;
        });
        Device { task }
    }

    /// The sample controller with raw services forwarded to TCP servers
    /// (`device-sim --forward`), as device `id`.
    pub fn forwarding(
        &self,
        id: &str,
        forwards: Vec<device_fw::host::Forward>,
        link: LinkConfig,
    ) -> Device {
        let identity = self.identity(id);
        let addr = self.link;
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let mut app = SimApp::new(SimBoard::new(7), &id, "sim-test", forwards, None);
            let mut platform = TokioPlatform::new(addr);
            let mut mem = Box::new(DeviceLinkMemory::new());
            run(&mut platform, &mut app, &identity, &link, &mut mem).await;
        });
        Device { task }
    }

    /// The sample controller (the firmware's application) as device `id`.
    pub fn controller(&self, id: &str, link: LinkConfig) -> Device {
        let identity = self.identity(id);
        let addr = self.link;
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let mut app = SimApp::new(SimBoard::new(7), &id, "sim-test", Vec::new(), None);
            let mut platform = TokioPlatform::new(addr);
            let mut mem = Box::new(DeviceLinkMemory::new());
            run(&mut platform, &mut app, &identity, &link, &mut mem).await;
        });
        Device { task }
    }

    /// An echo device whose runtime has room for `STREAMS` streams.
    pub async fn echo_wide<const STREAMS: usize>(&self, id: &str, link: LinkConfig) -> Device {
        let identity = self.identity(id);
        let addr = self.link;
        let app = EchoApp::new(EchoOptions {
            device_id: id.to_string(),
            firmware: "echo-test".into(),
            subprotocols: Vec::new(),
            raw_service: false,
        });
        let task = tokio::spawn(async move {
            let mut app = app;
            let mut platform = TokioPlatform::new(addr);
            let mut mem: Box<LinkMemory<1024, STREAMS>> = Box::new(LinkMemory::new());
            run(&mut platform, &mut app, &identity, &link, &mut mem).await;
        });
        self.wait_online(id).await;
        Device { task }
    }

    /// An echo device with `link` settings; waits until it is online.
    pub async fn echo(&self, id: &str, subprotocols: &[&str], link: LinkConfig) -> EchoDevice {
        let app = EchoApp::new(EchoOptions {
            device_id: id.to_string(),
            firmware: "echo-test".into(),
            subprotocols: subprotocols.iter().map(|s| s.to_string()).collect(),
            raw_service: false,
        });
        let requests = app.requests();
        let device = self.device(id, app, link);
        self.wait_online(id).await;
        EchoDevice { device, requests }
    }

    pub async fn wait_online(&self, id: &str) {
        eventually(&format!("{id} online"), || {
            self.server().hub.device(id).is_some()
        })
        .await;
    }

    fn tls_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A TLS connection for `sni` with `alpn`.
    pub async fn tls(&self, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        TlsConnector::from(self.tls_config(alpn))
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An HTTP client speaking `version` (`1` or `2`) for `host`.
    pub async fn client(&self, version: u8, host: &str) -> Client {
        match version {
            1 => {
                let io = self.tls(host, &[b"http/1.1"]).await;
                let (send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                        .await
                        .unwrap();
                tokio::spawn(conn.with_upgrades());
                Client::H1(send)
            }
            _ => {
                let io = self.tls(host, &[b"h2"]).await;
                assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (send, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(io),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                Client::H2(send)
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// A device task, aborted on drop (a device that vanishes).
pub struct Device {
    pub task: JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct EchoDevice {
    pub device: Device,
    /// Request heads the device received.
    pub requests: Arc<AtomicUsize>,
}

/// Link settings for tests: quick reconnects and the given windows.
pub fn link_config(stream_window: u32, conn_window: u32, max_record: u16) -> LinkConfig {
    link_config_streams(stream_window, conn_window, max_record, 8)
}

/// [`link_config`] with a stream limit.
pub fn link_config_streams(
    stream_window: u32,
    conn_window: u32,
    max_record: u16,
    max_streams: u16,
) -> LinkConfig {
    LinkConfig {
        session: Config {
            params: Params {
                max_record,
                max_streams,
                stream_window,
                conn_window,
            },
            ..Config::DEVICE
        },
        backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    }
}

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

pub fn body(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> ReqBody {
    body(Bytes::new())
}

pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

impl Client {
    pub async fn send(&mut self, req: Request<ReqBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Self::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Self::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    /// A request and its whole body.
    pub async fn fetch(&mut self, req: Request<ReqBody>) -> (http::response::Parts, Bytes) {
        let resp = self.send(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    }
}

/// A GET for `target` at `host` (absolute form for HTTP/2, Host for HTTP/1.1).
pub fn get(version: u8, host: &str, target: &str) -> http::request::Builder {
    request(version, "GET", host, target)
}

pub fn request(version: u8, method: &str, host: &str, target: &str) -> http::request::Builder {
    let b = Request::builder().method(method);
    if version == 1 {
        b.uri(target).header("host", host)
    } else {
        b.uri(format!("https://{host}{target}"))
    }
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The JSON string values of `/head`'s headers as (name, value) pairs.
pub fn head_headers(json: &[u8]) -> Vec<(String, String)> {
    // The device's JSON is simple: [["name","value"],...]; parse it with a tiny scanner.
    let text = std::str::from_utf8(json).unwrap();
    let start = text.find("\"headers\":[").unwrap() + "\"headers\":[".len();
    let mut out = Vec::new();
    let mut rest = &text[start..];
    while let Some(i) = rest.find("[\"") {
        rest = &rest[i + 2..];
        let (name, r) = json_str(rest);
        let r = r.strip_prefix(",\"").unwrap();
        let (value, r) = json_str(r);
        out.push((name, value));
        rest = r;
    }
    out
}

fn json_str(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match chars.next().unwrap().1 {
                'u' => {
                    let hex: String = (0..4).map(|_| chars.next().unwrap().1).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    panic!("unterminated JSON string");
}

/// Any byte stream a WebSocket client can run on.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

pub type WsClient = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// The code of the close frame the gateway sends next (messages before it
/// are skipped).
pub async fn close_code(ws: &mut WsClient) -> Option<u16> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A raw TCP service on 127.0.0.1 (a device's `Forward` target): each
/// connection's bytes are echoed back until it ends, or until a read ends
/// with `until`, which closes that connection. Returns its address.
pub async fn tcp_echo(until: Option<&'static [u8]>) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || until.is_some_and(|u| buf[..n].ends_with(u)) {
                        break;
                    }
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A refused WebSocket handshake: status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Gw {
    /// Opens a WebSocket to `host` + `target` over HTTP/1.1 Upgrade
    /// (`version` 1) or HTTP/2 extended CONNECT (2), with extra `headers`
    /// (Origin, Sec-WebSocket-Protocol); returns the socket and the
    /// subprotocol the gateway answered.
    pub async fn ws(
        &self,
        version: u8,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<(WsClient, Option<String>), Refused> {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let mut client = self.client(version, host).await;
        let mut b = if version == 1 {
            Request::builder()
                .method("GET")
                .uri(target)
                .header("host", host)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        } else {
            Request::builder()
                .method("CONNECT")
                .uri(format!("https://{host}{target}"))
                .extension(hyper::ext::Protocol::from_static("websocket"))
        };
        b = b.header("sec-websocket-version", "13");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let resp = client.send(b.body(empty()).unwrap()).await.unwrap();
        let ok = if version == 1 { 101 } else { 200 };
        if resp.status() != ok {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            return Err(Refused {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        if version == 1 {
            assert_eq!(
                resp.headers()["sec-websocket-accept"],
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            );
        }
        assert!(resp.headers().get("sec-websocket-extensions").is_none());
        let p = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        let upgraded = hyper::upgrade::on(resp).await.unwrap();
        drop(client);
        let boxed: Box<dyn Io> = Box::new(hyper_util::rt::TokioIo::new(upgraded));
        let ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(boxed, Role::Client, None).await;
        Ok((ws, p))
    }
}
