//! `check --live` against the stand-in: one real mTLS handshake per certificate, naming the
//! host that answered.

use crate::common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_names_the_host_it_reached_for_each_certificate() {
    let env = common::Env::new();
    let serial = env.client_cert("backend-a");
    let mock = env.mock(std::time::Duration::ZERO).await;
    let v = env.config(mock.addr, &["backend-a"], "");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::BIN)
            .args(["check", "--live", "-c"])
            .arg(&v.path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "backend-a: accepted by 127.0.0.1:{} (serial {serial}",
        mock.addr.port()
    );
    assert!(stdout.contains(&expected), "{expected:?} not in:\n{stdout}");
    assert_eq!(common::handshakes_seen(&mock), 1);
}
