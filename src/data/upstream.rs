//! The pooled, mutually authenticated TLS client towards Amity.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::AlertDescription;
use tokio::net::TcpStream;

use crate::data::tls::{self, TlsError};
use crate::data::workers::{local, Padded};
use crate::model::config::{LoadedCert, TimeoutsConfig, UpstreamConfig, UpstreamTarget};
use crate::telemetry::metrics::Metrics;

mod multiplex;

pub use multiplex::RecvBody;

/// The error type of response bodies and connectors.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why an upstream call failed; decides 502 versus 504 and the message.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing listens at the upstream address.
    #[error("upstream {addr} refused the connection")]
    Refused {
        /// host:port.
        addr: String,
    },
    /// The TCP connect took longer than `timeouts.connect_ms`.
    #[error("connecting to upstream {addr} timed out after {ms} ms")]
    ConnectTimeout {
        /// host:port.
        addr: String,
        /// The bound.
        ms: u64,
    },
    /// Connecting failed for another network reason.
    #[error("cannot connect to upstream {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// The OS reason.
        reason: String,
    },
    /// The TLS handshake took longer than `timeouts.handshake_ms`.
    #[error("TLS handshake with upstream {addr} timed out after {ms} ms")]
    HandshakeTimeout {
        /// host:port.
        addr: String,
        /// The bound.
        ms: u64,
    },
    /// The upstream refused our client certificate with a TLS alert.
    #[error("upstream rejected our client certificate (TLS alert {alert})")]
    ClientCertRejected {
        /// The alert, e.g. `unknown_ca`.
        alert: String,
    },
    /// The upstream's certificate did not verify.
    #[error("upstream certificate is not trusted: {reason}")]
    ServerCertUntrusted {
        /// rustls' reason.
        reason: String,
    },
    /// Another TLS failure.
    #[error("TLS with upstream failed: {reason}")]
    Tls {
        /// rustls' reason.
        reason: String,
    },
    /// No response head within the bound.
    #[error("upstream sent no response within {ms} ms (timeouts.response_ms)")]
    ResponseTimeout {
        /// The bound.
        ms: u64,
    },
    /// The connection broke or the upstream spoke bad HTTP.
    #[error("upstream connection failed: {reason}")]
    Protocol {
        /// hyper's reason.
        reason: String,
    },
}

impl UpstreamError {
    /// Whether it is a timeout (504) rather than a failure (502).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. }
                | Self::HandshakeTimeout { .. }
                | Self::ResponseTimeout { .. }
        )
    }

    /// TLS failures happen before the upstream reads any request, so one retry is safe.
    pub fn is_tls_failure(&self) -> bool {
        matches!(
            self,
            Self::ClientCertRejected { .. } | Self::ServerCertUntrusted { .. } | Self::Tls { .. }
        )
    }

    /// Whether the connection (TCP or TLS) failed, rather than the exchange on it.
    pub fn is_connection_failure(&self) -> bool {
        !matches!(self, Self::ResponseTimeout { .. } | Self::Protocol { .. })
    }

    /// A short machine-readable kind for logs and error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "upstream_refused",
            Self::ConnectTimeout { .. } => "upstream_connect_timeout",
            Self::Connect { .. } => "upstream_connect_failed",
            Self::HandshakeTimeout { .. } => "upstream_handshake_timeout",
            Self::ClientCertRejected { .. } => "client_cert_rejected",
            Self::ServerCertUntrusted { .. } => "upstream_cert_untrusted",
            Self::Tls { .. } => "upstream_tls_failed",
            Self::ResponseTimeout { .. } => "upstream_response_timeout",
            Self::Protocol { .. } => "upstream_protocol_error",
        }
    }
}

/// Marker error: the connector's bound on connect + handshake ran out.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake timed out")]
struct HandshakeTimedOut;

/// The first TLS error seen on a connection. h2 flattens I/O errors into text,
/// so a TLS alert that arrives after the handshake (TLS 1.3 client-certificate
/// rejections do) is recorded here and read back through the connection's extras.
#[derive(Clone, Default)]
struct TlsFailure(Arc<Mutex<Option<rustls::Error>>>);

