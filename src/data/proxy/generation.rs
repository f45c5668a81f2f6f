//! Everything one configuration serves with, swapped whole on reload: its apps and what they
//! share (callers, limits, the inbound TLS acceptor, the audit trail). Building one is pure:
//! only [`super::ProxyState::publish`] makes it visible, in the metrics too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use super::app::App;
use super::audit::Audit;
use super::caller::Admission;
use crate::data::tls::{self, TlsError};
use crate::model::config::{LimitsConfig, Validated};
use crate::telemetry::audit::AuditError;
use crate::telemetry::metrics::Metrics;

/// Why a generation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The audit file could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Everything one generation serves with; swapped whole on reload.
pub struct Generation {
    /// The apps, in config order.
    pub apps: Vec<App>,
    /// Size limits.
    pub limits: LimitsConfig,
    pub(super) metrics: Arc<Metrics>,
    /// The backend-facing TLS acceptor, with `inbound_tls`.
    pub inbound: Option<TlsAcceptor>,
    /// `callers` and the rate limit.
    pub(super) admission: Admission,
    /// The audit trail, with `audit`.
    pub audit: Option<Audit>,
    /// Requests waiting for the upstream, at most `limits.max_in_flight`: shared with the
    /// generations before, so that old and new together stay within the limit.
    in_flight: Arc<AtomicUsize>,
    pub(super) body_read_timeout: Duration,
    pub(super) response_timeout: Duration,
}

impl Generation {
    /// Builds a generation, each app with fresh TLS configs and pools. Changes nothing that
    /// serves ([`super::ProxyState::publish`] swaps it in), with one exception: the audit file
    /// is opened, or `previous`'s reopened (see [`Audit::open`]).
    pub fn build(
        v: &Validated,
        metrics: Arc<Metrics>,
        previous: Option<&Generation>,
    ) -> Result<Self, BuildError> {
        let previous_audit = previous.and_then(|p| p.audit.as_ref());
        let audit = Audit::open(v, previous_audit, &metrics)?;
        let workers = crate::data::workers::resolve(v.config.workers);
        let apps = v
            .apps
            .iter()
            .map(|a| {
                let secrets = v.config.caller_secrets;
                App::build(a, &v.config.timeouts, secrets, &metrics, workers)
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        Ok(Self {
            apps,
            limits: v.config.limits.clone(),
            metrics,
            inbound: v.inbound.as_ref().map(tls::inbound_acceptor).transpose()?,
            admission: Admission::new(v, previous.map(|p| &p.admission)),
            audit,
            in_flight: previous.map_or_else(Arc::default, |p| p.in_flight.clone()),
            body_read_timeout: v.config.timeouts.header_read(),
            response_timeout: v.config.timeouts.response(),
        })
    }

    /// Sets the certificate metrics (`cert_expiry`, `cert_active`) from this generation's
    /// apps, and removes those of `previous`'s certificates it does not have; called, with
    /// `Metrics::cert_series` held, as it is published. Series it keeps are set in place, so
    /// that a scrape never sees none.
    pub(super) fn publish_metrics(&self, previous: Option<&Generation>) {
        self.apps.iter().for_each(App::publish_metrics);
        let Some(previous) = previous else { return };
        previous.apps.iter().for_each(App::retire);
        let kept: std::collections::HashSet<_> =
            self.apps.iter().flat_map(App::cert_labels).collect();
        for gone in previous.apps.iter().flat_map(App::cert_labels) {
            if !kept.contains(&gone) {
                self.metrics.cert_expiry.remove(&gone);
                self.metrics.cert_active.remove(&gone);
            }
        }
    }

    /// Sets `cert_active` of every app (see [`App::publish_active`]).
    pub fn publish_active(&self) {
        self.apps.iter().for_each(App::publish_active);
    }

    /// `text` about `app`, prefixed with the app's name when there are several.
    pub fn about(&self, app: &App, text: String) -> String {
        match self.apps.len() {
            1 => text,
            _ => format!("{}: {text}", app.name),
        }
    }

    /// The app of that name.
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| &*a.name == name)
    }

    /// Counts a request in flight until the guard drops; `None` at the limit. A counter,
    /// not a semaphore: nothing waits, and a release takes no lock.
    pub(super) fn enter_in_flight(&self) -> Option<InFlight<'_>> {
        let max = self.limits.max_in_flight;
        self.in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(&self.in_flight))
    }

    /// Whether the proxy can serve, and why: every app has a usable certificate, and a
    /// required audit trail can be written. The one answer `/readyz`, the status page and the
    /// start's log give.
    pub fn readiness(&self, now: i64) -> Readiness {
        let apps: Vec<AppReadiness> = self
            .apps
            .iter()
            .map(|app| AppReadiness {
                app: app.name.to_string(),
                answer: app.readiness(now),
            })
            .collect();
        let mut ready = Vec::new();
        let mut not = Vec::new();
        for (app, a) in self.apps.iter().zip(&apps) {
            match &a.answer {
                Ok(cert) => ready.push(self.about(app, cert.clone())),
                Err(why) => not.push(self.about(app, why.clone())),
            }
        }
        not.extend(self.audit.as_ref().and_then(Audit::unready));
        let answer = match not.is_empty() {
            true => Ok(ready.join(", ")),
            false => Err(not.join("; ")),
        };
        Readiness { answer, apps }
    }
}

/// Whether a generation can serve: `Ok` names the certificates presented, `Err` says what is
/// not ready (each names its app when there are several); and the same per app.
#[derive(Debug)]
pub struct Readiness {
    /// The whole generation's answer.
    pub answer: Result<String, String>,
    /// Each app's, in config order.
    pub apps: Vec<AppReadiness>,
}

/// One app's part of [`Readiness`]: `Ok(certificate presented)` or `Err(why not)`.
#[derive(Debug)]
pub struct AppReadiness {
    /// The app's name.
    pub app: String,
    /// `Ok(certificate presented)` or `Err(why not)`.
    pub answer: Result<String, String>,
}

impl Readiness {
    /// `/readyz`'s body: `ready`, then `cert` or `reason`, for the generation and each app.
    pub fn to_json(&self) -> serde_json::Value {
        let answer = |ready: &Result<String, String>| match ready {
            Ok(cert) => serde_json::json!({"ready": true, "cert": cert}),
            Err(reason) => serde_json::json!({"ready": false, "reason": reason}),
        };
        let mut body = answer(&self.answer);
        body["apps"] = self
            .apps
            .iter()
            .map(|a| {
                let mut v = answer(&a.answer);
                v["app"] = a.app.clone().into();
                v
            })
            .collect();
        body
    }
}

/// One request counted in flight; see [`Generation`]'s `in_flight`.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
