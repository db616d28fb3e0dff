//! One task per device session.

use std::collections::{HashMap, VecDeque};
use std::future::{Future as _, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use proto::wire::Status;
use proto::{
    Buffers, CloseReason, Code, Event, Instant, MsgKind, Params, SecretKey, Session, StreamError,
    StreamId, StreamKind, StreamSlot,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::{debug, info, info_span, warn};

use super::hub::{DeviceHandle, Hub, ServiceInfo};
use super::inbox::{InboxSender, inbox};
use super::stats::DeviceCounters;
use super::stream::{DeviceStream, OpenError, SendGate, StreamEvent};
use crate::edge::admission::{Permit, Refusal};

/// What the bridge asks of a session task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Open {
        kind: StreamKind,
        service: u8,
        reply: oneshot::Sender<Result<DeviceStream, OpenError>>,
    },
    Send {
        stream: StreamId,
        msg: MsgKind,
        data: Vec<u8>,
        end_msg: bool,
        fin: bool,
    },
    Consume(StreamId, usize),
    Reset(StreamId, Code),
    Dropped {
        stream: StreamId,
        owed: usize,
        reset: bool,
    },
    Close(Code),
    /// Nothing to do but wake up: the hub is shutting down
    /// ([`Hub::shutdown`]), which the session checks on every turn.
    Shutdown,
}

/// The way into a session task: an inbox with a sender per holder (the
/// device's handle, each stream), which holds no memory while empty (an
/// idle device session gets no command for hours).
#[derive(Clone, Debug)]
pub(crate) struct CmdSender(InboxSender<Cmd>);

impl CmdSender {
    /// Queues `cmd`; gives it back once the session task is gone.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), Cmd> {
        self.0.send(cmd)
    }

    /// Queues `cmd` for the session's next wake-up without causing one.
    pub(crate) fn send_quiet(&self, cmd: Cmd) -> Result<(), Cmd> {
        self.0.send_quiet(cmd)
    }
}

/// A send waiting for credit.
struct Outgoing {
    msg: MsgKind,
    data: Vec<u8>,
    sent: usize,
    end_msg: bool,
    fin: bool,
}

/// Who the session is and what it has reported to the metrics.
struct State {
    /// The device id and the key it authenticated with, from the key's
    /// acceptance until its HELLO (boxed: an open session holds neither).
    authenticated: Option<Box<(String, proto::PublicKey)>>,
    /// Id and generation, once registered after HELLO.
    registered: Option<(String, u64)>,
    /// Why the session closed.
    reason: Option<CloseReason>,
    /// Where this device's counters go, once known.
    counters: Option<Arc<DeviceCounters>>,
    /// proto's counters as last added to the metrics.
    reported: Reported,
    /// The session's span (`device_link{peer, device}`): the parent of the
    /// session's log events. The task does not enter it on every poll
    /// ([`start_session`]).
    span: tracing::Span,
}

/// The part of [`proto::Stats`] that goes to the metrics, as last added.
#[derive(Clone, Copy, Default)]
struct Reported {
    credit_stalls: u64,
    stall_resets: u64,
    bytes_received: u64,
    bytes_sent: u64,
    records_received: u64,
    records_sent: u64,
}

impl State {
    fn new(span: tracing::Span) -> Self {
        Self {
            authenticated: None,
            registered: None,
            reason: None,
            counters: None,
            reported: Reported::default(),
            span,
        }
    }

    /// Adds what proto counted since the last call to the metrics. Bytes
    /// wait until the device is known, so its handshake counts too.
    fn report(&mut self, s: &GwSession, hub: &Hub) {
        let now = s.stats();
        let last = self.reported;
        let add = |c: &AtomicU64, new: u64, old: u64| {
            if new > old {
                c.fetch_add(new - old, Ordering::Relaxed);
            }
        };
        add(
            &hub.stats.credit_stalls,
            now.credit_stalls,
            last.credit_stalls,
        );
        add(&hub.stats.stall_resets, now.stall_resets, last.stall_resets);
        add(&hub.stats.records_sent, now.records_sent, last.records_sent);
        add(
            &hub.stats.records_received,
            now.records_received,
            last.records_received,
        );
        self.reported.credit_stalls = now.credit_stalls;
        self.reported.stall_resets = now.stall_resets;
        self.reported.records_sent = now.records_sent;
        self.reported.records_received = now.records_received;
        if let Some(c) = &self.counters {
            add(&c.received_bytes, now.bytes_received, last.bytes_received);
            add(&c.sent_bytes, now.bytes_sent, last.bytes_sent);
            self.reported.bytes_received = now.bytes_received;
            self.reported.bytes_sent = now.bytes_sent;
        }
    }
}

#[derive(Default)]
struct Streams {
    to_bridge: HashMap<StreamId, InboxSender<StreamEvent>>,
    outgoing: HashMap<StreamId, VecDeque<Outgoing>>,
    /// Each open stream's send gate: told what was taken, closed when the
    /// stream takes nothing more.
    gates: HashMap<StreamId, Arc<SendGate>>,
    /// Device data not passed on yet: DATA frames of one stream and message
    /// kind that follow each other in what one read brought are handed to
    /// the bridge as one chunk (one allocation and one wake-up, not one per
    /// frame). Passed on before any other event and before the task waits.
    held: Option<(StreamId, StreamEvent)>,
    /// Bytes of the current read the session has not taken yet: the most
    /// a held chunk can still grow by, reserved at once when it grows (a
    /// large message's frames are then joined without a copy per doubling).
    read_left: usize,
}

impl Streams {
    /// `stream` takes nothing more from the bridge: what it queued goes,
    /// and its senders learn it.
    fn close_sending(&mut self, stream: StreamId) {
        self.outgoing.remove(&stream);
        if let Some(g) = self.gates.remove(&stream) {
            g.close();
        }
    }

    fn is_empty(&self) -> bool {
        self.to_bridge.is_empty()
            && self.outgoing.is_empty()
            && self.gates.is_empty()
            && self.held.is_none()
    }

    /// Adds a DATA frame to the held chunk, or passes that on and holds
    /// this one. Returns credit to give back at once (see [`Self::pass_on`]).
    fn hold(
        &mut self,
        stream: StreamId,
        msg: MsgKind,
        data: &[u8],
        end_msg: bool,
        fin: bool,
    ) -> Option<(StreamId, usize)> {
        if let Some((
            id,
            StreamEvent::Data {
                msg: m,
                data: d,
                end_msg: e,
                fin: f,
            },
        )) = &mut self.held
            && *id == stream
            && *m == msg
            && !*e
            && !*f
        {
            d.reserve(data.len() + self.read_left);
            d.extend_from_slice(data);
            (*e, *f) = (end_msg, fin);
            return None;
        }
        let refund = self.pass_on();
        // A chunk that ends its message or stream is not joined with more.
        let room = if end_msg || fin { 0 } else { self.read_left };
        let mut copy = Vec::with_capacity(data.len() + room);
        copy.extend_from_slice(data);
        let ev = StreamEvent::Data {
            msg,
            data: copy,
            end_msg,
            fin,
        };
        self.held = Some((stream, ev));
        refund
    }