impl TlsFailure {
    fn record(&self, t: &rustls::Error) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| t.clone());
        }
    }

    fn get(&self) -> Option<rustls::Error> {
        self.0.lock().ok().and_then(|s| s.clone())
    }

    /// Whether both belong to the same connection.
    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The last TLS error on any connection of one upstream (one client identity), for
/// the errors hyper reports without the connection's extras (an h2 connection that
/// fails while it is being set up).
#[derive(Clone, Default)]
struct RecentTls(Arc<Mutex<Option<(Instant, rustls::Error)>>>);

impl RecentTls {
    /// How long a recorded failure explains a later unexplained one.
    const FRESH: Duration = Duration::from_secs(2);

    fn record(&self, t: &rustls::Error) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((Instant::now(), t.clone()));
        }
    }

    fn get(&self) -> Option<rustls::Error> {
        let slot = self.0.lock().ok()?;
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < Self::FRESH)
            .map(|(_, t)| t.clone())
    }
}

fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// An upstream TLS stream that records TLS errors into a [`TlsFailure`].
struct Watched {
    inner: MaybeHttpsStream<TokioIo<TcpStream>>,
    failure: TlsFailure,
    recent: RecentTls,
}

impl Watched {
    fn watch<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Some(t) = match &r {
            Poll::Ready(Err(e)) => tls_error(e),
            _ => None,
        } {
            self.failure.record(t);
            self.recent.record(t);
        }
        r
    }

    /// A write fails (broken pipe) when the server has already refused our certificate
    /// and closed; its alert may still wait unread. One read brings it to light.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if matches!(r, Poll::Ready(Err(_))) && self.failure.get().is_none() {
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 256];
            let mut buf = hyper::rt::ReadBuf::uninit(&mut scratch);
            if let Poll::Ready(Err(e)) =
                hyper::rt::Read::poll_read(Pin::new(&mut self.inner), cx, buf.unfilled())
            {
                if let Some(t) = tls_error(&e) {
                    self.failure.record(t);
                    self.recent.record(t);
                }
            }
        }
        self.watch(r)
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(r)
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, r)
    }
}

impl Connection for Watched {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.failure.clone())
    }
}

/// Wraps the rustls connector to bound the handshake and count connections.
#[derive(Clone)]
struct CountingConnector {
    inner: HttpsConnector<HttpConnector>,
    metrics: Arc<Metrics>,
    bound: Duration,
    recent: RecentTls,
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Watched;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.metrics.handshakes.inc();
        let bound = self.bound;
        let recent = self.recent.clone();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(bound, connecting).await {
                Ok(r) => r.map(|inner| Watched {
                    inner,
                    failure: TlsFailure::default(),
                    recent,
                }),
                Err(_) => Err(Box::new(HandshakeTimedOut) as BoxError),
            }
        })
    }
}

/// A request ready to go upstream: everything but the URI's base.
pub struct Outgoing {
    /// Method.
    pub method: Method,
    /// Path and query on the upstream, from [`upstream_path`].
    pub path_and_query: PathAndQuery,
    /// Headers, already cleaned of hop-by-hop ones.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The upstream path for a request path: unchanged (no copy) unless the base URL has a path.
pub fn upstream_path(prefix: &str, pq: &PathAndQuery) -> Result<PathAndQuery, UpstreamError> {
    if prefix.is_empty() {
        return Ok(pq.clone());
    }
    PathAndQuery::try_from(format!("{prefix}{pq}")).map_err(|e| UpstreamError::Protocol {
        reason: format!("bad upstream path: {e}"),
    })
}

/// A response body from the upstream: over HTTP/2 (the usual case) or HTTP/1.1.
pub enum UpstreamBody {
    /// From the worker's multiplexed HTTP/2 connection.
    Http2(RecvBody),
    /// From hyper-util's pool of HTTP/1.1 connections.
    Http1(Incoming),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http2(b) => b.is_end_stream(),
            Self::Http1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Http2(b) => b.size_hint(),
            Self::Http1(b) => b.size_hint(),
        }
    }
}

