//! A test network and a gateway-role peer for the link runtime: tokio
//! duplex pipes instead of TCP, tokio's paused clock, and a small driver
//! around `proto`'s gateway session that tests steer with commands.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_fw::app::{Board, LEDS, Readings};
use device_fw::link::{ConnectError, Platform, Transport};
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use proto::wire::Status;
use proto::{
    Buffers, Code, Config, Event, Instant, MsgKind, PublicKey, SecretKey, Session, StreamId,
    StreamKind, StreamSlot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

pub const DEVICE_KEY: [u8; 32] = [0x11; 32];
pub const GATEWAY_KEY: [u8; 32] = [0x22; 32];

fn base() -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

/// The device's side of the test network.
pub struct TestNet {
    pub dials: mpsc::UnboundedSender<DuplexStream>,
    pub up: Arc<AtomicBool>,
    pub attempts: Arc<Mutex<Vec<u64>>>,
    pub pipe_size: usize,
    pub clock: u64,
    /// The length of every write the device asked for.
    pub writes: Arc<Mutex<Vec<usize>>>,
}

pub struct Conn(DuplexStream, Arc<Mutex<Vec<usize>>>);

#[derive(Debug)]
pub struct PipeError;
impl std::fmt::Display for PipeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pipe error")
    }
}
impl std::error::Error for PipeError {}
impl embedded_io_async::Error for PipeError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

pub struct R<'a>(ReadHalf<&'a mut DuplexStream>);
pub struct W<'a>(WriteHalf<&'a mut DuplexStream>, &'a Mutex<Vec<usize>>);
impl ErrorType for R<'_> {
    type Error = PipeError;
}
impl ErrorType for W<'_> {
    type Error = PipeError;
}
impl Read for R<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, PipeError> {
        self.0.read(buf).await.map_err(|_| PipeError)
    }
}
impl Write for W<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, PipeError> {
        self.1.lock().unwrap().push(buf.len());
        self.0.write(buf).await.map_err(|_| PipeError)
    }
    async fn flush(&mut self) -> Result<(), PipeError> {
        self.0.flush().await.map_err(|_| PipeError)
    }
}
impl Transport for Conn {
    type Reader<'a> = R<'a>;
    type Writer<'a> = W<'a>;
    fn split(&mut self) -> (R<'_>, W<'_>) {
        let (r, w) = tokio::io::split(&mut self.0);
        (R(r), W(w, &self.1))
    }
}

impl Platform for TestNet {
    type Conn<'a> = Conn;
    async fn connect(&mut self) -> Result<Conn, ConnectError> {
        self.attempts.lock().unwrap().push(Self::now().as_millis());
        if !self.up.load(Ordering::SeqCst) {
            return Err(ConnectError::Refused);
        }
        let (a, b) = tokio::io::duplex(self.pipe_size);
        self.dials.send(b).map_err(|_| ConnectError::Refused)?;
        Ok(Conn(a, self.writes.clone()))
    }
    fn now() -> Instant {
        Instant::from_millis(base().elapsed().as_millis() as u64)
    }
    async fn sleep_until(at: Instant) {
        tokio::time::sleep_until(base() + Duration::from_millis(at.as_millis())).await;
    }
    fn fill_random(&mut self, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            self.clock = self
                .clock
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.clock >> 33) as u8 ^ i as u8;
        }
    }
    fn timestamp(&mut self) -> u64 {
        // A device without a clock: always 1; the gateway's floor moves it up.
        1
    }
}

/// A board whose state tests can read.
#[derive(Clone, Default)]
pub struct TestBoard {
    pub leds: Arc<Mutex<[bool; LEDS]>>,
    pub setpoint: Arc<AtomicU32>,
    pub temp: Arc<AtomicU32>,
}

impl Board for TestBoard {
    fn readings(&mut self) -> Readings {
        Readings {
            temperature_centi: self.temp.load(Ordering::SeqCst) as i32,
            button: false,
            presses: 2,
        }
    }
    fn set_led(&mut self, index: usize, on: bool) {
        self.leds.lock().unwrap()[index] = on;
    }
    fn set_setpoint(&mut self, centi: i32) {
        self.setpoint.store(centi as u32, Ordering::SeqCst);
    }
}

/// What the test gateway reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Gw {
    Authenticated {
        device: PublicKey,
        timestamp: u64,
    },
    Hello {
        device_id: String,
    },
    Data {
        stream: StreamId,
        msg: MsgKind,
        end_msg: bool,
        fin: bool,
        data: Vec<u8>,
    },
    Reset {
        stream: StreamId,
        code: Code,
    },
    Closed(proto::CloseReason),
}

/// What tests tell the test gateway.
#[derive(Debug)]
pub enum Cmd {
    Open(StreamKind, u8, tokio::sync::oneshot::Sender<StreamId>),
    Send(StreamId, MsgKind, Vec<u8>, bool, bool),
    GoAway,
    Close(Code),
    /// Drop the connection without a word.
    Kill,
    /// Stop returning credit for received data.
    Hold(bool),
}

/// How the test gateway answers handshakes.
#[derive(Clone)]
pub struct Policy {
    pub config: Config,
    /// Reject with StaleTimestamp when the timestamp is not above this.
    pub last_timestamp: Arc<Mutex<u64>>,
}

