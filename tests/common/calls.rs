//! Calls as backends make them, through the proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use amity_mtls_proxy::tools::kit::call;
use amity_mtls_proxy::tools::mock::MockHandle;

use super::SERVER_KEY;

/// The v3 auth-token call every data-path test makes.
pub const V3: &str = "/api/v3/authentication/token?userId=alice";

/// Headers of a backend that sends the stand-in's server key itself.
pub const WITH_KEY: &[(&str, &str)] = &[("x-server-key", SERVER_KEY)];

/// The v3 token call with the stand-in's server key, as a backend makes it.
pub async fn v3(addr: SocketAddr) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    call(addr, http::Method::GET, V3, WITH_KEY, "")
        .await
        .unwrap()
}

/// The v4 token call (POST, JSON body) for `user`, with the stand-in's server key.
pub async fn v4(addr: SocketAddr, user: &str) -> (http::StatusCode, http::HeaderMap, bytes::Bytes) {
    call(
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

/// An HTTP/2 cleartext (h2c) connection to `addr`, as a backend opens one.
pub async fn h2c(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

/// The status of one v3 token call; `Err` when no HTTP answer came.
pub async fn token_status(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<http::StatusCode, String> {
    token_status_at(addr, V3, headers).await
}

/// The status of one GET of `path`; `Err` when no HTTP answer came.
pub async fn token_status_at(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<http::StatusCode, String> {
    call(addr, http::Method::GET, path, headers, "")
        .await
        .map(|r| r.0)
}

/// Waits until the stand-in has received exactly `n` requests in all (it may still be
/// answering them), failing after 10 s.
pub async fn upstream_saw(mock: &MockHandle, n: usize) {
    super::eventually(Duration::from_secs(10), "the calls upstream", || async {
        let seen = mock.observed.requests().len();
        (seen == n)
            .then_some(())
            .ok_or(format!("{seen} requests, not {n}"))
    })
    .await;
}

/// TLS handshakes the stand-in completed.
pub fn handshakes_seen(mock: &MockHandle) -> u64 {
    mock.observed.handshakes.load(Ordering::Relaxed)
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
        Self::start_at(addr, V3, headers)
    }

    /// Four loops of GETs of `path` with `headers`, each on a new connection.
    pub fn start_at(
        addr: SocketAddr,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..4)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match token_status_at(addr, path, headers).await {
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
/// Its own calls name a userId of their own, so that a `Load` running beside it, whose calls
/// may have been sent before the switch, is not taken for them.
pub async fn settles_on(
    mock: &MockHandle,
    proxy: SocketAddr,
    serial: &str,
    headers: &[(&str, &str)],
    log: Option<&Path>,
) {
    const PATH: &str = "/api/v3/authentication/token?userId=settles-on-check";
    let ours = |from: usize| -> Vec<String> {
        mock.observed.requests()[from..]
            .iter()
            .filter(|s| s.path == PATH)
            .map(|s| s.client_serial.clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = mock.observed.requests().len();
        assert_eq!(
            token_status_at(proxy, PATH, headers).await,
            Ok(http::StatusCode::OK)
        );
        if ours(seen).last().map(String::as_str) == Some(serial) {
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
        assert_eq!(
            token_status_at(proxy, PATH, headers).await,
            Ok(http::StatusCode::OK)
        );
    }
    let after = ours(before);
    assert!(
        after.len() == 5 && after.iter().all(|s| s == serial),
        "an old certificate was presented after the switch: {after:?}"
    );
}

/// One call with curl (a real TLS client, with `cert` as the caller's certificate): whether
/// curl succeeded, the status and the body.
pub fn curl(
    url: &str,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    extra: &[&str],
) -> (bool, u16, String) {
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "--max-time",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca);
    if let Some((crt, key)) = cert {
        c.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    let out = c
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.success(),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

/// Whether `token` has the form of the stand-in's tokens: 24 random bytes in lowercase hex.
pub fn is_issued_token(token: &str) -> bool {
    token.len() == 48
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
