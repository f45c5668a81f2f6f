//! Caller grants: which app a fleet identity may call, which route classes there, and for
//! auth tokens which userIds; a refused mint never reaches Amity.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use amity_mtls_proxy::model::pki::Validity;
use common::{curl, Env, Fleet, SERVER_KEY};

/// A fleet caller's certificate and key.
type Caller = (PathBuf, PathBuf);

/// One call through curl as `who`, with a JSON `body` if any and `args` for curl: (status,
/// the proxy's reason when it refused).
async fn call_as(
    base: &str,
    ca: &Path,
    who: &Caller,
    path: &str,
    body: Option<&str>,
    args: &[&str],
) -> (u16, String) {
    let (url, ca, (crt, key)) = (format!("{base}{path}"), ca.to_path_buf(), who.clone());
    let mut extra: Vec<String> = vec!["-H".into(), format!("x-server-key: {SERVER_KEY}")];
    if let Some(b) = body {
        extra.extend(["-H", "content-type: application/json", "--data-raw", b].map(String::from));
    }
    extra.extend(args.iter().map(|a| a.to_string()));
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
        let (status, got) = call_as(&base, &ca, who, path, *body, &[]).await;
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

/// A caller that may mint only for `bot-*` and make admin calls: the token endpoint reached
/// another way, or a body the server would decode otherwise, is refused and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_call_amity_would_read_otherwise_is_refused() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let fleet = Fleet::new();
    let days = Validity::days_from_now(30);
    let payments = fleet.caller(&fleet.ca, "payments", Some("spiffe://fleet/payments"), days);
    let yaml = format!(
        "{}callers:\n  - identity: spiffe://fleet/payments\n    grants:\n      - {{ app: default, routes: [auth_token, admin], user_ids: [\"bot-*\"] }}\n",
        fleet.inbound_yaml()
    );
    let proxy = env
        .proxy(&env.config(mock.addr, &["backend-a"], &yaml))
        .await;
    let base = format!("https://127.0.0.1:{}", proxy.addr.port());
    let ca = fleet.path("dev-ca.crt");
    let admin = format!("authorization: Bearer {}", common::ADMIN_TOKEN);
    let bearer = ["-H", admin.as_str()];
    let json = ["-H", "content-type: application/json"];
    let alice = r#"{"userId":"alice"}"#;
    let v4 = "/api/v4/authentication/token";
    let cases: Vec<(&str, Vec<&str>, u16, &str)> = vec![
        // In UTF-7, "+AHU-" is "u": the server reads a second userId key, and keeps it.
        (
            v4,
            vec![
                "-H",
                "content-type: application/json; charset=utf-7",
                "--data-raw",
                r#"{"userId":"bot-1","+AHU-serId":"alice"}"#,
            ],
            400,
            "user_id_ambiguous",
        ),
        (
            v4,
            [
                &json[..],
                &[
                    "-H",
                    "content-encoding: gzip",
                    "--data-raw",
                    r#"{"userId":"bot-1"}"#,
                ],
            ]
            .concat(),
            400,
            "user_id_ambiguous",
        ),
        // The token endpoint as a router that ignores case and a trailing '/' finds it,
        // with an admin token: never an admin call.
        (
            "/api/v4/authentication/token/",
            [&bearer[..], &json, &["--data-raw", alice]].concat(),
            403,
            "token_call_form",
        ),
        (
            "/API/v3/authentication/token?userId=alice",
            bearer.to_vec(),
            403,
            "token_call_form",
        ),
        (
            "/api/v3/authentication/token?userId=alice",
            [&bearer[..], &["-X", "POST"]].concat(),
            403,
            "token_call_form",
        ),
        // An admin call: the caller's server key is not passed on.
        ("/api/v3/users", bearer.to_vec(), 200, ""),
    ];
    for (path, args, want, reason) in &cases {
        let (status, got) = call_as(&base, &ca, &payments, path, None, args).await;
        assert_eq!((status, got.as_str()), (*want, *reason), "{path} {args:?}");
    }
    let seen = mock.observed.requests();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/api/v3/users"], "only the admin call went out");
    assert!(!seen[0].headers.contains_key("x-server-key"));
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
