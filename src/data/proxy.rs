//! The hyper service: policy (deny by default), header rewrite, forwarding,
//! and Amity-shaped errors for everything the proxy itself refuses.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::num::NonZeroU32;
use tokio_rustls::TlsAcceptor;

use crate::data::tls::{self, TlsError};
use crate::data::upstream::{upstream_path, Outgoing, Upstream, UpstreamBody, UpstreamError};
pub use crate::model::config::RouteClass;
use crate::model::config::{
    CallerSecrets, CertRejectedAnswer, LimitsConfig, PathRule, RoutesConfig, Validated,
    CERT_REJECTED_BODY_BYTES,
};
use crate::model::pki::{self, CertInfo, CertState};
use crate::telemetry::metrics::{CertLabels, Metrics};

/// Response body: the upstream's, streamed, or one of ours. Not boxed: no allocation per
/// response.
pub type ProxyBody = Either<FromUpstream, Full<Bytes>>;

/// Header carrying the request id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A response the proxy makes itself, in Amity's error shape.
#[derive(Debug, Clone)]
pub struct Reject {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable reason, e.g. `route_denied`.
    pub kind: &'static str,
    /// What happened, for people.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Reject {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The proxy's own error code: 900000 plus the HTTP status, apart from Amity's 6-digit codes.
    pub fn code(&self) -> u32 {
        900_000 + u32::from(self.status.as_u16())
    }

    /// `{"status":"error","code":..,"message":..,"data":{..}}`.
    pub fn body(&self, request_id: &str) -> Bytes {
        let v = serde_json::json!({
            "status": "error",
            "code": self.code(),
            "message": format!("amity-mtls-proxy: {}", self.message),
            "data": { "source": "proxy", "reason": self.kind, "requestId": request_id },
        });
        Bytes::from(v.to_string())
    }

    fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let mut resp = Response::new(full(self.body(request_id)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn full(b: Bytes) -> ProxyBody {
    Either::Right(Full::new(b))
}

enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// The allow-list, built once per generation.
pub struct Policy {
    admin_injected: bool,
    v3: bool,
    v4: bool,
    admin: bool,
    admin_prefixes: Vec<String>,
    extra: Vec<(Option<Method>, PathMatch)>,
}

const V3_TOKEN: &str = "/api/v3/authentication/token";
const V4_TOKEN: &str = "/api/v4/authentication/token";

impl Policy {
    /// From the `routes` section (already validated). With `admin_injected`, the proxy
    /// holds the admin token, so admin calls are recognised by path alone.
    pub fn new(r: &RoutesConfig, admin_injected: bool) -> Self {
        Self {
            admin_injected,
            v3: r.auth_token_v3,
            v4: r.auth_token_v4,
            admin: r.admin,
            admin_prefixes: r.admin_prefixes.clone(),
            extra: r
                .extra
                .iter()
                .filter_map(|e| {
                    let p = match e.rule()? {
                        PathRule::Exact(p) => PathMatch::Exact(p.to_string()),
                        PathRule::Prefix(p) => PathMatch::Prefix(p.to_string()),
                    };
                    Some((e.method.clone(), p))
                })
                .collect(),
        }
    }

    /// Allows a request as one route class, or says why not.
    pub fn classify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<RouteClass, Reject> {
        let path = uri.path();
        if !is_canonical(path) {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "path_not_canonical",
                "the request path has empty, '.' or '..' segments or encoded separators",
            ));
        }
        if self.v3 && method == Method::GET && path == V3_TOKEN {
            if !has_query_param(uri.query(), "userId") {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "missing_user_id",
                    "GET /api/v3/authentication/token needs a non-empty userId query parameter",
                ));
            }
            return Ok(RouteClass::AuthToken);
        }
        if self.v4 && method == Method::POST && path == V4_TOKEN {
            return Ok(RouteClass::AuthToken);
        }
        if self.admin
            && (self.admin_injected || has_admin_token(headers))
            && self
                .admin_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return Ok(RouteClass::Admin);
        }
        for (m, p) in &self.extra {
            let method_ok = m.as_ref().is_none_or(|m| m == method);
            let path_ok = match p {
                PathMatch::Exact(e) => path == e,
                PathMatch::Prefix(pre) => path.starts_with(pre.as_str()),
            };
            if method_ok && path_ok {
                return Ok(RouteClass::Extra);
            }
        }
        Err(Reject::new(
            StatusCode::FORBIDDEN,
            "route_denied",
            format!(
                "{method} {path} is not an Amity auth-token or admin-token call; the proxy only forwards those"
            ),
        ))
    }
}

fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // One pass over the bytes, no allocation: this runs for every request.
    let mut segment = 1;
    for i in 1..=b.len() {
        let c = b.get(i).copied();
        match c {
            Some(b'\\') => return false,
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .map(|h| [h[0].to_ascii_lowercase(), h[1].to_ascii_lowercase()]);
                // Encoded '.', '/', '\' or NUL could make the upstream see another path.
                if matches!(hex, Some([b'2', b'e' | b'f'] | [b'5', b'c'] | [b'0', b'0'])) {
                    return false;
                }
            }
            Some(b'/') | None => {
                let s = &b[segment..i];
                // An empty segment is allowed last only (a trailing '/').
                if s == b"." || s == b".." || (s.is_empty() && c.is_some()) {
                    return false;
                }
                segment = i + 1;
            }
            Some(_) => {}
        }
    }
    true
}

