//! The running gateway: a configuration turned into bound listeners and
//! their tasks.
//!
//! ```text
//!  Config ─▶ Hub (gateway key, registry of device keys, link settings)
//!         ─▶ Bridge (devices, routing, [http], [websocket])
//!         ─▶ link listener ──▶ link::serve         (device sessions)
//!         ─▶ [[listen]] × N ──▶ edge::http::serve  (browsers, TLS by SNI)
//!         ─▶   + UDP, same port ──▶ edge::quic::serve (HTTP/3, TLS listeners, [http3])
//!         ─▶ [metrics] ──▶ metrics::endpoint::serve (/metrics, /healthz, /readyz)
//! ```
//!
//! # Lifecycle
//!
//! [`Server::start`] binds everything first, so a port in use fails the
//! start with the address named; once it returns, `/readyz` answers 200.
//!
//! [`Server::reload`] (SIGHUP) reads the configuration file again. If it
//! has an error, nothing changes: the errors are logged with their
//! FILE:LINE:COLUMN and `gateway_config_reloads_total{result="failure"}`
//! rises. Otherwise the devices (registry and policies) and the
//! certificates are swapped in place: established browser connections,
//! WebSockets and device sessions carry on, except the sessions of devices
//! that were removed or whose key changed (closed with `REVOKED`).
//! Listener addresses, the gateway key and domain and the `[http]`,
//! `[http3]`, `[websocket]`, `[link]` and `[metrics]` settings take effect
//! on restart; a reload that changes them says so in the log. HTTP/3
//! serves swapped certificates at once (it shares the TLS edge's resolver).
//!
//! [`Server::shutdown`] (SIGTERM) turns `/readyz` to 503, stops accepting,
//! drains browsers (HTTP/2 and HTTP/3 GOAWAY; HTTP/1.1 closes after the
//! response in flight) and devices (link GOAWAY), and returns once they are done or
//! `[gateway] drain_timeout` passed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::bridge::Bridge;
use crate::config::{self, Config, ConfigErrors, Devices, Upstream};
use crate::edge::admission::{Admission, Overload};
use crate::edge::http::{Edge, EdgeStats, Shared};
use crate::edge::listener;
use crate::edge::quic::{Quic, QuicStats};
use crate::edge::tls::{CertResolver, Tls};
use crate::link::{DeviceInfo, Hub, LinkSettings, Registry};
use crate::metrics::{self, Metrics};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {what} {address}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The client-certificate CA is unusable.
    #[error("[auth] client_ca: {0}")]
    ClientCa(crate::edge::tls::TlsError),
    /// The HTTP/3 endpoint could not be set up.
    #[error("HTTP/3 on {address}: {source}")]
    Quic {
        /// The listener's address.
        address: SocketAddr,
        /// What failed.
        source: crate::edge::quic::QuicError,
    },
    /// A TLS listener without any certificate.
    #[error("TLS listener {0} has no certificate: add [[tls.certificate]] entries")]
    NoCertificate(SocketAddr),
}

/// The registry of device keys for the link (devices reached over it).
pub fn registry(devices: &Devices) -> Registry {
    Registry::new(
        devices
            .iter()
            .filter_map(|d| match (&d.upstream, d.public_key) {
                (Upstream::Link, Some(key)) => Some((key, DeviceInfo { id: d.id.clone() })),
                _ => None,
            }),
    )
}

/// A started gateway.
pub struct Server {
    /// The bridge (routing, devices, counters).
    pub bridge: Arc<Bridge>,
    /// The device link hub.
    pub hub: Arc<Hub>,
    /// Browser-facing counters.
    pub edge_stats: Arc<EdgeStats>,
    /// Where browsers connect, in `[[listen]]` order.
    pub edge_addrs: Vec<SocketAddr>,
    /// Where HTTP/3 is served (UDP), one per TLS listener when `[http3]` is on.
    pub quic_addrs: Vec<SocketAddr>,
    /// HTTP/3 counters.
    pub quic_stats: Arc<QuicStats>,
    /// Where devices connect.
    pub link_addr: SocketAddr,
    /// Certificates, replaceable at run time.
    pub certs: Arc<CertResolver>,
    /// Automatic certificates, when `[acme]` is configured.
    pub acme: Option<Arc<crate::acme::Manager>>,
    acme_task: Option<tokio::task::AbortHandle>,
    /// Metrics, readiness and reload outcomes.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served, once [`Server::serve_metrics`] ran.
    pub metrics_addr: Option<SocketAddr>,
    /// The configuration in use (for reloads).
    config: Mutex<Config>,
    drain_timeout: Duration,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    metrics_task: Option<JoinHandle<()>>,
    /// Samples memory and descriptors for overload protection.
    overload_task: AbortOnDrop,
}

