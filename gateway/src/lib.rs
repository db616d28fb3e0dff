//! # gateway
//!
//! The cloud side of the device link: TLS edge for browsers, device link
//! listener, HTTP and WebSocket bridging with header normalization.
//!
//! ## Layout
//!
//! - `config`: the TOML configuration, typed once at load.
//! - `edge`: listeners (MSS clamp), later TLS and HTTP.
//! - `keys`: the gateway's key file.
//! - `cli`: command line and logging set-up.
//! - `normalize`: Origin, subprotocols, Host, Forwarded and hop-by-hop rules toward devices.
//! - `link`: the device link: listener, handshakes against the registry, one task per device session.

pub mod cli;
pub mod config;
pub mod edge;
pub mod keys;
pub mod link;
pub mod normalize;

pub use proto;
