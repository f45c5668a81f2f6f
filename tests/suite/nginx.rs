//! An independent upstream: nginx with `ssl_verify_client on` and an
//! openssl-made CA. The proxy must get a 200 through it with a certificate
//! that CA signed from the proxy's own CSR.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amity_mtls_proxy::model::config;
use amity_mtls_proxy::model::pki::{CertName, CertStore, CsrRequest, KeyType};
use common::{call, closed_port, get_metrics, json, metric};
use http::{Method, StatusCode};
use std::net::SocketAddr;

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An openssl CA: `dir/{name}.crt` and `.key`.
fn openssl_ca(d: &Path, name: &str) {
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=openssl test CA {name}"),
        ],
    );
}

/// Signs `csr` (a path under `d`) with the CA `ca` into `out`, with the extensions in `ext`.
fn openssl_sign(d: &Path, csr: &str, ca: &str, ext: &str, out: &str) {
    let ext_file = format!("{out}.ext");
    std::fs::write(d.join(&ext_file), ext).unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            out,
        ],
    );
}

/// nginx's server certificate for 127.0.0.1 (`server.crt`, `server.key`), signed by `ca`.
fn openssl_server_cert(d: &Path, ca: &str) {
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl_sign(
        d,
        "server.csr",
        ca,
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        "server.crt",
    );
}

/// Our key and CSR under `d/certs`, signed by the openssl CA `ca`, installed with the proxy's
/// own import as `name`.
fn proxy_client_cert(d: &Path, name: &str, cn: &str, ca: &str) {
    let store = CertStore::new(d.join("certs"));
    let cert_name = CertName::parse(name).unwrap();
    store
        .new_csr(
            &CsrRequest {
                name: cert_name.clone(),
                cn: Some(cn.into()),
                org: None,
                sans: vec![],
                key_type: KeyType::P256,
            },
            false,
            &[],
        )
        .unwrap();
    let signed = format!("{name}.signed.crt");
    openssl_sign(
        d,
        &format!("certs/{name}.csr"),
        ca,
        "extendedKeyUsage=clientAuth\n",
        &signed,
    );
    store.import(&cert_name, &d.join(signed), false).unwrap();
}

/// nginx on a loopback port with `server.crt`, checking client certificates against the CA
/// `client_ca` as `verify` says (`ssl_verify_client`); `locations` goes inside its server block.
/// With `http2`, ALPN offers h2 (the proxy then uses it), else HTTP/1.1 only.
async fn start_nginx(
    nginx: &Path,
    d: &Path,
    client_ca: &str,
    verify: &str,
    http2: bool,
    locations: &str,
) -> (Nginx, SocketAddr) {
    let port = closed_port();
    let conf = format!(
        r#"worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen {port} ssl{h2};
    ssl_certificate {dir}/server.crt;
    ssl_certificate_key {dir}/server.key;
    ssl_client_certificate {dir}/{client_ca}.crt;
    ssl_verify_client {verify};
{locations}
  }}
}}
"#,
        dir = d.display(),
        h2 = if http2 { " http2" } else { "" },
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx)
        .args([
            "-p",
            &d.display().to_string(),
            "-c",
            &d.join("nginx.conf").display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nginx starts");
    let guard = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(port).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen; {}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (guard, port)
}

/// nginx, or `None` (the test is skipped) where it is not installed and this is not CI.
fn nginx_or_skip() -> Option<PathBuf> {
    let found = nginx_binary();
    if found.is_none() {
        // CI installs nginx (scripts/deps.sh); there a missing nginx is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed in CI"
        );
        eprintln!("SKIPPED: nginx is not installed here (apt-get install nginx-light)");
    }
    found
}

/// Writes `d/config.yaml` for an upstream at `port` (trusting `ca`) with `certs`, and loads it;
/// `upstream` goes in the upstream section, `extra` at the end.
fn proxy_config(
    d: &Path,
    port: SocketAddr,
    ca: &str,
    certs: &[&str],
    upstream: &str,
    extra: &str,
) -> config::Validated {
    let mut y = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: https://{port}\n  ca: {ca}.crt\n{upstream}client_certs:{}\n",
        if certs.is_empty() { " []" } else { "" }
    );
    for c in certs {
        y.push_str(&format!(
            "  - name: {c}\n    cert: certs/{c}.crt\n    key: certs/{c}.key\n"
        ));
    }
    y.push_str(extra);
    let cfg = d.join("config.yaml");
    std::fs::write(&cfg, y).unwrap();
    config::load(&cfg).unwrap()
}

const TOKEN_LOCATION: &str = r#"    location = /api/v3/authentication/token {
      add_header X-Client-Subject $ssl_client_s_dn always;
      add_header X-Seen-Host $host always;
      default_type application/json;
      return 200 '"nginx-token"';
    }
    location = /api/v4/authentication/token {
      add_header X-Client-Subject $ssl_client_s_dn always;
      default_type text/plain;
      return 200 '"nginx-token"';
    }"#;

