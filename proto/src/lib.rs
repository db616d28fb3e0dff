//! # proto: the lean device protocol ("devlink")
//!
//! The protocol between the gateway and the devices that dial out to it,
//! as sans-IO state machines: bytes and time in; bytes, events and the next
//! deadline out. No I/O, no clock, no allocation, no `unsafe`; the same code
//! runs in the gateway (tokio) and on the STM32H5 (embassy). The normative
//! description is `SPEC.md` beside this crate.
//!
//! ```text
//!   device (initiator)                          gateway (responder)
//!   ──────────────────                          ───────────────────
//!   msg1: e, es, s, ss + InitPayload  ───────▶  Authenticate? (registry, timestamp)
//!                                     ◀───────  msg2: e, ee, se + RespPayload
//!   record: HELLO (key confirmation)  ───────▶  session up
//!   records: frames  ◀──────────────────────▶   OPEN / DATA / WINDOW / RESET / PING / GOAWAY / CLOSE
//! ```
//!
//! A record is `length u16 | AEAD(frames)`: 18 bytes of overhead. The AEAD
//! is ChaCha20-Poly1305, or AES-256-GCM when both sides offer it (hosts with
//! AES instructions, feature `ring`; SPEC.md §3.3).
//! Frames multiplex streams (HTTP exchanges, WebSockets, raw byte pipes)
//! under per-stream and per-connection credit.
//!
//! ## Layout
//!
//! - [`wire`]: frame, HELLO, head and handshake-payload encodings (views and reprs).
//! - [`noise`]: Noise IK over X25519, ChaCha20-Poly1305 and BLAKE2s, both roles.
//! - [`session`]: the session state machine for either role, with its streams.
//! - `aead`: ChaCha20-Poly1305, RustCrypto's (default, what devices run) or
//!   ring's (feature `ring`, hosts; same bytes on the wire), and
//!   AES-256-GCM (feature `ring`; on AWS-LC with feature `aws-lc`, ring's
//!   otherwise), the record cipher hosts may negotiate.
//! - [`backoff`]: the reconnect policy devices follow.
//! - [`keys`], [`code`], [`time`], [`varint`]: small shared types.

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    clippy::std_instead_of_core,
    clippy::alloc_instead_of_core
)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod aead;
pub mod backoff;
pub mod code;
pub mod keys;
pub mod noise;
pub mod session;
pub mod time;
pub mod varint;
pub mod wire;

pub use backoff::Backoff;
pub use code::Code;
pub use keys::{PublicKey, SecretKey};
pub use session::{
    Buffers, CloseReason, Config, Event, Role, Session, SessionError, SetupError, Stats,
    StreamError, StreamSlot,
};
pub use time::Instant;
pub use wire::{
    Cipher, Ciphers, Hello, MsgKind, Params, Service, ServiceKind, ServiceList, StrList, StreamId,
    StreamKind,
};
