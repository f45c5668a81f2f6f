//! The built binary as users run it: `demo`, and `run` draining on SIGTERM.

use crate::common;

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

/// Stops the proxy that a socket holder restarts, and the restarts, when the test ends.
struct Restarted {
    pidfile: std::path::PathBuf,
}

impl Restarted {
    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
    }

    fn terminate(&self) -> String {
        let pid = self.pid().expect("a proxy runs");
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        pid
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = std::fs::write(self.pidfile.with_extension("stop"), "");
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
    }
}

/// systemd's socket activation: the listeners are held by another process (here
/// `systemd-socket-activate`, as systemd would with the .socket unit) while the proxy is
/// stopped and started again under load; no connection is refused and no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_activated_restart_under_load_refuses_no_connection() {
    let tool = std::path::Path::new("/usr/bin/systemd-socket-activate");
    if !tool.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI installs systemd");
        eprintln!("SKIPPED: systemd-socket-activate is not installed here");
        return;
    }
    let env = Env::new();
    env.client_cert("backend-a");
    let mock = env.mock(Duration::ZERO).await;
    let v = env.config(
        mock.addr,
        &["backend-a"],
        "timeouts:\n  shutdown_grace_ms: 5000\n",
    );
    let (listen, admin) = common::pin_ports(&v.path);
    let restarted = Restarted {
        pidfile: v.path.with_file_name("proxy.pid"),
    };
    // The proxy, run again each time it stops, with the two sockets the holder listens on.
    let script = r#"while [ ! -e "${2%.pid}.stop" ]; do LISTEN_PID= "$0" run -c "$1" & echo $! > "$2"; wait $!; done"#;
    let mut cmd = Command::new(tool);
    cmd.args(["-l", &listen.to_string(), "-l", &admin.to_string()])
        .args([
            "--fdname=listen:admin",
            "-E",
            "RUST_LOG=info",
            "sh",
            "-c",
            script,
        ])
        .arg(common::BIN)
        .arg(&v.path)
        .arg(&restarted.pidfile);
    let mut holder = common::Spawned::spawn(cmd, v.path.with_file_name("proxy.log"), listen, admin);
    holder.wait_listening(&[listen, admin]).await;
    // The first connection starts it.
    assert_eq!(common::v3(listen).await.0, StatusCode::OK);
    let load = common::Load::start(listen, common::WITH_KEY);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let old = restarted.terminate();
        common::eventually(Duration::from_secs(10), "the next proxy", || async {
            match restarted.pid() {
                Some(pid) if pid != old => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (ok, failed) = load.finish().await;
    let log = holder.log();
    assert_eq!(failed, 0, "{ok} ok, {failed} failed\n{log}");
    assert!(ok > 20, "{ok} calls in all");
    assert_eq!(
        log.matches("serving on the socket systemd handed over")
            .count(),
        6,
        "three proxies, each on the two sockets:\n{log}"
    );
}
