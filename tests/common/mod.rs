//! The test kit: a dev CA, client certificates, the stand-in Amity, and the proxy in
//! this process or as the built binary, on loopback, in a few lines per test.
//!
//! - [`env`]: `Env` (temp dir, dev CA, certificates, config, stand-in, in-process proxy),
//!   `proxied` for the usual setup;
//! - [`spawned`]: the binary (`BIN`, declared once) as a `Spawned` process, stopped on drop;
//! - [`calls`]: a backend's calls (`v3`, `v4`, `Load`, `settles_on`, `upstream_saw`);
//! - [`metrics`]: reading /metrics;
//! - [`fleet`]: the fleet's CA and callers for `inbound_tls`;
//! - [`keepalive`]: one raw HTTP/1.1 keep-alive connection, and its parking.
#![allow(dead_code, unused_imports)] // each test file uses a different part

pub mod calls;
pub mod cli;
pub mod env;
pub mod fleet;
pub mod keepalive;
pub mod metrics;
pub mod spawned;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use amity_mtls_proxy::tools::kit::{DEFAULT_CONFIG, DEMO_ADMIN_TOKEN, DEMO_SERVER_KEY};
pub use calls::{
    call, curl, h2c, handshakes_seen, is_issued_token, settles_on, token_status, token_status_at,
    upstream_saw, v3, v4, Load, V3, WITH_KEY,
};
pub use env::{foreign_ca, proxied, proxied_with, proxy, Env};
pub use fleet::Fleet;
pub use metrics::{counted, get_metrics, metric, scrape, scrape_once};
pub use spawned::{pin_ports, Spawned, BIN};

/// Server key the stand-in accepts.
pub const SERVER_KEY: &str = DEMO_SERVER_KEY;
/// Admin token the stand-in accepts.
pub const ADMIN_TOKEN: &str = DEMO_ADMIN_TOKEN;

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

/// A loopback port with nothing listening on it, for a process the test starts to bind.
/// It lies below the kernel's ephemeral range, so no bind to port 0 and no outgoing
/// connection in a test running beside this one can take it first, and is never handed out
/// twice by one test binary.
pub fn closed_port() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const SPAN: u32 = 10_000;
    let first = ephemeral_low.saturating_sub(SPAN).max(1024);
    let span = ephemeral_low.saturating_sub(first).max(1);
    // Test binaries run one after another; a start that differs by process keeps two run by
    // hand side by side apart too.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + start.wrapping_add(n) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {first}..{ephemeral_low}");
}

/// `body` as JSON, failing the test (showing it) if it is not.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// Writes through a temporary file and a rename, as editors and config management do.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A config listening on fixed addresses (for a proxy started before or outside
/// [`Env::config`]), its upstream at `upstream`, then `rest` (under `upstream:` first).
pub fn config_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    rest: &str,
) -> String {
    format!("listen: {listen}\nadmin_listen: {admin}\nupstream:\n  url: https://{upstream}\n{rest}")
}

/// A path as text, for YAML and messages.
pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}
