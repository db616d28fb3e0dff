//! # gateway
//!
//! The cloud side of the device link: TLS edge for browsers, device link
//! listener, HTTP and WebSocket bridging with header normalization.
//!
//! ## Layout
//!
//! - `config`: the TOML configuration, typed once at load.
//! - `edge`: listeners (MSS clamp), TLS, the HTTP accept loop.
//! - `acme`: certificates obtained and renewed from an ACME CA.
//! - `auth`: users, sessions, tokens, login, audit.
//! - `beside`: rare events (timers, signals) a busy task polls only once they wake.
//! - `bridge`: routing, checks, and HTTP and WebSocket exchanges with devices.
//! - `server`: a configuration turned into listeners and tasks.
//! - `demo`: `gateway demo`: generated CA, key and configuration, and an in-process device.
//! - `keys`: the gateway's key file.
//! - `cli`: command line and logging set-up.
//! - `normalize`: Origin, subprotocols, Host, Forwarded and hop-by-hop rules toward devices.
//! - `link`: the device link: listener, handshakes against the registry, one task per device session.
//! - `metrics`: Prometheus exposition, `/healthz` and `/readyz` on their own listener.

pub mod acme;
pub mod auth;
pub mod beside;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod demo;
pub mod edge;
pub mod keys;
pub mod link;
pub mod metrics;
pub mod normalize;
pub mod server;

pub use proto;

// Every program that links the gateway copies through `memcopy`'s
// `memcpy` and `memmove`: glibc's, except for the copies its `rep movsb`
// makes slow on some CPUs (that crate's documentation; BENCHMARKS.md,
// "glibc's rep movsb and the gateway's copies").
use memcopy as _;
