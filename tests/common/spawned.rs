//! The built binary, run as users run it: spawned with its log (stderr) in a file, waited
//! for until it listens, and stopped when dropped so that a failed assertion leaves no
//! process behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use amity_mtls_proxy::model::config::Validated;

/// The proxy binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_amity-mtls-proxy");

/// How long a spawned proxy may take to listen.
const START_LIMIT: Duration = Duration::from_secs(15);

/// A running proxy process; SIGTERM, then SIGKILL, when dropped.
pub struct Spawned {
    child: Child,
    log: PathBuf,
    /// The data-path address (when the kit chose it).
    pub listen: SocketAddr,
    /// The admin address (when the kit chose it).
    pub admin: SocketAddr,
}

/// Rewrites the config at `path` so that `listen` and `admin_listen` (written as
/// 127.0.0.1:0 by [`super::Env::config`]) are free ports known in advance; returns them.
pub fn pin_ports(path: &Path) -> (SocketAddr, SocketAddr) {
    let (listen, admin) = (super::closed_port(), super::closed_port());
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replacen("listen: 127.0.0.1:0", &format!("listen: {listen}"), 1)
        .replacen(
            "admin_listen: 127.0.0.1:0",
            &format!("admin_listen: {admin}"),
            1,
        );
    std::fs::write(path, text).unwrap();
    (listen, admin)
}

impl Spawned {
    /// `amity-mtls-proxy run -c <v.path>` with `RUST_LOG=info`, its ports pinned
    /// ([`pin_ports`]), its log in `proxy.log` beside the config; returns once both listen.
    pub async fn run(v: &Validated) -> Self {
        Self::run_with(v, |_| {}).await
    }

    /// [`Spawned::run`], with the command changed by `tune` first (global options such as
    /// `--log-format json`, environment such as `RUST_LOG`).
    pub async fn run_with(v: &Validated, tune: impl FnOnce(&mut Command)) -> Self {
        let (listen, admin) = pin_ports(&v.path);
        Self::serve(&v.path, listen, admin, tune).await
    }

    /// `amity-mtls-proxy run -c <config>` with `RUST_LOG=info`, the command changed by
    /// `tune`, its log in `proxy.log` beside the config; returns once `listen` and `admin`
    /// (where that config puts them) both accept connections.
    pub async fn serve(
        config: &Path,
        listen: SocketAddr,
        admin: SocketAddr,
        tune: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env("RUST_LOG", "info");
        tune(&mut cmd);
        cmd.args(["run", "-c"]).arg(config);
        let mut p = Self::spawn(cmd, config.with_file_name("proxy.log"), listen, admin);
        p.wait_listening(&[listen, admin]).await;
        p
    }

    /// Starts `cmd` (stdout discarded, stderr into `log`) without waiting for anything;
    /// `listen` and `admin` are where the caller's config put them.
    pub fn spawn(mut cmd: Command, log: PathBuf, listen: SocketAddr, admin: SocketAddr) -> Self {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Self {
            child,
            log,
            listen,
            admin,
        }
    }

    /// Waits until every one of `addrs` accepts connections; fails naming the log, with its
    /// text, if the process exits first or `START_LIMIT` passes.
    pub async fn wait_listening(&mut self, addrs: &[SocketAddr]) {
        let deadline = Instant::now() + START_LIMIT;
        for addr in addrs {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                let exited = self.child.try_wait().unwrap();
                assert!(
                    exited.is_none() && Instant::now() < deadline,
                    "the proxy is not listening on {addr} ({}); log {}:\n{}",
                    exited.map_or(format!("not within {START_LIMIT:?}"), |s| format!(
                        "exited: {s}"
                    )),
                    self.log.display(),
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Where its stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (15 s at most) until the log holds every one of `needles`; returns it.
    pub async fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if needles.iter().all(|n| log.contains(n)) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needles:?} in the log {}:\n{log}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` ("-HUP", "-TERM", ...) and checks that it was delivered.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {}", self.pid());
    }

    /// Waits for the process to exit within `limit`; fails (and kills it) if it does not.
    pub async fn exits_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running {limit:?} after the signal; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("the proxy's VmRSS in /proc")
    }
}

/// Resident memory of process `pid` in KiB, from /proc; `None` once it has gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets it drain; SIGKILL if it is still there after a while.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
