//! Zero-downtime rotation: reloads under load, broken reloads, failover between
//! the two certificates, expired certificates, health and metrics.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amity_mtls_proxy::model::pki::{now_unix, Validity};
use common::{
    call, closed_port, foreign_ca, get_metrics, json, metric, settles_on, token_status, v3, Env,
    Load, Spawned, SERVER_KEY, WITH_KEY,
};
use http::{Method, StatusCode};

async fn token(addr: SocketAddr) -> Result<StatusCode, String> {
    token_status(addr, WITH_KEY).await
}

fn cert_yaml(name: &str, cert: &str, key: &str) -> String {
    format!("  - name: {name}\n    cert: {cert}\n    key: {key}\n")
}

fn config_yaml(listen: SocketAddr, admin: SocketAddr, mock: SocketAddr, certs: &str) -> String {
    let rest = format!("  ca: certs/dev-ca.crt\nclient_certs:\n{certs}");
    common::config_yaml(listen, admin, mock, &rest)
}

/// Publishes a certificate the way the kubelet updates a Secret volume:
/// a new timestamped folder, then an atomic swap of the `..data` symlink.
fn publish_secret(dir: &Path, version: &str, crt: &Path, key: &Path) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(crt, data.join("tls.crt")).unwrap();
    std::fs::copy(key, data.join("tls.key")).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_no_request() {
    let env = Env::new();
    let serial_a = env.client_cert("cert-a");
    let serial_b = env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let (listen, admin) = (closed_port(), closed_port());
    let cfg = env.dir.path().join("config.yaml");
    let with = |certs: &str| config_yaml(listen, admin, mock.addr, certs);
    common::write_atomically(
        &cfg,
        &with(&cert_yaml("cert-a", "certs/cert-a.crt", "certs/cert-a.key")),
    );
    let mut proxy = Spawned::serve(&cfg, listen, admin, |_| {}).await;
    let log_path = proxy.log_path().to_path_buf();
    settles_on(&mock, listen, &serial_a, WITH_KEY, Some(&log_path)).await;

    // Backends keep calling through every switch; any failure is counted.
    let load = Load::start(listen, WITH_KEY);

    // 1. SIGHUP after pointing the config at cert B.
    common::write_atomically(
        &cfg,
        &with(&cert_yaml("cert-b", "certs/cert-b.crt", "certs/cert-b.key")),
    );
    proxy.signal("-HUP");
    settles_on(&mock, listen, &serial_b, WITH_KEY, Some(&log_path)).await;

    // 2. Back to A by a file change alone: the config now names a Secret-style folder holding A.
    let secret = env.dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    publish_secret(
        &secret,
        "2026_11_01",
        &env.certs().join("cert-a.crt"),
        &env.certs().join("cert-a.key"),
    );
    common::write_atomically(
        &cfg,
        &with(&cert_yaml("current", "secret/tls.crt", "secret/tls.key")),
    );
    settles_on(&mock, listen, &serial_a, WITH_KEY, Some(&log_path)).await;

    // 3. The Secret is updated: the kubelet swaps `..data` to a folder holding B.
    publish_secret(
        &secret,
        "2026_11_02",
        &env.certs().join("cert-b.crt"),
        &env.certs().join("cert-b.key"),
    );
    settles_on(&mock, listen, &serial_b, WITH_KEY, Some(&log_path)).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = load.finish().await;
    proxy.signal("-TERM");
    let _ = proxy.exits_within(Duration::from_secs(10)).await;
    let log = proxy.log();
    assert_eq!(failed, 0, "requests failed during rotation; log:\n{log}");
    assert!(ok > 50, "the load loop barely ran: {}", ok);
    assert!(
        log.contains("trigger=\"SIGHUP\""),
        "no SIGHUP reload in:\n{log}"
    );
    assert!(
        log.contains("trigger=\"file change\""),
        "no file-change reload in:\n{log}"
    );
    assert!(!log.contains("reload failed"), "{log}");
    assert!(
        !log.contains(SERVER_KEY),
        "the server key reached a log line"
    );
}

