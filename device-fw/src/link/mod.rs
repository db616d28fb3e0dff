//! The link runtime: keeps one device session with the gateway alive and
//! hands its streams to the application.
//!
//! ```text
//!   ┌──────────── run() ─────────────────────────────────────────────┐
//!   │ loop: connect ─▶ drive one session ─▶ back off (full jitter) ─┐ │
//!   │        ▲                                                      │ │
//!   │        └──────────────────────────────────────────────────────┘ │
//!   └─────────────────────────────────────────────────────────────────┘
//!   drive one session:
//!     select { read socket, write pending record, timer }   (never one without the others)
//!     input ─▶ proto::Session ─▶ events ─▶ App::on_event ─▶ App::poll ─▶ poll_transmit ─▶ write
//! ```
//!
//! Memory is one [`LinkMemory`] the caller owns (a `StaticCell` on the
//! device): the session's receive and staging buffers, the output buffer,
//! the socket read buffer, a copy of the event being handled and the stream
//! table. Nothing is allocated. On a board the output and read buffers
//! hold one record (the TCP stack batches records in its socket buffer);
//! a host device sizes them for several, and then one write carries as
//! many whole records as fit (the application stages more between them)
//! and one read takes as many.
//!
//! A GOAWAY from the gateway stops new streams; the gateway closes once the
//! open ones finish, and the device reconnects after its backoff delay. A
//! `StaleTimestamp` refusal moves the device's timestamp above the value the
//! gateway reported, so a device whose clock went back recovers by itself.

mod driver;
mod memory;
mod platform;

pub use driver::{Outcome, run, run_once};
pub use memory::LinkMemory;
pub use platform::{ConnectError, Platform, Transport};

use core::future::Future;

use proto::{
    Backoff, Code, Config, Hello, Instant, MsgKind, PublicKey, SecretKey, Session, StreamError,
    StreamId, StreamKind, StreamSlot,
};

/// Who the device is and whom it trusts.
pub struct Identity {
    /// The device's static X25519 key.
    pub key: SecretKey,
    /// The gateway's public key, pinned.
    pub gateway: PublicKey,
}

/// Tunables of the runtime.
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// Session limits and timers; `params` are what the device announces.
    pub session: Config,
    /// Reconnect policy.
    pub backoff: Backoff,
}

impl LinkConfig {
    /// Device defaults: 1 KiB records, 4 streams, 1 KiB windows, 1 s to 60 s backoff.
    pub const DEFAULT: Self = Self {
        session: Config::DEVICE,
        backoff: Backoff::new(
            core::time::Duration::from_secs(1),
            core::time::Duration::from_secs(60),
        ),
    };
}

/// What the application sees of the link while it handles an event or polls.
pub trait Streams {
    /// Sends within credit; see [`proto::Session::send`].
    fn send(
        &mut self,
        stream: StreamId,
        msg: MsgKind,
        data: &[u8],
        end_msg: bool,
        fin: bool,
    ) -> Result<usize, StreamError>;
    /// Bytes `send` would take now on `stream`.
    fn capacity(&self, stream: StreamId) -> usize;
    /// Returns credit for `n` received bytes the application is done with.
    fn consume(&mut self, stream: StreamId, n: usize);
    /// Aborts a stream.
    fn reset(&mut self, stream: StreamId, code: Code);
    /// Opens a stream towards the gateway.
    fn open(&mut self, kind: StreamKind, service: u8) -> Result<StreamId, StreamError>;
}

impl<B, S> Streams for Session<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[StreamSlot]> + AsMut<[StreamSlot]>,
{
    fn send(
        &mut self,
        stream: StreamId,
        msg: MsgKind,
        data: &[u8],
        end_msg: bool,
        fin: bool,
    ) -> Result<usize, StreamError> {
        Self::send(self, stream, msg, data, end_msg, fin)
    }
    fn capacity(&self, stream: StreamId) -> usize {
        self.send_capacity(stream)
    }
    fn consume(&mut self, stream: StreamId, n: usize) {
        Self::consume(self, stream, n);
    }
    fn reset(&mut self, stream: StreamId, code: Code) {
        let _ = Self::reset(self, stream, code);
    }
    fn open(&mut self, kind: StreamKind, service: u8) -> Result<StreamId, StreamError> {
        Self::open(self, kind, service)
    }
}

/// A link event, as the application receives it.
#[derive(Debug)]
pub enum LinkEvent<'a> {
    /// The gateway accepted the device; streams will follow.
    Up,
    /// The gateway opened a stream.
    Opened {
        /// Its id.
        stream: StreamId,
        /// What it carries.
        kind: StreamKind,
        /// The service number (index in [`App::hello`]'s services).
        service: u8,
    },
    /// Payload. Call [`Streams::consume`] once done with it.
    Data {
        /// The stream.
        stream: StreamId,
        /// What it belongs to.
        msg: MsgKind,
        /// Last part of a head or WebSocket message.
        end_msg: bool,
        /// Nothing more comes on this stream.
        fin: bool,
        /// The bytes.
        data: &'a [u8],
    },
    /// A stream was aborted (by the gateway, or by the session for a stall).
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: Code,
    },
    /// Credit arrived for a stream (or [`StreamId::CONNECTION`]).
    Credit {
        /// The stream.
        stream: StreamId,
    },
    /// The session ended; every stream is gone.
    Down,
}

/// The application behind the link (HTTP, WebSocket and raw services).
pub trait App {
    /// The HELLO: device id, firmware and services. The runtime fills in
    /// the parameters from its configuration.
    fn hello(&self) -> Hello<'_>;

    /// Handles one event. Sends may be made at once through `link`.
    fn on_event(&mut self, link: &mut dyn Streams, event: LinkEvent<'_>, now: Instant);

    /// Called after every turn of the loop while the link is up: write
    /// whatever is ready, within [`Streams::capacity`].
    fn poll(&mut self, link: &mut dyn Streams, now: Instant);

    /// When `poll` must run next even if nothing else happens.
    fn next_deadline(&self) -> Option<Instant>;

    /// Resolves when something outside the link needs `poll` (an interrupt
    /// signal on the device, a channel on the host). Never resolves by default.
    fn wake(&mut self) -> impl Future<Output = ()> {
        core::future::pending()
    }
}