    /// Hands the held chunk to its stream's reader. Without one (the
    /// stream was dropped) returns the stream and the bytes, whose credit
    /// the caller gives back.
    fn pass_on(&mut self) -> Option<(StreamId, usize)> {
        let (stream, ev) = self.held.take()?;
        let (n, fin) = match &ev {
            StreamEvent::Data { data, fin, .. } => (data.len(), *fin),
            _ => (0, false),
        };
        let delivered = self
            .to_bridge
            .get(&stream)
            .is_some_and(|tx| tx.send(ev).is_ok());
        if fin {
            self.to_bridge.remove(&stream);
        }
        (!delivered).then_some((stream, n))
    }

    /// [`Self::pass_on`], giving credit back to `s`.
    fn flush_held(&mut self, s: &mut GwSession) {
        if let Some((stream, n)) = self.pass_on() {
            s.consume(stream, n);
        }
    }
}

/// A session's [`Streams`], boxed and only while it has any: an idle
/// device session (no stream for hours) keeps 8 bytes instead of the two
/// maps and the held chunk in its task.
#[derive(Default)]
struct LazyStreams(Option<Box<Streams>>);

impl LazyStreams {
    fn get(&mut self) -> &mut Streams {
        self.0.get_or_insert_with(Box::default)
    }

    /// Frees the state once nothing is in it (before the task waits).
    fn trim(&mut self) {
        if self.0.as_ref().is_some_and(|s| s.is_empty()) {
            self.0 = None;
        }
    }
}

/// When the sessions' clock started.
fn clock_base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

/// The sessions' clock: milliseconds since [`clock_base`].
fn clock() -> Instant {
    Instant::from_millis(clock_base().elapsed().as_millis() as u64)
}

/// A time of the sessions' clock as a tokio deadline.
fn deadline(at: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(clock_base() + Duration::from_millis(at.as_millis()))
}

/// Accepts device connections until the hub shuts down.
///
/// Each connection first needs a place among the handshakes in progress
/// ([`Hub::handshakes`]: `[link] max_handshakes` in all,
/// `max_handshakes_per_address` from one source). Without one it waits
/// in line, if fewer than `max_handshakes_waiting` connections wait
/// already, for at most a quarter of `handshake_timeout` (the device's own
/// handshake timer runs meanwhile, and the handshake itself takes time
/// on a busy gateway: with half of it, 15,000 devices on a starved machine
/// timed out in line and in progress and most handshakes were wasted): a
/// place given back goes to the
/// longest waiting connection it fits, which then starts its handshake
/// (counted in `gateway_link_handshakes_waited_total`). A waiting
/// connection holds its descriptor and a small task, no session and no
/// buffer, and reads nothing. A connection with no place and no room in
/// line, or none by the end of its wait, is reset, before any key
/// exchange or buffer is spent on it, and counted
/// (`gateway_link_handshakes_refused_total{reason}`); a device turned
/// away retries with its backoff. So a reconnect storm from one address
/// (a fleet behind a NAT, a restart) is served in turn instead of sending
/// most devices into their backoff, while a flood beyond the caps and the
/// line is still turned away. The place is given back when the device's
/// HELLO registers it (an online device no longer counts) or when the
/// connection ends, at the latest after `handshake_timeout`. Online
/// devices are never affected.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown.subscribe();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    crate::edge::admission::socket_opened();
                    let refusal = match hub.handshakes.acquire(peer.ip()) {
                        Ok(permit) => {
                            start_session(sock, peer, hub.clone(), permit);
                            continue;
                        }
                        Err(r) => r,
                    };
                    let waiting = hub.settings.max_handshakes_waiting;
                    match hub.handshakes.queue(peer.ip(), refusal, waiting) {
                        Ok(ticket) => {
                            let hub = hub.clone();
                            tokio::spawn(async move {
                                let wait = hub.settings.session.handshake_timeout / 4;
                                match ticket.wait(wait).await {
                                    Ok(permit) => {
                                        hub.stats.handshakes_waited.fetch_add(1, Ordering::Relaxed);
                                        start_session(sock, peer, hub, permit);
                                    }
                                    Err(r) => refuse(&hub, sock, peer, r),
                                }
                            });
                        }
                        Err(r) => refuse(&hub, sock, peer, r),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    warn!("device link accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutting_down(&mut shutdown) => return,
        }
    }
}

/// Runs a session for a connection that has its place.
///
/// The session's span is the explicit parent of its log events rather
/// than entered around every poll of the task (`Instrument`): at the
/// default log level the span is enabled, and entering and leaving it
/// through the subscriber on each of the two or three polls per relayed
/// message cost about 5 % of the gateway's instructions per echo message
/// (BENCHMARKS.md, "Log spans off the message path").
fn start_session(sock: TcpStream, peer: SocketAddr, hub: Arc<Hub>, permit: Permit) {
    let span = info_span!("device_link", %peer, device = tracing::field::Empty);
    tokio::spawn(run_session(sock, peer, hub, Some(permit), span));
}

/// Resets a connection that got no place, and counts it.
fn refuse(hub: &Hub, sock: TcpStream, peer: SocketAddr, r: Refusal) {
    let c = match r {
        Refusal::PerAddressCap => &hub.stats.handshakes_refused_per_address,
        _ => &hub.stats.handshakes_refused_global,
    };
    c.fetch_add(1, Ordering::Relaxed);
    debug!(%peer, reason = r.label(), "device link connection refused");
    // A reset, not a FIN: nothing lingers in TIME_WAIT here.
    let _ = sock.set_zero_linger();
    drop(sock);
}

type GwSession = Session<Vec<u8>, Vec<StreamSlot>>;

