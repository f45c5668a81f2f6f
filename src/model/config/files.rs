//! The files a configuration names: client certificates and keys, the gateway's TLS
//! identity, CAs and secrets, each read and checked, each problem under its field.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::apps::AppSettings;
use super::error::Report;
use super::secret::Secret;
use super::types::Config;
use super::validated::{LoadedCert, LoadedInbound};
use super::{resolve, Problem};
use crate::model::pki::{self, CertInfo, CertName};

/// `client_certs`: at most [`pki::MAX_CERTS`], unique names, each key matching its certificate.
pub(super) fn client_certs(
    config: &AppSettings,
    base_dir: &Path,
    r: &mut Report,
) -> Vec<LoadedCert> {
    let listed = &config.client_certs;
    if listed.len() > pki::MAX_CERTS {
        r.problem(
            "client_certs",
            format!(
                "{} certificates listed; Amity allows at most {} per application",
                listed.len(),
                pki::MAX_CERTS
            ),
        );
    }
    let mut certs = Vec::new();
    for (i, c) in listed.iter().enumerate() {
        let field = format!("client_certs[{i}]");
        if let Err(e) = CertName::parse(&c.name) {
            r.problem(format!("{field}.name"), e.to_string());
        }
        if listed[..i].iter().any(|o| o.name == c.name) {
            r.problem(
                format!("{field}.name"),
                format!("{:?} is listed twice; names must be unique", c.name),
            );
        }
        let cert_path = resolve(base_dir, &c.cert);
        let key_path = resolve(base_dir, &c.key);
        let chain = pki::read_cert_chain(&cert_path)
            .map_err(|e| r.problem(format!("{field}.cert"), e.to_string()))
            .ok();
        let key = pki::read_private_key(&key_path)
            .map_err(|e| r.problem(format!("{field}.key"), e.to_string()))
            .ok();
        let (Some(chain), Some(key)) = (chain, key) else {
            continue;
        };
        let Some(info) = key_pair(r, &field, (&cert_path, &chain), (&key_path, &key)) else {
            continue;
        };
        r.warnings
            .extend(key_too_open(&format!("{field}.key"), &key_path));
        certs.push(LoadedCert {
            name: c.name.clone(),
            cert_path,
            key_path,
            chain,
            key,
            info,
        });
    }
    certs
}

/// `inbound_tls`: the gateway's chain and key (matching), and the fleet CA if given.
pub(super) fn inbound(config: &Config, base_dir: &Path, r: &mut Report) -> Option<LoadedInbound> {
    let t = config.inbound_tls.as_ref()?;
    let cert_path = resolve(base_dir, &t.cert);
    let chain = pki::read_cert_chain(&cert_path)
        .map_err(|e| r.problem("inbound_tls.cert", e.to_string()))
        .ok();
    let key_path = resolve(base_dir, &t.key);
    let key = pki::read_private_key(&key_path)
        .map_err(|e| r.problem("inbound_tls.key", e.to_string()))
        .ok();
    let client_ca = match &t.client_ca {
        None => Some(None),
        Some(ca) => pki::read_cert_chain(&resolve(base_dir, ca))
            .map(Some)
            .map_err(|e| r.problem("inbound_tls.client_ca", e.to_string()))
            .ok(),
    };
    let (chain, key, client_ca) = (chain?, key?, client_ca?);
    let info = key_pair(r, "inbound_tls", (&cert_path, &chain), (&key_path, &key))?;
    r.warnings
        .extend(key_too_open("inbound_tls.key", &key_path));
    Some(LoadedInbound {
        cert_path,
        info,
        chain,
        key,
        client_ca,
    })
}

/// `upstream.ca`: extra trust roots.
pub(super) fn upstream_ca(
    config: &AppSettings,
    base_dir: &Path,
    r: &mut Report,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    let Some(ca) = config.upstream.as_ref().and_then(|u| u.ca.as_ref()) else {
        return Vec::new();
    };
    pki::read_cert_chain(&resolve(base_dir, ca))
        .map_err(|e| r.problem("upstream.ca", e.to_string()))
        .unwrap_or_default()
}

/// Amity's longest server key.
const MAX_SERVER_KEY: usize = 150;

/// An app's secrets, read: `server_key_file` or `server_key_env`, and `admin_token_file`.
pub(super) fn app_secrets(
    config: &AppSettings,
    base_dir: &Path,
    r: &mut Report,
) -> (Option<Secret>, Option<Secret>) {
    let server_key = match (&config.server_key_file, &config.server_key_env) {
        (Some(_), Some(_)) => {
            r.problem(
                "server_key_file",
                "give server_key_file or server_key_env, not both",
            );
            None
        }
        (Some(f), None) => secret_file(r, "server_key_file", base_dir, f),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) => Secret::new(v)
                .map_err(|e| r.problem("server_key_env", format!("${var}: {e}")))
                .ok(),
            Err(_) => {
                r.problem(
                    "server_key_env",
                    format!("environment variable {var} is not set"),
                );
                None
            }
        },
        (None, None) => None,
    };
    if server_key
        .as_ref()
        .is_some_and(|k| k.expose().len() > MAX_SERVER_KEY)
    {
        let field = match &config.server_key_env {
            Some(_) => "server_key_env",
            None => "server_key_file",
        };
        r.problem(
            field,
            format!("the server key is longer than Amity's {MAX_SERVER_KEY} characters"),
        );
    }
    let admin_token = config
        .admin_token_file
        .as_ref()
        .and_then(|f| secret_file(r, "admin_token_file", base_dir, f));
    (server_key, admin_token)
}

/// `admin_auth_token_file`: the token the admin listener requires.
pub(super) fn admin_auth_token(config: &Config, base_dir: &Path, r: &mut Report) -> Option<Secret> {
    let f = config.admin_auth_token_file.as_ref()?;
    secret_file(r, "admin_auth_token_file", base_dir, f)
}

fn secret_file(r: &mut Report, field: &str, base_dir: &Path, f: &Path) -> Option<Secret> {
    Secret::from_file(&resolve(base_dir, f))
        .map_err(|e| r.problem(field, e))
        .ok()
}

/// A warning when users other than this service's may read the private key at `path`:
/// any access for others, or for a group this process is not in (a Kubernetes Secret
/// mounted 0440 with the pod's `fsGroup` is fine).
/// The certificate's details, if it parses and the key is its key; else the problem, under
/// `{field}.cert` or `{field}.key`, naming the files.
fn key_pair(
    r: &mut Report,
    field: &str,
    (cert_path, chain): (&Path, &[CertificateDer<'static>]),
    (key_path, key): (&Path, &PrivateKeyDer<'static>),
) -> Option<CertInfo> {
    let info = CertInfo::from_der(&chain[0])
        .map_err(|e| {
            r.problem(
                format!("{field}.cert"),
                format!("{}: {e}", cert_path.display()),
            )
        })
        .ok()?;
    pki::key_matches(key, &info)
        .map_err(|e| {
            let files = format!("{}: {e} {}", key_path.display(), cert_path.display());
            r.problem(format!("{field}.key"), files)
        })
        .ok()?;
    Some(info)
}

fn key_too_open(field: &str, path: &Path) -> Option<Problem> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    let group_ok = mode & 0o070 == 0 || own_groups().contains(&meta.gid());
    (mode & 0o007 != 0 || !group_ok).then(|| {
        Problem::new(
            field,
            format!(
                "{} is readable by others (mode {mode:04o}); chmod 600 it (or 640 with a group only this service is in)",
                path.display()
            ),
        )
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