#[tokio::test]
async fn proxy_gets_a_token_through_nginx_demanding_client_certs() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An openssl CA that signs both nginx's server certificate and our client certificate.
    openssl_ca(d, "ca");
    openssl_server_cert(d, "ca");
    proxy_client_cert(d, "nginx-client", "backend-under-test", "ca");
    let (_nginx, port) = start_nginx(&nginx, d, "ca", "on", true, TOKEN_LOCATION).await;

    let v = proxy_config(d, port, "ca", &["nginx-client"], "", "");
    let proxy = common::proxy(&v).await;
    for _ in 0..5 {
        let (status, headers, body) = call(
            proxy.addr,
            Method::GET,
            "/api/v3/authentication/token?userId=u1",
            &[("x-server-key", "k")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(&body[..], br#""nginx-token""#);
        assert_eq!(
            headers["x-client-subject"], "CN=backend-under-test",
            "nginx verified our certificate"
        );
        assert_eq!(headers["x-seen-host"], "127.0.0.1");
    }
    // Each worker thread keeps its own pool: one connection per worker that took a call.
    let workers = amity_mtls_proxy::data::workers::resolve(v.config.workers) as u64;
    let handshakes = proxy.state.current.load().apps[0].upstream_counts().1;
    assert!(
        (1..=workers).contains(&handshakes),
        "{handshakes} connections to nginx for 5 calls and {workers} workers"
    );
    proxy.shutdown().await;
}

/// A v3 or v4 token call through the proxy; (status, client subject nginx saw, body).
async fn token(proxy: SocketAddr, v4: bool) -> (StatusCode, String, String) {
    let (status, headers, body) = if v4 {
        call(
            proxy,
            Method::POST,
            "/api/v4/authentication/token",
            &[("x-server-key", "k"), ("content-type", "application/json")],
            r#"{"userId":"u1"}"#,
        )
        .await
    } else {
        call(
            proxy,
            Method::GET,
            "/api/v3/authentication/token?userId=u1",
            &[("x-server-key", "k")],
            "",
        )
        .await
    }
    .unwrap();
    let subject = headers
        .get("x-client-subject")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, subject, String::from_utf8_lossy(&body).into_owned())
}

/// What `/certs` says about the certificate `name`.
async fn cert_state(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (_, _, body) = call(admin, Method::GET, "/certs", &[], "").await.unwrap();
    json(&body)
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// CA X, which signs nginx's certificate and the client certificate `from-x`, and CA Y, which
/// signs `from-y`.
fn two_cas(d: &Path) {
    openssl_ca(d, "ca-x");
    openssl_ca(d, "ca-y");
    openssl_server_cert(d, "ca-x");
    proxy_client_cert(d, "from-y", "from-y", "ca-y");
    proxy_client_cert(d, "from-x", "from-x", "ca-x");
}

/// Two certificates, the active one from a CA nginx does not trust; nginx finishes the TLS
/// handshake anyway and answers 400 "The SSL certificate error" (its 495).
#[tokio::test]
async fn nginx_refusing_the_certificate_in_http_fails_over_to_the_other() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_cas(d);
    let (_nginx, port) = start_nginx(&nginx, d, "ca-x", "on", true, TOKEN_LOCATION).await;

    let v = proxy_config(
        d,
        port,
        "ca-x",
        &["from-y", "from-x"],
        "",
        "active: from-y\nfailover_after: 2\n",
    );
    let proxy = common::proxy(&v).await;
    for n in 0..6 {
        // Every other call has a body, which the retry must send again.
        let (status, subject, body) = token(proxy.addr, n % 2 == 1).await;
        assert_eq!(status, StatusCode::OK, "call {n}: {body}");
        assert_eq!(body, r#""nginx-token""#);
        assert_eq!(
            subject, "CN=from-x",
            "call {n}: the certificate nginx trusts"
        );
    }
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric(&m, "amity_proxy_failovers_total", &[]),
        Some(2.0),
        "retried with the other certificate until failover_after (2) switched"
    );
    assert_eq!(
        metric(&m, "amity_proxy_cert_active", &[("name", "from-x")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "amity_proxy_upstream_handshake_failures_total",
            &[("reason", "client_cert_rejected")]
        ),
        Some(2.0),
        "each rejection counted"
    );
    assert_eq!(
        metric(
            &m,
            "amity_proxy_requests_total",
            &[("route", "auth_token"), ("status", "200")]
        ),
        Some(6.0)
    );
    let (good, bad) = (
        cert_state(proxy.admin_addr, "from-x").await,
        cert_state(proxy.admin_addr, "from-y").await,
    );
    assert_eq!(good["role"], "active");
    assert_eq!(good["last_handshake"]["accepted"], true);
    assert_eq!(bad["role"], "standby");
    assert_eq!(bad["last_handshake"]["accepted"], false, "{bad}");
    let detail = bad["last_handshake"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("400") && detail.contains("The SSL certificate error"),
        "{detail}"
    );
    proxy.shutdown().await;

    // Only the refused certificate: the caller gets the proxy's 502, not nginx's HTML page.
    let v = proxy_config(d, port, "ca-x", &["from-y"], "", "");
    let proxy = common::proxy(&v).await;
    for v4 in [false, true] {
        let (status, _, body) = token(proxy.addr, v4).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        let err = json(body.as_bytes());
        assert_eq!(err["status"], "error");
        assert_eq!(err["code"], 900502);
        assert_eq!(err["data"]["reason"], "client_cert_rejected");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("The SSL certificate error") && message.contains("\"from-y\""),
            "{message}"
        );
    }
    proxy.shutdown().await;

    // No certificate at all: nginx's other page (its 496), the same 502.
    let v = proxy_config(d, port, "ca-x", &[], "", "");
    let proxy = common::proxy(&v).await;
    let (status, _, body) = token(proxy.addr, false).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let err = json(body.as_bytes());
    assert_eq!(err["data"]["reason"], "client_cert_rejected");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("No required SSL certificate was sent"),
        "{err}"
    );
    proxy.shutdown().await;
}

