//! What validation yields: the configuration with every file it names loaded, and the
//! part of it that only a restart changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::apps::AppConfig;
use super::audit::AuditPath;
use super::callers::Caller;
use super::error::Problem;
use super::secret::Secret;
use super::types::Config;
use super::upstream::{UpstreamConfig, UpstreamTarget};
use crate::model::pki::CertInfo;

/// A configuration that passed validation, with every file it names loaded.
#[derive(Debug)]
pub struct Validated {
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed values.
    pub config: Config,
    /// Parsed `listen`.
    pub listen: SocketAddr,
    /// Parsed `admin_listen`.
    pub admin_listen: SocketAddr,
    /// The apps, in config order (one named `default` for the single-app shape).
    pub apps: Vec<LoadedApp>,
    /// `callers`, each with its grants.
    pub callers: Vec<Caller>,
    /// The gateway's TLS identity and fleet CA, with `inbound_tls`.
    pub inbound: Option<LoadedInbound>,
    /// Where audit records go, with `audit`.
    pub audit: Option<AuditPath>,
    /// The token the admin listener requires.
    pub admin_auth_token: Option<Secret>,
    /// What is allowed but unsafe; logged at start and printed by `check`.
    pub warnings: Vec<Problem>,
}

/// One app with every file it names loaded.
#[derive(Debug)]
pub struct LoadedApp {
    /// Its configuration (for the single-app shape, the top-level fields).
    pub config: AppConfig,
    /// Parsed `listen`, when it has a listener of its own.
    pub listen: Option<SocketAddr>,
    /// The upstream to call.
    pub upstream: UpstreamTarget,
    /// `upstream` as configured.
    pub upstream_config: UpstreamConfig,
    /// Extra trust roots from `upstream.ca`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Client certificates, in config order.
    pub certs: Vec<LoadedCert>,
    /// The server key to inject.
    pub server_key: Option<Secret>,
    /// The admin token to inject.
    pub admin_token: Option<Secret>,
}

impl LoadedApp {
    /// The app's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

impl Validated {
    /// The app of that name.
    pub fn app(&self, name: &str) -> Option<&LoadedApp> {
        self.apps.iter().find(|a| a.name() == name)
    }

    /// The settings only a restart changes.
    pub fn start_only(&self) -> StartOnly {
        let (l, t) = (&self.config.limits, &self.config.timeouts);
        StartOnly {
            listen: self.listen,
            app_listeners: self
                .apps
                .iter()
                .filter_map(|a| Some((a.name().to_string(), a.listen?)))
                .collect(),
            admin_listen: self.admin_listen,
            workers: self.config.workers,
            max_connections: l.max_connections,
            max_header_bytes: l.max_header_bytes,
            header_read: t.header_read(),
            idle: t.idle(),
            send: t.send(),
            inbound_handshake: t.inbound_handshake(),
            shutdown_grace: t.shutdown_grace(),
        }
    }
}

/// The settings read once, when the process starts: the listeners, the worker threads and
/// each backend connection's options. Everything else takes effect on reload; a reload
/// that changes one of these warns and keeps the value the process started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOnly {
    /// The backends' listener, bound once (a reload keeps it).
    pub listen: SocketAddr,
    /// `apps[].listen`, by app name.
    pub app_listeners: Vec<(String, SocketAddr)>,
    /// The admin listener, bound once.
    pub admin_listen: SocketAddr,
    /// `workers` as configured (0: one per CPU core).
    pub workers: usize,
    /// `limits.max_connections`.
    pub max_connections: usize,
    /// `limits.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `timeouts.header_read_ms`, for the request head (the body bound reloads).
    pub header_read: Duration,
    /// `timeouts.idle_ms`.
    pub idle: Duration,
    /// `timeouts.send_ms`.
    pub send: Duration,
    /// `timeouts.inbound_handshake_ms`.
    pub inbound_handshake: Duration,
    /// `timeouts.shutdown_grace_ms`.
    pub shutdown_grace: Duration,
}

/// A start-only field whose configured value differs from the running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartOnlyChange {
    /// The field, as written in the config, e.g. `timeouts.idle_ms`.
    pub field: String,
    /// The value the process started with, and keeps.
    pub running: String,
    /// The value now in the config.
    pub configured: String,
}

impl StartOnly {
    /// Each field as the config names and writes it.
    pub(super) fn fields(&self) -> Vec<(String, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let fixed = [
            ("listen", self.listen.to_string()),
            ("admin_listen", self.admin_listen.to_string()),
            ("workers", self.workers.to_string()),
            ("limits.max_connections", self.max_connections.to_string()),
            ("limits.max_header_bytes", self.max_header_bytes.to_string()),
            ("timeouts.header_read_ms", ms(self.header_read)),
            ("timeouts.idle_ms", ms(self.idle)),
            ("timeouts.send_ms", ms(self.send)),
            ("timeouts.inbound_handshake_ms", ms(self.inbound_handshake)),
            ("timeouts.shutdown_grace_ms", ms(self.shutdown_grace)),
        ];
        let apps = self
            .app_listeners
            .iter()
            .map(|(app, addr)| (format!("apps[{app}].listen"), addr.to_string()));
        fixed
            .into_iter()
            .map(|(f, v)| (f.to_string(), v))
            .chain(apps)
            .collect()
    }

    /// Every field `configured` sets differently from `self`, the running values (`none`
    /// for an app listener one side lacks).
    pub fn changes(&self, configured: &StartOnly) -> Vec<StartOnlyChange> {
        let (running, now) = (self.fields(), configured.fields());
        let value = |fields: &[(String, String)], field: &str| {
            fields
                .iter()
                .find(|(f, _)| f == field)
                .map_or_else(|| "none".to_string(), |(_, v)| v.clone())
        };
        let mut names: Vec<&str> = running.iter().map(|(f, _)| f.as_str()).collect();
        for (f, _) in &now {
            if !names.contains(&f.as_str()) {
                names.push(f);
            }
        }
        names
            .into_iter()
            .map(|field| StartOnlyChange {
                field: field.to_string(),
                running: value(&running, field),
                configured: value(&now, field),
            })
            .filter(|c| c.running != c.configured)
            .collect()
    }
}

/// A client certificate with its files read and checked.
#[derive(Debug)]
pub struct LoadedCert {
    /// Console name.
    pub name: String,
    /// Resolved certificate path.
    pub cert_path: PathBuf,
    /// Resolved key path.
    pub key_path: PathBuf,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// What the leaf says.
    pub info: CertInfo,
}

impl LoadedCert {
    /// SHA-256 over the whole chain: what tells a changed certificate file from the one serving.
    pub fn chain_sha256(&self) -> Vec<u8> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in &self.chain {
            ctx.update(&(c.len() as u64).to_be_bytes());
            ctx.update(c);
        }
        ctx.finish().as_ref().to_vec()
    }
}

/// `inbound_tls` with its files read.
#[derive(Debug)]
pub struct LoadedInbound {
    /// Resolved certificate path.
    pub cert_path: PathBuf,
    /// What the gateway's leaf certificate says.
    pub info: CertInfo,
    /// The gateway's chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The gateway's key.
    pub key: PrivateKeyDer<'static>,
    /// Fleet CA certificates, when callers must present one.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}
