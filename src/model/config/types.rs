//! The top of `config.yaml`: the listeners, callers, secrets and client certificates;
//! the larger sections have files of their own.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::apps::{AppConfig, AppSettings, DEFAULT_APP};
use super::audit::AuditConfig;
use super::callers::CallerConfig;
use super::error::Problem;
use super::limits::LimitsConfig;
use super::nulls::null_as_default;
use super::resolve;
use super::timeouts::TimeoutsConfig;

/// The whole configuration file. An app's settings ([`AppSettings`]) are given either at the
/// top, for one app named `default`, or in each of `apps`, never both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address backends connect to: plain HTTP (HTTP/1.1 or h2c), or TLS with `inbound_tls`;
    /// with several apps, `/apps/<name>/` before the path selects one. Read at start only.
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
    /// Fleet identities allowed to call, and what each may call (needs `inbound_tls.client_ca`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub callers: Vec<CallerConfig>,
    /// What to do with a server key or admin token a caller sends when the proxy injects its own.
    #[serde(default)]
    pub caller_secrets: CallerSecrets,
    /// Address of the admin listener (health, readiness, certificates, metrics, reload).
    /// Read at start only.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// File holding a token the admin listener requires as `Authorization: Bearer` on every
    /// endpoint but `/healthz` and `/readyz`.
    #[serde(default)]
    pub admin_auth_token_file: Option<PathBuf>,
    /// The Amity apps served, each with its own upstream, certificates and secrets.
    #[serde(default, deserialize_with = "null_as_default")]
    pub apps: Vec<AppConfig>,
    /// One record per auth-token mint and admin call, allowed or refused.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
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
    /// The single-app shape's settings, read beside these fields (see `shape.rs`).
    #[serde(skip)]
    pub single: Option<AppSettings>,
    /// Keys of an app's settings given at the top while `apps` is given too.
    #[serde(skip)]
    pub app_keys_at_top: Vec<String>,
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

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}

impl Config {
    /// Every file the configuration names (certificates, keys, CAs, secrets), resolved
    /// against `base_dir`; for a file that does not fully validate, those it can read.
    pub fn named_files(&self, base_dir: &Path) -> Vec<PathBuf> {
        let apps = self.app_list().unwrap_or_else(|_| self.apps.clone());
        let inbound = self
            .inbound_tls
            .iter()
            .flat_map(|t| [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()])
            .flatten();
        apps.iter()
            .flat_map(|a| a.settings.files())
            .chain(inbound)
            .chain(self.admin_auth_token_file.iter())
            .map(|p| resolve(base_dir, p))
            .collect()
    }

    /// Whether the file uses `apps` rather than the single-app shape.
    pub fn has_apps(&self) -> bool {
        !self.apps.is_empty()
    }

    /// The apps, in config order: `apps`, or the top-level settings as one app named
    /// [`DEFAULT_APP`]. Problems: both shapes at once.
    pub fn app_list(&self) -> Result<Vec<AppConfig>, Vec<Problem>> {
        if self.has_apps() {
            if self.app_keys_at_top.is_empty() {
                return Ok(self.apps.clone());
            }
            return Err(self
                .app_keys_at_top
                .iter()
                .map(|f| Problem::new(f, "belongs under each of apps[] when apps is given"))
                .collect());
        }
        let settings = self.single.clone().unwrap_or_default();
        Ok(vec![AppConfig {
            name: DEFAULT_APP.to_string(),
            listen: None,
            settings,
        }])
    }
}
