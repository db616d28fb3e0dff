//! The device's HELLO: who it is and what it offers.
//!
//! ```text
//! id_len u8 | id                      1..=63 of [a-z0-9-], no '-' at either end
//! fw_len u8 | firmware                0..=64 printable ASCII
//! params (12 bytes, see handshake)    what the device receives
//! max_head u16                        largest encoded head it accepts (>= 128)
//! n_services u8                       0..=16, then per service:
//!   name_len u8 | name                1..=32 tchar
//!   kind u8                           0 http, 1 raw
//!   n_protocols u8                    0..=8, then per subprotocol:
//!     len u8 | subprotocol            1..=64 tchar
//! ```
//! No bytes may follow. A service's index in this list is its number in OPEN.

use super::WireError;
use super::handshake::Params;
use super::reader::{Reader, Writer, is_tchar, is_text_char};

const MAX_ID: usize = 63;
const MAX_FIRMWARE: usize = 64;
const MAX_SERVICES: usize = 16;
const MAX_SERVICE_NAME: usize = 32;
const MAX_PROTOCOLS: usize = 8;
const MAX_PROTOCOL: usize = 64;
/// Smallest `max_head` a device may announce.
pub const MIN_HEAD: u16 = 128;

/// The kind of a device service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// Takes HTTP exchanges and WebSocket streams.
    Http = 0,
    /// Takes raw byte streams.
    Raw = 1,
}

/// A list of strings: a slice when built by the sender, the wire bytes when
/// parsed (so parsing needs no allocation). Iterate with [`StrList::iter`].
#[derive(Clone, Copy, Debug)]
pub enum StrList<'a> {
    /// Built from a slice.
    Slice(&'a [&'a str]),
    /// Parsed: `count` length-prefixed strings, already validated.
    Wire {
        /// The encoded strings.
        bytes: &'a [u8],
        /// How many.
        count: u8,
    },
}

impl<'a> StrList<'a> {
    /// The strings in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (slice, bytes, count): (&'a [&'a str], &'a [u8], u8) = match *self {
            Self::Slice(s) => (s, &[], 0),
            Self::Wire { bytes, count } => (&[], bytes, count),
        };
        let mut r = Reader::new(bytes);
        slice.iter().copied().chain((0..count).map_while(move |_| {
            let len = r.u8().ok()?;
            r.str(usize::from(len), "string", |_| true).ok()
        }))
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        match *self {
            Self::Slice(s) => s.len(),
            Self::Wire { count, .. } => usize::from(count),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `s` is in the list (exact, case-sensitive match).
    pub fn contains(&self, s: &str) -> bool {
        self.iter().any(|x| x == s)
    }
}

impl PartialEq for StrList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// A device service as announced in HELLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Service<'a> {
    /// Name, unique within the device (for example `web`, `modbus`).
    pub name: &'a str,
    /// What streams it takes.
    pub kind: ServiceKind,
    /// WebSocket subprotocols it supports, in preference order.
    pub subprotocols: StrList<'a>,
}

/// The device's services: a slice when built, wire bytes when parsed.
#[derive(Clone, Copy, Debug)]
pub enum ServiceList<'a> {
    /// Built from a slice.
    Slice(&'a [Service<'a>]),
    /// Parsed and validated.
    Wire {
        /// The encoded services.
        bytes: &'a [u8],
        /// How many.
        count: u8,
    },
}

impl<'a> ServiceList<'a> {
    /// The services in order; the index is the service number used in OPEN.
    pub fn iter(&self) -> impl Iterator<Item = Service<'a>> + 'a {
        let (slice, bytes, count): (&'a [Service<'a>], &'a [u8], u8) = match *self {
            Self::Slice(s) => (s, &[], 0),
            Self::Wire { bytes, count } => (&[], bytes, count),
        };
        let mut r = Reader::new(bytes);
        slice
            .iter()
            .copied()
            .chain((0..count).map_while(move |_| read_service(&mut r).ok()))
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        match *self {
            Self::Slice(s) => s.len(),
            Self::Wire { count, .. } => usize::from(count),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The service with this number.
    pub fn by_index(&self, index: u8) -> Option<Service<'a>> {
        self.iter().nth(usize::from(index))
    }

    /// The number and service with this name.
    pub fn by_name(&self, name: &str) -> Option<(u8, Service<'a>)> {
        self.iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .map(|(i, s)| (i as u8, s))
    }
}

