//! Frames: what a record's plaintext is made of.
//!
//! ```text
//! PING      0x01 | token u32
//! PONG      0x02 | token u32
//! WINDOW    0x03 | stream varint | increment varint      (stream 0: the connection)
//! OPEN      0x04 | stream varint | kind u8 | service u8
//! RESET     0x05 | stream varint | code varint
//! GOAWAY    0x06 | last stream varint | code varint
//! CLOSE     0x07 | code varint
//! HELLO     0x08 | length u16 | hello body
//! DATA      0x20 | msg<<2 | END_MSG<<1 | FIN  (0x20..=0x3f) | stream varint | length u16 | payload
//! extension 0xc0..=0xff | length varint | payload      (ignored by receivers that do not know it)
//! ```
//!
//! A DATA header is at most [`DATA_HEADER_MAX`] bytes; with a stream id below
//! 64 it is 4 bytes.

use super::WireError;
use super::reader::{Reader, Writer};
use crate::code::Code;

/// Largest DATA frame header: type, a 4-byte stream id, a 2-byte length.
pub const DATA_HEADER_MAX: usize = 7;

const DATA_BASE: u8 = 0x20;
const EXT_BASE: u8 = 0xc0;
const FLAG_FIN: u8 = 0x01;
const FLAG_END_MSG: u8 = 0x02;

/// A stream identifier: below 2^30 so it fits a 4-byte varint. Stream 0 is
/// the connection itself (only in WINDOW). The gateway opens even ids, the
/// device odd ones; ids are never reused within a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u32);

impl StreamId {
    /// The connection as a whole, for connection-level WINDOW frames.
    pub const CONNECTION: Self = Self(0);
    /// Largest valid id.
    pub const MAX: u32 = (1 << 30) - 1;

    /// `None` above [`StreamId::MAX`].
    pub const fn new(id: u32) -> Option<Self> {
        if id <= Self::MAX {
            Some(Self(id))
        } else {
            None
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether the gateway opened this stream (even ids).
    pub const fn is_gateway_initiated(self) -> bool {
        self.0.is_multiple_of(2)
    }

    fn read(r: &mut Reader<'_>, allow_zero: bool) -> Result<Self, WireError> {
        let v = r.varint()?;
        match u32::try_from(v).ok().and_then(Self::new) {
            Some(id) if id.0 != 0 || allow_zero => Ok(id),
            _ => Err(WireError::BadValue("stream id")),
        }
    }
}

impl core::fmt::Display for StreamId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a stream carries, fixed when it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// An HTTP exchange: request head and body, response head and body.
    Http = 0,
    /// An HTTP exchange that becomes a WebSocket: after a 101 response head,
    /// whole messages (text, binary, close).
    WebSocket = 1,
    /// A byte pipe to a raw service.
    Raw = 2,
}

impl StreamKind {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Self::Http),
            1 => Ok(Self::WebSocket),
            2 => Ok(Self::Raw),
            _ => Err(WireError::BadValue("stream kind")),
        }
    }
}

/// What a DATA frame's payload belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsgKind {
    /// Body bytes of an HTTP exchange, or the bytes of a raw stream.
    Bytes = 0,
    /// Part of an encoded request or response head.
    Head = 1,
    /// Part of a WebSocket text message.
    Text = 2,
    /// Part of a WebSocket binary message.
    Binary = 3,
    /// A WebSocket close: code u16 and a UTF-8 reason.
    WsClose = 4,
}

impl MsgKind {
    fn from_bits(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Self::Bytes),
            1 => Ok(Self::Head),
            2 => Ok(Self::Text),
            3 => Ok(Self::Binary),
            4 => Ok(Self::WsClose),
            _ => Err(WireError::BadValue("message kind")),
        }
    }
}

/// Frame type byte, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// 0x01
    Ping,
    /// 0x02
    Pong,
    /// 0x03
    Window,
    /// 0x04
    Open,
    /// 0x05
    Reset,
    /// 0x06
    GoAway,
    /// 0x07
    Close,
    /// 0x08
    Hello,
    /// 0x20..=0x3f
    Data,
    /// 0xc0..=0xff
    Extension,
}

impl FrameType {
    /// Classifies a type byte; `UnknownFrame` for bytes outside every range.
    pub const fn from_byte(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            0x01 => Self::Ping,
            0x02 => Self::Pong,
            0x03 => Self::Window,
            0x04 => Self::Open,
            0x05 => Self::Reset,
            0x06 => Self::GoAway,
            0x07 => Self::Close,
            0x08 => Self::Hello,
            0x20..=0x3f => Self::Data,
            EXT_BASE..=0xff => Self::Extension,
            _ => return Err(WireError::UnknownFrame(b)),
        })
    }
}

