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
  gateway device add --config /etc/devlink-gateway/gateway.toml plc-8 --gateway-address 203.0.113.7:7000
  gateway completions bash > /etc/bash_completion.d/gateway
  gateway demo

Signals (gateway run): SIGHUP reloads devices, policies and certificates
without dropping sessions (a configuration with errors is refused and the
old one stays); SIGTERM drains and exits 0.

Logging: RUST_LOG selects what is logged (default \"info\"), e.g.
RUST_LOG=gateway=debug,info; logs go to standard error. Secrets (keys,
passwords, tokens, cookies) are never logged, at any level.";

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
    /// Manage the devices file.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Print a shell completion script to standard output.
    ///
    /// bash: `gateway completions bash > /etc/bash_completion.d/gateway`;
    /// zsh: `gateway completions zsh > "${fpath[1]}/_gateway"`;
    /// fish: `gateway completions fish > ~/.config/fish/completions/gateway.fish`.
    Completions(CompletionsArgs),
    /// Hash a password for a `[[user]]` entry (argon2id).
    ///
    /// Reads the password from the first line of standard input and prints
    /// `password_hash = "$argon2id$..."`, e.g.
    /// `read -rs PW; printf '%s\n' "$PW" | gateway hash-password`.
    HashPassword,
    /// Make an API token for a `[[token]]` entry.
    ///
    /// Prints the token (give it to the script; it is not stored) and the
    /// `sha256 = "..."` line for the configuration.
    Token,
}

/// `gateway device ...`.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device with a fresh key and print its provisioning bundle.
    ///
    /// Appends a [[device]] entry (id, public key, optional name) to the
    /// devices file that the configuration's `[gateway] devices_file`
    /// names, checks the whole configuration again (the file is left as it
    /// was if that fails), and prints what the device needs as TOML:
    /// device_id, device_key (its private key: keep it secret),
    /// gateway_public_key and gateway_address. With --provisioning-out it
    /// also writes the firmware's binary provisioning block. A running
    /// gateway admits the device after a reload (SIGHUP).
    Add(DeviceAddArgs),
}

/// `gateway device add`.
#[derive(Debug, Args)]
pub struct DeviceAddArgs {
    /// The configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// The device id: a lower-case DNS label, its host name under the domain.
    #[arg(value_name = "ID")]
    pub id: String,
    /// A display name for the landing page (default: the id).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the device dials (HOST:PORT). Default: the domain and the port of `[link] address`.
    #[arg(long, value_name = "HOST:PORT")]
    pub gateway_address: Option<String>,
    /// Also write the firmware's provisioning block here (needs an IPv4 --gateway-address).
    #[arg(long, value_name = "FILE")]
    pub provisioning_out: Option<PathBuf>,
}

/// `gateway completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
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
    /// Metrics port on localhost (/metrics, /healthz, /readyz).
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
        Command::Device(DeviceCommand::Add(a)) => device_add(a),
        Command::HashPassword => hash_password(),
        Command::Token => {
            let token = crate::auth::password::new_token();
            println!("# give this token to the script; the gateway keeps only its hash");
            println!("token = \"{token}\"");
            println!(
                "sha256 = \"{}\"",
                crate::auth::password::token_digest(&token)
            );
            Ok(())
        }
        Command::Completions(a) => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "gateway",
                &mut std::io::stdout(),
            );
            Ok(())
        }
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

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("no password on standard input");
    }
    if password.len() < 8 {
        anyhow::bail!("the password is shorter than 8 characters");
    }
    println!(
        "password_hash = \"{}\"",
        crate::auth::password::hash(password)
    );
    Ok(())
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
    runtime(config.gateway.threads)?.block_on(serve(config))
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
    runtime(0)?.block_on(serve_demo(args))
}

/// How long an idle thread of the blocking pool waits for more work
/// before it exits.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// The async runtime for `[gateway] threads` (0: one thread per CPU this
/// process may run on). One thread runs tokio's current-thread scheduler:
/// the tasks, the I/O driver and the timers all on this thread, with no
/// work-stealing queues and no wake-ups handed between threads (a browser
/// task waking its device session is a push onto a local queue). With
/// more, the multi-thread scheduler with that many workers.
///
/// Blocking work (a count of the open descriptors, a password hash) runs
/// on tokio's blocking pool, whose threads exit [`BLOCKING_KEEP_ALIVE`]
/// after their last job (tokio keeps them 10 s). With one thread the
/// process is then a single thread between those jobs, and the kernel
/// looks up each socket call's descriptor without taking a reference on
/// it (`fdget`'s path for an unshared descriptor table, and no `fput`):
/// `fdget` and `fput` fell from 2.1 to 1.5 % of the gateway's CPU in a
/// profile of the direct echo (BENCHMARKS.md, "One thread between blocking
/// jobs").
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let (mut builder, scheduler, plural) = if threads == 1 {
        let b = tokio::runtime::Builder::new_current_thread();
        (b, "current-thread", "")
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        (b, "multi-thread", "s")
    };
    let rt = builder
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .context("cannot start the async runtime")?;
    tracing::info!("runtime: {threads} thread{plural} ({scheduler} scheduler)");
    Ok(rt)
}

