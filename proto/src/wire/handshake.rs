//! The payloads carried inside the two Noise handshake messages.
//!
//! ```text
//! init payload (device → gateway, 10 or 11 bytes):
//!   min_version u8 | max_version u8 | timestamp u64 [| ciphers u8]
//! response payload (gateway → device, 22 or 23 bytes):
//!   status u8 | version u8 | info u64 | params (12 bytes) [| cipher u8]
//! params:
//!   max_record u16 | max_streams u16 | stream_window u32 | conn_window u32
//! ```
//! All integers big-endian. Receivers ignore bytes after these fields, so a
//! later version may append fields without breaking older peers. The
//! bracketed bytes are such fields: a sender leaves them out when they are
//! 0 (ChaCha20-Poly1305 only), so those payloads are the original ones.

use super::WireError;
use super::reader::{Reader, Writer};

/// Smallest record any peer may announce (length prefix and tag included).
pub const MIN_RECORD: u16 = 512;
/// Largest flow-control window (2^31 - 1), as in HTTP/2.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// A record cipher (SPEC.md §3.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cipher {
    /// ChaCha20-Poly1305: every side speaks it; the default.
    #[default]
    ChaCha20Poly1305 = 0,
    /// AES-256-GCM: for hosts with AES instructions, when both offer it.
    Aes256Gcm = 1,
}

impl Cipher {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(Self::ChaCha20Poly1305),
            1 => Ok(Self::Aes256Gcm),
            _ => Err(WireError::BadValue("cipher")),
        }
    }

    /// The name in logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ChaCha20Poly1305 => "chacha20-poly1305",
            Self::Aes256Gcm => "aes-256-gcm",
        }
    }
}

/// Record ciphers a side offers (the device) or accepts (the gateway)
/// beyond ChaCha20-Poly1305, which every side speaks: InitPayload's
/// `ciphers` bits. Unknown bits are kept and ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ciphers(pub u8);

impl Ciphers {
    /// ChaCha20-Poly1305 only.
    pub const NONE: Self = Self(0);
    /// AES-256-GCM (bit 0).
    pub const AES_256_GCM: Self = Self(1);

    /// Whether every cipher of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The ciphers of both.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The ciphers this build of `proto` can run: AES-256-GCM with the
    /// `ring` feature (hosts), none on devices.
    pub const fn supported() -> Self {
        if cfg!(feature = "ring") {
            Self::AES_256_GCM
        } else {
            Self::NONE
        }
    }

    /// The ciphers this build runs fast on this machine: AES-256-GCM with
    /// the `ring` feature where the CPU has AES and carry-less multiply
    /// instructions (x86-64: AES-NI and PCLMULQDQ; AArch64: AES and PMULL).
    /// Without them AES-GCM is slower than ChaCha20-Poly1305, so a host
    /// offers and accepts it only here.
    pub fn hardware() -> Self {
        #[cfg(all(feature = "ring", target_arch = "x86_64"))]
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return Self::AES_256_GCM;
        }
        #[cfg(all(feature = "ring", target_arch = "aarch64"))]
        if std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
        {
            return Self::AES_256_GCM;
        }
        Self::NONE
    }
}

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
    /// Record ciphers the device offers beyond ChaCha20-Poly1305.
    pub ciphers: Ciphers,
}

impl InitPayload {
    /// Encoded length without the optional `ciphers` byte.
    pub const LEN: usize = 10;
    /// Encoded length at most.
    pub const MAX_LEN: usize = 11;

    /// Decodes; bytes after the fields are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let p = Self {
            min_version: r.u8()?,
            max_version: r.u8()?,
            timestamp: r.u64()?,
            ciphers: match r.rest_peek().first() {
                Some(&c) => Ciphers(c),
                None => Ciphers::NONE,
            },
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
        if self.ciphers != Ciphers::NONE {
            w.u8(self.ciphers.0)?;
        }
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
    /// The record cipher (meaningful when accepted).
    pub cipher: Cipher,
}

impl RespPayload {
    /// Encoded length without the optional `cipher` byte.
    pub const LEN: usize = 10 + Params::LEN;
    /// Encoded length at most.
    pub const MAX_LEN: usize = Self::LEN + 1;

    /// Decodes; bytes after the fields are ignored.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        Ok(Self {
            status: Status::from_u8(r.u8()?)?,
            version: r.u8()?,
            info: r.u64()?,
            params: Params::read(&mut r)?,
            cipher: match r.rest_peek().first() {
                Some(&c) => Cipher::from_u8(c)?,
                None => Cipher::ChaCha20Poly1305,
            },
        })
    }

    /// Encodes into `buf`, returning the length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf);
        w.u8(self.status as u8)?;
        w.u8(self.version)?;
        w.u64(self.info)?;
        self.params.write(&mut w)?;
        if self.cipher != Cipher::ChaCha20Poly1305 {
            w.u8(self.cipher as u8)?;
        }
        Ok(w.pos())
    }
}
