//! The scrape-time collector: the gateway's atomics as metric families.
//!
//! [`FAMILIES`] is the list of every family [`Gateway`] exports (the
//! histograms and process metrics are registered beside it, see
//! [`super::Metrics::new`]). Reading happens only when Prometheus scrapes:
//! a few dozen relaxed loads plus one line per device with its own series.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::Reloads;
use crate::bridge::{Bridge, BridgeStats};
use crate::edge::http::EdgeStats;

/// What a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A metric family: name, help, kind and label names.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The name.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label names.
    pub labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        labels,
    }
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        labels,
    }
}

const BUILD_INFO: Family = gauge(
    "gateway_build_info",
    &["version"],
    "Always 1; the version of the running gateway.",
);
const RUNTIME_THREADS: Family = gauge(
    "gateway_runtime_threads",
    &["scheduler"],
    "Threads that run the gateway's tasks ([gateway] threads), by tokio scheduler: current_thread (one thread) or multi_thread.",
);
const TLS_HANDSHAKES: Family = counter(
    "gateway_tls_handshakes_total",
    &["result"],
    "TLS handshakes with browsers by result: ok, failed, or stalled (TCP up, no finished handshake within [tls] handshake_timeout).",
);
const CONNECTIONS_ACCEPTED: Family = counter(
    "gateway_browser_connections_accepted_total",
    &[],
    "TCP connections accepted on the browser listeners.",
);
const CONNECTIONS_OPEN: Family = gauge(
    "gateway_browser_connections_open",
    &[],
    "Browser connections open now (TLS handshake or HTTP; upgraded WebSockets are counted apart).",
);
const CONNECTION_ERRORS: Family = counter(
    "gateway_browser_connection_errors_total",
    &[],
    "Browser connections that ended with an HTTP error (header timeout, malformed request, reset).",
);
const CONNECTIONS_REFUSED: Family = counter(
    "gateway_browser_connections_refused_total",
    &["reason"],
    "Browser connections closed right after accept, before TLS: overload, global_cap ([gateway.limits] max_connections), per_address_cap (max_connections_per_address).",
);
const BROWSER_TIMEOUTS: Family = counter(
    "gateway_browser_timeouts_total",
    &["timer"],
    "Browser connections ended by a timer: header ([http] header_timeout), body_rate ([gateway.limits] min_body_rate; also counts single requests whose body was abandoned, 408), send ([gateway.limits] send_timeout), send_rate (min_send_rate), idle ([http] idle_timeout).",
);
const MALFORMED: Family = counter(
    "gateway_browser_malformed_requests_total",
    &[],
    "Requests refused by the HTTP parser before the gateway routed them (400 or 431, the connection closed; over HTTP/2 a 431, a reset stream, or GOAWAY for a broken connection): smuggling attempts, bad framing, malformed HTTP/2, oversized heads.",
);
const EDGE_REFUSED: Family = counter(
    "gateway_browser_requests_refused_total",
    &["reason"],
    "Requests refused at the edge before the bridge: misdirected (Host differs from the TLS SNI, 421), connect (CONNECT that is not a WebSocket, 405).",
);
const OVERLOAD_ACTIVE: Family = gauge(
    "gateway_overload_active",
    &[],
    "1 while overload protection refuses new browser connections ([gateway.limits] overload_memory or overload_open_files crossed), else 0.",
);
const OVERLOAD_TRANSITIONS: Family = counter(
    "gateway_overload_transitions_total",
    &[],
    "Times overload protection switched on or off.",
);
const HTTP_REQUESTS: Family = counter(
    "gateway_http_requests_total",
    &["code"],
    "HTTP requests answered, by status class.",
);
const HTTP_REFUSED: Family = counter(
    "gateway_http_refused_total",
    &[],
    "Requests refused before any device was contacted (routing, Origin, handshake checks, limits).",
);
const HTTP_DEVICE_ERRORS: Family = counter(
    "gateway_http_device_errors_total",
    &["reason"],
    "Requests the device could not answer: offline (502 at once) or timeout (504).",
);
const WS_SESSIONS: Family = counter(
    "gateway_websocket_sessions_total",
    &[],
    "WebSocket sessions bridged to devices.",
);
const WS_HANDSHAKES: Family = counter(
    "gateway_websocket_handshakes_total",
    &["http"],
    "WebSocket handshakes the gateway answered, by how the browser opened them: 1.1 (an HTTP/1.1 upgrade) or 2 (an HTTP/2 extended CONNECT, RFC 8441).",
);
const WS_OPEN: Family = gauge(
    "gateway_websocket_sessions_open",
    &[],
    "WebSocket sessions open now.",
);
const WS_MESSAGES: Family = counter(
    "gateway_websocket_messages_total",
    &["direction"],
    "WebSocket messages bridged, by direction: to_device (to the device, over its link or to its direct upstream) or to_browser.",
);
const WS_REFUSED: Family = counter(
    "gateway_websocket_refused_total",
    &["reason"],
    "Browser WebSockets the gateway closed for what they sent: protocol (1002), too_big (1009), utf8 (1007).",
);
const WS_DEVICE_ERRORS: Family = counter(
    "gateway_websocket_device_errors_total",
    &["reason"],
    "Browser WebSockets closed with 1011 for what the device (or its upstream server in direct mode) sent: protocol, too_big, utf8.",
);
const NORMALIZE: Family = counter(
    "gateway_normalize_actions_total",
    &["action"],
    "Normalization toward devices: origin_rejected (403), subprotocol_rewritten, host_rewritten.",
);
const DEVICES_REGISTERED: Family = gauge(
    "gateway_devices_registered",
    &[],
    "Devices the registry admits on the link.",
);
const DEVICES_ONLINE: Family = gauge("gateway_devices_online", &[], "Device sessions online now.");
const LINK_CONNECTS: Family = counter(
    "gateway_link_connects_total",
    &[],
    "Device sessions established (handshake and HELLO complete).",
);
const LINK_CONNECTS_BY_CIPHER: Family = counter(
    "gateway_link_connects_by_cipher_total",
    &["cipher"],
    "Device sessions established, by record cipher (chacha20-poly1305, aes-256-gcm).",
);
const LINK_REJECTIONS: Family = counter(
    "gateway_link_rejections_total",
    &["reason"],
    "Device connections turned away: unknown_key, stale_timestamp (replay or clock reset), handshake_failed (timeout, garbage, wrong gateway key).",
);
const LINK_HANDSHAKES_REFUSED: Family = counter(
    "gateway_link_handshakes_refused_total",
    &["reason"],
    "Device connections closed because too many handshakes were in progress: global_cap ([link] max_handshakes), per_address_cap ([link] max_handshakes_per_address); at accept when [link] max_handshakes_waiting connections wait already, else after waiting a quarter of handshake_timeout for a place.",
);
const LINK_HANDSHAKES_WAITED: Family = counter(
    "gateway_link_handshakes_waited_total",
    &[],
    "Device connections that found a handshake cap full, waited and got a place.",
);
const LINK_HANDSHAKES_WAITING: Family = gauge(
    "gateway_link_handshakes_waiting",
    &[],
    "Device connections waiting for a handshake place ([link] max_handshakes_waiting).",
);
const LINK_HANDSHAKES: Family = gauge(
    "gateway_link_handshakes_in_progress",
    &[],
    "Device connections accepted and not yet through HELLO.",
);
const LINK_DEVICE_STREAMS_REFUSED: Family = counter(
    "gateway_link_device_streams_refused_total",
    &[],
    "Streams devices opened toward the gateway, refused (the gateway serves none).",
);
const LINK_PROTOCOL_ERRORS: Family = counter(
    "gateway_link_protocol_errors_total",
    &[],
    "Device sessions ended by a protocol error.",
);
const LINK_REPLACED: Family = counter(
    "gateway_link_sessions_replaced_total",
    &[],
    "Device sessions closed because a newer session of the same device took over.",
);
const LINK_REVOKED: Family = counter(
    "gateway_link_sessions_revoked_total",
    &[],
    "Device sessions closed because a reload removed the device or changed its key.",
);
const CREDIT_STALLS: Family = counter(
    "gateway_link_credit_stalls_total",
    &[],
    "Sends toward devices cut short by missing flow-control credit.",
);
const STALL_RESETS: Family = counter(
    "gateway_link_stall_resets_total",
    &[],
    "Device streams reset because their sender stayed without credit past [link] stall_timeout.",
);
const LINK_RECORDS_SENT: Family = counter(
    "gateway_link_records_sent_total",
    &[],
    "Records written to devices, all sessions; with the bytes sent, how many frames a record carries.",
);
const LINK_RECORDS_RECEIVED: Family = counter(
    "gateway_link_records_received_total",
    &[],
    "Records read from devices, all sessions.",
);
const LINK_BUFFERS_HELD: Family = gauge(
    "gateway_link_sessions_holding_buffers",
    &[],
    "Device sessions holding their record buffers (two of [link] max_record bytes each): busy ones, and idle ones until they give them back (20 ms after their last record, at most 320 ms after a long busy spell).",
);
const DEVICE_ONLINE: Family = gauge(
    "gateway_device_online",
    &["device"],
    "1 when the device is connected, 0 when not (devices with their own series).",
);
const DEVICE_RTT: Family = gauge(
    "gateway_device_rtt_seconds",
    &["device"],
    "Last link ping round trip of a connected device.",
);
const DEVICE_RECEIVED: Family = counter(
    "gateway_device_received_bytes_total",
    &["device"],
    "Bytes received from the device on its link connections.",
);
const DEVICE_SENT: Family = counter(
    "gateway_device_sent_bytes_total",
    &["device"],
    "Bytes sent to the device on its link connections.",
);
const DEVICE_CONNECTS: Family = counter(
    "gateway_device_connects_total",
    &["device"],
    "Sessions the device established; a rise beyond one is a reconnect.",
);
const DEVICE_AGGREGATED: Family = gauge(
    "gateway_device_series_aggregated",
    &[],
    "Registered devices without series of their own (beyond [metrics] max_device_series), summed under device=\"_other\".",
);
const LOGINS: Family = counter(
    "gateway_logins_total",
    &["outcome"],
    "Login form submissions: ok, failed (wrong user name or password), csrf (stale or forged form), throttled (429 after too many failures).",
);
const RELOADS: Family = counter(
    "gateway_config_reloads_total",
    &["result"],
    "Configuration reloads (SIGHUP) by result: success, or failure (the running configuration stays).",
);
const RELOAD_OK: Family = gauge(
    "gateway_config_last_reload_successful",
    &[],
    "1 when the last reload was applied (or none was tried), 0 when it failed.",
);
const RELOAD_TIME: Family = gauge(
    "gateway_config_last_reload_success_timestamp_seconds",
    &[],
    "When the configuration in use was loaded, as a Unix time.",
);

