//! The sample controller application: a web UI, live readings over a
//! WebSocket and a few commands, served over the link.

mod board;

pub use board::{Board, LEDS, Readings};
