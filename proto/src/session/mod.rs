//! The session: one device link, either role, as a sans-IO state machine.
//!
//! ```text
//!            driver (tokio task on the gateway, embassy task on the device)
//!   bytes in ──▶ handle_input(now, &[u8]) ─┐
//!                                         ▼
//!                ┌──────────────── Session ────────────────┐
//!                │ handshake ─▶ records ─▶ frames ─▶ streams│──▶ poll_event() ─▶ application
//!                │ credit, liveness, GOAWAY, CLOSE          │◀── open / send / consume / reset
//!                └──────────────────────────────────────────┘
//!   bytes out ◀── poll_transmit(now, &mut [u8])   wake at ◀── poll_timeout() / handle_timeout(now)
//! ```
//!
//! # Lifecycle
//!
//! ```text
//! device:  Init ──msg1──▶ AwaitResp ──msg2 (accepted)──▶ Open ──▶ Closing ──CLOSE sent──▶ Closed
//!                                    └─msg2 (status≠ok)──────────────────────────────────▶ Closed
//! gateway: AwaitInit ──msg1──▶ Decide ──accept()──▶ Resp ──msg2 sent──▶ AwaitHello ──HELLO──▶ Open
//!                               └─reject()/refuse()───────────────────────────────────────▶ Closed
//! ```
//! A handshake that does not reach `Open` within `handshake_timeout` ends.
//! The gateway reports `Authenticate` before answering, so the application
//! checks the registry and the timestamp (replay protection) first; and the
//! session counts as up only when the HELLO arrives under the new keys, so a
//! replayed first message, which cannot produce that record, never displaces
//! a live session.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     n = handle_input(now, input)      // consumes at most one record
//!     while let Some(ev) = poll_event() { … }
//!     while let Some(len) = poll_transmit(now, out) { write out[..len] }
//!     sleep until poll_timeout() or readable; handle_timeout(now)
//! }
//! ```
//! `handle_input` takes nothing while frames of the previous record are still
//! waiting in `poll_event`: drain events first. On `Event::Closed`, flush
//! `poll_transmit` once more and drop the transport.
//!
//! # Limits
//!
//! Memory is the three buffers the caller passes in: the receive buffer
//! (one record of the size this side announced), the transmit staging
//! buffer (one record of plaintext), and the stream table. A peer can make
//! this side hold at most the credit it was given; the application decides
//! when credit returns (`consume`).
//!
//! The two record buffers matter only while a record is in flight. A host
//! with many mostly idle sessions (the gateway) hands them back to a pool
//! whenever [`Session::buffers_idle`] says they hold nothing
//! ([`Session::park_buffers`]) and takes a pair again before it next feeds
//! input or asks for output ([`Session::unpark_buffers`]). While parked, the
//! session takes no input, makes no record and accepts no `open` or
//! `send`; timers, events that need no record (credit, closing) and
//! `consume` keep working. With no stream open, the stream table can go
//! the same way (see [`Session::stream_table_mut`]). A device keeps its
//! buffers for good.

mod event;
mod rx;
mod stream;
mod tx;

pub use event::{CloseReason, Event, SessionError, Stats, StreamError};
pub use stream::StreamSlot;

use core::time::Duration;

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

use crate::code::Code;
use crate::keys::{PublicKey, SecretKey};
use crate::noise::{CipherState, Initiator, Responder, TAG_LEN};
use crate::time::Instant;
use crate::wire::{
    Cipher, Ciphers, FrameRepr, Hello, InitPayload, Params, Status, StreamId, StreamKind, WireError,
};

pub use crate::wire::{MAX_WINDOW, MIN_RECORD};

/// The Noise prologue: binds the handshake to this protocol and its format.
pub const PROLOGUE: &[u8] = b"devlink/1";
/// Lowest session version this implementation speaks.
pub const VERSION_MIN: u8 = 1;
/// Highest session version this implementation speaks.
pub const VERSION_MAX: u8 = 1;
/// Type byte of the first handshake message.
pub const MSG_INIT: u8 = 0x01;
/// Type byte of the second handshake message.
pub const MSG_RESP: u8 = 0x02;
/// Largest handshake message, length prefix included.
pub const MAX_HANDSHAKE: usize = 256;
/// Bytes a record adds to its plaintext: the length prefix and the tag.
pub const RECORD_OVERHEAD: usize = 2 + TAG_LEN;
/// Refusals (RESET REFUSED) that may wait for transmission at once; a peer
/// that opens faster than that beyond its limit loses the session.
const REFUSAL_QUEUE: usize = 4;

