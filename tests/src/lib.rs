//! # e2e
//!
//! End-to-end scenarios against real peers, the load generator and the
//! benchmarks.
//!
//! ## Layout
//!
//! - [`browser`]: headless Chromium over WebDriver (chromedriver), screenshots.
//! - [`acceptor`]: a minimal gateway-role acceptor for device-side tests.
//! - [`netns`]: network namespaces a test creates and removes (the PMTU
//!   black hole), tokio runtimes inside them.
//! - [`wss`]: WSS clients, latency percentiles, a process's RSS and CPU time.
//! - `bin/wss-bench`: WSS echo and idle connections through the gateway.
//! - `tests/`: the scenarios (`device_sim.rs`: the `device-sim` binary
//!   against the acceptor).

pub mod acceptor;
pub mod browser;
pub mod netns;
pub mod wss;
