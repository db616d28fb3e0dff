//! The link's counters, read by the metrics endpoint at scrape time.
//!
//! Gateway-wide counters are plain atomics ([`HubStats`]). Per-device
//! counters ([`DeviceSeries`]) have bounded label cardinality: the first
//! `max_device_series` devices of the registry (in id order, kept across
//! reloads while they stay registered) get their own [`DeviceCounters`];
//! every other device shares one, exported as `device="_other"` (an id
//! can never start with `_`, so it collides with no device).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts};

/// Gateway-wide link counters.
#[derive(Debug)]
pub struct HubStats {
    /// Handshakes that reached HELLO.
    pub sessions_started: AtomicU64,
    /// Of those, sessions whose records are ChaCha20-Poly1305.
    pub sessions_chacha20_poly1305: AtomicU64,
    /// Of those, sessions whose records are AES-256-GCM (the device
    /// offered it and this machine has AES instructions).
    pub sessions_aes_256_gcm: AtomicU64,
    /// Handshakes refused: unknown or revoked key.
    pub refused_unknown: AtomicU64,
    /// Handshakes refused: timestamp not above the last accepted (replays).
    pub refused_stale: AtomicU64,
    /// Sessions that ended with a protocol error.
    pub protocol_errors: AtomicU64,
    /// Sessions that never finished their handshake (timeouts, garbage, bad keys).
    pub handshake_failures: AtomicU64,
    /// Connections closed at accept: `[link] max_handshakes` were in progress.
    pub handshakes_refused_global: AtomicU64,
    /// Connections closed at accept: `[link] max_handshakes_per_address`
    /// from that source were in progress.
    pub handshakes_refused_per_address: AtomicU64,
    /// Connections that found a cap full, waited and got a place.
    pub handshakes_waited: AtomicU64,
    /// Streams a device opened that the gateway refused (it serves none).
    pub device_streams_refused: AtomicU64,
    /// Sessions closed because a newer one of the same device took over.
    pub replaced: AtomicU64,
    /// Sessions closed because their device left the registry or its key changed.
    pub revoked: AtomicU64,
    /// Sends toward devices cut short by missing flow-control credit.
    pub credit_stalls: AtomicU64,
    /// Streams reset because their sender stayed without credit past the stall timeout.
    pub stall_resets: AtomicU64,
    /// Records written to devices, all sessions (with `sent_bytes`: how
    /// many frames the session packs per record and write).
    pub records_sent: AtomicU64,
    /// Records read from devices, all sessions.
    pub records_received: AtomicU64,
    /// Sessions holding their record buffers now (busy, or idle for less
    /// than the parking delay; two `max_record` buffers each).
    pub buffers_held: AtomicU64,
    /// Round-trip times measured by link pings, all devices.
    pub rtt: Histogram,
    /// Per-device counters.
    pub devices: DeviceSeries,
}

/// Buckets of [`HubStats::rtt`], in seconds: 1 ms to 10 s.
const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl HubStats {
    /// Counters at zero, at most `max_device_series` devices with their own series.
    pub fn new(max_device_series: usize) -> Self {
        let opts = HistogramOpts::new(
            "gateway_link_rtt_seconds",
            "Round-trip times of device link pings, all devices.",
        )
        .buckets(RTT_BUCKETS.to_vec());
        Self {
            sessions_started: AtomicU64::new(0),
            sessions_chacha20_poly1305: AtomicU64::new(0),
            sessions_aes_256_gcm: AtomicU64::new(0),
            refused_unknown: AtomicU64::new(0),
            refused_stale: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            handshakes_refused_global: AtomicU64::new(0),
            handshakes_refused_per_address: AtomicU64::new(0),
            handshakes_waited: AtomicU64::new(0),
            device_streams_refused: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            credit_stalls: AtomicU64::new(0),
            stall_resets: AtomicU64::new(0),
            records_sent: AtomicU64::new(0),
            records_received: AtomicU64::new(0),
            buffers_held: AtomicU64::new(0),
            rtt: Histogram::with_opts(opts)
                .unwrap_or_else(|e| unreachable!("constant histogram options: {e}")),
            devices: DeviceSeries::new(max_device_series),
        }
    }

    /// Records one ping round trip of a device.
    pub(crate) fn observe_rtt(&self, device: &DeviceCounters, rtt: Duration) {
        self.rtt.observe(rtt.as_secs_f64());
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        device.rtt_micros.store(micros, Ordering::Relaxed);
    }
}

impl Default for HubStats {
    fn default() -> Self {
        Self::new(crate::config::settings::DEFAULT_MAX_DEVICE_SERIES)
    }
}

/// Counters of one device (or of all devices beyond the series cap).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Bytes read from the device's connections.
    pub received_bytes: AtomicU64,
    /// Bytes written to the device's connections.
    pub sent_bytes: AtomicU64,
    /// Sessions established (a rise beyond one is a reconnect).
    pub connects: AtomicU64,
    /// The last ping round trip in microseconds; 0 before the first.
    pub rtt_micros: AtomicU64,
}

/// Per-device counters with a cap on how many devices get their own.
#[derive(Debug)]
pub struct DeviceSeries {
    cap: AtomicUsize,
    own: Mutex<BTreeMap<String, Arc<DeviceCounters>>>,
    other: Arc<DeviceCounters>,
}

impl DeviceSeries {
    /// No devices yet; at most `cap` will get their own counters.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: AtomicUsize::new(cap),
            own: Mutex::new(BTreeMap::new()),
            other: Arc::new(DeviceCounters::default()),
        }
    }

    /// The registered devices are now `ids`: devices that left lose their
    /// series, new ones get one while there is room (in id order).
    pub(crate) fn set_devices<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut ids: Vec<&str> = ids.into_iter().collect();
        ids.sort_unstable();
        let cap = self.cap.load(Ordering::Relaxed);
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.retain(|id, _| ids.binary_search(&id.as_str()).is_ok());
        for id in ids {
            if own.len() >= cap {
                break;
            }
            own.entry(id.to_string()).or_default();
        }
    }

    /// The counters device `id` adds to: its own, or the shared ones.
    pub fn counters(&self, id: &str) -> Arc<DeviceCounters> {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_else(|| self.other.clone())
    }

    /// Devices with their own series, in id order, and the shared counters.
    pub fn snapshot(&self) -> (Vec<(String, Arc<DeviceCounters>)>, Arc<DeviceCounters>) {
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        let list = own.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        (list, self.other.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_and_slots_are_sticky() {
        let s = DeviceSeries::new(2);
        s.set_devices(["c", "a", "b"]);
        let (own, _) = s.snapshot();
        let ids: Vec<&str> = own.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        s.counters("a").connects.fetch_add(1, Ordering::Relaxed);
        s.counters("c").connects.fetch_add(5, Ordering::Relaxed);
        // "0" sorts first but "a" keeps its slot; "b" leaves, "0" takes its place.
        s.set_devices(["0", "a", "c"]);
        let (own, other) = s.snapshot();
        let ids: Vec<&str> = own.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["0", "a"]);
        assert_eq!(own[1].1.connects.load(Ordering::Relaxed), 1);
        assert_eq!(other.connects.load(Ordering::Relaxed), 5);
        assert!(Arc::ptr_eq(&s.counters("c"), &other));
    }

    #[test]
    fn a_zero_cap_aggregates_everything() {
        let s = DeviceSeries::new(0);
        s.set_devices(["a"]);
        assert!(s.snapshot().0.is_empty());
    }
}