fn has_query_param(query: Option<&str>, name: &str) -> bool {
    let name = name.as_bytes();
    // `name=` followed by at least one byte; a byte scan, as it runs per token call.
    query.is_some_and(|q| {
        q.as_bytes()
            .split(|&b| b == b'&')
            .any(|kv| kv.len() > name.len() + 1 && kv.starts_with(name) && kv[name.len()] == b'=')
    })
}

fn has_admin_token(h: &HeaderMap) -> bool {
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") && !v[7..].trim().is_empty()
        });
    bearer
        || h.get(&X_ADMIN_TOKEN)
            .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
}

// Statics, so that `inject` can lend either secret's name; a name given as a string would be
// parsed at every lookup.
static X_SERVER_KEY: HeaderName = HeaderName::from_static("x-server-key");
static X_ADMIN_TOKEN: HeaderName = HeaderName::from_static("x-admin-token");
static AUTHORIZATION: HeaderName = header::AUTHORIZATION;

/// Hop-by-hop headers (RFC 9110 section 7.6.1) plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most requests carry none: one pass over the names beats ten hash lookups.
    if !h.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    // A message with both is framed by Transfer-Encoding (RFC 9112 section 6.3); the length
    // is stale once the chunked coding is removed, and passed on it would misframe the body.
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
    }
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
}

/// What happened the last time a certificate was presented.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandshakeResult {
    /// Unix time.
    pub at: i64,
    /// Whether the upstream accepted the certificate.
    pub accepted: bool,
    /// `accepted`, or the failure.
    pub detail: String,
}

/// A configured client certificate with its own TLS config and connection pool.
pub struct Identity {
    /// Console name.
    pub name: String,
    /// What the certificate says.
    pub info: CertInfo,
    upstream: Upstream,
    last: Mutex<Option<HandshakeResult>>,
    /// When `last` last recorded an acceptance (unix seconds; `i64::MIN` after a failure).
    accepted_at: AtomicI64,
}

impl Identity {
    /// Keeps the verdict of an exchange that began at `now` (Unix seconds).
    fn record(&self, result: &Result<Response<FromUpstream>, SendError>, now: i64) {
        let (accepted, detail) = match result {
            // Every worker records every success: once a second is enough, and shares no lock.
            Ok(_) if self.accepted_at.load(Ordering::Relaxed) == now => return,
            Ok(_) => (true, "accepted".to_string()),
            Err(e) if e.is_tls_failure() || e.is_cert_rejection() => (false, e.to_string()),
            // Not about the certificate: keep the last verdict.
            Err(_) => return,
        };
        if let Ok(mut last) = self.last.lock() {
            self.accepted_at
                .store(if accepted { now } else { i64::MIN }, Ordering::Relaxed);
            *last = Some(HandshakeResult {
                at: now,
                accepted,
                detail,
            });
        }
    }

    /// The last verdict on this certificate, if it was presented yet.
    pub fn last_result(&self) -> Option<HandshakeResult> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

/// Everything one generation serves with; swapped whole on reload.
pub struct Generation {
    /// Configured certificates, in config order.
    pub identities: Vec<Identity>,
    /// Used only when no certificate is configured (an app without mTLS certificates).
    anonymous: Option<Upstream>,
    active: AtomicUsize,
    rejections: AtomicU32,
    failover_after: u32,
    /// `upstream.cert_rejected_answers`.
    cert_refusals: Vec<CertRejectedAnswer>,
    /// The allow-list.
    pub policy: Policy,
    /// Size limits.
    pub limits: LimitsConfig,
    path_prefix: String,
    /// The upstream's base URL, for people.
    upstream_base: String,
    metrics: Arc<Metrics>,
    /// The backend-facing TLS acceptor, with `inbound_tls`.
    pub inbound: Option<TlsAcceptor>,
    /// `callers`: identity and allowed route classes; empty allows every fleet certificate.
    callers: Vec<(String, Vec<RouteClass>)>,
    server_key: Option<HeaderValue>,
    admin_bearer: Option<HeaderValue>,
    caller_secrets: CallerSecrets,
    /// Requests of this generation waiting for the upstream, at most `limits.max_in_flight`.
    in_flight: AtomicUsize,
    body_read_timeout: Duration,
    response_timeout: Duration,
    rate: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

/// Who is calling, as the listener saw it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// Identities in the caller's client certificate, with mTLS (see [`pki::identities`]).
    pub caller: Option<Vec<String>>,
    name: String,
}

impl ConnInfo {
    /// A connection from `peer`, with the identities of its client certificate if any.
    pub fn new(peer: std::net::SocketAddr, caller: Option<Vec<String>>) -> Self {
        let name = match caller.as_ref().and_then(|c| c.first()) {
            Some(id) => id.clone(),
            None => peer.ip().to_string(),
        };
        Self { peer, caller, name }
    }