/// What one worker uses of an [`Upstream`], on cache lines of its own.
struct PerWorker {
    slot: multiplex::Slot,
    client: Client<CountingConnector, Full<Bytes>>,
    /// The upstream's `host[:port]`, this worker's own copy.
    authority: Authority,
}

impl PerWorker {
    fn uri(&self, path_and_query: &PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query.clone());
        Uri::from_parts(parts).map_err(|e| UpstreamError::Protocol {
            reason: format!("bad upstream URI: {e}"),
        })
    }

    fn request<B>(&self, out: &Outgoing, body: B) -> Result<Request<B>, UpstreamError> {
        let mut req = Request::new(body);
        *req.method_mut() = out.method.clone();
        *req.uri_mut() = self.uri(&out.path_and_query)?;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = out.headers.clone();
        Ok(req)
    }
}

/// One generation's upstream: a TLS config with one client identity, and per worker an
/// HTTP/2 connection (or, if the upstream offers only HTTP/1.1, a connection pool).
pub struct Upstream {
    /// One per worker thread (see `workers`), so that a connection is driven by the
    /// thread whose requests use it.
    workers: Box<[Padded<PerWorker>]>,
    /// Set once the upstream has chosen HTTP/1.1 by ALPN; then each worker's `client`
    /// carries the requests.
    http1: AtomicBool,
    connector: CountingConnector,
    idle: Duration,
    target: UpstreamTarget,
    metrics: Arc<Metrics>,
    timeouts: TimeoutsConfig,
    recent: RecentTls,
}

