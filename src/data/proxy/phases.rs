//! The handler: one request's phases as named steps, in the order they run. [`forward`] reads
//! as the list of them; [`handle`] wraps it with the request id, metrics and the access log.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::{Body, Incoming};

use super::app::App;
use super::audit::Audit;
use super::body::{FromUpstream, ProxyBody};
use super::call::{Call, Outcome};
use super::caller::{Admitted, ConnInfo};
use super::failure::UpstreamFailure;
use super::generation::{Generation, InFlight};
use super::headers::{request_id, strip_hop_by_hop, REQUEST_ID};
use super::reject::{upstream_reject, Reject};
use super::select::select;
use super::user_id::{self, UserIdError};
use crate::data::upstream::{upstream_path, Outgoing, Seen, Unanswered, UpstreamError};
use crate::model::config::RouteClass;

/// Handles one request from a backend with `generation` (the current one, loaded by the
/// caller: [`super::ProxyState::current`]), which arrived at `started`.
pub async fn handle(
    generation: Arc<Generation>,
    req: http::Request<Incoming>,
    conn: Arc<ConnInfo>,
    started: Instant,
) -> Response<ProxyBody> {
    let rid = request_id(req.headers());
    // request_id only returns visible ASCII, so this never falls back.
    let rid_text = rid.to_str().unwrap_or("-");
    // For the access log and the audit trail only, when on: `forward` consumes the request.
    let logged = (generation.audit.is_some()
        || tracing::enabled!(target: "access", tracing::Level::INFO))
    .then(|| (req.method().clone(), req.uri().clone()));
    let call = logged.as_ref().map(|(method, uri)| Call {
        method,
        uri,
        id: rid_text,
        conn: &conn,
    });
    let mut pending = Pending {
        outcome: Outcome::default(),
        audit: generation.audit.as_ref().zip(call),
    };
    let answer = forward(&generation, req, &conn, &rid, started, &mut pending.outcome).await;
    let (outcome, audit) = pending.settle();
    let answer = match audit {
        Some((audit, call)) => audit.record(answer, &outcome, call).await,
        None => answer,
    };
    let mut resp = match answer {
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
    let status = resp.status().as_u16();
    match outcome.app {
        Some(app) => {
            app.metrics.count_request(outcome.route, status);
            if let Some(d) = outcome.upstream {
                app.metrics.upstream_latency.observe(d.as_secs_f64());
            }
        }
        None => generation.metrics.count_unrouted(status),
    }
    if let Some((method, uri)) =
        logged.filter(|_| tracing::enabled!(target: "access", tracing::Level::INFO))
    {
        tracing::info!(
            target: "access",
            method = method.as_str(),
            path = uri.path(),
            app = outcome.app.map_or("-", |a| &*a.name),
            route = outcome.route.map_or("denied", RouteClass::as_str),
            status,
            upstream_ms = outcome.upstream.map_or(0, |d| d.as_millis() as u64),
            total_ms = started.elapsed().as_millis() as u64,
            request_id = rid_text,
            cert = outcome.cert.unwrap_or("-"),
            caller = outcome.caller.map_or(conn.name(), String::as_str),
            "request"
        );
    }
    resp
}

/// A request's outcome while Amity may have it. When the caller leaves (hyper then drops the
/// request's future), dropping this writes the audit record of a call already sent.
struct Pending<'a, 'g> {
    outcome: Outcome<'g>,
    audit: Option<(&'g Audit, Call<'a>)>,
}

impl<'a, 'g> Pending<'a, 'g> {
    /// The outcome, for the answer to be recorded as usual.
    fn settle(mut self) -> (Outcome<'g>, Option<(&'g Audit, Call<'a>)>) {
        (std::mem::take(&mut self.outcome), self.audit.take())
    }
}

impl Drop for Pending<'_, '_> {
    fn drop(&mut self) {
        if let Some((audit, call)) = self.audit.take().filter(|_| self.outcome.sent) {
            audit.record_caller_gone(&self.outcome, call);
        }
    }
}

/// The request's phases, in order; the first refusal ends it.
async fn forward<'g>(
    g: &'g Generation,
    mut req: http::Request<Incoming>,
    conn: &ConnInfo,
    rid: &HeaderValue,
    started: Instant,
    outcome: &mut Outcome<'g>,
) -> Result<Response<ProxyBody>, Reject> {
    let app = select(g, conn, req.uri_mut())?;
    outcome.app = Some(app);
    let route = app
        .policy
        .classify(req.method(), req.uri(), req.headers())?;
    outcome.route = Some(route);
    let admitted = g.admission.admit(conn, &app.name, route)?;
    outcome.caller = admitted.identity;
    let (mut parts, body) = req.into_parts();
    let (body, sent) = read_body(g, &parts.headers, body, started).await?;
    check_user_id(g, &parts, &body, &admitted, outcome)?;
    rewrite_headers(&mut parts.headers, rid);
    app.secrets.inject(route, &mut parts.headers)?;
    let out = upstream_request(app, parts, body)?;
    let _slot = bound_in_flight(g)?;
    if let Some(refusal) = g.audit.as_ref().and_then(Audit::refuses) {
        return Err(refusal);
    }
    let resp = send(g, app, &out, sent, outcome).await?;
    Ok(respond(resp))
}

