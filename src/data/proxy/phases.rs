//! The handler: one request's phases as named steps, in the order they run. [`forward`] reads
//! as the list of them; [`handle`] wraps it with the request id, metrics and the access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body, Incoming};

use super::body::{FromUpstream, ProxyBody};
use super::caller::ConnInfo;
use super::generation::{Generation, InFlight};
use super::headers::{request_id, strip_hop_by_hop, REQUEST_ID};
use super::reject::{upstream_reject, Reject};
use super::send::SendError;
use crate::data::upstream::{upstream_path, Outgoing, UpstreamError};
use crate::model::config::RouteClass;

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
/// caller: [`super::ProxyState::current`]), which arrived at `started`.
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
            let status = reject.status();
            // Per request, so summarised: a flood of them cannot fill the disk.
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && crate::telemetry::logthrottle::allow("request_failed", reject.reason())
            {
                tracing::warn!(
                    request_id = rid_text,
                    reason = reject.reason(),
                    "{}",
                    reject.message()
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

/// The request's phases, in order; the first refusal ends it.
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
    outcome.caller = g.admission.admit(conn, route)?.map(String::as_str);
    let (mut parts, body) = req.into_parts();
    let (body, sent) = read_body(g, &parts.headers, body, started).await?;
    rewrite_headers(&mut parts.headers, rid);
    g.secrets.inject(route, &mut parts.headers)?;
    let out = upstream_request(g, parts, body)?;
    let _slot = bound_in_flight(g)?;
    let resp = send(g, &out, sent, outcome).await?;
    Ok(respond(resp))
}

/// Read body: the whole request body, within `limits.max_request_body_bytes` (a declared
/// length over it is refused before reading) and the body read timeout. Returns it with the
/// instant the wait on Amity is timed from: the request's start, unless a body came first.
async fn read_body(
    g: &Generation,
    headers: &HeaderMap,
    body: Incoming,
    started: Instant,
) -> Result<(Bytes, Instant), Reject> {
    let limit = g.limits.max_request_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Reject::BodyTooLarge { limit });
    }
    // Most calls (the token GET) have no body: no timer, no collecting, no clock reading.
    if body.is_end_stream() {
        return Ok((Bytes::new(), started));
    }
    // Boxed, so that the rarely used reading state does not enlarge every request's future.
    let body = Box::pin(collect_body(g, body)).await?;
    Ok((body, Instant::now()))
}

/// The body, collected within the limit and the timeout.
async fn collect_body(g: &Generation, body: Incoming) -> Result<Bytes, Reject> {
    let limit = g.limits.max_request_body_bytes;
    let reading = tokio::time::timeout(g.body_read_timeout, Limited::new(body, limit).collect());
    match reading.await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Reject::BodyTooLarge { limit })
        }
        Err(_) => Err(Reject::BodyReadTimeout {
            ms: g.body_read_timeout.as_millis(),
        }),
        Ok(Err(e)) => Err(Reject::BodyReadFailed {
            error: e.to_string(),
        }),
    }
}

/// Rewrite headers: no hop-by-hop headers, no Host (the upstream's is set when sending), and
/// the request id.
fn rewrite_headers(headers: &mut HeaderMap, rid: &HeaderValue) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    let mut id = rid.clone();
    // HPACK "never indexed": a value that differs per request would only churn the
    // upstream connection's header table.
    id.set_sensitive(true);
    headers.insert(REQUEST_ID, id);
}

/// Upstream request: the path under the upstream's prefix, with the rewritten headers.
fn upstream_request(g: &Generation, parts: Parts, body: Bytes) -> Result<Outgoing, Reject> {
    let root = PathAndQuery::from_static("/");
    let path = parts.uri.path_and_query().unwrap_or(&root);
    Ok(Outgoing {
        method: parts.method,
        path_and_query: upstream_path(g.path_prefix(), path).map_err(|e| Reject::BadPath {
            error: e.to_string(),
        })?,
        headers: parts.headers,
        body,
    })
}

/// Bound in-flight: a slot among `limits.max_in_flight`, held until the response is sent on.
fn bound_in_flight(g: &Generation) -> Result<InFlight<'_>, Reject> {
    g.enter_in_flight().ok_or(Reject::Overloaded {
        max_in_flight: g.limits.max_in_flight,
    })
}

/// Send: to the upstream (see [`Generation::send`]), within `timeouts.response` counted from
/// `sent` for the whole wait, the retry after a TLS failure included.
async fn send<'g>(
    g: &'g Generation,
    out: &Outgoing,
    sent: Instant,
    outcome: &mut Outcome<'g>,
) -> Result<Response<FromUpstream>, Reject> {
    let deadline = sent + g.response_timeout;
    // Boxed: futures nest by value, and hyper moves the whole request future (twice) into
    // its connection; inline, the upstream exchange would make every request future large.
    let sending = Box::pin(g.send(out));
    let result = tokio::time::timeout_at(deadline.into(), sending).await.ok();
    outcome.upstream = Some(sent.elapsed());
    let (resp, cert) = result.unwrap_or_else(|| {
        let e = UpstreamError::ResponseTimeout {
            ms: g.response_timeout.as_millis() as u64,
        };
        Err(upstream_reject(&SendError::Upstream(e), None))
    })?;
    outcome.cert = cert;
    Ok(resp)
}

/// Respond: the upstream's answer, streamed, without its hop-by-hop headers.
fn respond(resp: Response<FromUpstream>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Either::Left(body))
}
