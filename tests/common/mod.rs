//! In-process harness: a dev CA, client certificates, a stand-in Amity and a
//! proxy on ephemeral loopback ports, built in a few lines per test.
#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amity_mtls_proxy::model::config::{self, Validated};
use amity_mtls_proxy::model::pki::{
    self, CertName, CertStore, CsrRequest, DevCa, KeyType, Validity,
};
use amity_mtls_proxy::process::server::{self, Running};
use amity_mtls_proxy::tools::demo;
use amity_mtls_proxy::tools::mock::{self, MockHandle, MockOptions};

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

/// The v4 token call (POST, JSON body) for `user`, with the stand-in's server key.
pub async fn v4(addr: SocketAddr, user: &str) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    demo::call(
        addr,
        http::Method::POST,
        "/api/v4/authentication/token",
        &[
            ("x-server-key", SERVER_KEY),
            ("content-type", "application/json"),
        ],
        &serde_json::json!({ "userId": user }).to_string(),
    )
    .await
    .unwrap()
}

/// TLS handshakes the stand-in completed.
pub fn handshakes_seen(mock: &MockHandle) -> u64 {
    mock.observed.handshakes.load(Ordering::Relaxed)
}

/// Headers of a backend that sends the stand-in's server key itself.
pub const WITH_KEY: &[(&str, &str)] = &[("x-server-key", SERVER_KEY)];

/// The status of one v3 token call; `Err` when no HTTP answer came.
pub async fn token_status(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<http::StatusCode, String> {
    demo::call(addr, http::Method::GET, V3, headers, "")
        .await
        .map(|r| r.0)
}

/// Backends calling all the time; every answer that is not 200 is counted.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Four loops of v3 calls with `headers`, each on a new connection.
    pub fn start(addr: SocketAddr, headers: &'static [(&'static str, &'static str)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..4)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match token_status(addr, headers).await {
                            Ok(http::StatusCode::OK) => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                eprintln!("failed request: {other:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the loops; returns (ok, failed).
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Waits until new requests reach the stand-in with `serial`, then checks the next ones all do.
pub async fn settles_on(
    mock: &MockHandle,
    proxy: SocketAddr,
    serial: &str,
    headers: &[(&str, &str)],
    log: Option<&Path>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = mock.observed.requests().len();
        assert_eq!(token_status(proxy, headers).await, Ok(http::StatusCode::OK));
        let last = mock.observed.requests()[seen..]
            .last()
            .map(|s| s.client_serial.clone());
        if last.as_deref() == Some(serial) {
            break;
        }
        let log = log
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the proxy never presented {serial}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = mock.observed.requests().len();
    for _ in 0..5 {
        assert_eq!(token_status(proxy, headers).await, Ok(http::StatusCode::OK));
    }
    assert!(
        mock.observed.requests()[before..]
            .iter()
            .all(|s| s.client_serial == serial),
        "an old certificate was presented after the switch"
    );
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
        self.mock_with(|o| o.delay = delay).await
    }

    /// The stand-in with options changed by `tune`.
    pub async fn mock_with(&self, tune: impl FnOnce(&mut MockOptions)) -> MockHandle {
        let mut opts = demo::mock_options(
            &self.certs(),
            SERVER_KEY.into(),
            ADMIN_TOKEN.into(),
            Duration::ZERO,
        )
        .unwrap();
        opts.record_requests = true;
        tune(&mut opts);
        mock::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .unwrap()
    }

    pub async fn proxy(&self, v: &Validated) -> Running {
        server::start(v).await.unwrap()
    }
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

/// Retries `attempt` every 100 ms until it succeeds; fails naming `what` and the last error
/// once `limit` has passed.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let t = Instant::now();
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(last) => assert!(
                t.elapsed() < limit,
                "{what}: not within {limit:?}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Parses Prometheus text, failing the test if any sample line was not read.
pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    // prometheus-parse skips lines it cannot read; insist that every sample line was read.
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let s = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let parsed: usize = s
        .samples
        .iter()
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => b.len(), // _sum and _count come as samples of their own
            _ => 1,
        })
        .sum();
    assert_eq!(
        parsed, sample_lines,
        "some metric lines did not parse:\n{text}"
    );
    s
}

/// The value of the first sample of `name` with these labels.
pub fn metric(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Scrapes both formats: OpenMetrics when asked for (as Prometheus asks), the
/// classic text otherwise; both must parse to the same samples.
pub async fn get_metrics(admin: SocketAddr) -> prometheus_parse::Scrape {
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let (status, headers, body) = demo::call(admin, http::Method::GET, "/metrics", &accept, "")
        .await
        .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let om = std::str::from_utf8(&body).unwrap();
    assert!(
        om.ends_with("# EOF\n"),
        "OpenMetrics text must end with # EOF"
    );
    let (status, headers, body) = demo::call(admin, http::Method::GET, "/metrics", &[], "")
        .await
        .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let classic = scrape(std::str::from_utf8(&body).unwrap());
    assert_eq!(scrape(om).samples.len(), classic.samples.len());
    classic
}
