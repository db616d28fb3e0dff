//! Shared pieces of the `proto` fuzz targets and of the seed generator.
//!
//! ```text
//!   fuzz input ──▶ Input (a cursor that reads zeros past the end)
//!                    │
//!                    ├─▶ wire decoders (frame, hello, head)
//!                    └─▶ peer::Device (a hand-driven device: real Noise, real
//!                          records, any plaintext) ──▶ gateway Session
//! ```
//!
//! ## Layout
//!
//! - [`Input`]: the byte cursor every target reads its choices from.
//! - [`peer`]: fixed keys, the HELLO, a hand-driven device and a gateway session.
//! - [`script`]: the byte layout of the `handshake` and `session` inputs, shared
//!   with `examples/seeds.rs` so the seeds stay in step with the targets.

pub mod peer;
pub mod script;

use std::sync::OnceLock;

/// Whether `PROTO_FUZZ_TRACE` is set in the environment: the `session` and
/// `handshake` targets then print what they do, for reading a reproducer
/// (`PROTO_FUZZ_TRACE=1 cargo +nightly fuzz run session <file>`).
pub fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PROTO_FUZZ_TRACE").is_some())
}

/// `eprintln!` when [`tracing`] is on.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// A cursor over the fuzz input. Reads past the end give zeros, so every
/// operation decodes from any input; [`Input::is_empty`] ends the loops.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The unread bytes, consuming them.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        self.pos = self.data.len();
        rest
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// A big-endian u16, zero-padded past the end.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// A big-endian u32, zero-padded past the end.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A bit of `byte`, for flags.
    pub fn bit(byte: u8, n: u32) -> bool {
        byte >> n & 1 == 1
    }
}