#[tokio::test]
async fn a_broken_reload_changes_nothing_that_serves() {
    let env = Env::new();
    let serial_a = env.client_cert("cert-a");
    env.client_cert("cert-b");
    env.client_cert("cert-c");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["cert-a"], "");
    let good = std::fs::read_to_string(&v.path).unwrap();
    let proxy = env.proxy(&v).await;
    assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));

    let broken = [
        ("line", good.replace("client_certs:", "client_certs: [")),
        (
            "certs/missing.key: cannot read",
            good.replace("certs/cert-a.key", "certs/missing.key"),
        ),
        (
            "client_certs[0].key",
            good.replace("certs/cert-a.key", "certs/cert-b.key"),
        ),
        (
            "at most 2",
            format!(
                "{good}{}{}",
                cert_yaml("cert-b", "certs/cert-b.crt", "certs/cert-b.key"),
                cert_yaml("cert-c", "certs/cert-c.crt", "certs/cert-c.key")
            ),
        ),
    ];
    for (what, text) in &broken {
        std::fs::write(&v.path, text).unwrap();
        let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let v = json(&body);
        assert_eq!(v["status"], "error", "{what}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains(what),
            "the reply does not say {what:?}: {message}"
        );
        let seen = mock.observed.requests().len();
        assert_eq!(
            token(proxy.addr).await,
            Ok(StatusCode::OK),
            "{what}: serving broke"
        );
        assert_eq!(
            mock.observed.requests()[seen].client_serial,
            serial_a,
            "{what}: the certificate changed"
        );
    }
    let m = get_metrics(proxy.admin_addr).await;
    // The four asked for, and for each broken file at most one more: the file watcher's
    // own try, when it outlasts the watcher's quiet time before the next write.
    let failed = metric(&m, "amity_proxy_reloads_total", &[("result", "failed")]);
    assert!(
        failed.is_some_and(|f| (4.0..=8.0).contains(&f)),
        "{failed:?} failed reloads"
    );
    assert_eq!(
        metric(&m, "amity_proxy_reloads_total", &[("result", "ok")]),
        Some(1.0),
        "the start-up load"
    );
    let (status, _, body) = call(proxy.admin_addr, Method::GET, "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["cert"], "cert-a");

    // A good reload after the broken ones takes effect.
    std::fs::write(&v.path, good.replace("cert-a", "cert-b")).unwrap();
    let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric(&m, "amity_proxy_reloads_total", &[("result", "ok")]),
        Some(2.0)
    );
    assert!(
        metric(&m, "amity_proxy_last_reload_success_timestamp_seconds", &[]).unwrap()
            >= (now_unix() - 60) as f64
    );
}

#[tokio::test]
async fn a_rejected_certificate_fails_over_to_the_other() {
    let env = Env::new();
    let (_d, other) = foreign_ca();
    env.client_cert_from(&other, "cert-a", Validity::days_from_now(60));
    let serial_b = env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["cert-a", "cert-b"],
        "active: cert-a\nfailover_after: 2\n",
    );
    let proxy = env.proxy(&v).await;
    for _ in 0..6 {
        assert_eq!(
            token(proxy.addr).await,
            Ok(StatusCode::OK),
            "requests succeed through cert-b"
        );
    }
    assert!(mock
        .observed
        .requests()
        .iter()
        .all(|s| s.client_serial == serial_b));
    let rejected = mock.observed.rejected_handshakes.load(Ordering::Relaxed);
    assert_eq!(
        rejected, 2,
        "after 2 rejections the proxy switched and stopped presenting cert-a"
    );

    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(metric(&m, "amity_proxy_failovers_total", &[]), Some(2.0));
    assert_eq!(
        metric(&m, "amity_proxy_cert_active", &[("name", "cert-b")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "amity_proxy_cert_active", &[("name", "cert-a")]),
        Some(0.0)
    );
    assert!(
        metric(
            &m,
            "amity_proxy_upstream_handshake_failures_total",
            &[("reason", "client_cert_rejected")]
        )
        .unwrap()
            >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "amity_proxy_requests_total",
            &[("route", "auth_token"), ("status", "200")]
        ),
        Some(6.0)
    );

    let (_, _, body) = call(proxy.admin_addr, Method::GET, "/certs", &[], "")
        .await
        .unwrap();
    let certs = json(&body);
    let by_name = |n: &str| {
        certs
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("cert-b")["role"], "active");
    assert_eq!(by_name("cert-a")["role"], "standby");
    assert_eq!(by_name("cert-a")["last_handshake"]["accepted"], false);
    assert!(by_name("cert-a")["last_handshake"]["detail"]
        .as_str()
        .unwrap()
        .contains("rejected our client certificate"));
    assert_eq!(by_name("cert-b")["last_handshake"]["accepted"], true);
    assert_eq!(by_name("cert-b")["serial"], serial_b.as_str());
}

