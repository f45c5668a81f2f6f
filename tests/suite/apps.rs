//! Several Amity apps behind one gateway: each with its own region host, certificates,
//! secrets and failover; selected by `/apps/<name>/` or by an app's own listener.

use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use amity_mtls_proxy::tools::mock::MockHandle;
use common::{call, get_metrics, json, metric, Env, Load};
use http::{Method, StatusCode};

const EU_KEY: &str = "eu-server-key";
const US_KEY: &str = "us-server-key";

/// Two apps on two loopback "region hosts", two certificates each; `us` has a listener of
/// its own. Returns the env, the stand-ins (eu, us) and the config text's writer.
struct TwoApps {
    env: Env,
    eu: MockHandle,
    us: MockHandle,
    serials: [Vec<String>; 2],
}

impl TwoApps {
    async fn new() -> Self {
        let env = Env::new();
        env.server_cert_for(&["127.0.0.2", "127.0.0.3"]);
        let serials = [
            vec![env.client_cert("eu-a"), env.client_cert("eu-b")],
            vec![env.client_cert("us-a"), env.client_cert("us-b")],
        ];
        std::fs::write(env.dir.path().join("eu.key"), EU_KEY).unwrap();
        std::fs::write(env.dir.path().join("us.key"), US_KEY).unwrap();
        let eu = env
            .mock_on("127.0.0.2:0".parse().unwrap(), |o| {
                o.server_key = EU_KEY.into()
            })
            .await;
        let us = env
            .mock_on("127.0.0.3:0".parse().unwrap(), |o| {
                o.server_key = US_KEY.into()
            })
            .await;
        Self {
            env,
            eu,
            us,
            serials,
        }
    }

    /// The config, with `eu`'s certificates as given (`active` when set).
    fn yaml(&self, eu_certs: &[&str], eu_active: Option<&str>, extra: &str) -> String {
        let certs = |names: &[&str]| {
            names
                .iter()
                .map(|c| {
                    format!("      - {{ name: {c}, cert: certs/{c}.crt, key: certs/{c}.key }}\n")
                })
                .collect::<String>()
        };
        let active = eu_active.map_or(String::new(), |a| format!("    active: {a}\n"));
        format!(
            "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\napps:\n  - name: eu\n    upstream: {{ url: \"https://{}\", ca: certs/dev-ca.crt }}\n    client_certs:\n{}{active}    server_key_file: eu.key\n  - name: us\n    listen: 127.0.0.1:0\n    upstream: {{ url: \"https://{}\", ca: certs/dev-ca.crt }}\n    client_certs:\n{}    server_key_file: us.key\n{extra}",
            self.eu.addr,
            certs(eu_certs),
            self.us.addr,
            certs(&["us-a", "us-b"]),
        )
    }
}

const EU_V3: &str = "/apps/eu/api/v3/authentication/token?userId=alice";
const US_V3: &str = "/apps/us/api/v3/authentication/token?userId=bob";

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = call(addr, Method::GET, path, &[], "").await.unwrap();
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// The serials each stand-in saw.
fn serials_seen(mock: &MockHandle) -> HashSet<String> {
    mock.observed
        .requests()
        .iter()
        .map(|s| s.client_serial.clone())
        .collect()
}

