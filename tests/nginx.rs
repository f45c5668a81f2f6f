//! An independent upstream: nginx with `ssl_verify_client on` and an
//! openssl-made CA. The proxy must get a 200 through it with a certificate
//! that CA signed from the proxy's own CSR.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use amity_mtls_proxy::model::config;
use amity_mtls_proxy::model::pki::{CertName, CertStore, CsrRequest, KeyType};
use amity_mtls_proxy::tools::demo::call;
use common::closed_port;
use http::{Method, StatusCode};

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

#[tokio::test]
async fn proxy_gets_a_token_through_nginx_demanding_client_certs() {
    let Some(nginx) = nginx_binary() else {
        // CI installs nginx (scripts/deps.sh); there a missing nginx is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed in CI"
        );
        eprintln!("SKIPPED: nginx is not installed here (apt-get install nginx-light)");
        return;
    };
    amity_mtls_proxy::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();

    // An openssl CA that signs both nginx's server certificate and our client certificate.
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
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=openssl test CA",
        ],
    );
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
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );

    // Our key and CSR, signed by the openssl CA, installed with the proxy's own import.
    let store = CertStore::new(&certs);
    let name = CertName::parse("nginx-client").unwrap();
    store
        .new_csr(
            &CsrRequest {
                name: name.clone(),
                cn: Some("backend-under-test".into()),
                org: None,
                sans: vec![],
                key_type: KeyType::P256,
            },
            false,
            &[],
        )
        .unwrap();
    std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "certs/nginx-client.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "client.crt",
        ],
    );
    store.import(&name, &d.join("client.crt"), false).unwrap();

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
    listen {port} ssl http2;
    ssl_certificate {dir}/server.crt;
    ssl_certificate_key {dir}/server.key;
    ssl_client_certificate {dir}/ca.crt;
    ssl_verify_client on;
    location = /api/v3/authentication/token {{
      add_header X-Client-Subject $ssl_client_s_dn always;
      add_header X-Seen-Host $host always;
      default_type application/json;
      return 200 '"nginx-token"';
    }}
  }}
}}
"#,
        dir = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let child = Command::new(&nginx)
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
    let _nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(port).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen; {}",
            std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cfg = d.join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: https://{port}\n  ca: ca.crt\nclient_certs:\n  - name: nginx-client\n    cert: certs/nginx-client.crt\n    key: certs/nginx-client.key\n"
        ),
    )
    .unwrap();
    let v = config::load(&cfg).unwrap();
    let proxy = amity_mtls_proxy::process::server::start(&v).await.unwrap();
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
    let handshakes = proxy.state.metrics.handshakes();
    assert!(
        (1..=workers).contains(&handshakes),
        "{handshakes} connections to nginx for 5 calls and {workers} workers"
    );
    proxy.shutdown().await;
}
