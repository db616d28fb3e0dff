//! # e2e
//!
//! End-to-end scenarios against real peers, the load generator and the
//! benchmarks.
//!
//! ## Layout
//!
//! - [`browser`]: headless Chromium over WebDriver (chromedriver), screenshots.
//! - [`acceptor`]: a minimal gateway-role acceptor for device-side tests.
//! - [`wss`]: WSS clients, latency percentiles, a process's RSS and CPU time.
//! - [`load`]: the load generator's workloads (echo, idle, handshakes, bulk).
//! - [`netns`]: network namespaces a test creates and removes (the PMTU
//!   black hole), tokio runtimes inside them.
//! - [`procs`]: processes the benchmarks start and measure (CPU, RSS, pinning).
//! - [`tempdir`]: temporary directories, unique per call, removed on drop.
//! - [`setup`]: a benchmark directory (certificates, keys, gateway configuration).
//! - [`soak`]: the soak's browsers, attackers and device churn.
//! - `bin/loadgen`: one workload against one target, a `RESULT` line.
//! - `bin/ws-echo`: the plain WebSocket echo upstream.
//! - `bin/echo-devices`: `EchoApp` devices dialing a gateway's link.
//! - `bin/bench-proxies`: the gateway against nginx and HAProxy, A/B rounds.
//! - `bin/wss-bench`: WSS echo and idle connections through the gateway.
//! - `bin/fleet-bench`: simulated device fleets (memory, reconnect storms).
//! - `bin/link-bench`: one stream through the device link, gateway session
//!   code against the device runtime in one process (Gbit/s, CPU per MB).
//! - `tests/`: the scenarios (`device_sim.rs`: the `device-sim` binary
//!   against the acceptor; `soak.rs`: the gateway under mixed traffic,
//!   churn and attacks for `SOAK_SECS`).

pub mod acceptor;
pub mod browser;
pub mod load;
pub mod netns;
pub mod procs;
pub mod setup;
pub mod soak;
pub mod tempdir;
pub mod wss;
