//! `demo`: dev CA, a CSR, its signed certificate, the stand-in Amity and the
//! proxy, all on loopback; then the secure-mode login flow through the proxy.

use std::net::SocketAddr;
use std::path::Path;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

use crate::data::upstream::{upstream_path, Outgoing, Upstream};
use crate::model::config;
use crate::model::pki::{
    self, CertName, CertStore, CsrRequest, DevCa, EntryState, KeyType, Validity,
};
use crate::process::server;
use crate::telemetry::metrics::Metrics;
use crate::tools::kit::{
    call, mock_options, DEFAULT_CONFIG, DEMO_ADMIN_TOKEN, DEMO_CERT, DEMO_SERVER_KEY,
};
use crate::tools::mock;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

/// Makes sure the dev CA and the `local-dev` certificate exist and are usable; reuses what is there.
fn prepare_certs(config_path: &Path) -> Result<(), String> {
    let base = config_path.parent().unwrap_or(Path::new(""));
    let dir = base.join("certs");
    step(1, "dev CA (stands in for Amity's CA)");
    let (ca_crt, _) = DevCa::paths(&dir);
    let ca = if ca_crt.exists() {
        println!("    reusing {}", ca_crt.display());
        DevCa::load(&dir).map_err(|e| e.to_string())?
    } else {
        let ca = DevCa::init(&dir, false).map_err(|e| e.to_string())?;
        println!("    created {}", ca_crt.display());
        ca
    };
    let server_crt = dir.join(format!("{}.crt", pki::DEV_SERVER));
    let server_fresh = pki::read_cert_chain(&server_crt)
        .ok()
        .and_then(|c| pki::CertInfo::from_der(&c[0]).ok())
        .is_some_and(|i| i.days_left(pki::now_unix()) > 7);
    if !server_fresh {
        ca.issue_server_cert(&dir, &pki::default_server_sans())
            .map_err(|e| e.to_string())?;
        println!(
            "    issued the stand-in's server certificate {}",
            server_crt.display()
        );
    }

    let store = CertStore::new(&dir);
    let installed = store
        .list(&[])
        .into_iter()
        .find(|e| e.name == DEMO_CERT)
        .is_some_and(|e| e.state == EntryState::Installed && e.days_left.unwrap_or(0) > 7);
    step(2, &format!("client certificate {DEMO_CERT:?}: key + CSR (`cert new`), signed by the dev CA (as the console would), imported (`cert import`)"));
    if installed {
        println!("    reusing {}", store.path(DEMO_CERT, "crt").display());
        return Ok(());
    }
    let name = CertName::parse(DEMO_CERT).map_err(|e| e.to_string())?;
    let req = CsrRequest {
        name: name.clone(),
        cn: Some("local-dev-backend".into()),
        org: None,
        sans: vec![],
        key_type: KeyType::P256,
    };
    let new = store.new_csr(&req, true, &[]).map_err(|e| e.to_string())?;
    println!(
        "    CSR {} (SHA-256 {})",
        store.path(DEMO_CERT, "csr").display(),
        new.csr_sha256
    );
    let pem = ca
        .sign_csr(&new.csr_pem, Validity::days_from_now(90))
        .map_err(|e| e.to_string())?;
    let signed = dir.join(format!("{DEMO_CERT}.signed.pem"));
    pki::write_file(&signed, pem.as_bytes(), 0o644, true).map_err(|e| e.to_string())?;
    let report = store
        .import(&name, &signed, true)
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&signed);
    println!(
        "    installed {} (serial {}, {} days left)",
        report.path.display(),
        report.info.serial,
        report.info.days_left(pki::now_unix())
    );
    Ok(())
}