/// Check userId: for a token call that is audited or whose caller may mint only for some
/// userIds, the userId as Amity reads it (v3: the query; v4: the JSON body), refused when
/// ambiguous or not granted.
fn check_user_id(
    g: &Generation,
    parts: &Parts,
    body: &Bytes,
    admitted: &Admitted<'_>,
    outcome: &mut Outcome<'_>,
) -> Result<(), Reject> {
    if outcome.route != Some(RouteClass::AuthToken)
        || (admitted.user_ids.is_none() && g.audit.is_none())
    {
        return Ok(());
    }
    let query = user_id::from_query(parts.uri.query());
    let read = if parts.method == http::Method::GET {
        match body.is_empty() {
            true => query,
            false => Err(UserIdError::BodyOnV3),
        }
    } else {
        match query {
            Ok(None) => user_id::from_json_body(&parts.headers, body),
            Ok(Some(_)) => Err(UserIdError::QueryOnV4),
            Err(e) => Err(e),
        }
    };
    let user_id = read.map_err(|e| Reject::UserIdAmbiguous {
        error: e.to_string(),
    })?;
    outcome.user_id = user_id;
    let (Some(patterns), Some(caller)) = (admitted.user_ids, admitted.identity) else {
        return Ok(());
    };
    match &outcome.user_id {
        None => Err(Reject::UserIdMissing {
            caller: caller.clone(),
        }),
        Some(u) if !patterns.iter().any(|p| p.matches(u)) => Err(Reject::UserIdDenied {
            caller: caller.clone(),
            user_id: u.clone(),
        }),
        Some(_) => Ok(()),
    }
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
fn upstream_request(app: &App, parts: Parts, body: Bytes) -> Result<Outgoing, Reject> {
    let root = PathAndQuery::from_static("/");
    let path = parts.uri.path_and_query().unwrap_or(&root);
    Ok(Outgoing {
        method: parts.method,
        path_and_query: upstream_path(app.path_prefix(), path).map_err(|e| Reject::BadPath {
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

/// Send: to the app's upstream (see [`App::send`]), within `timeouts.response` counted from
/// `sent` for the whole wait, the retry after a TLS failure included.
async fn send<'g>(
    g: &Generation,
    app: &'g App,
    out: &Outgoing,
    sent: Instant,
    outcome: &mut Outcome<'g>,
) -> Result<Response<FromUpstream>, Reject> {
    let deadline = sent + g.response_timeout;
    outcome.sent = true;
    // Boxed: futures nest by value, and hyper moves the whole request future (twice) into
    // its connection; inline, the upstream exchange would make every request future large.
    let sending = Box::pin(app.send(out));
    let result = tokio::time::timeout_at(deadline.into(), sending).await.ok();
    outcome.upstream = Some(sent.elapsed());
    let (resp, cert) = result.unwrap_or_else(|| {
        let e = UpstreamError::ResponseTimeout {
            ms: g.response_timeout.as_millis() as u64,
        };
        // A timeout leaves unknown what the upstream did: nothing is sent again after it.
        let e = Unanswered {
            error: e,
            seen: Seen::Maybe,
        };
        Err(upstream_reject(&UpstreamFailure::Upstream(e), None))
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
