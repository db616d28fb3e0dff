//! `device-sim`: the sample controller application on the host, one device
//! or a fleet, dialing a gateway over TCP.
//!
//! ```text
//! device-sim --gateway 127.0.0.1:7000 --gateway-key <hex> --key-file dev.key --id plc-7
//! device-sim --gateway 127.0.0.1:7000 --gateway-key <hex> --seed lab --count 1000 --write-registry fleet.toml
//! device-sim ... --forward lws=127.0.0.1:7681
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use device_fw::budget::DeviceLinkMemory;
use device_fw::host::{
    DeviceSpec, Forward, SimApp, SimBoard, TokioPlatform, fleet, parse_key, registry_toml,
};
use device_fw::link::{Identity, LinkConfig, run};
use device_fw::provision::{self, Provisioning};
use proto::{PublicKey, SecretKey};

/// Simulated devices running the sample controller over the device link.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated devices running the sample controller over the device link"
)]
struct Args {
    /// The gateway's device-link address (HOST:PORT).
    #[arg(long)]
    gateway: String,
    /// The gateway's public key, 64 hex digits (printed by `gateway keygen`).
    #[arg(long, value_name = "HEX")]
    gateway_key: String,
    /// This device's private key: a file holding 64 hex digits.
    #[arg(long, value_name = "PATH", conflicts_with = "seed")]
    key_file: Option<PathBuf>,
    /// Derive device keys and ids from this seed (test fleets; not for production).
    #[arg(long)]
    seed: Option<String>,
    /// Device id (a lower-case DNS label). With --count, the prefix of `<id>-<n>`.
    #[arg(long, default_value = "sim")]
    id: String,
    /// Number of devices to run (needs --seed).
    #[arg(long, default_value_t = 1, requires = "seed")]
    count: usize,
    /// Write the registry entries (id and public key) of the devices to this file and continue.
    #[arg(long, value_name = "PATH")]
    write_registry: Option<PathBuf>,
    /// Only write the registry file, then exit.
    #[arg(long, requires = "write_registry")]
    registry_only: bool,
    /// Write the flash provisioning block of the (single) device, with the
    /// gateway's IPv4 address and key, to this file, then exit.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["count", "seed"])]
    write_provisioning: Option<PathBuf>,
    /// Bridge a raw service to a local TCP server: SERVICE=HOST:PORT (repeatable).
    #[arg(long, value_name = "SERVICE=HOST:PORT")]
    forward: Vec<String>,
    /// Firmware version announced in HELLO.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    firmware: String,
}

fn resolve(addr: &str, what: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{what} {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} {addr:?}: no address"))
}

fn parse_forward(spec: &str) -> Result<Forward, String> {
    let (service, target) = spec
        .split_once('=')
        .ok_or_else(|| format!("--forward {spec:?}: expected SERVICE=HOST:PORT"))?;
    let name_ok = !service.is_empty()
        && service.len() <= 32
        && service
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if !name_ok || service == "web" {
        return Err(format!(
            "--forward {spec:?}: service name must be 1-32 of [A-Za-z0-9-_.] and not `web`"
        ));
    }
    Ok(Forward {
        service: service.to_string(),
        target: resolve(target, "--forward target")?,
    })
}

fn devices(args: &Args) -> Result<Vec<DeviceSpec>, String> {
    if !proto::wire::valid_device_id(&args.id) {
        return Err(format!(
            "--id {:?}: must be 1-63 of [a-z0-9-], not starting or ending with '-'",
            args.id
        ));
    }
    match (&args.seed, &args.key_file) {
        (Some(seed), _) => {
            if args.count == 0 {
                return Err("--count must be at least 1".into());
            }
            let list = fleet(seed, &args.id, args.count);
            if list.iter().any(|d| !proto::wire::valid_device_id(&d.id)) {
                return Err(format!(
                    "--id {:?} is too long for {} devices",
                    args.id, args.count
                ));
            }
            Ok(list)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--key-file {}: {e}", path.display()))?;
            let key =
                parse_key(&text).map_err(|e| format!("--key-file {}: {e}", path.display()))?;
            Ok(vec![DeviceSpec {
                id: args.id.clone(),
                key: SecretKey::from_bytes(key),
            }])
        }
        (None, None) => {
            Err("give --key-file for one device, or --seed (with --count) for a fleet".into())
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let fleet_mode = args.count > 1;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if fleet_mode {
        "warn"
    } else {
        "info"
    }))
    .init();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("device-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_provisioning(
    path: &PathBuf,
    gateway: SocketAddr,
    key: PublicKey,
    d: &DeviceSpec,
) -> Result<(), String> {
    let SocketAddr::V4(v4) = gateway else {
        return Err("--write-provisioning: the firmware dials IPv4 addresses; give --gateway as a.b.c.d:port".into());
    };
    let block = Provisioning {
        gateway_ip: v4.ip().octets(),
        gateway_port: v4.port(),
        device_id: &d.id,
        device_key: d.key.to_bytes(),
        gateway_key: key.0,
    };
    let mut buf = [0u8; provision::MAX_LEN];
    let n = block
        .encode(&mut buf)
        .map_err(|e| format!("--write-provisioning: {e}"))?;
    std::fs::write(path, &buf[..n])
        .map_err(|e| format!("--write-provisioning {}: {e}", path.display()))?;
    println!("wrote {n} bytes for {} to {}", d.id, path.display());
    Ok(())
}

fn real_main(args: Args) -> Result<(), String> {
    let gateway_key =
        PublicKey(parse_key(&args.gateway_key).map_err(|e| format!("--gateway-key: {e}"))?);
    let forwards = args
        .forward
        .iter()
        .map(|f| parse_forward(f))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = devices(&args)?;
    if let Some(path) = &args.write_registry {
        std::fs::write(path, registry_toml(&devices))
            .map_err(|e| format!("--write-registry {}: {e}", path.display()))?;
        log::info!(
            "wrote {} registry entries to {}",
            devices.len(),
            path.display()
        );
        if args.registry_only {
            return Ok(());
        }
    }
    let gateway = resolve(&args.gateway, "--gateway")?;
    if let Some(path) = &args.write_provisioning {
        return write_provisioning(path, gateway, gateway_key, &devices[0]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let online = Arc::new(AtomicUsize::new(0));
        let total = devices.len();
        for (n, d) in devices.into_iter().enumerate() {
            let (forwards, online, firmware) =
                (forwards.clone(), online.clone(), args.firmware.clone());
            tokio::spawn(async move {
                let mut platform = TokioPlatform::new(gateway);
                let mut app = SimApp::new(
                    SimBoard::new(n as u64),
                    &d.id,
                    &firmware,
                    forwards,
                    Some(online),
                );
                let identity = Identity {
                    key: d.key,
                    gateway: gateway_key,
                };
                let mut mem = Box::new(DeviceLinkMemory::new());
                run(
                    &mut platform,
                    &mut app,
                    &identity,
                    &LinkConfig::DEFAULT,
                    &mut mem,
                )
                .await;
            });
        }
        let mut last = usize::MAX;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    let now = online.load(Ordering::Relaxed);
                    if now != last {
                        // One summary line on stdout, for people and for scripts.
                        println!("online {now}/{total}");
                        last = now;
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    println!("stopping");
                    return Ok(());
                }
            }
        }
    })
}
