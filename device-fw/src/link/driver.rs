//! Driving one session over one connection, and the reconnect loop.

use core::time::Duration;

use embassy_futures::select::{Either4, select4};
use embedded_io_async::{Read, Write};
use proto::wire::Status;
use proto::{Buffers, CloseReason, Event, Instant, SecretKey, Session, StreamSlot};

use super::{App, Identity, LinkConfig, LinkEvent, LinkMemory, Platform, Transport};

/// How one connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Dialing failed.
    ConnectFailed(super::ConnectError),
    /// The session could not be set up (configuration or buffer sizes).
    Setup(proto::SetupError),
    /// The session ended.
    Closed {
        /// Why.
        reason: CloseReason,
        /// How long it had been established (zero if never).
        uptime: Duration,
    },
}

/// Keeps the device linked forever: connect, run, back off, repeat.
pub async fn run<P, A, const RECORD: usize, const STREAMS: usize, const IO: usize>(
    platform: &mut P,
    app: &mut A,
    identity: &Identity,
    config: &LinkConfig,
    mem: &mut LinkMemory<RECORD, STREAMS, IO>,
) -> !
where
    P: Platform,
    A: App,
{
    let mut backoff = config.backoff;
    let mut floor = 0u64;
    loop {
        let outcome = run_once(platform, app, identity, config, mem, &mut floor).await;
        let mut random = [0u8; 4];
        platform.fill_random(&mut random);
        let random = u32::from_le_bytes(random);
        let delay = match outcome {
            Outcome::Closed { uptime, reason } => {
                log::info!("link down after {} ms: {}", uptime.as_millis(), reason);
                backoff.session_ended(uptime, random)
            }
            Outcome::ConnectFailed(e) => {
                log::warn!("gateway unreachable: {e}");
                backoff.next_delay(random)
            }
            Outcome::Setup(e) => {
                log::error!("link setup failed: {e}");
                backoff.next_delay(random)
            }
        };
        log::info!(
            "reconnecting in {} ms (attempt {})",
            delay.as_millis(),
            backoff.failures()
        );
        let at = P::now().saturating_add(delay);
        P::sleep_until(at).await;
    }
}

/// Dials once and drives the session until it ends. `floor` carries the
/// lowest acceptable handshake timestamp between calls.
pub async fn run_once<P, A, const RECORD: usize, const STREAMS: usize, const IO: usize>(
    platform: &mut P,
    app: &mut A,
    identity: &Identity,
    config: &LinkConfig,
    mem: &mut LinkMemory<RECORD, STREAMS, IO>,
    floor: &mut u64,
) -> Outcome
where
    P: Platform,
    A: App,
{
    let mut eph = [0u8; 32];
    platform.fill_random(&mut eph);
    let timestamp = platform.timestamp().max(*floor);
    *floor = timestamp + 1;
    let now = P::now();
    let LinkMemory {
        rx,
        tx,
        out,
        input,
        event,
        streams,
    } = mem;
    let buffers = Buffers {
        rx: &mut rx[..],
        tx: &mut tx[..],
        streams: &mut streams[..],
    };
    let session = Session::device(
        config.session,
        identity.key.clone(),
        identity.gateway,
        SecretKey::from_bytes(eph),
        timestamp,
        &app.hello(),
        buffers,
        now,
    );
    let mut session = match session {
        Ok(s) => s,
        Err(e) => return Outcome::Setup(e),
    };
    let mut conn = match platform.connect().await {
        Ok(c) => c,
        Err(e) => return Outcome::ConnectFailed(e),
    };
    let (mut rd, mut wr) = conn.split();
    let mut drv = Driver {
        out: &mut out[..],
        out_len: 0,
        out_pos: 0,
        event: &mut event[..],
        up_since: None,
    };
    let reason = drv
        .drive::<P, A, _, _>(app, &mut session, &mut rd, &mut wr, &mut input[..])
        .await;
    if let CloseReason::Rejected {
        status: Status::StaleTimestamp,
        info,
    } = reason
    {
        // The gateway saw a later timestamp from this key: resume above it.
        *floor = (*floor).max(info.saturating_add(1));
    }
    let uptime = drv
        .up_since
        .map_or(Duration::ZERO, |t| P::now().saturating_since(t));
    Outcome::Closed { reason, uptime }
}

struct Driver<'m> {
    out: &'m mut [u8],
    out_len: usize,
    out_pos: usize,
    event: &'m mut [u8],
    up_since: Option<Instant>,
}

type Sess<'m> = Session<&'m mut [u8], &'m mut [StreamSlot]>;

