//! The command line: clap types, and one function per command.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::model::config::{self, ConfigError};
use crate::model::pki::{
    self, CertName, CertState, CertStore, CsrRequest, DevCa, KeyType, Validity,
};

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

/// The commands.
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

/// `cert ...`.
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
        /// Certificate folder (default: certs/ beside the config file).
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
        /// Certificate folder (default: certs/ beside the config file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// List certificates with their state and expiry.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Certificate folder (default: certs/ beside the config file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `dev-ca ...`.
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

/// `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Exit after the flow instead of serving on.
    #[arg(long)]
    pub once: bool,
}

fn certs_dir(config: &Path, dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| config.parent().unwrap_or(Path::new("")).join("certs"))
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

/// Names and resolved paths of the configured certificates, from a config that may not fully validate.
fn configured_certs(config: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, String> {
    let text = match pki::read_bounded(config).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: cannot read: {e}", config.display())),
    };
    let parsed = config::parse(config, &text).map_err(|e| {
        format!(
            "{e}\n(the config is read to see which certificates are configured; fix it or pass -c)"
        )
    })?;
    let base = config.parent().unwrap_or(Path::new(""));
    Ok(parsed
        .client_certs
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                config::resolve(base, &c.cert),
                config::resolve(base, &c.key),
            )
        })
        .collect())
}

fn cert(config: &Path, cmd: CertCommand) -> Result<(), String> {
    match cmd {
        CertCommand::New {
            name,
            cn,
            org,
            san,
            key_type,
            force,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let configured: Vec<String> =
                configured_certs(config)?.into_iter().map(|c| c.0).collect();
            let store = CertStore::new(certs_dir(config, dir));
            let req = CsrRequest {
                name: name.clone(),
                cn,
                org,
                sans: san,
                key_type,
            };
            let new = store
                .new_csr(&req, force, &configured)
                .map_err(|e| e.to_string())?;
            let csr_path = store.path(name.as_str(), "csr");
            println!("{}", new.csr_pem.trim_end());
            println!();
            println!(
                "private key: {} (mode 0600; it never leaves this machine)",
                store.path(name.as_str(), "key").display()
            );
            println!("CSR:         {}", csr_path.display());
            println!("CSR SHA-256: {}", new.csr_sha256);
            println!();
            println!("Next: in the Amity console (secure mode on), Settings > Security > +Create Certificate,");
            println!("  Certificate Name: {name}");
            println!("  Certificate Signing Request: paste the CSR above");
            println!("then save the certificate Amity returns and run:");
            println!("  amity-mtls-proxy cert import --name {name} --cert <file>");
            if force && store.path(name.as_str(), "crt").exists() {
                eprintln!("warning: {} belongs to the old key and no longer matches; import the new certificate", store.path(name.as_str(), "crt").display());
            }
            Ok(())
        }
        CertCommand::Import {
            name,
            cert,
            force,
            dir,
        } => {
            let name = CertName::parse(&name).map_err(|e| e.to_string())?;
            let store = CertStore::new(certs_dir(config, dir));
            let r = store
                .import(&name, &cert, force)
                .map_err(|e| e.to_string())?;
            let now = pki::now_unix();
            println!(
                "installed {} ({} certificate(s) in the chain)",
                r.path.display(),
                r.chain_len
            );
            println!("  subject:  {}", r.info.subject);
            println!("  serial:   {}", r.info.serial);
            println!(
                "  valid:    {} .. {} ({} days left)",
                pki::rfc3339(r.info.not_before),
                pki::rfc3339(r.info.not_after),
                r.info.days_left(now)
            );
            println!("  SHA-256:  {}", r.info.sha256);
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let configured = configured_certs(config).unwrap_or_default();
            if !configured.iter().any(|c| c.0 == name.as_str()) {
                println!();
                println!("Next: add it to {} under client_certs:", config.display());
                println!(
                    "  - name: {name}\n    cert: {}\n    key: {}",
                    r.path.display(),
                    store.path(name.as_str(), "key").display()
                );
            }
            Ok(())
        }
        CertCommand::List { json, dir } => {
            let configured = configured_certs(config)?;
            let store = CertStore::new(certs_dir(config, dir));
            let entries = store.list(&configured);
            if json {
                let s = serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?;
                println!("{s}");
            } else {
                print_cert_table(&entries);
            }
            Ok(())
        }
    }
}