/// Resolves once the hub's shutdown flag is set (never if the hub is gone).
async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A device session's task, for its whole life: an idle device costs this
/// future. What it owns is captured once and used where it lies (an `async
/// fn` keeps its arguments twice), and what only the start needs (the
/// settings' copy, the ephemeral key) is gone before the first wait; the
/// handshake permit is held until the device is registered.
fn run_session(
    sock: TcpStream,
    peer: SocketAddr,
    hub: Arc<Hub>,
    mut permit: Option<Permit>,
    span: tracing::Span,
) -> impl Future<Output = ()> + Send {
    // Made here, so that the span is kept once (in `state`), not also as
    // the block's capture.
    let mut state = State::new(span);
    async move {
        let _ = sock.set_nodelay(true);
        let cfg = &hub.settings.session;
        let eph = {
            let mut eph = [0u8; 32];
            if getrandom::fill(&mut eph).is_err() {
                warn!(parent: &state.span, "no randomness for an ephemeral key; dropping {peer}");
                return;
            }
            SecretKey::from_bytes(eph)
        };
        let record = usize::from(cfg.params.max_record);
        let slots = usize::from(cfg.params.max_streams) + STREAM_TABLE_STEP;
        let buffers = Buffers {
            rx: pool_take(&RECORD_POOL, record, 0),
            tx: pool_take(&RECORD_POOL, record, 0),
            streams: pool_take(&TABLE_POOL, slots, StreamSlot::default()),
        };
        let mut s: GwSession = match Session::gateway(*cfg, hub.key.clone(), eph, buffers, clock())
        {
            Ok(s) => s,
            Err(e) => {
                warn!(parent: &state.span, "device link misconfigured: {e}");
                return;
            }
        };
        // Counts the session among those holding their buffers until it
        // parks them or its task ends, however it ends.
        let mut parking = Parking::new(&hub.stats.buffers_held);
        let (cmd_tx, mut cmd_rx) = inbox();
        let cmd_tx = CmdSender(cmd_tx);
        let mut streams = LazyStreams::default();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut draining = false;
        // Records go out through the worker thread's scratch buffer; only
        // what the socket did not take at once is kept here (usually nothing).
        let mut unsent: Vec<u8> = Vec::new();
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        // The timer has been polled since its last reset, so it holds this
        // task's waker and will wake the task when it fires: until then a
        // turn reads its state (one atomic load) instead of polling it (the
        // runtime's budget and the waker compared and stored: about a
        // hundred instructions, a few times per relayed message).
        let mut timer_armed = false;
        let mut batching = Batching::default();
        // The sessions' clock, read once per turn (after its wait): the
        // turn's records, input and timeouts all take that time (proto
        // counts milliseconds; a turn lasts microseconds).
        let mut now = clock();

        loop {
            unpark(&mut s, record, slots, &mut parking);
            if !draining && hub.is_shutting_down() {
                // The drain: GOAWAY now (a session still in its handshake
                // ends), closed at the drain deadline.
                draining = true;
                s.goaway(Code::SHUTDOWN);
                drain_deadline = Some(tokio::time::Instant::now() + hub.settings.drain_timeout);
            }
            // Whether records may be left after a burst of full writes.
            let mut more = false;
            if unsent.is_empty() {
                for _ in 0..TRANSMIT_BURST {
                    match transmit(&mut s, streams.get(), &sock, &mut unsent, now) {
                        Transmit::Full => {
                            more = true;
                            parking.busy();
                        }
                        Transmit::Sent => {
                            more = false;
                            parking.busy();
                            break;
                        }
                        Transmit::Nothing | Transmit::Blocked => {
                            more = false;
                            break;
                        }
                        Transmit::Failed => {
                            more = false;
                            s.handle_eof();
                            break;
                        }
                    }
                }
            } else {
                flush_outgoing(&mut s, streams.get());
            }
            if s.is_closed() && unsent.is_empty() {
                break;
            }
            // Nothing in flight: the record buffers go back to the pool (and
            // the stream table if no stream is open) at once if no stream data
            // moved since they were taken (a handshake, keepalives), otherwise
            // once the session has stayed idle for a while (`Parking`).
            let due = parking.take_due();
            if !s.is_parked() && s.buffers_idle() {
                if due || !parking.streamed(payload_moved(&s)) {
                    park(&mut s, &mut parking);
                } else {
                    parking.idle(tokio::time::Instant::now, payload_moved(&s));
                }
            }
            // One timer for the session's life, for proto's deadline, the
            // drain's or the parking check, whichever comes first; moved only
            // when that changes (not created and dropped on every turn).
            let mut wake_at = s.poll_timeout().map(deadline);
            for d in [drain_deadline, parking.check_at].into_iter().flatten() {
                wake_at = Some(wake_at.map_or(d, |w| w.min(d)));
            }
            if let Some(at) = wake_at
                && timer.deadline() != at
            {
                timer.as_mut().reset(at);
                timer_armed = false;
            }
            streams.trim();
            // Everything that can wake the session is polled on every turn, and
            // all of it that is ready is handled in the turn, in a fixed order:
            // nothing waits behind a busy socket, and no turn is spent per
            // source (a device's answer and the browser's next message often
            // arrive together). The socket's readiness goes through its one
            // reader and writer slot (`ready()` would queue and unqueue a
            // waiter on every turn, and hold it in the task's state).
            let mut woke = poll_fn(|cx| {
                let mut w = Woke::default();
                if let Poll::Ready(r) = sock.poll_read_ready(cx) {
                    w.readable = Some(r.is_ok());
                }
                if !unsent.is_empty()
                    && let Poll::Ready(r) = sock.poll_write_ready(cx)
                {
                    w.writable = Some(r.is_ok());
                }
                if let Poll::Ready(c) = cmd_rx.poll_recv_all(cx) {
                    w.commands = Some(c);
                }
                if wake_at.is_some() && (!timer_armed || timer.is_elapsed()) {
                    if timer.as_mut().poll(cx).is_ready() {
                        w.timer = true;
                    } else {
                        timer_armed = true;
                    }
                }
                // With `more`, records may be ready: come round again at once.
                if more || w.any() {
                    Poll::Ready(w)
                } else {
                    Poll::Pending
                }
            })
            .await;
            now = clock();
            if let Some(Some(queued)) = &mut woke.commands
                && batching.wait()
            {
                // The streams' tasks woke the session: let the other tasks
                // that are ready run first (browsers' messages already read),
                // so their sends join this turn's records and its one write.
                tokio::task::yield_now().await;
                let more = poll_fn(|cx| Poll::Ready(cmd_rx.poll_recv_all(cx))).await;
                let gathered = match more {
                    Poll::Ready(Some(more)) => {
                        let n = more.len();
                        queued.extend(more);
                        n
                    }
                    _ => 0,
                };
                batching.gathered(gathered);
            }
            if woke.readable.is_some() || woke.writable.is_some() || woke.commands.is_some() {
                parking.busy();
            }
            unpark(&mut s, record, slots, &mut parking);
            if let Some(ok) = woke.readable {
                let eof =
                    !ok || receive(&mut s, &sock, &hub, &cmd_tx, streams.get(), &mut state, now);
                if eof {
                    s.handle_eof();
                    handle_events(&mut s, &hub, &cmd_tx, streams.get(), &mut state);
                }
            }
            if let Some(ok) = woke.writable {
                match ok.then(|| sock.try_write(&unsent)) {
                    Some(Ok(n)) if n > 0 => {
                        unsent.drain(..n);
                        if unsent.is_empty() {
                            unsent = Vec::new();
                        }
                    }
                    Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => {
                        s.handle_eof();
                        unsent = Vec::new();
                    }
                }
            }
            if let Some(c) = woke.commands {
                // All that queued since the last turn: a stream's send and its
                // credit, or many streams' sends, cost one turn.
                for c in c.into_iter().flatten() {
                    apply(&mut s, c, &cmd_tx, streams.get(), cfg.params);
                    flush_outgoing(&mut s, streams.get());
                }
            }
            if woke.timer {
                let at = tokio::time::Instant::now();
                if drain_deadline.is_some_and(|d| at >= d) {
                    s.close(Code::SHUTDOWN);
                    drain_deadline = None;
                }
                parking.check(at, s.buffers_idle(), payload_moved(&s));
                s.handle_timeout(now);
            }
            handle_events(&mut s, &hub, &cmd_tx, streams.get(), &mut state);
            streams.get().flush_held(&mut s);
            state.report(&s, &hub);
            if permit.is_some() && state.registered.is_some() {
                permit = None;
            }
        }
        let streams = streams.get();
        streams.flush_held(&mut s);
        // Buffers still in use at the end go with the session (and `parking`
        // stops counting it when dropped).
        park(&mut s, &mut parking);
        state.report(&s, &hub);
        for (_, tx) in streams.to_bridge.drain() {
            let _ = tx.send(StreamEvent::Closed);
        }
        for (_, g) in streams.gates.drain() {
            g.close();
        }
        let online = state.registered.is_some();
        if let Some((id, generation)) = &state.registered {
            hub.unregister(id, *generation);
        }
        match (state.reason, online) {
            (Some(CloseReason::Local(Code::REFUSED)), false) => {}
            (Some(r), false) => {
                hub.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                debug!(parent: &state.span, "device handshake failed: {r}");
            }
            (Some(CloseReason::Error(e)), true) => {
                hub.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                warn!(parent: &state.span, error = e.name(), "device session failed: {e}");
            }
            (Some(r), true) => info!(parent: &state.span, "device session ended: {r}"),
            (None, _) => {}
        }
    }
}

