//! # device-fw
//!
//! The device side of the link, for the STM32H5 and for the host.
//!
//! ```text
//!   sample app (web UI, readings over WebSocket, commands)
//!        │  App trait: events in, sends out
//!   link runtime (no_std, static memory): connect, session, reconnect
//!        │  Platform + Transport traits
//!   embassy-net TCP (STM32H5)   │   tokio TCP (device-sim)   │   in-memory (tests)
//! ```
//!
//! ## Layout
//!
//! - [`budget`]: RAM budgets the build checks.
//! - [`app`]: the sample controller application and the [`app::Board`] it runs on.
//! - `host` (feature `host`): the tokio platform and a simulated board,
//!   used by the `device-sim` binary and the tests.
//! - [`provision`]: the provisioning block in flash (gateway address and keys).
//! - [`link`]: the runtime that keeps one `proto` session alive and
//!   dispatches its streams to an [`link::App`].
//! - [`selftest`]: `proto` checks without std, run on the emulated
//!   Cortex-M33 (QEMU mps2-an505) and on the host.

#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![forbid(unsafe_code)]

pub mod app;
pub mod budget;
#[cfg(feature = "host")]
pub mod host;
pub mod link;
pub mod provision;
pub mod selftest;

pub use proto;