/// Runs the demo with `config_path` (written from the default if missing).
pub async fn run(config_path: &Path, once: bool) -> Result<(), String> {
    println!("amity-mtls-proxy demo: everything on loopback, nothing leaves this machine");
    if !config_path.exists() {
        pki::write_file(config_path, DEFAULT_CONFIG.as_bytes(), 0o644, false)
            .map_err(|e| e.to_string())?;
        println!("wrote the local default config {}", config_path.display());
    }
    prepare_certs(config_path)?;
    let v = config::load(config_path).map_err(|e| e.to_string())?;
    let [app] = v.apps.as_slice() else {
        return Err(format!(
            "{}: the demo serves one app; give upstream at the top of the file, not apps",
            config_path.display()
        ));
    };
    if app.upstream_config.url.is_none() || !v.listen.ip().is_loopback() {
        return Err(format!(
            "{}: the demo needs upstream.url pointing at the stand-in on loopback and a loopback listen address",
            config_path.display()
        ));
    }
    let mock_addr: SocketAddr = format!("{}:{}", app.upstream.host, app.upstream.port)
        .parse()
        .map_err(|_| {
            format!(
                "upstream.url host {:?} is not a loopback IP address",
                app.upstream.host
            )
        })?;
    if !mock_addr.ip().is_loopback() {
        return Err(format!(
            "upstream.url {mock_addr} is not a loopback address"
        ));
    }

    step(
        3,
        &format!(
            "stand-in Amity on https://{mock_addr} (demands a client certificate from the dev CA)"
        ),
    );
    let dir = config_path.parent().unwrap_or(Path::new("")).join("certs");
    let opts = mock_options(
        &dir,
        DEMO_SERVER_KEY.into(),
        DEMO_ADMIN_TOKEN.into(),
        Duration::ZERO,
    )?;
    let mock = mock::start(mock_addr, opts)
        .await
        .map_err(|e| e.to_string())?;

    step(
        4,
        &format!("proxy on http://{} -> {}", v.listen, app.upstream.base),
    );
    let proxy = server::start(&v).await.map_err(|e| e.to_string())?;
    let addr = proxy.addr;

    let result = flow(addr, &v).await;
    if let Err(e) = result {
        proxy.shutdown().await;
        mock.shutdown().await;
        return Err(e);
    }
    let (requests, handshakes) = proxy.state.current.load().apps[0].upstream_counts();
    println!(
        "\nupstream: {requests} requests over {handshakes} TLS handshake(s) (pooled: one connection per worker thread while it has room for more streams, {} workers)",
        crate::data::workers::resolve(v.config.workers)
    );
    if once {
        proxy.shutdown().await;
        mock.shutdown().await;
        return Ok(());
    }
    println!("\nServing until Ctrl-C. Try it yourself:");
    println!("  curl -sS 'http://{addr}/api/v3/authentication/token?userId=alice' -H 'x-server-key: {DEMO_SERVER_KEY}'");
    println!("  curl -sS -X POST http://{addr}/api/v4/authentication/token -H 'x-server-key: {DEMO_SERVER_KEY}' -H 'content-type: application/json' -d '{{\"userId\":\"alice\"}}'");
    println!("  curl -sS http://{addr}/api/v3/users -H 'Authorization: Bearer {DEMO_ADMIN_TOKEN}'");
    println!(
        "  curl -sS -i http://{addr}/api/v3/channels        # not an mTLS call: 403 from the proxy"
    );
    let admin = proxy.admin_addr;
    println!("  curl -sS http://{admin}/certs                       # which certificate is active, days left");
    println!("  curl -sS http://{admin}/metrics");
    println!("  curl -sS -X POST http://{admin}/reload              # after editing config.yaml or the certificates");
    crate::process::signals::terminate().await;
    proxy.shutdown().await;
    mock.shutdown().await;
    Ok(())
}

async fn flow(addr: SocketAddr, v: &config::Validated) -> Result<(), String> {
    let user = "demo-user";
    step(
        5,
        &format!("backend asks for an auth token for {user:?} (v3, through the proxy)"),
    );
    let path = format!("/api/v3/authentication/token?userId={user}");
    let (status, headers, body) = call(
        addr,
        Method::GET,
        &path,
        &[("x-server-key", DEMO_SERVER_KEY)],
        "",
    )
    .await?;
    let presented = headers
        .get("x-mock-client-subject")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_string();
    println!("    GET {path} -> {status}");
    println!("    the stand-in saw client certificate: {presented}");
    if status != StatusCode::OK {
        return Err(format!(
            "token call failed: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let token: String = serde_json::from_slice(&body)
        .map_err(|e| format!("token body is not a JSON string: {e}"))?;
    println!(
        "    token: {}... ({} characters; shown shortened, it is a credential)",
        &token[..6.min(token.len())],
        token.len()
    );

    step(6, "same with the v4 call");
    let (status, _, body) = call(
        addr,
        Method::POST,
        "/api/v4/authentication/token",
        &[
            ("x-server-key", DEMO_SERVER_KEY),
            ("content-type", "application/json"),
        ],
        &format!("{{\"userId\":\"{user}\"}}"),
    )
    .await?;
    println!(
        "    POST /api/v4/authentication/token -> {status} ({} bytes)",
        body.len()
    );
    if status != StatusCode::OK {
        return Err(format!("v4 token call failed: {status}"));
    }

    step(7, "the app creates a session with the token (POST /api/v3/sessions, straight to Amity as the SDK does)");
    let app = &v.apps[0];
    let sdk = Upstream::new(
        app.upstream.clone(),
        &app.upstream_config,
        &app.extra_roots,
        app.certs.first(),
        &v.config.timeouts,
        Metrics::new().app(app.name()),
        1,
    )
    .map_err(|e| e.to_string())?;
    let mut h = HeaderMap::new();
    h.insert(
        "x-api-key",
        http::HeaderValue::from_static("local-dev-api-key"),
    );
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"userId": user, "deviceId": "demo-device", "displayName": "Demo User", "authToken": token});
    let resp = sdk
        .send(&Outgoing {
            method: Method::POST,
            path_and_query: upstream_path(
                &app.upstream.path_prefix,
                &http::uri::PathAndQuery::from_static("/api/v3/sessions"),
            )
            .map_err(|e| e.to_string())?,
            headers: h,
            body: Bytes::from(body.to_string()),
        })
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let session: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    println!(
        "    -> {status}, session for {} (accessToken {} characters)",
        session["users"][0]["userId"],
        session["accessToken"].as_str().map_or(0, str::len)
    );
    if status != StatusCode::OK {
        return Err(format!(
            "session call failed: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }

    step(8, "an admin-token call, and a call the proxy refuses");
    let (status, _, _) = call(
        addr,
        Method::GET,
        "/api/v3/users",
        &[("authorization", &format!("Bearer {DEMO_ADMIN_TOKEN}"))],
        "",
    )
    .await?;
    println!("    GET /api/v3/users with Bearer admin token -> {status}");
    let (status, _, body) = call(addr, Method::GET, "/api/v3/channels", &[], "").await?;
    println!(
        "    GET /api/v3/channels without a token -> {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
