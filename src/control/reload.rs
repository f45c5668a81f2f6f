//! Reload without restart: SIGHUP, file changes (including Kubernetes `..data`
//! symlink swaps) and `POST /reload` all lead to one path: load and validate as
//! at start-up, build a new generation, swap it in. A failed reload changes nothing.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use crate::control::prove;
use crate::control::status::{ReloadEvent, ReloadHistory};
use crate::data::proxy::{Generation, ProxyState};
use crate::model::config;
use crate::model::pki::{self, CertState};

/// What a reload says when the files it was woken for hold what they held.
const UNCHANGED: &str = "unchanged";

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A watched file changed.
    Files,
    /// `POST /reload` on the admin listener.
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Files => "file change",
            Trigger::Admin => "POST /reload",
        }
    }
}

/// A reload request with an optional reply.
pub struct ReloadRequest {
    /// Who asked.
    pub trigger: Trigger,
    /// Where the outcome goes.
    pub reply: Option<oneshot::Sender<Result<String, String>>>,
}

/// Reloads one running proxy.
pub struct Reloader {
    path: PathBuf,
    state: Arc<ProxyState>,
    /// What the process started with, and keeps until a restart.
    start_only: config::StartOnly,
    fingerprint: Mutex<Vec<u8>>,
    /// Every reload's outcome, for the status page.
    pub history: Arc<ReloadHistory>,
    admin_auth: Arc<ArcSwapOption<config::Secret>>,
}

impl Reloader {
    /// A reloader for a proxy started from `v`.
    pub fn new(v: &config::Validated, state: Arc<ProxyState>) -> Self {
        Self {
            path: v.path.clone(),
            state,
            start_only: v.start_only(),
            fingerprint: Mutex::new(fingerprint(&v.path)),
            history: Arc::default(),
            admin_auth: Arc::new(ArcSwapOption::new(v.admin_auth_token.clone().map(Arc::new))),
        }
    }

    /// The admin listener's bearer token, replaced by each successful reload.
    pub fn admin_auth(&self) -> Arc<ArcSwapOption<config::Secret>> {
        self.admin_auth.clone()
    }

    /// Loads, validates and swaps in a new generation; on any problem the old one keeps
    /// serving. Kept in [`Reloader::history`] unless nothing changed.
    pub fn reload(&self, trigger: Trigger) -> Result<String, String> {
        let outcome = self.reload_files(trigger);
        if outcome.as_deref() != Ok(UNCHANGED) {
            self.history.record(ReloadEvent {
                at: pki::now_unix(),
                trigger: trigger.as_str(),
                outcome: outcome.clone(),
            });
        }
        outcome
    }

