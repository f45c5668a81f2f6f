//! The backend-facing listener: accepts connections (at most `limits.max_connections`),
//! terminates inbound TLS, counts refusals, and hands each connection to `conn` with the
//! proxy's handler; on shutdown, drains within the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::data::conn::{self, Activity, Bounds, Builders, Proto, Socket, Tracked};
use crate::data::proxy::{self, ConnInfo, ProxyState};
use crate::model::config::Validated;
use crate::model::pki;

/// Connection settings for the backend-facing listener.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// Bound on reading a request head.
    pub header_read_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take after shutdown starts.
    pub grace: Duration,
    /// Idle connections are closed after this.
    pub idle: Duration,
    /// Bound on the inbound TLS handshake.
    pub handshake: Duration,
    /// Bound on a response body the backend does not take.
    pub send: Duration,
}

impl ConnOptions {
    /// From a validated config: its start-only part, which a reload does not change.
    pub fn from_config(v: &Validated) -> Self {
        let s = v.start_only();
        Self {
            header_read_timeout: s.header_read,
            max_header_bytes: s.max_header_bytes,
            grace: s.shutdown_grace,
            idle: s.idle,
            handshake: s.inbound_handshake,
            send: s.send,
        }
    }

    fn builders(&self) -> Builders {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // The head bound is kept by the connection's watchdog (`conn::Bounds::head`), and so is
        // noticing a caller that hangs up mid-request, which hyper would otherwise check with
        // a read (and a new read buffer) per request.
        h1.header_read_timeout(None)
            .half_close(true)
            // One flat buffer per response: `send` rather than `writev` of a head and a small
            // body, a shorter path in the kernel (measured: benches/README.md, "writev").
            .writev(false)
            .max_buf_size(self.max_header_bytes.max(8192));
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            // Bounds the work a client can cause by opening and resetting streams (rapid reset).
            .max_pending_accept_reset_streams(Some(32))
            .max_local_error_reset_streams(Some(256));
        Builders { h1, h2 }
    }
}

/// A connection's slot under `max_connections`, counted in the open-connections gauge.
struct ConnSlot {
    _slot: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl ConnSlot {
    fn new(slot: OwnedSemaphorePermit, gauge: &Gauge) -> Self {
        gauge.inc();
        Self {
            _slot: slot,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Serves backends on `listener` (an app's own when `app` is set) until `shutdown` resolves,
/// then drains within the grace period. `slots` bounds open connections across every worker
/// and listener.
pub async fn serve(
    listener: TcpListener,
    app: Option<Arc<str>>,
    state: Arc<ProxyState>,
    opts: ConnOptions,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
) {
    let builders = Arc::new(opts.builders());
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
                    if crate::telemetry::logthrottle::allow("accept", "failed") {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (state, builders, stop, opts, app) = (
            state.clone(),
            builders.clone(),
            stop_rx.clone(),
            opts.clone(),
            app.clone(),
        );
        tokio::spawn(async move {
            let _open = ConnSlot::new(slot, &state.metrics.connections);
            let bounds = Bounds {
                idle: opts.idle,
                head: opts.header_read_timeout,
                stop,
                parked: state.metrics.connections_parked.clone(),
                refused: state.metrics.inbound_refused.clone(),
                send: opts.send,
            };
            let acceptor = state.current.load().inbound.clone();
            let Some(acceptor) = acceptor else {
                // Nothing but the socket is held until the first bytes arrive.
                let first = conn::sniff(&stream, opts.idle, opts.header_read_timeout).await;
                let Ok(Some(proto)) = first else { return };
                let conn = Arc::new(ConnInfo::new(peer, None, app));
                return serve_conn(stream, proto, conn, state, &builders, bounds).await;
            };
            let handshake = tokio::time::timeout(opts.handshake, Box::pin(acceptor.accept(stream)));
            // Boxed: rustls' state is large and would otherwise size every connection task.
            let tls = match handshake.await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    let reason = handshake_failure(&e);
                    return handshake_failed(&state, reason, peer, &e.to_string());
                }
                Err(_) => {
                    let waited = format!("not complete within {} ms", opts.handshake.as_millis());
                    return handshake_failed(&state, "timeout", peer, &waited);
                }
            };
            let session = tls.get_ref().1;
            let caller = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| pki::identities(c));
            // HTTP/2 over TLS is chosen by ALPN (RFC 9113 section 3.2).
            let proto = match session.alpn_protocol() {
                Some(b"h2") => Proto::Http2,
                _ => Proto::Http1,
            };
            let conn = Arc::new(ConnInfo::new(peer, caller, app));
            serve_conn(tls, proto, conn, state, &builders, bounds).await;
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    let worker = crate::data::workers::index();
    tracing::info!(
        worker,
        open_connections = stop_tx.receiver_count(),
        grace_ms = opts.grace.as_millis() as u64,
        "shutting down: no longer accepting; draining"
    );
    tokio::select! {
        _ = stop_tx.closed() => tracing::info!(worker, "all connections drained"),
        _ = tokio::time::sleep(opts.grace) => tracing::warn!(worker, "grace period over; closing the remaining connections"),
    }
}

/// Why an inbound TLS handshake failed, as `inbound_handshake_failures` counts it.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as Cert, Error as Tls};
    // tokio-rustls carries rustls' error as the I/O error's payload.
    match e.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
        Some(Tls::NoCertificatesPresented) => "no_certificate",
        Some(Tls::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature)) => "unknown_ca",
        Some(Tls::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        )) => "expired",
        Some(Tls::InvalidCertificate(_)) => "bad_certificate",
        // The caller refused the handshake, usually not trusting the proxy's certificate.
        Some(Tls::AlertReceived(_)) => "caller_alert",
        Some(_) => "protocol",
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
        ) =>
        {
            "closed"
        }
        None => "protocol",
    }
}

