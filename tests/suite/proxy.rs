//! The data path end to end: proxy and stand-in Amity on loopback, certificates made at test
//! time; what passes, what is refused, and a certificate Amity refuses.
//! (The upstream side is in upstream.rs, the caller side in callers.rs.)

use crate::common;

use std::time::Duration;

use amity_mtls_proxy::model::pki::Validity;
use common::{call, foreign_ca, json, v3, v4, Env, ADMIN_TOKEN, SERVER_KEY, V3};
use http::{Method, StatusCode};

#[tokio::test]
async fn token_and_admin_calls_pass_end_to_end() {
    let env = Env::new();
    let serial = env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let proxy = env.proxy(&v).await;

    let (status, headers, body) = call(
        proxy.addr,
        Method::GET,
        V3,
        &[
            ("x-server-key", SERVER_KEY),
            ("x-request-id", "req-123"),
            ("connection", "x-hop"),
            ("x-hop", "must-not-pass"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let token: String = serde_json::from_slice(&body).expect("v3 body is a JSON string");
    assert!(common::is_issued_token(&token), "{token}");
    assert_eq!(headers["x-request-id"], "req-123");

    let (status, _, body) = v4(proxy.addr, "alice").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() > 16);

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/users",
        &[("authorization", &bearer)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["users"][0]["userId"], "mock-user-1");
    let (status, _, _) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/users",
        &[("x-admin-token", ADMIN_TOKEN)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);

    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(
            s.client_serial, serial,
            "the configured certificate was presented"
        );
        assert_eq!(s.client_subject, "CN=backend-a");
        assert_eq!(s.authority, mock.addr.to_string(), "Host is the upstream's");
        assert!(
            !s.headers.contains_key("x-hop"),
            "a header named in Connection was forwarded"
        );
        assert!(!s.headers.contains_key("connection"));
    }
    assert_eq!(seen[0].headers["x-request-id"], "req-123");
    assert!(
        seen[1].headers.contains_key("x-request-id"),
        "a request id is generated when absent"
    );
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn amity_errors_pass_through_unchanged() {
    let (_env, _mock, proxy) = common::proxied("").await;
    let (status, _, body) = call(
        proxy.addr,
        Method::GET,
        V3,
        &[("x-server-key", "wrong")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        json(&body),
        serde_json::json!({"status":"error","code":400300,"message":"Forbidden error."})
    );
    let (status, _, body) = call(
        proxy.addr,
        Method::POST,
        "/api/v4/authentication/token",
        &[],
        r#"{"userId":"a"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(&body[..], b"Unauthorized");
}

#[tokio::test]
async fn denied_calls_never_leave_the_machine() {
    let (_env, mock, proxy) = common::proxied("").await;
    for (method, path, headers) in [
        (Method::GET, "/api/v3/channels", vec![]),
        (Method::POST, "/api/v3/sessions", vec![]),
        (
            Method::GET,
            "/api/v4/authentication/token",
            vec![("x-server-key", SERVER_KEY)],
        ),
        (Method::GET, "/admin", vec![("authorization", "Bearer x")]),
    ] {
        let (status, headers_out, body) = call(proxy.addr, method.clone(), path, &headers, "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(headers_out["content-type"], "application/json");
        let v = json(&body);
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], 900403);
        assert!(v["message"]
            .as_str()
            .unwrap()
            .starts_with("amity-mtls-proxy:"));
    }
    let (status, _, _) = call(
        proxy.addr,
        Method::GET,
        "/api/v3/authentication/token",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "v3 without userId");
    assert!(mock.observed.requests().is_empty());
    assert_eq!(common::handshakes_seen(&mock), 0);
    assert_eq!(proxy.state.current.load().apps[0].upstream_counts().1, 0);
}

async fn expect_cert_rejection(
    v: amity_mtls_proxy::model::config::Validated,
    mock: &amity_mtls_proxy::tools::mock::MockHandle,
    needle: &str,
) {
    let env_proxy = common::proxy(&v).await;
    let (status, _, body) = v3(env_proxy.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let v = json(&body);
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("upstream rejected our client certificate"),
        "{msg}"
    );
    assert!(msg.contains(needle), "{msg}");
    assert_eq!(v["data"]["reason"], "client_cert_rejected");
    assert!(
        mock.observed.requests().is_empty(),
        "the stand-in served a request without a valid cert"
    );
    // One handshake failure is retried once on a new connection, no more.
    assert_eq!(
        env_proxy.state.current.load().apps[0].upstream_counts().1,
        2
    );
    assert_eq!(
        mock.observed
            .rejected_handshakes
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    env_proxy.shutdown().await;
}

#[tokio::test]
async fn no_client_cert_is_refused_by_amity_and_reported() {
    let env = Env::new();
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &[], "");
    expect_cert_rejection(v, &mock, "no client certificate is configured").await;
}

#[tokio::test]
async fn foreign_ca_cert_is_refused_by_amity_and_reported() {
    let env = Env::new();
    let (_d, other) = foreign_ca();
    env.client_cert_from(&other, "foreign", Validity::days_from_now(30));
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["foreign"], "");
    expect_cert_rejection(v, &mock, "\"foreign\" was presented").await;
}