/// A task aborted when its owner goes (a server dropped without shutdown).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sockets bound before the configuration is final (port 0 in tests and
/// the demo: the configuration then names the real ports).
pub struct Listeners {
    /// The device link listener.
    pub link: TcpListener,
    /// Browser listeners, in `[[listen]]` order.
    pub edges: Vec<TcpListener>,
}

impl Listeners {
    /// Binds what `config` names.
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        let link = listener::bind(config.link.address, &config.link.socket).map_err(|source| {
            StartError::Bind {
                what: "the device link",
                address: config.link.address,
                source,
            }
        })?;
        let mut edges = Vec::new();
        for l in &config.listeners {
            edges.push(listener::bind(l.address, &l.socket).map_err(|source| {
                StartError::Bind {
                    what: "browsers",
                    address: l.address,
                    source,
                }
            })?);
        }
        Ok(Self { link, edges })
    }
}

impl Server {
    /// Binds every listener, metrics included, and starts serving.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let listeners = Listeners::bind(config)?;
        let metrics = bind_metrics(config)?;
        let mut server = Self::start_on(config, listeners)?;
        server.serve_metrics(metrics);
        Ok(server)
    }

    /// Starts serving on listeners bound by the caller (one per
    /// `[[listen]]`, same order). Metrics are collected but not served
    /// until [`Server::serve_metrics`].
    pub fn start_on(config: &Config, listeners: Listeners) -> Result<Self, StartError> {
        let settings = LinkSettings {
            session: config.link.session,
            drain_timeout: config.gateway.drain_timeout,
            max_device_series: config.metrics.max_device_series,
            max_handshakes: config.link.max_handshakes,
            max_handshakes_per_address: config.link.max_handshakes_per_address,
            max_handshakes_waiting: config.link.max_handshakes_waiting,
        };
        let hub = Hub::new(
            config.gateway.key.expose().clone(),
            registry(&config.devices),
            settings,
        );
        let bridge = Bridge::new(
            hub.clone(),
            config.devices.clone(),
            config.gateway.domain.clone(),
            config.http,
            config.websocket,
        );
        bridge.set_access(config.auth.clone(), config.gateway_origins());
        let certs = CertResolver::new(config.tls.pairs());
        let (shutdown, _) = watch::channel(false);
        let limits = config.gateway.limits;
        bridge.set_min_body_rate(limits.min_body_rate);
        let overload = Overload::new(&limits);
        let admission = Admission::new(&limits, overload.clone());
        let edge_stats = Arc::new(EdgeStats::new(overload.clone()));
        let mut tasks = JoinSet::new();

        let link_addr = listeners.link.local_addr().unwrap_or(config.link.address);
        let mut edges = Vec::new();
        let mut edge_addrs = Vec::new();
        let acme = config.acme.as_ref().map(|a| {
            let m = crate::acme::Manager::new(a.clone(), certs.clone(), config.tls.pairs());
            bridge.set_acme(m.challenges.clone());
            m
        });
        // Outside `tasks`: it never ends by itself, and the drain waits for those.
        let acme_task = acme
            .as_ref()
            .map(|m| tokio::spawn(m.clone().run()).abort_handle());
        let quic_stats = Arc::new(QuicStats::default());
        let mut quics = Vec::new();
        let mut quic_addrs = Vec::new();
        for (l, bound) in config.listeners.iter().zip(listeners.edges) {
            if l.tls && config.tls.certificates.is_empty() && acme.is_none() {
                return Err(StartError::NoCertificate(l.address));
            }
            let addr = bound.local_addr().unwrap_or(l.address);
            edge_addrs.push(addr);
            let alt_svc = if l.tls && config.http3.enabled {
                let quic = quic(config, addr, &certs, &quic_stats)?;
                quic_addrs.push(quic.endpoint.local_addr().unwrap_or(addr));
                quics.push(quic);
                let port = config.gateway.public_port.unwrap_or(addr.port());
                http::HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
            } else {
                None
            };
            let tls = l
                .tls
                .then(|| {
                    Tls::with_client_ca(
                        certs.clone(),
                        config.tls.handshake_timeout,
                        config.auth.client_ca.as_deref(),
                    )
                })
                .transpose()
                .map_err(StartError::ClientCa)?;
            edges.push(Edge {
                listener: bound,
                tls,
                socket: l.socket,
                alt_svc,
            });
        }

        tasks.spawn(crate::link::serve(listeners.link, hub.clone()));
        info!(address = %link_addr, "device link listening");
        let shared = Arc::new(Shared {
            bridge: bridge.clone(),
            http: config.http,
            limits,
            admission,
            domain: config.gateway.domain.as_str().into(),
            stats: edge_stats.clone(),
        });
        for (edge, addr) in edges.into_iter().zip(&edge_addrs) {
            info!(address = %addr, tls = edge.tls.is_some(), mss = edge.socket.mss, "browsers listening");
            tasks.spawn(crate::edge::http::serve(
                edge,
                shared.clone(),
                shutdown.subscribe(),
            ));
        }
        for (quic, addr) in quics.into_iter().zip(&quic_addrs) {
            info!(address = %addr, max_mtu = config.http3.max_mtu, "HTTP/3 listening (UDP)");
            tasks.spawn(crate::edge::quic::serve(
                quic,
                shared.clone(),
                shutdown.subscribe(),
            ));
        }
        info!(
            max_connections = limits.max_connections,
            per_address = limits.max_connections_per_address,
            overload_memory = limits.overload_memory,
            overload_open_files = limits.overload_open_files,
            "browser connection limits"
        );
        let overload_task = AbortOnDrop(tokio::spawn(overload.run()));
        let metrics = Metrics::new(bridge.clone(), edge_stats.clone());
        let collectors = acme
            .iter()
            .flat_map(|m| m.stats.collectors())
            .chain(quic_stats.collectors());
        for c in collectors {
            if let Err(e) = metrics.register(c) {
                unreachable!("ACME and QUIC metrics registration: {e}");
            }
        }
        Ok(Self {
            acme,
            acme_task,
            bridge,
            hub,
            edge_stats,
            edge_addrs,
            quic_addrs,
            quic_stats,
            link_addr,
            certs,
            metrics,
            metrics_addr: None,
            config: Mutex::new(config.clone()),
            drain_timeout: config.gateway.drain_timeout,
            shutdown,
            tasks,
            metrics_task: None,
            overload_task,
        })
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the
    /// end of [`Server::shutdown`] (so probes see the drain).
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        let addr = listener.local_addr().ok();
        if let Some(a) = addr {
            info!(address = %a, "metrics listening");
        }
        self.metrics_addr = addr;
        // Stopped by aborting the task, at the very end of the drain.
        let (_, never) = watch::channel(false);
        let task = tokio::spawn(metrics::endpoint::serve(
            listener,
            self.metrics.clone(),
            never,
        ));
        if let Some(old) = self.metrics_task.replace(task) {
            old.abort();
        }
    }

    /// Reads the configuration file again and applies what can change
    /// while serving (see the module docs). On error nothing changes; the
    /// errors are logged and returned.
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let path = self.lock_config().path.clone();
        info!(file = %path.display(), "reloading the configuration");
        match config::load(&path) {
            Ok(new) => {
                self.apply(new);
                Ok(())
            }
            Err(errors) => {
                self.metrics.reloads.failure();
                for e in &errors.0 {
                    error!("{e}");
                }
                error!(
                    file = %path.display(),
                    errors = errors.len(),
                    "reload refused: the configuration has errors; still serving the previous one"
                );
                Err(errors)
            }
        }
    }

    /// Swaps in `new`'s devices, policies and certificates.
    pub fn apply(&self, new: Config) {
        let mut current = self.lock_config();
        for what in restart_only(&current, &new) {
            warn!("reload: {what} changed; it takes effect on restart");
        }
        self.hub.set_registry(registry(&new.devices));
        self.bridge.set_devices(new.devices.clone());
        let closed = self
            .bridge
            .set_access(new.auth.clone(), new.gateway_origins());
        if closed > 0 {
            info!(closed, "reload: closed WebSockets whose access was revoked");
        }
        match &self.acme {
            Some(m) => m.set_static(new.tls.pairs()),
            None => self.certs.replace(new.tls.pairs()),
        }
        self.metrics.reloads.success();
        info!(
            devices = new.devices.len(),
            certificates = new.tls.certificates.len(),
            "configuration reloaded"
        );
        *current = new;
    }

    fn lock_config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops accepting, drains browsers and devices, and returns once done
    /// or after the drain deadline.
    pub async fn shutdown(mut self) {
        if let Some(t) = &self.acme_task {
            t.abort();
        }
        self.metrics.set_ready(false);
        let _ = self.shutdown.send(true);
        self.hub.shutdown();
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        // Listeners return at once; connections drain on their own tasks.
        while tokio::time::timeout_at(deadline, self.tasks.join_next())
            .await
            .is_ok_and(|r| r.is_some())
        {}
        let quiet = |n: u64| n == 0;
        while tokio::time::Instant::now() < deadline
            && !(quiet(
                self.edge_stats
                    .open
                    .load(std::sync::atomic::Ordering::Relaxed),
            ) && self.quic_stats.open.get() == 0
                && self.hub.online().is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
        self.overload_task.0.abort();
    }
}

