//! The audit trail as requests write it: one record per auth-token mint and admin call,
//! allowed or refused. With `audit.required`, a call whose record cannot be written is
//! refused: before it is sent when the trail is known to be failing, and after, by holding
//! back the answer (the token never reaches the caller).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::Response;

use super::body::ProxyBody;
use super::call::{Call, Outcome};
use super::reject::Reject;
use crate::model::config::{AuditPath, RouteClass, Validated};
use crate::telemetry::audit::{now_rfc3339, AuditError, AuditRecord, AuditSink, Decision};
use crate::telemetry::metrics::Metrics;

/// The audit trail of one generation.
pub struct Audit {
    sink: AuditSink,
    required: bool,
    /// `audit.write_timeout_ms`.
    write_timeout: Duration,
    path: AuditPath,
}

impl Audit {
    /// The trail `v` configures, if any: `previous`'s sink when the path is the same (then
    /// reopened, so that a renamed file is let go), else a new one.
    pub fn open(
        v: &Validated,
        previous: Option<&Audit>,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Self>, AuditError> {
        let (Some(path), Some(config)) = (&v.audit, &v.config.audit) else {
            return Ok(None);
        };
        let sink = match previous.filter(|p| &p.path == path) {
            Some(p) => {
                p.sink.reopen()?;
                p.sink.clone()
            }
            None => AuditSink::open(path.clone(), metrics.audit_counters())?,
        };
        Ok(Some(Self {
            sink,
            required: config.required,
            write_timeout: Duration::from_millis(config.write_timeout_ms),
            path: path.clone(),
        }))
    }

    /// Writes every record queued, then stops the writer; at shutdown, once requests are done.
    /// A write that hangs past `audit.write_timeout_ms` is given up on, and said. Blocks.
    pub fn close(&self) {
        if !self.sink.close(self.write_timeout) {
            tracing::error!(target_file = %self.path, "the audit trail's last write did not finish within audit.write_timeout_ms; records still queued are lost");
        }
    }

    /// Why the proxy is not ready: the trail is required and failing.
    pub fn unready(&self) -> Option<String> {
        self.failing().then(|| {
            format!(
                "the audit trail ({}) cannot be written (or a write has hung for over audit.write_timeout_ms) and audit.required is set",
                self.path
            )
        })
    }

    /// The refusal of a call while a required trail is failing.
    pub(super) fn refuses(&self) -> Option<Reject> {
        self.failing().then(|| self.unavailable())
    }

    fn failing(&self) -> bool {
        self.required && !self.sink.healthy(self.write_timeout)
    }

    fn unavailable(&self) -> Reject {
        Reject::AuditUnavailable {
            path: self.path.to_string(),
        }
    }

    /// Writes the record of an auth-token or admin call (others pass untouched). With
    /// `required`, waits for the write, and an answer whose record could not be written
    /// becomes a refusal.
    pub(super) async fn record(
        &self,
        answer: Result<Response<ProxyBody>, Reject>,
        outcome: &Outcome<'_>,
        req: Call<'_>,
    ) -> Result<Response<ProxyBody>, Reject> {
        // A token call refused before it was classified is still a token call.
        let route = outcome.route.or_else(|| {
            let refusal = answer.as_ref().err()?;
            refusal.names_token_call().then_some(RouteClass::AuthToken)
        });
        let ended = answer
            .as_ref()
            .map(|r| r.status().as_u16())
            .map_err(Reject::reason);
        let Some(first) = line(route, outcome, &req, ended, None) else {
            return answer;
        };
        let receipt = self.sink.write(first);
        if !self.required {
            return answer;
        }
        let written = tokio::time::timeout(self.write_timeout, receipt).await;
        if matches!(written, Ok(Ok(()))) || answer.is_err() {
            return answer;
        }
        // The `allowed` record may still land (a slow write) or be lost (a failed one): a
        // second says that the answer was held back, for a trail that comes back.
        let refusal = self.unavailable();
        if let Some(line) = line(route, outcome, &req, ended, Some(Decision::Withheld)) {
            drop(self.sink.write(line));
        }
        Err(refusal)
    }

    /// Writes the record of a call whose caller left while Amity had it, without waiting:
    /// the request is gone, and with it any answer to hold back.
    pub(super) fn record_caller_gone(&self, outcome: &Outcome<'_>, req: Call<'_>) {
        if let Some(line) = line(outcome.route, outcome, &req, Err("caller_gone"), None) {
            // Counted by the writer if it fails; nobody is left to tell.
            drop(self.sink.write(line));
        }
    }
}

/// The record's line, for an auth-token or admin call that `ended` with a status from
/// Amity, or a reason; `None` for other calls. The decision is `decided`, else whether the
/// call was sent.
fn line(
    route: Option<RouteClass>,
    outcome: &Outcome<'_>,
    req: &Call<'_>,
    ended: Result<u16, &'static str>,
    decided: Option<Decision>,
) -> Option<Vec<u8>> {
    let (route, app) = (route?, outcome.app?);
    if route == RouteClass::Extra {
        return None;
    }
    let admin = route == RouteClass::Admin;
    let caller: Cow<'_, str> = match (outcome.caller, &req.conn.caller) {
        (Some(id), _) => id.into(),
        (None, Some(_)) => req.conn.name().into(),
        (None, None) => req.conn.peer.to_string().into(),
    };
    let record = AuditRecord {
        time: now_rfc3339(),
        app: &app.name,
        caller: &caller,
        route: route.as_str(),
        user_id: outcome.user_id.as_deref(),
        method: admin.then(|| req.method.as_str()),
        path: admin.then(|| req.uri.path()),
        decision: decided.unwrap_or(match outcome.sent {
            true => Decision::Allowed,
            false => Decision::Refused,
        }),
        reason: match decided {
            Some(Decision::Withheld) => Some("audit_unavailable"),
            _ => ended.err(),
        },
        upstream_status: ended.ok(),
        latency_ms: outcome.upstream.map(|d| d.as_millis() as u64),
        cert: outcome.cert,
        request_id: req.id,
    };
    Some(record.to_line())
}
