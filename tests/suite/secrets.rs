//! A config path that points at a key or secret file (an easy slip: `check -c certs/x.key`, or
//! a symlink swapped to the wrong file) must never put that file's lines on stderr, in the log
//! or in the `POST /reload` answer: each error path is tried here.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{call, json, proxied, Env, Spawned};
use http::{Method, StatusCode};

/// A server key as a Secret file holds it: one opaque line.
const SECRET_LINE: &str = "sk-live-0123456789abcdefSECRETvalue";

/// Writes a PEM private key to `path`; returns its base64 lines (what must never be shown).
fn private_key(path: &Path) -> Vec<String> {
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = key.serialize_pem();
    std::fs::write(path, &pem).unwrap();
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .map(String::from)
        .collect()
}

/// Fails naming the line if `text` shows any of `secrets`.
fn assert_hidden(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} shows {s:?}:\n{text}");
    }
}

fn run_bin(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_names_a_key_file_by_kind_without_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("x.key");
    let lines = private_key(&key);
    let (code, out) = run_bin(&["check"], &key);
    assert_eq!(code, 1, "{out}");
    assert_hidden("check on a private key", &out, &lines);
    assert!(out.contains(&key.display().to_string()), "{out}");
    assert!(out.contains("PEM private key"), "{out}");

    let secret = dir.path().join("server-key");
    std::fs::write(&secret, format!("{SECRET_LINE}\n")).unwrap();
    let (code, out) = run_bin(&["check"], &secret);
    assert_eq!(code, 1, "{out}");
    assert_hidden("check on a server key file", &out, &[SECRET_LINE.into()]);
    assert!(out.contains("does not look like a configuration"), "{out}");

    // A real config with a mistake still gets the lines that help to fix it.
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "listen: [127.0.0.1:8080\nupstream: {region: sg}\n").unwrap();
    let (code, out) = run_bin(&["check"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("listen: [127.0.0.1:8080"), "{out}");
}

#[test]
fn run_names_a_key_file_by_kind_without_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("x.key");
    let lines = private_key(&key);
    let (code, out) = run_bin(&["run"], &key);
    assert_eq!(code, 1, "{out}");
    assert_hidden("run on a private key", &out, &lines);
    assert!(out.contains("PEM private key"), "{out}");

    let secret = dir.path().join("admin-token");
    std::fs::write(&secret, SECRET_LINE).unwrap();
    let (code, out) = run_bin(&["run"], &secret);
    assert_eq!(code, 1, "{out}");
    assert_hidden("run on an admin token file", &out, &[SECRET_LINE.into()]);
}

/// The built binary serving a good config, with its log in a file.
struct Served {
    env: Env,
    _mock: amity_mtls_proxy::tools::mock::MockHandle,
    proxy: Spawned,
    config: std::path::PathBuf,
}

impl Served {
    async fn start() -> Self {
        let env = Env::new();
        env.client_cert("backend-a");
        let mock = env.mock(Duration::ZERO).await;
        let v = env.config(mock.addr, &["backend-a"], "");
        let proxy = env.spawn(&v).await;
        proxy.wait_for_log(&["amity-mtls-proxy serving"]).await;
        Self {
            env,
            _mock: mock,
            proxy,
            config: v.path.clone(),
        }
    }

    /// Points the config path at `target` the way a swapped symlink does.
    fn swap_config_to(&self, target: &Path) {
        let tmp = self.config.with_extension("swap");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_by_signal_logs_no_key_lines() {
    let served = Served::start().await;
    let key = served.env.dir.path().join("x.key");
    let lines = private_key(&key);
    // The swap may also be seen by the file watcher; SIGHUP's own attempt is awaited.
    served.swap_config_to(&key);
    served.proxy.signal("-HUP");
    let log = served
        .proxy
        .wait_for_log(&["reload failed", "trigger=\"SIGHUP\""])
        .await;
    assert_hidden("the log of a reload by SIGHUP", &log, &lines);
    assert!(log.contains("PEM private key"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_by_file_watch_logs_no_secret_lines() {
    let served = Served::start().await;
    let key = served.env.dir.path().join("x.key");
    let lines = private_key(&key);
    served.swap_config_to(&key);
    let log = served
        .proxy
        .wait_for_log(&["reload failed", "trigger=\"file change\""])
        .await;
    assert_hidden("the log of a reload by file watch", &log, &lines);
    assert!(log.contains("PEM private key"), "{log}");

    let secret = served.env.dir.path().join("server-key");
    std::fs::write(&secret, SECRET_LINE).unwrap();
    served.swap_config_to(&secret);
    let log = served
        .proxy
        .wait_for_log(&["does not look like a configuration"])
        .await;
    assert_hidden(
        "the log of a reload by file watch",
        &log,
        &[SECRET_LINE.into()],
    );
}

async fn post_reload(admin: SocketAddr) -> String {
    let (status, _, body) = call(admin, Method::POST, "/reload", &[], "").await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    json(&body)["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn post_reload_answers_without_snippets() {
    let (env, _mock, proxy) = proxied("").await;
    let config = env.dir.path().join("config.yaml");
    let good = std::fs::read_to_string(&config).unwrap();

    let lines = private_key(&config);
    let message = post_reload(proxy.admin_addr).await;
    assert_hidden("POST /reload on a private key", &message, &lines);
    assert!(message.contains("PEM private key"), "{message}");

    std::fs::write(&config, SECRET_LINE).unwrap();
    let message = post_reload(proxy.admin_addr).await;
    assert_hidden("POST /reload on a secret", &message, &[SECRET_LINE.into()]);
    assert!(
        message.contains("does not look like a configuration"),
        "{message}"
    );

    // Even a real config's lines stay off HTTP: the answer names the line and column only.
    let broken = good.replace("client_certs:", "client_certs: [");
    std::fs::write(&config, &broken).unwrap();
    let message = post_reload(proxy.admin_addr).await;
    assert!(message.contains("line"), "{message}");
    assert!(!message.contains("upstream:"), "a snippet: {message}");
    assert!(!message.contains(" | "), "a snippet: {message}");
}
