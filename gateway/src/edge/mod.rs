//! The internet-facing edge: listeners, TLS, HTTP.
//!
//! ## Layout
//!
//! - [`listener`]: socket2 listeners with the MSS clamp, keepalive and dual stack.
//! - [`tls`]: rustls acceptor: ALPN, resumption, SNI, reload, handshake deadline, local CA.

pub mod listener;
pub mod tls;