impl PartialEq for ServiceList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// The device's HELLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hello<'a> {
    /// Device id; also its host label under the gateway's domain.
    pub device_id: &'a str,
    /// Firmware version, free text.
    pub firmware: &'a str,
    /// What the device receives.
    pub params: Params,
    /// Largest encoded request head the device accepts.
    pub max_head: u16,
    /// What the device offers.
    pub services: ServiceList<'a>,
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// Whether `id` is a valid device id (a DNS label in lower case).
pub fn valid_device_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ID
        && b.iter().all(|&c| is_id_char(c))
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn read_service<'a>(r: &mut Reader<'a>) -> Result<Service<'a>, WireError> {
    let len = usize::from(r.u8()?);
    if len == 0 || len > MAX_SERVICE_NAME {
        return Err(WireError::BadString("service name"));
    }
    let name = r.str(len, "service name", is_tchar)?;
    let kind = match r.u8()? {
        0 => ServiceKind::Http,
        1 => ServiceKind::Raw,
        _ => return Err(WireError::BadValue("service kind")),
    };
    let count = r.u8()?;
    if usize::from(count) > MAX_PROTOCOLS {
        return Err(WireError::BadValue("subprotocol count"));
    }
    let start = r.pos();
    let mut bytes_len = 0;
    let mut protos = Reader::new(r.rest_peek());
    for _ in 0..count {
        let len = usize::from(protos.u8()?);
        if len == 0 || len > MAX_PROTOCOL {
            return Err(WireError::BadString("subprotocol"));
        }
        protos.str(len, "subprotocol", is_tchar)?;
        bytes_len = protos.pos();
    }
    let bytes = r.bytes(bytes_len)?;
    debug_assert!(r.pos() == start + bytes_len);
    Ok(Service {
        name,
        kind,
        subprotocols: StrList::Wire { bytes, count },
    })
}

impl<'a> Hello<'a> {
    /// Decodes and validates a HELLO body.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let len = usize::from(r.u8()?);
        let device_id = r.str(len, "device id", is_id_char)?;
        if !valid_device_id(device_id) {
            return Err(WireError::BadString("device id"));
        }
        let len = usize::from(r.u8()?);
        if len > MAX_FIRMWARE {
            return Err(WireError::BadString("firmware"));
        }
        let firmware = r.str(len, "firmware", is_text_char)?;
        let params = Params::read(&mut r)?;
        let max_head = r.u16()?;
        if max_head < MIN_HEAD {
            return Err(WireError::BadValue("max_head"));
        }
        let count = r.u8()?;
        if usize::from(count) > MAX_SERVICES {
            return Err(WireError::BadValue("service count"));
        }
        let start = r.pos();
        for i in 0..count {
            let s = read_service(&mut r)?;
            // Names are unique: OPEN numbers services, people name them.
            let mut earlier = Reader::new(&buf[start..]);
            for _ in 0..i {
                if read_service(&mut earlier)?.name == s.name {
                    return Err(WireError::BadString("duplicate service name"));
                }
            }
        }
        let services = ServiceList::Wire {
            bytes: &buf[start..r.pos()],
            count,
        };
        r.finish()?;
        Ok(Self {
            device_id,
            firmware,
            params,
            max_head,
            services,
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        let mut n = 1 + self.device_id.len() + 1 + self.firmware.len() + Params::LEN + 2 + 1;
        for s in self.services.iter() {
            n += 1 + s.name.len() + 2;
            n += s.subprotocols.iter().map(|p| 1 + p.len()).sum::<usize>();
        }
        n
    }

    /// Encodes into `buf`, returning the length. Checks the same rules
    /// `parse` does, so a device cannot send a HELLO its gateway refuses.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if !valid_device_id(self.device_id) {
            return Err(WireError::BadString("device id"));
        }
        if self.firmware.len() > MAX_FIRMWARE || !self.firmware.bytes().all(is_text_char) {
            return Err(WireError::BadString("firmware"));
        }
        if self.max_head < MIN_HEAD {
            return Err(WireError::BadValue("max_head"));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(WireError::BadValue("service count"));
        }
        let mut w = Writer::new(buf);
        w.u8(self.device_id.len() as u8)?;
        w.bytes(self.device_id.as_bytes())?;
        w.u8(self.firmware.len() as u8)?;
        w.bytes(self.firmware.as_bytes())?;
        self.params.write(&mut w)?;
        w.u16(self.max_head)?;
        w.u8(self.services.len() as u8)?;
        for (i, s) in self.services.iter().enumerate() {
            let name_ok = !s.name.is_empty()
                && s.name.len() <= MAX_SERVICE_NAME
                && s.name.bytes().all(is_tchar);
            if !name_ok || self.services.iter().take(i).any(|e| e.name == s.name) {
                return Err(WireError::BadString("service name"));
            }
            if s.subprotocols.len() > MAX_PROTOCOLS {
                return Err(WireError::BadValue("subprotocol count"));
            }
            w.u8(s.name.len() as u8)?;
            w.bytes(s.name.as_bytes())?;
            w.u8(s.kind as u8)?;
            w.u8(s.subprotocols.len() as u8)?;
            for p in s.subprotocols.iter() {
                if p.is_empty() || p.len() > MAX_PROTOCOL || !p.bytes().all(is_tchar) {
                    return Err(WireError::BadString("subprotocol"));
                }
                w.u8(p.len() as u8)?;
                w.bytes(p.as_bytes())?;
            }
        }
        Ok(w.pos())
    }
}
