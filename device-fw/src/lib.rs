//! # device-fw
//!
//! The device side of the link: a `no_std` runtime over `proto`, the sample
//! controller application, and its builds for the STM32H5 and the host.
//! Being built up in its own issue; today it re-exports the protocol core.

#![no_std]

pub use proto;