/// A zero-copy view of one frame at the start of a buffer.
///
/// `new_checked` verifies that the buffer holds a whole frame of a known
/// layout; afterwards `frame_type`, `total_len` and `parse` never panic.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    len: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that `buffer` starts with a whole, well-formed frame.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let (_, len) = FrameRepr::decode(buffer.as_ref())?;
        Ok(Self { buffer, len })
    }

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        // new_checked decoded it, so the byte is known.
        FrameType::from_byte(self.buffer.as_ref()[0]).unwrap_or(FrameType::Extension)
    }

    /// Bytes the frame takes, header included; the next frame starts there.
    pub fn total_len(&self) -> usize {
        self.len
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<'a> Frame<&'a [u8]> {
    /// The owned representation, borrowing payloads from the buffer.
    pub fn repr(&self) -> FrameRepr<'a> {
        // Cannot fail: new_checked decoded the same bytes.
        FrameRepr::decode(self.buffer).map_or(
            FrameRepr::Extension {
                ty: EXT_BASE,
                payload: &[],
            },
            |(r, _)| r,
        )
    }
}

/// One frame, with payloads borrowed from the buffer it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameRepr<'a> {
    /// Liveness probe; the receiver answers with PONG carrying the same token.
    Ping {
        /// Opaque, echoed.
        token: u32,
    },
    /// Answer to PING.
    Pong {
        /// The PING's token.
        token: u32,
    },
    /// Grants `increment` more bytes of credit on a stream or the connection.
    Window {
        /// The stream, or [`StreamId::CONNECTION`].
        stream: StreamId,
        /// Credit added, at least 1.
        increment: u64,
    },
    /// Opens a stream to one of the device's services.
    Open {
        /// A new stream id of the opener's parity.
        stream: StreamId,
        /// What the stream carries.
        kind: StreamKind,
        /// Index of the service in the device's HELLO.
        service: u8,
    },
    /// Aborts a stream in both directions.
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: Code,
    },
    /// The sender opens no more streams and accepts none above `last_stream`.
    GoAway {
        /// Highest peer-initiated stream the sender will still serve (0: none).
        last_stream: StreamId,
        /// Why.
        code: Code,
    },
    /// The sender ends the session now.
    Close {
        /// Why.
        code: Code,
    },
    /// The device's hello, first frame of its first record.
    Hello {
        /// The encoded [`super::Hello`].
        body: &'a [u8],
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream: StreamId,
        /// What the payload belongs to.
        msg: MsgKind,
        /// Last frame of the current message (head or WebSocket message).
        end_msg: bool,
        /// Last frame the sender sends on this stream.
        fin: bool,
        /// Payload bytes; count against flow control.
        payload: &'a [u8],
    },
    /// A frame of the extension range; ignored by receivers that do not know it.
    Extension {
        /// Type byte, 0xc0..=0xff.
        ty: u8,
        /// Payload.
        payload: &'a [u8],
    },
}

impl<'a> FrameRepr<'a> {
    /// Parses the frame a checked view points at.
    pub fn parse(frame: &Frame<&'a [u8]>) -> Self {
        frame.repr()
    }