fn handle_events(
    s: &mut GwSession,
    hub: &Hub,
    cmd_tx: &CmdSender,
    streams: &mut Streams,
    state: &mut State,
) -> bool {
    let mut any = false;
    while let Some(ev) = s.poll_event() {
        any = true;
        match ev {
            Event::Authenticate { device, timestamp } => {
                let registry = hub.registry();
                match registry.lookup(&device) {
                    None => {
                        hub.stats.refused_unknown.fetch_add(1, Ordering::Relaxed);
                        info!(parent: &state.span, key = %device, "refused: unknown device key");
                        s.refuse();
                    }
                    Some(info) => match hub.admit_timestamp(&device, timestamp) {
                        Err(last) => {
                            hub.stats.refused_stale.fetch_add(1, Ordering::Relaxed);
                            info!(parent: &state.span, device = %info.id, timestamp, last, "refused: stale handshake timestamp (replay or clock reset)");
                            s.reject(Status::StaleTimestamp, last);
                        }
                        Ok(()) => {
                            if s.accept().is_ok() {
                                state.span.record("device", info.id.as_str());
                                state.authenticated = Some(Box::new((info.id.clone(), device)));
                            }
                        }
                    },
                }
            }
            Event::Hello(h) => {
                // The HELLO names the device, but the key decides who it is.
                let Some((id, key)) = state.authenticated.take().map(|a| *a) else {
                    continue;
                };
                if h.device_id != id {
                    warn!(parent: &state.span, claimed = h.device_id, registered = %id, "HELLO names another device; closing");
                    s.close(Code::REFUSED);
                    continue;
                }
                let services: Vec<ServiceInfo> = h
                    .services
                    .iter()
                    .map(|sv| ServiceInfo {
                        name: sv.name.to_string(),
                        kind: sv.kind,
                        subprotocols: sv.subprotocols.iter().map(str::to_string).collect(),
                    })
                    .collect();
                let claimed = id;
                let (firmware, max_head) = (h.firmware.to_string(), h.max_head);
                let handle = DeviceHandle {
                    id: claimed.clone(),
                    firmware,
                    services: hub.shared_services(services),
                    max_head,
                    key,
                    generation: 0,
                    cmd: cmd_tx.clone(),
                };
                let generation = hub.register(handle);
                let cipher = s.cipher();
                let by_cipher = match cipher {
                    proto::Cipher::ChaCha20Poly1305 => &hub.stats.sessions_chacha20_poly1305,
                    proto::Cipher::Aes256Gcm => &hub.stats.sessions_aes_256_gcm,
                };
                by_cipher.fetch_add(1, Ordering::Relaxed);
                let counters = hub.stats.devices.counters(&claimed);
                counters.connects.fetch_add(1, Ordering::Relaxed);
                state.counters = Some(counters);
                info!(parent: &state.span, cipher = cipher.name(), "device online");
                state.registered = Some((claimed, generation));
            }
            Event::Opened { stream, .. } => {
                // Device-initiated streams have no consumer at the gateway yet.
                hub.stats
                    .device_streams_refused
                    .fetch_add(1, Ordering::Relaxed);
                let _ = s.reset(stream, Code::REFUSED);
            }
            Event::Data {
                stream,
                msg,
                end_msg,
                fin,
                data,
            } => {
                if let Some((stream, n)) = streams.hold(stream, msg, data, end_msg, fin) {
                    s.consume(stream, n);
                }
            }
            Event::Reset { stream, code, .. } => {
                streams.flush_held(s);
                if let Some(tx) = streams.to_bridge.remove(&stream) {
                    let _ = tx.send(StreamEvent::Reset(code));
                }
                streams.close_sending(stream);
            }
            Event::Closed(r) => state.reason = Some(r),
            Event::Rtt(rtt) => {
                if let Some(c) = &state.counters {
                    hub.stats.observe_rtt(c, rtt);
                }
                if let Some((id, _)) = &state.registered {
                    hub.note_rtt(id, rtt);
                }
            }
            Event::Refused { .. } => {
                // Past the gateway's own `max_streams`: proto refused it.
                hub.stats
                    .device_streams_refused
                    .fetch_add(1, Ordering::Relaxed);
            }
            Event::Credit { .. } | Event::GoAway { .. } | Event::Connected { .. } => {}
        }
    }
    any
}

/// Writes a session makes before it looks at its socket and commands again.
const TRANSMIT_BURST: usize = 4;

/// Whether the session lets the other ready tasks run before it sends
/// what its streams queued.
///
/// tokio runs a task that another wakes right after the waker's turn, so a
/// session woken by each of many WebSocket tasks in turn would send one
/// record per message, with a system call and an AEAD seal each. Waiting
/// one scheduler pass (`yield_now`: the worker wakes the session at its
/// next poll of the I/O driver, once its queue is empty or after at most
/// 61 other tasks, so the wait is bounded) gathers what those tasks send
/// into one turn: fewer, fuller records, and one write. When nothing else is ready the pass
/// costs an extra poll of the driver (a system call), so after
/// [`BATCH_MISSES`] passes in a row that gathered nothing the session
/// stops waiting, and tries again every [`BATCH_PROBE`]th turn.
#[derive(Default)]
struct Batching {
    /// Passes in a row that gathered nothing.
    misses: u8,
    /// Turns since the last pass, while not waiting.
    since_probe: u8,
}

/// Empty passes after which a session stops waiting for more sends.
const BATCH_MISSES: u8 = 4;
/// While not waiting, one turn in this many waits anyway, to notice load.
const BATCH_PROBE: u8 = 16;

impl Batching {
    /// Whether this turn waits for more sends.
    fn wait(&mut self) -> bool {
        if self.misses < BATCH_MISSES {
            return true;
        }
        self.since_probe += 1;
        if self.since_probe >= BATCH_PROBE {
            self.since_probe = 0;
            return true;
        }
        false
    }

