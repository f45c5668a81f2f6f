//! One Amity app as a generation serves it: its certificates and their pools, which one is
//! presented, its allow-list and secrets. Nothing of one app is used for another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::client_cert::{ClientCert, HandshakeResult};
use super::failover::Failover;
use super::policy::Policy;
use super::secrets::Secrets;
use crate::data::tls::TlsError;
use crate::data::upstream::Upstream;
use crate::model::config::{CallerSecrets, CertRejectedAnswers, LoadedApp, TimeoutsConfig};
use crate::model::pki::{self, CertState};
use crate::telemetry::metrics::{AppMetrics, CertLabels, Metrics};

/// One app of a generation.
pub struct App {
    /// In `/apps/<name>/`, metrics and logs.
    pub name: Arc<str>,
    /// Configured certificates, in config order.
    pub identities: Vec<ClientCert>,
    /// Used only when no certificate is configured (an app without mTLS certificates).
    pub(super) anonymous: Option<Upstream>,
    /// Which of `identities` is presented first.
    pub(super) failover: Failover,
    /// `upstream.cert_rejected_answers`.
    pub(super) cert_refusals: CertRejectedAnswers,
    /// The allow-list.
    pub policy: Policy,
    /// The server key and admin token the proxy adds.
    pub(super) secrets: Secrets,
    path_prefix: String,
    /// The upstream's base URL, for people.
    upstream_base: String,
    pub(super) metrics: AppMetrics,
    all_metrics: Arc<Metrics>,
    /// Set once another generation serves (see [`App::retire`]).
    retired: AtomicBool,
}

