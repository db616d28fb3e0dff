//! Byte layouts of the `handshake` and `session` inputs.
//!
//! A fuzz input for these targets is a small program. Every field is read
//! through [`crate::Input`], so a short input still decodes (missing bytes
//! read as zero) and the fuzzer can splice, insert and delete freely.
//!
//! # `handshake`
//!
//! ```text
//! mode u8 | decision u8 | chunk u8 | body…
//!   mode % 4:  0 gateway, body is the raw bytes it reads
//!              1 gateway, body is len u8 | InitPayload plaintext[len] | raw bytes after msg1
//!              2 device,  body is the raw bytes it reads after sending msg1
//!              3 device,  body is len u8 | RespPayload plaintext[len] | raw bytes after msg2
//!   decision:  bits 0-1: on Authenticate 0 accept, 1 reject, 2 refuse, 3 leave pending
//!              bits 2-3: status for reject; bits 4-7: poll_transmit buffer (0: full)
//!   chunk:     handle_input is given chunk bytes at a time (0: all at once)
//! ```
//!
//! # `session`
//!
//! ```text
//! setup: 4 bytes, then ops until the input ends
//!   s0  gateway params   bits 0-1 max_record [`GW_RECORD`], 2-4 stream window, 5-7 conn window ([`WINDOWS`])
//!   s1  gateway limits   bits 0-2 max_streams [`STREAMS`], 3-4 stream table [`TABLE`],
//!                        5-6 staging buffer [`STAGING`], 7 a 5 s stall timeout
//!   s2  device HELLO     bits 0-1 max_record [`DEV_RECORD`], 2-4 stream window, 5-7 conn window
//!   s3  device HELLO     bits 0-2 max_streams [`STREAMS`]
//! op u8 % 10, then its operands:
//!   RECORD    split u8 | len u16 | plaintext[len]     sealed, fed in chunks of `split` (0: whole)
//!   FRAMES    split u8 | count u8 | frame…            1 + count % 8 frames, sealed as one record
//!   OPEN      kind u8 | service u8                    gateway opens a stream
//!   SEND      stream u8 | flags u8 | len u16          gateway sends len bytes
//!   CONSUME   stream u8 | n u16                       gateway returns credit
//!   RESET     stream u8 | code u8                     gateway resets a stream
//!   TRANSMIT  size u8                                 poll_transmit into size*8 bytes (0: max_transmit)
//!   ADVANCE   step u8                                 clock forward ([`STEPS`]), handle_timeout
//!   CONTROL   what u8 | code u8                       ping, goaway, close, eof, sleep to poll_timeout
//!   TAMPER    how u8 | arg u8                         replay, flipped bit, garbage, bad length
//! frame u8 % 10, then its fields:
//!   DATA stream u8 | flags u8 | len u16    WINDOW stream u8 | inc u8 [`INCREMENTS`] (7: u32 follows)
//!   OPEN id u8 (0: next odd id) | kind u8 | service u8    RESET stream u8 | code u8
//!   PING token u8    PONG token u8 (0: the gateway's last PING)    GOAWAY last u8 | code u8
//!   CLOSE code u8    HELLO (the HELLO again)    EXT type u8 | len u8
//! stream u8: 0 the connection; 1..=0xdf a known stream (by index, modulo); 0xe0.. the raw id b - 0xe0
//! flags u8: bits 0-2 message kind (% 5), bit 3 END_MSG, bit 4 FIN
//! ```

use proto::wire::MAX_WINDOW;

/// `handshake` modes.
pub mod mode {
    /// The gateway reads raw bytes.
    pub const GATEWAY_RAW: u8 = 0;
    /// The gateway reads a real msg1 with a chosen payload plaintext.
    pub const GATEWAY_PAYLOAD: u8 = 1;
    /// The device reads raw bytes after its msg1.
    pub const DEVICE_RAW: u8 = 2;
    /// The device reads a real msg2 with a chosen payload plaintext.
    pub const DEVICE_PAYLOAD: u8 = 3;
}

/// `session` operations.
pub mod op {
    /// A sealed record of raw plaintext.
    pub const RECORD: u8 = 0;
    /// A sealed record of described frames.
    pub const FRAMES: u8 = 1;
    /// `Session::open`.
    pub const OPEN: u8 = 2;
    /// `Session::send`.
    pub const SEND: u8 = 3;
    /// `Session::consume`.
    pub const CONSUME: u8 = 4;
    /// `Session::reset`.
    pub const RESET: u8 = 5;
    /// `Session::poll_transmit`, output checked.
    pub const TRANSMIT: u8 = 6;
    /// The clock moves; `handle_timeout`.
    pub const ADVANCE: u8 = 7;
    /// ping, goaway, close, handle_eof, or sleep until `poll_timeout`.
    pub const CONTROL: u8 = 8;
    /// Records the gateway must refuse.
    pub const TAMPER: u8 = 9;
    /// Number of operations.
    pub const COUNT: u8 = 10;
}

