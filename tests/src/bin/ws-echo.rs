//! `ws-echo`: a plain (no TLS) WebSocket echo server, the upstream that
//! nginx, HAProxy and the gateway's direct mode proxy to in the benchmarks.
//! Every message comes back as it came; pings are answered.
//!
//! ```text
//! ws-echo --listen 127.0.0.1:9001
//! ```

use std::net::SocketAddr;

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

// Copies as the gateway's, and the load generator's, do (both link the
// gateway, and with it memcopy): the upstream of every target then spends
// the same on a copy.
use memcopy as _;

#[derive(Parser, Debug)]
#[command(about = "Plain WebSocket echo server (benchmark upstream)")]
struct Args {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|e| panic!("bind {}: {e}", args.listen));
    println!("ws-echo listening on {}", args.listen);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // Small buffers: thousands of idle upstream sockets stay cheap.
            let cfg = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_message_size(Some(64 << 20));
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(cfg)).await
            else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                let out = match m {
                    Message::Text(_) | Message::Binary(_) => m,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if ws.send(out).await.is_err() {
                    break;
                }
            }
            let _ = ws.close(None).await;
        });
    }
}
