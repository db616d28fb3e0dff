//! The `device-sim` binary against a gateway-role acceptor on loopback.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use device_fw::host::fleet;
use e2e::acceptor::{Acceptor, Chunk};
use proto::SecretKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const GATEWAY_KEY: [u8; 32] = [0x42; 32];

fn device_sim() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/device-sim
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("device-sim");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p device-fw --features host --bin device-sim`",
        bin.display()
    );
    bin
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spawn(args: &[String]) -> Child {
    Command::new(device_sim())
        .args(args)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("DEVICE_SIM_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("start device-sim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_simulated_devices_come_up() {
    let devices = fleet("e2e-fleet", "sim", 1000);
    let keys: HashSet<_> = devices.iter().map(|d| d.key.public_key()).collect();
    let acceptor = Acceptor::start(GATEWAY_KEY, keys).await;
    let registry =
        std::env::temp_dir().join(format!("device-sim-registry-{}.toml", std::process::id()));
    let mut child = spawn(&[
        "--gateway".into(),
        acceptor.addr.to_string(),
        "--gateway-key".into(),
        acceptor.public.to_string(),
        "--seed".into(),
        "e2e-fleet".into(),
        "--id".into(),
        "sim".into(),
        "--count".into(),
        "1000".into(),
        "--write-registry".into(),
        registry.display().to_string(),
    ]);
    let up = acceptor.wait_online(1000, Duration::from_secs(60)).await;
    let online = acceptor.online();
    let _ = child.kill().await;
    assert!(up, "only {online} of 1000 devices came online");
    assert_eq!(acceptor.refused(), 0);
    let text = std::fs::read_to_string(&registry).unwrap();
    let _ = std::fs::remove_file(&registry);
    assert_eq!(text.matches("[[device]]").count(), 1000);
    assert!(text.contains(&format!(
        "public_key = \"{}\"",
        devices[999].key.public_key()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_service_is_forwarded_to_a_local_tcp_server() {
    // A TCP echo server standing in for a server on the device.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let key = SecretKey::from_bytes([0x31; 32]);
    let key_file = std::env::temp_dir().join(format!("device-sim-key-{}", std::process::id()));
    std::fs::write(&key_file, hex(&key.to_bytes())).unwrap();
    let acceptor = Acceptor::start(GATEWAY_KEY, [key.public_key()].into_iter().collect()).await;
    let _child = spawn(&[
        "--gateway".into(),
        acceptor.addr.to_string(),
        "--gateway-key".into(),
        acceptor.public.to_string(),
        "--key-file".into(),
        key_file.display().to_string(),
        "--id".into(),
        "plc-9".into(),
        "--forward".into(),
        format!("echo={echo_addr}"),
    ]);
    assert!(acceptor.wait_online(1, Duration::from_secs(20)).await);
    let _ = std::fs::remove_file(&key_file);

    let mut stream = acceptor
        .open_raw("plc-9", 1)
        .await
        .expect("open raw stream");
    let payload: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for chunk in payload.chunks(50_000) {
        stream.send(chunk, false);
    }
    stream.send(&[], true);
    let mut back = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.rx.recv()).await;
        let Ok(next) = next else {
            panic!(
                "echo stalled after {} of {} bytes",
                back.len(),
                payload.len()
            )
        };
        match next {
            Some(Chunk::Data(d)) => back.extend_from_slice(&d),
            Some(Chunk::Fin) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echo is byte-exact");

    // A service number with no forward behind it is refused.
    let mut bad = acceptor.open_raw("plc-9", 7).await.expect("open");
    let r = tokio::time::timeout(Duration::from_secs(10), bad.rx.recv())
        .await
        .unwrap();
    assert_eq!(r, Some(Chunk::Reset(proto::Code::UNKNOWN_SERVICE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_gateway_is_retried_with_backoff_and_bad_options_are_explained() {
    // Nothing listens on this port once the listener is dropped.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(device_sim())
        .args([
            "--gateway",
            &format!("127.0.0.1:{port}"),
            "--gateway-key",
            &"ab".repeat(32),
            "--seed",
            "x",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), err.read_to_end(&mut log)).await;
    let _ = child.kill().await;
    let log = String::from_utf8_lossy(&log);
    assert!(log.matches("gateway unreachable").count() >= 2, "{log}");
    assert!(log.matches("reconnecting in").count() >= 2, "{log}");

    for (args, msg) in [
        (
            vec!["--gateway", "127.0.0.1:1", "--gateway-key", "12"],
            "64 hex digits",
        ),
        (
            vec![
                "--gateway",
                "127.0.0.1:1",
                "--gateway-key",
                &"ab".repeat(32),
            ],
            "--key-file",
        ),
        (
            vec![
                "--gateway",
                "127.0.0.1:1",
                "--gateway-key",
                &"ab".repeat(32),
                "--seed",
                "s",
                "--id",
                "Bad_Id",
            ],
            "--id",
        ),
        (
            vec![
                "--gateway",
                "127.0.0.1:1",
                "--gateway-key",
                &"ab".repeat(32),
                "--seed",
                "s",
                "--forward",
                "nope",
            ],
            "SERVICE=HOST:PORT",
        ),
        (
            vec![
                "--gateway",
                "no-such-host.invalid:1",
                "--gateway-key",
                &"ab".repeat(32),
                "--seed",
                "s",
            ],
            "--gateway",
        ),
    ] {
        let out = Command::new(device_sim())
            .args(&args)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(msg), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn provisioning_block_for_the_firmware() {
    let dir = std::env::temp_dir().join(format!("device-sim-prov-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key_file, out) = (dir.join("dev.key"), dir.join("prov.bin"));
    let key = SecretKey::from_bytes([0x5a; 32]);
    std::fs::write(&key_file, hex(&key.to_bytes())).unwrap();
    let gateway = SecretKey::from_bytes(GATEWAY_KEY).public_key();
    let args = |gw: &str| {
        vec![
            "--gateway".to_string(),
            gw.to_string(),
            "--gateway-key".into(),
            gateway.to_string(),
            "--key-file".into(),
            key_file.display().to_string(),
            "--id".into(),
            "plc-9".into(),
            "--write-provisioning".into(),
            out.display().to_string(),
        ]
    };
    let st = Command::new(device_sim())
        .args(args("127.0.0.1:7000"))
        .output()
        .await
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let p = device_fw::provision::Provisioning::parse(&bytes).unwrap();
    assert_eq!(
        (p.gateway_ip, p.gateway_port, p.device_id),
        ([127, 0, 0, 1], 7000, "plc-9")
    );
    assert_eq!((p.device_key, p.gateway_key), (key.to_bytes(), gateway.0));
    let st = Command::new(device_sim())
        .args(args("[::1]:7000"))
        .output()
        .await
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("IPv4"));
    let _ = std::fs::remove_dir_all(&dir);
}
