//! A bounds-checked cursor for decoders and its twin for encoders. Neither
//! panics: every read or write that would leave the buffer is an error.

use super::WireError;
use crate::varint;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// The unread bytes, without consuming them.
    pub(crate) fn rest_peek(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        let (v, n) = varint::decode(&self.buf[self.pos..]).ok_or(WireError::Truncated)?;
        self.pos += n;
        Ok(v)
    }

    /// A string of `len` bytes that must be UTF-8 and pass `ok` for every byte.
    pub(crate) fn str(
        &mut self,
        len: usize,
        field: &'static str,
        ok: fn(u8) -> bool,
    ) -> Result<&'a str, WireError> {
        let b = self.bytes(len)?;
        if !b.iter().all(|&c| ok(c)) {
            return Err(WireError::BadString(field));
        }
        core::str::from_utf8(b).map_err(|_| WireError::BadString(field))
    }

    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        let end = self
            .pos
            .checked_add(b.len())
            .ok_or(WireError::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(WireError::BufferTooSmall)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn varint(&mut self, v: u64) -> Result<(), WireError> {
        let rest = self
            .buf
            .get_mut(self.pos..)
            .ok_or(WireError::BufferTooSmall)?;
        let n = varint::encode(v, rest).ok_or(if v > varint::MAX {
            WireError::BadValue("varint")
        } else {
            WireError::BufferTooSmall
        })?;
        self.pos += n;
        Ok(())
    }
}

/// Printable ASCII with space.
pub(crate) fn is_text_char(c: u8) -> bool {
    c == b' ' || c.is_ascii_graphic()
}

/// RFC 9110 `tchar`: what HTTP tokens (methods, header names, WebSocket
/// subprotocols) are made of.
pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}