impl Driver<'_> {
    async fn drive<P: Platform, A: App, R: Read, W: Write>(
        &mut self,
        app: &mut A,
        session: &mut Sess<'_>,
        rd: &mut R,
        wr: &mut W,
        input: &mut [u8],
    ) -> CloseReason {
        let mut closed = None;
        loop {
            let now = P::now();
            if session.is_established() {
                app.poll(session, now);
            }
            if self.out_pos == self.out_len {
                self.out_pos = 0;
                self.out_len = 0;
                // As many whole records as `out` holds, for one write: one
                // with a board's buffers, several on a host, where the
                // application stages more between them.
                loop {
                    match session.poll_transmit(now, &mut self.out[self.out_len..]) {
                        Some(k) if k > 0 => self.out_len += k,
                        _ => break,
                    }
                    if self.out.len() - self.out_len < session.max_transmit() {
                        break;
                    }
                    if session.is_established() {
                        app.poll(session, now);
                    }
                }
            }
            if let Some(reason) = closed {
                if self.out_pos == self.out_len {
                    let _ = wr.flush().await;
                    return reason;
                }
            } else if session.is_closed() {
                closed = Some(CloseReason::TransportClosed);
            }
            let deadline = match (session.poll_timeout(), app.next_deadline()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => now.saturating_add(Duration::from_secs(3600)),
            };
            let pending = &self.out[self.out_pos..self.out_len];
            let write = async {
                if pending.is_empty() {
                    core::future::pending::<Result<usize, W::Error>>().await
                } else {
                    wr.write(pending).await
                }
            };
            match select4(rd.read(input), write, P::sleep_until(deadline), app.wake()).await {
                Either4::First(Ok(0)) | Either4::First(Err(_)) => {
                    session.handle_eof();
                }
                Either4::First(Ok(n)) => {
                    let now = P::now();
                    let mut off = 0;
                    loop {
                        let k = session.handle_input(now, &input[off..n]);
                        off += k;
                        let handled = self.dispatch(app, session, now, &mut closed);
                        if (off >= n || k == 0) && !handled {
                            break;
                        }
                    }
                }
                Either4::Second(Ok(n)) => self.out_pos += n,
                Either4::Second(Err(_)) => session.handle_eof(),
                Either4::Third(()) => session.handle_timeout(P::now()),
                Either4::Fourth(()) => {}
            }
            let now = P::now();
            self.dispatch(app, session, now, &mut closed);
            if closed.is_some() && session.is_closed() {
                // Nothing more will be read; flush what is left and finish.
                while self.out_pos < self.out_len {
                    match wr.write(&self.out[self.out_pos..self.out_len]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => self.out_pos += n,
                    }
                }
                while let Some(n) = session.poll_transmit(now, self.out) {
                    if wr.write_all(&self.out[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = wr.flush().await;
                if self.up_since.is_some() {
                    app.on_event(session, LinkEvent::Down, now);
                }
                return closed.unwrap_or(CloseReason::TransportClosed);
            }
        }
    }

    /// Hands every pending event to the application; true if there was any.
    fn dispatch<A: App>(
        &mut self,
        app: &mut A,
        session: &mut Sess<'_>,
        now: Instant,
        closed: &mut Option<CloseReason>,
    ) -> bool {
        let mut any = false;
        loop {
            // Copy the event out of the session so the application can
            // answer through the same session while handling it.
            let ev = match session.poll_event() {
                None => return any,
                Some(ev) => Owned::from(ev, self.event),
            };
            any = true;
            let ev = match ev {
                Owned::Up => {
                    self.up_since = Some(now);
                    log::info!("link up");
                    LinkEvent::Up
                }
                Owned::Opened {
                    stream,
                    kind,
                    service,
                } => LinkEvent::Opened {
                    stream,
                    kind,
                    service,
                },
                Owned::Data {
                    stream,
                    msg,
                    end_msg,
                    fin,
                    len,
                } => LinkEvent::Data {
                    stream,
                    msg,
                    end_msg,
                    fin,
                    data: &self.event[..len],
                },
                Owned::Reset { stream, code } => LinkEvent::Reset { stream, code },
                Owned::Credit { stream } => LinkEvent::Credit { stream },
                Owned::Closed(reason) => {
                    *closed = Some(reason);
                    continue;
                }
                Owned::Ignore => continue,
            };
            app.on_event(session, ev, now);
        }
    }
}

/// An event with its payload moved to the driver's own buffer.
enum Owned {
    Up,
    Opened {
        stream: proto::StreamId,
        kind: proto::StreamKind,
        service: u8,
    },
    Data {
        stream: proto::StreamId,
        msg: proto::MsgKind,
        end_msg: bool,
        fin: bool,
        len: usize,
    },
    Reset {
        stream: proto::StreamId,
        code: proto::Code,
    },
    Credit {
        stream: proto::StreamId,
    },
    Closed(CloseReason),
    Ignore,
}

impl Owned {
    fn from(ev: Event<'_>, buf: &mut [u8]) -> Self {
        match ev {
            Event::Connected { .. } => Self::Up,
            Event::Opened {
                stream,
                kind,
                service,
            } => Self::Opened {
                stream,
                kind,
                service,
            },
            Event::Data {
                stream,
                msg,
                end_msg,
                fin,
                data,
            } => {
                // A record's payload always fits: the buffer is one record.
                let len = data.len().min(buf.len());
                buf[..len].copy_from_slice(&data[..len]);
                Self::Data {
                    stream,
                    msg,
                    end_msg,
                    fin,
                    len,
                }
            }
            Event::Reset { stream, code, .. } => Self::Reset { stream, code },
            Event::Credit { stream } => Self::Credit { stream },
            Event::Closed(reason) => Self::Closed(reason),
            // Refused, Rtt, GoAway need nothing from the application;
            // Authenticate and Hello are the gateway's.
            _ => Self::Ignore,
        }
    }
}