/// Tunables of one session. Durations are in the driver's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// What this side receives: its record size, stream limit and windows.
    pub params: Params,
    /// A PING goes out this often, for liveness and RTT. Default 15 s.
    pub keepalive: Duration,
    /// The session ends when nothing arrives for this long. Default 45 s.
    pub idle_timeout: Duration,
    /// The handshake (through HELLO) must finish within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// A stream whose sender waits for credit longer than this is reset
    /// with `TIMEOUT` (a peer that stopped reading). `None` disables. Default 60 s.
    pub stall_timeout: Option<Duration>,
    /// Record ciphers beyond ChaCha20-Poly1305 that this side offers (a
    /// device) or accepts (a gateway); only those this build supports
    /// ([`Ciphers::supported`]) count. A gateway chooses AES-256-GCM when
    /// both sides have it. Default none; hosts pass [`Ciphers::hardware`].
    pub ciphers: Ciphers,
}

impl Config {
    /// A device's defaults: 1 KiB records, 4 streams of 1 KiB windows.
    pub const DEVICE: Self = Self {
        params: Params {
            max_record: 1024,
            max_streams: 4,
            stream_window: 1024,
            conn_window: 4096,
        },
        keepalive: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(45),
        handshake_timeout: Duration::from_secs(10),
        stall_timeout: Some(Duration::from_secs(60)),
        ciphers: Ciphers::NONE,
    };

    /// A gateway's defaults: 16 KiB records, 16 device-opened streams,
    /// 256 KiB stream windows, 1 MiB for the connection.
    pub const GATEWAY: Self = Self {
        params: Params {
            max_record: 16 * 1024 + RECORD_OVERHEAD as u16,
            max_streams: 16,
            stream_window: 256 * 1024,
            conn_window: 1024 * 1024,
        },
        keepalive: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(45),
        handshake_timeout: Duration::from_secs(10),
        stall_timeout: Some(Duration::from_secs(60)),
        ciphers: Ciphers::NONE,
    };
}

/// Which end of the link a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Dials out, initiates the handshake, offers services.
    Device,
    /// Accepts, answers the handshake, opens streams to the services.
    Gateway,
}

/// The caller-owned memory of a session.
#[derive(Debug)]
pub struct Buffers<B, S> {
    /// Receive buffer: at least `config.params.max_record` bytes.
    pub rx: B,
    /// Transmit staging buffer: one record, length prefix and tag included
    /// (at least 256 bytes; more than the peer's record size is not used).
    /// An output buffer of this size always holds what `poll_transmit` makes.
    pub tx: B,
    /// The stream table; its length caps the open streams both ways.
    pub streams: S,
}

/// Why a session could not be created.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The receive buffer is smaller than the announced `max_record`, or the
    /// staging buffer is smaller than a handshake message.
    Buffers,
    /// The configuration's parameters are out of range.
    Params,
    /// The HELLO does not encode (see the error) or does not fit the staging buffer.
    Hello(WireError),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Buffers => f.write_str("buffers too small for the configured record size"),
            Self::Params => f.write_str("parameters out of range"),
            Self::Hello(e) => write!(f, "invalid hello: {e}"),
        }
    }
}

impl core::error::Error for SetupError {}

/// Handshake state inside a [`Phase`]: boxed with the `alloc` feature, so
/// an open session does not carry the largest phase (the handshake, about
/// 250 bytes) for the rest of its life; inline without it (devices, which
/// have no allocator and one session).
#[cfg(feature = "alloc")]
struct Held<T>(Box<T>);
/// Handshake state inside a [`Phase`], inline (no `alloc` feature).
#[cfg(not(feature = "alloc"))]
struct Held<T>(T);

impl<T> Held<T> {
    fn new(t: T) -> Self {
        #[cfg(feature = "alloc")]
        let t = Box::new(t);
        Self(t)
    }

    fn into_inner(self) -> T {
        let t = self.0;
        #[cfg(feature = "alloc")]
        let t = *t;
        t
    }
}

impl<T> core::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

enum Phase {
    DeviceInit(Held<Initiator>, InitPayload),
    DeviceAwaitResp(Held<Initiator>),
    GatewayAwaitInit(Held<Responder>),
    GatewayDecide(Held<Responder>, InitPayload),
    /// msg2 staged in `tx`; whether it accepted.
    GatewayResp(bool),
    GatewayAwaitHello,
    Open,
    /// A CLOSE is queued; the next record carries it.
    Closing(Code),
    Closed,
}

