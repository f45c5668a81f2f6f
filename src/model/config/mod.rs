//! `config.yaml`: the serde types (one file per large section), `Secret`, the errors and
//! how they are shown, and the one `load` path (parse, then validate) that start-up,
//! `check` and reload all go through. What only a restart changes is [`StartOnly`].

mod apps;
mod audit;
mod callers;
mod error;
mod files;
mod limits;
mod nulls;
mod routes;
mod secret;
mod shape;
mod timeouts;
mod types;
mod upstream;
mod user_pattern;
mod validate;
mod validated;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use shape::Beside;

pub use apps::{check_app_name, AppConfig, AppSettings, ClientCertConfig, DEFAULT_APP};
pub use audit::{AuditConfig, AuditPath};
pub use callers::{Caller, CallerConfig, GrantConfig};
pub use error::{ConfigError, Problem};
pub use limits::{LimitsConfig, RateLimitConfig};
pub use routes::{ExtraRoute, PathRule, RouteClass, RoutesConfig};
pub use secret::Secret;
pub use timeouts::TimeoutsConfig;
pub use types::{CallerSecrets, Config, InboundTlsConfig};
pub use upstream::{
    region_url, CertRejectedAnswer, CertRejectedAnswers, UpstreamConfig, UpstreamTarget,
    CERT_REJECTED_BODY_BYTES,
};
pub use user_pattern::UserIdPattern;
pub use validate::validate;
pub use validated::{LoadedApp, LoadedCert, LoadedInbound, StartOnly, StartOnlyChange, Validated};

use crate::model::pki;

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
    if let Some(e) = ConfigError::pem(path, text) {
        return Err(e);
    }
    let err = |e: serde_saphyr::Error| ConfigError::parse(path, text, &e);
    let top: Beside<Config, AppSettings> = serde_saphyr::from_str(text).map_err(err)?;
    let mut config = top.value;
    if config.apps.is_empty() {
        let single: Beside<AppSettings, Config> = serde_saphyr::from_str(text).map_err(err)?;
        config.single = Some(single.value);
    } else {
        config.app_keys_at_top = top.seen;
    }
    Ok(config)
}

/// Resolves `p` against the config file's folder.
pub fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}