    /// What a pass gathered: `n` more commands.
    fn gathered(&mut self, n: usize) {
        self.misses = if n > 0 {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }
}

/// How long the record buffers of a session that moves stream data stay
/// idle before they are parked.
///
/// Parking gives back 32 KiB of buffers and, under AES-256-GCM, the two
/// key objects (the AES key schedule and the GHASH table, about 600 bytes
/// each with AWS-LC). Making those again costs more than a small record they serve:
/// done at every wait, parking and the key schedules were about 2.6 % of
/// the gateway's CPU in the echo with a device per browser, where each
/// session waits between every message and its answer. A session that
/// moved stream data and saw a record within this time keeps them. One
/// that took them back for the link's own traffic only (a keepalive, the
/// handshake) parks them at its next wait: ping and pong cost two
/// wake-ups, not four, and a fleet whose keepalives come at once (devices
/// that connected together) never holds a buffer each.
const PARK_AFTER: Duration = Duration::from_millis(20);

/// The longest period between two parking checks of a busy session.
///
/// Each check is a wake-up of the session, so a session that stays busy
/// checks less and less often (20, 40, 80, then every 160 ms): 100 busy
/// sessions cost about 600 wake-ups a second, not 5,000. One that has gone
/// quiet parks at most twice this long after its last record.
const PARK_CHECK_MAX: Duration = Duration::from_millis(160);

/// When a session parks its idle record buffers (see [`PARK_AFTER`]), and
/// the count of sessions holding theirs.
///
/// One deadline, armed when the session first waits with idle buffers and
/// moved only when it comes: a busy session reads the clock once per
/// check, not once per turn, and its timer moves as seldom. The session is
/// counted in `gauge` while it holds its buffers, and no longer once this
/// is dropped, however its task ends. It adds 40 bytes to every session's
/// task, idle ones included.
struct Parking<'g> {
    /// When to look again whether the session has been idle.
    check_at: Option<tokio::time::Instant>,
    /// The period of the next check: `PARK_AFTER` doubled this many times
    /// (at most up to `PARK_CHECK_MAX`).
    widened: u8,
    /// Whether the session woke for work since `check_at` was armed.
    busy: bool,
    /// Stream payload moved ([`payload_moved`]) when `check_at` was armed:
    /// a period whose wake-ups moved none (keepalives) counts as idle.
    check_mark: u32,
    /// The session was idle for a whole period: park before the next wait.
    due: bool,
    /// Whether the session holds its buffers (is counted in `gauge`).
    held: bool,
    /// Stream payload bytes moved, both ways, when it took them (the low
    /// 32 bits: equal again only after exactly 4 GiB, which parks early).
    payload_mark: u32,
    /// `gateway_link_sessions_holding_buffers`.
    gauge: &'g AtomicU64,
}

impl<'g> Parking<'g> {
    /// For a session that has just made its buffers: counted in `gauge`.
    fn new(gauge: &'g AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self {
            check_at: None,
            widened: 0,
            busy: false,
            check_mark: 0,
            due: false,
            held: true,
            payload_mark: 0,
            gauge,
        }
    }

    /// Whether stream data moved since the session took its buffers
    /// (`payload`: [`payload_moved`] now): if not, it woke for the link's
    /// own traffic (a handshake, a keepalive) and parks at its next wait.
    fn streamed(&self, payload: u32) -> bool {
        payload != self.payload_mark
    }

    /// The session took its buffers back (`payload`: [`payload_moved`]
    /// now): counted again.
    fn taken(&mut self, payload: u32) {
        self.payload_mark = payload;
        if !self.held {
            self.held = true;
            self.gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The session parked its buffers (or its task ends): no longer
    /// counted, and no check pending.
    fn parked(&mut self) {
        if self.held {
            self.held = false;
            self.gauge.fetch_sub(1, Ordering::Relaxed);
        }
        self.check_at = None;
        self.widened = 0;
        self.busy = false;
        self.due = false;
    }

    /// The period of the next check.
    fn period(&self) -> Duration {
        (PARK_AFTER * (1u32 << self.widened)).min(PARK_CHECK_MAX)
    }

    /// The session is about to wait with idle, unparked buffers
    /// (`payload`: [`payload_moved`] now): arms the check if it is not
    /// armed.
    fn idle(&mut self, now: impl FnOnce() -> tokio::time::Instant, payload: u32) {
        if self.check_at.is_none() {
            self.check_at = Some(now() + self.period());
            self.busy = false;
            self.check_mark = payload;
        }
    }

    /// The session woke for work (a read, a write or its streams).
    fn busy(&mut self) {
        self.busy = true;
    }

    /// The session's timer fired at `now`; `idle`: its buffers hold
    /// nothing; `payload`: [`payload_moved`] now. Parking is due if the
    /// check has come and the session did no work since it was armed;
    /// otherwise the check is armed again, a longer period ahead. Wake-ups
    /// that moved no stream data are not work: with keepalives shorter
    /// than the widest period, every period would hold one, and a quiet
    /// session would keep its buffers for good.
    fn check(&mut self, now: tokio::time::Instant, idle: bool, payload: u32) {
        let Some(at) = self.check_at else { return };
        if now < at {
            return;
        }
        if (self.busy && payload != self.check_mark) || !idle {
            if self.period() < PARK_CHECK_MAX {
                self.widened += 1;
            }
            self.check_at = Some(now + self.period());
            self.busy = false;
            self.check_mark = payload;
        } else {
            self.check_at = None;
            self.widened = 0;
            self.due = true;
        }
    }

    /// Whether to park now (once per due check).
    fn take_due(&mut self) -> bool {
        std::mem::take(&mut self.due)
    }
}

/// Stream payload bytes a session moved both ways (the low 32 bits).
fn payload_moved(s: &GwSession) -> u32 {
    let st = s.stats();
    st.payload_sent.wrapping_add(st.payload_received) as u32
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        self.parked();
    }
}

/// What was ready when the session woke.
#[derive(Default)]
struct Woke {
    /// The socket is readable (false: it failed).
    readable: Option<bool>,
    /// The socket takes more of `unsent` (false: it failed).
    writable: Option<bool>,
    /// Commands from the session's streams and the hub.
    commands: Option<Option<VecDeque<Cmd>>>,
    /// The session's timer or the drain deadline.
    timer: bool,
}

impl Woke {
    fn any(&self) -> bool {
        self.readable.is_some() || self.writable.is_some() || self.commands.is_some() || self.timer
    }
}

// The buffers of sessions that are not using theirs.
//
// A session holds a receive and a transmit buffer of `max_record` bytes
// (16 KiB each by default) only while it is busy: from the first byte of a
// record until its next wait if no stream data moved since it took them
// (keepalives), and otherwise until it has been idle for `PARK_AFTER` or,
// after a long busy spell, up to twice `PARK_CHECK_MAX` (never while part
// of a record is in them or frames are staged to go out). Then it parks them in its worker thread's pool
// (`Session::park_buffers`), with its AES-GCM key objects and its stream
// table when no stream is open (32 slots of 72 bytes by default), so an
// idle device session, which sees a ping every 15 s, holds none of them
// from the pong to the next ping. The pools are per
// thread (no lock) and bounded; a task that moved to another thread takes
// from and gives to that thread's pools. Record buffers are not cleared
// between sessions (proto writes every byte before it reads it); stream
// slots are.

/// Buffers or tables one worker thread keeps for the next session.
const POOL_KEEP: usize = 64;

type Pool<T> = std::thread::LocalKey<std::cell::RefCell<Vec<Vec<T>>>>;

