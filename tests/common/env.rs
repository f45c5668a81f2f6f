//! A test's world: a temp dir with the dev CA (standing in for Amity's), the stand-in's
//! server certificate, client certificates, a config, the stand-in and the proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use amity_mtls_proxy::model::config::{self, Validated};
use amity_mtls_proxy::model::pki::{
    self, CertName, CertStore, CsrRequest, DevCa, KeyType, Validity,
};
use amity_mtls_proxy::process::server::{self, Running};
use amity_mtls_proxy::tools::kit;
use amity_mtls_proxy::tools::mock::{self, MockHandle, MockOptions};

use super::{Spawned, ADMIN_TOKEN, SERVER_KEY};

/// A temp dir with `certs/` holding the dev CA and the stand-in's server certificate.
pub struct Env {
    /// Removed with the `Env`: keep it alive while anything uses its files.
    pub dir: tempfile::TempDir,
    /// The dev CA, standing in for Amity's.
    pub ca: DevCa,
}

impl Env {
    /// The dev CA and the stand-in's server certificate in a new temp dir.
    pub fn new() -> Self {
        amity_mtls_proxy::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ca = DevCa::init(&certs, false).unwrap();
        ca.issue_server_cert(&certs, &pki::default_server_sans())
            .unwrap();
        Self { dir, ca }
    }

    /// The certs folder.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Key + CSR made by the proxy, signed by `ca` (default: the dev CA); returns the serial.
    pub fn client_cert_from(&self, ca: &DevCa, name: &str, validity: Validity) -> String {
        let store = CertStore::new(self.certs());
        let req = CsrRequest {
            name: CertName::parse(name).unwrap(),
            cn: None,
            org: None,
            sans: vec![],
            key_type: KeyType::P256,
        };
        let new = store.new_csr(&req, true, &[]).unwrap();
        let pem = ca.sign_csr(&new.csr_pem, validity).unwrap();
        pki::write_file(&store.path(name, "crt"), pem.as_bytes(), 0o644, true).unwrap();
        pki::read_cert_chain(&store.path(name, "crt"))
            .map(|c| pki::CertInfo::from_der(&c[0]).unwrap().serial)
            .unwrap()
    }

    /// A client certificate `name` from the dev CA, valid 90 days; returns the serial.
    pub fn client_cert(&self, name: &str) -> String {
        self.client_cert_from(&self.ca, name, Validity::days_from_now(90))
    }

    /// Writes config.yaml pointing at `upstream` with the named certificates, then loads it.
    pub fn config(&self, upstream: SocketAddr, certs: &[&str], extra_yaml: &str) -> Validated {
        let mut y = format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: https://{upstream}\n  ca: certs/dev-ca.crt\nclient_certs:\n"
        );
        if certs.is_empty() {
            y = y.replace("client_certs:\n", "client_certs: []\n");
        }
        for c in certs {
            y.push_str(&format!(
                "  - name: {c}\n    cert: certs/{c}.crt\n    key: certs/{c}.key\n"
            ));
        }
        y.push_str(extra_yaml);
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, y).unwrap();
        config::load(&path).unwrap()
    }

    /// Writes `yaml` as config.yaml and loads it.
    pub fn config_text(&self, yaml: &str) -> Validated {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        config::load(&path).unwrap()
    }

    /// The stand-in's options (recording requests) from this certs folder.
    pub fn mock_options(&self) -> MockOptions {
        let mut opts = kit::mock_options(
            &self.certs(),
            SERVER_KEY.into(),
            ADMIN_TOKEN.into(),
            Duration::ZERO,
        )
        .unwrap();
        opts.record_requests = true;
        opts
    }

    /// The stand-in, answering after `delay`.
    pub async fn mock(&self, delay: Duration) -> MockHandle {
        self.mock_with(|o| o.delay = delay).await
    }

    /// The stand-in with options changed by `tune`.
    pub async fn mock_with(&self, tune: impl FnOnce(&mut MockOptions)) -> MockHandle {
        self.mock_on("127.0.0.1:0".parse().unwrap(), tune).await
    }

    /// The stand-in on `addr` (its certificate names 127.0.0.1, ::1 and localhost; see
    /// [`Env::server_cert_for`]), with options changed by `tune`.
    pub async fn mock_on(
        &self,
        addr: SocketAddr,
        tune: impl FnOnce(&mut MockOptions),
    ) -> MockHandle {
        let mut opts = self.mock_options();
        tune(&mut opts);
        mock::start(addr, opts).await.unwrap()
    }

    /// Reissues the stand-in's server certificate for these addresses too (before any
    /// stand-in starts).
    pub fn server_cert_for(&self, ips: &[&str]) {
        let mut sans = pki::default_server_sans();
        sans.extend(ips.iter().map(|s| s.to_string()));
        self.ca.issue_server_cert(&self.certs(), &sans).unwrap();
    }

    /// The proxy in this process, serving `v`.
    pub async fn proxy(&self, v: &Validated) -> Running {
        proxy(v).await
    }

    /// The proxy binary serving `v` (see [`Spawned::run`]).
    pub async fn spawn(&self, v: &Validated) -> Spawned {
        Spawned::run(v).await
    }
}

/// The proxy in this process, serving `v` (whatever made its certificates).
pub async fn proxy(v: &Validated) -> Running {
    amity_mtls_proxy::install_crypto_provider();
    server::start(v).await.unwrap()
}

/// The usual setup: client certificate "backend-a", the stand-in answering at once, and a
/// proxy configured with it plus `extra_yaml`. Keep the `Env` alive: it owns the files.
pub async fn proxied(extra_yaml: &str) -> (Env, MockHandle, Running) {
    proxied_with(|_| {}, extra_yaml).await
}

/// [`proxied`], with the stand-in's options changed by `tune`.
pub async fn proxied_with(
    tune: impl FnOnce(&mut MockOptions),
    extra_yaml: &str,
) -> (Env, MockHandle, Running) {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock_with(tune).await;
    let proxy = env
        .proxy(&env.config(mock.addr, &["backend-a"], extra_yaml))
        .await;
    (env, mock, proxy)
}

/// A second, unrelated CA (as if from another organisation).
pub fn foreign_ca() -> (tempfile::TempDir, DevCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::init(dir.path(), false).unwrap();
    (dir, ca)
}
