//! The command line: clap types, logging setup, and the dispatch to one module per command.

mod apps;
mod cert;
mod check;
mod dev_ca;

use cert::cert;
pub use check::check;
use dev_ca::dev_ca;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::model::pki::KeyType;

/// Egress gateway for Amity Social Cloud's mutual-TLS calls.
#[derive(Debug, Parser)]
#[command(name = "amity-mtls-proxy", version, about)]
pub struct Cli {
    /// The configuration file; relative paths in it resolve against its folder.
    #[arg(
        short,
        long,
        global = true,
        default_value = "config.yaml",
        env = "AMITY_MTLS_PROXY_CONFIG"
    )]
    pub config: PathBuf,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What the binary is asked to do; `run` when nothing is.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config and every certificate and key; exit non-zero on any problem.
    Check {
        /// Also make one real mTLS handshake per certificate against the upstream.
        #[arg(long)]
        live: bool,
    },
    /// Client certificates: new key + CSR, import the signed certificate, list.
    #[command(subcommand)]
    Cert(CertCommand),
    /// A local CA that stands in for Amity's, for local testing only.
    #[command(subcommand)]
    DevCa(DevCaCommand),
    /// A local stand-in for the Amity API that demands client certificates from the dev CA.
    MockAmity(MockArgs),
    /// Everything wired together on loopback: one real token fetched through the proxy.
    Demo(DemoArgs),
}

