//! `config.yaml`: the serde types, and the one `load` + `validate` path that
//! start-up, `check` and (later) reload all go through.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::pki::{self, CertInfo, CertName};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address backends connect to: plain HTTP (HTTP/1.1 or h2c), or TLS with `inbound_tls`.
    pub listen: String,
    /// Terminate TLS (and with `client_ca`, mutual TLS) from the fleet on `listen`.
    #[serde(default)]
    pub inbound_tls: Option<InboundTlsConfig>,
    /// Allow plain HTTP on a non-loopback `listen` (a warning is logged at start).
    #[serde(default)]
    pub allow_plaintext_non_loopback: bool,
    /// Allow `inbound_tls` without `client_ca` on a non-loopback `listen` while the proxy
    /// injects a server key or admin token (a warning is logged at start and by `check`).
    #[serde(default)]
    pub allow_unauthenticated_callers: bool,
    /// Fleet identities allowed to call, and which route classes each may use (needs `inbound_tls.client_ca`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub callers: Vec<CallerConfig>,
    /// File holding the Amity server key, added as `x-server-key` to auth-token calls.
    #[serde(default)]
    pub server_key_file: Option<PathBuf>,
    /// Environment variable holding the server key (instead of `server_key_file`).
    #[serde(default)]
    pub server_key_env: Option<String>,
    /// File holding an admin token, added as `Authorization: Bearer` to admin calls.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// What to do with a server key or admin token a caller sends when the proxy injects its own.
    #[serde(default)]
    pub caller_secrets: CallerSecrets,
    /// Address of the admin listener (health, readiness, certificates, metrics, reload).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// File holding a token the admin listener requires as `Authorization: Bearer` on every
    /// endpoint but `/healthz` and `/readyz`.
    #[serde(default)]
    pub admin_auth_token_file: Option<PathBuf>,
    /// Where calls are forwarded.
    pub upstream: UpstreamConfig,
    /// Client certificates registered in the Amity console (at most 2).
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_certs: Vec<ClientCertConfig>,
    /// The certificate to present while it is valid; default: the valid one that expires last.
    #[serde(default)]
    pub active: Option<String>,
    /// Consecutive rejections of the active certificate after which the other one takes over.
    #[serde(default = "default_failover_after")]
    pub failover_after: u32,
    /// Which calls may pass; everything else is refused with 403.
    #[serde(default)]
    pub routes: RoutesConfig,
    /// Size limits on what backends send.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Bounds on every wait.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Threads serving backends, each with its own event loop and upstream pool; 0: one per CPU core.
    /// Read at start only.
    #[serde(default)]
    pub workers: usize,
}

/// TLS on the backend-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundTlsConfig {
    /// The gateway's certificate chain (PEM).
    pub cert: PathBuf,
    /// The gateway's private key (PEM).
    pub key: PathBuf,
    /// Fleet CA (PEM); when set, callers must present a certificate it issued.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// One fleet identity and what it may call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// A SAN DNS name, a SAN URI (e.g. a SPIFFE ID) or the CN of the caller's certificate.
    pub identity: String,
    /// Route classes it may use: `auth_token`, `admin`, `extra`.
    pub routes: Vec<String>,
}

/// Handling of secrets a caller sends when the proxy injects its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerSecrets {
    /// Remove the caller's value and use the proxy's.
    #[default]
    Strip,
    /// Refuse the request with 403.
    Reject,
}

/// The upstream Amity API host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Amity region: `eu`, `sg` or `us`. Exactly one of `region` and `url`.
    #[serde(default)]
    pub region: Option<String>,
    /// A full `https://` base URL, e.g. a local stand-in Amity.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra trust roots (PEM) added to the public web roots; for local testing.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How long an upstream connection is kept without a request, in milliseconds. The
    /// default is below the usual server idle timeouts (nginx 75 s, cloud load balancers
    /// 60 s), so the proxy closes a quiet connection before the server does.
    #[serde(default = "default_pool_idle_ms")]
    pub pool_idle_timeout_ms: u64,
    /// How many idle connections the pool keeps per upstream host; HTTP/1.1 upstreams only
    /// (with HTTP/2 each worker keeps one connection, more only while each is full).
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// HTTP answers by which the upstream says, after the handshake, that it refused our client
    /// certificate; such an answer counts as a rejection (failover). Default: nginx's.
    #[serde(default, deserialize_with = "null_as_default")]
    pub cert_rejected_answers: CertRejectedAnswers,
}

/// How much of an answer's body is read to look for `body_contains`: a refusal page is small.
pub const CERT_REJECTED_BODY_BYTES: usize = 8192;