    fn reload_files(&self, trigger: Trigger) -> Result<String, String> {
        let _ready_when_done = crate::control::sd::reloading();
        let print = fingerprint(&self.path);
        if trigger == Trigger::Files && self.fingerprint.lock().is_ok_and(|f| *f == print) {
            tracing::debug!("files touched but their content is unchanged; nothing to reload");
            return Ok(UNCHANGED.into());
        }
        let metrics = &self.state.metrics;
        // The log may show the config's lines around a parse error; the answer (which
        // `POST /reload` sends over HTTP) never does.
        let built = config::load(&self.path)
            .map_err(|e| (e.to_string(), e.without_snippet()))
            .and_then(|v| {
                let current = self.state.current.load();
                // Proved before building: a refused certificate leaves even the audit file alone.
                let proofs = prove::prove_changed(&v, &current);
                if !proofs.refused.is_empty() {
                    let e = format!("{}; fix the certificate file (a renewal may be half written: the leaf without its intermediate) or turn the proof off with upstream.prove_certs_on_reload: false", proofs.refused.join("; "));
                    return Err((e.clone(), e));
                }
                let g = Generation::build(&v, metrics.clone(), Some(&current)).map_err(|e| {
                    let e = e.to_string();
                    (e.clone(), e)
                })?;
                Ok((v, g, proofs))
            });
        let (v, generation, proofs) = match built {
            Ok(b) => b,
            Err((logged, answer)) => {
                metrics.reload(false);
                tracing::error!(
                    trigger = trigger.as_str(),
                    "reload failed; still serving the previous configuration: {logged}"
                );
                return Err(answer);
            }
        };
        let restart = self.start_only.changes(&v.start_only());
        for c in &restart {
            tracing::warn!(
                "{} changed to {} in the config; it takes effect only on restart, keeping {}",
                c.field,
                c.configured,
                c.running
            );
        }
        let now = pki::now_unix();
        let active: Vec<String> = generation
            .apps
            .iter()
            .map(|app| {
                let cert = app.active(now).map_or_else(
                    || "none".to_string(),
                    |i| format!("{} (serial {})", i.name, i.info.serial),
                );
                generation.about(app, cert)
            })
            .collect();
        let active = active.join(", ");
        warn_expiring(&generation);
        // In-flight requests keep the old generation; its idle pooled connections close when they finish.
        self.state.publish(generation);
        self.admin_auth
            .store(v.admin_auth_token.clone().map(Arc::new));
        if let Ok(mut f) = self.fingerprint.lock() {
            *f = print;
        }
        metrics.reload(true);
        let mut msg = format!("reloaded {}; presenting {active}", self.path.display());
        if proofs.accepted > 0 {
            msg.push_str(&format!(
                "; the upstream accepted {} new or changed certificate(s)",
                proofs.accepted
            ));
        }
        if !proofs.unproven.is_empty() {
            msg.push_str(&format!(
                "; published without proof: {}",
                proofs.unproven.join("; ")
            ));
        }
        if !restart.is_empty() {
            let fields: Vec<&str> = restart.iter().map(|c| c.field.as_str()).collect();
            msg.push_str(&format!("; restart to apply {}", fields.join(", ")));
        }
        match proofs.unproven.is_empty() {
            true => tracing::info!(trigger = trigger.as_str(), "{msg}"),
            false => tracing::warn!(trigger = trigger.as_str(), "{msg}"),
        }
        Ok(msg)
    }