    /// Decodes one frame at the start of `buf`: the frame and the bytes it took.
    pub fn decode(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        let mut r = Reader::new(buf);
        let ty = r.u8()?;
        let repr = match FrameType::from_byte(ty)? {
            FrameType::Ping => Self::Ping { token: r.u32()? },
            FrameType::Pong => Self::Pong { token: r.u32()? },
            FrameType::Window => {
                let stream = StreamId::read(&mut r, true)?;
                let increment = r.varint()?;
                if increment == 0 {
                    return Err(WireError::BadValue("window increment"));
                }
                Self::Window { stream, increment }
            }
            FrameType::Open => Self::Open {
                stream: StreamId::read(&mut r, false)?,
                kind: StreamKind::from_u8(r.u8()?)?,
                service: r.u8()?,
            },
            FrameType::Reset => Self::Reset {
                stream: StreamId::read(&mut r, false)?,
                code: Code(r.varint()?),
            },
            FrameType::GoAway => Self::GoAway {
                last_stream: StreamId::read(&mut r, true)?,
                code: Code(r.varint()?),
            },
            FrameType::Close => Self::Close {
                code: Code(r.varint()?),
            },
            FrameType::Hello => {
                let len = r.u16()?;
                Self::Hello {
                    body: r.bytes(usize::from(len))?,
                }
            }
            FrameType::Data => {
                let stream = StreamId::read(&mut r, false)?;
                let len = r.u16()?;
                Self::Data {
                    stream,
                    msg: MsgKind::from_bits((ty >> 2) & 0x07)?,
                    end_msg: ty & FLAG_END_MSG != 0,
                    fin: ty & FLAG_FIN != 0,
                    payload: r.bytes(usize::from(len))?,
                }
            }
            FrameType::Extension => {
                let len = r.varint()?;
                let len = usize::try_from(len).map_err(|_| WireError::Truncated)?;
                Self::Extension {
                    ty,
                    payload: r.bytes(len)?,
                }
            }
        };
        Ok((repr, r.pos()))
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        let v = |x: u64| crate::varint::encoded_len(x).unwrap_or(8);
        match *self {
            Self::Ping { .. } | Self::Pong { .. } => 5,
            Self::Window { stream, increment } => 1 + v(stream.0.into()) + v(increment),
            Self::Open { stream, .. } => 1 + v(stream.0.into()) + 2,
            Self::Reset { stream, code } => 1 + v(stream.0.into()) + v(code.0),
            Self::GoAway { last_stream, code } => 1 + v(last_stream.0.into()) + v(code.0),
            Self::Close { code } => 1 + v(code.0),
            Self::Hello { body } => 3 + body.len(),
            Self::Data {
                stream, payload, ..
            } => data_header_len(stream) + payload.len(),
            Self::Extension { payload, .. } => 1 + v(payload.len() as u64) + payload.len(),
        }
    }

    /// Writes the frame at the start of `buf`, returning the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        match *self {
            Self::Ping { token } => {
                w.u8(0x01)?;
                w.u32(token)?;
            }
            Self::Pong { token } => {
                w.u8(0x02)?;
                w.u32(token)?;
            }
            Self::Window { stream, increment } => {
                if increment == 0 {
                    return Err(WireError::BadValue("window increment"));
                }
                w.u8(0x03)?;
                w.varint(stream.0.into())?;
                w.varint(increment)?;
            }
            Self::Open {
                stream,
                kind,
                service,
            } => {
                w.u8(0x04)?;
                w.varint(stream.0.into())?;
                w.u8(kind as u8)?;
                w.u8(service)?;
            }
            Self::Reset { stream, code } => {
                w.u8(0x05)?;
                w.varint(stream.0.into())?;
                w.varint(code.0)?;
            }
            Self::GoAway { last_stream, code } => {
                w.u8(0x06)?;
                w.varint(last_stream.0.into())?;
                w.varint(code.0)?;
            }
            Self::Close { code } => {
                w.u8(0x07)?;
                w.varint(code.0)?;
            }
            Self::Hello { body } => {
                let len =
                    u16::try_from(body.len()).map_err(|_| WireError::BadValue("hello length"))?;
                w.u8(0x08)?;
                w.u16(len)?;
                w.bytes(body)?;
            }
            Self::Data {
                stream,
                msg,
                end_msg,
                fin,
                payload,
            } => {
                let n = emit_data_header(stream, msg, end_msg, fin, payload.len(), buf)?;
                let out = buf
                    .get_mut(n..n + payload.len())
                    .ok_or(WireError::BufferTooSmall)?;
                out.copy_from_slice(payload);
                return Ok(n + payload.len());
            }
            Self::Extension { ty, payload } => {
                if ty < EXT_BASE {
                    return Err(WireError::BadValue("extension type"));
                }
                w.u8(ty)?;
                w.varint(payload.len() as u64)?;
                w.bytes(payload)?;
            }
        }
        Ok(w.pos())
    }
}

/// Header length of a DATA frame on `stream`.
pub(crate) fn data_header_len(stream: StreamId) -> usize {
    1 + crate::varint::encoded_len(stream.0.into()).unwrap_or(4) + 2
}

/// Writes a DATA frame header for a `len`-byte payload; the payload follows.
pub(crate) fn emit_data_header(
    stream: StreamId,
    msg: MsgKind,
    end_msg: bool,
    fin: bool,
    len: usize,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    let len = u16::try_from(len).map_err(|_| WireError::BadValue("data length"))?;
    let mut w = Writer::new(buf);
    let ty = DATA_BASE
        | ((msg as u8) << 2)
        | if end_msg { FLAG_END_MSG } else { 0 }
        | if fin { FLAG_FIN } else { 0 };
    w.u8(ty)?;
    w.varint(stream.0.into())?;
    w.u16(len)?;
    Ok(w.pos())
}
