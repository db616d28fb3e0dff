//! The sample controller application: a web UI, live readings over a
//! WebSocket and a few commands, served over the link.

mod board;
mod controller;
mod exchange;

pub use board::{Board, LEDS, Readings};
pub use controller::{Controller, STREAMS, SUBPROTOCOL, TICK_MS};
pub use exchange::{MAX_BODY, MAX_HEAD, MAX_OUT, MAX_REPLY, MAX_WS_IN};