enum Pending {
    Authenticate { device: PublicKey, timestamp: u64 },
    Connected,
}

/// One device link, device or gateway role. See the module docs.
pub struct Session<B, S> {
    role: Role,
    phase: Phase,
    config: Config,
    peer: Params,
    version: u8,
    send: Option<CipherState>,
    recv: Option<CipherState>,
    handshake_hash: [u8; 32],

    rx: B,
    rx_fill: usize,
    rx_pos: usize,
    rx_end: usize,
    tx: B,
    tx_len: usize,
    /// The record buffers are out (see [`Session::park_buffers`]).
    parked: bool,
    /// Some slot may have a RESET or WINDOW to send: `compose` walks the
    /// stream table only then (set wherever one is queued, cleared by a
    /// walk that left nothing behind).
    slots_dirty: bool,
    /// Some slot's OPEN may be in the staging buffer (`compose` walks the
    /// table to mark them sent only then).
    opens_unsent: bool,
    /// Some slot may be waiting for credit (`blocked_since`): the stall
    /// timer's walk of the table runs only then (set where a stream
    /// blocks, cleared by a `handle_timeout` walk that found none).
    maybe_stalled: bool,
    /// Some slot may have a local reset to report (`poll_event` walks the
    /// table only then).
    notify_due: bool,
    streams: S,

    next_local: u32,
    max_peer_opened: u32,
    conn_send_credit: u32,
    conn_recv_credit: u32,
    conn_unconsumed: u32,
    conn_to_return: u32,
    refusals: [u32; REFUSAL_QUEUE],

    now: Instant,
    created: Instant,
    last_rx: Instant,
    next_ping: Instant,
    ping_out: Option<(u32, Instant)>,
    ping_due: bool,
    ping_token: u32,
    pong_due: Option<u32>,
    rtt: Option<Duration>,

    goaway_due: Option<Code>,
    goaway_sent: bool,
    peer_goaway: bool,

    pending: Option<Pending>,
    /// Device role: the HELLO is staged and not yet sent. Nothing may go
    /// before it, control frames included.
    hello_unsent: bool,
    close_event: Option<CloseReason>,
    close_reported: bool,
    stats: Stats,
}

fn check_params(p: &Params) -> bool {
    p.max_record >= MIN_RECORD && p.stream_window <= MAX_WINDOW && p.conn_window <= MAX_WINDOW
}

