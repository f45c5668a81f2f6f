//! The local stand-in for Amity's CA: signs CSRs as the console would, and the stand-in's
//! server certificate.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use super::files::read;
use super::{now_unix, rcgen_err, write_file, KeyType, PkiError, DEV_CA, DEV_SERVER};

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
    use crate::model::pki::{generate_csr, key_matches, now_unix, CertInfo, CertName, CsrRequest};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
