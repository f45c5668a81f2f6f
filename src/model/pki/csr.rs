//! Certificate names, key types, and new keys with their CSRs.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RsaKeySize};

use super::{rcgen_err, sha256_fingerprint, PkiError, MAX_NAME_LEN};

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
    pub(super) fn generate(self) -> Result<KeyPair, PkiError> {
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
    /// What to paste into the Amity console.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_console_rules() {
        assert!(CertName::parse("backend-2026-11").is_ok());
        assert!(CertName::parse(&"a".repeat(30)).is_ok());
        for bad in ["", "../x", "a b", "é", &"a".repeat(31), "a/b", "..", "."] {
            assert!(CertName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