    /// The caller's name until `callers` matched one: its first identity, else its IP.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn secret_header(v: &str) -> Option<HeaderValue> {
    let mut h = HeaderValue::from_str(v).ok()?;
    // Never added to HTTP/2 header compression tables.
    h.set_sensitive(true);
    Some(h)
}

impl Generation {
    /// Builds a generation: a fresh TLS config and pool per certificate, so nothing
    /// (no TLS session, no pooled connection) carries over from the previous one.
    pub fn build(v: &Validated, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let workers = crate::data::workers::resolve(v.config.workers);
        let upstream = |cert| {
            Upstream::new(
                v.upstream.clone(),
                &v.config.upstream,
                &v.extra_roots,
                cert,
                &v.config.timeouts,
                metrics.clone(),
                workers,
            )
        };
        let identities = v
            .certs
            .iter()
            .map(|c| {
                Ok(Identity {
                    name: c.name.clone(),
                    info: c.info.clone(),
                    upstream: upstream(Some(c))?,
                    last: Mutex::new(None),
                    accepted_at: AtomicI64::new(i64::MIN),
                })
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        let anonymous = if identities.is_empty() {
            Some(upstream(None)?)
        } else {
            None
        };
        let g = Self {
            active: AtomicUsize::new(preferred(
                &identities,
                v.config.active.as_deref(),
                pki::now_unix(),
            )),
            identities,
            anonymous,
            rejections: AtomicU32::new(0),
            failover_after: v.config.failover_after,
            cert_refusals: v.config.upstream.cert_rejected_answers.0.clone(),
            policy: Policy::new(&v.config.routes, v.admin_token.is_some()),
            limits: v.config.limits.clone(),
            path_prefix: v.upstream.path_prefix.clone(),
            upstream_base: v.upstream.base.clone(),
            metrics,
            inbound: v.inbound.as_ref().map(tls::inbound_acceptor).transpose()?,
            callers: v
                .config
                .callers
                .iter()
                .map(|c| (c.identity.clone(), c.routes.clone()))
                .collect(),
            server_key: v
                .server_key
                .as_ref()
                .and_then(|k| secret_header(k.expose())),
            admin_bearer: v
                .admin_token
                .as_ref()
                .and_then(|t| secret_header(&format!("Bearer {}", t.expose()))),
            caller_secrets: v.config.caller_secrets,
            in_flight: AtomicUsize::new(0),
            body_read_timeout: v.config.timeouts.header_read(),
            response_timeout: v.config.timeouts.response(),
            rate: v.config.limits.rate_limit.as_ref().and_then(|r| {
                let quota = Quota::per_second(NonZeroU32::new(r.per_second)?)
                    .allow_burst(NonZeroU32::new(r.burst)?);
                Some(RateLimiter::keyed(quota))
            }),
        };
        g.metrics.cert_expiry.clear();
        for i in &g.identities {
            g.metrics
                .cert_expiry
                .get_or_create(&i.labels())
                .set(i.info.not_after);
        }
        g.publish_active();
        Ok(g)
    }

    /// Refuses a caller not allowed this route class (403) or over its rate (429). Returns
    /// the `callers` identity it matched, if the list is in use: the caller's name from then on.
    fn admit(&self, conn: &ConnInfo, route: RouteClass) -> Result<Option<&String>, Reject> {
        let mut matched = None;
        if !self.callers.is_empty() {
            let ids = conn.caller.as_deref().unwrap_or_default();
            let entry = self.callers.iter().find(|(id, _)| ids.contains(id));
            match entry {
                None => {
                    return Err(Reject::new(
                        StatusCode::FORBIDDEN,
                        "caller_unknown",
                        format!("caller {} is not listed under callers", conn.name()),
                    ))
                }
                Some((id, routes)) if !routes.contains(&route) => {
                    return Err(Reject::new(
                        StatusCode::FORBIDDEN,
                        "caller_route_denied",
                        format!("caller {id} may not make {} calls", route.as_str()),
                    ))
                }
                Some((id, _)) => matched = Some(id),
            }
        }
        if let Some(rate) = &self.rate {
            let name = matched.unwrap_or(&conn.name);
            if let Err(not_until) = rate.check_key(name) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut r = Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("caller {name} is over its rate limit"),
                );
                r.retry_after = Some(wait.as_secs().max(1));
                return Err(r);
            }
            if rate.len() > 10_000 {
                rate.retain_recent();
            }
        }
        Ok(matched)
    }

    /// Puts the proxy's own server key or admin token on the request, dealing with a caller's as configured.
    fn inject(&self, route: RouteClass, h: &mut HeaderMap) -> Result<(), Reject> {
        let (value, name, caller_sent) = match (route, &self.server_key, &self.admin_bearer) {
            (RouteClass::AuthToken, Some(k), _) => {
                (k, &X_SERVER_KEY, h.contains_key(&X_SERVER_KEY))
            }
            (RouteClass::Admin, _, Some(t)) => (
                t,
                &AUTHORIZATION,
                h.contains_key(&AUTHORIZATION) || h.contains_key(&X_ADMIN_TOKEN),
            ),
            _ => return Ok(()),
        };
        if caller_sent && self.caller_secrets == CallerSecrets::Reject {
            return Err(Reject::new(
                StatusCode::FORBIDDEN,
                "caller_sent_secret",
                format!("callers must not send {name}: the proxy adds it"),
            ));
        }
        h.remove(&X_ADMIN_TOKEN);
        h.insert(name, value.clone());
        Ok(())
    }

