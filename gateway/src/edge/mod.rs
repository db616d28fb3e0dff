//! The internet-facing edge: listeners, TLS, HTTP.
//!
//! ## Layout
//!
//! - [`listener`]: socket2 listeners with the MSS clamp, keepalive and dual stack.
//! - [`admission`]: connection caps (global, per source) and overload protection, before TLS.
//! - [`guard`]: the socket watched: bytes received, stalled writes timed out.
//! - [`framing`]: HTTP/1.1 request framing followed, to refuse Content-Length with Transfer-Encoding.
//! - [`tls`]: rustls acceptor: ALPN, resumption, SNI, reload, handshake deadline, local CA.
//! - [`tls_stream`]: the TLS stream (rustls' unbuffered API under buffers freed while idle).
//! - [`kx`]: X25519 on AWS-LC, the key exchange groups the TLS offers.
//! - [`gcm`]: TLS 1.3 AES-GCM records on AWS-LC.
//! - [`tickets`]: session tickets and the handshake's random values on AWS-LC.
//! - [`client_hello`]: the SNI read from the ClientHello (the unbuffered API does not expose it).
//! - [`http`]: the accept loop: TLS, then HTTP/1.1 (hyper) or HTTP/2 ([`h2`]) into the bridge.
//! - [`h2`]: the gateway's own HTTP/2 server: frames, HPACK, streams, RFC 8441 WebSockets.
//! - [`quic`]: HTTP/3 over QUIC (quinn, h3) on the TLS listeners' ports, into the same bridge.

pub mod admission;
pub mod client_hello;
pub mod framing;
pub mod gcm;
pub mod guard;
pub(crate) mod h2;
pub mod http;
pub mod kx;
pub mod listener;
pub mod quic;
pub mod tickets;
pub mod tls;
pub mod tls_stream;