thread_local! {
    static RECORD_POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static TABLE_POOL: std::cell::RefCell<Vec<Vec<StreamSlot>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A vector of `len` items from `pool`, or a new one of `fill`s.
fn pool_take<T: Clone>(pool: &'static Pool<T>, len: usize, fill: T) -> Vec<T> {
    pool.with_borrow_mut(|pool| match pool.iter().rposition(|b| b.len() == len) {
        Some(i) => pool.swap_remove(i),
        None => vec![fill; len],
    })
}

fn pool_give<T>(pool: &'static Pool<T>, v: Vec<T>) {
    if v.is_empty() {
        return;
    }
    pool.with_borrow_mut(|pool| {
        if pool.len() < POOL_KEEP {
            pool.push(v);
        }
    });
}

/// Parks `s`'s record buffers, and its stream table if no stream is open;
/// `parking` stops counting it.
fn park(s: &mut GwSession, parking: &mut Parking<'_>) {
    if s.is_parked() || !s.buffers_idle() {
        return;
    }
    let Ok((rx, tx)) = s.park_buffers(Vec::new(), Vec::new()) else {
        return;
    };
    parking.parked();
    pool_give(&RECORD_POOL, rx);
    pool_give(&RECORD_POOL, tx);
    if !s.has_open_streams() {
        // All slots are free: proto finds slots by scanning, so an empty
        // table in the meantime is safe (nothing can open while parked).
        let mut table = std::mem::take(s.stream_table_mut());
        table.fill(StreamSlot::default());
        pool_give(&TABLE_POOL, table);
    }
}

/// Gives `s` its buffers back if it parked them: records of `record`
/// bytes and, if it gave up its table, one of `slots` free slots;
/// `parking` counts it again.
fn unpark(s: &mut GwSession, record: usize, slots: usize, parking: &mut Parking<'_>) {
    if !s.is_parked() {
        return;
    }
    if s.stream_table_mut().is_empty() {
        *s.stream_table_mut() = pool_take(&TABLE_POOL, slots, StreamSlot::default());
    }
    let rx = pool_take(&RECORD_POOL, record, 0);
    let tx = pool_take(&RECORD_POOL, record, 0);
    match s.unpark_buffers(rx, tx) {
        Ok(_) => parking.taken(payload_moved(s)),
        Err((rx, tx)) => {
            // Not reached: `record` is the session's own max_record.
            pool_give(&RECORD_POOL, rx);
            pool_give(&RECORD_POOL, tx);
        }
    }
}

/// Scratch space of the worker thread for reads and for records on their
/// way out: an idle session holds no I/O buffer of its own. Large enough
/// for any record (`max_record` is at most 65,535); records are batched
/// into it, so one write carries up to this much (seven 16 KiB records: a
/// 64 KiB message whole, where 64 KiB took three records and then one),
/// and one read takes as much.
const SCRATCH: usize = 128 << 10;

thread_local! {
    static IO_SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; SCRATCH]);
}

enum Transmit {
    /// Records filled the scratch buffer and went out whole: more may be
    /// ready.
    Full,
    /// Records went out whole; the session had no more.
    Sent,
    /// The session has nothing to send.
    Nothing,
    /// The socket took part or none of it; the rest is in `unsent`.
    Blocked,
    /// The socket failed.
    Failed,
}

/// Makes as many records as the scratch buffer holds (at the turn's time
/// `now`), handing queued sends to the session between them, and writes
/// what the socket takes of them with one system call.
fn transmit(
    s: &mut GwSession,
    streams: &mut Streams,
    sock: &TcpStream,
    unsent: &mut Vec<u8>,
    now: Instant,
) -> Transmit {
    IO_SCRATCH.with_borrow_mut(|buf| {
        let mut n = 0;
        let mut full = false;
        loop {
            flush_outgoing(s, streams);
            // Another record only where a whole one fits: a smaller buffer
            // would get control frames only.
            if n > 0 && buf.len() - n < s.max_transmit() {
                full = true;
                break;
            }
            match s.poll_transmit(now, &mut buf[n..]) {
                Some(k) if k > 0 => n += k,
                _ => break,
            }
        }
        if n == 0 {
            return Transmit::Nothing;
        }
        match sock.try_write(&buf[..n]) {
            Ok(k) if k == n && full => Transmit::Full,
            Ok(k) if k == n => Transmit::Sent,
            Ok(k) if k > 0 => {
                unsent.extend_from_slice(&buf[k..n]);
                Transmit::Blocked
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                unsent.extend_from_slice(&buf[..n]);
                Transmit::Blocked
            }
            _ => Transmit::Failed,
        }
    })
}

/// Reads what the socket has and feeds it to the session (received at the
/// turn's time `now`); true at end of stream or on an error.
fn receive(
    s: &mut GwSession,
    sock: &TcpStream,
    hub: &Hub,
    cmd_tx: &CmdSender,
    streams: &mut Streams,
    state: &mut State,
    now: Instant,
) -> bool {
    IO_SCRATCH.with_borrow_mut(|buf| {
        let n = match read_some(sock, buf) {
            Ok(0) => return true,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        };
        let mut off = 0;
        loop {
            let k = s.handle_input(now, &buf[off..n]);
            off += k;
            streams.read_left = n - off;
            let any = handle_events(s, hub, cmd_tx, streams, state);
            if (off >= n || k == 0) && !any {
                break;
            }
        }
        // Everything this read brought is out of the session: pass it on.
        streams.read_left = 0;
        streams.flush_held(s);
        false
    })
}

