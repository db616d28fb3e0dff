//! A minimal gateway-role acceptor over TCP for end-to-end tests of devices:
//! it authenticates devices against a key set, counts them online after
//! their HELLO, and lets a test open raw streams to them. The production
//! device link lives in the gateway; this one has no HTTP in front of it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::{
    Buffers, Code, Config, Event, Instant, MsgKind, PublicKey, SecretKey, Session, StreamId,
    StreamKind, StreamSlot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

fn now() -> Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Instant::from_millis(
        BASE.get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64,
    )
}

/// Data or the end of a raw stream, as the test sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes from the device.
    Data(Vec<u8>),
    /// The device finished its side.
    Fin,
    /// The stream was reset.
    Reset(Code),
}

enum Cmd {
    OpenRaw(
        u8,
        oneshot::Sender<Option<(StreamId, mpsc::UnboundedReceiver<Chunk>)>>,
    ),
    Send(StreamId, Vec<u8>, bool),
}

#[derive(Default)]
struct State {
    online: HashMap<String, mpsc::UnboundedSender<Cmd>>,
    sessions: usize,
    refused: usize,
}

/// The acceptor and what it knows.
#[derive(Clone)]
pub struct Acceptor {
    /// Where devices dial.
    pub addr: SocketAddr,
    /// The gateway's public key.
    pub public: PublicKey,
    state: Arc<Mutex<State>>,
}

impl Acceptor {
    /// Listens on 127.0.0.1:0 with gateway key `key`, accepting `devices`.
    pub async fn start(key: [u8; 32], devices: HashSet<PublicKey>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let devices = Arc::new(devices);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (st, devices) = (st.clone(), devices.clone());
                tokio::spawn(serve(sock, key, devices, st));
            }
        });
        Self {
            addr,
            public: SecretKey::from_bytes(key).public_key(),
            state,
        }
    }

    /// Devices online now (HELLO received, session alive).
    pub fn online(&self) -> usize {
        self.state.lock().unwrap().online.len()
    }

    /// Sessions that completed a handshake, all time.
    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap().sessions
    }

    /// Handshakes refused (unknown keys).
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Waits until `n` devices are online, or `limit` passes.
    pub async fn wait_online(&self, n: usize, limit: Duration) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed() < limit {
            if self.online() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Opens a raw stream to `service` of `device`.
    pub async fn open_raw(&self, device: &str, service: u8) -> Option<RawStream> {
        let tx = self.state.lock().unwrap().online.get(device)?.clone();
        let (rtx, rrx) = oneshot::channel();
        tx.send(Cmd::OpenRaw(service, rtx)).ok()?;
        let (id, rx) = rrx.await.ok()??;
        Some(RawStream { id, tx, rx })
    }
}

/// A raw stream opened by the test.
pub struct RawStream {
    id: StreamId,
    tx: mpsc::UnboundedSender<Cmd>,
    /// What the device sends.
    pub rx: mpsc::UnboundedReceiver<Chunk>,
}

impl RawStream {
    /// Sends bytes (and FIN).
    pub fn send(&self, data: &[u8], fin: bool) {
        let _ = self.tx.send(Cmd::Send(self.id, data.to_vec(), fin));
    }
}

async fn serve(
    mut sock: TcpStream,
    key: [u8; 32],
    devices: Arc<HashSet<PublicKey>>,
    state: Arc<Mutex<State>>,
) {
    let _ = sock.set_nodelay(true);
    let cfg = Config::GATEWAY;
    let mut eph = [0u8; 32];
    getrandom::fill(&mut eph).expect("os rng");
    let buffers = Buffers {
        rx: vec![0u8; usize::from(cfg.params.max_record)],
        tx: vec![0u8; usize::from(cfg.params.max_record)],
        streams: vec![StreamSlot::default(); 16],
    };
    let Ok(mut s) = Session::gateway(
        cfg,
        SecretKey::from_bytes(key),
        SecretKey::from_bytes(eph),
        buffers,
        now(),
    ) else {
        return;
    };
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    let mut device_id: Option<String> = None;
    let mut streams: HashMap<StreamId, mpsc::UnboundedSender<Chunk>> = HashMap::new();
    let mut pending: HashMap<StreamId, VecDeque<(Vec<u8>, bool)>> = HashMap::new();
    let mut out = vec![0u8; 70_000];
    let mut input = vec![0u8; 16_384];
    loop {
        for (id, q) in pending.iter_mut() {
            while let Some((data, fin)) = q.front_mut() {
                match s.send(*id, MsgKind::Bytes, data, false, *fin) {
                    Ok(n) if n == data.len() => {
                        q.pop_front();
                    }
                    Ok(n) => {
                        data.drain(..n);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        while let Some(n) = s.poll_transmit(now(), &mut out) {
            if sock.write_all(&out[..n]).await.is_err() {
                s.handle_eof();
                break;
            }
        }
        if s.is_closed() {
            break;
        }
        let wait = s.poll_timeout().map_or(Duration::from_secs(3600), |t| {
            Duration::from_millis(t.as_millis().saturating_sub(now().as_millis()))
        });
        tokio::select! {
            r = sock.read(&mut input) => {
                let n = match r { Ok(0) | Err(_) => { s.handle_eof(); 0 } Ok(n) => n };
                let mut off = 0;
                loop {
                    let k = s.handle_input(now(), &input[off..n]);
                    off += k;
                    let mut any = false;
                    while let Some(ev) = s.poll_event() {
                        any = true;
                        match ev {
                            Event::Authenticate { device, .. } => {
                                if devices.contains(&device) {
                                    let _ = s.accept();
                                } else {
                                    state.lock().unwrap().refused += 1;
                                    s.refuse();
                                }
                            }
                            Event::Hello(h) => {
                                let id = h.device_id.to_string();
                                let mut st = state.lock().unwrap();
                                st.sessions += 1;
                                st.online.insert(id.clone(), cmd_tx.clone());
                                device_id = Some(id);
                            }
                            Event::Data { stream, data, fin, .. } => {
                                let n = data.len();
                                if let Some(tx) = streams.get(&stream) {
                                    if n > 0 { let _ = tx.send(Chunk::Data(data.to_vec())); }
                                    if fin { let _ = tx.send(Chunk::Fin); }
                                }
                                s.consume(stream, n);
                            }
                            Event::Reset { stream, code, .. } => {
                                if let Some(tx) = streams.remove(&stream) { let _ = tx.send(Chunk::Reset(code)); }
                            }
                            _ => {}
                        }
                    }
                    if (off >= n || k == 0) && !any { break; }
                }
            }
            c = cmd_rx.recv() => match c {
                Some(Cmd::OpenRaw(service, reply)) => {
                    let opened = s.open(StreamKind::Raw, service).ok().map(|id| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        streams.insert(id, tx);
                        (id, rx)
                    });
                    let _ = reply.send(opened);
                }
                Some(Cmd::Send(id, data, fin)) => pending.entry(id).or_default().push_back((data, fin)),
                None => {}
            },
            _ = tokio::time::sleep(wait) => s.handle_timeout(now()),
        }
    }
    if let Some(id) = device_id {
        let mut st = state.lock().unwrap();
        // A newer session of the same device may have taken the entry over.
        if st.online.get(&id).is_some_and(|t| t.same_channel(&cmd_tx)) {
            st.online.remove(&id);
        }
    }
}