/// An HTTP answer that says the upstream refused our client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRejectedAnswer {
    /// The status, 400 to 599 (a success is never read).
    pub status: u16,
    /// Text (case-sensitive) in the first [`CERT_REJECTED_BODY_BYTES`] of the body.
    pub body_contains: String,
}

/// `upstream.cert_rejected_answers`; a list given replaces the default, `[]` recognises none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CertRejectedAnswers(pub Vec<CertRejectedAnswer>);

impl Default for CertRejectedAnswers {
    /// nginx with `ssl_verify_client on` completes the handshake, then answers 400 with these
    /// pages: a certificate it cannot verify (its internal 495), none at all (496).
    fn default() -> Self {
        let nginx = |text: &str| CertRejectedAnswer {
            status: 400,
            body_contains: text.to_string(),
        };
        Self(vec![
            nginx("The SSL certificate error"),
            nginx("No required SSL certificate was sent"),
        ])
    }
}

impl CertRejectedAnswers {
    /// Longest `body_contains` accepted.
    const MAX_TEXT: usize = 256;

    /// Problems, as (field, reason).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, a) in self.0.iter().enumerate() {
            let field = format!("upstream.cert_rejected_answers[{i}]");
            if !(400..=599).contains(&a.status) {
                out.push((
                    format!("{field}.status"),
                    format!("{} is not an error status (400 to 599)", a.status),
                ));
            }
            if a.body_contains.trim().is_empty() {
                out.push((
                    format!("{field}.body_contains"),
                    "is empty: name text the refusal page holds, so that the upstream's other answers with this status pass".to_string(),
                ));
            } else if a.body_contains.len() > Self::MAX_TEXT {
                out.push((
                    format!("{field}.body_contains"),
                    format!(
                        "is {} bytes long; at most {}",
                        a.body_contains.len(),
                        Self::MAX_TEXT
                    ),
                ));
            }
        }
        out
    }
}

/// One client certificate, as registered in the Amity console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// The certificate's name in the console (1 to 30 of `A-Za-z0-9._-`).
    pub name: String,
    /// PEM certificate (chain allowed, leaf first).
    pub cert: PathBuf,
    /// PEM private key matching `cert`.
    pub key: PathBuf,
}

/// Which calls the proxy lets through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// `GET /api/v3/authentication/token?userId=...`.
    #[serde(default = "yes")]
    pub auth_token_v3: bool,
    /// `POST /api/v4/authentication/token`.
    #[serde(default = "yes")]
    pub auth_token_v4: bool,
    /// Calls that carry an admin token (`Authorization: Bearer` or `x-admin-token`).
    #[serde(default = "yes")]
    pub admin: bool,
    /// Path prefixes admin-token calls may use; narrow it to allow fewer.
    #[serde(default = "default_admin_prefixes")]
    pub admin_prefixes: Vec<String>,
    /// Further calls to allow, by method and exact path or prefix.
    #[serde(default)]
    pub extra: Vec<ExtraRoute>,
}

/// An extra allowed call: a method (or any) and an exact path or a prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRoute {
    /// HTTP method, e.g. `GET`; any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Exact path to allow.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix to allow.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Limits on requests from backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    #[serde(default = "default_body_limit")]
    pub max_request_body_bytes: usize,
    /// Largest request head accepted, in bytes (431 beyond).
    #[serde(default = "default_header_limit")]
    pub max_header_bytes: usize,
    /// Open backend connections at most; further ones wait in the kernel's accept queue.
    /// Each HTTP/1 connection holds two file descriptors (see `LimitNOFILE` under systemd).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests in flight to the upstream at most; beyond it: 503 with Retry-After.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-caller token bucket (caller identity with mTLS, else client IP); none when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

/// A token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// Timeouts, all in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP connect to the upstream.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// TLS handshake with the upstream.
    #[serde(default = "default_handshake_ms")]
    pub handshake_ms: u64,
    /// From forwarding a request to receiving the response head, connecting included
    /// when no pooled connection is free.
    #[serde(default = "default_response_ms")]
    pub response_ms: u64,
    /// Time a backend has to send a complete HTTP/1 request head from its first byte, and
    /// then the request body (HTTP/1 and HTTP/2). The wait before a head is `idle_ms`.
    #[serde(default = "default_header_read_ms")]
    pub header_read_ms: u64,
    /// A backend connection with no traffic and no request in flight for this long is closed.
    #[serde(default = "default_idle_ms")]
    pub idle_ms: u64,
    /// A response body the backend does not take for this long (an HTTP/2 caller that keeps
    /// its window closed, an HTTP/1 caller that does not read) is dropped: its upstream stream
    /// is reset, freeing the upstream connection's window, and the backend connection is
    /// closed once its other requests are done.
    #[serde(default = "default_send_ms")]
    pub send_ms: u64,
    /// TLS handshake with a backend (with `inbound_tls`).
    #[serde(default = "default_inbound_handshake_ms")]
    pub inbound_handshake_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
}

