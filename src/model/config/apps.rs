//! `apps`: the Amity apps one gateway serves, and the single-app shape (the same fields at the
//! top of the file) read as one app named `default`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::Problem;
use super::resolve;
use super::routes::RoutesConfig;
use super::types::{default_failover_after, null_as_default, ClientCertConfig, Config};
use super::upstream::UpstreamConfig;
use crate::model::pki::CertName;

/// The app a single-app configuration defines.
pub const DEFAULT_APP: &str = "default";

/// One Amity app: its region host, certificates and secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's name in paths (`/apps/<name>/`), metrics and logs (1 to 30 of `A-Za-z0-9._-`).
    pub name: String,
    /// A listener of the app's own, where no `/apps/<name>/` prefix is needed. Read at start only.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where the app's calls are forwarded.
    pub upstream: UpstreamConfig,
    /// Client certificates registered in this app's console (at most 2).
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_certs: Vec<ClientCertConfig>,
    /// The certificate to present while it is valid; default: the valid one that expires last.
    #[serde(default)]
    pub active: Option<String>,
    /// Consecutive rejections of the active certificate after which the other one takes over.
    #[serde(default = "default_failover_after")]
    pub failover_after: u32,
    /// File holding the app's server key, added as `x-server-key` to auth-token calls.
    #[serde(default)]
    pub server_key_file: Option<PathBuf>,
    /// Environment variable holding the server key (instead of `server_key_file`).
    #[serde(default)]
    pub server_key_env: Option<String>,
    /// File holding an admin token of the app, added as `Authorization: Bearer` to admin calls.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Which calls may pass; everything else is refused with 403.
    #[serde(default)]
    pub routes: RoutesConfig,
}

impl AppConfig {
    /// Every file it names: certificates, keys, the upstream CA, secrets.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.client_certs
            .iter()
            .flat_map(|c| [&c.cert, &c.key])
            .chain(self.upstream.ca.iter())
            .chain(self.server_key_file.iter())
            .chain(self.admin_token_file.iter())
    }

    /// The fields the proxy injects secrets from, by name, when set.
    pub fn injected(&self) -> Vec<&'static str> {
        [
            ("server_key_file", self.server_key_file.is_some()),
            ("server_key_env", self.server_key_env.is_some()),
            ("admin_token_file", self.admin_token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect()
    }
}

/// Checks an app name: the rule of certificate names (it becomes a folder name too).
pub fn check_app_name(name: &str) -> Result<(), String> {
    CertName::parse(name)
        .map(drop)
        .map_err(|e| e.to_string().replace("certificate name", "app name"))
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
            .flat_map(AppConfig::files)
            .chain(inbound)
            .chain(self.admin_auth_token_file.iter())
            .map(|p| resolve(base_dir, p))
            .collect()
    }

    /// Whether the file uses `apps` rather than the single-app shape.
    pub fn has_apps(&self) -> bool {
        !self.apps.is_empty()
    }

    /// The apps, in config order: `apps`, or the top-level fields as one app named
    /// [`DEFAULT_APP`]. Problems: both shapes at once, or neither.
    pub fn app_list(&self) -> Result<Vec<AppConfig>, Vec<Problem>> {
        let top: Vec<&str> = [
            ("upstream", self.upstream.is_some()),
            ("client_certs", !self.client_certs.is_empty()),
            ("active", self.active.is_some()),
            ("failover_after", self.failover_after.is_some()),
            ("server_key_file", self.server_key_file.is_some()),
            ("server_key_env", self.server_key_env.is_some()),
            ("admin_token_file", self.admin_token_file.is_some()),
            ("routes", self.routes.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        if self.has_apps() {
            if top.is_empty() {
                return Ok(self.apps.clone());
            }
            return Err(top
                .into_iter()
                .map(|f| Problem::new(f, "belongs under each of apps[] when apps is given"))
                .collect());
        }
        let Some(upstream) = self.upstream.clone() else {
            return Err(vec![Problem::new(
                "upstream",
                "is missing: give upstream (one app), or apps",
            )]);
        };
        Ok(vec![AppConfig {
            name: DEFAULT_APP.to_string(),
            listen: None,
            upstream,
            client_certs: self.client_certs.clone(),
            active: self.active.clone(),
            failover_after: self.failover_after.unwrap_or_else(default_failover_after),
            server_key_file: self.server_key_file.clone(),
            server_key_env: self.server_key_env.clone(),
            admin_token_file: self.admin_token_file.clone(),
            routes: self.routes.clone().unwrap_or_default(),
        }])
    }
}
