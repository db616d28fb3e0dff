//! What the link runtime needs from the board or the host: a way to dial the
//! gateway, a clock, randomness and a handshake timestamp.

use core::future::Future;

use embedded_io_async::{Read, Write};
use proto::Instant;

/// A connected byte stream that can be read and written at the same time.
///
/// The runtime always has a read pending while it writes, so a peer that
/// is itself blocked writing can never stall this side (the failure of
/// seed 002). embassy-net's `TcpSocket::split` and tokio's
/// `TcpStream::split` both fit.
pub trait Transport {
    /// The read half.
    type Reader<'a>: Read
    where
        Self: 'a;
    /// The write half.
    type Writer<'a>: Write
    where
        Self: 'a;

    /// Borrows both halves.
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

/// Why dialing the gateway failed (the runtime only logs it and backs off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// No network yet (link down, no address).
    NoNetwork,
    /// The gateway refused or did not answer.
    Refused,
    /// Name or address resolution failed.
    Resolve,
    /// Anything else from the stack.
    Other,
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NoNetwork => "network not ready",
            Self::Refused => "connection refused or timed out",
            Self::Resolve => "gateway address did not resolve",
            Self::Other => "network error",
        })
    }
}

/// The platform under the link runtime: embassy on the STM32H5, tokio in
/// `device-sim`, a simulated network in tests.
pub trait Platform {
    /// A connection to the gateway.
    type Conn<'a>: Transport
    where
        Self: 'a;

    /// Dials the gateway.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Conn<'_>, ConnectError>>;

    /// The current time on the platform's monotonic clock (a global clock:
    /// embassy-time on the device, tokio's in hosts and tests).
    fn now() -> Instant;

    /// Waits until `at` (returns at once if it has passed).
    fn sleep_until(at: Instant) -> impl Future<Output = ()>;

    /// Fills `buf` with cryptographically secure random bytes (ephemeral
    /// keys) — a hardware RNG on the device, the OS on a host.
    fn fill_random(&mut self, buf: &mut [u8]);

    /// A handshake timestamp: each call must return more than every earlier
    /// call for this device key, across reboots (a real-time clock, or a
    /// boot counter in flash with the uptime below it). The runtime also
    /// keeps it above any value the gateway reports as last accepted.
    fn timestamp(&mut self) -> u64;
}