    /// Counts a request in flight until the guard drops; `None` at the limit. A counter,
    /// not a semaphore: nothing waits, and a release takes no lock.
    fn enter_in_flight(&self) -> Option<InFlight<'_>> {
        let max = self.limits.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(&self.in_flight))
    }

    /// The upstream's base URL.
    pub fn upstream_base(&self) -> &str {
        &self.upstream_base
    }

    /// Path prefix of the upstream base URL.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// Sets `cert_active` from the certificates valid now (also called on each scrape,
    /// so an expiry between reloads shows).
    pub fn publish_active(&self) {
        self.metrics.cert_active.clear();
        let active = self.active.load(Ordering::Relaxed);
        for (n, i) in self.identities.iter().enumerate() {
            self.metrics
                .cert_active
                .get_or_create(&i.labels())
                .set(i64::from(
                    n == active && i.info.state(pki::now_unix()).is_usable(),
                ));
        }
    }

    /// The identity presented first now, if any is usable.
    pub fn active(&self, now: i64) -> Option<&Identity> {
        self.usable(now).next().map(|(_, i)| i)
    }

    /// Usable identities (valid now), the active one first; no allocation per request.
    fn usable(&self, now: i64) -> impl Iterator<Item = (usize, &Identity)> {
        let active = self.active.load(Ordering::Relaxed);
        let valid = move |n: usize| {
            self.identities
                .get(n)
                .filter(|i| i.info.state(now).is_usable())
                .map(|i| (n, i))
        };
        valid(active).into_iter().chain(
            (0..self.identities.len())
                .filter(move |n| *n != active)
                .filter_map(valid),
        )
    }

    /// Whether the proxy can serve: `Ok(cert name)` or `Err(reason)`.
    pub fn readiness(&self, now: i64) -> Result<String, String> {
        match self.active(now) {
            Some(i) => Ok(i.name.clone()),
            None if self.identities.is_empty() => Err("no client certificate is configured".into()),
            None => Err(self.unusable_reason(now)),
        }
    }

    fn unusable_reason(&self, now: i64) -> String {
        let why: Vec<String> = self
            .identities
            .iter()
            .map(|i| {
                if i.info.state(now) == CertState::Expired {
                    format!("{} expired on {}", i.name, pki::rfc3339(i.info.not_after))
                } else {
                    format!(
                        "{} is not valid before {}",
                        i.name,
                        pki::rfc3339(i.info.not_before)
                    )
                }
            })
            .collect();
        format!("no usable client certificate: {}", why.join("; "))
    }

    /// Per-certificate state, as `/certs` shows it.
    pub fn cert_report(&self, now: i64) -> Vec<serde_json::Value> {
        let active = self.active(now).map(|i| i.name.as_str());
        self.identities
            .iter()
            .map(|i| {
                let role = match i.info.state(now) {
                    _ if Some(i.name.as_str()) == active => "active",
                    CertState::Valid | CertState::Expiring { .. } => "standby",
                    CertState::Expired => "expired",
                    CertState::NotYetValid => "not_yet_valid",
                };
                serde_json::json!({
                    "name": i.name,
                    "subject": i.info.subject,
                    "serial": i.info.serial,
                    "sha256": i.info.sha256,
                    "not_before": pki::rfc3339(i.info.not_before),
                    "not_after": pki::rfc3339(i.info.not_after),
                    "seconds_left": i.info.not_after - now,
                    "role": role,
                    "last_handshake": i.last_result(),
                })
            })
            .collect()
    }

    /// Sends upstream with the active certificate. On a TLS failure the request
    /// (never read by the upstream) is retried once: with the other certificate when
    /// the upstream refused ours and another is usable, else on a new connection. An HTTP
    /// answer refusing the certificate (`upstream.cert_rejected_answers`: the upstream
    /// handled nothing) is retried with the other certificate only.
    pub async fn send(
        &self,
        out: &Outgoing,
    ) -> Result<(Response<FromUpstream>, Option<&str>), Reject> {
        let Some(anonymous) = &self.anonymous else {
            return self.send_with_cert(out).await;
        };
        let mut result = self.exchange(anonymous, out).await;
        if result.as_ref().is_err_and(SendError::is_tls_failure) {
            result = self.exchange(anonymous, out).await;
        }
        result
            .map(|r| (r, None))
            .map_err(|e| upstream_reject(&e, None))
    }

    /// One exchange; an answer that `cert_refusals` recognises is an error.
    async fn exchange(
        &self,
        upstream: &Upstream,
        out: &Outgoing,
    ) -> Result<Response<FromUpstream>, SendError> {
        let resp = upstream.send(out).await.map_err(SendError::Upstream)?;
        let status = resp.status().as_u16();
        // Only a status a rule names has its body read: a 200 goes on untouched.
        if !self.cert_refusals.iter().any(|a| a.status == status) {
            return Ok(resp.map(FromUpstream::new));
        }
        let (parts, body) = resp.into_parts();
        let (body, start) = FromUpstream::read_start(body).await?;
        match refusal(&self.cert_refusals, status, &start) {
            Some(rule) => {
                self.metrics.handshake_failed("client_cert_rejected");
                Err(SendError::CertRefused {
                    status,
                    says: rule.body_contains.clone(),
                })
            }
            None => Ok(Response::from_parts(parts, body)),
        }
    }

    async fn send_with_cert(
        &self,
        out: &Outgoing,
    ) -> Result<(Response<FromUpstream>, Option<&str>), Reject> {
        let now = pki::now_unix();
        let mut usable = self.usable(now);
        let Some((first_n, first)) = usable.next() else {
            return Err(Reject::new(
                StatusCode::BAD_GATEWAY,
                "no_usable_cert",
                self.unusable_reason(now),
            ));
        };
        let result = self.exchange(&first.upstream, out).await;
        first.record(&result, now);
        let err = match result {
            Ok(r) => {
                // Read first: a store on every request would bounce the line between workers.
                if first_n == self.active.load(Ordering::Relaxed)
                    && self.rejections.load(Ordering::Relaxed) != 0
                {
                    self.rejections.store(0, Ordering::Relaxed);
                }
                return Ok((r, Some(first.name.as_str())));
            }
            Err(e) if e.is_tls_failure() || e.is_cert_rejection() => e,
            Err(e) => return Err(upstream_reject(&e, Some(&first.name))),
        };
        let retry = match (err.is_cert_rejection(), usable.next()) {
            (true, Some((second_n, second))) => {
                self.metrics.failovers.inc();
                if crate::telemetry::logthrottle::allow("failover", "client_cert_rejected") {
                    tracing::warn!(rejected = %first.name, retry_with = %second.name, error = %err, "client certificate rejected; retrying with the other one");
                }
                self.count_rejection(first_n, second_n);
                second
            }
            // The same certificate would be refused the same way over HTTP.
            (true, None) if !err.is_tls_failure() => {
                return Err(upstream_reject(&err, Some(&first.name)))
            }
            _ => {
                if crate::telemetry::logthrottle::allow("upstream_retry", "tls_failure") {
                    tracing::warn!(cert = %first.name, error = %err, "upstream TLS failed; retrying once on a new connection");
                }
                first
            }
        };
        let result = self.exchange(&retry.upstream, out).await;
        retry.record(&result, now);
        result
            .map(|r| (r, Some(retry.name.as_str())))
            .map_err(|e| upstream_reject(&e, Some(&retry.name)))
    }

    /// After `failover_after` consecutive rejections of the active certificate, switch to `to`.
    fn count_rejection(&self, from: usize, to: usize) {
        if from != self.active.load(Ordering::Relaxed) {
            return;
        }
        let n = self.rejections.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.failover_after
            && self
                .active
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.rejections.store(0, Ordering::Relaxed);
            tracing::warn!(
                from = %self.identities[from].name,
                to = %self.identities[to].name,
                rejections = n,
                "switching client certificate until the next reload"
            );
            self.publish_active();
        }
    }
}

