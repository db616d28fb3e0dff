//! The bridge's counters, read by the metrics endpoint at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec};

/// Buckets of [`BridgeStats::durations`], in seconds: 1 ms to 30 s (the
/// default response timeout).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters for the metrics endpoint.
#[derive(Debug)]
pub struct BridgeStats {
    /// Requests answered, by class: 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// Time from the request to its response head, by class
    /// (`gateway_http_request_duration_seconds{code}`).
    pub durations: HistogramVec,
    /// Requests refused before the device was contacted.
    pub refused: AtomicU64,
    /// Device offline answers (502).
    pub offline: AtomicU64,
    /// Device timeouts (504).
    pub timeouts: AtomicU64,
    /// Request bodies cut off for arriving slower than `min_body_rate` (408).
    pub body_timeouts: AtomicU64,
    /// WebSocket sessions opened.
    pub ws_opened: AtomicU64,
    /// WebSocket handshakes answered, by how the browser opened them, in
    /// the order of [`BridgeStats::WS_HANDSHAKES`]: an HTTP/1.1 upgrade or
    /// an HTTP/2 extended CONNECT (RFC 8441).
    pub ws_handshakes: [AtomicU64; 2],
    /// WebSocket sessions now open.
    pub ws_open: AtomicU64,
    /// WebSocket messages browser → device.
    pub ws_messages_up: AtomicU64,
    /// WebSocket messages device → browser.
    pub ws_messages_down: AtomicU64,
    /// Browser WebSockets closed for what they sent, by
    /// [`BridgeStats::WS_REFUSALS`].
    pub ws_refused: [AtomicU64; 3],
    /// Browser WebSockets closed with 1011 for what the device (over the
    /// link) or the upstream server (direct mode) sent, by
    /// [`BridgeStats::WS_REFUSALS`].
    pub ws_device_errors: [AtomicU64; 3],
    /// Origin rejected.
    pub origin_rejected: AtomicU64,
    /// Subprotocol lists changed toward the device.
    pub subprotocol_rewritten: AtomicU64,
    /// Host headers replaced by the device's own name.
    pub host_rewritten: AtomicU64,
    /// HTTP/1.1 upstreams (raw services, direct) that closed before
    /// answering or refused a WebSocket upgrade.
    pub upstream_rejected: AtomicU64,
    /// Requests whose browser-only headers were dropped to fit a device's
    /// `max_head`.
    pub trimmed: AtomicU64,
}

impl Default for BridgeStats {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "gateway_http_request_duration_seconds",
            "Time from a browser's request to the response head, by status class.",
        )
        .buckets(DURATION_BUCKETS.to_vec());
        let durations = HistogramVec::new(opts, &["code"])
            .unwrap_or_else(|e| unreachable!("constant histogram options: {e}"));
        for class in Self::CODE_CLASSES {
            // Every class is exported from the start, zero until it happens.
            let _ = durations.with_label_values(&[class]);
        }
        Self {
            responses: Default::default(),
            durations,
            refused: AtomicU64::new(0),
            offline: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            body_timeouts: AtomicU64::new(0),
            ws_opened: AtomicU64::new(0),
            ws_handshakes: Default::default(),
            ws_open: AtomicU64::new(0),
            ws_messages_up: AtomicU64::new(0),
            ws_messages_down: AtomicU64::new(0),
            ws_refused: Default::default(),
            ws_device_errors: Default::default(),
            origin_rejected: AtomicU64::new(0),
            subprotocol_rewritten: AtomicU64::new(0),
            host_rewritten: AtomicU64::new(0),
            upstream_rejected: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
        }
    }
}

/// The [`BridgeStats::WS_REFUSALS`] entry for a close code: 1009 too big,
/// 1007 not UTF-8, anything else a protocol error.
fn refusal_index(code: u16) -> usize {
    match code {
        1009 => 1,
        1007 => 2,
        _ => 0,
    }
}

/// An open WebSocket session in `ws_open` ([`BridgeStats::ws_session`]).
pub struct OpenWebSocket<'a>(&'a AtomicU64);

impl Drop for OpenWebSocket<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BridgeStats {
    /// Status classes, as the `code` label of the request metrics, in the
    /// order of [`BridgeStats::responses`].
    pub const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    /// Why a browser's WebSocket was closed for what it sent, as the
    /// `reason` label, in the order of [`BridgeStats::ws_refused`]: a frame
    /// that breaks RFC 6455 (1002), over a size limit (1009), text that is
    /// not UTF-8 (1007).
    pub const WS_REFUSALS: [&str; 3] = ["protocol", "too_big", "utf8"];

    /// The `http` label of the WebSocket handshakes, in the order of
    /// [`BridgeStats::ws_handshakes`].
    pub const WS_HANDSHAKES: [&str; 2] = ["1.1", "2"];

    /// Counts a WebSocket session begun (`ws_opened`) and open (`ws_open`)
    /// until the returned value is dropped, however its task ends.
    pub fn ws_session(&self) -> OpenWebSocket<'_> {
        self.ws_opened.fetch_add(1, Ordering::Relaxed);
        self.ws_open.fetch_add(1, Ordering::Relaxed);
        OpenWebSocket(&self.ws_open)
    }

    /// Counts a browser WebSocket closed with `code` for what it sent.
    pub fn count_ws_refusal(&self, code: u16) {
        self.ws_refused[refusal_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a browser WebSocket closed (1011) because the device side
    /// sent what would have been refused with `code` from a browser.
    pub fn count_ws_device_error(&self, code: u16) {
        self.ws_device_errors[refusal_index(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response the bridge gave (status and time to the head).
    pub fn observe_response(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.durations
            .with_label_values(&[Self::CODE_CLASSES[class]])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_and_timed_by_class() {
        let s = BridgeStats::default();
        s.observe_response(204, Duration::from_millis(3));
        s.observe_response(502, Duration::from_millis(40));
        s.observe_response(999, Duration::from_millis(1));
        assert_eq!(s.responses[1].load(Ordering::Relaxed), 1);
        assert_eq!(s.responses[4].load(Ordering::Relaxed), 2);
        let h = s.durations.with_label_values(&["5xx"]);
        assert_eq!(h.get_sample_count(), 2);
        assert!((h.get_sample_sum() - 0.041).abs() < 1e-9);
    }
    /// A session counts as begun once and as open until its guard drops,
    /// however its task ends (an unwinding or dropped task included).
    #[test]
    fn a_websocket_is_open_until_its_guard_drops() {
        let s = BridgeStats::default();
        let a = s.ws_session();
        let b = s.ws_session();
        assert_eq!(s.ws_open.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(s.ws_open.load(Ordering::Relaxed), 1);
        let dropped_task = async move {
            let _b = b;
            std::future::pending::<()>().await;
        };
        drop(dropped_task);
        assert_eq!(s.ws_open.load(Ordering::Relaxed), 0);
        assert_eq!(s.ws_opened.load(Ordering::Relaxed), 2);
    }
}
