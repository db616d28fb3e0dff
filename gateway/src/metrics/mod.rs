//! Telemetry for operators: Prometheus exposition, health and readiness,
//! on a listener of its own (`[metrics] address`, loopback by default).
//!
//! ```text
//!  EdgeStats ─┐ atomics, read at scrape time ┌─▶ GET /metrics  (text format 0.0.4)
//!  BridgeStats├──▶ collect::Gateway ─────────┤
//!  HubStats  ─┘ + histograms + process       ├─▶ GET /healthz  (200 while the process serves)
//!  Reloads, readiness ───────────────────────┴─▶ GET /readyz   (200 when ready; 503 while draining)
//! ```
//!
//! The gateway's own state is counted where it happens, in plain atomics
//! ([`crate::edge::http::EdgeStats`], [`crate::bridge::BridgeStats`],
//! [`crate::link::HubStats`]); [`collect`] turns them into metric families
//! when Prometheus scrapes, so the hot paths never touch the registry.
//! Durations are histograms recorded at the event (TLS handshakes, HTTP
//! responses, link RTT). Process metrics come from the `prometheus`
//! crate's process collector (CPU, memory, open file descriptors).
//!
//! # Names
//!
//! All names start with `gateway_`, carry their unit (`_seconds`,
//! `_bytes`), and counters end in `_total`. Per-device series
//! (`gateway_device_*{device}`) exist for at most `[metrics]
//! max_device_series` devices; the rest are summed under
//! `device="_other"` (see [`crate::link::DeviceSeries`]). The full list is
//! in [`collect`], and `promtool check metrics` passes on the output (a
//! test runs it).
//!
//! # Layout
//!
//! - [`collect`]: the scrape-time collector and the list of metric families.
//! - [`endpoint`]: the HTTP listener for `/metrics`, `/healthz`, `/readyz`.

pub mod collect;
pub mod endpoint;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Encoder as _, Registry, TextEncoder};

use crate::bridge::Bridge;
use crate::edge::http::EdgeStats;

/// Outcomes of configuration reloads.
#[derive(Debug)]
pub struct Reloads {
    /// Reloads applied.
    pub succeeded: AtomicU64,
    /// Reloads refused (the configuration had errors; the old one stays).
    pub failed: AtomicU64,
    /// Whether the last reload was applied (true before any).
    pub last_ok: AtomicBool,
    /// When the configuration in use was loaded, Unix seconds.
    pub last_success_unix: AtomicU64,
}

impl Reloads {
    fn new() -> Self {
        Self {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
            last_success_unix: AtomicU64::new(unix_now()),
        }
    }

    /// Counts an applied reload.
    pub fn success(&self) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        self.last_ok.store(true, Ordering::Relaxed);
        self.last_success_unix.store(unix_now(), Ordering::Relaxed);
    }

    /// Counts a refused reload.
    pub fn failure(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.last_ok.store(false, Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The gateway's metrics registry and health state.
pub struct Metrics {
    registry: Registry,
    /// Reload outcomes.
    pub reloads: Arc<Reloads>,
    ready: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry over the gateway's counters, plus process metrics.
    /// Ready from the start: it is made once the listeners are bound.
    pub fn new(bridge: Arc<Bridge>, edge: Arc<EdgeStats>) -> Arc<Self> {
        let registry = Registry::new();
        let reloads = Arc::new(Reloads::new());
        let histograms: [Box<dyn prometheus::core::Collector>; 3] = [
            Box::new(edge.tls_handshake.clone()),
            Box::new(bridge.stats.durations.clone()),
            Box::new(bridge.hub().stats.rtt.clone()),
        ];
        let gateway = collect::Gateway::new(bridge, edge, reloads.clone());
        let all = std::iter::once(Box::new(gateway) as Box<dyn prometheus::core::Collector>)
            .chain(histograms);
        for c in all {
            // Every name is a constant checked by the tests: a clash is a bug.
            if let Err(e) = registry.register(c) {
                unreachable!("metric registration: {e}");
            }
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            unreachable!("process metrics registration: {e}");
        }
        Arc::new(Self {
            registry,
            reloads,
            ready: AtomicBool::new(true),
        })
    }

    /// Adds collectors made elsewhere (the ACME manager's).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(c)
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Sets readiness (false when the drain starts).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