/// Counts a failed inbound handshake and logs it, summarised (see [`crate::telemetry::logthrottle`]).
/// A caller that closes before or during the handshake (a TCP health check, a port scan)
/// is counted but logged only at debug level.
fn handshake_failed(state: &ProxyState, reason: &'static str, peer: SocketAddr, error: &str) {
    state.metrics.inbound_handshake_failed(reason);
    if reason == "closed" {
        return tracing::debug!(%peer, error, "inbound TLS handshake: the caller closed");
    }
    if crate::telemetry::logthrottle::allow("inbound_handshake", reason) {
        tracing::warn!(%peer, reason, error, "inbound TLS handshake failed");
    }
}

/// Counts a connection that hyper ended over a request it could not accept (it answered 400 or
/// 431 first), and logs it, summarised; other errors (the caller left) are only debug lines.
fn connection_ended(state: &ProxyState, peer: SocketAddr, e: &hyper::Error) {
    let reason = if e.is_parse_too_large() {
        "header_too_large"
    } else if e.is_parse() {
        "bad_request"
    } else {
        return tracing::debug!(%peer, error = %e, "connection ended with an error");
    };
    state.metrics.refused(reason);
    if crate::telemetry::logthrottle::allow("refused_before_routing", reason) {
        tracing::warn!(%peer, reason, error = %e, "request refused before routing");
    }
}

/// Serves one accepted connection: the protocol by ALPN or by its first bytes, then hyper.
async fn serve_conn<S: Socket>(
    io: S,
    proto: Proto,
    conn: Arc<ConnInfo>,
    state: Arc<ProxyState>,
    builders: &Builders,
    bounds: Bounds,
) {
    let activity = Arc::new(Activity::with_send_bound(
        bounds.send,
        state.metrics.send_timeouts.clone(),
    ));
    let act = activity.clone();
    let peer = conn.peer;
    let shared = state.clone();
    let svc = service_fn(move |req| {
        // The generation rather than the state: one shared reference count touched per request.
        let (generation, conn) = (state.current.load_full(), conn.clone());
        let (busy, started) = (act.begin(), std::time::Instant::now());
        async move {
            let resp = proxy::handle(generation, req, conn, started).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, busy)))
        }
    });
    if let Err(e) = conn::serve(io, proto, svc, activity, builders, bounds).await {
        connection_ended(&shared, peer, &e);
    }
}