#[tokio::test]
async fn an_expired_certificate_is_never_presented() {
    let env = Env::new();
    let day = 86_400;
    env.client_cert_from(
        &env.ca,
        "old",
        Validity {
            not_before: now_unix() - 90 * day,
            not_after: now_unix() - day,
        },
    );
    let serial_new = env.client_cert("new");
    let mock = env.mock(Duration::ZERO).await;

    // Named active, but expired: the valid one is presented.
    let v = env.config(mock.addr, &["old", "new"], "active: old\n");
    let proxy = env.proxy(&v).await;
    for _ in 0..3 {
        assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));
    }
    assert!(mock
        .observed
        .requests()
        .iter()
        .all(|s| s.client_serial == serial_new));
    assert_eq!(mock.observed.rejected_handshakes.load(Ordering::Relaxed), 0);
    let (_, _, body) = call(proxy.admin_addr, Method::GET, "/certs", &[], "")
        .await
        .unwrap();
    assert!(json(&body)
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "old" && c["role"] == "expired"));
    proxy.shutdown().await;

    // Only the expired one: not ready, and requests fail here with the reason.
    let v = env.config(mock.addr, &["old"], "");
    let proxy = env.proxy(&v).await;
    let handshakes_before = mock.observed.handshakes.load(Ordering::Relaxed);
    let (status, _, body) = call(proxy.admin_addr, Method::GET, "/readyz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(json(&body)["reason"]
        .as_str()
        .unwrap()
        .contains("old expired on"));
    let (status, _, body) = v3(proxy.addr).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let b = json(&body);
    assert_eq!(b["data"]["reason"], "no_usable_cert");
    assert!(b["message"].as_str().unwrap().contains("old expired on"));
    assert_eq!(
        mock.observed.handshakes.load(Ordering::Relaxed),
        handshakes_before,
        "the expired certificate was presented"
    );
    assert_eq!(mock.observed.rejected_handshakes.load(Ordering::Relaxed), 0);
    let (status, _, _) = call(proxy.admin_addr, Method::GET, "/healthz", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "alive even when not ready");
}

#[tokio::test]
async fn metrics_describe_the_pool_and_the_certificates() {
    let env = Env::new();
    let serial = env.client_cert("cert-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["cert-a"], "");
    let not_after = v.apps[0].certs[0].info.not_after;
    let proxy = env.proxy(&v).await;
    for _ in 0..20 {
        assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));
    }
    let (status, _, _) = call(proxy.addr, Method::GET, "/api/v3/channels", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        metric(
            &m,
            "amity_proxy_requests_total",
            &[("route", "auth_token"), ("status", "200")]
        ),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &m,
            "amity_proxy_requests_total",
            &[("route", "denied"), ("status", "403")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "amity_proxy_upstream_requests_total", &[]),
        Some(20.0)
    );
    // Pool reuse: one connection per worker thread at most.
    let handshakes = metric(&m, "amity_proxy_upstream_handshakes_total", &[]).unwrap();
    let workers = amity_mtls_proxy::data::workers::resolve(0) as f64;
    assert!(
        (1.0..=workers).contains(&handshakes),
        "{handshakes} handshakes for 20 calls and {workers} workers"
    );
    assert_eq!(
        metric(
            &m,
            "amity_proxy_cert_expiry_timestamp_seconds",
            &[("name", "cert-a"), ("serial", &serial)]
        ),
        Some(not_after as f64)
    );
    let latency = m
        .samples
        .iter()
        .find(|s| s.metric == "amity_proxy_upstream_latency_seconds")
        .unwrap();
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(
                buckets.last().unwrap().count,
                20.0,
                "every upstream call is in the +Inf bucket"
            )
        }
        other => panic!("latency is not a histogram: {other:?}"),
    }
}

/// Building a generation (as a reload does before it knows the new configuration is good) must
/// not touch what `/metrics` says about the certificates being served: only publishing does.
#[tokio::test]
async fn an_unpublished_generation_leaves_the_certificate_metrics_alone() {
    let env = Env::new();
    let serial = env.client_cert("cert-a");
    let mock = env.mock(Duration::ZERO).await;
    let proxy = env.proxy(&env.config(mock.addr, &["cert-a"], "")).await;
    // Another configuration, in a directory of its own: the running proxy never loads it.
    let other = Env::new();
    let other_serial = other.client_cert("cert-b");
    let built = amity_mtls_proxy::data::proxy::Generation::build(
        &other.config(mock.addr, &["cert-b"], ""),
        proxy.state.metrics.clone(),
        None,
    )
    .unwrap();
    drop(built);
    let m = get_metrics(proxy.admin_addr).await;
    for name in [
        "amity_proxy_cert_expiry_timestamp_seconds",
        "amity_proxy_cert_active",
    ] {
        assert!(
            metric(&m, name, &[("name", "cert-a"), ("serial", &serial)]).is_some(),
            "{name} no longer names the serving certificate"
        );
        assert_eq!(
            metric(&m, name, &[("name", "cert-b"), ("serial", &other_serial)]),
            None,
            "{name} names a certificate that was never published"
        );
    }
    assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));
}