/// Every family [`Gateway`] exports.
pub const FAMILIES: &[Family] = &[
    BUILD_INFO,
    RUNTIME_THREADS,
    TLS_HANDSHAKES,
    CONNECTIONS_ACCEPTED,
    CONNECTIONS_OPEN,
    CONNECTION_ERRORS,
    CONNECTIONS_REFUSED,
    BROWSER_TIMEOUTS,
    MALFORMED,
    EDGE_REFUSED,
    OVERLOAD_ACTIVE,
    OVERLOAD_TRANSITIONS,
    HTTP_REQUESTS,
    HTTP_REFUSED,
    LOGINS,
    HTTP_DEVICE_ERRORS,
    WS_SESSIONS,
    WS_HANDSHAKES,
    WS_OPEN,
    WS_MESSAGES,
    WS_REFUSED,
    WS_DEVICE_ERRORS,
    NORMALIZE,
    DEVICES_REGISTERED,
    DEVICES_ONLINE,
    LINK_CONNECTS,
    LINK_CONNECTS_BY_CIPHER,
    LINK_REJECTIONS,
    LINK_HANDSHAKES_REFUSED,
    LINK_HANDSHAKES,
    LINK_HANDSHAKES_WAITED,
    LINK_HANDSHAKES_WAITING,
    LINK_DEVICE_STREAMS_REFUSED,
    LINK_PROTOCOL_ERRORS,
    LINK_REPLACED,
    LINK_REVOKED,
    CREDIT_STALLS,
    STALL_RESETS,
    LINK_RECORDS_SENT,
    LINK_RECORDS_RECEIVED,
    LINK_BUFFERS_HELD,
    DEVICE_ONLINE,
    DEVICE_RTT,
    DEVICE_RECEIVED,
    DEVICE_SENT,
    DEVICE_CONNECTS,
    DEVICE_AGGREGATED,
    RELOADS,
    RELOAD_OK,
    RELOAD_TIME,
];

