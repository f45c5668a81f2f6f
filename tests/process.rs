//! The built binary as users run it: `demo`, and `run` draining on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{call, closed_port, Env, SERVER_KEY};
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::from_secs(3)).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let mut proxy = env.spawn(&v).await;
    let listen = proxy.listen;

    let in_flight = tokio::spawn(async move {
        call(
            listen,
            Method::GET,
            "/api/v3/authentication/token?userId=a",
            &[("x-server-key", SERVER_KEY)],
            "",
        )
        .await
    });
    // Once the stand-in has the request (it answers 3 s later), it is in flight.
    common::upstream_saw(&mock, 1).await;
    proxy.signal("-TERM");

    let (status, _, _) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(
        status,
        StatusCode::OK,
        "the request in flight at SIGTERM finished"
    );
    // Fails with "still running" if it did not exit after draining.
    let exit = proxy.exits_within(Duration::from_secs(10)).await;
    assert!(exit.success(), "exit status {exit}");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "still accepting after shutdown"
    );
    let stderr = proxy.log();
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("all connections drained"), "{stderr}");
    assert!(
        !stderr.contains(SERVER_KEY),
        "the server key reached a log line"
    );
}

#[test]
fn demo_runs_the_secure_mode_flow_from_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, upstream, admin) = (closed_port(), closed_port(), closed_port());
    let config = dir.path().join("config.yaml");
    let yaml = common::DEFAULT_CONFIG
        .replace("127.0.0.1:8080", &listen.to_string())
        .replace("127.0.0.1:9443", &upstream.to_string())
        .replace("127.0.0.1:9901", &admin.to_string());
    std::fs::write(&config, yaml).unwrap();
    let run = || {
        let out = Command::new(common::BIN)
            .args(["demo", "--once", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let (stdout, stderr) = run();
    for expected in [
        "created ",
        "GET /api/v3/authentication/token?userId=demo-user -> 200 OK",
        "the stand-in saw client certificate: CN=local-dev-backend",
        "POST /api/v4/authentication/token -> 200 OK",
        "session for \"demo-user\"",
        "GET /api/v3/users with Bearer admin token -> 200 OK",
        "GET /api/v3/channels without a token -> 403 Forbidden",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Three proxied calls; each worker thread that took one opened at most one upstream connection.
    let workers = amity_mtls_proxy::data::workers::resolve(0);
    let pooled = (1..=workers.min(3))
        .any(|n| stdout.contains(&format!("3 requests over {n} TLS handshake(s)")));
    assert!(pooled, "no pool reuse in:\n{stdout}");
    assert!(!stderr.contains("panicked"));
    assert!(dir.path().join("certs/local-dev.crt").exists());
    // A second run reuses the CA and the certificate.
    let (stdout, _) = run();
    assert!(stdout.contains("reusing"), "{stdout}");
    let check = Command::new(common::BIN)
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The kit's promise: a spawned proxy whose test fails (a panic while it runs) is stopped,
/// not left listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_proxy_does_not_outlive_a_failed_assertion() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
    let failed = tokio::spawn(async move {
        let proxy = common::Spawned::run(&v).await;
        pid_tx.send((proxy.pid(), proxy.listen)).unwrap();
        panic!("a failed assertion while the proxy runs");
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let (pid, listen) = pid_rx.await.unwrap();
    // Reaped, not a zombie: /proc no longer has it.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is still there"
    );
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "still listening on {listen}"
    );
}
