//! Starting the proxy: bind, build the first generation, start the control plane (reload,
//! admin listener, daily expiry warnings) and the workers; `run` serves until a stop signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::control::admin::{self, Admin};
use crate::control::reload::{self, Reloader};
use crate::data::proxy::ProxyState;
use crate::model::config::{self, Validated};
pub use crate::process::error::ServeError;
use crate::process::inherited::Inherited;
use crate::process::{signals, workers};

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The listener `name` at `addr`: the inherited socket for it, else a new one.
async fn listener(
    inherited: &mut Inherited,
    name: &str,
    addr: SocketAddr,
) -> Result<TcpListener, ServeError> {
    let Some(l) = inherited.take(name, addr) else {
        return bind(addr).await;
    };
    tracing::info!(listener = name, %addr, "serving on the socket systemd handed over");
    l.set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(l))
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A proxy running in this process (used by `run`, `demo` and tests).
pub struct Running {
    /// The bound backend-facing address.
    pub addr: SocketAddr,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// The bound addresses of apps with a listener of their own, by app name.
    pub app_addrs: Vec<(String, SocketAddr)>,
    /// Shared state (generation, metrics).
    pub state: Arc<ProxyState>,
    stop: watch::Sender<bool>,
    serving: mpsc::Receiver<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests within the grace period, writes the audit
    /// records queued, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = self.serving.recv().await;
        // Closing waits for the writer thread: off the event loop.
        let generation = self.state.current.load_full();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(audit) = &generation.audit {
                audit.close();
            }
        })
        .await;
    }
}

/// Binds the listeners named in `v` and serves in the background, with reload
/// on SIGHUP, file changes and `POST /reload`.
pub async fn start(v: &Validated) -> Result<Running, ServeError> {
    start_on(v, Inherited::default()).await
}

/// [`start`], taking the listeners from `inherited` where it has them.
pub async fn start_on(v: &Validated, mut inherited: Inherited) -> Result<Running, ServeError> {
    let state = ProxyState::new(v)?;
    let local = |l: &TcpListener, addr| {
        l.local_addr()
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let mut listeners = Vec::new();
    let mut app_addrs = Vec::new();
    let shared = listener(&mut inherited, "listen", v.listen).await?;
    let addr = local(&shared, v.listen)?;
    listeners.push(workers::Bound {
        listener: shared,
        addr,
        app: None,
    });
    for (name, at) in &v.start_only().app_listeners {
        let own = listener(&mut inherited, &format!("app-{name}"), *at).await?;
        let bound = local(&own, *at)?;
        app_addrs.push((name.clone(), bound));
        listeners.push(workers::Bound {
            listener: own,
            addr: bound,
            app: Some(name.as_str().into()),
        });
    }
    let admin_listener = listener(&mut inherited, "admin", v.admin_listen).await?;
    let unused = inherited.unused();
    if !unused.is_empty() {
        tracing::warn!(sockets = %unused.join(", "), "inherited sockets no listener of the config takes; name them listen, admin or app-NAME (FileDescriptorName=), or give the config their addresses");
    }
    let admin_addr = local(&admin_listener, v.admin_listen)?;
    let reloader = Arc::new(Reloader::new(v, state.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = mpsc::channel(16);

    reload::warn_expiring(&state.current.load());
    let until_stop = |fut: BoxFuture| {
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = rx.changed() => {}
            }
        })
    };
    until_stop(Box::pin(reload::reload_loop(reloader.clone(), reload_rx)));
    // What to watch is read now, as the config was: a change made once start returns is seen.
    let watched = reloader.watched();
    until_stop(Box::pin(reload::watch_files(
        reloader.clone(),
        reload_tx.clone(),
        watched,
    )));
    until_stop(Box::pin(reload::sighup(
        reload::hangup_signal(),
        reload_tx.clone(),
    )));
    let daily_state = state.clone();
    until_stop(Box::pin(async move {
        let mut day = tokio::time::interval_at(tokio::time::Instant::now() + DAY, DAY);
        loop {
            day.tick().await;
            reload::warn_expiring(&daily_state.current.load());
        }
    }));
    let admin = Admin {
        state: state.clone(),
        reload: reload_tx,
        history: reloader.history.clone(),
        auth: reloader.admin_auth(),
    };
    tokio::spawn(admin::serve(admin_listener, admin, stop_rx.clone()));
    let serving = workers::spawn(listeners, v, &state, stop_rx)?;
    Ok(Running {
        addr,
        admin_addr,
        app_addrs,
        state,
        stop,
        serving,
    })
}

const DAY: Duration = Duration::from_secs(24 * 3600);
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// `run`: load, validate, serve until SIGTERM/SIGINT.
pub async fn run(config_path: &std::path::Path) -> Result<(), ServeError> {
    let v = config::load(config_path)?;
    for w in &v.warnings {
        tracing::warn!("{w}");
    }
    // The soft limit is often 1024; what it then has room for is in `descriptors`.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let terminated = signals::terminate();
    let running = start_on(&v, Inherited::from_env()).await?;
    crate::control::sd::ready();
    let generation = running.state.current.load();
    let readiness = generation.readiness(crate::model::pki::now_unix());
    for (app, ready) in generation.apps.iter().zip(readiness.apps) {
        let cert = ready.answer;
        if let Err(reason) = &cert {
            tracing::warn!(
                app = &*app.name,
                "{reason}: calls will fail until a usable certificate is configured"
            );
        }
        let own = running.app_addrs.iter().find(|(n, _)| **n == *app.name);
        tracing::info!(
            app = &*app.name,
            listen = %own.map_or(running.addr, |(_, a)| *a),
            upstream = app.upstream_base(),
            cert = cert.as_deref().unwrap_or("-"),
            "serving app"
        );
    }
    tracing::info!(
        listen = %running.addr,
        admin = %running.admin_addr,
        apps = generation.apps.len(),
        "amity-mtls-proxy serving"
    );
    drop(generation);
    terminated.await;
    crate::control::sd::stopping();
    running.shutdown().await;
    Ok(())
}
