//! # e2e
//!
//! End-to-end scenarios against real peers, the load generator and the
//! benchmarks. Filled in by the gateway, seed and benchmark issues.
