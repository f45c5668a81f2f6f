//! Listeners and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{self, ConfigError, Validated};
use crate::pki;
use crate::proxy::{self, ConnInfo, ProxyState};
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
    /// Open connections at most.
    pub max_connections: usize,
    /// Idle connections are closed after this.
    pub idle: Duration,
    /// Bound on the inbound TLS handshake.
    pub handshake: Duration,
}

impl ConnOptions {
    /// From a validated config.
    pub fn from_config(v: &Validated) -> Self {
        let t = &v.config.timeouts;
        Self {
            header_read_timeout: t.header_read(),
            max_header_bytes: v.config.limits.max_header_bytes,
            grace: t.shutdown_grace(),
            max_connections: v.config.limits.max_connections,
            idle: t.idle(),
            handshake: t.inbound_handshake(),
        }
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_header_bytes.max(8192));
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            // Bounds the work a client can cause by opening and resetting streams (rapid reset).
            .max_pending_accept_reset_streams(Some(32))
            .max_local_error_reset_streams(Some(256));
        b
    }
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// When a connection last finished a request, and how many it has in flight.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// Marks a request in flight; on drop, records the activity.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms
            .store(a.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves backends on `listener` until `shutdown` resolves, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    opts: ConnOptions,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(opts.builder());
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    // Every connection task holds a receiver: `closed()` on the sender means all have ended.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (state, builder, stop, opts) = (
            state.clone(),
            builder.clone(),
            stop_rx.clone(),
            opts.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            let acceptor = state.current.load().inbound.clone();
            let Some(acceptor) = acceptor else {
                let conn = Arc::new(ConnInfo::new(peer, None));
                return serve_conn(stream, conn, state, &builder, stop, opts.idle).await;
            };
            match tokio::time::timeout(opts.handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let caller = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| pki::identities(c));
                    let conn = Arc::new(ConnInfo::new(peer, caller));
                    serve_conn(tls, conn, state, &builder, stop, opts.idle).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "inbound TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "inbound TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    tracing::info!(
        open_connections = stop_tx.receiver_count(),
        grace_ms = opts.grace.as_millis() as u64,
        "shutting down: no longer accepting; draining"
    );
    tokio::select! {
        _ = stop_tx.closed() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!("grace period over; closing the remaining connections"),
    }
}

/// Serves one connection until it ends, goes idle, or shutdown asks it to finish.
async fn serve_conn<IO>(
    io: IO,
    conn: Arc<ConnInfo>,
    state: Arc<ProxyState>,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: watch::Receiver<bool>,
    idle: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let act = activity.clone();
    let peer = conn.peer;
    let svc = service_fn(move |req| {
        let (state, conn, busy) = (state.clone(), conn.clone(), act.begin());
        async move {
            let resp = proxy::handle(state, req, conn).await;
            drop(busy);
            Ok::<_, Infallible>(resp)
        }
    });
    let c = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(c);
    let finishing = loop {
        tokio::select! {
            r = c.as_mut() => break r,
            _ = stop.changed() => {
                c.as_mut().graceful_shutdown();
                break c.as_mut().await;
            }
            _ = tokio::time::sleep_until(activity.idle_deadline(idle).into()) => {
                let quiet = activity.in_flight.load(Ordering::Relaxed) == 0
                    && Instant::now() >= activity.idle_deadline(idle);
                if quiet {
                    c.as_mut().graceful_shutdown();
                    break c.as_mut().await;
                }
            }
        }
    };
    if let Err(e) = finishing {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
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

/// Installs the SIGTERM and SIGINT handlers now, and resolves when one arrives.
/// Call it before reporting ready, so that a stop right after start still drains.
pub fn terminate_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// `run`: load, validate, serve until SIGTERM/SIGINT.
pub async fn run(config_path: &std::path::Path) -> Result<(), ServeError> {
    let v = config::load(config_path)?;
    if !v.listen.ip().is_loopback() && v.inbound.is_none() {
        tracing::warn!(listen = %v.listen, "plain HTTP on a non-loopback address (allow_plaintext_non_loopback): anyone who reaches it can use the proxy's certificates");
    }
    // Each backend connection is a file descriptor; the soft limit is often 1024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < v.config.limits.max_connections as u64 + 256 => tracing::warn!(
            nofile = n,
            max_connections = v.config.limits.max_connections,
            "the open-file limit is below limits.max_connections; connections beyond it will fail to be accepted"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let terminated = terminate_signal();
    let running = start(&v).await?;
    crate::sd::ready();
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
    terminated.await;
    crate::sd::stopping();
    running.shutdown().await;
    Ok(())
}