/// The client certificates in the certs folder: make, install, list.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Generate a private key and a CSR to paste in the Amity console.
    New {
        /// Certificate name, as it will be registered in the console (1-30 of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// Subject common name (default: the name); Amity's guidance: name the service.
        #[arg(long)]
        cn: Option<String>,
        /// Subject organisation.
        #[arg(long)]
        org: Option<String>,
        /// Subject alternative name (DNS name or IP); repeatable.
        #[arg(long)]
        san: Vec<String>,
        /// Key algorithm.
        #[arg(long, value_enum, default_value_t = KeyType::P256)]
        key_type: KeyType,
        /// Replace an existing key and CSR of this name.
        #[arg(long)]
        force: bool,
        /// The app (from `apps` in the config) the certificate is for; its files go to
        /// certs/APP/. Needed when the config defines several apps; with the single-app shape
        /// the one app is `default` and its files stay in certs/.
        #[arg(long, value_name = "APP")]
        app: Option<String>,
        /// Certificate folder (default: certs/ beside the config file, certs/APP/ with --app).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Install the certificate Amity returned for a CSR made by `cert new`.
    Import {
        /// The name used with `cert new`.
        #[arg(long)]
        name: String,
        /// The PEM certificate (chain allowed, leaf first).
        #[arg(long)]
        cert: PathBuf,
        /// Replace an installed certificate of this name.
        #[arg(long)]
        force: bool,
        /// The app (from `apps` in the config) the certificate is for; its files go to
        /// certs/APP/. Needed when the config defines several apps; with the single-app shape
        /// the one app is `default` and its files stay in certs/.
        #[arg(long, value_name = "APP")]
        app: Option<String>,
        /// Certificate folder (default: certs/ beside the config file, certs/APP/ with --app).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List certificates with their state and expiry.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this app's certificates (from `apps` in the config), from certs/APP/;
        /// without it, a config with several apps lists every app's certificates, app by app.
        #[arg(long, value_name = "APP")]
        app: Option<String>,
        /// Certificate folder (default: certs/ beside the config file, certs/APP/ with --app).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// A local CA standing in for Amity's, for local testing only.
#[derive(Debug, Subcommand)]
pub enum DevCaCommand {
    /// Create the dev CA and a server certificate for localhost/127.0.0.1/::1.
    Init {
        /// Replace an existing dev CA.
        #[arg(long)]
        force: bool,
        /// Certificate folder (default: certs/ beside the config file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Sign a CSR as a client certificate, as the Amity console would.
    Sign {
        /// The PEM CSR.
        #[arg(long)]
        csr: PathBuf,
        /// Days of validity.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Write the certificate here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Certificate folder holding the dev CA (default: certs/ beside the config file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Issue a new server certificate for the stand-in Amity.
    ServerCert {
        /// Server names (default: localhost, 127.0.0.1, ::1); repeatable.
        #[arg(long)]
        san: Vec<String>,
        /// Certificate folder (default: certs/ beside the config file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `mock-amity`.
#[derive(Debug, clap::Args)]
pub struct MockArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub listen: SocketAddr,
    /// Folder with dev-ca.crt, dev-server.crt and dev-server.key (default: certs/ beside the config file).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The server key the stand-in accepts in x-server-key.
    #[arg(long, env = "AMITY_MOCK_SERVER_KEY", default_value = crate::tools::kit::DEMO_SERVER_KEY, hide_env_values = true)]
    pub server_key: String,
    /// The admin token the stand-in accepts.
    #[arg(long, env = "AMITY_MOCK_ADMIN_TOKEN", default_value = crate::tools::kit::DEMO_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: String,
    /// Wait this long before answering each request.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

/// What `demo` runs: everything on loopback, until Ctrl-C or once.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Exit after the flow instead of serving on.
    #[arg(long)]
    pub once: bool,
}

fn certs_dir(config: &Path, dir: Option<PathBuf>) -> PathBuf {
    app_certs_dir(config, dir, None)
}

/// `--dir`, else certs/ beside the config, else certs/APP/ for an app of a config with
/// `apps`: each app's keys apart, so that one app's names never collide with another's.
/// `app` must already be a valid name (`CertName` rules), so it is one path component.
fn app_certs_dir(config: &Path, dir: Option<PathBuf>, app: Option<&str>) -> PathBuf {
    dir.unwrap_or_else(|| {
        let certs = config.parent().unwrap_or(Path::new("")).join("certs");
        match app {
            Some(app) => certs.join(app),
            None => certs,
        }
    })
}

/// Sets up tracing on stderr. Without a terminal, lines are written in batches by a
/// background thread (`logwriter`), so a request never waits on a write(2) or wakes a thread
/// for its access-log line; keep the returned guard alive until exit, when it flushes what is
/// buffered. On a terminal, lines are written at once, in order with the rest of the output.
pub fn init_logging(format: LogFormat) -> Option<crate::telemetry::logwriter::FlushGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let (writer, guard) = if terminal {
        (BoxMakeWriter::new(std::io::stderr), None)
    } else {
        let (w, g) = crate::telemetry::logwriter::batched(std::io::stderr());
        (BoxMakeWriter::new(w), Some(g))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
    };
    guard
}

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    crate::install_crypto_provider();
    let logs = init_logging(cli.log_format);
    let outcome = execute(cli.command.unwrap_or(Command::Run), &cli.config);
    // Buffered log lines first, so that the error is the last line.
    drop(logs);
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn execute(command: Command, config: &Path) -> Result<ExitCode, String> {
    match command {
        // The data path runs on its own worker threads; this thread keeps admin and reloads.
        Command::Run => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
            .and_then(|rt| {
                rt.block_on(crate::process::server::run(config))
                    .map_err(|e| e.to_string())
            }),
        // Reports its findings itself, with an exit code of its own.
        Command::Check { live } => return Ok(check(config, live)),
        Command::Cert(c) => cert(config, c),
        Command::DevCa(c) => dev_ca(config, c),
        Command::MockAmity(a) => runtime().and_then(|rt| rt.block_on(mock_amity(config, a))),
        Command::Demo(a) => {
            runtime().and_then(|rt| rt.block_on(crate::tools::demo::run(config, a.once)))
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

async fn mock_amity(config: &Path, a: MockArgs) -> Result<(), String> {
    let dir = certs_dir(config, a.dir);
    let opts = crate::tools::kit::mock_options(
        &dir,
        a.server_key,
        a.admin_token,
        Duration::from_millis(a.delay_ms),
    )?;
    let handle = crate::tools::mock::start(a.listen, opts)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %handle.addr, "stand-in Amity serving; client certificates must come from the dev CA");
    tokio::select! {
        _ = handle.wait() => {}
        _ = crate::process::signals::terminate() => {}
    }
    Ok(())
}
