//! The fleet side of `inbound_tls`: the fleet's own CA (not Amity's), the gateway's server
//! certificate for 127.0.0.1, and caller certificates.

use std::path::PathBuf;

use amity_mtls_proxy::model::pki::{DevCa, Validity};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

/// The fleet's CA and files, in a folder of their own.
pub struct Fleet {
    /// Holds dev-ca.crt, dev-server.crt/.key and the callers' files.
    pub dir: tempfile::TempDir,
    /// The fleet's CA.
    pub ca: DevCa,
}

impl Fleet {
    /// A new fleet CA with the gateway's server certificate for 127.0.0.1 and localhost.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::init(dir.path(), false).unwrap();
        ca.issue_server_cert(dir.path(), &["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        Self { dir, ca }
    }

    /// A file in the fleet's folder.
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// A caller certificate `name`.crt/.key with CN `name` and optional SAN URI, signed by `ca`.
    pub fn caller(
        &self,
        ca: &DevCa,
        name: &str,
        uri: Option<&str>,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        let sans: Vec<SanType> = uri
            .map(|u| SanType::URI(u.try_into().unwrap()))
            .into_iter()
            .collect();
        self.caller_with(ca, name, name, sans, validity)
    }

    /// A caller certificate in `file`.crt/.key with `cn` and `sans`, signed by `ca`.
    pub fn caller_with(
        &self,
        ca: &DevCa,
        file: &str,
        cn: &str,
        sans: Vec<SanType>,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let crt = ca.sign_csr(&csr, validity).unwrap();
        let (c, k) = (
            self.path(&format!("{file}.crt")),
            self.path(&format!("{file}.key")),
        );
        std::fs::write(&c, crt).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// The `inbound_tls` section: the gateway's certificate, fleet callers only.
    pub fn inbound_yaml(&self) -> String {
        format!(
            "inbound_tls:\n  cert: {}\n  key: {}\n  client_ca: {}\n",
            self.path("dev-server.crt").display(),
            self.path("dev-server.key").display(),
            self.path("dev-ca.crt").display()
        )
    }
}