/// Serves `config` until SIGTERM, reloading on SIGHUP.
async fn serve(config: Config) -> anyhow::Result<()> {
    let stop = stop_signal();
    let mut reload = reload_signal();
    let server = Server::start(&config).await?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = reload.next() => {
                // Errors are logged (with FILE:LINE:COLUMN) and counted by reload().
                let _ = server.reload();
            }
        }
    }
    tracing::info!("stopping: draining connections and device sessions");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP, installed when made (before the gateway announces itself, so
/// an early SIGHUP never kills it).
struct ReloadSignal(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

fn reload_signal() -> ReloadSignal {
    #[cfg(unix)]
    {
        ReloadSignal(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }
    #[cfg(not(unix))]
    ReloadSignal()
}

impl ReloadSignal {
    /// The next SIGHUP (never, where there are none).
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
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
    let metrics = bind(args.metrics_port, "metrics")?;
    let ports = demo::Ports {
        https: https.local_addr()?.port(),
        link: link.local_addr()?.port(),
        metrics: metrics.local_addr()?.port(),
    };
    let files = demo::prepare(&args.data_dir, ports)?;
    let config = demo::load(&files)?;
    let mut server = Server::start_on(
        &config,
        Listeners {
            link,
            edges: vec![https],
        },
    )?;
    server.serve_metrics(metrics);
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
            server.metrics_addr,
            &config.gateway.public_key
        )
    );
    stop.await;
    tracing::info!("stopping the demo");
    device.abort();
    server.shutdown().await;
    Ok(())
}

fn device_add(args: &DeviceAddArgs) -> anyhow::Result<()> {
    let Some(config) = load_or_report(&args.config) else {
        anyhow::bail!("no device added: the configuration has errors");
    };
    let Some(file) = config.gateway.devices_file.clone() else {
        anyhow::bail!(
            "{}: [gateway] names no devices_file; add devices_file = \"devices.toml\" and create that file",
            args.config.display()
        );
    };
    if !proto::wire::valid_device_id(&args.id) {
        anyhow::bail!(
            "device id {:?}: must be 1-63 of [a-z0-9-], not starting or ending with '-'",
            args.id
        );
    }
    if config.devices.get(&args.id).is_some() {
        anyhow::bail!("device {} exists already", args.id);
    }
    let address = match &args.gateway_address {
        Some(a) => a.clone(),
        None => format!("{}:{}", config.gateway.domain, config.link.address.port()),
    };
    let block = match &args.provisioning_out {
        Some(_) => Some(provisioning_target(&address)?),
        None => None,
    };

    let key = keys::generate()?;
    let public = key.public_key();
    let before = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut entry = format!(
        "\n[[device]]\nid = \"{}\"\npublic_key = \"{public}\"\n",
        args.id
    );
    if let Some(name) = &args.name {
        entry.push_str(&format!("name = {}\n", toml::Value::from(name.as_str())));
    }
    let sep = if before.is_empty() || before.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    write_replacing(&file, &format!("{before}{sep}{entry}"))?;
    if let Err(errors) = config::load(&args.config) {
        write_replacing(&file, &before)?;
        anyhow::bail!("{errors}\nno device added: {} is unchanged", file.display());
    }
    if let (Some(out), Some(target)) = (&args.provisioning_out, block) {
        write_provisioning(out, target, &args.id, &key, &config.gateway.public_key)?;
    }
    println!(
        "# Provisioning bundle for {}: the device key is secret.",
        args.id
    );
    println!(
        "# {} now admits it; a running gateway after a reload (SIGHUP).",
        file.display()
    );
    println!("device_id = \"{}\"", args.id);
    println!("device_key = \"{}\"", keys::to_hex(&key.to_bytes()));
    println!("device_public_key = \"{public}\"");
    println!("gateway_public_key = \"{}\"", config.gateway.public_key);
    println!("gateway_address = \"{address}\"");
    if let Some(out) = &args.provisioning_out {
        println!(
            "# provisioning block written to {} (mode 0600)",
            out.display()
        );
    }
    Ok(())
}

/// The IPv4 address and port a provisioning block can hold.
fn provisioning_target(address: &str) -> anyhow::Result<std::net::SocketAddrV4> {
    address.parse().map_err(|_| {
        anyhow::anyhow!(
            "--provisioning-out: the firmware dials an IPv4 address; give --gateway-address as a.b.c.d:port (not {address:?})"
        )
    })
}

fn write_provisioning(
    out: &Path,
    target: std::net::SocketAddrV4,
    id: &str,
    key: &proto::SecretKey,
    gateway: &proto::PublicKey,
) -> anyhow::Result<()> {
    use device_fw::provision::{MAX_LEN, Provisioning};
    let block = Provisioning {
        gateway_ip: target.ip().octets(),
        gateway_port: target.port(),
        device_id: id,
        device_key: key.to_bytes(),
        gateway_key: gateway.0,
    };
    let mut buf = [0u8; MAX_LEN];
    let n = block
        .encode(&mut buf)
        .map_err(|e| anyhow::anyhow!("provisioning block: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    std::io::Write::write_all(&mut f, &buf[..n])
        .with_context(|| format!("cannot write {}", out.display()))?;
    buf.fill(0);
    Ok(())
}

/// Replaces `file`'s content through a temporary file and a rename, keeping its mode.
fn write_replacing(file: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))
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
