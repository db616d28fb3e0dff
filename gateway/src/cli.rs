//! The command line (clap), logging set-up, and the dispatch of each
//! command. `main.rs` only parses and calls [`execute`].
//!
//! Exit codes: 0 success; 1 a failure (configuration errors, a key file
//! that exists, a port in use); 2 a usage error (clap, `RUST_LOG`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::config::{self, Config};
use crate::server::{Listeners, Server, StartError};
use crate::{demo, keys};

/// Exit code for failures.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for usage errors and commands not in this build.
pub const EXIT_USAGE: u8 = 2;

const AFTER_HELP: &str = "\
Examples:
  gateway keygen --out /var/lib/devlink-gateway/gateway.key
  gateway check-config /etc/devlink-gateway/gateway.toml
  gateway run --config /etc/devlink-gateway/gateway.toml
  gateway demo

Logging: RUST_LOG selects what is logged (default \"info\"), e.g.
RUST_LOG=gateway=debug,info; logs go to standard error.";

/// The devlink gateway: a TLS edge for browsers and the listener that
/// devices behind NAT dial, bridging browsers to the devices' web UIs.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve browsers and devices with a configuration file.
    Run(RunArgs),
    /// Check a configuration file and the files it names.
    ///
    /// Reads the configuration, the gateway key, the certificates and the
    /// devices file. Prints a one-paragraph summary (exit code 0), or every
    /// error as FILE:LINE:COLUMN: message (exit code 1).
    CheckConfig(CheckConfigArgs),
    /// Make an X25519 key pair (64 hex digits each).
    ///
    /// The format is the one the configuration, devices files and
    /// `device-sim --key-file` use, for the gateway and for devices alike.
    Keygen(KeygenArgs),
    /// Run everything on this machine with generated defaults.
    ///
    /// Generates a local CA and a certificate for localhost and a gateway
    /// key into the data directory, starts a simulated device in-process and
    /// prints the URL to open.
    Demo(DemoArgs),
}

/// `gateway run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
}

/// `gateway check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The configuration file (TOML).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `gateway keygen`.
#[derive(Debug, Args)]
#[command(after_help = "\
With --out, the private key is written to FILE (mode 0600) and the public key is printed as a \
TOML line: public_key = \"<hex>\". Without --out, both keys are printed as TOML lines.")]
pub struct KeygenArgs {
    /// Write the private key to this file (mode 0600) and print only the public key.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// `gateway demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its CA, certificate and keys (created if missing).
    #[arg(long, value_name = "DIR", default_value = "gateway-demo")]
    pub data_dir: PathBuf,
    /// HTTPS port on localhost.
    #[arg(long, value_name = "N", default_value_t = 8443)]
    pub https_port: u16,
    /// Device link port on localhost.
    #[arg(long, value_name = "N", default_value_t = 7000)]
    pub link_port: u16,
    /// Metrics port on localhost.
    #[arg(long, value_name = "N", default_value_t = 9100)]
    pub metrics_port: u16,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::FromEnvError),
    /// A subscriber is set already.
    #[error("logging is set up already: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Logs to standard error in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) -> Result<(), LoggingError> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env()?;
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => registry.with(fmt).try_init()?,
        LogFormat::Json => registry.with(fmt.json()).try_init()?,
    }
    Ok(())
}

/// Runs a parsed command line; the returned code is the process's.
pub fn execute(cli: Cli) -> ExitCode {
    if let Err(e) = init_logging(cli.log_format) {
        eprintln!("gateway: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match &cli.command {
        Command::CheckConfig(a) => return check_config(&a.file),
        Command::Keygen(a) => keygen(a),
        Command::Run(a) => run(a),
        Command::Demo(a) => demo(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Loads `file`, printing every error to standard error.
fn load_or_report(file: &Path) -> Option<Config> {
    match config::load(file) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error{}",
                file.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    match load_or_report(file) {
        Some(c) => {
            println!("ok: {}", c.summary());
            ExitCode::SUCCESS
        }
        None => ExitCode::from(EXIT_FAILURE),
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = keys::generate()?;
    let public = key.public_key();
    match &args.out {
        Some(out) => {
            keys::write_key_file(out, &key, args.force)?;
            println!("# private key written to {} (mode 0600)", out.display());
        }
        None => println!("private_key = \"{}\"", keys::to_hex(&key.to_bytes())),
    }
    println!("public_key = \"{public}\"");
    Ok(())
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let Some(config) = load_or_report(&args.config) else {
        anyhow::bail!("not started: the configuration has errors");
    };
    tracing::info!("configuration: {}", config.summary());
    runtime()?.block_on(serve(config))
}

fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let ports = [
        ("--https-port", args.https_port),
        ("--link-port", args.link_port),
        ("--metrics-port", args.metrics_port),
    ];
    for (i, (name, port)) in ports.iter().enumerate() {
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port && *p != 0) {
            anyhow::bail!("{name} {port} is also given as {other}");
        }
    }
    runtime()?.block_on(serve_demo(args))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Serves `config` until SIGTERM.
async fn serve(config: Config) -> anyhow::Result<()> {
    let stop = stop_signal();
    let server = Server::start(&config).await?;
    stop.await;
    tracing::info!("stopping: draining connections and device sessions");
    server.shutdown().await;
    Ok(())
}

async fn serve_demo(args: &DemoArgs) -> anyhow::Result<()> {
    use std::net::{Ipv4Addr, SocketAddr};

    use crate::edge::listener::{self, SocketOptions};
    let opts = SocketOptions::default();
    let bind = |port: u16, what: &'static str| {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        listener::bind(address, &opts).map_err(|source| StartError::Bind {
            what,
            address,
            source,
        })
    };
    let stop = stop_signal();
    let https = bind(args.https_port, "browsers")?;
    let link = bind(args.link_port, "the device link")?;
    let ports = demo::Ports {
        https: https.local_addr()?.port(),
        link: link.local_addr()?.port(),
        metrics: args.metrics_port,
    };
    let files = demo::prepare(&args.data_dir, ports)?;
    let config = demo::load(&files)?;
    let server = Server::start_on(
        &config,
        Listeners {
            link,
            edges: vec![https],
        },
    )?;
    let device_key = keys::read_key_file(&files.device_key)?.into_inner();
    let device = tokio::spawn(demo::run_device(
        demo::dial_address(server.link_addr),
        device_key,
        config.gateway.public_key,
    ));
    println!(
        "{}",
        demo::banner(
            &files,
            server.edge_addrs[0],
            server.link_addr,
            &config.gateway.public_key
        )
    );
    stop.await;
    tracing::info!("stopping the demo");
    device.abort();
    server.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The SIGTERM handler is installed when
/// this is called, so call it before announcing that the gateway serves.
fn stop_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn force_needs_out() {
        assert!(Cli::try_parse_from(["gateway", "keygen", "--force"]).is_err());
        let cli = Cli::try_parse_from(["gateway", "keygen", "--out", "k", "--force"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keygen(KeygenArgs { force: true, .. })
        ));
    }

    #[test]
    fn log_format_is_global() {
        let cli =
            Cli::try_parse_from(["gateway", "check-config", "x.toml", "--log-format", "json"])
                .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
    }
}
