//! The internet-facing edge: listeners, TLS, HTTP.
//!
//! ## Layout
//!
//! - [`listener`]: socket2 listeners with the MSS clamp, keepalive and dual stack.

pub mod listener;
