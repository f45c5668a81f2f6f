//! The deployment files, run for real: the built binary started the way the
//! Kubernetes Deployment and the systemd unit start it (their arguments, their
//! environment, their file layout, read from deploy/ itself), then rotated the
//! way each of them rotates, under load.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{call, closed_port, settles_on, token_status, Env, Load, Spawned, SERVER_KEY};
use http::{Method, StatusCode};
use serde_json::Value;

const DEPLOYMENT: &str = include_str!("../../deploy/kubernetes/deployment.yaml");
const UNIT: &str = include_str!("../../deploy/systemd/amity-mtls-proxy.service");
/// Where both deployments keep config.yaml and the certificates.
const ETC: &str = "/etc/amity-mtls-proxy";
/// Where systemd puts this unit's credentials.
const CREDENTIALS: &str = "/run/credentials/amity-mtls-proxy.service";

/// A token call as backends make it; the proxy injects the server key itself
/// (`server_key_file`), so a wrong key from the proxy would fail it.
/// The deployed proxy injects the server key: backends send none.
const NO_KEY: &[(&str, &str)] = &[];

async fn token(addr: SocketAddr) -> Result<StatusCode, String> {
    token_status(addr, NO_KEY).await
}

async fn get(addr: SocketAddr, path: &str) -> Result<StatusCode, String> {
    call(addr, Method::GET, path, &[], "").await.map(|r| r.0)
}