impl Upstream {
    /// Builds the clients, one per worker; `cert` is the identity presented (none: no client certificate).
    pub fn new(
        target: UpstreamTarget,
        upstream: &UpstreamConfig,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
        cert: Option<&LoadedCert>,
        timeouts: &TimeoutsConfig,
        metrics: Arc<Metrics>,
        workers: usize,
    ) -> Result<Self, TlsError> {
        let tls = tls::upstream_client_config(extra_roots, cert)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect()));
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let recent = RecentTls::default();
        let connector = CountingConnector {
            inner: https,
            metrics: metrics.clone(),
            bound: timeouts.connect() + timeouts.handshake(),
            recent: recent.clone(),
        };
        // `check` refuses 0; the floor keeps a hand-built config from a zero-period timer.
        let idle = Duration::from_millis(upstream.pool_idle_timeout_ms.max(1));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(upstream.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        let workers = (0..workers.max(1))
            .map(|_| {
                Padded(PerWorker {
                    slot: multiplex::Slot::default(),
                    client: builder.build(connector.clone()),
                    // A copy, not a clone: clones share one reference count.
                    authority: Authority::from_maybe_shared(Bytes::copy_from_slice(
                        target.authority.as_str().as_bytes(),
                    ))
                    .unwrap_or_else(|_| target.authority.clone()),
                })
            })
            .collect();
        Ok(Self {
            workers,
            http1: AtomicBool::new(false),
            connector,
            idle,
            target,
            metrics,
            timeouts: timeouts.clone(),
            recent,
        })
    }

    /// Sends a request once; the caller decides on retries and bounds the wait.
    pub async fn send(&self, out: &Outgoing) -> Result<Response<UpstreamBody>, UpstreamError> {
        self.metrics.upstream_requests.inc();
        let w = local(&self.workers);
        let exchange = async {
            if !self.http1.load(Ordering::Relaxed) {
                if let Some(resp) = self.send_http2(w, out).await? {
                    return Ok(resp);
                }
            }
            let req = w.request(out, Full::new(out.body.clone()))?;
            // Boxed, as connecting is: a rare path with a large future.
            match Box::pin(w.client.request(req)).await {
                Ok(resp) => Ok(resp.map(UpstreamBody::Http1)),
                Err(e) => Err(self.classify(&e)),
            }
        };
        // The connector bounds connect and handshake on their own; the caller bounds the
        // whole wait (`timeouts.response_ms`).
        let result = exchange.await;
        if let Err(e) = &result {
            if e.is_connection_failure() {
                self.metrics.handshake_failed(e.kind());
            }
        }
        result
    }

    /// Over the worker's HTTP/2 connection, made first if needed; `None` when the upstream
    /// chose HTTP/1.1.
    async fn send_http2(
        &self,
        w: &PerWorker,
        out: &Outgoing,
    ) -> Result<Option<Response<UpstreamBody>>, UpstreamError> {
        let slot = &w.slot;
        // Each unsent failure lets go of its connection, so this bounds the connections tried,
        // whatever number of them the upstream closed at once (and the streams it refused).
        let mut tries = multiplex::MAX_CONNECTIONS * 2 + 2;
        loop {
            tries -= 1;
            let lease = match slot.current() {
                Some(lease) => lease,
                None => match Box::pin(self.connect_http2(w)).await? {
                    Some(lease) => lease,
                    None => return Ok(None),
                },
            };
            let multiplex::Lease { conn, open } = lease;
            let mut req = w.request(out, ())?;
            if !out.body.is_empty() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
                req.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, out.body.len().into());
            }
            let e = match multiplex::exchange(conn.send, open, req, &out.body).await {
                Ok(resp) => return Ok(Some(resp.map(UpstreamBody::Http2))),
                Err(multiplex::Failed::Unsent(e)) if tries > 0 => {
                    // Closed or going away: the request was never seen, try another connection.
                    tracing::debug!(error = %e, "upstream HTTP/2 connection unusable; trying another");
                    slot.forget(&conn.failure);
                    continue;
                }
                Err(multiplex::Failed::Refused(e)) if tries > 0 => {
                    // The connection is good; by now it knows how many streams it may open.
                    tracing::debug!(error = %e, "upstream refused a stream; sending it again");
                    continue;
                }
                Err(
                    multiplex::Failed::Unsent(e)
                    | multiplex::Failed::Refused(e)
                    | multiplex::Failed::Sent(e),
                ) => e,
            };
            if e.is_io() || e.is_go_away() {
                slot.forget(&conn.failure);
            }
            return Err(self.explain(&e, conn.failure.get()));
        }
    }

    /// Makes another HTTP/2 connection for this worker, the first or one beside those that
    /// are full; `None` when the upstream chose HTTP/1.1.
    async fn connect_http2(
        &self,
        w: &PerWorker,
    ) -> Result<Option<multiplex::Lease>, UpstreamError> {
        let slot = &w.slot;
        let mut failed_at = slot.connecting().await;
        if let Some(lease) = slot.current() {
            return Ok(Some(lease));
        }
        if let Some(lease) = slot.least_busy(multiplex::MAX_CONNECTIONS) {
            return Ok(Some(lease));
        }
        if failed_at.is_some_and(|at| at.elapsed() < multiplex::RETRY_ANOTHER) {
            if let Some(lease) = slot.least_busy(1) {
                return Ok(Some(lease));
            }
        }
        let connected = tower_service::Service::call(
            &mut self.connector.clone(),
            w.uri(&PathAndQuery::from_static("/"))?,
        )
        .await;
        let io = match connected {
            Ok(io) => io,
            Err(e) => {
                let e = self.explain(e.as_ref(), None);
                // A full connection still serves, once a stream ends: better than failing.
                let Some(lease) = slot.least_busy(1) else {
                    return Err(e);
                };
                *failed_at = Some(Instant::now());
                self.metrics.handshake_failed(e.kind());
                tracing::warn!(error = %e, retry_in_s = multiplex::RETRY_ANOTHER.as_secs(), "cannot open another upstream connection; calls wait for a stream on the full ones");
                return Ok(Some(lease));
            }
        };
        if !io.connected().is_negotiated_h2() {
            tracing::info!(upstream = %self.target.authority, "the upstream chose HTTP/1.1 by ALPN; pooling HTTP/1.1 connections");
            self.http1.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        let failure = io.failure.clone();
        slot.start(io, self.idle)
            .await
            .map(Some)
            .map_err(|e| self.explain(&e, failure.get()))
    }

    fn classify(&self, err: &hyper_util::client::legacy::Error) -> UpstreamError {
        let this_connection = err.connect_info().and_then(|info| {
            let mut extras = http::Extensions::new();
            info.get_extras(&mut extras);
            extras.get::<TlsFailure>().and_then(TlsFailure::get)
        });
        let explained = match err.connect_info() {
            Some(_) => this_connection,
            None if err.is_connect() => None,
            None => self.recent.get(),
        };
        self.explain(err, explained)
    }

    /// The failure for `err`, or for `tls` (what the connection's TLS layer saw) if known.
    fn explain(&self, err: &(dyn StdError + 'static), tls: Option<rustls::Error>) -> UpstreamError {
        if let Some(t) = tls {
            return classify_tls(&t);
        }
        let addr = format!("{}:{}", self.target.host, self.target.port);
        // The innermost I/O error seen: rustls and tokio-rustls wrap a text in one (the
        // upstream closing mid-handshake is "tls handshake eof"), which says no more.
        let mut last_io: Option<&std::io::Error> = None;
        let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = cur {
            if e.is::<HandshakeTimedOut>() {
                return UpstreamError::HandshakeTimeout {
                    addr,
                    ms: self.timeouts.handshake_ms,
                };
            }
            if let Some(t) = e.downcast_ref::<rustls::Error>() {
                return classify_tls(t);
            }
            // h2 keeps an I/O error's kind and text but does not expose it as the source.
            let io = e
                .downcast_ref::<h2::Error>()
                .and_then(h2::Error::get_io)
                .or_else(|| e.downcast_ref::<std::io::Error>());
            if let Some(io) = io {
                last_io = Some(io);
                // io::Error::source skips the wrapped error itself; look at it directly.
                cur = io.get_ref().map(|inner| inner as &(dyn StdError + 'static));
                continue;
            }
            cur = e.source();
        }
        let Some(io) = last_io else {
            return UpstreamError::Protocol {
                reason: error_chain(err),
            };
        };
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused { addr },
            std::io::ErrorKind::TimedOut => UpstreamError::ConnectTimeout {
                addr,
                ms: self.timeouts.connect_ms,
            },
            _ => UpstreamError::Connect {
                addr,
                reason: io.to_string(),
            },
        }
    }
}

/// `check --live`: one request over a new mTLS connection presenting `cert`.
/// Any HTTP answer means the handshake was accepted.
pub async fn probe(
    v: &crate::model::config::Validated,
    cert: &LoadedCert,
) -> Result<String, UpstreamError> {
    let upstream = Upstream::new(
        v.upstream.clone(),
        &v.config.upstream,
        &v.extra_roots,
        Some(cert),
        &v.config.timeouts,
        Arc::new(Metrics::new()),
        1,
    )
    .map_err(|e| UpstreamError::Tls {
        reason: e.to_string(),
    })?;
    let out = Outgoing {
        method: Method::GET,
        path_and_query: upstream_path(&v.upstream.path_prefix, &PathAndQuery::from_static("/"))?,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let t = &v.config.timeouts;
    let resp = tokio::time::timeout(t.response(), upstream.send(&out))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout { ms: t.response_ms })??;
    Ok(format!(
        "accepted by {}:{} (serial {}; the upstream answered HTTP {} over {:?})",
        v.upstream.host,
        v.upstream.port,
        cert.info.serial,
        resp.status().as_u16(),
        resp.version()
    ))
}

fn classify_tls(e: &rustls::Error) -> UpstreamError {
    match e {
        rustls::Error::AlertReceived(a) if is_cert_alert(*a) => UpstreamError::ClientCertRejected {
            alert: alert_name(*a),
        },
        rustls::Error::InvalidCertificate(c) => UpstreamError::ServerCertUntrusted {
            reason: c.to_string(),
        },
        other => UpstreamError::Tls {
            reason: other.to_string(),
        },
    }
}

/// Alerts with which a server refuses the client's certificate.
pub fn is_cert_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            // rustls sends this when a chain's signature does not verify against a same-named CA.
            | AlertDescription::DecryptError
    )
}

/// The alert's name as the TLS RFCs spell it, e.g. `unknown_ca`.
pub fn alert_name(a: AlertDescription) -> String {
    let debug = format!("{a:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    let chars: Vec<char> = debug.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Every message in an error's chain, joined with ": ".
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_rfc_spelled() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
    }
}