/// Frames inside a `FRAMES` record.
pub mod frame {
    /// DATA.
    pub const DATA: u8 = 0;
    /// WINDOW.
    pub const WINDOW: u8 = 1;
    /// OPEN.
    pub const OPEN: u8 = 2;
    /// RESET.
    pub const RESET: u8 = 3;
    /// PING.
    pub const PING: u8 = 4;
    /// PONG.
    pub const PONG: u8 = 5;
    /// GOAWAY.
    pub const GOAWAY: u8 = 6;
    /// CLOSE.
    pub const CLOSE: u8 = 7;
    /// A second HELLO.
    pub const HELLO: u8 = 8;
    /// An extension frame.
    pub const EXT: u8 = 9;
    /// Number of frame kinds.
    pub const COUNT: u8 = 10;
}

/// What `CONTROL` does, by `what % 5`.
pub mod control {
    /// `Session::ping`.
    pub const PING: u8 = 0;
    /// `Session::goaway`.
    pub const GOAWAY: u8 = 1;
    /// `Session::close`.
    pub const CLOSE: u8 = 2;
    /// `Session::handle_eof`.
    pub const EOF: u8 = 3;
    /// Sleep until `poll_timeout`, then `handle_timeout`.
    pub const SLEEP: u8 = 4;
}

/// What `TAMPER` sends, by `how % 4`.
pub mod tamper {
    /// The last record again (an old nonce).
    pub const REPLAY: u8 = 0;
    /// A fresh record of `arg` bytes with one bit flipped.
    pub const FLIP: u8 = 1;
    /// `arg` bytes of garbage.
    pub const GARBAGE: u8 = 2;
    /// A length prefix of 0xffff.
    pub const TOO_LONG: u8 = 3;
}

/// Window sizes, indexed by three bits (index 0 is a plain default).
pub const WINDOWS: [u32; 8] = [1024, 0, 1, 16, 300, 65_536, 262_144, MAX_WINDOW];
/// Gateway record sizes.
pub const GW_RECORD: [u16; 4] = [1024, 512, 4096, 16 * 1024 + 18];
/// Device record sizes.
pub const DEV_RECORD: [u16; 4] = [1024, 512, 4096, u16::MAX];
/// Stream limits.
pub const STREAMS: [u16; 8] = [4, 0, 1, 2, 3, 8, 16, 64];
/// Stream table sizes of the gateway.
pub const TABLE: [usize; 4] = [4, 1, 2, 64];
/// Staging buffer sizes of the gateway.
pub const STAGING: [usize; 4] = [70_000, 256, 600, 2048];
/// WINDOW increments; the last entry means "a u32 follows".
pub const INCREMENTS: [u64; 8] = [
    1,
    16,
    300,
    1024,
    65_536,
    MAX_WINDOW as u64,
    (1 << 62) - 1,
    0,
];
/// Clock steps in milliseconds.
pub const STEPS: [u64; 8] = [1, 100, 1_000, 10_000, 15_000, 45_000, 60_000, 3_600_000];

/// Builds `session` inputs (for the seed generator).
#[derive(Clone, Debug, Default)]
pub struct SessionScript {
    bytes: Vec<u8>,
}

impl SessionScript {
    /// A script starting with the four setup bytes.
    pub fn new(setup: [u8; 4]) -> Self {
        Self {
            bytes: setup.to_vec(),
        }
    }

    /// The encoded input.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Appends raw bytes (an operation and its operands).
    pub fn push(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A `RECORD` of `plaintext`, fed whole.
    pub fn record(self, plaintext: &[u8]) -> Self {
        let len = (plaintext.len() as u16).to_be_bytes();
        self.push(&[op::RECORD, 0, len[0], len[1]]).push(plaintext)
    }

    /// A `FRAMES` record of the described `frames` (each a kind byte and its fields).
    pub fn frames(self, split: u8, frames: &[&[u8]]) -> Self {
        let mut s = self.push(&[op::FRAMES, split, (frames.len() - 1) as u8]);
        for f in frames {
            s = s.push(f);
        }
        s
    }

    /// A `TRANSMIT` into a full-size buffer.
    pub fn transmit(self) -> Self {
        self.push(&[op::TRANSMIT, 0])
    }
}
