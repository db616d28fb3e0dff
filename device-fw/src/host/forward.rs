//! `SimApp`: the sample controller plus raw services bridged to local TCP
//! servers (`device-sim --forward SERVICE=HOST:PORT`), the way an existing
//! server on a device (a libwebsockets server adopting the stream as a
//! socket, Modbus/TCP, a shell) sits behind the link.
//!
//! Each raw stream gets a tokio task with one TCP connection. Memory stays
//! bounded both ways: link → TCP, credit is returned only once the bytes are
//! written to the socket, so at most the stream window is in flight; TCP →
//! link, the task hands over chunks through a channel of four and waits while
//! the link has no credit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proto::{
    Code, Hello, Instant, MsgKind, Service, ServiceKind, ServiceList, StrList, StreamId, StreamKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use super::SimBoard;
use crate::app::Controller;
use crate::link::{App, LinkEvent, Streams};

/// A raw service forwarded to a TCP address.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Service name announced in HELLO.
    pub service: String,
    /// Where its streams go.
    pub target: SocketAddr,
}

enum ToTcp {
    Data(Vec<u8>),
    Fin,
}

enum FromTcp {
    Data(Vec<u8>),
    Written(usize),
    Eof,
    Failed(String),
}

struct Pipe {
    to_tcp: mpsc::UnboundedSender<ToTcp>,
    from_tcp: mpsc::Receiver<FromTcp>,
    pending: Option<(Vec<u8>, usize)>,
    eof: bool,
    fin_sent: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The device application of `device-sim`.
pub struct SimApp {
    controller: Controller<SimBoard>,
    forwards: Vec<Forward>,
    services: Vec<Service<'static>>,
    pipes: HashMap<StreamId, Pipe>,
    wake: Arc<Notify>,
    online: Option<Arc<AtomicUsize>>,
    up: bool,
}

static WEB_PROTOCOLS: [&str; 1] = [crate::app::SUBPROTOCOL];

impl SimApp {
    /// A controller named `device_id` with the given raw forwards. `online`
    /// counts devices whose link is up (shared across a fleet).
    pub fn new(
        board: SimBoard,
        device_id: &str,
        firmware: &str,
        forwards: Vec<Forward>,
        online: Option<Arc<AtomicUsize>>,
    ) -> Self {
        let mut services = vec![Service {
            name: "web",
            kind: ServiceKind::Http,
            subprotocols: StrList::Slice(&WEB_PROTOCOLS),
        }];
        for f in &forwards {
            // Leaked once per process start: service names live as long as the program.
            let name: &'static str = Box::leak(f.service.clone().into_boxed_str());
            services.push(Service {
                name,
                kind: ServiceKind::Raw,
                subprotocols: StrList::Slice(&[]),
            });
        }
        Self {
            controller: Controller::new(board, device_id, firmware),
            forwards,
            services,
            pipes: HashMap::new(),
            wake: Arc::new(Notify::new()),
            online,
            up: false,
        }
    }

    /// The controller inside.
    pub fn controller(&mut self) -> &mut Controller<SimBoard> {
        &mut self.controller
    }

