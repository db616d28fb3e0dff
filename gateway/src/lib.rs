//! # gateway
//!
//! The cloud side of the device link. This crate is being built up issue by
//! issue; for now it carries the shared device-link primitives from `proto`
//! and the command-line entry point.

pub use proto;
