//! The internet-facing edge: listeners, TLS, HTTP.
//!
//! ## Layout
//!
//! - [`listener`]: socket2 listeners with the MSS clamp, keepalive and dual stack.
//! - [`tls`]: rustls acceptor: ALPN, resumption, SNI, reload, handshake deadline, local CA.
//! - [`http`]: the accept loop: TLS, then hyper (HTTP/1.1 and HTTP/2) into the bridge.

pub mod http;
pub mod listener;
pub mod tls;