fn print_cert_table(entries: &[pki::CertEntry]) {
    if entries.is_empty() {
        println!("no certificates yet; start with `cert new --name NAME`");
        return;
    }
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            let c = e.cert.as_ref();
            let date = |t: Option<i64>| t.map(pki::rfc3339).unwrap_or_else(|| "-".into());
            [
                e.name.clone(),
                c.and_then(|c| c.cn.clone()).unwrap_or_else(|| "-".into()),
                c.map(|c| c.serial.clone()).unwrap_or_else(|| "-".into()),
                date(c.map(|c| c.not_before)),
                date(c.map(|c| c.not_after)),
                e.days_left
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.state.label().to_string(),
                if e.configured { "yes" } else { "no" }.to_string(),
                c.map(|c| c.sha256.clone()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "CN",
        "SERIAL",
        "NOT BEFORE",
        "NOT AFTER",
        "DAYS",
        "STATE",
        "CONFIGURED",
        "SHA-256",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&head.map(String::from)));
    for r in &rows {
        println!("{}", line(r));
    }
    for e in entries.iter().filter(|e| e.detail.is_some()) {
        println!("{}: {}", e.name, e.detail.as_deref().unwrap_or(""));
    }
}

fn dev_ca(config: &Path, cmd: DevCaCommand) -> Result<(), String> {
    match cmd {
        DevCaCommand::Init { force, dir } => {
            let dir = certs_dir(config, dir);
            DevCa::init(&dir, force)
                .and_then(|ca| ca.issue_server_cert(&dir, &pki::default_server_sans()))
                .map_err(|e| e.to_string())?;
            let (crt, key) = DevCa::paths(&dir);
            println!("dev CA: {} (key {})", crt.display(), key.display());
            println!(
                "server certificate for localhost, 127.0.0.1, ::1: {}",
                dir.join("dev-server.crt").display()
            );
            println!("for local testing only: never register the dev CA anywhere real");
            Ok(())
        }
        DevCaCommand::Sign {
            csr,
            days,
            out,
            dir,
        } => {
            let ca = DevCa::load(&certs_dir(config, dir)).map_err(|e| e.to_string())?;
            let csr_pem = pki::read_bounded(&csr)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{}: cannot read: {e}", csr.display()))?;
            let pem = ca
                .sign_csr(&csr_pem, Validity::days_from_now(days))
                .map_err(|e| format!("{}: {e}", csr.display()))?;
            match out {
                Some(out) => {
                    pki::write_file(&out, pem.as_bytes(), 0o644, true)
                        .map_err(|e| e.to_string())?;
                    eprintln!(
                        "signed certificate written to {} ({days} days)",
                        out.display()
                    );
                }
                None => print!("{pem}"),
            }
            Ok(())
        }
        DevCaCommand::ServerCert { san, dir } => {
            let dir = certs_dir(config, dir);
            let sans = if san.is_empty() {
                pki::default_server_sans()
            } else {
                san
            };
            let (crt, _) = DevCa::load(&dir)
                .and_then(|ca| ca.issue_server_cert(&dir, &sans))
                .map_err(|e| e.to_string())?;
            println!(
                "server certificate for {}: {}",
                sans.join(", "),
                crt.display()
            );
            Ok(())
        }
    }
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

/// The problem with a certificate that is expired or not yet valid at `now`.
fn out_of_validity(field: &str, path: &Path, info: &pki::CertInfo, now: i64) -> Option<String> {
    let path = path.display();
    match info.state(now) {
        CertState::Expired => Some(format!(
            "{field}: {path} expired on {}",
            pki::rfc3339(info.not_after)
        )),
        CertState::NotYetValid => Some(format!(
            "{field}: {path} is not valid before {}",
            pki::rfc3339(info.not_before)
        )),
        CertState::Valid | CertState::Expiring { .. } => None,
    }
}

/// `check`: validate everything a `run` would load and print a summary;
/// with `live`, also try each certificate against the upstream.
pub fn check(config: &Path, live: bool) -> ExitCode {
    let v = match config::load(config) {
        Ok(v) => v,
        Err(e) => {
            match &e {
                ConfigError::Invalid { path, problems } => {
                    eprintln!("{}: {} problem(s):", path.display(), problems.len());
                    for p in problems {
                        eprintln!("  - {p}");
                    }
                }
                other => eprintln!("{other}"),
            }
            eprintln!("check failed");
            return ExitCode::FAILURE;
        }
    };
    let now = pki::now_unix();
    let mut problems = Vec::new();
    println!("config:   {}", v.path.display());
    let listener = match (&v.inbound, &v.config.inbound_tls) {
        (Some(_), Some(t)) => match &t.client_ca {
            Some(ca) => format!("TLS, callers need a certificate from {}", ca.display()),
            None => "TLS, no client certificate asked".to_string(),
        },
        _ => "plain HTTP".to_string(),
    };
    println!("listen:   {} ({listener})", v.listen);
    println!("admin:    {}", v.admin_listen);
    println!(
        "upstream: {}{}",
        v.upstream.base,
        v.config
            .upstream
            .ca
            .as_ref()
            .map(|c| format!(" (extra trust roots: {})", c.display()))
            .unwrap_or_default()
    );
    println!(
        "client certificates: {} of {}",
        v.certs.len(),
        pki::MAX_CERTS
    );
    for (i, c) in v.certs.iter().enumerate() {
        println!(
            "  {}: CN={} serial={} expires {} ({} days left)",
            c.name,
            c.info.cn.as_deref().unwrap_or("-"),
            c.info.serial,
            pki::rfc3339(c.info.not_after),
            c.info.days_left(now)
        );
        let field = format!("client_certs[{i}].cert");
        if let Some(p) = out_of_validity(&field, &c.cert_path, &c.info, now) {
            problems.push(p);
        } else if let CertState::Expiring { days_left: days } = c.info.state(now) {
            eprintln!(
                "warning: {}: {days} days left; renew at least {} days before expiry",
                c.name,
                pki::RENEW_DAYS
            );
        }
        if c.info.client_auth == Some(false) {
            problems.push(format!(
                "client_certs[{i}].cert: {} does not allow TLS client authentication",
                c.cert_path.display()
            ));
        }
    }
    if let Some(t) = &v.inbound {
        println!(
            "inbound certificate: CN={} expires {} ({} days left)",
            t.info.cn.as_deref().unwrap_or("-"),
            pki::rfc3339(t.info.not_after),
            t.info.days_left(now)
        );
        problems.extend(out_of_validity(
            "inbound_tls.cert",
            &t.cert_path,
            &t.info,
            now,
        ));
    }
    for w in &v.warnings {
        eprintln!("warning: {w}");
    }
    if v.certs.is_empty() {
        problems.push(
            "client_certs: none configured; Amity's mTLS check will refuse every call".to_string(),
        );
    }
    if live && !v.certs.is_empty() {
        println!("live mTLS handshake with {}:", v.upstream.base);
        match runtime() {
            Ok(rt) => {
                for (i, c) in v.certs.iter().enumerate() {
                    match rt.block_on(crate::data::upstream::probe(&v, c)) {
                        Ok(verdict) => println!("  {}: {verdict}", c.name),
                        Err(e) => {
                            println!("  {}: {e}", c.name);
                            problems.push(format!("client_certs[{i}] ({}): {e}", c.name));
                        }
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        println!("OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s):", v.path.display(), problems.len());
        for p in &problems {
            eprintln!("  - {p}");
        }
        eprintln!("check failed");
        ExitCode::FAILURE
    }
}
