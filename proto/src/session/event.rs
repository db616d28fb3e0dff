//! What a session reports to its driver, and why it ends.

use core::fmt;
use core::time::Duration;

use crate::code::Code;
use crate::keys::PublicKey;
use crate::noise::NoiseError;
use crate::wire::{Hello, MsgKind, Params, Status, StreamId, StreamKind, WireError};

/// Something the application must see, from [`super::Session::poll_event`].
/// Borrowed data (`Data::data`, `Hello`) lives in the session's receive
/// buffer and is valid until the next call on the session.
#[derive(Debug)]
pub enum Event<'a> {
    /// Gateway role: a device proved possession of `device`. Look it up and
    /// call [`super::Session::accept`] or [`super::Session::reject`].
    Authenticate {
        /// The device's static key.
        device: PublicKey,
        /// Its handshake timestamp; accept only if above the last accepted.
        timestamp: u64,
    },
    /// Device role: the gateway accepted; the HELLO is on its way.
    Connected {
        /// Negotiated version.
        version: u8,
        /// The gateway's receive limits.
        params: Params,
    },
    /// Gateway role: the device's HELLO arrived; the session is up.
    Hello(Hello<'a>),
    /// The peer opened a stream.
    Opened {
        /// Its id.
        stream: StreamId,
        /// What it carries.
        kind: StreamKind,
        /// Which service (index in the HELLO).
        service: u8,
    },
    /// Payload on a stream. Call [`super::Session::consume`] once it has
    /// left the application's hands, to return the credit.
    Data {
        /// The stream.
        stream: StreamId,
        /// What the bytes belong to.
        msg: MsgKind,
        /// Last part of the current head or WebSocket message.
        end_msg: bool,
        /// The peer sends nothing more on this stream.
        fin: bool,
        /// The payload.
        data: &'a [u8],
    },
    /// A stream was aborted, by the peer or by this session.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: Code,
        /// Whether the peer sent the RESET (otherwise this session reset it:
        /// a rule broken by the peer on that stream, or a stalled sender).
        by_peer: bool,
    },
    /// The peer tried to open a stream beyond the limit; it was refused.
    Refused {
        /// The refused stream.
        stream: StreamId,
    },
    /// Credit arrived: sends on this stream (or any, for the connection) may progress.
    Credit {
        /// The stream, or [`StreamId::CONNECTION`].
        stream: StreamId,
    },
    /// A round trip was measured.
    Rtt(Duration),
    /// The peer is draining: no new streams either way.
    GoAway {
        /// Why.
        code: Code,
    },
    /// The session is over. Flush [`super::Session::poll_transmit`] once
    /// more (it may hold a CLOSE), then drop the transport.
    Closed(CloseReason),
}

/// Why a session ended.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// This side closed it (or finished draining after GOAWAY).
    Local(Code),
    /// The peer sent CLOSE.
    Peer(Code),
    /// The peer broke the protocol; a CLOSE with a code went out if it could.
    Error(SessionError),
    /// Device role: the gateway turned the handshake down.
    Rejected {
        /// The verdict.
        status: Status,
        /// Its detail (see [`Status`]).
        info: u64,
    },
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// The transport ended between records.
    TransportClosed,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(c) => write!(f, "closed locally: {c}"),
            Self::Peer(c) => write!(f, "closed by peer: {c}"),
            Self::Error(e) => write!(f, "protocol error: {e}"),
            Self::Rejected { status, info } => {
                write!(f, "rejected by gateway: {status:?} ({info})")
            }
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::HandshakeTimeout => f.write_str("handshake timeout"),
            Self::TransportClosed => f.write_str("transport closed"),
        }
    }
}

