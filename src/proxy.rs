//! The hyper service: policy (deny by default), header rewrite, forwarding,
//! and Amity-shaped errors for everything the proxy itself refuses.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::config::{LimitsConfig, RoutesConfig, Validated};
use crate::pki;
use crate::tls::TlsError;
use crate::upstream::{Outgoing, Upstream, UpstreamError, UpstreamStats};

/// Response body: the upstream's, streamed, or one of ours.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Header carrying the request id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which kind of allowed call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// v3 or v4 authentication token.
    AuthToken,
    /// A call carrying an admin token.
    Admin,
    /// A route from `routes.extra`.
    Extra,
}

impl RouteClass {
    /// Name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::AuthToken => "auth_token",
            RouteClass::Admin => "admin",
            RouteClass::Extra => "extra",
        }
    }
}

/// A response the proxy makes itself, in Amity's error shape.
#[derive(Debug, Clone)]
pub struct Reject {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable reason, e.g. `route_denied`.
    pub kind: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl Reject {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
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
        resp
    }
}

fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed()
}

enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// The allow-list, built once per generation.
pub struct Policy {
    v3: bool,
    v4: bool,
    admin: bool,
    admin_prefixes: Vec<String>,
    extra: Vec<(Option<Method>, PathMatch)>,
}

const V3_TOKEN: &str = "/api/v3/authentication/token";
const V4_TOKEN: &str = "/api/v4/authentication/token";

impl Policy {
    /// From the `routes` section (already validated).
    pub fn new(r: &RoutesConfig) -> Self {
        Self {
            v3: r.auth_token_v3,
            v4: r.auth_token_v4,
            admin: r.admin,
            admin_prefixes: r.admin_prefixes.clone(),
            extra: r
                .extra
                .iter()
                .map(|e| {
                    let m = e
                        .method
                        .as_deref()
                        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
                    let p = match (&e.path, &e.prefix) {
                        (Some(p), _) => PathMatch::Exact(p.clone()),
                        (None, Some(p)) => PathMatch::Prefix(p.clone()),
                        (None, None) => PathMatch::Exact(String::new()),
                    };
                    (m, p)
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
            && has_admin_token(headers)
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
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|e| lower.contains(e))
    {
        return false;
    }
    // Skip the leading '/'; a trailing '/' yields one empty last segment, which is fine.
    let segs: Vec<&str> = path[1..].split('/').collect();
    let last = segs.len().saturating_sub(1);
    !segs
        .iter()
        .enumerate()
        .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != last))
}

fn has_query_param(query: Option<&str>, name: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k == name && !v.is_empty()
        })
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
        || h.get("x-admin-token")
            .is_some_and(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) plus the legacy ones proxies also drop.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::PROXY_AUTHENTICATE);
}

/// Everything one generation serves with; swapped whole on reload.
pub struct Generation {
    /// The pooled client.
    pub upstream: Upstream,
    /// The allow-list.
    pub policy: Policy,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Name of the presented certificate, if any.
    pub cert_name: Option<String>,
}

impl Generation {
    /// Builds a generation from a validated config; `stats` carry over between generations.
    pub fn build(v: &Validated, stats: Arc<UpstreamStats>) -> Result<Self, TlsError> {
        let cert = choose_cert(v, pki::now_unix());
        let upstream = Upstream::new(
            v.upstream.clone(),
            &v.config.upstream,
            &v.extra_roots,
            cert,
            &v.config.timeouts,
            stats,
        )?;
        Ok(Self {
            upstream,
            policy: Policy::new(&v.config.routes),
            limits: v.config.limits.clone(),
            cert_name: cert.map(|c| c.name.clone()),
        })
    }
}

/// The certificate to present: of those valid now, the one that expires last.
pub fn choose_cert(v: &Validated, now: i64) -> Option<&crate::config::LoadedCert> {
    v.certs
        .iter()
        .filter(|c| c.info.valid_at(now))
        .max_by_key(|c| c.info.not_after)
}

/// The proxy's shared state: the current generation and counters.
pub struct ProxyState {
    /// The generation new requests use.
    pub current: ArcSwap<Generation>,
    /// Upstream counters.
    pub stats: Arc<UpstreamStats>,
}

