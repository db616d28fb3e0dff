//! The bridge's counters, read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters for the metrics endpoint.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Requests answered, by class: 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// Requests refused before the device was contacted.
    pub refused: AtomicU64,
    /// Device offline answers (502).
    pub offline: AtomicU64,
    /// Device timeouts (504).
    pub timeouts: AtomicU64,
    /// WebSocket sessions opened.
    pub ws_opened: AtomicU64,
    /// WebSocket sessions now open.
    pub ws_open: AtomicU64,
    /// WebSocket messages browser → device.
    pub ws_messages_up: AtomicU64,
    /// WebSocket messages device → browser.
    pub ws_messages_down: AtomicU64,
    /// Origin rejected.
    pub origin_rejected: AtomicU64,
    /// Subprotocol lists changed toward the device.
    pub subprotocol_rewritten: AtomicU64,
}

impl BridgeStats {
    /// Counts a response the bridge gave (status and time to the head).
    pub fn observe_response(&self, status: u16, _elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}
