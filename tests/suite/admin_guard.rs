//! The admin listener against browsers and DNS rebinding: a page open on the same machine
//! must not trigger a reload or read /certs and /metrics, while the kubelet's probes and
//! Prometheus keep working; and the optional bearer token.

use crate::common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::{get_metrics, json, metric, proxied, Env};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One request with exactly these headers (no Host unless given), as a browser or curl sends it.
async fn raw(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// A refusal in the proxy's Amity-shaped error body.
fn assert_refused(what: &str, got: (StatusCode, http::HeaderMap, Bytes), status: StatusCode) {
    assert_eq!(got.0, status, "{what}: {}", String::from_utf8_lossy(&got.2));
    let v = json(&got.2);
    assert_eq!(v["status"], "error", "{what}: {v}");
    assert_eq!(
        v["code"],
        900_000 + u64::from(status.as_u16()),
        "{what}: {v}"
    );
    assert_eq!(v["data"]["source"], "proxy", "{what}: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("amity-mtls-proxy: "),
        "{what}: {v}"
    );
}

async fn reloads_ok(admin: SocketAddr) -> Option<f64> {
    metric(
        &get_metrics(admin).await,
        "amity_proxy_reloads_total",
        &[("result", "ok")],
    )
}

#[tokio::test]
async fn post_reload_refuses_an_origin_or_a_foreign_host() {
    let (_env, _mock, proxy) = proxied("").await;
    let admin = proxy.admin_addr;
    let own = admin.to_string();
    let before = reloads_ok(admin).await;

    let refused: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "a foreign Origin",
            vec![("host", &own), ("origin", "http://evil.example")],
        ),
        (
            "its own Origin",
            vec![("host", &own), ("origin", "http://127.0.0.1")],
        ),
        ("a foreign Host", vec![("host", "evil.example:9901")]),
        ("a rebinding name", vec![("host", "localhost.evil.example")]),
    ];
    for (what, headers) in &refused {
        let got = raw(admin, Method::POST, "/reload", headers).await;
        assert_refused(what, got, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        reloads_ok(admin).await,
        before,
        "a refused request reloaded"
    );

    for host in [
        own.as_str(),
        "localhost",
        "localhost:8001",
        "LOCALHOST:9901",
    ] {
        let (status, _, body) = raw(admin, Method::POST, "/reload", &[("host", host)]).await;
        assert_eq!(status, StatusCode::OK, "Host {host}: {body:?}");
    }
    // curl and kubectl without a Host header at all are not browsers.
    let (status, _, _) = raw(admin, Method::POST, "/reload", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_host_reads_nothing_but_probes_still_answer() {
    let (_env, _mock, proxy) = proxied("").await;
    let admin = proxy.admin_addr;
    let rebound = [("host", "attacker.example")];
    for path in ["/certs", "/metrics", "/nowhere"] {
        let got = raw(admin, Method::GET, path, &rebound).await;
        assert_refused(path, got, StatusCode::FORBIDDEN);
    }
    // The kubelet's probes: Host is the pod's IP and port, or anything at all.
    let own = admin.to_string();
    for path in ["/healthz", "/readyz"] {
        for headers in [&rebound[..], &[("host", own.as_str())][..]] {
            let (status, _, body) = raw(admin, Method::GET, path, headers).await;
            assert_eq!(status, StatusCode::OK, "{path} {headers:?}: {body:?}");
        }
    }
    // The listener's own address, as Prometheus sends it.
    for path in ["/certs", "/metrics"] {
        let (status, _, _) = raw(admin, Method::GET, path, &[("host", &own)]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_admin_token_guards_every_endpoint_but_the_probes() {
    const TOKEN: &str = "admin-listener-token-0123456789";
    let env = Env::new();
    env.client_cert("backend-a");
    let token_file = env.dir.path().join("admin-auth");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mock = env.mock(std::time::Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "admin_auth_token_file: admin-auth\n",
    );
    assert!(!format!("{v:?}").contains(TOKEN), "the token reached Debug");
    let proxy = env.proxy(&v).await;
    let admin = proxy.admin_addr;
    let own = admin.to_string();
    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");

    for (method, path) in [
        (Method::GET, "/certs"),
        (Method::GET, "/metrics"),
        (Method::POST, "/reload"),
    ] {
        for auth in [None, Some(wrong.as_str()), Some(TOKEN)] {
            let mut headers = vec![("host", own.as_str())];
            headers.extend(auth.map(|a| ("authorization", a)));
            let got = raw(admin, method.clone(), path, &headers).await;
            assert_eq!(
                got.1.get("www-authenticate").map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {path} with {auth:?}"
            );
            assert_refused(path, got, StatusCode::UNAUTHORIZED);
        }
        let headers = [("host", own.as_str()), ("authorization", bearer.as_str())];
        let (status, _, body) = raw(admin, method.clone(), path, &headers).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body:?}");
    }
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = raw(admin, Method::GET, path, &[("host", &own)]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }

    // A new token in the file takes over on reload.
    const NEXT: &str = "the-next-admin-listener-token";
    std::fs::write(&token_file, NEXT).unwrap();
    let headers = [("host", own.as_str()), ("authorization", bearer.as_str())];
    let (status, _, _) = raw(admin, Method::POST, "/reload", &headers).await;
    assert_eq!(status, StatusCode::OK);
    let got = raw(admin, Method::GET, "/certs", &headers).await;
    assert_refused("the old token", got, StatusCode::UNAUTHORIZED);
    let next = format!("Bearer {NEXT}");
    let headers = [("host", own.as_str()), ("authorization", next.as_str())];
    let (status, _, _) = raw(admin, Method::GET, "/certs", &headers).await;
    assert_eq!(status, StatusCode::OK);
}