impl Identity {
    fn labels(&self) -> CertLabels {
        CertLabels {
            name: self.name.clone(),
            serial: self.info.serial.clone(),
        }
    }
}

/// The certificate to present first: `active` if it is valid now, else the valid one that expires last.
fn preferred(ids: &[Identity], active: Option<&str>, now: i64) -> usize {
    let valid = |i: &&Identity| i.info.state(now).is_usable();
    if let Some(n) = active.and_then(|a| ids.iter().position(|i| i.name == a && valid(&i))) {
        return n;
    }
    ids.iter()
        .enumerate()
        .filter(|(_, i)| valid(i))
        .max_by_key(|(_, i)| i.info.not_after)
        .map_or(0, |(n, _)| n)
}

/// The proxy's shared state: the current generation and the metrics.
pub struct ProxyState {
    /// The generation new requests use.
    pub current: ArcSwap<Generation>,
    /// Metrics, shared by every generation.
    pub metrics: Arc<Metrics>,
}

impl ProxyState {
    /// State serving `v`.
    pub fn new(v: &Validated) -> Result<Arc<Self>, TlsError> {
        let metrics = Arc::new(Metrics::new());
        let generation = Generation::build(v, metrics.clone())?;
        metrics.reload(true);
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(generation),
            metrics,
        }))
    }
}

