//! The certs folder: `NAME.key`, `NAME.csr`, `NAME.crt` per certificate name, and the dev CA.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::files::{parse_cert_chain, read};
use super::{
    generate_csr, key_matches, now_unix, read_cert_chain, read_private_key, rfc3339, write_file,
    CertInfo, CertName, CertState, CsrRequest, NewCsr, PkiError, DEV_CA, DEV_SERVER, MAX_CERTS,
    RENEW_DAYS,
};

/// The certs folder: `NAME.key`, `NAME.csr`, `NAME.crt`, and the dev CA.
#[derive(Debug, Clone)]
pub struct CertStore {
    /// The folder.
    pub dir: PathBuf,
}

/// State of one certificate name in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Key and CSR made; waiting for the signed certificate.
    PendingCsr,
    /// Certificate installed and valid now.
    Installed,
    /// Certificate past its not-after.
    Expired,
    /// Certificate before its not-before.
    NotYetValid,
    /// Certificate and key do not belong together.
    KeyMismatch,
    /// Certificate without its key.
    MissingKey,
    /// A file that does not parse.
    Unreadable,
}

impl EntryState {
    /// Short text for tables.
    pub fn label(self) -> &'static str {
        match self {
            EntryState::PendingCsr => "pending CSR",
            EntryState::Installed => "installed",
            EntryState::Expired => "expired",
            EntryState::NotYetValid => "not yet valid",
            EntryState::KeyMismatch => "key mismatch",
            EntryState::MissingKey => "missing key",
            EntryState::Unreadable => "unreadable",
        }
    }
}

/// One row of `cert list`.
#[derive(Debug, Clone, Serialize)]
pub struct CertEntry {
    /// Console name.
    pub name: String,
    /// Whether a key waits for its certificate, or which certificate is installed.
    pub state: EntryState,
    /// Whether config.yaml lists it under client_certs.
    pub configured: bool,
    /// The certificate's details, once installed.
    pub cert: Option<CertInfo>,
    /// Days left, once installed.
    pub days_left: Option<i64>,
    /// Certificate file, if any.
    pub cert_path: Option<PathBuf>,
    /// Key file, if any.
    pub key_path: Option<PathBuf>,
    /// Why the state is not `installed`, when there is more to say.
    pub detail: Option<String>,
}

/// What `cert import` did.
pub struct ImportReport {
    /// Where the certificate now is.
    pub path: PathBuf,
    /// The leaf's details.
    pub info: CertInfo,
    /// Certificates in the chain file.
    pub chain_len: usize,
    /// Warnings worth printing (e.g. fewer than 30 days left).
    pub warnings: Vec<String>,
}

