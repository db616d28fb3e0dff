//! Who may connect and who is online.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use proto::{Code, Config, PublicKey, ServiceKind, StreamKind};
use tokio::sync::{oneshot, watch};

use super::session::{Cmd, CmdSender};
use super::stats::HubStats;
use super::stream::{DeviceStream, OpenError};
use crate::edge::admission::SourceCaps;

/// A device the registry admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its id (routing name).
    pub id: String,
}

/// Public keys → devices. Replaced as a whole on reload.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    by_key: HashMap<PublicKey, DeviceInfo>,
}

impl Registry {
    /// A registry of `(key, device)` pairs.
    pub fn new(devices: impl IntoIterator<Item = (PublicKey, DeviceInfo)>) -> Self {
        Self {
            by_key: devices.into_iter().collect(),
        }
    }

    /// The device with this key.
    pub fn lookup(&self, key: &PublicKey) -> Option<&DeviceInfo> {
        self.by_key.get(key)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The ids of the devices.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_key.values().map(|d| d.id.as_str())
    }
}

/// Link tunables.
#[derive(Clone, Copy, Debug)]
pub struct LinkSettings {
    /// Session limits and timers for the gateway role.
    pub session: Config,
    /// How long a drain may take on shutdown before sessions are closed.
    pub drain_timeout: Duration,
    /// Devices with their own metric series (`[metrics] max_device_series`). Default 1000.
    pub max_device_series: usize,
    /// Unauthenticated handshakes in progress at once, all sources
    /// (`[link] max_handshakes`). Default 4096.
    pub max_handshakes: usize,
    /// Unauthenticated handshakes in progress at once from one source
    /// address (IPv6: one /64) (`[link] max_handshakes_per_address`).
    /// Default 1024.
    pub max_handshakes_per_address: usize,
    /// Connections that may wait for a place when a cap is full
    /// (`[link] max_handshakes_waiting`). Default 8192.
    pub max_handshakes_waiting: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            // AES-256-GCM records for devices that offer them, where this
            // machine has AES instructions (a quarter to a third of
            // ChaCha20-Poly1305's CPU per byte). The configuration file's
            // defaults are these.
            session: Config {
                ciphers: proto::Ciphers::hardware(),
                // What a device may send ahead of the browser: 1 MiB per
                // stream, 4 MiB per session (as `[http3]`'s windows).
                // proto's 256 KiB and 1 MiB cost a credit round trip to
                // the device every 128 KiB, and held a 1 MiB message's
                // echo to about 0.6 of direct mode's rate. Nothing is
                // reserved: only bytes in flight are held.
                params: proto::Params {
                    stream_window: 1 << 20,
                    conn_window: 4 << 20,
                    ..Config::GATEWAY.params
                },
                ..Config::GATEWAY
            },
            drain_timeout: Duration::from_secs(10),
            max_device_series: crate::config::settings::DEFAULT_MAX_DEVICE_SERIES,
            max_handshakes: crate::config::settings::DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_address: crate::config::settings::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
            max_handshakes_waiting: crate::config::settings::DEFAULT_MAX_HANDSHAKES_WAITING,
        }
    }
}

/// A service as the device announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: ServiceKind,
    /// WebSocket subprotocols, in the device's order of preference.
    pub subprotocols: Vec<String>,
}

/// An online device, for the bridge.
#[derive(Clone, Debug)]
pub struct DeviceHandle {
    /// Device id.
    pub id: String,
    /// Firmware version from HELLO.
    pub firmware: String,
    /// Services from HELLO; the index is the service number.
    pub services: Arc<Vec<ServiceInfo>>,
    /// Largest request head the device accepts.
    pub max_head: u16,
    /// The key the session authenticated with.
    pub(crate) key: PublicKey,
    pub(crate) generation: u64,
    pub(crate) cmd: CmdSender,
}

impl DeviceHandle {
    /// The number and description of the service called `name`.
    pub fn service(&self, name: &str) -> Option<(u8, &ServiceInfo)> {
        self.services
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .map(|(i, s)| (i as u8, s))
    }

    /// Opens a stream to service number `service`.
    pub async fn open(&self, kind: StreamKind, service: u8) -> Result<DeviceStream, OpenError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Open {
                kind,
                service,
                reply: tx,
            })
            .map_err(|_| OpenError::Offline)?;
        let mut stream = rx.await.map_err(|_| OpenError::Offline)??;
        stream.set_device(&self.id);
        Ok(stream)
    }

    /// Ends the session with `code` (revocation, replacement).
    pub fn close(&self, code: Code) {
        let _ = self.cmd.send(Cmd::Close(code));
    }
}

/// What the landing page shows of a device beyond online or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The last time the device was known connected (its last ping answer,
    /// or when its session ended).
    pub last_seen: std::time::SystemTime,
    /// The last link round trip.
    pub rtt: Option<Duration>,
}

/// The device link's shared state.
pub struct Hub {
    pub(crate) key: proto::SecretKey,
    pub(crate) settings: LinkSettings,
    registry: RwLock<Arc<Registry>>,
    /// Highest handshake timestamp accepted per key: the replay floor.
    floors: Mutex<HashMap<PublicKey, u64>>,
    online: RwLock<HashMap<String, DeviceHandle>>,
    presence: Mutex<HashMap<String, Presence>>,
    generation: AtomicU64,
    /// Counters.
    pub stats: HubStats,
    /// Places for handshakes in progress (taken at accept, given back at
    /// HELLO or when the connection ends).
    pub handshakes: Arc<SourceCaps>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Service lists recently announced, shared by the devices that
    /// announce the same (see [`Hub::shared_services`]).
    services: Mutex<Vec<Arc<Vec<ServiceInfo>>>>,
}

