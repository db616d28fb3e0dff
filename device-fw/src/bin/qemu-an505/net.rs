//! The link runtime's platform on this board: TCP through embassy-net,
//! embassy-time on SysTick, the derived RNG, and the host's clock for
//! handshake timestamps.

use device_fw::link::{ConnectError, Platform, Transport};
use embassy_net::Stack;
use embassy_net::tcp::{self, TcpReader, TcpSocket, TcpWriter};
use embassy_time::{Duration, Timer};
use proto::Instant;

use crate::rng::JitterRng;

/// Socket buffers for the one gateway connection (as on the NUCLEO-H563ZI).
pub(crate) const SOCKET_BUFFER: usize = 2048;

pub(crate) struct NetPlatform {
    pub(crate) stack: Stack<'static>,
    pub(crate) rx: &'static mut [u8; SOCKET_BUFFER],
    pub(crate) tx: &'static mut [u8; SOCKET_BUFFER],
    pub(crate) rng: JitterRng,
    pub(crate) gateway: (embassy_net::Ipv4Address, u16),
    /// The host's clock at boot, µs since 1970 (semihosting SYS_TIME).
    pub(crate) boot_us: u64,
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

impl Platform for NetPlatform {
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
        self.rng.fill_bytes(buf);
    }

    fn timestamp(&mut self) -> u64 {
        // The host's clock at boot plus uptime: increasing across reboots
        // as long as the host's clock is, so no StaleTimestamp round trip.
        self.boot_us + embassy_time::Instant::now().as_micros()
    }
}