impl ProxyState {
    /// State serving `v`.
    pub fn new(v: &Validated) -> Result<Arc<Self>, TlsError> {
        let stats = Arc::new(UpstreamStats::default());
        let generation = Generation::build(v, stats.clone())?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(generation),
            stats,
        }))
    }
}

fn request_id(h: &HeaderMap) -> String {
    if let Some(v) = h.get(&REQUEST_ID).and_then(|v| v.to_str().ok()) {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    let mut b = [0u8; 12];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Handles one request from a backend.
pub async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let generation = state.current.load_full();
    let rid = request_id(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut upstream_ms = None;
    let (mut resp, route) = match forward(&generation, req, &rid, &mut upstream_ms).await {
        Ok((resp, route)) => (resp, Some(route)),
        Err((reject, route)) => {
            if reject.status.is_server_error() {
                tracing::warn!(request_id = %rid, reason = reject.kind, "{}", reject.message);
            }
            (reject.into_response(&rid), route)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    tracing::info!(
        target: "access",
        method = %method,
        path = %path,
        route = route.map_or("denied", RouteClass::as_str),
        status = resp.status().as_u16(),
        upstream_ms = upstream_ms.unwrap_or(0),
        total_ms = started.elapsed().as_millis() as u64,
        request_id = %rid,
        cert = generation.cert_name.as_deref().unwrap_or("-"),
        "request"
    );
    resp
}

type Rejected = (Reject, Option<RouteClass>);

async fn forward(
    g: &Generation,
    req: Request<Incoming>,
    rid: &str,
    upstream_ms: &mut Option<u64>,
) -> Result<(Response<ProxyBody>, RouteClass), Rejected> {
    let route = g
        .policy
        .classify(req.method(), req.uri(), req.headers())
        .map_err(|r| (r, None))?;
    let limit = g.limits.max_request_body_bytes;
    let too_large = || {
        (
            Reject::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is over the {limit}-byte limit"),
            ),
            Some(route),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err((
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    "body_read_failed",
                    format!("could not read the request body: {e}"),
                ),
                Some(route),
            ))
        }
    };
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if let Ok(v) = HeaderValue::from_str(rid) {
        headers.insert(REQUEST_ID, v);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let out = Outgoing {
        method: parts.method,
        path_and_query: format!("{}{}", g.upstream.target().path_prefix, path_and_query),
        headers,
        body,
    };
    let sent = Instant::now();
    let result = g.upstream.send(out).await;
    *upstream_ms = Some(sent.elapsed().as_millis() as u64);
    let resp = result.map_err(|e| (upstream_reject(&e, g.cert_name.as_deref()), Some(route)))?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok((Response::from_parts(parts, body.boxed()), route))
}

fn upstream_reject(e: &UpstreamError, cert: Option<&str>) -> Reject {
    let status = if e.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    let message = match (e, cert) {
        (UpstreamError::ClientCertRejected { .. }, None) => {
            format!("{e}; no usable client certificate is configured (see `cert list`)")
        }
        (UpstreamError::ClientCertRejected { .. }, Some(name)) => format!(
            "{e}; certificate {name:?} was presented: check it is registered in the Amity console and not expired"
        ),
        _ => e.to_string(),
    };
    Reject::new(status, e.kind(), message)
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
    fn default_policy_allows_only_token_and_admin_calls() {
        let p = Policy::new(&RoutesConfig::default());
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
            extra: vec![crate::config::ExtraRoute {
                method: Some("GET".into()),
                path: None,
                prefix: Some("/api/v3/network-settings".into()),
            }],
            ..RoutesConfig::default()
        };
        let p = Policy::new(&r);
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
    fn proxy_errors_have_amity_shape() {
        let r = Reject::new(StatusCode::FORBIDDEN, "route_denied", "no");
        let v: serde_json::Value = serde_json::from_slice(&r.body("rid1")).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["code"], 900403);
        assert_eq!(v["message"], "amity-mtls-proxy: no");
        assert_eq!(v["data"]["requestId"], "rid1");
    }
}