/// A path from a manifest (`/etc/...`, `/run/...`) inside the test's root.
fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Rewrites every `/etc/amity-mtls-proxy` and credentials path in `args` to lie under `root`.
fn rooted(root: &Path, args: &[String]) -> Vec<String> {
    args.iter()
        .map(|a| {
            if a.starts_with(ETC) || a.starts_with(CREDENTIALS) {
                under(root, a).display().to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}

/// Writes a ConfigMap or Secret volume's content the way the kubelet does: a
/// new timestamped folder, `..data` switched to it by an atomic rename, a
/// `name -> ..data/name` link per key, links of removed keys deleted, and the
/// previous folder removed.
fn publish(dir: &Path, files: &[(&str, Vec<u8>)]) {
    static VERSION: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).unwrap();
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let version = format!(
        "..2026_11_22_12_00_00.{}",
        VERSION.fetch_add(1, Ordering::Relaxed)
    );
    std::fs::create_dir(dir.join(&version)).unwrap();
    for (name, bytes) in files {
        let path = dir.join(&version).join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().unwrap().is_symlink();
        if is_link && !name.starts_with("..") && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

async fn wait_status(addr: SocketAddr, path: &str, want: StatusCode, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(addr, path).await != Ok(want) {
        assert!(
            Instant::now() < deadline,
            "{path} on {addr} never answered {want}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- Kubernetes ----------------------------------------------------------

/// The proxy container of deploy/kubernetes/deployment.yaml, and its pod spec.
fn deployment() -> (Value, Value) {
    let d: Value = serde_saphyr::from_str(DEPLOYMENT).expect("deployment.yaml parses");
    let pod = d["spec"]["template"]["spec"].clone();
    let container = pod["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "proxy"))
        .expect("a container named proxy")
        .clone();
    (pod, container)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Mount path of the volume that comes from the named ConfigMap or Secret.
fn mount_of(pod: &Value, container: &Value, kind: &str, object: &str) -> String {
    let key = if kind == "configMap" {
        "name"
    } else {
        "secretName"
    };
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v[kind][key] == object)
        .unwrap_or_else(|| panic!("no {kind} volume for {object}"));
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("{object} is not mounted"));
    assert!(
        mount.get("subPath").is_none(),
        "{object} is mounted with subPath, which never sees updates"
    );
    mount["mountPath"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_layout_rotates_by_secret_update_with_no_failed_request() {
    let (pod, container) = deployment();
    let args = strings(&container["args"]);
    let manifest_env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str().expect("plain env values");
            (e["name"].as_str().unwrap().to_string(), value.to_string())
        })
        .collect();
    let config_mount = mount_of(&pod, &container, "configMap", "amity-mtls-proxy-config");
    let certs_mount = mount_of(&pod, &container, "secret", "amity-mtls-proxy-certs");
    let config_arg = args
        .windows(2)
        .find(|w| w[0] == "-c")
        .map(|w| w[1].clone())
        .expect("-c CONFIG in the args");
    assert_eq!(config_arg, format!("{config_mount}/config.yaml"));
    assert_eq!(certs_mount, format!("{ETC}/secrets"));
    let probe = |p: &str| {
        container[p]["httpGet"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ready_path, live_path) = (probe("readinessProbe"), probe("livenessProbe"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();

    let env = Env::new();
    let certs = env.certs();
    let serial_a1 = env.client_cert("backend-a");
    let (a1_crt, a1_key) = (
        read(&certs.join("backend-a.crt")),
        read(&certs.join("backend-a.key")),
    );
    let serial_a2 = env.client_cert("backend-a");
    let (a2_crt, a2_key) = (
        read(&certs.join("backend-a.crt")),
        read(&certs.join("backend-a.key")),
    );
    let serial_b = env.client_cert("backend-b");
    let (b_crt, b_key) = (
        read(&certs.join("backend-b.crt")),
        read(&certs.join("backend-b.key")),
    );
    let dev_ca = read(&certs.join("dev-ca.crt"));
    let mock = env.mock(Duration::ZERO).await;

    let root = env.dir.path().join("pod");
    let (config_dir, secret_dir) = (under(&root, &config_mount), under(&root, &certs_mount));
    let secrets = |pairs: &[(&'static str, &Vec<u8>)]| {
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("server-key", SERVER_KEY.as_bytes().to_vec()),
            // Only because the stand-in's certificate comes from the dev CA.
            ("dev-ca.crt", dev_ca.clone()),
        ];
        files.extend(pairs.iter().map(|(n, b)| (*n, (*b).clone())));
        publish(&secret_dir, &files);
    };
    let (listen, admin) = (closed_port(), closed_port());
    let secret_path = |f: &str| {
        under(&root, &format!("{certs_mount}/{f}"))
            .display()
            .to_string()
    };
    let configmap = |names: &[&str], active: Option<&str>| {
        let mut rest = format!(
            "  ca: {}\nserver_key_file: {}\nclient_certs:\n",
            secret_path("dev-ca.crt"),
            secret_path("server-key")
        );
        for n in names {
            rest.push_str(&format!(
                "  - name: {n}\n    cert: {}\n    key: {}\n",
                secret_path(&format!("{n}.crt")),
                secret_path(&format!("{n}.key"))
            ));
        }
        if let Some(a) = active {
            rest.push_str(&format!("active: {a}\n"));
        }
        let yaml = common::config_yaml(listen, admin, mock.addr, &rest);
        publish(&config_dir, &[("config.yaml", yaml.into_bytes())]);
    };

    secrets(&[("backend-a.crt", &a1_crt), ("backend-a.key", &a1_key)]);
    configmap(&["backend-a"], None);
    // As in the pod: the Secret's folder inside the ConfigMap's, each with its own `..data`.
    assert!(secret_dir.starts_with(&config_dir));
    assert!(config_dir.join("..data").is_symlink() && secret_dir.join("..data").is_symlink());

    let mut cmd = Command::new(common::BIN);
    cmd.args(rooted(&root, &args))
        .env_remove("NOTIFY_SOCKET")
        .envs(manifest_env.iter().map(|(k, v)| (k, v)));
    let mut proxy = Spawned::spawn(cmd, env.dir.path().join("proxy.log"), listen, admin);
    let log = proxy.log_path().to_path_buf();
    wait_status(admin, &live_path, StatusCode::OK, &log).await;
    wait_status(admin, &ready_path, StatusCode::OK, &log).await;
    settles_on(&mock, listen, &serial_a1, NO_KEY, Some(&log)).await;

    let load = Load::start(listen, NO_KEY);
    // 1. The certificate is renewed under the same name: only the Secret changes.
    secrets(&[("backend-a.crt", &a2_crt), ("backend-a.key", &a2_key)]);
    settles_on(&mock, listen, &serial_a2, NO_KEY, Some(&log)).await;

    // 2. Rotation to a new console name (deploy/README.md): the Secret gains
    //    the new pair, then the ConfigMap names both and switches.
    secrets(&[
        ("backend-a.crt", &a2_crt),
        ("backend-a.key", &a2_key),
        ("backend-b.crt", &b_crt),
        ("backend-b.key", &b_key),
    ]);
    configmap(&["backend-a", "backend-b"], Some("backend-b"));
    settles_on(&mock, listen, &serial_b, NO_KEY, Some(&log)).await;

    // 3. The old one leaves: ConfigMap first, then the Secret.
    configmap(&["backend-b"], None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    secrets(&[("backend-b.crt", &b_crt), ("backend-b.key", &b_key)]);
    settles_on(&mock, listen, &serial_b, NO_KEY, Some(&log)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(admin, &ready_path).await, Ok(StatusCode::OK));

    let (ok, failed) = load.finish().await;
    // The kubelet sends SIGTERM after the preStop pause.
    proxy.signal("-TERM");
    let clean = proxy
        .exits_within(Duration::from_secs(grace))
        .await
        .success();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(clean, "non-zero exit; log:\n{log_text}");
    assert_eq!(
        failed, 0,
        "requests failed during rotation; log:\n{log_text}"
    );
    assert!(ok > 50, "the load barely ran: {ok} requests");
    assert!(
        !log_text.contains("reload failed"),
        "a reload failed; log:\n{log_text}"
    );
    assert!(
        log_text.lines().all(|l| l.starts_with('{')),
        "--log-format json: every line is JSON; log:\n{log_text}"
    );
    assert!(!log_text.contains(SERVER_KEY), "the server key was logged");
}

// ---- systemd -------------------------------------------------------------

/// `Key=value` lines of deploy/systemd/amity-mtls-proxy.service, in order.
fn unit(key: &str) -> Vec<String> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Notifications received on a NOTIFY_SOCKET the test owns, one entry per datagram.
struct Notifications {
    path: PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Notifications {
    fn bind(path: PathBuf) -> Self {
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    r.lock().unwrap().push(text);
                }
            }
        });
        Self {
            path,
            received,
            stop,
        }
    }

    fn all(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for a datagram after index `from` that has `line`; returns its index.
    async fn wait_for(&self, from: usize, line: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.all();
            if let Some(i) = (from..all.len()).find(|&i| all[i].lines().any(|l| l == line)) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} after datagram {from}; received: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every RELOADING=1 carries MONOTONIC_USEC and is followed by a READY=1.
fn reloads_are_well_formed(notes: &[String]) {
    for (i, n) in notes.iter().enumerate() {
        if n.lines().any(|l| l == "RELOADING=1") {
            let usec = n
                .lines()
                .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
                .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {n:?}"));
            assert!(usec.parse::<u64>().is_ok_and(|u| u > 0), "{n:?}");
            assert!(
                notes[i + 1..]
                    .iter()
                    .any(|m| m.lines().any(|l| l == "READY=1")),
                "RELOADING=1 never followed by READY=1: {notes:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_reports_ready_reloading_stopping() {
    let exec_start: Vec<String> = unit("ExecStart")[0]
        .split_whitespace()
        .map(String::from)
        .collect();
    let (_, container) = deployment();
    assert_eq!(
        exec_start[1..],
        strings(&container["args"])[..],
        "the unit and the Deployment start the proxy differently"
    );
    assert_eq!(unit("Type"), ["notify"]);
    let exec_reload: Vec<String> = unit("ExecReload")[0]
        .split_whitespace()
        .map(String::from)
        .collect();
    let environment: Vec<(String, String)> = unit("Environment")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stop_timeout: u64 = unit("TimeoutStopSec")[0]
        .trim_end_matches('s')
        .parse()
        .unwrap();

    let env = Env::new();
    let serial_a = env.client_cert("backend-a");
    let serial_b = env.client_cert("backend-b");
    let mock = env.mock(Duration::ZERO).await;

    // /etc/amity-mtls-proxy as the README's systemd section lays it out.
    let root = env.dir.path().join("host");
    let etc = under(&root, ETC);
    std::fs::create_dir_all(etc.join("certs")).unwrap();
    for f in [
        "backend-a.crt",
        "backend-a.key",
        "backend-b.crt",
        "backend-b.key",
        "dev-ca.crt",
    ] {
        std::fs::copy(env.certs().join(f), etc.join("certs").join(f)).unwrap();
    }
    std::fs::write(etc.join("server-key"), SERVER_KEY).unwrap();
    // LoadCredential=ID:PATH copies a file to ID, and each file of a folder to ID_FILE.
    let credentials = under(&root, CREDENTIALS);
    std::fs::create_dir_all(&credentials).unwrap();
    for spec in unit("LoadCredential") {
        let (id, source) = spec.split_once(':').unwrap();
        let source = under(&root, source);
        let files: Vec<(String, PathBuf)> = if source.is_dir() {
            std::fs::read_dir(&source)
                .unwrap()
                .map(|e| e.unwrap())
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (format!("{id}_{name}"), e.path())
                })
                .collect()
        } else {
            vec![(id.to_string(), source)]
        };
        for (name, from) in files {
            let to = credentials.join(name);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
    }
    let credential = |id: &str| credentials.join(id).display().to_string();
    let (listen, admin) = (closed_port(), closed_port());
    let config = |active: &str| {
        let mut rest = format!(
            "  ca: certs/dev-ca.crt\nserver_key_file: {}\nactive: {active}\nclient_certs:\n",
            credential("server-key")
        );
        for n in ["backend-a", "backend-b"] {
            rest.push_str(&format!(
                "  - name: {n}\n    cert: certs/{n}.crt\n    key: {}\n",
                credential(&format!("certs_{n}.key"))
            ));
        }
        common::config_yaml(listen, admin, mock.addr, &rest)
    };
    let config_path = etc.join("config.yaml");
    common::write_atomically(&config_path, &config("backend-a"));

    let notes = Notifications::bind(env.dir.path().join("notify.sock"));
    let mut cmd = Command::new(common::BIN);
    cmd.args(rooted(&root, &exec_start[1..]))
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .env("NOTIFY_SOCKET", &notes.path)
        .env("CREDENTIALS_DIRECTORY", &credentials);
    let mut proxy = Spawned::spawn(cmd, env.dir.path().join("proxy.log"), listen, admin);
    let log = proxy.log_path().to_path_buf();

    // `systemctl start` returns at READY=1: the proxy serves from then on.
    notes.wait_for(0, "READY=1").await;
    assert_eq!(token(listen).await, Ok(StatusCode::OK));
    settles_on(&mock, listen, &serial_a, NO_KEY, Some(&log)).await;
    let load = Load::start(listen, NO_KEY);

    // `systemctl reload` after switching the active certificate.
    common::write_atomically(&config_path, &config("backend-b"));
    let mark = notes.all().len();
    let pid = proxy.pid().to_string();
    let reload = Command::new(&exec_reload[0])
        .args(exec_reload[1..].iter().map(|a| a.replace("$MAINPID", &pid)))
        .status()
        .unwrap();
    assert!(reload.success());
    let reloading = notes.wait_for(mark, "RELOADING=1").await;
    notes.wait_for(reloading + 1, "READY=1").await;
    settles_on(&mock, listen, &serial_b, NO_KEY, Some(&log)).await;

    // A reload that fails still ends in READY=1: the previous config serves on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    common::write_atomically(&config_path, "listen: [not, an, address]\n");
    let mark = notes.all().len();
    proxy.signal("-HUP");
    let reloading = notes.wait_for(mark, "RELOADING=1").await;
    notes.wait_for(reloading + 1, "READY=1").await;
    assert_eq!(token(listen).await, Ok(StatusCode::OK));
    common::write_atomically(&config_path, &config("backend-b"));
    proxy.signal("-HUP");
    settles_on(&mock, listen, &serial_b, NO_KEY, Some(&log)).await;

    let (ok, failed) = load.finish().await;
    // `systemctl stop`: KillSignal=SIGTERM, then up to TimeoutStopSec.
    let mark = notes.all().len();
    proxy.signal("-TERM");
    notes.wait_for(mark, "STOPPING=1").await;
    let clean = proxy
        .exits_within(Duration::from_secs(stop_timeout))
        .await
        .success();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(clean, "non-zero exit; log:\n{log_text}");
    assert_eq!(failed, 0, "requests failed; log:\n{log_text}");
    assert!(ok > 20, "the load barely ran: {ok} requests");
    let all = notes.all();
    reloads_are_well_formed(&all);
    assert!(
        log_text.contains("reload failed"),
        "the broken config was not refused; log:\n{log_text}"
    );
    assert!(!log_text.contains(SERVER_KEY), "the server key was logged");
    let kinds: BTreeMap<&str, usize> = all
        .iter()
        .flat_map(|n| n.lines())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .fold(BTreeMap::new(), |mut m, k| {
            *m.entry(k).or_default() += 1;
            m
        });
    for k in ["READY", "RELOADING", "MONOTONIC_USEC", "STOPPING"] {
        assert!(kinds.contains_key(k), "no {k} in {all:?}");
    }
}
