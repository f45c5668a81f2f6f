//! The fleet side: mTLS termination checked with curl and openssl as real peers,
//! the `callers` policy, and secret injection with the secrets kept out of logs.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use amity_mtls_proxy::model::pki::{now_unix, Validity};
use common::{call, curl, foreign_ca, json, Env, Fleet, Spawned, ADMIN_TOKEN, SERVER_KEY, V3};
use http::{Method, StatusCode};
use rcgen::SanType;

/// The proxy binary serving `v`, with a JSON debug log.
async fn spawn_json_debug(v: &amity_mtls_proxy::model::config::Validated) -> Spawned {
    Spawned::run_with(v, |c| {
        c.args(["--log-format", "json"]).env("RUST_LOG", "debug");
    })
    .await
}

/// The access-log lines of a JSON log.
fn access_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mtls_admits_only_fleet_certificates() {
    let env = Env::new();
    env.client_cert("backend-a");
    let fleet = Fleet::new();
    let (good_crt, good_key) = fleet.caller(&fleet.ca, "svc-a", None, Validity::days_from_now(30));
    let (_d, other) = foreign_ca();
    let (foreign_crt, foreign_key) =
        fleet.caller(&other, "intruder", None, Validity::days_from_now(30));
    let day = 86_400;
    let (old_crt, old_key) = fleet.caller(
        &fleet.ca,
        "svc-old",
        None,
        Validity {
            not_before: now_unix() - 30 * day,
            not_after: now_unix() - day,
        },
    );
    let mock = env.mock(Duration::ZERO).await;
    let proxy = env
        .proxy(&env.config(mock.addr, &["backend-a"], &fleet.inbound_yaml()))
        .await;
    let url = format!("https://127.0.0.1:{}{V3}", proxy.addr.port());
    let ca = fleet.path("dev-ca.crt");
    let key_header = format!("x-server-key: {SERVER_KEY}");

    let run = |cert: Option<(PathBuf, PathBuf)>, extra: Vec<String>| {
        let (url, ca, key_header) = (url.clone(), ca.clone(), key_header.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["-H".to_string(), key_header];
            args.extend(extra);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            curl(
                &url,
                &ca,
                cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
                &refs,
            )
        })
    };
    let (ok, status, body) = run(
        Some((good_crt.clone(), good_key.clone())),
        vec!["--http1.1".into()],
    )
    .await
    .unwrap();
    assert!(
        ok && status == 200,
        "curl with a fleet certificate: {status} {body}"
    );
    assert!(serde_json::from_str::<String>(&body).is_ok(), "{body}");
    let (ok, status, _) = run(
        Some((good_crt.clone(), good_key.clone())),
        vec!["--http2".into()],
    )
    .await
    .unwrap();
    assert!(ok && status == 200, "HTTP/2 over TLS (ALPN h2)");
    let served = mock.observed.requests().len();
    assert_eq!(served, 2);

    for (what, cert) in [
        ("no certificate", None),
        (
            "a certificate from another CA",
            Some((foreign_crt, foreign_key)),
        ),
        ("an expired fleet certificate", Some((old_crt, old_key))),
    ] {
        let (ok, status, body) = run(cert, vec![]).await.unwrap();
        assert!(
            !ok && status == 0,
            "{what}: expected a failed handshake, got {status} {body}"
        );
    }
    assert_eq!(
        mock.observed.requests().len(),
        served,
        "a refused caller reached Amity"
    );

    // openssl s_client as an independent TLS client.
    let (port, ca, crt, key) = (
        proxy.addr.port(),
        ca.clone(),
        good_crt.clone(),
        good_key.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}"), "-alpn", "http/1.1"])
            .arg("-CAfile")
            .arg(&ca)
            .arg("-cert")
            .arg(&crt)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl runs");
        use std::io::Write;
        let req = format!("GET {V3} HTTP/1.1\r\nHost: gateway\r\nx-server-key: {SERVER_KEY}\r\nConnection: close\r\n\r\n");
        child.stdin.take().unwrap().write_all(req.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "openssl s_client: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Garbage instead of a ClientHello: the connection is closed, serving goes on.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = s.write_all(&garbage).await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a TLS alert
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "garbage did not close the connection");
    let (_, status, _) = run(Some((good_crt, good_key)), vec![]).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_caller_that_gives_up_frees_its_in_flight_slot() {
    let env = Env::new();
    env.client_cert("backend-a");
    let fleet = Fleet::new();
    let (crt, key) = fleet.caller(&fleet.ca, "svc-a", None, Validity::days_from_now(30));
    let mock = env.mock(Duration::from_secs(20)).await;
    let yaml = format!("{}limits:\n  max_in_flight: 1\n", fleet.inbound_yaml());
    let proxy = env
        .proxy(&env.config(mock.addr, &["backend-a"], &yaml))
        .await;
    let url = format!("https://127.0.0.1:{}{V3}", proxy.addr.port());
    let ca = fleet.path("dev-ca.crt");
    let key_header = format!("x-server-key: {SERVER_KEY}");
    let args = ["--http1.1", "-H", &key_header];
    // A caller with a 6 s timeout of its own, against an upstream that takes 20 s.
    let mut impatient = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--max-time", "6", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .args(args)
        .arg(&url)
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs (apt-get install curl)");
    common::upstream_saw(&mock, 1).await;
    let (_, status, body) = curl(&url, &ca, Some((&crt, &key)), &args);
    assert_eq!(status, 503, "the slot is taken: {body}");
    let gave_up = impatient.wait().unwrap();
    assert_eq!(gave_up.code(), Some(28), "curl timed out");
    mock.set_delay(Duration::ZERO);
    let (url, ca, crt, key, args) = (&url, &ca, &crt, &key, &args);
    common::eventually(
        Duration::from_secs(8),
        "the slot freed after the caller left",
        || async move {
            match curl(url, ca, Some((crt, key)), args) {
                (_, 200, _) => Ok(()),
                (_, status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    proxy.shutdown().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_may_use_only_their_route_classes() {
    let env = Env::new();
    env.client_cert("backend-a");
    let fleet = Fleet::new();
    let (pay_crt, pay_key) = fleet.caller(
        &fleet.ca,
        "payments",
        Some("spiffe://fleet/payments"),
        Validity::days_from_now(30),
    );
    let (ops_crt, ops_key) = fleet.caller(
        &fleet.ca,
        "ops.fleet.local",
        None,
        Validity::days_from_now(30),
    );
    let (other_crt, other_key) =
        fleet.caller(&fleet.ca, "other", None, Validity::days_from_now(30));
    let mock = env.mock(Duration::ZERO).await;
    let callers = "callers:\n  - identity: spiffe://fleet/payments\n    routes: [auth_token]\n  - identity: ops.fleet.local\n    routes: [auth_token, admin]\n";
    let proxy = env
        .proxy(&env.config(
            mock.addr,
            &["backend-a"],
            &format!("{}{callers}", fleet.inbound_yaml()),
        ))
        .await;
    let base = format!("https://127.0.0.1:{}", proxy.addr.port());
    let ca = fleet.path("dev-ca.crt");
    let bearer = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let key_header = format!("x-server-key: {SERVER_KEY}");
    let cases = [
        (&pay_crt, &pay_key, V3, &key_header, 200, ""),
        (
            &pay_crt,
            &pay_key,
            "/api/v3/users",
            &bearer,
            403,
            "caller_route_denied",
        ),
        (&ops_crt, &ops_key, "/api/v3/users", &bearer, 200, ""),
        (
            &other_crt,
            &other_key,
            V3,
            &key_header,
            403,
            "caller_unknown",
        ),
    ];
    for (crt, key, path, header, want, reason) in cases {
        let (url, ca, crt, key, header) = (
            format!("{base}{path}"),
            ca.clone(),
            crt.clone(),
            key.clone(),
            header.clone(),
        );
        let (_, status, body) = tokio::task::spawn_blocking(move || {
            curl(&url, &ca, Some((&crt, &key)), &["-H", &header])
        })
        .await
        .unwrap();
        assert_eq!(status, want, "{path}: {body}");
        if !reason.is_empty() {
            assert_eq!(json(body.as_bytes())["data"]["reason"], reason);
        }
    }
    assert_eq!(
        mock.observed.requests().len(),
        2,
        "refused callers never reached Amity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_injected_and_never_logged() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let secrets = env.dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("server-key"), format!("{SERVER_KEY}\n")).unwrap();
    std::fs::write(secrets.join("admin-token"), ADMIN_TOKEN).unwrap();
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "server_key_file: secrets/server-key\nadmin_token_file: secrets/admin-token\n",
    );
    let proxy = spawn_json_debug(&v).await;
    let (listen, log_path) = (proxy.listen, proxy.log_path().to_path_buf());

    let (status, _, body) = call(listen, Method::GET, V3, &[], "").await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "no key from the caller: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = call(
        listen,
        Method::GET,
        V3,
        &[("x-server-key", "a-wrong-key")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "a wrong key from the caller is replaced"
    );
    let (status, _, _) = call(listen, Method::GET, "/api/v3/users", &[], "")
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "admin call without a token from the caller"
    );
    let seen = mock.observed.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen[..2] {
        assert_eq!(
            s.headers.get_all("x-server-key").iter().collect::<Vec<_>>(),
            [SERVER_KEY],
            "exactly the configured key"
        );
    }
    assert_eq!(
        seen[2].headers["authorization"],
        format!("Bearer {ADMIN_TOKEN}").as_str()
    );

    drop(proxy);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 5, "the log was captured: {log}");
    for (i, line) in log.lines().enumerate() {
        assert!(
            !line.contains(SERVER_KEY),
            "line {i} leaks the server key: {line}"
        );
        assert!(
            !line.contains(ADMIN_TOKEN),
            "line {i} leaks the admin token: {line}"
        );
    }
    // One access line per request, with what an operator looks for in it.
    let access = access_lines(&log);
    assert_eq!(access.len(), 3, "three access lines: {log}");
    let first = &access[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/api/v3/authentication/token");
    assert_eq!(first["route"], "auth_token");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cert"], "backend-a");
    assert!(
        first["request_id"]
            .as_str()
            .is_some_and(|id| id.len() >= 16),
        "a request id: {first}"
    );
    assert_eq!(access[2]["path"], "/api/v3/users");
    assert_eq!(access[2]["route"], "admin");

    // caller_secrets: reject refuses a caller that sends its own key.
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "server_key_file: secrets/server-key\ncaller_secrets: reject\n",
    );
    let proxy = env.proxy(&v).await;
    let (status, _, body) = call(proxy.addr, Method::GET, V3, &[("x-server-key", "mine")], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["data"]["reason"], "caller_sent_secret");
    assert_eq!(mock.observed.requests().len(), 3);
}

#[test]
fn plaintext_on_a_non_loopback_address_needs_an_explicit_yes() {
    // Only validated here, never bound.
    let env = Env::new();
    env.client_cert("backend-a");
    let path = env.dir.path().join("config.yaml");
    let base = "listen: 0.0.0.0:8080\nupstream:\n  region: sg\nclient_certs:\n  - name: backend-a\n    cert: certs/backend-a.crt\n    key: certs/backend-a.key\n";
    std::fs::write(&path, base).unwrap();
    let err = amity_mtls_proxy::model::config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("listen: 0.0.0.0:8080 is not a loopback address"),
        "{err}"
    );
    assert!(err.contains("allow_plaintext_non_loopback"), "{err}");
    std::fs::write(&path, format!("{base}allow_plaintext_non_loopback: true\n")).unwrap();
    assert!(amity_mtls_proxy::model::config::load(&path).is_ok());
    std::fs::write(
        &path,
        format!("{base}callers:\n  - identity: a\n    routes: [admin]\n"),
    )
    .unwrap();
    let err = amity_mtls_proxy::model::config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("callers: needs inbound_tls.client_ca"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_cn_is_no_identity_for_a_certificate_with_sans() {
    let env = Env::new();
    env.client_cert("backend-a");
    let fleet = Fleet::new();
    let days = Validity::days_from_now(30);
    let uri = |u: &str| SanType::URI(u.try_into().unwrap());
    let dns = |d: &str| SanType::DnsName(d.try_into().unwrap());
    // Signed by the fleet CA, but its SAN names someone not listed: the CN claims a listed one.
    let evil = fleet.caller_with(
        &fleet.ca,
        "evil",
        "ops-tools.fleet.example",
        vec![uri("spiffe://fleet.example/evil")],
        days,
    );
    // An older certificate without SANs: its CN is its identity.
    let cn_only = fleet.caller_with(
        &fleet.ca,
        "cn-only",
        "ops-tools.fleet.example",
        vec![],
        days,
    );
    // Listed by its second SAN: that is the identity the log must name.
    let payments = fleet.caller_with(
        &fleet.ca,
        "payments",
        "payments",
        vec![
            uri("spiffe://fleet.example/payments"),
            dns("payments.fleet.example"),
        ],
        days,
    );
    let mock = env.mock(Duration::ZERO).await;
    let callers = "callers:\n  - identity: ops-tools.fleet.example\n    routes: [auth_token]\n  - identity: payments.fleet.example\n    routes: [auth_token]\n";
    let v = env.config(
        mock.addr,
        &["backend-a"],
        &format!("{}{callers}", fleet.inbound_yaml()),
    );
    let proxy = spawn_json_debug(&v).await;
    let (listen, log_path) = (proxy.listen, proxy.log_path().to_path_buf());

    let url = format!("https://{listen}{V3}");
    let ca = fleet.path("dev-ca.crt");
    let key_header = format!("x-server-key: {SERVER_KEY}");
    let ask = |(crt, key): &(PathBuf, PathBuf)| {
        let (url, ca, crt, key, h) = (
            url.clone(),
            ca.clone(),
            crt.clone(),
            key.clone(),
            key_header.clone(),
        );
        tokio::task::spawn_blocking(move || curl(&url, &ca, Some((&crt, &key)), &["-H", &h]))
    };
    let (_, status, body) = ask(&evil).await.unwrap();
    assert_eq!(status, 403, "a CN beside an unlisted SAN: {body}");
    let refusal = json(body.as_bytes());
    assert_eq!(refusal["data"]["reason"], "caller_unknown");
    let message = refusal["message"].as_str().unwrap();
    assert!(message.contains("spiffe://fleet.example/evil"), "{message}");
    assert!(
        mock.observed.requests().is_empty(),
        "the refused caller reached Amity"
    );
    let (_, status, body) = ask(&cn_only).await.unwrap();
    assert_eq!(status, 200, "a listed CN without SANs: {body}");
    let (_, status, body) = ask(&payments).await.unwrap();
    assert_eq!(status, 200, "a listed SAN DNS name: {body}");
    assert_eq!(mock.observed.requests().len(), 2);
    drop(proxy);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let access = access_lines(&log);
    let callers: Vec<(&str, u64)> = access
        .iter()
        .map(|a| (a["caller"].as_str().unwrap(), a["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        callers,
        [
            ("spiffe://fleet.example/evil", 403),
            ("ops-tools.fleet.example", 200),
            ("payments.fleet.example", 200),
        ],
        "each access line names the identity that was matched: {log}"
    );
}
