//! The device link: the listener devices dial, the handshake against the
//! registry, and one task per device session (STYLE 5).
//!
//! ```text
//!  TcpListener ──accept──▶ handshake place? (max_handshakes, per address)
//!                │ none: wait in line (max_handshakes_waiting, ≤ handshake_timeout / 4), else reset
//!                ▼
//!              session task (span: peer, device)
//!                           │ proto::Session (gateway role)
//!                           │   Authenticate → registry lookup + replay floor → accept / reject / refuse
//!                           │   HELLO (key confirmation) → Hub::register (replaces an older session)
//!                           │ each turn: poll { socket ready (read, pending write), commands, timer },
//!                           │            handle all of them that are ready, transmit
//!                           │   woken by its streams' sends: first let the other ready tasks run,
//!                           │   so many browsers' messages leave in one record and one write
//!  bridge ──Hub::device(id)──▶ DeviceHandle ──open()──▶ DeviceStream { send().await, recv().await }
//! ```
//!
//! # Lifecycle of a session
//!
//! accepted → a handshake place (at once, or after a wait in line; without
//! one the connection is reset and counted, see [`serve`]) → handshake
//! (bounded by the handshake timeout) → registered after
//! HELLO → serving → closed (peer, idle timeout, protocol error, replaced by a
//! newer session of the same device, revoked, or drained on shutdown). Only
//! a session that completed HELLO under fresh keys can displace another, so
//! a replayed first message never disturbs a live device.
//!
//! # Memory
//!
//! Per stream and direction, at most one window of data is buffered: data
//! from the device is not credited back until the bridge has taken it
//! ([`DeviceStream::recv`] returns credit for the previous chunk), and a
//! [`DeviceStream::send`] completes only once proto has taken all of it.
//! Events wait for the bridge in an inbox (module `inbox`) that holds no
//! memory while it is empty, so an idle stream costs its slot in the
//! session and one small shared state.
//!
//! An idle device session is one task of about 1.4 KB (the session state
//! machine, 656 bytes with its handshake state freed once open, its timer
//! and its readiness wait), its command inbox and its entry in the hub:
//! record buffers, AES-GCM key objects and the stream table go back to a
//! pool at its next wait if no stream data moved since it took them
//! (keepalives, the handshake), otherwise once it has been idle for 20 ms (a
//! busy session keeps them between records and checks less often, parking
//! at most 320 ms after its last; `gateway_link_sessions_holding_buffers`
//! counts those that hold them), its stream state exists only while it
//! has streams, devices announcing the
//! same services share the list, and shutdown reaches it through its
//! inbox (about 3.2 KB of gateway RSS per idle device in all; BENCHMARKS.md).

mod hub;
mod inbox;
mod session;
mod stats;
mod stream;

pub use hub::{DeviceHandle, DeviceInfo, Hub, LinkSettings, Presence, Registry, ServiceInfo};
pub use session::serve;
pub use stats::{DeviceCounters, DeviceSeries, HubStats};
pub use stream::{DeviceStream, OpenError, StreamClosed, StreamEvent, StreamSender};