    fn set_up(&mut self, up: bool) {
        if up != self.up {
            self.up = up;
            if let Some(c) = &self.online {
                if up {
                    c.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn open_pipe(&mut self, stream: StreamId, target: SocketAddr) {
        let (to_tcp, mut rx) = mpsc::unbounded_channel::<ToTcp>();
        let (tx, from_tcp) = mpsc::channel::<FromTcp>(4);
        let wake = self.wake.clone();
        let task = tokio::spawn(async move {
            let note = |r: Result<(), mpsc::error::SendError<FromTcp>>| {
                wake.notify_one();
                r.is_ok()
            };
            let mut tcp = match TcpStream::connect(target).await {
                Ok(s) => s,
                Err(e) => {
                    note(tx.send(FromTcp::Failed(format!("{target}: {e}"))).await);
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.split();
            let mut buf = vec![0u8; 4096];
            let (mut read_done, mut write_done) = (false, false);
            while !(read_done && write_done) {
                tokio::select! {
                    m = rx.recv(), if !write_done => match m {
                        Some(ToTcp::Data(d)) => {
                            if let Err(e) = w.write_all(&d).await {
                                note(tx.send(FromTcp::Failed(format!("write to {target}: {e}"))).await);
                                return;
                            }
                            if !note(tx.send(FromTcp::Written(d.len())).await) { return; }
                        }
                        Some(ToTcp::Fin) => { let _ = w.shutdown().await; write_done = true; }
                        None => return,
                    },
                    n = r.read(&mut buf), if !read_done => match n {
                        Ok(0) => { read_done = true; if !note(tx.send(FromTcp::Eof).await) { return; } }
                        Ok(n) => { if !note(tx.send(FromTcp::Data(buf[..n].to_vec())).await) { return; } }
                        Err(e) => { note(tx.send(FromTcp::Failed(format!("read from {target}: {e}"))).await); return; }
                    },
                }
            }
        });
        self.pipes.insert(
            stream,
            Pipe {
                to_tcp,
                from_tcp,
                pending: None,
                eof: false,
                fin_sent: false,
                task,
            },
        );
    }

    /// Moves what the TCP side produced onto the link. True when the pipe
    /// is finished: both directions ended (the task exits and its channel
    /// closes) or it failed.
    fn pump(link: &mut dyn Streams, stream: StreamId, pipe: &mut Pipe) -> bool {
        loop {
            if let Some((data, pos)) = pipe.pending.as_mut() {
                match link.send(stream, MsgKind::Bytes, &data[*pos..], false, false) {
                    Ok(n) => *pos += n,
                    // The staging buffer is full until the next record goes out.
                    Err(proto::StreamError::Blocked) => return false,
                    Err(_) => return true,
                }
                if *pos < data.len() {
                    log::trace!(
                        "raw stream {stream}: {} bytes wait for credit ({} available)",
                        data.len() - *pos,
                        link.capacity(stream)
                    );
                    return false;
                }
                pipe.pending = None;
            }
            if pipe.eof && !pipe.fin_sent {
                match link.send(stream, MsgKind::Bytes, &[], false, true) {
                    Ok(_) => pipe.fin_sent = true,
                    Err(proto::StreamError::Blocked) => return false,
                    Err(_) => return true,
                }
            }
            match pipe.from_tcp.try_recv() {
                Ok(FromTcp::Data(d)) => pipe.pending = Some((d, 0)),
                Ok(FromTcp::Written(n)) => {
                    log::trace!("raw stream {stream}: {n} bytes written upstream");
                    link.consume(stream, n);
                }
                Ok(FromTcp::Eof) => pipe.eof = true,
                Ok(FromTcp::Failed(why)) => {
                    log::warn!("raw stream {stream}: {why}");
                    link.reset(stream, Code::UPSTREAM);
                    return true;
                }
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if !pipe.fin_sent {
                        pipe.eof = true;
                        continue;
                    }
                    return true;
                }
            }
        }
    }
}

impl App for SimApp {
    fn hello(&self) -> Hello<'_> {
        Hello {
            services: ServiceList::Slice(&self.services),
            ..self.controller.hello()
        }
    }

    fn on_event(&mut self, link: &mut dyn Streams, event: LinkEvent<'_>, now: Instant) {
        match event {
            LinkEvent::Up => self.set_up(true),
            LinkEvent::Down => {
                self.set_up(false);
                self.pipes.clear();
            }
            LinkEvent::Opened {
                stream,
                kind: StreamKind::Raw,
                service,
            } if service >= 1 => {
                match self.forwards.get(usize::from(service) - 1) {
                    Some(f) => {
                        let target = f.target;
                        self.open_pipe(stream, target);
                    }
                    None => link.reset(stream, Code::UNKNOWN_SERVICE),
                }
                return;
            }
            LinkEvent::Data {
                stream, data, fin, ..
            } if self.pipes.contains_key(&stream) => {
                let pipe = self
                    .pipes
                    .get_mut(&stream)
                    .unwrap_or_else(|| unreachable!());
                if !data.is_empty() {
                    let _ = pipe.to_tcp.send(ToTcp::Data(data.to_vec()));
                }
                if fin {
                    let _ = pipe.to_tcp.send(ToTcp::Fin);
                }
                return;
            }
            LinkEvent::Reset { stream, .. } if self.pipes.remove(&stream).is_some() => return,
            _ => {}
        }
        self.controller.on_event(link, event, now);
    }

    fn poll(&mut self, link: &mut dyn Streams, now: Instant) {
        self.pipes
            .retain(|stream, pipe| !Self::pump(link, *stream, pipe));
        self.controller.poll(link, now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.controller.next_deadline()
    }

    async fn wake(&mut self) {
        if self.pipes.is_empty() {
            core::future::pending::<()>().await;
        }
        self.wake.notified().await;
    }
}