/// The label value that sums devices beyond the series cap.
pub const OTHER_DEVICES: &str = "_other";

/// Reads the gateway's counters when Prometheus scrapes.
pub struct Gateway {
    bridge: Arc<Bridge>,
    edge: Arc<EdgeStats>,
    reloads: Arc<Reloads>,
    descs: Vec<Desc>,
}

impl Gateway {
    /// A collector over these counters.
    pub fn new(bridge: Arc<Bridge>, edge: Arc<EdgeStats>, reloads: Arc<Reloads>) -> Self {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = f.labels.iter().map(|l| (*l).to_string()).collect();
                Desc::new(f.name.into(), f.help.into(), labels, HashMap::new())
                    .unwrap_or_else(|e| unreachable!("metric {}: {e}", f.name))
            })
            .collect();
        Self {
            bridge,
            edge,
            reloads,
            descs,
        }
    }
}

/// Families being built.
#[derive(Default)]
struct Out(Vec<MetricFamily>);

impl Out {
    fn family(&mut self, f: &Family, metrics: Vec<Metric>) {
        let mut m = MetricFamily::default();
        m.set_name(f.name.to_string());
        m.set_help(f.help.to_string());
        m.set_field_type(match f.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        m.set_metric(metrics);
        self.0.push(m);
    }

    /// A family of one unlabelled sample.
    fn one(&mut self, f: &Family, value: f64) {
        self.family(f, vec![sample(f, &[], value)]);
    }
}

/// One sample of `f` with `labels` (values in the family's label order).
fn sample(f: &Family, labels: &[&str], value: f64) -> Metric {
    let pairs = f
        .labels
        .iter()
        .zip(labels)
        .map(|(name, value)| {
            let mut p = LabelPair::default();
            p.set_name((*name).to_string());
            p.set_value((*value).to_string());
            p
        })
        .collect();
    let mut m = Metric::from_label(pairs);
    match f.kind {
        Kind::Counter => {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        Kind::Gauge => {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    m
}

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

/// A family with one sample per `(label value, counter)`.
fn by_label(out: &mut Out, f: &Family, values: &[(&str, &AtomicU64)]) {
    let metrics = values
        .iter()
        .map(|(label, v)| sample(f, &[label], load(v)))
        .collect();
    out.family(f, metrics);
}

/// [`by_label`] for counters kept in an array beside their label names.
fn by_names(out: &mut Out, f: &Family, names: &[&str], values: &[AtomicU64]) {
    let metrics = names
        .iter()
        .zip(values)
        .map(|(label, v)| sample(f, &[label], load(v)))
        .collect();
    out.family(f, metrics);
}

impl Gateway {
    fn edge(&self, out: &mut Out) {
        let e = &*self.edge;
        by_label(
            out,
            &TLS_HANDSHAKES,
            &[
                ("ok", &e.tls_ok),
                ("failed", &e.tls_failed),
                ("stalled", &e.tls_stalled),
            ],
        );
        out.one(&CONNECTIONS_ACCEPTED, load(&e.accepted));
        out.one(&CONNECTIONS_OPEN, load(&e.open));
        out.one(&CONNECTION_ERRORS, load(&e.http_errors));
        by_label(
            out,
            &CONNECTIONS_REFUSED,
            &[
                ("overload", &e.refused.overload),
                ("global_cap", &e.refused.global_cap),
                ("per_address_cap", &e.refused.per_address_cap),
            ],
        );
        // Slow bodies are caught per connection at the edge (HTTP/1.1)
        // and per request in the bridge (every version): one series.
        let body_rate = load(&e.body_timeouts) + load(&self.bridge.stats.body_timeouts);
        let timeouts = [
            ("header", load(&e.header_timeouts)),
            ("body_rate", body_rate),
            ("send", load(&e.send_timeouts)),
            ("send_rate", load(&e.send_rate_timeouts)),
            ("idle", load(&e.idle_timeouts)),
        ];
        let samples = timeouts
            .iter()
            .map(|(label, v)| sample(&BROWSER_TIMEOUTS, &[label], *v))
            .collect();
        out.family(&BROWSER_TIMEOUTS, samples);
        out.one(&MALFORMED, load(&e.malformed));
        by_label(
            out,
            &EDGE_REFUSED,
            &[
                ("misdirected", &e.misdirected),
                ("connect", &e.connect_refused),
            ],
        );
        out.one(
            &OVERLOAD_ACTIVE,
            f64::from(u8::from(e.overload.is_active())),
        );
        out.one(&OVERLOAD_TRANSITIONS, load(&e.overload.transitions));
    }

    fn bridge(&self, out: &mut Out) {
        let b = &self.bridge.stats;
        by_names(
            out,
            &HTTP_REQUESTS,
            &BridgeStats::CODE_CLASSES,
            &b.responses,
        );
        out.one(&HTTP_REFUSED, load(&b.refused));
        by_label(
            out,
            &HTTP_DEVICE_ERRORS,
            &[("offline", &b.offline), ("timeout", &b.timeouts)],
        );
        out.one(&WS_SESSIONS, load(&b.ws_opened));
        by_names(
            out,
            &WS_HANDSHAKES,
            &BridgeStats::WS_HANDSHAKES,
            &b.ws_handshakes,
        );
        out.one(&WS_OPEN, load(&b.ws_open));
        by_label(
            out,
            &WS_MESSAGES,
            &[
                ("to_device", &b.ws_messages_up),
                ("to_browser", &b.ws_messages_down),
            ],
        );
        by_names(out, &WS_REFUSED, &BridgeStats::WS_REFUSALS, &b.ws_refused);
        by_names(
            out,
            &WS_DEVICE_ERRORS,
            &BridgeStats::WS_REFUSALS,
            &b.ws_device_errors,
        );
        by_label(
            out,
            &NORMALIZE,
            &[
                ("origin_rejected", &b.origin_rejected),
                ("subprotocol_rewritten", &b.subprotocol_rewritten),
                ("host_rewritten", &b.host_rewritten),
            ],
        );
        let l = &self.bridge.access().logins;
        by_label(
            out,
            &LOGINS,
            &[
                ("ok", &l.ok),
                ("failed", &l.failed),
                ("csrf", &l.csrf),
                ("throttled", &l.throttled),
            ],
        );
    }

    fn link(&self, out: &mut Out) {
        let hub = self.bridge.hub();
        let s = &hub.stats;
        let online: std::collections::HashSet<String> = hub.online().into_iter().collect();
        out.one(&DEVICES_REGISTERED, hub.registered() as f64);
        out.one(&DEVICES_ONLINE, online.len() as f64);
        out.one(&LINK_CONNECTS, load(&s.sessions_started));
        by_label(
            out,
            &LINK_CONNECTS_BY_CIPHER,
            &[
                (
                    proto::Cipher::ChaCha20Poly1305.name(),
                    &s.sessions_chacha20_poly1305,
                ),
                (proto::Cipher::Aes256Gcm.name(), &s.sessions_aes_256_gcm),
            ],
        );
        by_label(
            out,
            &LINK_REJECTIONS,
            &[
                ("unknown_key", &s.refused_unknown),
                ("stale_timestamp", &s.refused_stale),
                ("handshake_failed", &s.handshake_failures),
            ],
        );
        by_label(
            out,
            &LINK_HANDSHAKES_REFUSED,
            &[
                ("global_cap", &s.handshakes_refused_global),
                ("per_address_cap", &s.handshakes_refused_per_address),
            ],
        );
        out.one(&LINK_HANDSHAKES, hub.handshakes.open() as f64);
        out.one(&LINK_HANDSHAKES_WAITED, load(&s.handshakes_waited));
        out.one(&LINK_HANDSHAKES_WAITING, hub.handshakes.waiting() as f64);
        out.one(
            &LINK_DEVICE_STREAMS_REFUSED,
            load(&s.device_streams_refused),
        );
        out.one(&LINK_PROTOCOL_ERRORS, load(&s.protocol_errors));
        out.one(&LINK_REPLACED, load(&s.replaced));
        out.one(&LINK_REVOKED, load(&s.revoked));
        out.one(&CREDIT_STALLS, load(&s.credit_stalls));
        out.one(&STALL_RESETS, load(&s.stall_resets));
        out.one(&LINK_RECORDS_SENT, load(&s.records_sent));
        out.one(&LINK_RECORDS_RECEIVED, load(&s.records_received));
        out.one(&LINK_BUFFERS_HELD, load(&s.buffers_held));

        let (own, other) = s.devices.snapshot();
        let mut online_now = Vec::with_capacity(own.len());
        let mut rtt = Vec::new();
        let (mut received, mut sent, mut connects) = (Vec::new(), Vec::new(), Vec::new());
        for (id, c) in &own {
            let up = online.contains(id);
            online_now.push(sample(&DEVICE_ONLINE, &[id], f64::from(u8::from(up))));
            let micros = c.rtt_micros.load(Ordering::Relaxed);
            if up && micros > 0 {
                rtt.push(sample(&DEVICE_RTT, &[id], micros as f64 / 1e6));
            }
            received.push(sample(&DEVICE_RECEIVED, &[id], load(&c.received_bytes)));
            sent.push(sample(&DEVICE_SENT, &[id], load(&c.sent_bytes)));
            connects.push(sample(&DEVICE_CONNECTS, &[id], load(&c.connects)));
        }
        received.push(sample(
            &DEVICE_RECEIVED,
            &[OTHER_DEVICES],
            load(&other.received_bytes),
        ));
        sent.push(sample(
            &DEVICE_SENT,
            &[OTHER_DEVICES],
            load(&other.sent_bytes),
        ));
        connects.push(sample(
            &DEVICE_CONNECTS,
            &[OTHER_DEVICES],
            load(&other.connects),
        ));
        out.family(&DEVICE_ONLINE, online_now);
        out.family(&DEVICE_RTT, rtt);
        out.family(&DEVICE_RECEIVED, received);
        out.family(&DEVICE_SENT, sent);
        out.family(&DEVICE_CONNECTS, connects);
        let aggregated = hub.registered().saturating_sub(own.len());
        out.one(&DEVICE_AGGREGATED, aggregated as f64);
    }

    fn reloads(&self, out: &mut Out) {
        let r = &*self.reloads;
        by_label(
            out,
            &RELOADS,
            &[("success", &r.succeeded), ("failure", &r.failed)],
        );
        out.one(
            &RELOAD_OK,
            f64::from(u8::from(r.last_ok.load(Ordering::Relaxed))),
        );
        out.one(&RELOAD_TIME, load(&r.last_success_unix));
    }
}

impl Collector for Gateway {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Out::default();
        out.family(
            &BUILD_INFO,
            vec![sample(&BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1.0)],
        );
        // The runtime this scrape runs on (none outside one: not exported).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let scheduler = match rt.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
                _ => "multi_thread",
            };
            let threads = rt.metrics().num_workers() as f64;
            out.family(
                &RUNTIME_THREADS,
                vec![sample(&RUNTIME_THREADS, &[scheduler], threads)],
            );
        }
        self.edge(&mut out);
        self.bridge(&mut out);
        self.link(&mut out);
        self.reloads(&mut out);
        out.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family the collector exports is in [`FAMILIES`], whose
    /// descriptions it registers and whose names the tests check.
    #[test]
    fn every_exported_family_is_listed() {
        let hub = crate::link::Hub::new(
            proto::SecretKey::from_bytes([7; 32]),
            crate::link::Registry::new([]),
            crate::link::LinkSettings::default(),
        );
        let bridge = Bridge::new(
            hub,
            crate::config::Devices::default(),
            "gw.example.com".into(),
            crate::config::Http::default(),
            crate::config::WebSocket::default(),
        );
        let overload =
            crate::edge::admission::Overload::new(&crate::config::settings::Limits::default());
        let gateway = Gateway::new(
            bridge,
            Arc::new(EdgeStats::new(overload)),
            Arc::new(Reloads::new()),
        );
        // Scraped on a runtime, as the endpoint is: one thread here.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let exported = rt.block_on(async { gateway.collect() });
        assert!(
            exported.len() >= FAMILIES.len() - 1,
            "only RTT may be missing"
        );
        let threads = exported
            .iter()
            .find(|f| f.name() == "gateway_runtime_threads")
            .expect("gateway_runtime_threads");
        let m = &threads.get_metric()[0];
        assert_eq!(m.get_label()[0].value(), "current_thread");
        assert_eq!(m.get_gauge().get_value(), 1.0);
        for f in &exported {
            assert!(
                FAMILIES.iter().any(|l| l.name == f.name()),
                "{} is exported but not in FAMILIES",
                f.name()
            );
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(f.name.starts_with("gateway_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                f.name
            );
            assert!(!f.help.is_empty());
        }
    }
}
