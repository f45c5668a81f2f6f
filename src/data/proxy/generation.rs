//! Everything one configuration serves with, swapped whole on reload. Building one is pure:
//! only [`super::ProxyState::publish`] makes it visible, in the metrics too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;

use super::caller::Admission;
use super::failover::Failover;
use super::identity::Identity;
use super::policy::Policy;
use super::secrets::Secrets;
use crate::data::tls::{self, TlsError};
use crate::data::upstream::Upstream;
use crate::model::config::{CertRejectedAnswer, LimitsConfig, Validated};
use crate::model::pki::{self, CertState};
use crate::telemetry::metrics::Metrics;

/// Everything one generation serves with; swapped whole on reload.
pub struct Generation {
    /// Configured certificates, in config order.
    pub identities: Vec<Identity>,
    /// Used only when no certificate is configured (an app without mTLS certificates).
    pub(super) anonymous: Option<Upstream>,
    /// Which of `identities` is presented first.
    pub(super) failover: Failover,
    /// `upstream.cert_rejected_answers`.
    pub(super) cert_refusals: Vec<CertRejectedAnswer>,
    /// The allow-list.
    pub policy: Policy,
    /// Size limits.
    pub limits: LimitsConfig,
    path_prefix: String,
    /// The upstream's base URL, for people.
    upstream_base: String,
    pub(super) metrics: Arc<Metrics>,
    /// The backend-facing TLS acceptor, with `inbound_tls`.
    pub inbound: Option<TlsAcceptor>,
    /// `callers` and the rate limit.
    pub(super) admission: Admission,
    /// The server key and admin token the proxy adds.
    pub(super) secrets: Secrets,
    /// Requests of this generation waiting for the upstream, at most `limits.max_in_flight`.
    in_flight: AtomicUsize,
    pub(super) body_read_timeout: Duration,
    pub(super) response_timeout: Duration,
}

impl Generation {
    /// Builds a generation: a fresh TLS config and pool per certificate, so nothing
    /// (no TLS session, no pooled connection) carries over from the previous one. Changes
    /// nothing that serves: [`super::ProxyState::publish`] swaps it in.
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
            .map(|c| Ok(Identity::new(c, upstream(Some(c))?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        let anonymous = if identities.is_empty() {
            Some(upstream(None)?)
        } else {
            None
        };
        Ok(Self {
            failover: Failover::new(
                &identities,
                v.config.active.as_deref(),
                v.config.failover_after,
                pki::now_unix(),
            ),
            identities,
            anonymous,
            cert_refusals: v.config.upstream.cert_rejected_answers.0.clone(),
            policy: Policy::new(&v.config.routes, v.admin_token.is_some()),
            limits: v.config.limits.clone(),
            path_prefix: v.upstream.path_prefix.clone(),
            upstream_base: v.upstream.base.clone(),
            metrics,
            inbound: v.inbound.as_ref().map(tls::inbound_acceptor).transpose()?,
            admission: Admission::new(v),
            secrets: Secrets::new(v),
            in_flight: AtomicUsize::new(0),
            body_read_timeout: v.config.timeouts.header_read(),
            response_timeout: v.config.timeouts.response(),
        })
    }

    /// Sets the certificate metrics (`cert_expiry`, `cert_active`) from this generation's
    /// certificates; called as it is published.
    pub(super) fn publish_metrics(&self) {
        // The series of certificates the previous generation had go.
        self.metrics.cert_expiry.clear();
        self.metrics.cert_active.clear();
        for i in &self.identities {
            self.metrics
                .cert_expiry
                .get_or_create(&i.labels())
                .set(i.info.not_after);
        }
        self.publish_active();
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

    /// The upstream's base URL.
    pub fn upstream_base(&self) -> &str {
        &self.upstream_base
    }

    /// Path prefix of the upstream base URL.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// Sets `cert_active` to the certificate presented first now, as `/certs` names it (also
    /// called on each scrape, so an expiry between reloads shows: the other one then serves).
    /// Each series is set in place, so that a scrape never sees none.
    pub fn publish_active(&self) {
        let presented = self
            .failover
            .usable(&self.identities, pki::now_unix())
            .next();
        let presented = presented.map(|(n, _)| n);
        for (n, i) in self.identities.iter().enumerate() {
            self.metrics
                .cert_active
                .get_or_create(&i.labels())
                .set(i64::from(presented == Some(n)));
        }
    }

    /// The identity presented first now, if any is usable.
    pub fn active(&self, now: i64) -> Option<&Identity> {
        self.failover
            .usable(&self.identities, now)
            .next()
            .map(|(_, i)| i)
    }

    /// Whether the proxy can serve: `Ok(cert name)` or `Err(reason)`.
    pub fn readiness(&self, now: i64) -> Result<String, String> {
        match self.active(now) {
            Some(i) => Ok(i.name.clone()),
            None if self.identities.is_empty() => Err("no client certificate is configured".into()),
            None => Err(self.unusable_reason(now)),
        }
    }

    /// Why no certificate is usable at `now`: each one's state.
    pub(super) fn unusable_reason(&self, now: i64) -> String {
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
}

/// One request counted in flight; see [`Generation`]'s `in_flight`.
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