/// A rule the peer broke, ending the session.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// A frame did not decode.
    Frame(WireError),
    /// A handshake message failed.
    Handshake(NoiseError),
    /// A handshake payload or HELLO did not decode.
    Payload(WireError),
    /// A handshake message had the wrong type byte or size.
    BadHandshakeMessage,
    /// A record was longer than this side announced.
    RecordTooLarge(usize),
    /// A record failed authentication (tampered, truncated or replayed).
    Decrypt,
    /// The peer sent more than its credit.
    FlowControl,
    /// A WINDOW pushed credit past 2^31 - 1.
    CreditOverflow,
    /// A frame named a stream that was never opened, or reused an id.
    UnknownStream(StreamId),
    /// A frame that is not allowed here (a second HELLO, data before HELLO…).
    UnexpectedFrame,
    /// The peer offered no version this side speaks.
    Version,
    /// The transport ended in the middle of a record.
    Truncated,
    /// This side ran out of nonces (2^64 - 1 records) or, under AES-256-GCM,
    /// reached its key's usage limit (SPEC.md §3.3).
    NonceExhausted,
}

impl SessionError {
    /// The CLOSE code this error is reported with.
    pub const fn code(self) -> Code {
        match self {
            Self::FlowControl | Self::CreditOverflow => Code::FLOW_CONTROL,
            Self::NonceExhausted => Code::INTERNAL,
            _ => Code::PROTOCOL,
        }
    }

    /// A short name for metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Frame(_) => "frame",
            Self::Handshake(_) => "handshake",
            Self::Payload(_) => "payload",
            Self::BadHandshakeMessage => "handshake_message",
            Self::RecordTooLarge(_) => "record_too_large",
            Self::Decrypt => "decrypt",
            Self::FlowControl => "flow_control",
            Self::CreditOverflow => "credit_overflow",
            Self::UnknownStream(_) => "unknown_stream",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::Version => "version",
            Self::Truncated => "truncated",
            Self::NonceExhausted => "nonce_exhausted",
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "malformed frame: {e}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Payload(e) => write!(f, "malformed handshake payload: {e}"),
            Self::BadHandshakeMessage => f.write_str("malformed handshake message"),
            Self::RecordTooLarge(n) => write!(f, "record of {n} bytes exceeds the announced limit"),
            Self::Decrypt => f.write_str("record failed authentication"),
            Self::FlowControl => f.write_str("peer exceeded its flow-control credit"),
            Self::CreditOverflow => f.write_str("window update overflowed the credit"),
            Self::UnknownStream(id) => write!(f, "frame for stream {id}, never opened"),
            Self::UnexpectedFrame => f.write_str("frame not allowed in this state"),
            Self::Version => f.write_str("no common protocol version"),
            Self::Truncated => f.write_str("transport ended inside a record"),
            Self::NonceExhausted => f.write_str("nonce space or key usage limit exhausted"),
        }
    }
}

impl core::error::Error for SessionError {}

/// Why a local stream operation was refused. Nothing was changed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The session is not established (or is closing).
    NotReady,
    /// No such open stream.
    UnknownStream,
    /// The peer's stream limit, or this side's slot table, is full.
    Limit,
    /// A GOAWAY was sent or received: no new streams.
    GoingAway,
    /// No room right now (the transmit staging buffer is full); retry after
    /// `poll_transmit`.
    Blocked,
    /// The message sequence is not allowed for this stream kind, or a
    /// message of another kind is still open, or FIN was already sent.
    Sequence,
    /// A stream id of the other side's parity was given.
    WrongSide,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotReady => "session not established",
            Self::UnknownStream => "no such stream",
            Self::Limit => "stream limit reached",
            Self::GoingAway => "session is going away",
            Self::Blocked => "transmit buffer full",
            Self::Sequence => "message not allowed on this stream now",
            Self::WrongSide => "stream id of the other side",
        })
    }
}

impl core::error::Error for StreamError {}

/// Counters a driver exports as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records sent.
    pub records_sent: u64,
    /// Records received.
    pub records_received: u64,
    /// Bytes written to the transport.
    pub bytes_sent: u64,
    /// Bytes read from the transport.
    pub bytes_received: u64,
    /// Stream payload bytes sent.
    pub payload_sent: u64,
    /// Stream payload bytes received.
    pub payload_received: u64,
    /// Times a send was cut short by missing credit.
    pub credit_stalls: u64,
    /// Streams reset because their sender stayed without credit too long.
    pub stall_resets: u64,
    /// Streams the peer opened beyond the limit.
    pub refused_streams: u64,
}