    /// What the file watch looks at, read in one pass: the names whose events count (the
    /// config's and every referenced file's) and the folders to watch (theirs, not the link
    /// targets, so that Kubernetes' `..data` symlink swap in the mounted folder is seen).
    /// Reads the config: call it off the event loop.
    pub fn watched(&self) -> (HashSet<OsString>, Vec<PathBuf>) {
        let files: Vec<PathBuf> = referenced_files(&self.path)
            .into_iter()
            .chain(std::iter::once(self.path.clone()))
            .collect();
        let names = files
            .iter()
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect();
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .filter_map(|p| {
                p.parent().map(|d| match d.as_os_str().is_empty() {
                    true => PathBuf::from("."),
                    false => d.to_path_buf(),
                })
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        (names, dirs)
    }
}

/// Every file the config names (certificates, keys, CAs, secrets), read leniently: a config that does not parse names none.
fn referenced_files(path: &Path) -> Vec<PathBuf> {
    let Ok(text) = pki::read_bounded(path).map(|b| String::from_utf8_lossy(&b).into_owned()) else {
        return Vec::new();
    };
    let Ok(c) = config::parse(path, &text) else {
        return Vec::new();
    };
    c.named_files(path.parent().unwrap_or(Path::new("")))
}

/// SHA-256 over the config and every file it names, read through symlinks.
fn fingerprint(path: &Path) -> Vec<u8> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in std::iter::once(path.to_path_buf()).chain(referenced_files(path)) {
        ctx.update(p.as_os_str().as_encoded_bytes());
        match pki::read_bounded(&p) {
            Ok(bytes) => ctx.update(&bytes),
            Err(e) => ctx.update(e.to_string().as_bytes()),
        }
    }
    ctx.finish().as_ref().to_vec()
}

/// Logs a warning for each certificate under 30, 14 or 7 days from expiry, or past it.
pub fn warn_expiring(g: &Generation) {
    let now = pki::now_unix();
    for (app, i) in g
        .apps
        .iter()
        .flat_map(|a| a.identities.iter().map(move |i| (a, i)))
    {
        let days = match i.info.state(now) {
            CertState::Valid => continue,
            CertState::Expiring { days_left } => days_left,
            // Outside its validity, its days left still rank it: an expired one's are negative,
            // under every limit.
            CertState::Expired | CertState::NotYetValid => i.info.days_left(now),
        };
        if let Some(limit) = [7, 14, pki::RENEW_DAYS].into_iter().find(|l| days < *l) {
            tracing::warn!(
                app = &*app.name,
                cert = %i.name,
                serial = %i.info.serial,
                days_left = days,
                "client certificate has fewer than {limit} days left (expires {}); register the next one and rotate",
                pki::rfc3339(i.info.not_after)
            );
        }
    }
}

/// Runs reload requests one at a time, so two triggers never race.
pub async fn reload_loop(reloader: Arc<Reloader>, mut rx: mpsc::Receiver<ReloadRequest>) {
    while let Some(req) = rx.recv().await {
        let r = reloader.clone();
        let trigger = req.trigger;
        let outcome = tokio::task::spawn_blocking(move || r.reload(trigger))
            .await
            .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        if let Some(reply) = req.reply {
            let _ = reply.send(outcome);
        }
    }
}

/// The longest a burst of file events can delay a reload.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Watches the config's folders; once events stop for [`DEBOUNCE`] (or after
/// [`DEBOUNCE_MAX`] of steady events), asks for a reload. Only events on the files
/// the config names, or on Kubernetes' `..data` links, count: a log file written
/// into the same folder must not keep postponing reloads.
/// `first` is [`Reloader::watched`] as the proxy started. Returns when `tx` closes. Without a
/// working watcher it logs why and returns.
pub async fn watch_files(
    reloader: Arc<Reloader>,
    tx: mpsc::Sender<ReloadRequest>,
    first: (HashSet<OsString>, Vec<PathBuf>),
) {
    let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    let relevant = names.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        let Ok(names) = relevant.lock() else { return };
        let hit = event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."));
        if hit {
            let _ = ev_tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch files; reload with SIGHUP or POST /reload");
            return;
        }
    };
    let mut watched = HashSet::new();
    let read = |r: Arc<Reloader>| async move {
        tokio::task::spawn_blocking(move || r.watched())
            .await
            .unwrap_or_default()
    };
    let mut sync = |watcher: &mut notify::RecommendedWatcher,
                    (now_names, dirs): (HashSet<OsString>, Vec<PathBuf>)| {
        if let Ok(mut n) = names.lock() {
            *n = now_names;
        }
        for d in dirs {
            if !watched.contains(&d) {
                match watcher.watch(&d, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        watched.insert(d);
                    }
                    Err(e) => tracing::warn!(dir = %d.display(), error = %e, "cannot watch folder"),
                }
            }
        }
    };
    sync(&mut watcher, first);
    while ev_rx.recv().await.is_some() {
        let burst_end = tokio::time::Instant::now() + DEBOUNCE_MAX;
        while tokio::time::Instant::now() < burst_end {
            match tokio::time::timeout(DEBOUNCE, ev_rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let req = ReloadRequest {
            trigger: Trigger::Files,
            reply: Some(reply_tx),
        };
        if tx.send(req).await.is_err() {
            return;
        }
        let _ = reply_rx.await;
        sync(&mut watcher, read(reloader.clone()).await);
    }
}

/// Installs the SIGHUP handler now (before the service reports ready, so an
/// early `systemctl reload` cannot kill the process); `None` if it cannot be installed.
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with POST /reload or by editing the files");
            None
        }
    }
}

/// Turns SIGHUP into reload requests until `tx` closes.
pub async fn sighup(hup: Option<tokio::signal::unix::Signal>, tx: mpsc::Sender<ReloadRequest>) {
    let Some(mut hup) = hup else { return };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading");
        let req = ReloadRequest {
            trigger: Trigger::Signal,
            reply: None,
        };
        if tx.send(req).await.is_err() {
            return;
        }
    }
}
