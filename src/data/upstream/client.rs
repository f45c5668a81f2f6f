//! The client towards Amity: one generation's upstream, sending each request over the
//! worker's HTTP/2 connections or, if the upstream offers only HTTP/1.1, a pool.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::retry::{self, Seen, Unanswered};
use super::watched::{CountingConnector, Learned, TlsFailure};
use super::{error, multiplex, UpstreamBody, UpstreamError};
use crate::data::tls::{self, TlsError};
use crate::data::workers::local;
use crate::model::config::{LoadedCert, TimeoutsConfig, UpstreamConfig, UpstreamTarget};
use crate::telemetry::metrics::AppMetrics;

/// A request ready to go upstream: everything but the URI's base.
pub struct Outgoing {
    /// As the backend sent it (the policy let it pass).
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

/// Whether the upstream may have seen a request `written` on a connection whose TLS layer saw
/// `tls`: a connection whose handshake the upstream refused processed nothing.
fn seen_after(written: Seen, tls: Option<&rustls::Error>) -> Seen {
    match tls {
        Some(rustls::Error::AlertReceived(a)) if error::is_cert_alert(*a) => Seen::Never,
        _ => written,
    }
}

/// What one worker uses of an [`Upstream`].
struct PerWorker {
    slot: multiplex::Slot,
    client: Client<CountingConnector, Full<Bytes>>,
    /// Where a connection on which the upstream chose HTTP/1.1 waits for `client`.
    learned: Learned,
}

/// One generation's upstream: a TLS config with one client identity, and per worker an
/// HTTP/2 connection (or, if the upstream offers only HTTP/1.1, a connection pool).
pub struct Upstream {
    /// One per worker thread (see `workers`), so that a connection is driven by the
    /// thread whose requests use it.
    workers: Box<[PerWorker]>,
    /// Set once the upstream has chosen HTTP/1.1 by ALPN; then each worker's `client`
    /// carries the requests.
    http1: AtomicBool,
    connector: CountingConnector,
    idle: Duration,
    /// `timeouts.upstream_body_gap_ms`.
    body_gap: Duration,
    target: UpstreamTarget,
    metrics: AppMetrics,
    timeouts: TimeoutsConfig,
}

impl Upstream {
    /// Builds the clients, one per worker; `cert` is the identity presented (none: no client certificate).
    pub fn new(
        target: UpstreamTarget,
        upstream: &UpstreamConfig,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
        cert: Option<&LoadedCert>,
        timeouts: &TimeoutsConfig,
        metrics: AppMetrics,
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
        let connector = CountingConnector {
            inner: https,
            metrics: metrics.clone(),
            bound: timeouts.connect() + timeouts.handshake(),
            learned: Learned::default(),
        };
        // `check` refuses 0; the floor keeps a hand-built config from a zero-period timer.
        let idle = Duration::from_millis(upstream.pool_idle_timeout_ms.max(1));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(upstream.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .retry_canceled_requests(retry::POOL_RETRIES_UNSENT);
        let workers = (0..workers.max(1))
            .map(|_| {
                let learned = Learned::default();
                PerWorker {
                    slot: multiplex::Slot::default(),
                    client: builder.build(CountingConnector {
                        learned: learned.clone(),
                        ..connector.clone()
                    }),
                    learned,
                }
            })
            .collect();
        Ok(Self {
            workers,
            http1: AtomicBool::new(false),
            connector,
            idle,
            body_gap: timeouts.upstream_body_gap(),
            target,
            metrics,
            timeouts: timeouts.clone(),
        })
    }

    /// Sends a request once; the caller decides on retries and bounds the wait.
    pub async fn send(&self, out: &Outgoing) -> Result<Response<UpstreamBody>, Unanswered> {
        self.metrics.upstream_requests.inc();
        let w = local(&self.workers);
        let exchange =
            async {
                if !self.http1.load(Ordering::Relaxed) {
                    if let Some(resp) = self.send_http2(w, out).await? {
                        return Ok(resp);
                    }
                }
                let req = self
                    .request(out, Full::new(out.body.clone()))
                    .map_err(Unanswered::unsent)?;
                // Boxed, as connecting is: a rare path with a large future.
                match Box::pin(w.client.request(req)).await {
                    Ok(resp) => Ok(resp
                        .map(|b| UpstreamBody::http1(b, self.body_gap, &self.metrics.body_stalls))),
                    Err(e) => Err(self.explain_pooled(&e)),
                }
            };
        // The connector bounds connect and handshake on their own; the caller bounds the
        // whole wait (`timeouts.response_ms`).
        let result = exchange.await;
        if let Err(e) = &result {
            if e.error.is_connection_failure() {
                self.metrics.handshake_failed(e.error.kind());
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
    ) -> Result<Option<Response<UpstreamBody>>, Unanswered> {
        let slot = &w.slot;
        // Each unsent failure lets go of its connection, so this bounds the connections tried,
        // whatever number of them the upstream closed at once (and the streams it refused).
        let mut tries = multiplex::MAX_CONNECTIONS * 2 + 2;
        loop {
            tries -= 1;
            let lease = match slot.current() {
                Some(lease) => lease,
                None => match Box::pin(self.connect_http2(w))
                    .await
                    .map_err(Unanswered::unsent)?
                {
                    Some(lease) => lease,
                    None => return Ok(None),
                },
            };
            let multiplex::Lease { conn, open } = lease;
            let mut req = self.request(out, ()).map_err(Unanswered::unsent)?;
            if !out.body.is_empty() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
                req.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, out.body.len().into());
            }
            let e = match multiplex::exchange(conn.send, open, req, &out.body).await {
                Ok(resp) => {
                    return Ok(Some(resp.map(|b| {
                        UpstreamBody::http2(b, self.body_gap, &self.metrics.body_stalls)
                    })))
                }
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
                Err(multiplex::Failed::Unsent(e) | multiplex::Failed::Refused(e)) => {
                    (e, Seen::Never)
                }
                Err(multiplex::Failed::Written(e)) => (e, Seen::Maybe),
            };
            let (e, seen) = e;
            if e.is_io() || e.is_go_away() {
                slot.forget(&conn.failure);
            }
            let tls = conn.failure.get();
            return Err(Unanswered {
                seen: seen_after(seen, tls.as_ref()),
                error: self.explain(&e, tls),
            });
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
            self.uri(&PathAndQuery::from_static("/"))?,
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
            w.learned.keep(io);
            return Ok(None);
        }
        let failure = io.failure.clone();
        slot.start(io, self.idle)
            .await
            .map(Some)
            .map_err(|e| self.explain(&e, failure.get()))
    }

    /// The failure of a request over the HTTP/1.1 pool, with the TLS error its connection saw.
    fn explain_pooled(&self, err: &hyper_util::client::legacy::Error) -> Unanswered {
        let tls = err.connect_info().and_then(|info| {
            let mut extras = http::Extensions::new();
            info.get_extras(&mut extras);
            extras.get::<TlsFailure>().and_then(TlsFailure::get)
        });
        let written = match err.is_connect() {
            true => Seen::Never,
            false => Seen::Maybe,
        };
        Unanswered {
            seen: seen_after(written, tls.as_ref()),
            error: self.explain(err, tls),
        }
    }

    fn uri(&self, path_and_query: &PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(self.target.authority.clone());
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

    /// The failure for `err`, or for `tls` if the connection's TLS layer saw one.
    fn explain(&self, err: &(dyn StdError + 'static), tls: Option<rustls::Error>) -> UpstreamError {
        error::explain(err, tls, &self.target, &self.timeouts)
    }
}
