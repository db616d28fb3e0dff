//! The link runtime's platform on an embassy board: TCP through
//! embassy-net, embassy-time; randomness and handshake timestamps come from
//! the board ([`Board`]). Shared by the board binaries (`#[path]`).

use device_fw::link::{ConnectError, Platform, Transport};
use embassy_net::Stack;
use embassy_net::tcp::{self, TcpReader, TcpSocket, TcpWriter};
use embassy_time::{Duration, Timer};
use proto::Instant;

/// Socket buffers for the one gateway connection.
pub(crate) const SOCKET_BUFFER: usize = 2048;

/// What differs between boards: where randomness and the handshake
/// timestamp come from.
pub(crate) trait Board {
    /// Fills `buf` with random bytes (ephemeral keys).
    fn fill_random(&mut self, buf: &mut [u8]);
    /// Microseconds for the handshake timestamp (increasing per session).
    fn timestamp(&mut self) -> u64;
}

pub(crate) struct NetPlatform<B> {
    pub(crate) stack: Stack<'static>,
    pub(crate) rx: &'static mut [u8; SOCKET_BUFFER],
    pub(crate) tx: &'static mut [u8; SOCKET_BUFFER],
    pub(crate) gateway: (embassy_net::Ipv4Address, u16),
    pub(crate) board: B,
}

pub(crate) struct TcpConn<'a>(TcpSocket<'a>);

impl Transport for TcpConn<'_> {
    type Reader<'b>
        = TcpReader<'b>
    where
        Self: 'b;
    type Writer<'b>
        = TcpWriter<'b>
    where
        Self: 'b;

    fn split(&mut self) -> (TcpReader<'_>, TcpWriter<'_>) {
        self.0.split()
    }
}

impl<B: Board + 'static> Platform for NetPlatform<B> {
    type Conn<'a> = TcpConn<'a>;

    async fn connect(&mut self) -> Result<TcpConn<'_>, ConnectError> {
        if !self.stack.is_config_up() {
            return Err(ConnectError::NoNetwork);
        }
        let mut socket = TcpSocket::new(self.stack, &mut self.rx[..], &mut self.tx[..]);
        // Liveness is the session's job (PING, idle timeout); this only bounds the dial.
        socket.set_timeout(Some(Duration::from_secs(10)));
        socket.connect(self.gateway).await.map_err(|e| match e {
            tcp::ConnectError::ConnectionReset | tcp::ConnectError::TimedOut => {
                ConnectError::Refused
            }
            tcp::ConnectError::NoRoute => ConnectError::NoNetwork,
            tcp::ConnectError::InvalidState => ConnectError::Other,
        })?;
        socket.set_timeout(None);
        Ok(TcpConn(socket))
    }

    fn now() -> Instant {
        Instant::from_millis(embassy_time::Instant::now().as_millis())
    }

    async fn sleep_until(at: Instant) {
        Timer::at(embassy_time::Instant::from_millis(at.as_millis())).await;
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        self.board.fill_random(buf);
    }

    fn timestamp(&mut self) -> u64 {
        self.board.timestamp()
    }
}