/// The caller's `x-request-id` when it is sane, else a new one: a random
/// per-thread prefix and a counter, unique without a random draw per request.
fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    thread_local! {
        // Per thread, so that workers share no counter (its cache line would move between
        // cores on every request); the random prefixes keep threads apart.
        static PREFIX: [u8; 16] = {
            let mut b = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut b);
            let mut hex = [0u8; 16];
            for (i, byte) in b.iter().enumerate() {
                hex[2 * i] = HEX[usize::from(byte >> 4)];
                hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
            }
            hex
        };
        static NEXT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let n = NEXT.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        n
    });
    let mut out = [0u8; 24];
    PREFIX.with(|p| out[..16].copy_from_slice(p));
    for (i, slot) in out[16..].iter_mut().enumerate() {
        *slot = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    // Owned by one shared allocation: the id is cloned into the upstream request and the
    // response, and a plain byte copy would be copied again on its first clone.
    HeaderValue::from_maybe_shared(Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// One request counted in flight; see [`Generation`]'s `in_flight`.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one request did, for the log line and metrics.
#[derive(Default)]
struct Outcome<'a> {
    route: Option<RouteClass>,
    upstream: Option<Duration>,
    cert: Option<&'a str>,
    /// The `callers` identity the request was admitted as.
    caller: Option<&'a str>,
}

/// Handles one request from a backend with `generation` (the current one, loaded by the
/// caller: [`ProxyState::current`]), which arrived at `started`.
pub async fn handle(
    generation: Arc<Generation>,
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    started: Instant,
) -> Response<ProxyBody> {
    let rid = request_id(req.headers());
    // request_id only returns visible ASCII, so this never falls back.
    let rid_text = rid.to_str().unwrap_or("-");
    // For the access log only, when it is on: `forward` consumes the request.
    let logged = tracing::enabled!(target: "access", tracing::Level::INFO)
        .then(|| (req.method().clone(), req.uri().clone()));
    let mut outcome = Outcome::default();
    let mut resp = match forward(&generation, req, &conn, &rid, started, &mut outcome).await {
        Ok(resp) => resp,
        Err(reject) => {
            // Per request, so summarised: a flood of them cannot fill the disk.
            if (reject.status.is_server_error() || reject.status == StatusCode::TOO_MANY_REQUESTS)
                && crate::telemetry::logthrottle::allow("request_failed", reject.kind)
            {
                tracing::warn!(
                    request_id = rid_text,
                    reason = reject.kind,
                    "{}",
                    reject.message
                );
            }
            reject.into_response(rid_text)
        }
    };
    resp.headers_mut().insert(REQUEST_ID, rid.clone());
    let route = outcome.route.map_or("denied", RouteClass::as_str);
    let status = resp.status().as_u16();
    generation.metrics.count_request(route, status);
    if let Some(d) = outcome.upstream {
        generation.metrics.upstream_latency.observe(d.as_secs_f64());
    }
    if let Some((method, uri)) = logged {
        tracing::info!(
            target: "access",
            method = method.as_str(),
            path = uri.path(),
            route,
            status,
            upstream_ms = outcome.upstream.map_or(0, |d| d.as_millis() as u64),
            total_ms = started.elapsed().as_millis() as u64,
            request_id = rid_text,
            cert = outcome.cert.unwrap_or("-"),
            caller = outcome.caller.unwrap_or(conn.name()),
            "request"
        );
    }
    resp
}

async fn forward<'g>(
    g: &'g Generation,
    req: Request<Incoming>,
    conn: &ConnInfo,
    rid: &HeaderValue,
    started: Instant,
    outcome: &mut Outcome<'g>,
) -> Result<Response<ProxyBody>, Reject> {
    let route = g.policy.classify(req.method(), req.uri(), req.headers())?;
    outcome.route = Some(route);
    outcome.caller = g.admit(conn, route)?.map(String::as_str);
    let limit = g.limits.max_request_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let (parts, body) = req.into_parts();
    // Most calls (the token GET) have no body: no timer, no collecting. Boxed, so that the
    // rarely used reading state does not enlarge every request's future. The wait on Amity
    // is timed from the request's start, a clock reading saved, unless a body came first.
    let (body, sent) = if body.is_end_stream() {
        (Bytes::new(), started)
    } else {
        (Box::pin(read_body(g, body)).await?, Instant::now())
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    g.inject(route, &mut headers)?;
    let mut id = rid.clone();
    // HPACK "never indexed": a value that differs per request would only churn the
    // upstream connection's header table.
    id.set_sensitive(true);
    headers.insert(REQUEST_ID, id);
    let root = PathAndQuery::from_static("/");
    let path = parts.uri.path_and_query().unwrap_or(&root);
    let out = Outgoing {
        method: parts.method,
        path_and_query: upstream_path(g.path_prefix(), path)
            .map_err(|e| Reject::new(StatusCode::BAD_REQUEST, "bad_path", e.to_string()))?,
        headers,
        body,
    };
    let Some(_slot) = g.enter_in_flight() else {
        let mut r = Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} requests are already in flight to Amity; try again shortly",
                g.limits.max_in_flight
            ),
        );
        r.retry_after = Some(1);
        return Err(r);
    };
    // One bound for the whole wait, the retry after a TLS failure included.
    let deadline = sent + g.response_timeout;
    // Boxed: futures nest by value, and hyper moves the whole request future (twice) into
    // its connection; kept inline, this one made the request future 7 KiB.
    let sending = Box::pin(g.send(&out));
    let result = tokio::time::timeout_at(deadline.into(), sending).await.ok();
    outcome.upstream = Some(sent.elapsed());
    let result = result.unwrap_or_else(|| {
        let e = UpstreamError::ResponseTimeout {
            ms: g.response_timeout.as_millis() as u64,
        };
        Err(upstream_reject(&SendError::Upstream(e), None))
    });
    let (resp, cert) = result?;
    outcome.cert = cert;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Either::Left(body)))
}

/// The whole request body, within `limits.max_request_body_bytes` and the body read timeout.
async fn read_body(g: &Generation, body: Incoming) -> Result<Bytes, Reject> {
    let limit = g.limits.max_request_body_bytes;
    let reading = tokio::time::timeout(g.body_read_timeout, Limited::new(body, limit).collect());
    match reading.await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Err(_) => Err(Reject::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_read_timeout",
            format!(
                "the request body did not arrive within {} ms",
                g.body_read_timeout.as_millis()
            ),
        )),
        Ok(Err(e)) => Err(Reject::new(
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            format!("could not read the request body: {e}"),
        )),
    }
}

fn too_large(limit: usize) -> Reject {
    Reject::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is over the {limit}-byte limit"),
    )
}

fn upstream_reject(e: &SendError, cert: Option<&str>) -> Reject {
    let (status, kind) = match e {
        SendError::Upstream(u) if u.is_timeout() => (StatusCode::GATEWAY_TIMEOUT, u.kind()),
        SendError::Upstream(u) => (StatusCode::BAD_GATEWAY, u.kind()),
        SendError::CertRefused { .. } => (StatusCode::BAD_GATEWAY, "client_cert_rejected"),
    };
    let message = match (e.is_cert_rejection(), cert) {
        (true, None) => format!("{e}; no client certificate is configured (see `cert list`)"),
        (true, Some(name)) => format!(
            "{e}; certificate {name:?} was presented: check it is registered in the Amity console and not expired"
        ),
        _ => e.to_string(),
    };
    Reject::new(status, kind, message)
}