/// Lets `key:` with no value mean the default, as users expect of an empty list.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}
/// More worker threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

fn default_failover_after() -> u32 {
    3
}
fn yes() -> bool {
    true
}
fn default_admin_prefixes() -> Vec<String> {
    vec!["/api/".to_string()]
}
fn default_pool_idle_ms() -> u64 {
    30_000
}
fn default_pool_max_idle() -> usize {
    // As many as may be in flight: an HTTP/1.1 upstream needs a connection per
    // concurrent request, and a smaller pool would close and re-handshake them.
    default_max_in_flight()
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_header_limit() -> usize {
    16 * 1024
}
fn default_connect_ms() -> u64 {
    3_000
}
fn default_handshake_ms() -> u64 {
    5_000
}
fn default_response_ms() -> u64 {
    15_000
}
fn default_header_read_ms() -> u64 {
    10_000
}
fn default_idle_ms() -> u64 {
    60_000
}
fn default_send_ms() -> u64 {
    10_000
}
fn default_inbound_handshake_ms() -> u64 {
    5_000
}
fn default_max_connections() -> usize {
    20_000
}
fn default_max_in_flight() -> usize {
    1_024
}
fn default_grace_ms() -> u64 {
    10_000
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            auth_token_v3: true,
            auth_token_v4: true,
            admin: true,
            admin_prefixes: default_admin_prefixes(),
            extra: Vec::new(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: default_body_limit(),
            max_header_bytes: default_header_limit(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            rate_limit: None,
        }
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            handshake_ms: default_handshake_ms(),
            response_ms: default_response_ms(),
            header_read_ms: default_header_read_ms(),
            idle_ms: default_idle_ms(),
            send_ms: default_send_ms(),
            inbound_handshake_ms: default_inbound_handshake_ms(),
            shutdown_grace_ms: default_grace_ms(),
        }
    }
}

impl TimeoutsConfig {
    /// TCP connect bound.
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    /// TLS handshake bound.
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms)
    }
    /// Response head bound.
    pub fn response(&self) -> Duration {
        Duration::from_millis(self.response_ms)
    }
    /// Request head read bound.
    pub fn header_read(&self) -> Duration {
        Duration::from_millis(self.header_read_ms)
    }
    /// Idle backend connection bound.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    /// Bound on a response body the backend does not take.
    pub fn send(&self) -> Duration {
        Duration::from_millis(self.send_ms)
    }
    /// Inbound TLS handshake bound.
    pub fn inbound_handshake(&self) -> Duration {
        Duration::from_millis(self.inbound_handshake_ms)
    }
    /// Graceful shutdown bound.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// One thing wrong with a configuration: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, e.g. `client_certs[1].key`.
    pub field: String,
    /// What is wrong, naming the value or file.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The YAML did not parse or did not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}{}", snippet.as_deref().map(|s| format!("\n{s}")).unwrap_or_default())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
        /// The lines around the error, only for a file that looks like a configuration
        /// (never for one that may be a secret); never sent over HTTP.
        snippet: Option<String>,
    },
    /// The file holds PEM data, e.g. a private key: reported by kind, its content never shown.
    #[error("{path}: holds {kind}, not a YAML configuration; its content is not shown (does -c name the right file?)")]
    NotConfig {
        /// The file.
        path: PathBuf,
        /// What it holds, e.g. `a PEM private key (EC PRIVATE KEY)`.
        kind: String,
    },
    /// The YAML parsed but the values are wrong; every problem is listed.
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The error without the file's lines, for answers that leave the machine (`POST /reload`).
    pub fn without_snippet(&self) -> String {
        match self {
            ConfigError::Parse { path, message, .. } => format!("{}: {message}", path.display()),
            other => other.to_string(),
        }
    }
}