/// The HTTP/3 endpoint beside the TLS listener bound at `addr`: UDP on
/// the same address and port, the same certificates and client CA.
fn quic(
    config: &Config,
    addr: SocketAddr,
    certs: &Arc<CertResolver>,
    stats: &Arc<QuicStats>,
) -> Result<Quic, StartError> {
    let socket = listener::bind_udp(addr).map_err(|source| StartError::Bind {
        what: "HTTP/3 (UDP)",
        address: addr,
        source,
    })?;
    let tls = crate::edge::tls::quic_config(certs.clone(), config.auth.client_ca.as_deref())
        .map_err(StartError::ClientCa)?;
    let endpoint = crate::edge::quic::endpoint(socket, tls, &config.http3).map_err(|source| {
        StartError::Quic {
            address: addr,
            source,
        }
    })?;
    Ok(Quic {
        endpoint,
        resolver: certs.clone(),
        handshake_timeout: config.tls.handshake_timeout,
        stats: stats.clone(),
    })
}

/// Binds `[metrics] address`.
pub fn bind_metrics(config: &Config) -> Result<TcpListener, StartError> {
    let address = config.metrics.address;
    listener::bind(address, &listener::SocketOptions::default()).map_err(|source| {
        StartError::Bind {
            what: "metrics",
            address,
            source,
        }
    })
}

/// Settings that differ between `old` and `new` and need a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |differs: bool, what| {
        if differs {
            changed.push(what);
        }
    };
    check(old.listeners != new.listeners, "[[listen]]");
    check(old.gateway.domain != new.gateway.domain, "[gateway] domain");
    check(
        old.gateway.public_key != new.gateway.public_key,
        "the gateway key",
    );
    check(
        old.gateway.drain_timeout != new.gateway.drain_timeout,
        "[gateway] drain_timeout",
    );
    check(
        old.gateway.threads != new.gateway.threads,
        "[gateway] threads",
    );
    check(old.http != new.http, "[http]");
    check(old.http3 != new.http3, "[http3]");
    check(old.gateway.limits != new.gateway.limits, "[gateway.limits]");
    check(old.websocket != new.websocket, "[websocket]");
    check(old.link != new.link, "[link]");
    check(old.metrics != new.metrics, "[metrics]");
    check(
        old.tls.handshake_timeout != new.tls.handshake_timeout,
        "[tls] handshake_timeout",
    );
    changed
}
