//! The running gateway: a configuration turned into bound listeners and
//! their tasks.
//!
//! ```text
//!  Config ─▶ Hub (gateway key, registry of device keys, link settings)
//!         ─▶ Bridge (devices, routing, [http], [websocket])
//!         ─▶ link listener ──▶ link::serve         (device sessions)
//!         ─▶ [[listen]] × N ──▶ edge::http::serve  (browsers, TLS by SNI)
//! ```
//!
//! [`Server::start`] binds everything first, so a port in use fails the
//! start with the address named; [`Server::shutdown`] stops accepting,
//! drains browsers (HTTP/2 GOAWAY) and devices (link GOAWAY) and returns
//! once they are done or the drain deadline passed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use crate::bridge::Bridge;
use crate::config::{Config, Devices, Upstream};
use crate::edge::http::{Edge, EdgeStats};
use crate::edge::listener;
use crate::edge::tls::{CertResolver, Tls};
use crate::link::{DeviceInfo, Hub, LinkSettings, Registry};

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
    /// Where devices connect.
    pub link_addr: SocketAddr,
    /// Certificates, replaceable at run time.
    pub certs: Arc<CertResolver>,
    drain_timeout: Duration,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
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
    /// Binds every listener and starts serving.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let listeners = Listeners::bind(config)?;
        Self::start_on(config, listeners)
    }

    /// Starts serving on listeners bound by the caller (one per
    /// `[[listen]]`, same order).
    pub fn start_on(config: &Config, listeners: Listeners) -> Result<Self, StartError> {
        let settings = LinkSettings {
            session: config.link.session,
            drain_timeout: config.gateway.drain_timeout,
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
        let certs = CertResolver::new(config.tls.pairs());
        let (shutdown, _) = watch::channel(false);
        let edge_stats = Arc::new(EdgeStats::default());
        let mut tasks = JoinSet::new();

        let link_addr = listeners.link.local_addr().unwrap_or(config.link.address);
        let mut edges = Vec::new();
        let mut edge_addrs = Vec::new();
        for (l, bound) in config.listeners.iter().zip(listeners.edges) {
            if l.tls && config.tls.certificates.is_empty() {
                return Err(StartError::NoCertificate(l.address));
            }
            edge_addrs.push(bound.local_addr().unwrap_or(l.address));
            let tls = l
                .tls
                .then(|| Tls::new(certs.clone(), config.tls.handshake_timeout));
            edges.push(Edge {
                listener: bound,
                tls,
                socket: l.socket,
            });
        }

        tasks.spawn(crate::link::serve(listeners.link, hub.clone()));
        info!(address = %link_addr, "device link listening");
        for (edge, addr) in edges.into_iter().zip(&edge_addrs) {
            info!(address = %addr, tls = edge.tls.is_some(), mss = edge.socket.mss, "browsers listening");
            tasks.spawn(crate::edge::http::serve(
                edge,
                bridge.clone(),
                config.http,
                edge_stats.clone(),
                shutdown.subscribe(),
            ));
        }
        Ok(Self {
            bridge,
            hub,
            edge_stats,
            edge_addrs,
            link_addr,
            certs,
            drain_timeout: config.gateway.drain_timeout,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting, drains browsers and devices, and returns once done
    /// or after the drain deadline.
    pub async fn shutdown(mut self) {
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
            ) && self.hub.online().is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