/// When the active certificate expires between reloads the other one is presented, and
/// `cert_active` says so, as `/certs` does.
#[tokio::test]
async fn cert_active_follows_the_certificate_presented_once_the_active_one_expires() {
    let env = Env::new();
    let now = now_unix();
    let short = Validity {
        not_before: now - 60,
        not_after: now + 8,
    };
    env.client_cert_from(&env.ca, "cert-a", short);
    let serial_b = env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["cert-a", "cert-b"], "active: cert-a\n");
    let proxy = env.proxy(&v).await;
    let active = |m: &prometheus_parse::Scrape, name: &str| {
        metric(m, "amity_proxy_cert_active", &[("name", name)])
    };
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        (active(&m, "cert-a"), active(&m, "cert-b")),
        (Some(1.0), Some(0.0))
    );
    while now_unix() <= short.not_after {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));
    let sent = mock
        .observed
        .requests()
        .last()
        .unwrap()
        .client_serial
        .clone();
    assert_eq!(sent, serial_b, "the call went with cert-b");
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(
        (active(&m, "cert-a"), active(&m, "cert-b")),
        (Some(0.0), Some(1.0)),
        "cert-b serves once cert-a has expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_reports_each_certificate() {
    let env = Env::new();
    let (_d, other) = foreign_ca();
    env.client_cert("good");
    env.client_cert_from(&other, "foreign", Validity::days_from_now(30));
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["good", "foreign"], "");
    let (code, stdout, stderr) = common::cli::check_live(v.path.clone()).await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l.contains("good: accepted")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("foreign:") && l.contains("rejected our client certificate")),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("client_certs[1] (foreign)"), "{stderr}");

    let v = env.config(mock.addr, &["good"], "");
    let (code, _, stderr) = common::cli::check_live(v.path.clone()).await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_reload_keeps_the_listen_addresses() {
    let env = Env::new();
    env.client_cert("cert-a");
    let serial_b = env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["cert-a"], "");
    let proxy = env.proxy(&v).await;
    let elsewhere = closed_port();
    let text = std::fs::read_to_string(&v.path)
        .unwrap()
        .replacen("listen: 127.0.0.1:0", &format!("listen: {elsewhere}"), 1)
        .replace("cert-a", "cert-b");
    std::fs::write(&v.path, text).unwrap();
    let (status, _, body) = call(proxy.admin_addr, Method::POST, "/reload", &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(
        tokio::net::TcpStream::connect(elsewhere).await.is_err(),
        "a reload opened a new listener"
    );
    let seen = mock.observed.requests().len();
    assert_eq!(
        token(proxy.addr).await,
        Ok(StatusCode::OK),
        "the old address still serves"
    );
    assert_eq!(
        mock.observed.requests()[seen].client_serial,
        serial_b,
        "the rest of the reload applied"
    );
}