/// Where calls go: scheme is always https.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// Base URL without a trailing slash, e.g. `https://apix.sg.amity.co`.
    pub base: String,
    /// Host name (or IP) used for SNI and the Host header.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host[:port]` as sent in Host / :authority.
    pub authority: http::uri::Authority,
    /// Path prefix of the base URL (usually empty).
    pub path_prefix: String,
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
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The private key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    /// What the leaf says.
    pub info: CertInfo,
}

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
    /// The upstream to call.
    pub upstream: UpstreamTarget,
    /// Extra trust roots from `upstream.ca`.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Client certificates, in config order.
    pub certs: Vec<LoadedCert>,
    /// The gateway's TLS identity and fleet CA, with `inbound_tls`.
    pub inbound: Option<LoadedInbound>,
    /// The server key to inject.
    pub server_key: Option<Secret>,
    /// The admin token to inject.
    pub admin_token: Option<Secret>,
    /// The token the admin listener requires.
    pub admin_auth_token: Option<Secret>,
    /// What is allowed but unsafe; logged at start and printed by `check`.
    pub warnings: Vec<Problem>,
}

/// `inbound_tls` with its files read.
#[derive(Debug)]
pub struct LoadedInbound {
    /// Resolved certificate path.
    pub cert_path: PathBuf,
    /// What the gateway's leaf certificate says.
    pub info: CertInfo,
    /// The gateway's chain.
    pub chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The gateway's key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
    /// Fleet CA certificates, when callers must present one.
    pub client_ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

/// A secret value: Debug and Display print `[redacted]`, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; refuses one that is empty or not a valid header value.
    pub fn new(value: String) -> Result<Self, String> {
        let v = value.trim().to_string();
        if v.is_empty() {
            return Err("is empty".into());
        }
        if http::HeaderValue::from_str(&v).is_err() {
            return Err("contains characters that cannot go in an HTTP header".into());
        }
        Ok(Self(v))
    }

    /// Reads a secret file (surrounding whitespace and a final newline are dropped).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = pki::read_bounded(path)
            .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::new(text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The value, for the one place that puts it in a header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads, parses and validates a config file; the one path used by `run`, `check` and reload.
pub fn load(path: &Path) -> Result<Validated, ConfigError> {
    let text = pki::read_bounded(path)
        .and_then(|b| String::from_utf8(b).map_err(|_| std::io::Error::other("not UTF-8 text")))
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let config = parse(path, &text)?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    validate(path, config, &base_dir)
}

/// Parses YAML text into a [`Config`]; errors carry line and column. A file holding PEM
/// data is refused unread, and the lines around an error are kept only for a file that
/// looks like a configuration: a key or secret file named by mistake is never echoed.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    if let Some(kind) = pem_kind(text) {
        return Err(ConfigError::NotConfig {
            path: path.to_path_buf(),
            kind,
        });
    }
    serde_saphyr::from_str::<Config>(text).map_err(|e| {
        let message = e.without_snippet().to_string();
        let (message, snippet) = if looks_like_config(text) {
            let name = path.display().to_string();
            let mut options = serde_saphyr::RenderOptions::default();
            options.source_name = Some(&name);
            // The first line repeats the message; the lines around the error follow.
            let full = e.render_with_options(options);
            let snippet = full.split_once('\n').map(|(_, s)| s.trim_end().to_string());
            (message, snippet.filter(|s| !s.is_empty()))
        } else {
            let at = e
                .location()
                .map(|l| format!(" (line {} column {})", l.line(), l.column()))
                .unwrap_or_default();
            let message = format!(
                "does not look like a configuration (no line starts with a key such as listen:){at}; its content is not shown (does -c name the right file?)"
            );
            (message, None)
        };
        ConfigError::Parse {
            path: path.to_path_buf(),
            message,
            snippet,
        }
    })
}

/// What PEM data `text` holds, if any: `a PEM private key (EC PRIVATE KEY)`,
/// `PEM data (CERTIFICATE)`. A config file holds none.
fn pem_kind(text: &str) -> Option<String> {
    let labels: Vec<String> = text
        .split("-----BEGIN ")
        .skip(1)
        .map(|rest| {
            let label = rest.split_once("-----").map_or("", |(l, _)| l);
            label.chars().take(40).collect()
        })
        .collect();
    // A key may follow a certificate in one file: any key block decides the kind.
    match labels.iter().find(|l| l.contains("PRIVATE KEY")) {
        Some(key) => Some(format!("a PEM private key ({key})")),
        None => labels.first().map(|l| format!("PEM data ({l})")),
    }
}

/// Whether a line starts with a mapping key (`listen:`), as every config does and a
/// one-line secret (a server key, an admin token) does not.
fn looks_like_config(text: &str) -> bool {
    text.lines().any(|l| {
        l.split_once(':').is_some_and(|(key, rest)| {
            key.starts_with(|c: char| c.is_ascii_alphabetic())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (rest.is_empty() || rest.starts_with([' ', '\t']))
        })
    })
}

