//! The payloads carried inside the two Noise handshake messages.
//!
//! ```text
//! init payload (device → gateway, 10 bytes):
//!   min_version u8 | max_version u8 | timestamp u64
//! response payload (gateway → device, 22 bytes):
//!   status u8 | version u8 | info u64 | params (12 bytes)
//! params:
//!   max_record u16 | max_streams u16 | stream_window u32 | conn_window u32
//! ```
//! All integers big-endian. Receivers ignore bytes after these fields, so a
//! later version may append fields without breaking older peers.

use super::WireError;
use super::reader::{Reader, Writer};

/// Smallest record any peer may announce (length prefix and tag included).
pub const MIN_RECORD: u16 = 512;
/// Largest flow-control window (2^31 - 1), as in HTTP/2.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// What the device sends in the first handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitPayload {
    /// Lowest session version the device speaks.
    pub min_version: u8,
    /// Highest session version the device speaks.
    pub max_version: u8,
    /// Strictly increasing per device key: the gateway refuses a value not
    /// above the last it accepted, so a replayed message cannot start a session.
    pub timestamp: u64,
}

impl InitPayload {
    /// Encoded length.
    pub const LEN: usize = 10;

    /// Decodes; bytes after the fields are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let p = Self {
            min_version: r.u8()?,
            max_version: r.u8()?,
            timestamp: r.u64()?,
        };
        if p.min_version == 0 || p.min_version > p.max_version {
            return Err(WireError::BadValue("version range"));
        }
        Ok(p)
    }

    /// Encodes into `buf`, returning the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(self.min_version)?;
        w.u8(self.max_version)?;
        w.u64(self.timestamp)?;
        Ok(w.pos())
    }
}

/// The gateway's verdict in the second handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The session is up (pending the device's HELLO).
    Accepted,
    /// No common version. `info` carries the gateway's range: min << 8 | max.
    VersionUnsupported,
    /// The timestamp was not above the last accepted one, which `info` carries.
    /// A device whose counter went backwards resumes above it.
    StaleTimestamp,
    /// The gateway is at capacity or draining; retry later with backoff.
    Busy,
}

impl Status {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Self::Accepted),
            1 => Ok(Self::VersionUnsupported),
            2 => Ok(Self::StaleTimestamp),
            3 => Ok(Self::Busy),
            _ => Err(WireError::BadValue("status")),
        }
    }
}

/// Limits one side announces for what it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Largest record the announcer accepts, length prefix and tag included
    /// (at least [`MIN_RECORD`]).
    pub max_record: u16,
    /// Streams the peer may have open towards the announcer at once.
    pub max_streams: u16,
    /// Initial credit, in payload bytes, of each stream the announcer receives on.
    pub stream_window: u32,
    /// Initial credit of the connection as a whole.
    pub conn_window: u32,
}

impl Params {
    /// Encoded length.
    pub const LEN: usize = 12;

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let p = Self {
            max_record: r.u16()?,
            max_streams: r.u16()?,
            stream_window: r.u32()?,
            conn_window: r.u32()?,
        };
        if p.max_record < MIN_RECORD {
            return Err(WireError::BadValue("max_record"));
        }
        if p.stream_window > MAX_WINDOW || p.conn_window > MAX_WINDOW {
            return Err(WireError::BadValue("window"));
        }
        Ok(p)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.u16(self.max_record)?;
        w.u16(self.max_streams)?;
        w.u32(self.stream_window)?;
        w.u32(self.conn_window)
    }
}

/// What the gateway sends in the second handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespPayload {
    /// The verdict.
    pub status: Status,
    /// The version chosen (meaningful when accepted).
    pub version: u8,
    /// Status detail, see [`Status`].
    pub info: u64,
    /// The gateway's receive limits.
    pub params: Params,
}

impl RespPayload {
    /// Encoded length.
    pub const LEN: usize = 10 + Params::LEN;

    /// Decodes; bytes after the fields are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        Ok(Self {
            status: Status::from_u8(r.u8()?)?,
            version: r.u8()?,
            info: r.u64()?,
            params: Params::read(&mut r)?,
        })
    }

    /// Encodes into `buf`, returning the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(self.status as u8)?;
        w.u8(self.version)?;
        w.u64(self.info)?;
        self.params.write(&mut w)?;
        Ok(w.pos())
    }
}