impl App {
    /// Builds an app: a fresh TLS config and pool per certificate, so nothing (no TLS
    /// session, no pooled connection) carries over from the previous generation.
    pub(super) fn build(
        a: &LoadedApp,
        timeouts: &TimeoutsConfig,
        caller_secrets: CallerSecrets,
        all_metrics: &Arc<Metrics>,
        workers: usize,
    ) -> Result<Self, TlsError> {
        let metrics = all_metrics.app(a.name());
        let upstream = |cert| {
            Upstream::new(
                a.upstream.clone(),
                &a.upstream_config,
                &a.extra_roots,
                cert,
                timeouts,
                metrics.clone(),
                workers,
            )
        };
        let identities = a
            .certs
            .iter()
            .map(|c| Ok(ClientCert::new(c, upstream(Some(c))?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        let anonymous = if identities.is_empty() {
            Some(upstream(None)?)
        } else {
            None
        };
        Ok(Self {
            name: Arc::from(a.name()),
            failover: Failover::new(
                &identities,
                a.config.settings.active.as_deref(),
                a.config.settings.failover_after,
                pki::now_unix(),
            ),
            identities,
            anonymous,
            cert_refusals: a.upstream_config.cert_rejected_answers.clone(),
            policy: Policy::new(&a.config.settings.routes, a.admin_token.is_some()),
            secrets: Secrets::new(a, caller_secrets),
            path_prefix: a.upstream.path_prefix.clone(),
            upstream_base: a.upstream.base.clone(),
            metrics,
            all_metrics: all_metrics.clone(),
            retired: AtomicBool::new(false),
        })
    }

    /// The labels of this app's certificate series.
    pub(super) fn cert_labels(&self) -> impl Iterator<Item = CertLabels> + '_ {
        self.identities.iter().map(|i| i.labels(&self.metrics.app))
    }

    /// Sets `cert_expiry` for this app's certificates and `cert_active`; called, with
    /// `Metrics::cert_series` held, as its generation is published.
    pub(super) fn publish_metrics(&self) {
        for i in &self.identities {
            self.all_metrics
                .cert_expiry
                .get_or_create(&i.labels(&self.metrics.app))
                .set(i.info.not_after);
        }
        self.set_active();
    }

    /// Sets `cert_active` to the certificate presented first now, as `/certs` names it (also
    /// called on each scrape, so an expiry between reloads shows: the other one then serves,
    /// and on a failover). A generation no longer serving leaves the series alone.
    pub fn publish_active(&self) {
        let _series = self.all_metrics.cert_series.lock();
        if !self.retired.load(Ordering::Relaxed) {
            self.set_active();
        }
    }

    /// Marks the app's generation replaced: it writes no certificate series from then on.
    /// Called with `Metrics::cert_series` held.
    pub(super) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Each series is set in place, so that a scrape never sees none.
    fn set_active(&self) {
        let presented = self
            .failover
            .usable(&self.identities, pki::now_unix())
            .next()
            .map(|(n, _)| n);
        for (n, i) in self.identities.iter().enumerate() {
            self.all_metrics
                .cert_active
                .get_or_create(&i.labels(&self.metrics.app))
                .set(i64::from(presented == Some(n)));
        }
    }

    /// Requests sent upstream and upstream handshakes so far.
    pub fn upstream_counts(&self) -> (u64, u64) {
        (
            self.metrics.upstream_requests.get(),
            self.metrics.handshakes.get(),
        )
    }

    /// The upstream's base URL.
    pub fn upstream_base(&self) -> &str {
        &self.upstream_base
    }

    /// Path prefix of the upstream base URL.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The identity presented first now, if any is usable.
    pub fn active(&self, now: i64) -> Option<&ClientCert> {
        self.failover
            .usable(&self.identities, now)
            .next()
            .map(|(_, i)| i)
    }

    /// Whether the app can be served: `Ok(cert name)` or `Err(reason)`.
    pub(super) fn readiness(&self, now: i64) -> Result<String, String> {
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

    /// Per-certificate state, as `/certs` and the status page show it.
    pub fn cert_report(&self, now: i64) -> Vec<CertRow> {
        let active = self.active(now).map(|i| i.name.as_str());
        self.identities
            .iter()
            .map(|i| CertRow {
                app: self.name.to_string(),
                last_handshake: i.last_result(),
                name: i.name.clone(),
                not_after: pki::rfc3339(i.info.not_after),
                not_before: pki::rfc3339(i.info.not_before),
                role: match i.info.state(now) {
                    _ if Some(i.name.as_str()) == active => CertRole::Active,
                    CertState::Valid | CertState::Expiring { .. } => CertRole::Standby,
                    CertState::Expired => CertRole::Expired,
                    CertState::NotYetValid => CertRole::NotYetValid,
                },
                seconds_left: i.info.not_after - now,
                serial: i.info.serial.clone(),
                sha256: i.info.sha256.clone(),
                subject: i.info.subject.clone(),
            })
            .collect()
    }
}

/// One certificate as `/certs` reports it. The fields are in the order `/certs` has always
/// listed them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRow {
    /// The app's name.
    pub app: String,
    /// The last time it was presented, if it was.
    pub last_handshake: Option<HandshakeResult>,
    /// Console name.
    pub name: String,
    /// RFC 3339.
    pub not_after: String,
    /// RFC 3339.
    pub not_before: String,
    /// What the app does with it now.
    pub role: CertRole,
    /// Seconds until it expires (negative once expired).
    pub seconds_left: i64,
    /// Serial, upper-case hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex.
    pub sha256: String,
    /// Full subject DN.
    pub subject: String,
}

/// A certificate's part in its app at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertRole {
    /// Presented first.
    Active,
    /// Usable, but not presented first.
    Standby,
    /// Past its not-after.
    Expired,
    /// Before its not-before.
    NotYetValid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cert_row_serializes_as_certs_has_always_served_it() {
        let row = CertRow {
            app: "eu".into(),
            last_handshake: Some(HandshakeResult {
                accepted: false,
                at: 5,
                detail: "refused".into(),
            }),
            name: "eu-b".into(),
            not_after: "2027-01-01T00:00:00Z".into(),
            not_before: "2026-01-01T00:00:00Z".into(),
            role: CertRole::NotYetValid,
            seconds_left: -1,
            serial: "0A1B".into(),
            sha256: "AB:CD".into(),
            subject: "CN=eu-b".into(),
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"app":"eu","last_handshake":{"accepted":false,"at":5,"detail":"refused"},"name":"eu-b","not_after":"2027-01-01T00:00:00Z","not_before":"2026-01-01T00:00:00Z","role":"not_yet_valid","seconds_left":-1,"serial":"0A1B","sha256":"AB:CD","subject":"CN=eu-b"}"#
        );
        let roles = [CertRole::Active, CertRole::Standby, CertRole::Expired]
            .map(|r| serde_json::to_string(&r).unwrap());
        assert_eq!(roles, [r#""active""#, r#""standby""#, r#""expired""#]);
    }
}
