//! HTTP heads as they cross the link: already parsed and normalized by the
//! gateway, so the device needs no HTTP parser and cannot be reached by
//! request smuggling (a value with CR, LF or NUL does not decode).
//!
//! ```text
//! request head:   method_len u8 | method | target_len u16 | target | headers
//! response head:  status u16 | headers
//! headers:        count u16 (0..=128), then per header:
//!                 name_len u8 | name | value_len u16 | value
//! ```
//! Methods and header names are RFC 9110 tokens, names in lower case; the
//! target is origin-form (starts with `/`) or `*`, visible ASCII; values are
//! visible ASCII, space, tab or bytes 0x80..=0xff. No bytes may follow.

use super::WireError;
use super::reader::{Reader, Writer, is_tchar};

const MAX_METHOD: usize = 16;
const MAX_HEADERS: usize = 128;

/// One header field. Names are lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Field name, lower case.
    pub name: &'a str,
    /// Field value, without surrounding whitespace.
    pub value: &'a [u8],
}

/// Header fields: a slice when built, wire bytes when parsed.
#[derive(Clone, Copy, Debug)]
pub enum HeaderList<'a> {
    /// Built from a slice.
    Slice(&'a [Header<'a>]),
    /// Parsed and validated.
    Wire {
        /// The encoded fields.
        bytes: &'a [u8],
        /// How many.
        count: u16,
    },
}

impl<'a> HeaderList<'a> {
    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = Header<'a>> + 'a {
        let (slice, bytes, count): (&'a [Header<'a>], &'a [u8], u16) = match *self {
            Self::Slice(s) => (s, &[], 0),
            Self::Wire { bytes, count } => (&[], bytes, count),
        };
        let mut r = Reader::new(bytes);
        slice
            .iter()
            .copied()
            .chain((0..count).map_while(move |_| read_header(&mut r).ok()))
    }

    /// Number of fields.
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

    /// The first value of `name` (give it in lower case).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|h| h.name == name).map(|h| h.value)
    }

    fn buffer_len(&self) -> usize {
        2 + self
            .iter()
            .map(|h| 1 + h.name.len() + 2 + h.value.len())
            .sum::<usize>()
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let count = r.u16()?;
        if usize::from(count) > MAX_HEADERS {
            return Err(WireError::BadValue("header count"));
        }
        let start = r.pos();
        let mut peek = Reader::new(r.rest_peek());
        for _ in 0..count {
            read_header(&mut peek)?;
        }
        let bytes = r.bytes(peek.pos())?;
        debug_assert!(r.pos() == start + bytes.len());
        Ok(Self::Wire { bytes, count })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        let count = u16::try_from(self.len()).map_err(|_| WireError::BadValue("header count"))?;
        if usize::from(count) > MAX_HEADERS {
            return Err(WireError::BadValue("header count"));
        }
        w.u16(count)?;
        for h in self.iter() {
            check_name(h.name)?;
            check_value(h.value)?;
            w.u8(h.name.len() as u8)?;
            w.bytes(h.name.as_bytes())?;
            w.u16(h.value.len() as u16)?;
            w.bytes(h.value)?;
        }
        Ok(())
    }
}

impl PartialEq for HeaderList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

fn is_name_char(c: u8) -> bool {
    is_tchar(c) && !c.is_ascii_uppercase()
}

fn is_value_char(c: u8) -> bool {
    c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80
}

fn check_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > usize::from(u8::MAX) || !name.bytes().all(is_name_char) {
        return Err(WireError::BadString("header name"));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), WireError> {
    if value.len() > usize::from(u16::MAX) || !value.iter().all(|&c| is_value_char(c)) {
        return Err(WireError::BadString("header value"));
    }
    Ok(())
}

fn read_header<'a>(r: &mut Reader<'a>) -> Result<Header<'a>, WireError> {
    let len = usize::from(r.u8()?);
    if len == 0 {
        return Err(WireError::BadString("header name"));
    }
    let name = r.str(len, "header name", is_name_char)?;
    let len = usize::from(r.u16()?);
    let value = r.bytes(len)?;
    check_value(value)?;
    Ok(Header { name, value })
}

/// A request head, gateway to device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestHead<'a> {
    /// Method token, as sent by the client (`GET`, `POST`, …).
    pub method: &'a str,
    /// Origin-form target: path and query, starting with `/` (or `*`).
    pub target: &'a str,
    /// Header fields after normalization.
    pub headers: HeaderList<'a>,
}

impl<'a> RequestHead<'a> {
    /// Decodes and validates.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let len = usize::from(r.u8()?);
        if len == 0 || len > MAX_METHOD {
            return Err(WireError::BadString("method"));
        }
        let method = r.str(len, "method", is_tchar)?;
        let len = usize::from(r.u16()?);
        let target = r.str(len, "target", |c| c.is_ascii_graphic())?;
        check_target(target)?;
        let headers = HeaderList::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            method,
            target,
            headers,
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        1 + self.method.len() + 2 + self.target.len() + self.headers.buffer_len()
    }

    /// Encodes, checking what `parse` checks.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.method.is_empty()
            || self.method.len() > MAX_METHOD
            || !self.method.bytes().all(is_tchar)
        {
            return Err(WireError::BadString("method"));
        }
        check_target(self.target)?;
        let mut w = Writer::new(buf);
        w.u8(self.method.len() as u8)?;
        w.bytes(self.method.as_bytes())?;
        w.u16(self.target.len() as u16)?;
        w.bytes(self.target.as_bytes())?;
        self.headers.write(&mut w)?;
        Ok(w.pos())
    }
}

fn check_target(t: &str) -> Result<(), WireError> {
    let ok = (t == "*" || t.starts_with('/'))
        && t.len() <= usize::from(u16::MAX)
        && t.bytes().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(WireError::BadString("target"))
    }
}

/// A response head, device to gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResponseHead<'a> {
    /// Status code, 100..=999 (101 accepts a WebSocket).
    pub status: u16,
    /// Header fields.
    pub headers: HeaderList<'a>,
}

impl<'a> ResponseHead<'a> {
    /// Decodes and validates.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let status = r.u16()?;
        if !(100..=999).contains(&status) {
            return Err(WireError::BadValue("status"));
        }
        let headers = HeaderList::read(&mut r)?;
        r.finish()?;
        Ok(Self { status, headers })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        2 + self.headers.buffer_len()
    }

    /// Encodes, checking what `parse` checks.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if !(100..=999).contains(&self.status) {
            return Err(WireError::BadValue("status"));
        }
        let mut w = Writer::new(buf);
        w.u16(self.status)?;
        self.headers.write(&mut w)?;
        Ok(w.pos())
    }
}
