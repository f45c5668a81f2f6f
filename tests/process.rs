//! The built binary as users run it: `demo`, and `run` draining on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amity_mtls_proxy::tools::demo::call;
use common::{closed_port, Env, SERVER_KEY};
use http::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_amity-mtls-proxy");

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::from_millis(1500)).await;
    let listen = closed_port();
    let v = env.config(mock.addr, &["backend-a"], "");
    let cfg = std::fs::read_to_string(&v.path).unwrap().replacen(
        "listen: 127.0.0.1:0",
        &format!("listen: {listen}"),
        1,
    );
    std::fs::write(&v.path, cfg).unwrap();

    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&v.path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(listen).await;

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
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, _, _) = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(
        status,
        StatusCode::OK,
        "the request in flight at SIGTERM finished"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "still accepting after shutdown"
    );
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
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
    let yaml = amity_mtls_proxy::tools::demo::DEFAULT_CONFIG
        .replace("127.0.0.1:8080", &listen.to_string())
        .replace("127.0.0.1:9443", &upstream.to_string())
        .replace("127.0.0.1:9901", &admin.to_string());
    std::fs::write(&config, yaml).unwrap();
    let run = || {
        let out = Command::new(BIN)
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
    let check = Command::new(BIN)
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
