//! Error codes carried by RESET, GOAWAY and CLOSE frames.

use core::fmt;

/// A reason code on the wire (a varint). Unknown values are carried as they
/// are, so a newer peer's codes still reach logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Code(pub u64);

impl Code {
    /// Graceful: nothing went wrong.
    pub const NO_ERROR: Self = Self(0x0);
    /// The peer broke a rule of the protocol (a malformed or unexpected frame).
    pub const PROTOCOL: Self = Self(0x1);
    /// The peer sent more than the credit it was given.
    pub const FLOW_CONTROL: Self = Self(0x2);
    /// A stream was opened beyond the receiver's stream limit.
    pub const REFUSED: Self = Self(0x3);
    /// The stream is no longer wanted (the browser went away, for example).
    pub const CANCEL: Self = Self(0x4);
    /// The sender failed internally.
    pub const INTERNAL: Self = Self(0x5);
    /// Nothing was received for the idle timeout.
    pub const IDLE_TIMEOUT: Self = Self(0x6);
    /// The sender is shutting down (GOAWAY on drain).
    pub const SHUTDOWN: Self = Self(0x7);
    /// A newer authenticated session of the same device took over.
    pub const REPLACED: Self = Self(0x8);
    /// The device's key was revoked.
    pub const REVOKED: Self = Self(0x9);
    /// The stream names a service the device does not offer.
    pub const UNKNOWN_SERVICE: Self = Self(0xa);
    /// The device (or the application behind it) did not answer in time.
    pub const TIMEOUT: Self = Self(0xb);
    /// The upstream behind a raw service refused or dropped the connection.
    pub const UPSTREAM: Self = Self(0xc);

    /// A short name for logs and metric labels; `"unknown"` for codes this
    /// version does not define.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x0 => "no_error",
            0x1 => "protocol",
            0x2 => "flow_control",
            0x3 => "refused",
            0x4 => "cancel",
            0x5 => "internal",
            0x6 => "idle_timeout",
            0x7 => "shutdown",
            0x8 => "replaced",
            0x9 => "revoked",
            0xa => "unknown_service",
            0xb => "timeout",
            0xc => "upstream",
            _ => "unknown",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}
