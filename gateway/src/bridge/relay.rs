//! WebSocket to WebSocket: the browser's socket (terminated here, server
//! role, with the gateway's limits) and an HTTP/1.1 upstream's socket
//! (raw services, direct upstreams; client role, frames masked), messages
//! relayed each way (text whole, binary in parts as it arrives), close
//! frames passed on as sent. Both are
//! [`super::wsconn::WsConn`]s, so an idle pair holds no buffer.
//!
//! Both directions run in the one task of the socket pair (an idle pair
//! costs one task, not three); each direction's pump is the only writer
//! of its destination and also sends the pongs that side is owed.
//!
//! Endings: either side's close is forwarded and the relay waits up to
//! [`CLOSE_GRACE`] for the other's (the closing side is answered with its
//! own code if none comes); a frame that breaks the protocol or a limit
//! closes its sender with 1002 / 1007 / 1009 and the other side with 1001
//! (browser at fault, counted in `gateway_websocket_refused_total`) or
//! 1011 (upstream at fault, counted in
//! `gateway_websocket_device_errors_total`); an upstream connection
//! lost closes the browser with 1011; access revoked by a reload, 1008.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use tokio::sync::Notify;
use tracing::debug;

use super::Bridge;
use super::gate::LiveGuard;
use super::stats::BridgeStats;
use super::upgrade::{Io, OnBrowser};
use super::ws::limits;
use super::wsconn::{Incoming, OP_BINARY, OP_CONT, OP_TEXT, Role, WsConn, close_payload};
use crate::beside::Rare;

/// How long a closing handshake may take once one side has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Conn = WsConn<Io>;

/// Starts the relay once both upgrades complete.
pub(super) fn spawn(
    bridge: Arc<Bridge>,
    browser: OnBrowser,
    upstream: OnUpgrade,
    live: LiveGuard,
    device: &str,
) {
    super::spawn_websocket(device, "http1", task(bridge, browser, upstream, live));
}

/// The relay's task: both upgrades, then both directions. Captured once
/// and used where it lies, as the link bridge's task is (`super::ws`): this
/// future is most of what an idle relayed socket costs.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn task(
    bridge: Arc<Bridge>,
    browser: OnBrowser,
    upstream: OnUpgrade,
    live: LiveGuard,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let (b, u) = match tokio::join!(browser, upstream) {
            (Ok(b), Ok(u)) => (b, u),
            (b, u) => {
                debug!(
                    browser = b.is_ok(),
                    upstream = u.is_ok(),
                    "an upgrade did not complete"
                );
                return;
            }
        };
        let lim = limits(&bridge);
        let browser = WsConn::new(b, Role::Server, lim).in_parts();
        let upstream = WsConn::new(Io::from(u), Role::Client, lim).in_parts();
        let stats = &bridge.stats;
        let _open = stats.ws_session();
        relay(&browser, &upstream, live.revoked(), stats).await;
    }
}