/// Accepts connections from `dials` and serves each with a gateway session.
pub fn spawn_gateway(
    mut dials: mpsc::UnboundedReceiver<DuplexStream>,
    policy: Policy,
) -> (mpsc::UnboundedReceiver<Gw>, mpsc::UnboundedSender<Cmd>) {
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let cmd_rx = Arc::new(tokio::sync::Mutex::new(cmd_rx));
    tokio::spawn(async move {
        while let Some(pipe) = dials.recv().await {
            let (ev, cmd, policy) = (ev_tx.clone(), cmd_rx.clone(), policy.clone());
            tokio::spawn(async move {
                let mut cmd = cmd.lock().await;
                serve(pipe, policy, ev, &mut cmd).await;
            });
        }
    });
    (ev_rx, cmd_tx)
}

/// A queued send: message kind, bytes, END_MSG, FIN.
type Outgoing = (MsgKind, Vec<u8>, bool, bool);

async fn serve(
    mut pipe: DuplexStream,
    policy: Policy,
    ev: mpsc::UnboundedSender<Gw>,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) {
    let cfg = policy.config;
    let buffers = Buffers {
        rx: vec![0u8; usize::from(cfg.params.max_record)],
        tx: vec![0u8; usize::from(cfg.params.max_record)],
        streams: vec![StreamSlot::default(); 16],
    };
    let now = TestNet::now();
    let mut s: Session<Vec<u8>, Vec<StreamSlot>> = Session::gateway(
        cfg,
        SecretKey::from_bytes(GATEWAY_KEY),
        SecretKey::from_bytes([0x44; 32]),
        buffers,
        now,
    )
    .unwrap();
    let mut out = vec![0u8; 70_000];
    let mut input = vec![0u8; 8192];
    let mut pending: HashMap<StreamId, VecDeque<Outgoing>> = HashMap::new();
    let mut hold = false;
    let mut held: Vec<(StreamId, usize)> = Vec::new();
    loop {
        // Send what the streams have, within credit.
        for (id, q) in pending.iter_mut() {
            while let Some((msg, data, end, fin)) = q.front_mut() {
                match s.send(*id, *msg, data, *end, *fin) {
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
        while let Some(n) = s.poll_transmit(TestNet::now(), &mut out) {
            if pipe.write_all(&out[..n]).await.is_err() {
                return;
            }
        }
        if s.is_closed() {
            return;
        }
        let deadline = s
            .poll_timeout()
            .unwrap_or(TestNet::now().saturating_add(Duration::from_secs(3600)));
        tokio::select! {
            r = pipe.read(&mut input) => {
                let n = match r { Ok(0) | Err(_) => { s.handle_eof(); 0 } Ok(n) => n };
                let mut off = 0;
                loop {
                    let k = s.handle_input(TestNet::now(), &input[off..n]);
                    off += k;
                    let mut any = false;
                    while let Some(e) = s.poll_event() {
                        any = true;
                        let out = match e {
                            Event::Authenticate { device, timestamp } => {
                                let mut last = policy.last_timestamp.lock().unwrap();
                                if device != SecretKey::from_bytes(DEVICE_KEY).public_key() {
                                    s.refuse();
                                } else if timestamp <= *last {
                                    s.reject(Status::StaleTimestamp, *last);
                                } else {
                                    *last = timestamp;
                                    s.accept().unwrap();
                                }
                                Gw::Authenticated { device, timestamp }
                            }
                            Event::Hello(h) => Gw::Hello { device_id: h.device_id.to_string() },
                            Event::Data { stream, msg, end_msg, fin, data } => {
                                let n = data.len();
                                let d = Gw::Data { stream, msg, end_msg, fin, data: data.to_vec() };
                                if hold { held.push((stream, n)); } else { s.consume(stream, n); }
                                d
                            }
                            Event::Reset { stream, code, .. } => Gw::Reset { stream, code },
                            Event::Closed(r) => Gw::Closed(r),
                            _ => continue,
                        };
                        let _ = ev.send(out);
                    }
                    if (off >= n || k == 0) && !any { break; }
                }
            }
            c = cmds.recv() => match c {
                Some(Cmd::Open(kind, service, reply)) => {
                    let id = s.open(kind, service).expect("open");
                    let _ = reply.send(id);
                }
                Some(Cmd::Send(id, msg, data, end, fin)) => pending.entry(id).or_default().push_back((msg, data, end, fin)),
                Some(Cmd::GoAway) => s.goaway(Code::SHUTDOWN),
                Some(Cmd::Close(code)) => s.close(code),
                Some(Cmd::Kill) | None => return,
                Some(Cmd::Hold(h)) => {
                    hold = h;
                    if !h { for (id, n) in held.drain(..) { s.consume(id, n); } }
                }
            },
            _ = TestNet::sleep_until(deadline) => s.handle_timeout(TestNet::now()),
        }
    }
}

/// An encoded request head.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let hs: Vec<proto::wire::Header<'_>> = headers
        .iter()
        .map(|(n, v)| proto::wire::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let h = proto::wire::RequestHead {
        method,
        target,
        headers: proto::wire::HeaderList::Slice(&hs),
    };
    let mut buf = vec![0u8; h.buffer_len()];
    h.emit(&mut buf).unwrap();
    buf
}
