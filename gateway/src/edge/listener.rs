//! Listening sockets, made with socket2 so the options that matter on the
//! internet are set before the first connection arrives.
//!
//! - `TCP_MAXSEG` (the MSS clamp): every accepted connection inherits it, so
//!   the server's segments fit a tunnel's smaller path MTU even when the
//!   ICMP "fragmentation needed" messages that would shrink them are lost
//!   (the PMTU black hole of seed 000). The default, 1360, fits WireGuard
//!   over IPv6 (MTU 1420 − 60), PPPoE and most nested tunnels.
//! - `TCP_NODELAY` on accepted sockets (small interactive messages).
//! - TCP keepalive, so a peer that vanished without a FIN is found.
//! - IPv6 listeners also accept IPv4 (`IPV6_V6ONLY` off) unless bound to a
//!   specific IPv6 address.
//! - The UDP sockets of HTTP/3 ([`bind_udp`]) are dual-stack the same way;
//!   quinn sets what QUIC needs on them (don't-fragment, ECN, GSO/GRO).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

/// Default MSS clamp.
pub const DEFAULT_MSS: u32 = 1360;
/// Smallest MSS the configuration may set (IPv4's minimum datagram, 576, less headers).
pub const MIN_MSS: u32 = 536;
/// Largest MSS the configuration may set (jumbo frames).
pub const MAX_MSS: u32 = 8960;

/// How a listener's sockets are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// `TCP_MAXSEG` on the listener, inherited by accepted sockets. Default 1360.
    pub mss: u32,
    /// Idle time before TCP keepalive probes start. Default 60 s.
    pub keepalive: Duration,
    /// Pending-connection backlog. Default 4096.
    pub backlog: i32,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            mss: DEFAULT_MSS,
            keepalive: Duration::from_secs(60),
            backlog: 4096,
        }
    }
}

/// Binds a listener at `addr` with `opts`.
pub fn bind(addr: SocketAddr, opts: &SocketOptions) -> io::Result<TcpListener> {
    if !(MIN_MSS..=MAX_MSS).contains(&opts.mss) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mss {} outside {MIN_MSS}..={MAX_MSS}", opts.mss),
        ));
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_tcp_mss(opts.mss)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&keepalive(opts.keepalive))?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    TcpListener::from_std(socket.into())
}

/// Binds a UDP socket at `addr` for QUIC (non-blocking, for quinn).
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn keepalive(idle: Duration) -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(5)
}

/// Applies per-connection options to an accepted socket where it does not
/// inherit them from the listener. Linux copies the listener's
/// `TCP_NODELAY`, `SO_KEEPALIVE` and keepalive timings into every accepted
/// socket (a test checks it), so there this makes no system call: five
/// `setsockopt`s per connection were a fifth of a TLS handshake's system
/// calls.
pub fn tune_accepted(stream: &TcpStream, opts: &SocketOptions) -> io::Result<()> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    stream.set_nodelay(true)?;
    SockRef::from(stream).set_tcp_keepalive(&keepalive(opts.keepalive))
}

/// The MSS a connected socket uses (`getsockopt(TCP_MAXSEG)`).
pub fn mss(stream: &TcpStream) -> io::Result<u32> {
    SockRef::from(stream).tcp_mss()
}

/// Connects to `addr` with the MSS clamp set before the SYN (for upstreams
/// reached across tunnels).
pub async fn connect(addr: SocketAddr, opts: &SocketOptions) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    super::admission::socket_opened();
    socket.set_tcp_mss(opts.mss)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&keepalive(opts.keepalive))?;
    // tokio needs it: a blocking socket's connect and writes would stop a
    // runtime worker (with one worker, the whole gateway) until the peer reads.
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_the_clamp_v4_and_v6() {
        for (addr, clamp) in [
            ("127.0.0.1:0", 1360u32),
            ("127.0.0.1:0", 600),
            ("[::1]:0", 1200),
        ] {
            let opts = SocketOptions {
                mss: clamp,
                ..SocketOptions::default()
            };
            let Ok(l) = bind(addr.parse().unwrap(), &opts) else {
                // A machine without IPv6 loopback: skip that case loudly.
                eprintln!("SKIP: cannot bind {addr}");
                continue;
            };
            let target = l.local_addr().unwrap();
            let client = tokio::spawn(async move { TcpStream::connect(target).await.unwrap() });
            let (server, _) = l.accept().await.unwrap();
            tune_accepted(&server, &opts).unwrap();
            let got = mss(&server).unwrap();
            assert!(
                got <= clamp,
                "{addr}: accepted socket MSS {got} > configured {clamp}"
            );
            assert!(
                got >= clamp - 40,
                "{addr}: MSS {got} far below {clamp}: the clamp was not what limited it"
            );
            assert!(server.nodelay().unwrap());
            drop(client.await.unwrap());
        }
    }

    /// What `tune_accepted` leaves to the listener on Linux, an accepted
    /// socket has from it: no delay and the keepalive timings.
    #[tokio::test]
    async fn accepted_sockets_inherit_no_delay_and_keepalive() {
        let opts = SocketOptions {
            keepalive: Duration::from_secs(77),
            ..SocketOptions::default()
        };
        let l = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let target = l.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(target), l.accept());
        let (_client, (server, _)) = (client.unwrap(), accepted.unwrap());
        tune_accepted(&server, &opts).unwrap();
        let sock = SockRef::from(&server);
        assert!(server.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(77));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 5);
    }

    #[tokio::test]
    async fn outgoing_connections_are_clamped_too() {
        let l = bind("127.0.0.1:0".parse().unwrap(), &SocketOptions::default()).unwrap();
        let target = l.local_addr().unwrap();
        let opts = SocketOptions {
            mss: 700,
            ..SocketOptions::default()
        };
        let c = connect(target, &opts).await.unwrap();
        let got = mss(&c).unwrap();
        assert!(got <= 700, "{got}");
        let _ = l.accept().await.unwrap();
    }

    #[tokio::test]
    async fn upstream_connections_do_not_block_the_runtime() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let opts = SocketOptions::default();
        let (conn, accepted) = tokio::join!(connect(addr, &opts), l.accept());
        let (conn, _peer) = (conn.unwrap(), accepted.unwrap());
        assert!(SockRef::from(&conn).nonblocking().unwrap());
        // A peer that never reads: writes end in WouldBlock, not a hang.
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match conn.try_write(&chunk) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(
                sent < 256 << 20,
                "{sent} bytes written to a peer that never reads"
            );
        }
    }

    #[test]
    fn out_of_range_mss_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for mss in [100, 65000] {
                let opts = SocketOptions {
                    mss,
                    ..SocketOptions::default()
                };
                let e = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap_err();
                assert!(e.to_string().contains("mss"), "{e}");
            }
        });
    }
}