impl CertStore {
    /// A store on a folder.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `dir/NAME.ext`.
    pub fn path(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    /// Generates `NAME.key` (0600) and `NAME.csr`. `configured` are the names in config.yaml.
    pub fn new_csr(
        &self,
        req: &CsrRequest,
        force: bool,
        configured: &[String],
    ) -> Result<NewCsr, PkiError> {
        let name = req.name.as_str();
        if name == DEV_CA || name == DEV_SERVER {
            return Err(PkiError::Refused(format!(
                "certificate name {name:?} is reserved for the local dev CA; choose another"
            )));
        }
        if configured.len() >= MAX_CERTS && !configured.iter().any(|c| c == name) {
            return Err(PkiError::Refused(format!(
                "refusing a third certificate: {} are already configured ({}); Amity allows {MAX_CERTS}, remove one from the config and the console first",
                configured.len(),
                configured.join(", ")
            )));
        }
        if !force {
            for ext in ["key", "csr", "crt"] {
                let p = self.path(name, ext);
                if p.exists() {
                    return Err(PkiError::Refused(format!(
                        "certificate name {name:?} already exists ({}); choose a new name or pass --force",
                        p.display()
                    )));
                }
            }
        }
        let new = generate_csr(req)?;
        write_file(
            &self.path(name, "key"),
            new.key_pem.as_bytes(),
            0o600,
            force,
        )?;
        write_file(
            &self.path(name, "csr"),
            new.csr_pem.as_bytes(),
            0o644,
            force,
        )?;
        Ok(new)
    }

    /// Installs a signed certificate as `NAME.crt` after checking it against `NAME.key`.
    pub fn import(
        &self,
        name: &CertName,
        file: &Path,
        force: bool,
    ) -> Result<ImportReport, PkiError> {
        let name = name.as_str();
        let key_path = self.path(name, "key");
        if !key_path.exists() {
            return Err(PkiError::Refused(format!(
                "no private key {} for {name:?}; run `cert new --name {name}` first, and import the certificate signed from its CSR",
                key_path.display()
            )));
        }
        let bytes = read(file)?;
        let chain = parse_cert_chain(file, &bytes)?;
        let info = CertInfo::from_der(&chain[0]).map_err(|reason| PkiError::BadFile {
            path: file.to_path_buf(),
            reason,
        })?;
        let key = read_private_key(&key_path)?;
        key_matches(&key, &info).map_err(|_| PkiError::BadFile {
            path: file.to_path_buf(),
            reason: format!(
                "the certificate does not match the private key {}: it was not signed from this name's CSR",
                key_path.display()
            ),
        })?;
        let now = now_unix();
        let bad = |reason: String| PkiError::BadFile {
            path: file.to_path_buf(),
            reason,
        };
        let state = info.state(now);
        if state == CertState::Expired {
            return Err(bad(format!(
                "the certificate expired on {}",
                rfc3339(info.not_after)
            )));
        }
        if state == CertState::NotYetValid {
            return Err(bad(format!(
                "the certificate is not valid before {}",
                rfc3339(info.not_before)
            )));
        }
        if info.client_auth == Some(false) {
            return Err(bad(
                "the certificate's extended key usage does not allow TLS client authentication"
                    .into(),
            ));
        }
        let mut warnings = Vec::new();
        if let CertState::Expiring { days_left: days } = state {
            warnings.push(format!(
                "only {days} days left (expires {}); renew at least {RENEW_DAYS} days before expiry",
                rfc3339(info.not_after)
            ));
        }
        let path = self.path(name, "crt");
        write_file(&path, &bytes, 0o644, force)?;
        Ok(ImportReport {
            path,
            info,
            chain_len: chain.len(),
            warnings,
        })
    }

    /// Every certificate name in the folder and in the config, with its state.
    /// `configured` pairs a config name with its resolved cert and key paths.
    pub fn list(&self, configured: &[(String, PathBuf, PathBuf)]) -> Vec<CertEntry> {
        let mut names: Vec<String> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "key" | "csr" | "crt") {
                    continue;
                }
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    if stem != DEV_CA && stem != DEV_SERVER && CertName::parse(stem).is_ok() {
                        names.push(stem.to_string());
                    }
                }
            }
        }
        for (n, _, _) in configured {
            names.push(n.clone());
        }
        names.sort();
        names.dedup();
        let now = now_unix();
        names
            .into_iter()
            .map(|name| {
                let conf = configured.iter().find(|(n, _, _)| *n == name);
                let cert_path = conf
                    .map(|(_, c, _)| c.clone())
                    .unwrap_or_else(|| self.path(&name, "crt"));
                let key_path = conf
                    .map(|(_, _, k)| k.clone())
                    .unwrap_or_else(|| self.path(&name, "key"));
                entry(name, conf.is_some(), cert_path, key_path, self, now)
            })
            .collect()
    }
}

fn entry(
    name: String,
    configured: bool,
    cert_path: PathBuf,
    key_path: PathBuf,
    store: &CertStore,
    now: i64,
) -> CertEntry {
    let mut e = CertEntry {
        name,
        state: EntryState::Unreadable,
        configured,
        cert: None,
        days_left: None,
        cert_path: cert_path.exists().then(|| cert_path.clone()),
        key_path: key_path.exists().then(|| key_path.clone()),
        detail: None,
    };
    if !cert_path.exists() {
        e.state = if key_path.exists() && store.path(&e.name, "csr").exists() {
            EntryState::PendingCsr
        } else {
            e.detail = Some(format!("{} not found", cert_path.display()));
            EntryState::Unreadable
        };
        return e;
    }
    let info = match read_cert_chain(&cert_path).and_then(|c| {
        CertInfo::from_der(&c[0]).map_err(|reason| PkiError::BadFile {
            path: cert_path.clone(),
            reason,
        })
    }) {
        Ok(i) => i,
        Err(err) => {
            e.detail = Some(err.to_string());
            return e;
        }
    };
    e.days_left = Some(info.days_left(now));
    e.state = match read_private_key(&key_path) {
        Err(PkiError::Read { .. }) => EntryState::MissingKey,
        Err(err) => {
            e.detail = Some(err.to_string());
            EntryState::Unreadable
        }
        Ok(key) => match key_matches(&key, &info) {
            Err(_) => EntryState::KeyMismatch,
            Ok(()) => match info.state(now) {
                CertState::Expired => EntryState::Expired,
                CertState::NotYetValid => EntryState::NotYetValid,
                CertState::Valid | CertState::Expiring { .. } => EntryState::Installed,
            },
        },
    };
    e.cert = Some(info);
    e
}