/// Why an exchange with the upstream failed.
#[derive(Debug)]
enum SendError {
    /// Connecting, TLS or HTTP failed.
    Upstream(UpstreamError),
    /// The upstream answered that it refused our client certificate (a rule of
    /// `upstream.cert_rejected_answers` matched).
    CertRefused {
        /// The answer's status.
        status: u16,
        /// The rule's text, which the answer held.
        says: String,
    },
}

impl SendError {
    /// A TLS failure, before the upstream read the request.
    fn is_tls_failure(&self) -> bool {
        matches!(self, Self::Upstream(e) if e.is_tls_failure())
    }

    /// The upstream refused our client certificate, by a TLS alert or in HTTP.
    fn is_cert_rejection(&self) -> bool {
        matches!(
            self,
            Self::Upstream(UpstreamError::ClientCertRejected { .. }) | Self::CertRefused { .. }
        )
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(e) => e.fmt(f),
            Self::CertRefused { status, says } => write!(
                f,
                "upstream refused our client certificate (HTTP {status} answer saying {says:?})"
            ),
        }
    }
}

/// The rule of `rules` that an answer with `status` and a body starting with `start` matches.
fn refusal<'r>(
    rules: &'r [CertRejectedAnswer],
    status: u16,
    start: &[u8],
) -> Option<&'r CertRejectedAnswer> {
    rules.iter().find(|r| {
        let text = r.body_contains.as_bytes();
        r.status == status && !text.is_empty() && start.windows(text.len()).any(|w| w == text)
    })
}

/// An upstream response body, passed on as it comes. After a status that a refusal rule
/// names, its start was read first (see [`FromUpstream::read_start`]) and is sent before the rest.
pub struct FromUpstream {
    /// Frames read already, last first; empty on the usual path.
    read: Vec<Frame<Bytes>>,
    /// The rest; `None` once it ended while its start was read.
    rest: Option<UpstreamBody>,
}

impl FromUpstream {
    fn new(body: UpstreamBody) -> Self {
        Self {
            read: Vec::new(),
            rest: Some(body),
        }
    }

    /// Reads frames until the body ends or [`CERT_REJECTED_BODY_BYTES`] came; returns the body
    /// (nothing of it lost) and its first [`CERT_REJECTED_BODY_BYTES`] at most.
    async fn read_start(body: UpstreamBody) -> Result<(Self, Vec<u8>), SendError> {
        let mut body = Self::new(body);
        let mut start = Vec::new();
        while start.len() < CERT_REJECTED_BODY_BYTES {
            let Some(rest) = body.rest.as_mut() else {
                break;
            };
            match rest.frame().await {
                None => body.rest = None,
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        let room = CERT_REJECTED_BODY_BYTES - start.len();
                        start.extend_from_slice(&d[..d.len().min(room)]);
                    }
                    body.read.push(frame);
                }
                Some(Err(e)) => {
                    return Err(SendError::Upstream(UpstreamError::Protocol {
                        reason: format!("reading the response body: {e}"),
                    }))
                }
            }
        }
        body.read.reverse();
        Ok((body, start))
    }
}