#[tokio::test]
async fn each_app_is_served_by_its_own_host_certificates_and_key() {
    let t = TwoApps::new().await;
    let v = t.env.config_text(&t.yaml(&["eu-a", "eu-b"], None, ""));
    let proxy = t.env.proxy(&v).await;
    let us_own = proxy.app_addrs.iter().find(|(n, _)| n == "us").unwrap().1;

    // The shared listener selects by prefix, which is removed before forwarding.
    let (status, token) = get(proxy.addr, EU_V3).await;
    assert_eq!(status, StatusCode::OK, "{token}");
    assert!(token.is_string());
    assert_eq!(get(proxy.addr, US_V3).await.0, StatusCode::OK);
    // The app's own listener needs no prefix.
    let own = "/api/v4/authentication/token";
    let (status, _, body) = call(
        us_own,
        Method::POST,
        own,
        &[("content-type", "application/json")],
        r#"{"userId":"carol"}"#,
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));

    let eu_paths: Vec<String> =
        t.eu.observed
            .requests()
            .iter()
            .map(|s| s.path.clone())
            .collect();
    assert_eq!(eu_paths, ["/api/v3/authentication/token?userId=alice"]);
    let us_paths: Vec<String> =
        t.us.observed
            .requests()
            .iter()
            .map(|s| s.path.clone())
            .collect();
    assert_eq!(us_paths, ["/api/v3/authentication/token?userId=bob", own]);
    // Each host saw only its app's certificates and server key.
    assert!(serials_seen(&t.eu).is_subset(&t.serials[0].iter().cloned().collect()));
    assert!(serials_seen(&t.us).is_subset(&t.serials[1].iter().cloned().collect()));
    for r in t.us.observed.requests() {
        assert_eq!(r.headers["x-server-key"], US_KEY);
    }
    assert_eq!(t.eu.observed.requests()[0].headers["x-server-key"], EU_KEY);

    // Metrics carry the app.
    let m = get_metrics(proxy.admin_addr).await;
    let ok = |app| {
        metric(
            &m,
            "amity_proxy_requests_total",
            &[("app", app), ("route", "auth_token"), ("status", "200")],
        )
    };
    assert_eq!((ok("eu"), ok("us")), (Some(1.0), Some(2.0)));
    let active = |app, name| {
        metric(
            &m,
            "amity_proxy_cert_active",
            &[("app", app), ("name", name)],
        )
    };
    assert_eq!(active("us", "us-b"), Some(1.0), "the one that expires last");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_naming_no_app_or_an_unknown_one_is_refused_locally() {
    let t = TwoApps::new().await;
    let v = t.env.config_text(&t.yaml(&["eu-a"], None, ""));
    let proxy = t.env.proxy(&v).await;
    let (status, body) = get(proxy.addr, common::V3).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().contains("/apps/<name>/"),
        "{body}"
    );
    let (status, body) = get(
        proxy.addr,
        "/apps/apac/api/v3/authentication/token?userId=a",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("\"apac\""),
        "{body}"
    );
    assert!(t.eu.observed.requests().is_empty() && t.us.observed.requests().is_empty());
    let m = get_metrics(proxy.admin_addr).await;
    let denied = metric(
        &m,
        "amity_proxy_requests_total",
        &[("app", ""), ("route", "denied"), ("status", "404")],
    );
    assert_eq!(denied, Some(2.0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn apps_sharing_a_host_never_present_each_others_certificates() {
    let env = Env::new();
    let a = [env.client_cert("one-a"), env.client_cert("one-b")];
    let b = [env.client_cert("two-a"), env.client_cert("two-b")];
    let mock = env.mock(Duration::ZERO).await;
    let app = |name: &str| {
        format!(
            "  - name: {name}\n    upstream: {{ url: \"https://{}\", ca: certs/dev-ca.crt }}\n    client_certs:\n      - {{ name: {name}-a, cert: certs/{name}-a.crt, key: certs/{name}-a.key }}\n      - {{ name: {name}-b, cert: certs/{name}-b.crt, key: certs/{name}-b.key }}\n",
            mock.addr
        )
    };
    let v = env.config_text(&format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\napps:\n{}{}",
        app("one"),
        app("two")
    ));
    let proxy = env.proxy(&v).await;
    for i in 0..20 {
        let name = if i % 2 == 0 { "one" } else { "two" };
        let path = format!("/apps/{name}/api/v3/authentication/token?userId={name}-{i}");
        let (status, _, _) = call(proxy.addr, Method::GET, &path, common::WITH_KEY, "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 20);
    for r in &seen {
        let own = if r.path.contains("userId=one-") {
            &a
        } else {
            &b
        };
        assert!(
            own.contains(&r.client_serial),
            "{} came with serial {}, not one of its app's",
            r.path,
            r.client_serial
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_one_apps_certificate_under_load_fails_nothing_in_either() {
    let t = TwoApps::new().await;
    let path = t.env.dir.path().join("config.yaml");
    let v = t.env.config_text(&t.yaml(&["eu-a"], None, ""));
    let proxy = t.env.proxy(&v).await;
    let us_own = proxy.app_addrs[0].1;
    let eu_load = Load::start_at(proxy.addr, EU_V3, &[]);
    let us_load = Load::start_at(us_own, "/api/v3/authentication/token?userId=bob", &[]);
    let reload = || async {
        let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Register the new certificate beside the old one and present it...
    common::write_atomically(&path, &t.yaml(&["eu-a", "eu-b"], Some("eu-b"), ""));
    reload().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = t.eu.observed.requests().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...then retire the old one.
    common::write_atomically(&path, &t.yaml(&["eu-b"], None, ""));
    reload().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (eu_ok, eu_failed) = eu_load.finish().await;
    let (us_ok, us_failed) = us_load.finish().await;
    assert_eq!(
        (eu_failed, us_failed),
        (0, 0),
        "eu ok {eu_ok}, us ok {us_ok}"
    );
    assert!(eu_ok > 50 && us_ok > 50, "eu ok {eu_ok}, us ok {us_ok}");
    let eu = t.eu.observed.requests();
    assert!(
        eu[before..]
            .iter()
            .all(|r| r.client_serial == t.serials[0][1]),
        "after the switch, eu presents eu-b only"
    );
    assert!(serials_seen(&t.us).is_subset(&t.serials[1].iter().cloned().collect()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_problem_in_one_app_rejects_the_whole_reload_and_every_app_keeps_serving() {
    let t = TwoApps::new().await;
    let path = t.env.dir.path().join("config.yaml");
    let v = t.env.config_text(&t.yaml(&["eu-a"], None, ""));
    let proxy = t.env.proxy(&v).await;
    let broken = t.yaml(&["eu-a", "eu-missing"], None, "");
    common::write_atomically(&path, &broken);
    let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = json(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("apps[eu].client_certs[1].cert"),
        "names the app and the field: {message}"
    );
    assert_eq!(get(proxy.addr, EU_V3).await.0, StatusCode::OK);
    assert_eq!(get(proxy.addr, US_V3).await.0, StatusCode::OK);
    proxy.shutdown().await;
}

#[tokio::test]
async fn readiness_names_the_app_without_a_usable_certificate() {
    let t = TwoApps::new().await;
    let now = amity_mtls_proxy::model::pki::now_unix();
    let past = amity_mtls_proxy::model::pki::Validity {
        not_before: now - 10 * 86_400,
        not_after: now - 86_400,
    };
    t.env.client_cert_from(&t.env.ca, "eu-old", past);
    let v = t.env.config_text(&t.yaml(&["eu-old"], None, ""));
    let proxy = t.env.proxy(&v).await;
    let (status, body) = get(proxy.admin_addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("eu: no usable client certificate: eu-old expired"),
        "{body}"
    );
    let apps = body["apps"].as_array().unwrap();
    assert_eq!(apps[0]["ready"], false);
    assert_eq!(apps[1]["app"], "us");
    assert_eq!(apps[1]["ready"], true);
    // The other app serves meanwhile.
    assert_eq!(get(proxy.addr, US_V3).await.0, StatusCode::OK);
    let (_, certs) = get(proxy.admin_addr, "/certs").await;
    let rows: Vec<(String, String)> = certs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["app"].as_str().unwrap().into(),
                r["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("eu", "eu-old"), ("us", "us-a"), ("us", "us-b")].map(|(a, n)| (a.into(), n.into()))
    );
    proxy.shutdown().await;
}