/// Resolves `p` against the config file's folder.
pub fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Checks every value and loads every file named; lists all problems at once.
pub fn validate(path: &Path, config: Config, base_dir: &Path) -> Result<Validated, ConfigError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut problem = |field: &str, reason: String| {
        problems.push(Problem {
            field: field.to_string(),
            reason,
        })
    };

    let listen = parse_addr(&config.listen)
        .map_err(|r| problem("listen", r))
        .ok();
    let admin_listen = parse_addr(&config.admin_listen)
        .map_err(|r| problem("admin_listen", r))
        .ok();
    if let (Some(l), Some(a)) = (listen, admin_listen) {
        if l == a && l.port() != 0 {
            problem("admin_listen", format!("{a} is also the listen address"));
        }
    }

    let upstream = upstream_target(&config.upstream)
        .map_err(|(f, r)| problem(f, r))
        .ok();
    let mut extra_roots = Vec::new();
    if let Some(ca) = &config.upstream.ca {
        let ca_path = resolve(base_dir, ca);
        match pki::read_cert_chain(&ca_path) {
            Ok(c) => extra_roots = c,
            Err(e) => problem("upstream.ca", e.to_string()),
        }
    }

    if config.client_certs.len() > pki::MAX_CERTS {
        problem(
            "client_certs",
            format!(
                "{} certificates listed; Amity allows at most {} per application",
                config.client_certs.len(),
                pki::MAX_CERTS
            ),
        );
    }
    let mut certs = Vec::new();
    for (i, c) in config.client_certs.iter().enumerate() {
        let field = format!("client_certs[{i}]");
        if let Err(e) = CertName::parse(&c.name) {
            problem(&format!("{field}.name"), e.to_string());
        }
        if config.client_certs[..i].iter().any(|o| o.name == c.name) {
            problem(
                &format!("{field}.name"),
                format!("{:?} is listed twice; names must be unique", c.name),
            );
        }
        let cert_path = resolve(base_dir, &c.cert);
        let key_path = resolve(base_dir, &c.key);
        let chain = pki::read_cert_chain(&cert_path)
            .map_err(|e| problem(&format!("{field}.cert"), e.to_string()))
            .ok();
        let key = pki::read_private_key(&key_path)
            .map_err(|e| problem(&format!("{field}.key"), e.to_string()))
            .ok();
        if let (Some(chain), Some(key)) = (chain, key) {
            let info = match CertInfo::from_der(&chain[0]) {
                Ok(i) => i,
                Err(e) => {
                    problem(
                        &format!("{field}.cert"),
                        format!("{}: {e}", cert_path.display()),
                    );
                    continue;
                }
            };
            if let Err(e) = pki::key_matches(&key, &info) {
                problem(
                    &format!("{field}.key"),
                    format!("{}: {e} {}", key_path.display(), cert_path.display()),
                );
                continue;
            }
            warnings.extend(key_too_open(&format!("{field}.key"), &key_path));
            certs.push(LoadedCert {
                name: c.name.clone(),
                cert_path,
                key_path,
                chain,
                key,
                info,
            });
        }
    }

    for (field, v) in [
        (
            "limits.max_request_body_bytes",
            config.limits.max_request_body_bytes as u64,
        ),
        (
            "limits.max_header_bytes",
            config.limits.max_header_bytes as u64,
        ),
        ("timeouts.connect_ms", config.timeouts.connect_ms),
        ("timeouts.handshake_ms", config.timeouts.handshake_ms),
        ("timeouts.response_ms", config.timeouts.response_ms),
        ("timeouts.header_read_ms", config.timeouts.header_read_ms),
        (
            "upstream.pool_idle_timeout_ms",
            config.upstream.pool_idle_timeout_ms,
        ),
    ] {
        if v == 0 {
            problem(field, "must be greater than 0".to_string());
        }
    }
    if config.limits.max_header_bytes < 8192 {
        problem(
            "limits.max_header_bytes",
            format!(
                "{} is below the smallest supported value, 8192",
                config.limits.max_header_bytes
            ),
        );
    }
    for (i, p) in config.routes.admin_prefixes.iter().enumerate() {
        if !p.starts_with("/api/") {
            problem(
                &format!("routes.admin_prefixes[{i}]"),
                format!("{p:?} must start with /api/"),
            );
        }
    }
    for (i, r) in config.routes.extra.iter().enumerate() {
        let field = format!("routes.extra[{i}]");
        match (&r.path, &r.prefix) {
            (Some(p), None) | (None, Some(p)) => {
                if !p.starts_with('/') {
                    problem(&field, format!("{p:?} must start with /"));
                }
            }
            _ => problem(&field, "give exactly one of path and prefix".to_string()),
        }
        if let Some(m) = &r.method {
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                problem(
                    &format!("{field}.method"),
                    format!("{m:?} is not an HTTP method"),
                );
            }
        }
    }

    if let Some(a) = &config.active {
        if !config.client_certs.iter().any(|c| &c.name == a) {
            problem(
                "active",
                format!("{a:?} is not the name of a certificate under client_certs"),
            );
        }
    }
    if config.failover_after == 0 {
        problem("failover_after", "must be greater than 0".to_string());
    }
    for (field, reason) in config.upstream.cert_rejected_answers.problems() {
        problem(&field, reason);
    }
    if config.workers > MAX_WORKERS {
        problem(
            "workers",
            format!("{} is more than {MAX_WORKERS}", config.workers),
        );
    }

    let inbound = config.inbound_tls.as_ref().and_then(|t| {
        let cert_path = resolve(base_dir, &t.cert);
        let chain = pki::read_cert_chain(&cert_path)
            .map_err(|e| problem("inbound_tls.cert", e.to_string()))
            .ok();
        let key_path = resolve(base_dir, &t.key);
        let key = pki::read_private_key(&key_path)
            .map_err(|e| problem("inbound_tls.key", e.to_string()))
            .ok();
        let client_ca = match &t.client_ca {
            None => Some(None),
            Some(ca) => pki::read_cert_chain(&resolve(base_dir, ca))
                .map(Some)
                .map_err(|e| problem("inbound_tls.client_ca", e.to_string()))
                .ok(),
        };
        let (chain, key, client_ca) = (chain?, key?, client_ca?);
        let info =
            CertInfo::from_der(&chain[0]).and_then(|i| pki::key_matches(&key, &i).map(|()| i));
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                problem("inbound_tls.key", format!("{}: {e}", key_path.display()));
                return None;
            }
        };
        warnings.extend(key_too_open("inbound_tls.key", &key_path));
        Some(LoadedInbound {
            cert_path,
            info,
            chain,
            key,
            client_ca,
        })
    });
    if let Some(l) = listen.filter(|l| !l.ip().is_loopback()) {
        if config.inbound_tls.is_none() {
            if config.allow_plaintext_non_loopback {
                warnings.push(Problem {
                    field: "allow_plaintext_non_loopback".into(),
                    reason: format!("plain HTTP on {l}, which is not a loopback address: anyone who reaches it can use the proxy's certificates"),
                });
            } else {
                problem(
                    "listen",
                    format!("{l} is not a loopback address and inbound_tls is not set: anyone who reaches it could use the proxy's keys; set inbound_tls (with client_ca), or allow_plaintext_non_loopback: true"),
                );
            }
        }
        let injected: Vec<&str> = [
            ("server_key_file", config.server_key_file.is_some()),
            ("server_key_env", config.server_key_env.is_some()),
            ("admin_token_file", config.admin_token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let no_client_ca = config
            .inbound_tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_none());
        if no_client_ca && !injected.is_empty() {
            let injected = injected.join(" and ");
            if config.allow_unauthenticated_callers {
                warnings.push(Problem {
                    field: "allow_unauthenticated_callers".into(),
                    reason: format!("inbound_tls has no client_ca on {l}, which is not a loopback address, and the proxy injects {injected}: anyone who reaches it can mint tokens"),
                });
            } else {
                problem(
                    "inbound_tls.client_ca",
                    format!("is not set, but listen {l} is not a loopback address and the proxy injects {injected}: anyone who reaches it could mint tokens; set inbound_tls.client_ca, or allow_unauthenticated_callers: true"),
                );
            }
        }
    }
    if let Some(a) = admin_listen.filter(|a| !a.ip().is_loopback()) {
        let token = match config.admin_auth_token_file {
            Some(_) => "",
            None => " and consider admin_auth_token_file",
        };
        warnings.push(Problem {
            field: "admin_listen".into(),
            reason: format!("{a} is not a loopback address: whoever reaches it can read /certs and /metrics and ask for reloads; let only probes and scrapers reach it (on Kubernetes, the NetworkPolicy in deploy/kubernetes){token}"),
        });
    }
    let has_client_ca = config
        .inbound_tls
        .as_ref()
        .is_some_and(|t| t.client_ca.is_some());
    if !config.callers.is_empty() && !has_client_ca {
        problem(
            "callers",
            "needs inbound_tls.client_ca: callers are told apart by their client certificates"
                .to_string(),
        );
    }
    for (i, c) in config.callers.iter().enumerate() {
        if c.identity.trim().is_empty() {
            problem(&format!("callers[{i}].identity"), "is empty".to_string());
        }
        for r in &c.routes {
            if !matches!(r.as_str(), "auth_token" | "admin" | "extra") {
                problem(
                    &format!("callers[{i}].routes"),
                    format!("{r:?} is not a route class; use auth_token, admin or extra"),
                );
            }
        }
    }
    let server_key = match (&config.server_key_file, &config.server_key_env) {
        (Some(_), Some(_)) => {
            problem(
                "server_key_file",
                "give server_key_file or server_key_env, not both".to_string(),
            );
            None
        }
        (Some(f), None) => Secret::from_file(&resolve(base_dir, f))
            .map_err(|e| problem("server_key_file", e))
            .ok(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) => Secret::new(v)
                .map_err(|e| problem("server_key_env", format!("${var}: {e}")))
                .ok(),
            Err(_) => {
                problem(
                    "server_key_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if server_key.as_ref().is_some_and(|k| k.expose().len() > 150) {
        let field = match &config.server_key_env {
            Some(_) => "server_key_env",
            None => "server_key_file",
        };
        problem(
            field,
            "the server key is longer than Amity's 150 characters".to_string(),
        );
    }
    let mut secret_file = |field: &str, f: &Option<PathBuf>| {
        f.as_ref().and_then(|f| {
            Secret::from_file(&resolve(base_dir, f))
                .map_err(|e| problem(field, e))
                .ok()
        })
    };
    let admin_token = secret_file("admin_token_file", &config.admin_token_file);
    let admin_auth_token = secret_file("admin_auth_token_file", &config.admin_auth_token_file);
    if let Some(rl) = &config.limits.rate_limit {
        if rl.per_second == 0 || rl.burst == 0 {
            problem(
                "limits.rate_limit",
                "per_second and burst must be greater than 0".to_string(),
            );
        }
    }
    for (field, v) in [
        (
            "limits.max_connections",
            config.limits.max_connections as u64,
        ),
        ("limits.max_in_flight", config.limits.max_in_flight as u64),
        ("timeouts.idle_ms", config.timeouts.idle_ms),
        ("timeouts.send_ms", config.timeouts.send_ms),
        (
            "timeouts.inbound_handshake_ms",
            config.timeouts.inbound_handshake_ms,
        ),
    ] {
        if v == 0 {
            problem(field, "must be greater than 0".to_string());
        }
    }

    match (listen, admin_listen, upstream) {
        (Some(listen), Some(admin_listen), Some(upstream)) if problems.is_empty() => {
            Ok(Validated {
                path: path.to_path_buf(),
                config,
                listen,
                admin_listen,
                upstream,
                extra_roots,
                certs,
                inbound,
                server_key,
                admin_token,
                admin_auth_token,
                warnings,
            })
        }
        _ => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

/// A warning when users other than this service's may read the private key at `path`:
/// any access for others, or for a group this process is not in (a Kubernetes Secret
/// mounted 0440 with the pod's `fsGroup` is fine).
fn key_too_open(field: &str, path: &Path) -> Option<Problem> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    let group_ok = mode & 0o070 == 0 || own_groups().contains(&meta.gid());
    (mode & 0o007 != 0 || !group_ok).then(|| Problem {
        field: field.to_string(),
        reason: format!(
            "{} is readable by others (mode {mode:04o}); chmod 600 it (or 640 with a group only this service is in)",
            path.display()
        ),
    })
}

/// This process's group ids (real, effective and supplementary), as Linux reports them.
fn own_groups() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter_map(|l| l.strip_prefix("Gid:").or_else(|| l.strip_prefix("Groups:")))
        .flat_map(|l| l.split_whitespace().filter_map(|g| g.parse().ok()))
        .collect()
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an address with a port, e.g. 127.0.0.1:8080 or [::1]:8080")
    })
}