/// Distinct service lists [`Hub::shared_services`] remembers.
const SHARED_SERVICE_LISTS: usize = 16;

impl Hub {
    /// A hub with the gateway's static key.
    pub fn new(key: proto::SecretKey, registry: Registry, settings: LinkSettings) -> Arc<Self> {
        let stats = HubStats::new(settings.max_device_series);
        stats.devices.set_devices(registry.ids());
        let handshakes =
            SourceCaps::new(settings.max_handshakes, settings.max_handshakes_per_address);
        Arc::new(Self {
            key,
            settings,
            registry: RwLock::new(Arc::new(registry)),
            floors: Mutex::new(HashMap::new()),
            online: RwLock::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            stats,
            handshakes,
            shutdown: watch::channel(false).0,
            services: Mutex::new(Vec::new()),
        })
    }

    /// The gateway's public key (what devices pin).
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Replaces the registry; devices no longer in it are disconnected
    /// with `REVOKED`, as are devices whose key changed. Every other
    /// session carries on.
    pub fn set_registry(&self, registry: Registry) {
        let registry = Arc::new(registry);
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = registry.clone();
        self.stats.devices.set_devices(registry.ids());
        let online = self
            .online
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (id, handle) in online {
            let still = registry.lookup(&handle.key).is_some_and(|d| d.id == id);
            if !still {
                self.stats.revoked.fetch_add(1, Ordering::Relaxed);
                handle.close(Code::REVOKED);
            }
        }
    }

    /// The number of devices the registry admits.
    pub fn registered(&self) -> usize {
        self.registry().len()
    }

    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks the replay floor and raises it: `Err(last)` when `timestamp`
    /// is not above the last accepted one for `key`.
    pub(crate) fn admit_timestamp(&self, key: &PublicKey, timestamp: u64) -> Result<(), u64> {
        let mut floors = self.floors.lock().unwrap_or_else(|e| e.into_inner());
        let last = floors.entry(*key).or_insert(0);
        if timestamp <= *last {
            return Err(*last);
        }
        *last = timestamp;
        Ok(())
    }

    /// Registers a session whose HELLO arrived; an older session of the
    /// same device is closed with `REPLACED`.
    pub(crate) fn register(&self, mut handle: DeviceHandle) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        handle.generation = generation;
        self.touch_presence(&handle.id, |p| p.last_seen = std::time::SystemTime::now());
        let old = self
            .online
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(handle.id.clone(), handle);
        if let Some(old) = old {
            self.stats.replaced.fetch_add(1, Ordering::Relaxed);
            old.close(Code::REPLACED);
        }
        self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
        generation
    }

    /// Removes a session, unless a newer one already took its place.
    /// When a device was last connected, and its last link round trip.
    pub fn presence(&self, id: &str) -> Option<Presence> {
        self.presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn touch_presence(&self, id: &str, f: impl FnOnce(&mut Presence)) {
        let mut map = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the registry: only registered devices get here.
        let p = map.entry(id.to_string()).or_insert(Presence {
            last_seen: std::time::SystemTime::now(),
            rtt: None,
        });
        f(p);
    }

    pub(crate) fn note_rtt(&self, id: &str, rtt: Duration) {
        self.touch_presence(id, |p| {
            p.rtt = Some(rtt);
            p.last_seen = std::time::SystemTime::now();
        });
    }

    pub(crate) fn unregister(&self, id: &str, generation: u64) {
        self.touch_presence(id, |p| p.last_seen = std::time::SystemTime::now());
        let mut online = self.online.write().unwrap_or_else(|e| e.into_inner());
        if online.get(id).is_some_and(|h| h.generation == generation) {
            online.remove(id);
        }
    }

    /// The online device with this id.
    pub fn device(&self, id: &str) -> Option<DeviceHandle> {
        self.online
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Ids of the devices online now.
    pub fn online(&self) -> Vec<String> {
        self.online
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// `services` as an `Arc` that devices announcing the same list share:
    /// a fleet runs few firmwares, and each online device would otherwise
    /// hold its own copy (a vector and a string per service, about 250
    /// bytes for a typical device). The last [`SHARED_SERVICE_LISTS`]
    /// distinct lists are kept, most recent first.
    pub(crate) fn shared_services(&self, services: Vec<ServiceInfo>) -> Arc<Vec<ServiceInfo>> {
        let mut lists = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = lists.iter().position(|l| **l == services) {
            let list = lists.remove(i);
            lists.insert(0, list.clone());
            return list;
        }
        let list = Arc::new(services);
        lists.insert(0, list.clone());
        lists.truncate(SHARED_SERVICE_LISTS);
        list
    }

    /// Whether [`Hub::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts the drain: every session sends GOAWAY, finishes its streams
    /// and closes (or is closed after the drain timeout); no new session is
    /// accepted.
    ///
    /// Sessions see the flag whenever they wake; an idle one is woken by a
    /// `Cmd::Shutdown` in its command inbox (a session waits on no
    /// channel of its own for this). One that registers after the flag was
    /// set sees it on its next turn, and one still in its handshake ends
    /// there.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let online = self.online.read().unwrap_or_else(|e| e.into_inner());
        for handle in online.values() {
            let _ = handle.cmd.send(Cmd::Shutdown);
        }
    }
}
