//! In-process harness: a dev CA, client certificates, a stand-in Amity and a
//! proxy on ephemeral loopback ports, built in a few lines per test.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use amity_mtls_proxy::config::{self, Validated};
use amity_mtls_proxy::demo;
use amity_mtls_proxy::mock::{self, MockHandle};
use amity_mtls_proxy::pki::{self, CertName, CertStore, CsrRequest, DevCa, KeyType, Validity};
use amity_mtls_proxy::server::{self, Running};

/// The v3 auth-token call every data-path test makes.
pub const V3: &str = "/api/v3/authentication/token?userId=alice";

/// The v3 token call with the stand-in's server key, as a backend makes it.
pub async fn v3(addr: SocketAddr) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    demo::call(
        addr,
        http::Method::GET,
        V3,
        &[("x-server-key", SERVER_KEY)],
        "",
    )
    .await
    .unwrap()
}

/// Server key and admin token the stand-in accepts.
pub const SERVER_KEY: &str = demo::DEMO_SERVER_KEY;
pub const ADMIN_TOKEN: &str = demo::DEMO_ADMIN_TOKEN;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
}

impl Env {
    pub fn new() -> Self {
        amity_mtls_proxy::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ca = DevCa::init(&certs, false).unwrap();
        ca.issue_server_cert(&certs, &pki::default_server_sans())
            .unwrap();
        Self { dir, ca }
    }

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

    pub async fn mock(&self, delay: Duration) -> MockHandle {
        let opts = demo::mock_options(&self.certs(), SERVER_KEY.into(), ADMIN_TOKEN.into(), delay)
            .unwrap();
        mock::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap()
    }

    pub async fn proxy(&self, v: &Validated) -> Running {
        server::start(v).await.unwrap()
    }
}

/// A second, unrelated CA (as if from another organisation).
pub fn foreign_ca() -> (tempfile::TempDir, DevCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::init(dir.path(), false).unwrap();
    (dir, ca)
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}