/// The base URL of an Amity region: the `apix` hosts of Amity's current documentation
/// (older pages name `api.<region>.amity.co`, reachable through `upstream.url`).
pub fn region_url(region: &str) -> Option<&'static str> {
    match region {
        "eu" => Some("https://apix.eu.amity.co"),
        "sg" => Some("https://apix.sg.amity.co"),
        "us" => Some("https://apix.us.amity.co"),
        _ => None,
    }
}

fn upstream_target(u: &UpstreamConfig) -> Result<UpstreamTarget, (&'static str, String)> {
    let (field, url) = match (&u.region, &u.url) {
        (Some(r), None) => match region_url(r) {
            Some(url) => ("upstream.region", url.to_string()),
            None => {
                return Err((
                    "upstream.region",
                    format!("{r:?} is not an Amity region; use eu, sg or us (or upstream.url)"),
                ))
            }
        },
        (None, Some(url)) => ("upstream.url", url.clone()),
        (Some(_), Some(_)) => {
            return Err(("upstream", "give region or url, not both".to_string()));
        }
        (None, None) => return Err(("upstream", "give region (eu, sg, us) or url".to_string())),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| (field, format!("{url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err((field, format!("{url:?} must start with https://")));
    }
    if uri.query().is_some() {
        return Err((field, format!("{url:?} must not have a query")));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| (field, format!("{url:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err((field, format!("{url:?} must not carry credentials")));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(443);
    let path_prefix = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamTarget {
        base: format!("https://{}{}", authority, path_prefix),
        host,
        port,
        authority,
        path_prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(Path::new("t.yaml"), s)
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("top-secret\n".into()).unwrap();
        assert_eq!(s.expose(), "top-secret");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert!(Secret::new("  ".into()).is_err());
        assert!(Secret::new("a\u{1}b".into()).is_err());
    }

    #[test]
    fn regions_name_the_hosts_of_amitys_current_documentation() {
        for (region, host) in [
            ("eu", "apix.eu.amity.co"),
            ("sg", "apix.sg.amity.co"),
            ("us", "apix.us.amity.co"),
        ] {
            let u = UpstreamConfig {
                region: Some(region.into()),
                ..Default::default()
            };
            let t = upstream_target(&u).unwrap();
            assert_eq!((t.host.as_str(), t.port), (host, 443), "region {region}");
            assert_eq!(t.path_prefix, "", "region {region}");
        }
    }

    #[test]
    fn region_and_url_resolve() {
        let u = UpstreamConfig {
            region: Some("eu".into()),
            ..Default::default()
        };
        let t = upstream_target(&u).unwrap();
        assert_eq!(t.host, "apix.eu.amity.co");
        assert_eq!(t.port, 443);
        let u = UpstreamConfig {
            url: Some("https://127.0.0.1:9443/".into()),
            ..Default::default()
        };
        let t = upstream_target(&u).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_prefix.as_str()),
            ("127.0.0.1", 9443, "")
        );
        let u = UpstreamConfig {
            url: Some("http://127.0.0.1:9443".into()),
            ..Default::default()
        };
        assert!(upstream_target(&u).unwrap_err().1.contains("https://"));
    }

    #[test]
    fn cert_rejected_answers_default_to_nginx_and_are_checked() {
        let c = parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\n").unwrap();
        assert_eq!(
            c.upstream.cert_rejected_answers,
            CertRejectedAnswers::default()
        );
        assert_eq!(c.upstream.cert_rejected_answers.0[0].status, 400);
        assert!(c.upstream.cert_rejected_answers.problems().is_empty());
        let c = parse_str(
            "listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers: []\n",
        )
        .unwrap();
        assert!(c.upstream.cert_rejected_answers.0.is_empty());
        let c = parse_str(&format!(
            "listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {{status: 403, body_contains: denied}}\n    - {{status: 200, body_contains: ' '}}\n    - {{status: 495, body_contains: {}}}\n",
            "x".repeat(300)
        ))
        .unwrap();
        let problems = c.upstream.cert_rejected_answers.problems();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "upstream.cert_rejected_answers[1].status",
                "upstream.cert_rejected_answers[1].body_contains",
                "upstream.cert_rejected_answers[2].body_contains",
            ]
        );
        assert!(
            problems[0].1.contains("200 is not an error status"),
            "{problems:?}"
        );
        let e = parse_str("listen: 127.0.0.1:1\nupstream:\n  region: sg\n  cert_rejected_answers:\n    - {status: 403}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("body_contains"), "{e}");
    }

    #[test]
    fn pem_files_are_named_by_kind() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(pem_kind(cert).as_deref(), Some("PEM data (CERTIFICATE)"));
        let both = format!("{cert}{key}");
        assert_eq!(
            pem_kind(&both).as_deref(),
            Some("a PEM private key (EC PRIVATE KEY)")
        );
        let config = "# the client PRIVATE KEY path goes under client_certs\nlisten: 127.0.0.1:1\n";
        assert_eq!(pem_kind(config), None);
        assert!(looks_like_config(config));
        assert!(!looks_like_config("sk-0123:abc\neyJhbGciOi.x.y\n"));
    }

    #[test]
    fn unknown_key_is_rejected_with_position() {
        let e =
            parse_str("listen: 127.0.0.1:1\nupstream: {region: sg}\nlisten_typo: 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("listen_typo"), "{msg}");
        assert!(msg.contains("line 3") || msg.contains("3:"), "{msg}");
    }
}