/// One read into `buf`. A read that did not fill `buf` emptied the
/// socket's receive queue (epoll is edge-triggered: new data raises a new
/// event), so the socket's readiness is cleared with it, as tokio's own
/// `poll_read` does. Otherwise the next wake-up would find the socket
/// still marked readable and spend a system call on `EAGAIN`: one per
/// device message in an echo.
fn read_some(sock: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    let r = sock.try_io(tokio::io::Interest::READABLE, || {
        let n = sock.try_read(buf)?;
        got = n;
        if n > 0 && n < buf.len() {
            // Drained: tell tokio to wait for the next edge.
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

/// Slots added at a time when the table is full.
const STREAM_TABLE_STEP: usize = 16;

/// Makes room for one more gateway-opened stream if the device allows it:
/// the table starts at the device-opened limit plus one step and grows up
/// to what the device announced (its `max_streams`) on top of that, so a
/// busy session is limited by the device alone. (A table that grew goes
/// back to the pool only at its first size: `pool_take` matches lengths.)
fn grow_stream_table(s: &mut GwSession, own_max_streams: u16) {
    let limit = usize::from(s.peer_params().max_streams) + usize::from(own_max_streams);
    let open = s.open_streams();
    let table = s.stream_table_mut();
    if open >= table.len() && table.len() < limit {
        let n = (table.len() + STREAM_TABLE_STEP).min(limit);
        table.resize(n, StreamSlot::default());
    }
}

fn apply(s: &mut GwSession, cmd: Cmd, cmd_tx: &CmdSender, streams: &mut Streams, own: Params) {
    match cmd {
        Cmd::Open {
            kind,
            service,
            reply,
        } => {
            grow_stream_table(s, own.max_streams);
            let r = match s.open(kind, service) {
                Ok(id) => {
                    let (tx, rx) = inbox();
                    streams.to_bridge.insert(id, tx);
                    let gate = Arc::new(SendGate::default());
                    streams.gates.insert(id, gate.clone());
                    let quiet = quiet_credit(s, own);
                    Ok(DeviceStream::new(id, cmd_tx.clone(), rx, gate).with_quiet_credit(quiet))
                }
                Err(StreamError::GoingAway) => Err(OpenError::GoingAway),
                Err(StreamError::Limit | StreamError::Blocked) => Err(OpenError::Busy),
                Err(_) => Err(OpenError::Offline),
            };
            let _ = reply.send(r);
        }
        Cmd::Send {
            stream,
            msg,
            data,
            end_msg,
            fin,
        } => {
            let mut o = Outgoing {
                msg,
                data,
                sent: 0,
                end_msg,
                fin,
            };
            if !streams.outgoing.contains_key(&stream) {
                // Nothing queued ahead of it: straight to the session, and
                // queued only for what its credit does not cover yet.
                match hand_over(s, stream, streams.gates.get(&stream), &mut o) {
                    HandOver::All => return,
                    HandOver::Part => {}
                    HandOver::Failed => {
                        if let Some(g) = streams.gates.remove(&stream) {
                            g.close();
                        }
                        return;
                    }
                }
            }
            streams.outgoing.entry(stream).or_default().push_back(o);
        }
        Cmd::Consume(stream, n) => s.consume(stream, n),
        Cmd::Reset(stream, code) => {
            let _ = s.reset(stream, code);
            streams.to_bridge.remove(&stream);
            streams.close_sending(stream);
        }
        Cmd::Dropped {
            stream,
            owed,
            reset,
        } => {
            s.consume(stream, owed);
            streams.to_bridge.remove(&stream);
            if reset {
                let _ = s.reset(stream, Code::CANCEL);
                streams.close_sending(stream);
            } else if let Some(g) = streams.gates.remove(&stream) {
                // Finished both ways: what its senders queued last (its
                // FIN) still goes out as credit allows.
                g.close();
            }
        }
        Cmd::Close(code) => s.close(code),
        Cmd::Shutdown => {}
    }
}

/// How much credit a stream's reader may hand back without waking the
/// session (see `DeviceStream::recv`): at most 4 KiB, and little enough
/// that it cannot hold back what the device needs to go on. proto sends a
/// window update once half a window is used, so what waits unseen must
/// stay below half of the stream window, and, over every stream the
/// session can have open, below half of the connection window. A session
/// that never woke would still see it at its next keepalive.
fn quiet_credit(s: &GwSession, own: Params) -> usize {
    let streams = usize::from(s.peer_params().max_streams) + usize::from(own.max_streams);
    let stream_share = own.stream_window as usize / 4;
    let conn_share = own.conn_window as usize / (4 * streams.max(1));
    stream_share.min(conn_share).min(4096)
}

/// Hands queued sends to the session within credit, oldest first per stream.
fn flush_outgoing(s: &mut GwSession, streams: &mut Streams) {
    let Streams {
        outgoing, gates, ..
    } = streams;
    if outgoing.is_empty() {
        return;
    }
    outgoing.retain(|stream, queue| {
        while let Some(o) = queue.front_mut() {
            match hand_over(s, *stream, gates.get(stream), o) {
                HandOver::All => {
                    queue.pop_front();
                }
                HandOver::Part => return true,
                HandOver::Failed => {
                    if let Some(g) = gates.remove(stream) {
                        g.close();
                    }
                    return false;
                }
            }
        }
        false
    });
}

/// How much of a send the session took.
enum HandOver {
    /// All of it (with its end of message and FIN).
    All,
    /// Some or none: the stream is out of credit or the staging buffer full.
    Part,
    /// The stream takes nothing more.
    Failed,
}

/// Hands what is left of `o` to the session, telling the stream's gate.
fn hand_over(
    s: &mut GwSession,
    stream: StreamId,
    gate: Option<&Arc<SendGate>>,
    o: &mut Outgoing,
) -> HandOver {
    match s.send(stream, o.msg, &o.data[o.sent..], o.end_msg, o.fin) {
        Ok(n) => {
            o.sent += n;
            if let Some(g) = gate {
                g.taken(n);
            }
            if o.sent < o.data.len() {
                HandOver::Part
            } else {
                HandOver::All
            }
        }
        Err(StreamError::Blocked) => HandOver::Part,
        Err(_) => HandOver::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::{SEND_AHEAD, StreamClosed};
    use super::*;
    use crate::link::hub::{LinkSettings, Registry};

    /// What an idle device session costs is mostly its task: the future
    /// (the session state machine inline, 656 bytes with its handshake
    /// state boxed, the timer, the parking check and the poll of its
    /// wake-ups; 1,480 bytes in all before the arguments and the start's
    /// settings and ephemeral key stopped being kept in it, 1,312 in a
    /// debug build since, 1,360 with the session's span, which was in the
    /// task's `Instrumented` wrapper before: the task is 8 bytes larger;
    /// 1,368 with the flag that saves polling an armed timer every turn)
    /// plus the command inbox. Record
    /// buffers are pooled, the stream table and the stream state exist
    /// only while needed; this keeps a large buffer (or the handshake)
    /// from moving into the future unnoticed. (`--nocapture` prints the
    /// sizes.)
    #[tokio::test]
    async fn an_idle_session_task_stays_small() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let settings = LinkSettings::default();
        let hub = Hub::new(SecretKey::from_bytes([7; 32]), Registry::new([]), settings);
        let permit = hub.handshakes.acquire(addr.ip()).unwrap();
        let fut = run_session(c, addr, hub, Some(permit), tracing::Span::none());
        let (task, session) = (size_of_val(&fut), size_of::<GwSession>());
        eprintln!("session future {task} bytes, session {session} bytes");
        assert!(task <= 1_368, "the session future grew to {task} bytes");
        assert!(session <= 704, "the session grew to {session} bytes");
    }

    /// A stream and the inbox its session would read, with no session.
    fn lone_stream() -> (DeviceStream, Arc<SendGate>, super::super::inbox::Inbox<Cmd>) {
        let (cmd_tx, cmd_rx) = inbox();
        let (_ev_tx, ev_rx) = inbox();
        let gate = Arc::new(SendGate::default());
        let id = StreamId::new(2).unwrap();
        let stream = DeviceStream::new(id, CmdSender(cmd_tx), ev_rx, gate.clone());
        (stream, gate, cmd_rx)
    }

    #[tokio::test]
    async fn a_small_send_needs_no_answer_from_the_session() {
        let (stream, _gate, mut cmds) = lone_stream();
        // No session task runs: a send that waited for one would hang.
        for i in 0..4u8 {
            stream
                .send(MsgKind::Binary, vec![i; 64], true, false)
                .await
                .unwrap();
        }
        let queued = cmds.recv_all().await.unwrap();
        let sizes: Vec<_> = queued
            .iter()
            .map(|c| match c {
                Cmd::Send { data, .. } => data.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, vec![64; 4], "queued in order");
    }

    #[tokio::test]
    async fn a_send_past_the_allowance_waits_until_the_session_takes_it() {
        use std::task::{Context, Poll, Waker};
        let (stream, gate, _cmds) = lone_stream();
        let mut cx = Context::from_waker(Waker::noop());
        let big = SEND_AHEAD + 1000;
        let mut send = std::pin::pin!(stream.send(MsgKind::Binary, vec![0; big], true, false));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        gate.taken(999);
        assert!(
            send.as_mut().poll(&mut cx).is_pending(),
            "still 1 byte over"
        );
        gate.taken(1);
        assert_eq!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
    }

    #[tokio::test]
    async fn a_closed_stream_fails_a_waiting_send_and_every_later_one() {
        use std::task::{Context, Poll, Waker};
        let (stream, gate, _cmds) = lone_stream();
        let mut cx = Context::from_waker(Waker::noop());
        let mut send =
            std::pin::pin!(stream.send(MsgKind::Binary, vec![0; 2 * SEND_AHEAD], true, false));
        assert!(send.as_mut().poll(&mut cx).is_pending());
        gate.close();
        assert_eq!(send.as_mut().poll(&mut cx), Poll::Ready(Err(StreamClosed)));
        let later = stream.send(MsgKind::Binary, vec![1], true, false).await;
        assert_eq!(later, Err(StreamClosed));
    }

    #[tokio::test]
    async fn a_send_to_an_ended_session_fails() {
        let (stream, _gate, cmds) = lone_stream();
        drop(cmds);
        let r = stream.send(MsgKind::Binary, vec![1], true, false).await;
        assert_eq!(r, Err(StreamClosed));
    }

    /// A session waits for more sends while waiting gathers some; after
    /// four passes in a row that gathered nothing it waits only one turn
    /// in sixteen, until a pass gathers something again.
    #[test]
    fn batching_stops_waiting_when_nothing_comes_and_probes() {
        let mut b = Batching::default();
        for _ in 0..10 {
            assert!(b.wait());
            b.gathered(3);
        }
        for _ in 0..BATCH_MISSES {
            assert!(b.wait());
            b.gathered(0);
        }
        let waits: Vec<bool> = (0..2 * BATCH_PROBE).map(|_| b.wait()).collect();
        assert_eq!(waits.iter().filter(|w| **w).count(), 2, "{waits:?}");
        assert!(waits[usize::from(BATCH_PROBE) - 1]);
        // A probe that finds load: back to waiting on every turn.
        b.gathered(5);
        assert!((0..20).all(|_| b.wait()));
    }

    /// A session that keeps working keeps its buffers: the check re-arms
    /// while it wakes for work, each time a longer period ahead (up to
    /// `PARK_CHECK_MAX`), and parking is due only after a whole period
    /// without work. The clock is read once per check, not per turn.
    #[test]
    fn buffers_park_only_after_a_whole_idle_period() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let gauge = AtomicU64::new(0);
        let mut p = Parking::new(&gauge);
        let mut clock_reads = 0;
        let mut checks = Vec::new();
        // A message every millisecond for a second, waiting idle between;
        // the timer fires at each check.
        for n in 0..1000u64 {
            p.idle(
                || {
                    clock_reads += 1;
                    ms(n)
                },
                n as u32,
            );
            if p.check_at.is_some_and(|at| at <= ms(n)) {
                checks.push(n);
            }
            p.check(ms(n), true, n as u32);
            assert!(!p.take_due(), "parked while busy at {n} ms");
            p.busy();
        }
        assert_eq!(clock_reads, 1, "the clock is read when first armed");
        assert_eq!(checks, [20, 60, 140, 300, 460, 620, 780, 940]);
        // Then silence: the next check re-arms (there was work since it was
        // armed), the one after finds a whole idle period.
        let armed = p.check_at.unwrap();
        assert_eq!(armed, ms(1100));
        p.check(armed, true, 1000);
        assert!(!p.take_due());
        let again = p.check_at.unwrap();
        assert_eq!(again, armed + PARK_CHECK_MAX);
        p.check(again - Duration::from_millis(1), true, 1000);
        assert!(!p.take_due(), "not before the check is due");
        p.check(again, true, 1000);
        assert!(p.take_due());
        assert!(!p.take_due(), "due once");
        assert_eq!(p.check_at, None, "no timer for a parked session");
        // The next burst starts from the short period again.
        p.idle(|| again, 1000);
        assert_eq!(p.check_at, Some(again + PARK_AFTER));
    }

    /// Wake-ups that move no stream data (keepalives) do not hold off
    /// parking, even when one falls in every period: a session whose
    /// checks had widened to 160 ms, with a keepalive every 100 ms,
    /// parks at its next check.
    #[test]
    fn keepalives_do_not_keep_a_session_busy() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let gauge = AtomicU64::new(0);
        let mut p = Parking::new(&gauge);
        // Busy with stream data until the checks are 160 ms apart.
        for n in 0..300u64 {
            p.idle(|| ms(n), n as u32);
            p.check(ms(n), true, n as u32);
            p.busy();
        }
        assert_eq!(p.period(), PARK_CHECK_MAX);
        // Then only keepalives: wake-ups, no stream data.
        let mut parked_at = None;
        for n in 300..1000u64 {
            if n % 100 == 0 {
                p.busy();
            }
            p.check(ms(n), true, 299);
            if p.take_due() {
                parked_at = Some(n);
                break;
            }
        }
        let at = parked_at.expect("never parked between keepalives");
        assert!(at <= 300 + 2 * 160, "parked at {at} ms");
    }

    /// A check that finds part of a record in the buffers does not make
    /// parking due: it waits another, longer period.
    #[test]
    fn buffers_in_use_are_not_parked() {
        let t0 = tokio::time::Instant::now();
        let gauge = AtomicU64::new(0);
        let mut p = Parking::new(&gauge);
        p.idle(|| t0, 0);
        let at = p.check_at.unwrap();
        assert_eq!(at, t0 + PARK_AFTER);
        p.check(at, false, 0);
        assert!(!p.take_due());
        let next = at + 2 * PARK_AFTER;
        assert_eq!(p.check_at, Some(next));
        p.check(next, true, 0);
        assert!(p.take_due());
    }

    /// The gauge counts a session while it holds its buffers: once however
    /// often it is told, and not after its task ends (a panic included).
    /// Parking clears a pending check: a parked session has no timer. A
    /// session that took its buffers back parks at its next wait until
    /// stream data moves.
    #[test]
    fn the_gauge_counts_sessions_holding_buffers() {
        let gauge = AtomicU64::new(0);
        let t0 = tokio::time::Instant::now();
        {
            let mut p = Parking::new(&gauge);
            assert_eq!(gauge.load(Ordering::Relaxed), 1);
            assert!(!p.streamed(0), "a new session has moved no data");
            p.idle(|| t0, 0);
            p.busy();
            p.parked();
            p.parked();
            assert_eq!(gauge.load(Ordering::Relaxed), 0);
            assert_eq!(p.check_at, None);
            assert!(!p.busy);
            p.taken(700);
            p.taken(700);
            assert_eq!(gauge.load(Ordering::Relaxed), 1);
            assert!(!p.streamed(700), "a keepalive moves no stream data");
            assert!(p.streamed(764));
            p.idle(|| t0, 764);
            assert_eq!(p.check_at, Some(t0 + PARK_AFTER), "the short period again");
        }
        assert_eq!(gauge.load(Ordering::Relaxed), 0, "dropped while holding");
        let held = std::panic::catch_unwind(|| {
            let _p = Parking::new(&gauge);
            panic!("a session task's bug");
        });
        assert!(held.is_err());
        assert_eq!(gauge.load(Ordering::Relaxed), 0, "unwound while holding");
        let mut parked = Parking::new(&gauge);
        parked.parked();
        drop(parked);
        assert_eq!(gauge.load(Ordering::Relaxed), 0, "dropped while parked");
    }

    #[test]
    fn the_pools_hand_out_the_asked_size() {
        let a = pool_take(&RECORD_POOL, 100, 0);
        assert_eq!(a.len(), 100);
        pool_give(&RECORD_POOL, a);
        pool_give(&RECORD_POOL, vec![1u8; 50]);
        assert_eq!(pool_take(&RECORD_POOL, 100, 0).len(), 100);
        assert_eq!(pool_take(&RECORD_POOL, 50, 0), vec![1u8; 50]);
        pool_give(&RECORD_POOL, Vec::new());
        assert_eq!(pool_take(&RECORD_POOL, 0, 0).len(), 0);
        for _ in 0..POOL_KEEP + 10 {
            pool_give(&TABLE_POOL, vec![StreamSlot::default(); 3]);
        }
        assert_eq!(TABLE_POOL.with_borrow(Vec::len), POOL_KEEP, "bounded");
    }
}
