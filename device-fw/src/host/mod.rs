//! The host platform (feature `host`): tokio TCP, the OS's randomness, the
//! wall clock for handshake timestamps, a simulated board, raw-service
//! forwarding to local TCP servers, and fleets of simulated devices.
//!
//! ## Layout
//!
//! - this module: [`TokioPlatform`] and its [`TokioConn`] transport;
//! - `board`: [`SimBoard`];
//! - `forward`: [`SimApp`], the sample controller plus raw services bridged to TCP;
//! - `echo`: [`EchoApp`], a device with fixed echo routes for gateway tests and benchmarks;
//! - `fleet`: keys and ids derived from a seed, and the registry file for the gateway.

mod board;
mod echo;
mod fleet;
mod forward;

pub use board::SimBoard;
pub use echo::{EchoApp, EchoOptions};
pub use fleet::{DeviceSpec, fleet, parse_key, registry_toml};
pub use forward::{Forward, SimApp};

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::link::{ConnectError, Platform, Transport};
use proto::Instant;

fn base() -> tokio::time::Instant {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

/// Dials a gateway over TCP with tokio.
#[derive(Clone, Debug)]
pub struct TokioPlatform {
    /// The gateway's device-link address.
    pub gateway: SocketAddr,
    /// How long a dial may take. Default 5 s.
    pub connect_timeout: Duration,
}

impl TokioPlatform {
    /// A platform dialing `gateway`.
    pub fn new(gateway: SocketAddr) -> Self {
        Self {
            gateway,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A tokio TCP connection as a [`Transport`].
pub struct TokioConn(TcpStream);

impl TokioConn {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Self(stream)
    }
}

/// An I/O error from tokio, as embedded-io sees it.
#[derive(Debug)]
pub struct IoError(pub std::io::Error);

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {}

impl embedded_io_async::Error for IoError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// Read half.
pub struct Reader<'a>(ReadHalf<'a>);
/// Write half.
pub struct Writer<'a>(WriteHalf<'a>);

impl ErrorType for Reader<'_> {
    type Error = IoError;
}
impl ErrorType for Writer<'_> {
    type Error = IoError;
}

impl Read for Reader<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        self.0.read(buf).await.map_err(IoError)
    }
}

impl Write for Writer<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, IoError> {
        self.0.write(buf).await.map_err(IoError)
    }
    async fn flush(&mut self) -> Result<(), IoError> {
        self.0.flush().await.map_err(IoError)
    }
}

impl Transport for TokioConn {
    type Reader<'a> = Reader<'a>;
    type Writer<'a> = Writer<'a>;
    fn split(&mut self) -> (Reader<'_>, Writer<'_>) {
        let (r, w) = self.0.split();
        (Reader(r), Writer(w))
    }
}

impl Platform for TokioPlatform {
    type Conn<'a> = TokioConn;

    async fn connect(&mut self) -> Result<TokioConn, ConnectError> {
        let dial = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.gateway));
        match dial.await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(TokioConn(s))
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ConnectError::Refused)
            }
            Ok(Err(_)) => Err(ConnectError::Other),
            Err(_) => Err(ConnectError::Refused),
        }
    }

    fn now() -> Instant {
        Instant::from_millis(base().elapsed().as_millis() as u64)
    }

    async fn sleep_until(at: Instant) {
        tokio::time::sleep_until(base() + Duration::from_millis(at.as_millis())).await;
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        // The OS RNG does not fail on the platforms we run on; if it did, a
        // handshake with a predictable ephemeral must not happen.
        if getrandom::fill(buf).is_err() {
            panic!("the operating system's random number generator failed");
        }
    }

    fn timestamp(&mut self) -> u64 {
        // Microseconds of wall-clock time: above anything a previous run sent.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}
