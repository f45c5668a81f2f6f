//! Keys, CSRs, the local dev CA, and certificate inspection.
//!
//! Generation and signing use rcgen; reading PEM uses rustls' `PemObject`;
//! inspection uses x509-parser.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RsaKeySize,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use time::OffsetDateTime;

/// Amity accepts at most this many client certificates per application.
pub const MAX_CERTS: usize = 2;
/// Longest certificate name the Amity console accepts.
pub const MAX_NAME_LEN: usize = 30;
/// Renew when fewer days than this remain.
pub const RENEW_DAYS: i64 = 30;
/// File stem of the dev CA in the certs folder.
pub const DEV_CA: &str = "dev-ca";
/// File stem of the dev server certificate (for the stand-in Amity).
pub const DEV_SERVER: &str = "dev-server";

/// Errors of the certificate workflow; each names the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A certificate name breaks the console's rules.
    #[error("certificate name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is wrong.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The command was refused; the reason says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// rcgen could not generate or sign.
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being done.
        context: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
}

fn rcgen_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { context, source }
}

/// A certificate name that follows the console's rules and is safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertName(String);

impl CertName {
    /// Accepts 1 to 30 characters of ASCII letters, digits, `.`, `_`, `-`; not `.` or `..`.
    pub fn parse(s: &str) -> Result<Self, PkiError> {
        let bad = |reason: String| PkiError::BadName {
            name: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("is empty; give 1 to 30 characters".into()));
        }
        let chars = s.chars().count();
        if chars > MAX_NAME_LEN {
            return Err(bad(format!(
                "is {chars} characters; the Amity console allows at most {MAX_NAME_LEN}"
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!(
                "contains {c:?}; use only letters, digits, '.', '_' and '-'"
            )));
        }
        if s.starts_with('.') {
            return Err(bad("must not start with '.'".into()));
        }
        Ok(Self(s.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key algorithm for `cert new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    P256,
    /// RSA 2048-bit.
    Rsa2048,
    /// RSA 3072-bit.
    Rsa3072,
    /// RSA 4096-bit.
    Rsa4096,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair, PkiError> {
        let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
        match self {
            KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::Rsa2048 => rsa(RsaKeySize::_2048),
            KeyType::Rsa3072 => rsa(RsaKeySize::_3072),
            KeyType::Rsa4096 => rsa(RsaKeySize::_4096),
        }
        .map_err(rcgen_err("generating the private key"))
    }
}

/// SHA-256 of `bytes` as colon-separated upper-case hex, as `openssl -fingerprint` prints it.
pub fn sha256_fingerprint(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex(d.as_ref(), ":")
}

fn hex(bytes: &[u8], sep: &str) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// A DER INTEGER's bytes as hex without the sign-padding zero, as `openssl x509 -serial` prints it.
fn serial_hex(raw: &[u8]) -> String {
    match raw {
        [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => hex(rest, ""),
        _ => hex(raw, ""),
    }
}

/// What a certificate says, as users and the admin endpoints show it.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Full subject DN.
    pub subject: String,
    /// Subject common name, if any.
    pub cn: Option<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the DER certificate.
    pub sha256: String,
    /// `Some(true)` when an EKU allows client auth, `Some(false)` when an EKU forbids it, `None` without EKU.
    pub client_auth: Option<bool>,
    /// DER SubjectPublicKeyInfo, to match against a private key.
    #[serde(skip)]
    pub spki: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, x) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        let cn = x
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let client_auth = match x.extended_key_usage() {
            Ok(Some(eku)) => Some(eku.value.client_auth || eku.value.any),
            Ok(None) => None,
            Err(e) => return Err(format!("bad extended key usage extension: {e}")),
        };
        Ok(Self {
            subject: x.subject().to_string(),
            cn,
            issuer: x.issuer().to_string(),
            serial: serial_hex(x.raw_serial()),
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            sha256: sha256_fingerprint(der),
            client_auth,
            spki: x.public_key().raw.to_vec(),
        })
    }

    /// Whole days of validity left at `now` (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }

    /// Whether the certificate is within its validity period at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Identities in a certificate, as `callers` matches them: SAN URIs, then SAN DNS names; the
/// CN only when there are neither (RFC 6125 section 6.4.4: beside SANs, a CN names no one, and
/// a CA that checks SANs may let any CN through).
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    if !uris.is_empty() || !dns.is_empty() {
        uris.append(&mut dns);
        return uris;
    }
    x.subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok().map(str::to_string))
        .collect()
}

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    // Called per request (certificate expiry): seconds only, no calendar arithmetic.
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// RFC 3339 text for a unix time.
pub fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Largest file the proxy reads (config, certificates, keys, secrets).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a regular file of at most [`MAX_FILE_BYTES`]; a device, FIFO or huge
/// file named by mistake is an error, never a hang or an unbounded read.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    read_bounded(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM certificate chain (leaf first); errors when there is none or one does not parse.
pub fn read_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(path)?;
    parse_cert_chain(path, &bytes)
}

fn parse_cert_chain(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bad = |reason: String| PkiError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            "not a PEM certificate: no '-----BEGIN CERTIFICATE-----' block found".into(),
        ));
    }
    for (i, c) in chain.iter().enumerate() {
        CertInfo::from_der(c).map_err(|e| bad(format!("certificate #{} {e}", i + 1)))?;
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "not a PEM private key: no 'PRIVATE KEY' block found".to_string()
            }
            e => format!("not a PEM private key: {e}"),
        },
    })?;
    rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: format!("unsupported private key: {e}"),
    })?;
    Ok(key)
}

/// Whether the private key is the one the certificate was issued for.
pub fn key_matches(key: &PrivateKeyDer<'_>, cert: &CertInfo) -> Result<(), String> {
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let spki = signer
        .public_key()
        .ok_or_else(|| "cannot derive the public key of this private key".to_string())?;
    if spki.as_ref() == cert.spki.as_slice() {
        Ok(())
    } else {
        Err("does not match the public key of the certificate".to_string())
    }
}

/// Writes a file through a temporary name and a rename, so a failure never leaves half a file.
/// `mode` is applied before any content is written; `overwrite: false` refuses an existing file.
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    overwrite: bool,
) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(PkiError::Refused(format!(
            "{} already exists; not overwritten (use --force to replace it)",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

/// Subject and names for a new CSR.
#[derive(Debug, Clone)]
pub struct CsrRequest {
    /// Console name; also the file stem.
    pub name: CertName,
    /// Subject CN; the name when absent.
    pub cn: Option<String>,
    /// Subject O.
    pub org: Option<String>,
    /// Subject alternative names (DNS names or IP addresses).
    pub sans: Vec<String>,
    /// Key algorithm.
    pub key_type: KeyType,
}

/// A freshly generated key and CSR, both PEM.
pub struct NewCsr {
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
    /// The CSR, PEM.
    pub csr_pem: String,
    /// SHA-256 of the CSR's DER.
    pub csr_sha256: String,
}

/// Generates a key and a CSR in memory.
pub fn generate_csr(req: &CsrRequest) -> Result<NewCsr, PkiError> {
    let key = req.key_type.generate()?;
    let mut params =
        CertificateParams::new(req.sans.clone()).map_err(rcgen_err("parsing --san"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        req.cn.clone().unwrap_or_else(|| req.name.to_string()),
    );
    if let Some(o) = &req.org {
        dn.push(DnType::OrganizationName, o.clone());
    }
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(rcgen_err("building the CSR"))?;
    Ok(NewCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(rcgen_err("encoding the CSR"))?,
        csr_sha256: sha256_fingerprint(csr.der()),
    })
}

/// The certs folder: `NAME.key`, `NAME.csr`, `NAME.crt`, and the dev CA.
#[derive(Debug, Clone)]
pub struct CertStore {
    /// The folder.
    pub dir: PathBuf,
}

/// State of one certificate name in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
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

impl CertState {
    /// Short text for tables.
    pub fn label(self) -> &'static str {
        match self {
            CertState::PendingCsr => "pending CSR",
            CertState::Installed => "installed",
            CertState::Expired => "expired",
            CertState::NotYetValid => "not yet valid",
            CertState::KeyMismatch => "key mismatch",
            CertState::MissingKey => "missing key",
            CertState::Unreadable => "unreadable",
        }
    }
}

/// One row of `cert list`.
#[derive(Debug, Clone, Serialize)]
pub struct CertEntry {
    /// Console name.
    pub name: String,
    /// State.
    pub state: CertState,
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
        if now > info.not_after {
            return Err(bad(format!(
                "the certificate expired on {}",
                rfc3339(info.not_after)
            )));
        }
        if now < info.not_before {
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
        let days = info.days_left(now);
        if days < RENEW_DAYS {
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
        state: CertState::Unreadable,
        configured,
        cert: None,
        days_left: None,
        cert_path: cert_path.exists().then(|| cert_path.clone()),
        key_path: key_path.exists().then(|| key_path.clone()),
        detail: None,
    };
    if !cert_path.exists() {
        e.state = if key_path.exists() && store.path(&e.name, "csr").exists() {
            CertState::PendingCsr
        } else {
            e.detail = Some(format!("{} not found", cert_path.display()));
            CertState::Unreadable
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
        Err(PkiError::Read { .. }) => CertState::MissingKey,
        Err(err) => {
            e.detail = Some(err.to_string());
            CertState::Unreadable
        }
        Ok(key) => match key_matches(&key, &info) {
            Err(_) => CertState::KeyMismatch,
            Ok(()) if now > info.not_after => CertState::Expired,
            Ok(()) if now < info.not_before => CertState::NotYetValid,
            Ok(()) => CertState::Installed,
        },
    };
    e.cert = Some(info);
    e
}

/// The local stand-in for Amity's CA.
pub struct DevCa {
    cert_pem: String,
    key: KeyPair,
}

/// Validity for certificates the dev CA issues.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start, unix seconds.
    pub not_before: i64,
    /// End, unix seconds.
    pub not_after: i64,
}

impl Validity {
    /// From a minute ago (clock skew) to `days` from now.
    pub fn days_from_now(days: u32) -> Self {
        let now = now_unix();
        Self {
            not_before: now - 60,
            not_after: now + i64::from(days) * 86_400,
        }
    }
}

fn set_validity(params: &mut CertificateParams, v: Validity) -> Result<(), PkiError> {
    let t = |s: i64| {
        OffsetDateTime::from_unix_timestamp(s)
            .map_err(|e| PkiError::Refused(format!("validity out of range: {e}")))
    };
    params.not_before = t(v.not_before)?;
    params.not_after = t(v.not_after)?;
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // A failing system RNG is not recoverable; fall back to the clock so signing still works.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(
            &OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_be_bytes(),
        );
    }
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte, so the length stays fixed
    SerialNumber::from_slice(&bytes)
}

impl DevCa {
    /// Paths of the CA certificate and key in a certs folder.
    pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{DEV_CA}.crt")),
            dir.join(format!("{DEV_CA}.key")),
        )
    }

    /// Creates a new CA (10 years) and writes it to `dir`; refuses to replace one unless `force`.
    pub fn init(dir: &Path, force: bool) -> Result<Self, PkiError> {
        let (crt, key_path) = Self::paths(dir);
        if !force && (crt.exists() || key_path.exists()) {
            return Err(PkiError::Refused(format!(
                "a dev CA already exists in {}; not replaced (use --force; certificates it signed will stop verifying)",
                dir.display()
            )));
        }
        let key = KeyType::P256.generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            "amity-mtls-proxy dev CA (local testing only)",
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, Validity::days_from_now(3650))?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-signing the dev CA"))?;
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, force)?;
        write_file(&crt, cert.pem().as_bytes(), 0o644, force)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads the CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let (crt, key_path) = Self::paths(dir);
        if !crt.exists() {
            return Err(PkiError::Refused(format!(
                "no dev CA in {}; run `dev-ca init` first",
                dir.display()
            )));
        }
        let cert_pem = String::from_utf8_lossy(&read(&crt)?).into_owned();
        let key_pem = String::from_utf8_lossy(&read(&key_path)?).into_owned();
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadFile {
            path: key_path.clone(),
            reason: format!("not a usable CA key: {e}"),
        })?;
        Ok(Self { cert_pem, key })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
            .map_err(rcgen_err("reading the dev CA certificate"))
    }

    /// Issues a client certificate (EKU clientAuth) from a PEM CSR, as the Amity console would.
    pub fn sign_csr(&self, csr_pem: &str, validity: Validity) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::Refused(format!("not a valid PEM certificate signing request: {e}"))
        })?;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        set_validity(p, validity)?;
        let cert = csr
            .signed_by(&self.issuer()?)
            .map_err(rcgen_err("signing the CSR"))?;
        Ok(cert.pem())
    }

    /// Issues a server certificate (EKU serverAuth) for `sans` into `dir/dev-server.{crt,key}`.
    pub fn issue_server_cert(
        &self,
        dir: &Path,
        sans: &[String],
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let key = KeyType::P256.generate()?;
        let mut params =
            CertificateParams::new(sans.to_vec()).map_err(rcgen_err("parsing server names"))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            sans.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, Validity::days_from_now(825))?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(rcgen_err("signing the server certificate"))?;
        let crt_path = dir.join(format!("{DEV_SERVER}.crt"));
        let key_path = dir.join(format!("{DEV_SERVER}.key"));
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600, true)?;
        write_file(&crt_path, cert.pem().as_bytes(), 0o644, true)?;
        Ok((crt_path, key_path))
    }
}

/// Server names the dev server certificate covers by default.
pub fn default_server_sans() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_as_openssl_does() {
        assert_eq!(serial_hex(&[0x00, 0x8A, 0x01]), "8A01");
        assert_eq!(serial_hex(&[0x00, 0x7A]), "007A");
        assert_eq!(serial_hex(&[0x12, 0x34]), "1234");
    }

    #[test]
    fn the_cn_is_an_identity_only_without_sans() {
        use rcgen::SanType;
        let cert = |sans: Vec<SanType>| {
            let mut p = CertificateParams::default();
            p.distinguished_name.push(DnType::CommonName, "listed-cn");
            p.subject_alt_names = sans;
            let key = KeyPair::generate().unwrap();
            identities(p.self_signed(&key).unwrap().der())
        };
        assert_eq!(cert(vec![]), ["listed-cn"]);
        assert_eq!(
            cert(vec![
                SanType::DnsName("svc.fleet".try_into().unwrap()),
                SanType::URI("spiffe://fleet/svc".try_into().unwrap()),
            ]),
            ["spiffe://fleet/svc", "svc.fleet"]
        );
        assert_eq!(
            cert(vec![SanType::IpAddress([127, 0, 0, 1].into())]),
            ["listed-cn"],
            "an IP SAN is no identity, so the CN still is"
        );
    }

    #[test]
    fn names_follow_console_rules() {
        assert!(CertName::parse("backend-2026-11").is_ok());
        assert!(CertName::parse(&"a".repeat(30)).is_ok());
        for bad in ["", "../x", "a b", "é", &"a".repeat(31), "a/b", "..", "."] {
            assert!(CertName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn signed_csr_matches_key_and_allows_client_auth() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::init(dir.path(), false).unwrap();
        let req = CsrRequest {
            name: CertName::parse("svc").unwrap(),
            cn: None,
            org: Some("Acme".into()),
            sans: vec![],
            key_type: KeyType::P256,
        };
        let new = generate_csr(&req).unwrap();
        let pem = ca
            .sign_csr(&new.csr_pem, Validity::days_from_now(10))
            .unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let info = CertInfo::from_der(&der).unwrap();
        assert_eq!(info.cn.as_deref(), Some("svc"));
        assert_eq!(info.client_auth, Some(true));
        assert!((9..=10).contains(&info.days_left(now_unix())));
        let key = PrivateKeyDer::from_pem_slice(new.key_pem.as_bytes()).unwrap();
        key_matches(&key, &info).unwrap();
        let other = generate_csr(&req).unwrap();
        let other_key = PrivateKeyDer::from_pem_slice(other.key_pem.as_bytes()).unwrap();
        assert!(key_matches(&other_key, &info).is_err());
    }
}