impl<B, S> Session<B, S>
where
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsRef<[StreamSlot]> + AsMut<[StreamSlot]>,
{
    fn blank(
        role: Role,
        phase: Phase,
        config: Config,
        buffers: Buffers<B, S>,
        now: Instant,
    ) -> Self {
        let mut s = Self {
            role,
            phase,
            config,
            peer: Params {
                max_record: MIN_RECORD,
                max_streams: 0,
                stream_window: 0,
                conn_window: 0,
            },
            version: 0,
            send: None,
            recv: None,
            handshake_hash: [0; 32],
            rx: buffers.rx,
            rx_fill: 0,
            rx_pos: 0,
            rx_end: 0,
            tx: buffers.tx,
            tx_len: 0,
            parked: false,
            slots_dirty: false,
            opens_unsent: false,
            maybe_stalled: false,
            notify_due: false,
            streams: buffers.streams,
            next_local: if role == Role::Gateway { 2 } else { 1 },
            max_peer_opened: 0,
            conn_send_credit: 0,
            conn_recv_credit: config.params.conn_window,
            conn_unconsumed: 0,
            conn_to_return: 0,
            refusals: [0; REFUSAL_QUEUE],
            now,
            created: now,
            last_rx: now,
            next_ping: now,
            ping_out: None,
            ping_due: false,
            ping_token: 0,
            pong_due: None,
            rtt: None,
            goaway_due: None,
            goaway_sent: false,
            peer_goaway: false,
            pending: None,
            hello_unsent: false,
            close_event: None,
            close_reported: false,
            stats: Stats::default(),
        };
        for slot in s.streams.as_mut() {
            *slot = StreamSlot::default();
        }
        s
    }

    fn check_buffers(config: &Config, buffers: &Buffers<B, S>) -> Result<(), SetupError> {
        if !check_params(&config.params) {
            return Err(SetupError::Params);
        }
        if buffers.rx.as_ref().len() < usize::from(config.params.max_record)
            || buffers.tx.as_ref().len() < MAX_HANDSHAKE
        {
            return Err(SetupError::Buffers);
        }
        Ok(())
    }

    /// A device-role session. `ephemeral` must be fresh random bytes;
    /// `timestamp` must exceed every earlier one of this device key (a
    /// real-time clock, or a boot counter with uptime). The HELLO is sent
    /// with `config.params` as its parameters.
    #[allow(clippy::too_many_arguments)] // each is a distinct input of the handshake
    pub fn device(
        config: Config,
        key: SecretKey,
        gateway: PublicKey,
        ephemeral: SecretKey,
        timestamp: u64,
        hello: &Hello<'_>,
        buffers: Buffers<B, S>,
        now: Instant,
    ) -> Result<Self, SetupError> {
        Self::check_buffers(&config, &buffers)?;
        let hs = Initiator::new(key, gateway, ephemeral, PROLOGUE);
        let init = InitPayload {
            min_version: VERSION_MIN,
            max_version: VERSION_MAX,
            timestamp,
            ciphers: config.ciphers.intersection(Ciphers::supported()),
        };
        let mut s = Self::blank(
            Role::Device,
            Phase::DeviceInit(Held::new(hs), init),
            config,
            buffers,
            now,
        );
        let hello = Hello {
            params: config.params,
            ..*hello
        };
        let body_len = hello.buffer_len();
        let tx = s.tx.as_mut();
        if body_len > usize::from(u16::MAX) || 3 + body_len + RECORD_OVERHEAD > tx.len() {
            return Err(SetupError::Hello(WireError::BufferTooSmall));
        }
        let n = hello.emit(&mut tx[3..]).map_err(SetupError::Hello)?;
        let frame = FrameRepr::Hello { body: &[] };
        frame.emit(&mut tx[..3]).map_err(SetupError::Hello)?;
        tx[1..3].copy_from_slice(&(n as u16).to_be_bytes());
        s.tx_len = 3 + n;
        s.hello_unsent = true;
        Ok(s)
    }

    /// A gateway-role session for a freshly accepted connection.
    pub fn gateway(
        config: Config,
        key: SecretKey,
        ephemeral: SecretKey,
        buffers: Buffers<B, S>,
        now: Instant,
    ) -> Result<Self, SetupError> {
        Self::check_buffers(&config, &buffers)?;
        let hs = Responder::new(key, ephemeral, PROLOGUE);
        Ok(Self::blank(
            Role::Gateway,
            Phase::GatewayAwaitInit(Held::new(hs)),
            config,
            buffers,
            now,
        ))
    }

    /// Whether the record buffers hold nothing the session still needs: no
    /// part of a received record, no frame of one waiting in `poll_event`,
    /// nothing staged to send. Only then may they be parked.
    pub fn buffers_idle(&self) -> bool {
        self.rx_fill == 0 && self.rx_pos >= self.rx_end && self.tx_len == 0
    }

    /// The record cipher: the one the handshake chose once it is done,
    /// ChaCha20-Poly1305 before.
    pub fn cipher(&self) -> Cipher {
        self.send
            .as_ref()
            .map_or(Cipher::ChaCha20Poly1305, CipherState::cipher)
    }

    /// Whether the record buffers are parked.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Takes the record buffers out while they are idle, putting `rx` and
    /// `tx` (placeholders of any size, empty ones included) in their place;
    /// returns the buffers it held. Gives the placeholders back when the
    /// buffers are not idle or already parked.
    pub fn park_buffers(&mut self, rx: B, tx: B) -> Result<(B, B), (B, B)> {
        if self.parked || !self.buffers_idle() {
            return Err((rx, tx));
        }
        self.rx_pos = 0;
        self.rx_end = 0;
        self.parked = true;
        for c in [self.send.as_mut(), self.recv.as_mut()]
            .into_iter()
            .flatten()
        {
            c.release();
        }
        let rx = core::mem::replace(&mut self.rx, rx);
        let tx = core::mem::replace(&mut self.tx, tx);
        Ok((rx, tx))
    }

    /// Puts record buffers back after [`Session::park_buffers`] and returns
    /// the placeholders. They must meet the sizes [`Session::gateway`] asks
    /// for (contents do not matter); if they do not, or nothing is parked,
    /// they come back as the error.
    pub fn unpark_buffers(&mut self, rx: B, tx: B) -> Result<(B, B), (B, B)> {
        if !self.parked
            || rx.as_ref().len() < usize::from(self.config.params.max_record)
            || tx.as_ref().len() < MAX_HANDSHAKE
        {
            return Err((rx, tx));
        }
        self.parked = false;
        let rx = core::mem::replace(&mut self.rx, rx);
        let tx = core::mem::replace(&mut self.tx, tx);
        Ok((rx, tx))
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether streams can be opened and used.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Whether the session is over and everything it had to send was taken.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The negotiated version (0 before the handshake).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The peer's receive limits (device role: from msg2; gateway: from HELLO).
    pub fn peer_params(&self) -> Params {
        self.peer
    }

    /// The handshake hash, identifying this session (zero before the keys).
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The last measured round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Size `poll_transmit` needs for its output to carry a full record
    /// (never more than the staging buffer).
    pub fn max_transmit(&self) -> usize {
        self.tx_cap() + RECORD_OVERHEAD
    }

    /// The stream table, so an owner whose storage can grow (a `Vec` on
    /// the gateway) adds slots when more streams are wanted than it holds.
    /// Slots are found by scanning and no position is remembered between
    /// calls, so appending free slots ([`StreamSlot::default`]) is safe at
    /// any time, and so is removing free ones: with no stream open
    /// ([`Session::open_streams`] is 0) and the buffers parked, an owner may
    /// take the whole table and put one back before it unparks. Removing a
    /// slot in use loses that stream.
    pub fn stream_table_mut(&mut self) -> &mut S {
        &mut self.streams
    }

    /// Whether any stream is open: [`Session::open_streams`] `> 0`, without
    /// counting the rest of the table once one is found (an owner asks on
    /// every turn).
    pub fn has_open_streams(&self) -> bool {
        self.streams.as_ref().iter().any(|s| !s.is_free())
    }

    /// Streams open now (both directions).
    pub fn open_streams(&self) -> usize {
        self.streams
            .as_ref()
            .iter()
            .filter(|s| !s.is_free())
            .count()
    }

    /// Plaintext one record may carry: bounded by the peer's record size and
    /// by the staging buffer, which counts as a whole record (prefix and tag
    /// included), so an output buffer of the same size always holds it.
    fn tx_cap(&self) -> usize {
        let peer = usize::from(self.peer.max_record);
        self.tx
            .as_ref()
            .len()
            .min(peer)
            .saturating_sub(RECORD_OVERHEAD)
    }

    fn slot(&self, id: StreamId) -> Option<usize> {
        self.streams
            .as_ref()
            .iter()
            .position(|s| s.id == id.get() && id.get() != 0)
    }

    fn is_local(&self, id: StreamId) -> bool {
        id.is_gateway_initiated() == (self.role == Role::Gateway)
    }

    /// A stream id that was used earlier in this session and is closed now.
    fn is_past(&self, id: StreamId) -> bool {
        if self.is_local(id) {
            id.get() < self.next_local
        } else {
            id.get() <= self.max_peer_opened
        }
    }

    /// Ends the session because the peer broke a rule.
    fn fail(&mut self, err: SessionError) {
        self.end(CloseReason::Error(err), err.code());
    }

    /// Ends the session; a CLOSE with `code` goes out if keys exist.
    fn end(&mut self, reason: CloseReason, code: Code) {
        if matches!(self.phase, Phase::Closed | Phase::Closing(_)) {
            return;
        }
        if self.close_event.is_none() {
            self.close_event = Some(reason);
        }
        self.pending = None;
        self.rx_pos = self.rx_end;
        self.phase = if self.send.is_some() {
            Phase::Closing(code)
        } else {
            Phase::Closed
        };
    }

    /// Gateway role, after `Event::Authenticate`: accept the device and
    /// answer. Fails (answering `VersionUnsupported` and ending the session)
    /// when the device speaks no version this side does.
    pub fn accept(&mut self) -> Result<(), SessionError> {
        let Phase::GatewayDecide(..) = self.phase else {
            return Err(SessionError::UnexpectedFrame);
        };
        let Phase::GatewayDecide(hs, init) = core::mem::replace(&mut self.phase, Phase::Closed)
        else {
            unreachable!()
        };
        let lo = init.min_version.max(VERSION_MIN);
        let hi = init.max_version.min(VERSION_MAX);
        if lo > hi {
            let info = u64::from(VERSION_MIN) << 8 | u64::from(VERSION_MAX);
            self.respond(hs.into_inner(), Status::VersionUnsupported, info);
            self.close_event = Some(CloseReason::Error(SessionError::Version));
            return Err(SessionError::Version);
        }
        self.version = hi;
        let both = init
            .ciphers
            .intersection(self.config.ciphers)
            .intersection(Ciphers::supported());
        let cipher = if both.contains(Ciphers::AES_256_GCM) {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        };
        self.respond_with(hs.into_inner(), Status::Accepted, 0, cipher);
        Ok(())
    }

    /// Gateway role, after `Event::Authenticate`: answer with a refusal the
    /// device can act on (`StaleTimestamp` with the last accepted value, or
    /// `Busy`), then end.
    pub fn reject(&mut self, status: Status, info: u64) {
        if let Phase::GatewayDecide(..) = self.phase {
            let Phase::GatewayDecide(hs, _) = core::mem::replace(&mut self.phase, Phase::Closed)
            else {
                unreachable!()
            };
            let status = if status == Status::Accepted {
                Status::Busy
            } else {
                status
            };
            self.respond(hs.into_inner(), status, info);
            self.close_event = Some(CloseReason::Local(Code::REFUSED));
        }
    }

    /// Gateway role: end without an answer (an unknown or revoked key; the
    /// prober learns nothing).
    pub fn refuse(&mut self) {
        if let Phase::GatewayDecide(..) = self.phase {
            self.phase = Phase::Closed;
            self.close_event = Some(CloseReason::Local(Code::REFUSED));
        }
    }

    /// Stages msg2 in `tx`: a refusal.
    fn respond(&mut self, hs: Responder, status: Status, info: u64) {
        self.respond_with(hs, status, info, Cipher::ChaCha20Poly1305);
    }

    /// Stages msg2 in `tx`, with the record cipher when accepted.
    fn respond_with(&mut self, hs: Responder, status: Status, info: u64, cipher: Cipher) {
        let payload = crate::wire::RespPayload {
            status,
            version: self.version,
            info,
            params: self.config.params,
            cipher,
        };
        let mut p = [0u8; crate::wire::RespPayload::MAX_LEN];
        let accepted = status == Status::Accepted;
        let written = payload.emit(&mut p).ok().and_then(|n| {
            let tx = self.tx.as_mut();
            let (len, mut keys) = hs.write_message(&p[..n], &mut tx[3..]).ok()?;
            // A cipher this build lacks was never chosen (`accept`).
            if accepted && !(keys.send.set_cipher(cipher) && keys.recv.set_cipher(cipher)) {
                return None;
            }
            tx[..2].copy_from_slice(&((len + 1) as u16).to_be_bytes());
            tx[2] = MSG_RESP;
            Some((len + 3, keys))
        });
        match written {
            Some((len, keys)) => {
                self.tx_len = len;
                if accepted {
                    self.send = Some(keys.send);
                    self.recv = Some(keys.recv);
                    self.handshake_hash = keys.handshake_hash;
                }
                self.phase = Phase::GatewayResp(accepted);
            }
            None => {
                self.phase = Phase::Closed;
                self.close_event = Some(CloseReason::Local(Code::INTERNAL));
            }
        }
    }

    /// Opens a stream of `kind` to the peer's service number `service`.
    pub fn open(&mut self, kind: StreamKind, service: u8) -> Result<StreamId, StreamError> {
        if !self.is_established() {
            return Err(StreamError::NotReady);
        }
        if self.parked {
            return Err(StreamError::Blocked);
        }
        if self.goaway_due.is_some() || self.goaway_sent || self.peer_goaway {
            return Err(StreamError::GoingAway);
        }
        let local = self
            .streams
            .as_ref()
            .iter()
            .filter(|s| !s.is_free() && s.local)
            .count();
        if local >= usize::from(self.peer.max_streams) {
            return Err(StreamError::Limit);
        }
        let Some(free) = self.streams.as_ref().iter().position(StreamSlot::is_free) else {
            return Err(StreamError::Limit);
        };
        let id = StreamId::new(self.next_local).ok_or(StreamError::Limit)?;
        let frame = FrameRepr::Open {
            stream: id,
            kind,
            service,
        };
        let cap = self.tx_cap();
        let room = cap.saturating_sub(self.tx_len);
        if frame.buffer_len() > room {
            return Err(StreamError::Blocked);
        }
        let n = frame
            .emit(&mut self.tx.as_mut()[self.tx_len..cap])
            .map_err(|_| StreamError::Blocked)?;
        self.tx_len += n;
        self.next_local += 2;
        let mut slot = StreamSlot::new(
            id,
            kind,
            true,
            self.peer.stream_window,
            self.config.params.stream_window,
        );
        slot.open_unsent = true;
        self.opens_unsent = true;
        self.streams.as_mut()[free] = slot;
        Ok(id)
    }

    /// Credit available to send on `stream` now (the smaller of the stream's
    /// and the connection's), capped by the staging buffer's free room.
    pub fn send_capacity(&self, stream: StreamId) -> usize {
        if self.parked {
            return 0;
        }
        let Some(i) = self.slot(stream) else { return 0 };
        let s = &self.streams.as_ref()[i];
        let room = self
            .tx_cap()
            .saturating_sub(self.tx_len)
            .saturating_sub(crate::wire::frame_data_header_len(stream));
        (s.send_credit.min(self.conn_send_credit) as usize).min(room)
    }

    /// Sends up to `data.len()` bytes of `msg` on `stream`, within credit and
    /// staging room, returning how many were taken. `end_msg` and `fin`
    /// apply only if all of `data` was taken. A short count because of
    /// credit is normal: wait for `Event::Credit`; because of room, call
    /// `poll_transmit` first.
    pub fn send(
        &mut self,
        stream: StreamId,
        msg: crate::wire::MsgKind,
        data: &[u8],
        end_msg: bool,
        fin: bool,
    ) -> Result<usize, StreamError> {
        if !self.is_established() {
            return Err(StreamError::NotReady);
        }
        let i = self.slot(stream).ok_or(StreamError::UnknownStream)?;
        if self.parked {
            return Err(StreamError::Blocked);
        }
        let cap = self.tx_cap();
        let conn_credit = self.conn_send_credit;
        let now = self.now;
        let slot = &mut self.streams.as_mut()[i];
        if slot.reset.is_some() {
            return Err(StreamError::UnknownStream);
        }
        if !slot.tx.allows(slot.kind, msg) {
            return Err(StreamError::Sequence);
        }
        let header = crate::wire::frame_data_header_len(stream);
        let room = cap.saturating_sub(self.tx_len);
        if room < header {
            return Err(StreamError::Blocked);
        }
        let credit = slot.send_credit.min(conn_credit) as usize;
        let n = data
            .len()
            .min(credit)
            .min(room - header)
            .min(usize::from(u16::MAX));
        if n < data.len() && n == credit {
            self.stats.credit_stalls += 1;
            if slot.send_credit as usize == n && slot.blocked_since.is_none() {
                slot.blocked_since = Some(now.as_millis());
                self.maybe_stalled = true;
            }
        }
        if n == 0 && !data.is_empty() {
            return Ok(0);
        }
        let whole = n == data.len();
        let (end_msg, fin) = (end_msg && whole, fin && whole);
        let tx = &mut self.tx.as_mut()[self.tx_len..cap];
        let Ok(h) = crate::wire::frame_emit_data_header(stream, msg, end_msg, fin, n, tx) else {
            return Err(StreamError::Blocked);
        };
        tx[h..h + n].copy_from_slice(&data[..n]);
        self.tx_len += h + n;
        slot.send_credit -= n as u32;
        slot.tx.advance(msg, end_msg, fin);
        self.conn_send_credit -= n as u32;
        self.stats.payload_sent += n as u64;
        if slot.is_done() && !slot.open_unsent {
            *slot = StreamSlot::default();
        }
        self.maybe_drained();
        Ok(n)
    }

    /// Returns `n` bytes of credit on `stream` (and the connection) once the
    /// application has disposed of them. Bytes of streams already gone still
    /// return connection credit.
    pub fn consume(&mut self, stream: StreamId, n: usize) {
        let n = u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(self.conn_unconsumed);
        self.conn_unconsumed -= n;
        self.conn_to_return += n;
        if let Some(i) = self.slot(stream) {
            let slot = &mut self.streams.as_mut()[i];
            let k = n.min(slot.unconsumed);
            slot.unconsumed -= k;
            slot.to_return += k;
            let initial = self.config.params.stream_window;
            stream::maybe_window(slot, initial);
            // The walk only has work when a WINDOW became due.
            self.slots_dirty |= slot.window_pending;
        }
    }

    /// Aborts `stream` both ways with `code`.
    pub fn reset(&mut self, stream: StreamId, code: Code) -> Result<(), StreamError> {
        let i = self.slot(stream).ok_or(StreamError::UnknownStream)?;
        let slot = &mut self.streams.as_mut()[i];
        if slot.reset.is_none() {
            slot.reset = Some(code);
            slot.window_pending = false;
            slot.blocked_since = None;
            self.slots_dirty = true;
        }
        Ok(())
    }

    /// Asks for a PING now (an RTT sample arrives as `Event::Rtt`).
    pub fn ping(&mut self) {
        if self.ping_out.is_none() {
            self.ping_due = true;
        }
    }

    /// Starts a graceful drain: GOAWAY goes out, no new streams either way;
    /// the session closes with `code` once the open streams are done.
    pub fn goaway(&mut self, code: Code) {
        match self.phase {
            Phase::Open if self.goaway_due.is_none() && !self.goaway_sent => {
                self.goaway_due = Some(code);
            }
            Phase::Open | Phase::Closing(_) | Phase::Closed => {}
            _ => self.end(CloseReason::Local(code), code),
        }
    }

    /// Ends the session now with `code` (a CLOSE goes out if keys exist).
    pub fn close(&mut self, code: Code) {
        self.end(CloseReason::Local(code), code);
    }

    /// After a GOAWAY this side sent, closes once no stream is left.
    fn maybe_drained(&mut self) {
        // Staged frames (the last data, a FIN) go out before the CLOSE.
        if self.goaway_sent
            && matches!(self.phase, Phase::Open)
            && !self.has_open_streams()
            && self.tx_len == 0
        {
            let code = self.goaway_due.unwrap_or(Code::NO_ERROR);
            self.end(CloseReason::Local(code), Code::NO_ERROR);
        }
    }

    /// The transport reached its end (EOF).
    pub fn handle_eof(&mut self) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        let reason = if self.rx_fill > 0 {
            CloseReason::Error(SessionError::Truncated)
        } else {
            CloseReason::TransportClosed
        };
        if self.close_event.is_none() {
            self.close_event = Some(reason);
        }
        self.pending = None;
        self.rx_pos = self.rx_end;
        self.phase = Phase::Closed;
    }

    /// When the next keepalive PING is due (SPEC §8.2). The gateway pings
    /// every `keepalive`, for its RTT and the peer's idle timer; the device
    /// only once it has heard nothing for a quarter longer, so a gateway's
    /// PINGs (or any other traffic) keep it quiet: a quiet session carries
    /// one PING and one PONG per period, not two of each.
    fn ping_at(&self) -> Instant {
        match self.role {
            Role::Gateway => self.next_ping,
            Role::Device => {
                let k = self.config.keepalive;
                self.next_ping.max(self.last_rx.saturating_add(k + k / 4))
            }
        }
    }

    /// When the session next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed | Phase::Closing(_) => None,
            Phase::Open => {
                let mut t = self
                    .last_rx
                    .saturating_add(self.config.idle_timeout)
                    .min(self.ping_at());
                if let (Some(stall), true) = (self.config.stall_timeout, self.maybe_stalled) {
                    for s in self.streams.as_ref() {
                        if let (false, Some(since)) = (s.is_free(), s.blocked_since) {
                            t = t.min(Instant::from_millis(since).saturating_add(stall));
                        }
                    }
                }
                Some(t)
            }
            _ => Some(self.created.saturating_add(self.config.handshake_timeout)),
        }
    }

    /// Runs timers: handshake and idle timeouts, keepalive PING, stalled streams.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        match self.phase {
            Phase::Closed | Phase::Closing(_) => {}
            Phase::Open => {
                if now >= self.last_rx.saturating_add(self.config.idle_timeout) {
                    self.end(CloseReason::IdleTimeout, Code::IDLE_TIMEOUT);
                    return;
                }
                if now >= self.ping_at() {
                    if self.ping_out.is_none() {
                        self.ping_due = true;
                    }
                    self.next_ping = now.saturating_add(self.config.keepalive);
                }
                if let (Some(stall), true) = (self.config.stall_timeout, self.maybe_stalled) {
                    let mut resets = 0;
                    let mut still = false;
                    for s in self.streams.as_mut() {
                        let Some(since) = s.blocked_since else {
                            continue;
                        };
                        if s.is_free() {
                            continue;
                        }
                        if now >= Instant::from_millis(since).saturating_add(stall) {
                            s.reset = Some(Code::TIMEOUT);
                            s.notify = true;
                            s.blocked_since = None;
                            resets += 1;
                        } else {
                            still = true;
                        }
                    }
                    self.maybe_stalled = still;
                    self.stats.stall_resets += resets;
                    if resets > 0 {
                        self.slots_dirty = true;
                        self.notify_due = true;
                    }
                }
            }
            _ => {
                if now >= self.created.saturating_add(self.config.handshake_timeout) {
                    self.end(CloseReason::HandshakeTimeout, Code::TIMEOUT);
                }
            }
        }
    }
}
