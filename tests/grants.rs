//! Caller grants: which app a fleet identity may call, which route classes there, and for
//! auth tokens which userIds; a refused mint never reaches Amity.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use amity_mtls_proxy::model::pki::Validity;
use common::{curl, Env, Fleet, SERVER_KEY};

/// A fleet caller's certificate and key.
type Caller = (PathBuf, PathBuf);

/// One call through curl as `who`: (status, the proxy's reason when it refused).
async fn call_as(
    base: &str,
    ca: &Path,
    who: &Caller,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let (url, ca, (crt, key)) = (format!("{base}{path}"), ca.to_path_buf(), who.clone());
    let mut extra: Vec<String> = vec!["-H".into(), format!("x-server-key: {SERVER_KEY}")];
    if let Some(b) = body {
        extra.extend(["-H", "content-type: application/json", "--data-raw", b].map(String::from));
    }
    let (_, status, text) = tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        curl(&url, &ca, Some((&crt, &key)), &extra)
    })
    .await
    .unwrap();
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["data"]["reason"].as_str().map(String::from))
        .unwrap_or_default();
    (status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_limit_callers_by_app_route_and_user_id() {
    let env = Env::new();
    env.client_cert("eu-a");
    env.client_cert("us-a");
    let mock = env.mock(Duration::ZERO).await;
    let fleet = Fleet::new();
    let days = Validity::days_from_now(30);
    let payments = fleet.caller(&fleet.ca, "payments", Some("spiffe://fleet/payments"), days);
    let ops = fleet.caller(&fleet.ca, "ops", Some("spiffe://fleet/ops"), days);
    let app = |name: &str| {
        format!(
            "  - name: {name}\n    upstream: {{ url: \"https://{}\", ca: certs/dev-ca.crt }}\n    client_certs: [{{ name: {name}-a, cert: certs/{name}-a.crt, key: certs/{name}-a.key }}]\n",
            mock.addr
        )
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n{}apps:\n{}{}callers:\n  - identity: spiffe://fleet/payments\n    grants:\n      - {{ app: eu, routes: [auth_token], user_ids: [\"bot-*\"] }}\n  - identity: spiffe://fleet/ops\n    grants:\n      - {{ app: us, routes: [auth_token] }}\n",
        fleet.inbound_yaml(),
        app("eu"),
        app("us"),
    );
    let proxy = env.proxy(&env.config_text(&yaml)).await;
    let base = format!("https://127.0.0.1:{}", proxy.addr.port());
    let ca = fleet.path("dev-ca.crt");
    let v3 = |app: &str, query: &str| format!("/apps/{app}/api/v3/authentication/token?{query}");
    let v4 = "/apps/eu/api/v4/authentication/token";
    let cases: Vec<(&Caller, String, Option<&str>, u16, &str)> = vec![
        // Granted app A only: app B is refused.
        (
            &payments,
            v3("us", "userId=bot-1"),
            None,
            403,
            "caller_app_denied",
        ),
        // A userId grant: alice no, bot-7 yes, on v3 and v4.
        (
            &payments,
            v3("eu", "userId=alice"),
            None,
            403,
            "user_id_denied",
        ),
        (&payments, v3("eu", "userId=bot-7"), None, 200, ""),
        (
            &payments,
            v4.into(),
            Some(r#"{"userId":"alice"}"#),
            403,
            "user_id_denied",
        ),
        (&payments, v4.into(), Some(r#"{"userId":"bot-7"}"#), 200, ""),
        // Encoded, it is still read as Amity reads it.
        (
            &payments,
            v3("eu", "userId=%61lice"),
            None,
            403,
            "user_id_denied",
        ),
        // Ambiguity is refused, not guessed.
        (
            &payments,
            v3("eu", "userId=bot-7&userId=alice"),
            None,
            400,
            "user_id_ambiguous",
        ),
        (
            &payments,
            v3("eu", "userId=bot-7&UserID=alice"),
            None,
            400,
            "user_id_ambiguous",
        ),
        (
            &payments,
            v4.into(),
            Some(r#"{"userId":"bot-7","userId":"alice"}"#),
            400,
            "user_id_ambiguous",
        ),
        (
            &payments,
            v4.into(),
            Some(r#"{"userId":["bot-7"]}"#),
            400,
            "user_id_ambiguous",
        ),
        (
            &payments,
            format!("{v4}?userId=bot-7"),
            Some(r#"{"userId":"alice"}"#),
            400,
            "user_id_ambiguous",
        ),
        // A grant without user_ids allows any userId, on its app only.
        (&ops, v3("us", "userId=carol"), None, 200, ""),
        (
            &ops,
            v3("eu", "userId=carol"),
            None,
            403,
            "caller_app_denied",
        ),
    ];
    for (who, path, body, want, reason) in &cases {
        let (status, got) = call_as(&base, &ca, who, path, *body).await;
        assert_eq!((status, got.as_str()), (*want, *reason), "{path} {body:?}");
    }
    // Only the allowed mints reached Amity.
    let seen: Vec<String> = mock
        .observed
        .requests()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        seen,
        [
            "/api/v3/authentication/token?userId=bot-7",
            "/api/v4/authentication/token",
            "/api/v3/authentication/token?userId=carol",
        ]
    );
    proxy.shutdown().await;
}

#[test]
fn grants_are_checked_against_the_apps() {
    let env = Env::new();
    let fleet = Fleet::new();
    let yaml = format!(
        "listen: 127.0.0.1:0\n{}apps:\n  - {{ name: eu, upstream: {{ region: eu }} }}\ncallers:\n  - identity: a\n    routes: [auth_token]\n  - identity: b\n    grants:\n      - {{ app: apac, routes: [auth_token] }}\n      - {{ app: eu, routes: [admin], user_ids: [\"bot-*\"] }}\n",
        fleet.inbound_yaml()
    );
    let path = env.dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err = amity_mtls_proxy::model::config::load(&path)
        .unwrap_err()
        .to_string();
    for needle in [
        "callers[0].routes: with apps, name each app under grants",
        "callers[1].grants[0].app: \"apac\" is not an app; apps: eu",
        "callers[1].grants[1].user_ids: limits auth-token calls, but routes does not grant auth_token",
    ] {
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
}