impl Body for FromUpstream {
    type Data = Bytes;
    type Error = <UpstreamBody as Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.read.pop() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Some(rest) => std::pin::Pin::new(rest).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(UpstreamBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), UpstreamBody::size_hint);
        if self.read.is_empty() {
            return rest;
        }
        let read: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (method, uri.parse().unwrap(), h)
    }

    fn classify(p: &Policy, r: (Method, Uri, HeaderMap)) -> Result<RouteClass, u16> {
        p.classify(&r.0, &r.1, &r.2).map_err(|e| e.status.as_u16())
    }

    #[test]
    fn generated_request_ids_are_distinct_across_threads() {
        let make = || {
            (0..1000)
                .map(|_| request_id(&HeaderMap::new()))
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(make).join().unwrap();
        let mut all: Vec<HeaderValue> = make();
        all.extend(other);
        assert!(all
            .iter()
            .all(|v| v.len() == 24 && v.as_bytes().iter().all(u8::is_ascii_hexdigit)));
        let distinct: std::collections::HashSet<&[u8]> = all.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(distinct.len(), 2000);
        let mut kept = HeaderMap::new();
        kept.insert(REQUEST_ID, HeaderValue::from_static("req-1"));
        assert_eq!(request_id(&kept), "req-1");
    }

    #[test]
    fn canonical_paths() {
        for ok in ["/", "/a", "/a/b/", "/a/..b", "/a/.b/c", "/a%41", "/a%"] {
            assert!(is_canonical(ok), "{ok}");
        }
        for bad in [
            "", "a", "//", "//a", "/a//b", "/./a", "/a/.", "/a/..", "/a/../b", "/a%2e", "/a%2F",
            "/a%5cb", "/a%00", "/a\\b",
        ] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn the_user_id_parameter_must_be_present_and_non_empty() {
        let has = |q: &str| has_query_param(Some(q), "userId");
        assert!(has("userId=u1"));
        assert!(has("a=1&userId=u&b"));
        assert!(!has("userId="));
        assert!(!has("userId"));
        assert!(!has("userIdx=1"));
        assert!(!has("xuserId=1"));
        assert!(!has("userId=&a=1"));
        assert!(!has_query_param(None, "userId"));
    }

    #[test]
    fn default_policy_allows_only_token_and_admin_calls() {
        let p = Policy::new(&RoutesConfig::default(), false);
        let ok = |r| classify(&p, r);
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/authentication/token?userId=u1",
                &[]
            )),
            Ok(RouteClass::AuthToken)
        );
        assert_eq!(
            ok(req(Method::GET, "/api/v3/authentication/token", &[])),
            Err(400)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/authentication/token?userId=",
                &[]
            )),
            Err(400)
        );
        assert_eq!(
            ok(req(Method::POST, "/api/v4/authentication/token", &[])),
            Ok(RouteClass::AuthToken)
        );
        assert_eq!(
            ok(req(Method::GET, "/api/v4/authentication/token", &[])),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Bearer abc")]
            )),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("x-admin-token", "abc")]
            )),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Bearer ")]
            )),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users",
                &[("authorization", "Basic abc")]
            )),
            Err(403)
        );
        assert_eq!(ok(req(Method::POST, "/api/v3/sessions", &[])), Err(403));
        assert_eq!(
            ok(req(
                Method::GET,
                "/healthz",
                &[("authorization", "Bearer abc")]
            )),
            Err(403)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users/../../x",
                &[("authorization", "Bearer abc")]
            )),
            Err(400)
        );
        assert_eq!(
            ok(req(
                Method::GET,
                "/api/v3/users/%2e%2e/x",
                &[("authorization", "Bearer abc")]
            )),
            Err(400)
        );
    }

    #[test]
    fn config_narrows_and_extends() {
        let r = RoutesConfig {
            auth_token_v3: false,
            admin_prefixes: vec!["/api/v3/users".into()],
            extra: vec![crate::model::config::ExtraRoute {
                method: Some(Method::GET),
                path: None,
                prefix: Some("/api/v3/network-settings".into()),
            }],
            ..RoutesConfig::default()
        };
        let p = Policy::new(&r, false);
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/authentication/token?userId=u", &[])
            ),
            Err(403)
        );
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/channels", &[("x-admin-token", "t")])
            ),
            Err(403)
        );
        assert_eq!(
            classify(
                &p,
                req(Method::GET, "/api/v3/users/1", &[("x-admin-token", "t")])
            ),
            Ok(RouteClass::Admin)
        );
        assert_eq!(
            classify(&p, req(Method::GET, "/api/v3/network-settings/x", &[])),
            Ok(RouteClass::Extra)
        );
        assert_eq!(
            classify(&p, req(Method::POST, "/api/v3/network-settings/x", &[])),
            Err(403)
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-server-key", "k".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-server-key"));
    }

    #[test]
    fn a_length_beside_chunked_coding_is_dropped_with_it() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "100".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
        let mut h = HeaderMap::new();
        h.insert("content-length", "100".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["content-length"], "100", "a length alone stays");
    }

    #[test]
    fn refusal_pages_are_recognised_by_status_and_text() {
        let rules = crate::model::config::CertRejectedAnswers::default().0;
        // nginx 1.22's pages for its internal 495 and 496, as sent.
        let page = |text: &str| {
            format!("<html>\r\n<head><title>400 {text}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{text}</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
        };
        let unverified = page("The SSL certificate error");
        let missing = page("No required SSL certificate was sent");
        assert_eq!(
            refusal(&rules, 400, unverified.as_bytes()).map(|r| r.body_contains.as_str()),
            Some("The SSL certificate error")
        );
        assert!(refusal(&rules, 400, missing.as_bytes()).is_some());
        // Another status, or a 400 of the application's own, is no refusal.
        assert!(refusal(&rules, 403, unverified.as_bytes()).is_none());
        assert!(refusal(&rules, 200, unverified.as_bytes()).is_none());
        assert!(refusal(&rules, 400, br#"{"status":"error","code":400000}"#).is_none());
        assert!(refusal(&rules, 400, b"").is_none());
        // Case-sensitive: the rule names the text as the server writes it.
        assert!(refusal(&rules, 400, b"the ssl certificate error").is_none());
        let cdn = [CertRejectedAnswer {
            status: 403,
            body_contains: "client certificate".into(),
        }];
        assert!(refusal(&cdn, 403, b"<p>bad client certificate</p>").is_some());
        assert!(refusal(
            &cdn,
            403,
            br#"{"code":400300,"message":"Forbidden error."}"#
        )
        .is_none());
        assert!(refusal(&[], 400, unverified.as_bytes()).is_none());
    }

    #[test]
    fn cert_refusals_get_the_client_cert_rejected_error() {
        let e = SendError::CertRefused {
            status: 400,
            says: "The SSL certificate error".into(),
        };
        assert!(e.is_cert_rejection() && !e.is_tls_failure());
        let r = upstream_reject(&e, Some("backend-a"));
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.kind, "client_cert_rejected");
        assert!(r.message.contains("HTTP 400"), "{}", r.message);
        assert!(
            r.message.contains("\"backend-a\" was presented"),
            "{}",
            r.message
        );
    }

    #[test]
    fn proxy_errors_have_amity_shape() {
        let r = Reject::new(StatusCode::FORBIDDEN, "route_denied", "no");
        let v: serde_json::Value = serde_json::from_slice(&r.body("rid1")).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], 900403);
        assert_eq!(v["message"], "amity-mtls-proxy: no");
        assert_eq!(v["data"]["requestId"], "rid1");
    }
}