#[tokio::test]
async fn a_changed_server_key_file_is_picked_up() {
    let env = Env::new();
    env.client_cert("cert-a");
    let mock = env.mock(Duration::ZERO).await;
    let key_file = env.dir.path().join("server-key");
    std::fs::write(&key_file, "an-old-key").unwrap();
    let v = env.config(mock.addr, &["cert-a"], "server_key_file: server-key\n");
    let proxy = env.proxy(&v).await;
    assert_eq!(
        token(proxy.addr).await,
        Ok(StatusCode::FORBIDDEN),
        "Amity refuses the old key"
    );
    common::write_atomically(&key_file, SERVER_KEY);
    let deadline = Instant::now() + Duration::from_secs(10);
    while token(proxy.addr).await != Ok(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "the new server key was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POST /reload; its status and message.
async fn post_reload(admin: SocketAddr) -> (StatusCode, String) {
    let (status, _, body) = call(admin, Method::POST, "/reload", &[], "").await.unwrap();
    let message = json(&body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, message)
}

/// A reload first presents each new or changed certificate to the upstream: one it refuses
/// (here by a TLS alert) is never published and the old one keeps serving; an upstream that
/// cannot be reached does not block the reload but is said; the proof can be turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_proves_a_changed_certificate_before_it_serves() {
    let env = Env::new();
    let serial = env.client_cert("renewed");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["renewed"], "");
    let proxy = env.proxy(&v).await;
    assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));

    // A renewal from a CA the upstream does not trust, written into the same files.
    let (_d, other) = foreign_ca();
    let refused_serial = env.client_cert_from(&other, "renewed", Validity::days_from_now(60));
    let (status, message) = post_reload(proxy.admin_addr).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains("renewed refused") && message.contains("rejected our client certificate"),
        "{message}"
    );
    let seen = mock.observed.requests().len();
    assert_eq!(token(proxy.addr).await, Ok(StatusCode::OK));
    assert_eq!(
        mock.observed.requests()[seen].client_serial,
        serial,
        "the certificate the upstream accepts still serves"
    );
    let (_, _, page) = call(proxy.admin_addr, Method::GET, "/", &[], "")
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("rejected our client certificate"),
        "the status page shows the refused reload"
    );

    // An upstream that cannot be reached: published, and the answer says it was not proved.
    let unreachable = closed_port();
    env.config(unreachable, &["renewed"], "");
    let (status, message) = post_reload(proxy.admin_addr).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert!(
        message.contains("published without proof: renewed not proved")
            && message.contains(&unreachable.to_string()),
        "{message}"
    );

    // With the proof off, the refused certificate is published as asked.
    env.config(mock.addr, &["renewed"], "");
    let text = std::fs::read_to_string(&v.path).unwrap().replace(
        "  ca: certs/dev-ca.crt\n",
        "  ca: certs/dev-ca.crt\n  prove_certs_on_reload: false\n",
    );
    std::fs::write(&v.path, text).unwrap();
    let (status, message) = post_reload(proxy.admin_addr).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert!(!message.contains("proof"), "{message}");
    assert_eq!(
        token(proxy.addr).await,
        Ok(StatusCode::BAD_GATEWAY),
        "the upstream refuses serial {refused_serial}"
    );
}

/// Amity's validation error repeats the caller's userId; a userId that spells nginx's refusal
/// text must not make the gateway retry with, or switch to, the other certificate.
#[tokio::test]
async fn a_caller_whose_input_amity_repeats_never_switches_certificates() {
    let env = Env::new();
    let serial_a = env.client_cert("cert-a");
    env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["cert-a", "cert-b"],
        "active: cert-a\nfailover_after: 1\n",
    );
    let proxy = env.proxy(&v).await;
    for _ in 0..3 {
        let (status, _, body) = common::v4(proxy.addr, "echo The SSL certificate error").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "Amity's own answer");
        let body = json(&body);
        assert_eq!(body["code"], 400000);
        assert!(body.to_string().contains("The SSL certificate error"));
    }
    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 3, "each call sent once");
    assert!(seen.iter().all(|s| s.client_serial == serial_a));
    let m = get_metrics(proxy.admin_addr).await;
    assert_eq!(metric(&m, "amity_proxy_failovers_total", &[]), Some(0.0));
    assert_eq!(
        metric(&m, "amity_proxy_cert_active", &[("name", "cert-a")]),
        Some(1.0)
    );
}

/// Once a reload replaced a certificate, nothing the old generation still does (a scrape that
/// loaded it, a failover on a request in flight) brings the removed certificate's series back,
/// and the new one's are there throughout.
#[tokio::test]
async fn a_replaced_generation_never_writes_the_certificate_series_back() {
    let env = Env::new();
    let old_serial = env.client_cert("cert-a");
    let new_serial = env.client_cert("cert-b");
    let mock = env.mock(Duration::ZERO).await;
    let proxy = env.proxy(&env.config(mock.addr, &["cert-a"], "")).await;
    let old = proxy.state.current.load_full();
    env.config(mock.addr, &["cert-b"], "");
    let (status, message) = post_reload(proxy.admin_addr).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    // What a request or scrape still holding the old generation does.
    old.publish_active();
    let m = get_metrics(proxy.admin_addr).await;
    for name in [
        "amity_proxy_cert_expiry_timestamp_seconds",
        "amity_proxy_cert_active",
    ] {
        assert_eq!(
            metric(&m, name, &[("name", "cert-a"), ("serial", &old_serial)]),
            None,
            "{name} names the certificate a reload removed"
        );
        assert!(
            metric(&m, name, &[("name", "cert-b"), ("serial", &new_serial)]).is_some(),
            "{name} lost the certificate serving"
        );
    }
    assert_eq!(
        metric(&m, "amity_proxy_cert_active", &[("name", "cert-b")]),
        Some(1.0)
    );
}