/// What ended one direction.
enum End {
    /// The source sent Close, with this payload (already forwarded).
    Closed(Vec<u8>),
    /// The source broke the protocol or a limit: its close code.
    Failed(u16, &'static str),
    /// The source's connection failed or ended without Close.
    Lost,
    /// The destination's connection failed.
    SinkLost,
}

/// One direction: `from`'s messages into `to`, and what `to` owes besides
/// (pongs, queued frames: [`WsConn::drive`]); each whole data message
/// delivered counts in `delivered` (`gateway_websocket_messages_total`).
/// (The only writer of `to` while it runs.)
///
/// A large binary message goes on in frames as its parts arrive (RFC 6455
/// §5.4 lets an intermediary refragment when no extension is agreed, and
/// none ever is here): the relay holds at most a part of it, and the
/// receiver has its first bytes while the sender is still sending.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn pump(from: &Conn, to: &Conn, delivered: &AtomicU64) -> impl Future<Output = End> {
    async move {
        // A message whose first frames went out.
        let mut midway = false;
        loop {
            // `biased`, the sink's own work first: `drive` is ready only
            // until what `to` owes is written, so it cannot starve the
            // source (and an unbiased select draws a random number on
            // every poll, six per relayed message).
            tokio::select! {
                biased;
                r = to.drive() => {
                    if r.is_err() {
                        return End::SinkLost;
                    }
                }
                m = from.recv() => {
                    let (sent, whole) = match m {
                        Ok(Incoming::Text(m)) => (to.send_owned(OP_TEXT, m).await, true),
                        Ok(Incoming::Part(p)) => {
                            let op = if midway { OP_CONT } else { OP_BINARY };
                            midway = true;
                            (to.send_owned_fragment(op, p, false).await, false)
                        }
                        Ok(Incoming::Binary(m)) if midway => {
                            midway = false;
                            (to.send_owned_fragment(OP_CONT, m, true).await, true)
                        }
                        Ok(Incoming::Binary(m)) => (to.send_owned(OP_BINARY, m).await, true),
                        Ok(Incoming::Ping | Incoming::Pong) => (Ok(()), false),
                        Ok(Incoming::Close(p)) => {
                            let _ = to.send_close(&p).await;
                            return End::Closed(p);
                        }
                        Err(e) => {
                            debug!("WebSocket relay: {e}");
                            return match e.close() {
                                Some((code, reason)) => End::Failed(code, reason),
                                None => End::Lost,
                            };
                        }
                    };
                    if sent.is_err() {
                        return End::SinkLost;
                    }
                    if whole {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Both directions in this one task (two tasks of their own cost a task
/// allocation each for every idle socket), then the closing handshakes.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice in its future"
)]
fn relay(
    browser: &Conn,
    upstream: &Conn,
    revoked: &Notify,
    stats: &BridgeStats,
) -> impl Future<Output = ()> {
    async move {
        let first = {
            let up = pump(browser, upstream, &stats.ws_messages_up);
            let down = pump(upstream, browser, &stats.ws_messages_down);
            tokio::pin!(up, down);
            // `biased`: each pump is ready once, at its end, so the order
            // cannot starve either; the revocation is polled only once it
            // wakes (`crate::beside`), not on every message's wake.
            let revoked = pin!(revoked.notified());
            let first = tokio::select! {
                biased;
                r = &mut up => Some((true, r)),
                r = &mut down => Some((false, r)),
                () = Rare::new(revoked) => None,
            };
            if let Some((from_browser, End::Closed(_))) = &first {
                // Wait for the other side's close to come through.
                let other = if *from_browser { &mut down } else { &mut up };
                let _ = tokio::time::timeout(CLOSE_GRACE, other).await;
            }
            first
            // The pumps end here; a frame one had begun to write stays with its
            // connection and goes out before the next.
        };
        let (to_browser, to_upstream) = match first {
            None => (
                Some(close_payload(1008, "access revoked")),
                Some(close_payload(1001, "going away")),
            ),
            Some((from_browser, end)) => {
                let failed_other = if from_browser {
                    close_payload(1001, "browser gone")
                } else {
                    close_payload(1011, "upstream connection lost")
                };
                let (to_source, to_other) = match end {
                    // The source gets an answer with its code if the other side
                    // gave none in time.
                    End::Closed(p) => (Some(p[..p.len().min(2)].to_vec()), None),
                    End::Failed(code, reason) => {
                        if from_browser {
                            stats.count_ws_refusal(code);
                        } else {
                            stats.count_ws_device_error(code);
                        }
                        let other = if from_browser {
                            close_payload(1001, "going away")
                        } else {
                            close_payload(1011, "upstream broke the protocol")
                        };
                        (Some(close_payload(code, reason)), Some(other))
                    }
                    End::Lost => (None, Some(failed_other)),
                    End::SinkLost => {
                        let source = if from_browser {
                            close_payload(1011, "upstream connection lost")
                        } else {
                            close_payload(1001, "browser gone")
                        };
                        (Some(source), None)
                    }
                };
                if from_browser {
                    (to_source, to_other)
                } else {
                    (to_other, to_source)
                }
            }
        };
        let grace = tokio::time::sleep(CLOSE_GRACE);
        tokio::pin!(grace);
        for (conn, close) in [(browser, to_browser), (upstream, to_upstream)] {
            tokio::select! {
                () = finish(conn, close) => {}
                () = &mut grace => {}
            }
        }
    }
}

/// Sends `close` unless a close already went out, then ends the sending side.
async fn finish(conn: &Conn, close: Option<Vec<u8>>) {
    if let Some(p) = close
        && !conn.close_sent()
    {
        let _ = conn.send_close(&p).await;
    }
    let _ = conn.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle relayed socket's task is this future (in tokio's task cell,
    /// with the span); see `ws::tests::the_websocket_task_stays_small`.
    /// 1,808 bytes in a test build, 1,872 since the revocation is polled
    /// only once it wakes (`beside::Rare`: a lock and a random draw fewer
    /// on each of the two wakes per relayed message), 1,888 with each
    /// pump's message counter, 1,896 with the browser's side either
    /// hyper's upgrade or an HTTP/2 stream (`super::upgrade::Io`).
    #[test]
    fn the_relay_task_stays_small() {
        let f: fn(Arc<Bridge>, OnBrowser, OnUpgrade, LiveGuard) -> _ = task;
        let size = super::super::returned_size(f);
        eprintln!("relay task future: {size} bytes");
        assert!(size <= 1_896, "the relay task grew to {size} bytes");
    }
}