/// An edge that answers 403 with a page of its own, named in `upstream.cert_rejected_answers`;
/// over HTTP/1.1, where the nginx tests above use HTTP/2.
#[tokio::test]
async fn a_configured_refusal_answer_fails_over_too() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_cas(d);
    let edge = r#"    default_type text/html;
    if ($ssl_client_verify != SUCCESS) {
      return 403 "<html><head><title>Access denied: client certificate not accepted (edge)</title></head></html>";
    }
    location = /api/v3/authentication/forbidden {
      default_type application/json;
      return 403 '{"status":"error","code":400300,"message":"Forbidden error."}';
    }
    location = /api/v3/authentication/forbidden-long {
      error_page 403 /long.html;
      return 403;
    }
    location = /long.html {
      internal;
      root DIR;
    }
"#
    .replace("DIR", &d.display().to_string());
    // The rule's text, but past the 8 KiB that are looked at: not a refusal.
    let long = format!(
        "{}<title>client certificate not accepted</title>",
        "x".repeat(20_000)
    );
    std::fs::write(d.join("long.html"), &long).unwrap();
    let (_nginx, port) = start_nginx(
        &nginx,
        d,
        "ca-x",
        "optional_no_ca",
        false,
        &format!("{edge}{TOKEN_LOCATION}"),
    )
    .await;
    let v = proxy_config(
        d,
        port,
        "ca-x",
        &["from-y", "from-x"],
        "  cert_rejected_answers:\n    - status: 403\n      title_contains: client certificate not accepted\n",
        "active: from-y\nfailover_after: 1\nroutes:\n  extra:\n    - prefix: /api/v3/authentication/forbidden\n",
    );
    let proxy = common::proxy(&v).await;
    for n in 0..3 {
        let (status, subject, body) = token(proxy.addr, false).await;
        assert_eq!(status, StatusCode::OK, "call {n}: {body}");
        assert_eq!(subject, "CN=from-x");
    }
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(metric(&m, "amity_proxy_failovers_total", &[]), Some(1.0));
    assert_eq!(
        cert_state(proxy.admin_addr, "from-x").await["role"],
        "active"
    );
    // Amity's own 403 is not a refusal of the certificate: passed on as it is, no failover.
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/authentication/forbidden",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["code"], 400300);
    // A long 403 goes on whole: the start that was read, then the rest.
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/authentication/forbidden-long",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(String::from_utf8_lossy(&body), long);
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(metric(&m, "amity_proxy_failovers_total", &[]), Some(1.0));
    proxy.shutdown().await;
}

/// nginx refuses a certificate in HTTP (its 400 page): `check --live` says so and fails, and a
/// reload to that certificate is refused while the accepted one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_and_the_reload_proof_see_nginx_refusing_in_http() {
    let Some(nginx) = nginx_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_cas(d);
    let (_nginx, port) = start_nginx(&nginx, d, "ca-x", "on", true, TOKEN_LOCATION).await;

    let v = proxy_config(d, port, "ca-x", &["from-y"], "", "");
    let (code, stdout, stderr) = common::cli::check_live(v.path.clone()).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("from-y: refused:") && stdout.contains("The SSL certificate error"),
        "{stdout}"
    );
    assert!(stderr.contains("client_certs[0] (from-y)"), "{stderr}");

    let v = proxy_config(d, port, "ca-x", &["from-x"], "", "");
    let (code, stdout, stderr) = common::cli::check_live(v.path.clone()).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("from-x: accepted by 127.0.0.1:"),
        "{stdout}"
    );

    let proxy = common::proxy(&v).await;
    assert_eq!(token(proxy.addr, false).await.1, "CN=from-x");
    proxy_config(d, port, "ca-x", &["from-y"], "", "");
    let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains("from-y refused") && message.contains("The SSL certificate error"),
        "{message}"
    );
    let (status, subject, _) = token(proxy.addr, true).await;
    assert_eq!((status, subject.as_str()), (StatusCode::OK, "CN=from-x"));
    proxy.shutdown().await;
}
