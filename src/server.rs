//! Listeners and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{self, ConfigError, Validated};
use crate::proxy::{self, ProxyState};
use crate::reload::{self, Reloader};
use crate::tls::TlsError;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Connection settings for the backend-facing listener.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// Bound on reading a request head.
    pub header_read_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take after shutdown starts.
    pub grace: Duration,
}

impl ConnOptions {
    /// From a validated config.
    pub fn from_config(v: &Validated) -> Self {
        Self {
            header_read_timeout: v.config.timeouts.header_read(),
            max_header_bytes: v.config.limits.max_header_bytes,
            grace: v.config.timeouts.shutdown_grace(),
        }
    }
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves backends on `listener` until `shutdown` resolves, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    opts: ConnOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(proxy::handle(state, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        grace_ms = opts.grace.as_millis() as u64,
        "shutting down: no longer accepting; draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}

/// A proxy running in this process (used by `run`, `demo` and tests).
pub struct Running {
    /// The bound backend-facing address.
    pub addr: SocketAddr,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// Shared state (generation, metrics).
    pub state: Arc<ProxyState>,
    /// Reloads this proxy.
    pub reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests within the grace period, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.serving).await;
    }
}

/// Binds the listeners named in `v` and serves in the background, with reload
/// on SIGHUP, file changes and `POST /reload`.
pub async fn start(v: &Validated) -> Result<Running, ServeError> {
    let state = ProxyState::new(v)?;
    let listener = bind(v.listen).await?;
    let admin_listener = bind(v.admin_listen).await?;
    let local = |l: &TcpListener, addr| {
        l.local_addr()
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let addr = local(&listener, v.listen)?;
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
    until_stop(Box::pin(reload::watch_files(
        reloader.clone(),
        reload_tx.clone(),
    )));
    until_stop(Box::pin(reload::sighup(reload_tx.clone())));
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
    };
    tokio::spawn(admin::serve(admin_listener, admin, stop_rx.clone()));
    let mut rx = stop_rx;
    let serving = tokio::spawn(serve(
        listener,
        state.clone(),
        ConnOptions::from_config(v),
        async move {
            let _ = rx.changed().await;
        },
    ));
    Ok(Running {
        addr,
        admin_addr,
        state,
        reloader,
        stop,
        serving,
    })
}

const DAY: Duration = Duration::from_secs(24 * 3600);
type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolves on SIGTERM or SIGINT.
pub async fn terminate_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `run`: load, validate, serve until SIGTERM/SIGINT.
pub async fn run(config_path: &std::path::Path) -> Result<(), ServeError> {
    let v = config::load(config_path)?;
    let running = start(&v).await?;
    let generation = running.state.current.load();
    let cert = generation.readiness(crate::pki::now_unix());
    if let Err(reason) = &cert {
        tracing::warn!("{reason}: calls will fail until a usable certificate is configured");
    }
    tracing::info!(
        listen = %running.addr,
        admin = %running.admin_addr,
        upstream = %v.upstream.base,
        cert = cert.as_deref().unwrap_or("-"),
        "amity-mtls-proxy serving"
    );
    drop(generation);
    terminate_signal().await;
    running.shutdown().await;
    Ok(())
}
