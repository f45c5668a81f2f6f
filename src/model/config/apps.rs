//! `apps`: the Amity apps one gateway serves, and the single-app shape (the same fields at the
//! top of the file) read as one app named `default`.

use std::path::PathBuf;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;

use super::nulls::null_as_default;
use super::routes::RoutesConfig;
use super::shape::{fields_of, Shared};
use super::upstream::UpstreamConfig;
use crate::model::pki::CertName;

/// The app a single-app configuration defines.
pub const DEFAULT_APP: &str = "default";

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

fn default_failover_after() -> u32 {
    3
}

/// An app's settings: at the top of the file for the single-app shape, and in each `apps[]`
/// entry beside its name and listener (see `shape.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Where the app's calls are forwarded; required (validation says so when it is missing).
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
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

impl Default for AppSettings {
    /// What a file that gives none of them means (then `upstream` is missing).
    fn default() -> Self {
        Self {
            upstream: None,
            client_certs: Vec::new(),
            active: None,
            failover_after: default_failover_after(),
            server_key_file: None,
            server_key_env: None,
            admin_token_file: None,
            routes: RoutesConfig::default(),
        }
    }
}

/// One Amity app: its name, a listener of its own maybe, and its settings.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's name in paths (`/apps/<name>/`), metrics and logs (1 to 30 of `A-Za-z0-9._-`).
    pub name: String,
    /// A listener of the app's own, where no `/apps/<name>/` prefix is needed. Read at start only.
    pub listen: Option<String>,
    /// Its upstream, certificates, secrets and routes.
    pub settings: AppSettings,
}

impl<'de> Deserialize<'de> for AppConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AppVisitor)
    }
}

struct AppVisitor;

impl<'de> Visitor<'de> for AppVisitor {
    type Value = AppConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an app: name, listen and its settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AppConfig, A::Error> {
        let (mut name, mut listen) = (None, None);
        let entry = Shared {
            inner: map,
            own: fields_of::<AppSettings>(),
            other: &["name", "listen"],
            take: |key: &str, map: &mut A| {
                match key {
                    "name" => name = Some(map.next_value::<String>()?),
                    _ => listen = map.next_value::<Option<String>>()?,
                }
                Ok(())
            },
        };
        let settings = AppSettings::deserialize(MapAccessDeserializer::new(entry))?;
        Ok(AppConfig {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            listen,
            settings,
        })
    }
}

impl AppSettings {
    /// Every file it names: certificates, keys, the upstream CA, secrets.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.client_certs
            .iter()
            .flat_map(|c| [&c.cert, &c.key])
            .chain(self.upstream.iter().flat_map(|u| u.ca.iter()))
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
