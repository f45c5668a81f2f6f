//! What `demo` and the integration tests share: the stand-in's placeholder credentials,
//! its TLS material from a certs folder, and a backend's plain HTTP/1.1 call.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::model::pki::{self, DevCa};
use crate::tools::mock::MockOptions;

/// Server key of the stand-in Amity; a local placeholder, not a secret.
pub const DEMO_SERVER_KEY: &str = "local-dev-server-key";
/// Admin token of the stand-in Amity; a local placeholder, not a secret.
pub const DEMO_ADMIN_TOKEN: &str = "local-dev-admin-token";
/// Name of the demo's client certificate.
pub const DEMO_CERT: &str = "local-dev";
/// The config `demo` writes when none exists: the repository's own config.yaml.
pub const DEFAULT_CONFIG: &str = include_str!("../../config.yaml");

/// Loads the stand-in's TLS material from a certs folder made by `dev-ca init`.
pub fn mock_options(
    dir: &Path,
    server_key: String,
    admin_token: String,
    delay: Duration,
) -> Result<MockOptions, String> {
    let (ca, _) = DevCa::paths(dir);
    let err = |e: pki::PkiError| format!("{e} (run `dev-ca init` first)");
    Ok(MockOptions {
        chain: pki::read_cert_chain(&dir.join(format!("{}.crt", pki::DEV_SERVER))).map_err(err)?,
        key: pki::read_private_key(&dir.join(format!("{}.key", pki::DEV_SERVER))).map_err(err)?,
        client_ca: pki::read_cert_chain(&ca).map_err(err)?,
        server_key,
        admin_token,
        delay,
        http1_only: false,
        max_requests_per_connection: 0,
        body_pause: Duration::ZERO,
        record_requests: false,
        max_concurrent_streams: None,
        max_connections: None,
        idle_timeout: None,
        max_age: None,
        users_body_bytes: 0,
    })
}

/// A plain HTTP/1.1 call on a new connection, as a backend makes it.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, body))
}
