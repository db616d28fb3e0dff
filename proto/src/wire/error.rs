use core::fmt;

/// Why a wire decoder or encoder refused its input.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the structure does.
    Truncated,
    /// A frame type this version does not define (and outside the extension range).
    UnknownFrame(u8),
    /// A field holds a value outside its range.
    BadValue(&'static str),
    /// A string field is too long, empty where it may not be, or has a forbidden byte.
    BadString(&'static str),
    /// Bytes follow a structure whose length is fixed by its container.
    TrailingBytes,
    /// The output buffer is too small for `emit`.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated"),
            Self::UnknownFrame(t) => write!(f, "unknown frame type 0x{t:02x}"),
            Self::BadValue(field) => write!(f, "{field} out of range"),
            Self::BadString(field) => write!(f, "{field} is not a valid string"),
            Self::TrailingBytes => f.write_str("trailing bytes"),
            Self::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

impl core::error::Error for WireError {}
