//! A configured client certificate, ready to present: its own TLS config and connection pool,
//! and the verdict of the last time it was presented.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use super::failure::UpstreamFailure;
use crate::data::upstream::Upstream;
use crate::model::config::LoadedCert;
use crate::model::pki::{Candidate, CertInfo};
use crate::telemetry::metrics::{AppName, CertLabels};

/// What happened the last time a certificate was presented. The fields are in the order
/// `/certs` has always listed them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandshakeResult {
    /// Whether the upstream accepted the certificate.
    pub accepted: bool,
    /// Unix time.
    pub at: i64,
    /// `accepted`, or the failure.
    pub detail: String,
}

/// A configured client certificate with its own TLS config and connection pool.
pub struct ClientCert {
    /// Console name.
    pub name: String,
    /// What the certificate says.
    pub info: CertInfo,
    /// [`LoadedCert::chain_sha256`]: whether a reload changes the chain presented.
    pub chain_sha256: Vec<u8>,
    /// Presents this certificate.
    pub(super) upstream: Upstream,
    last: Mutex<Option<HandshakeResult>>,
    /// When `last` last recorded an acceptance (unix seconds; `i64::MIN` after a failure).
    accepted_at: AtomicI64,
}

impl ClientCert {
    /// `cert`, presented through `upstream`.
    pub(super) fn new(cert: &LoadedCert, upstream: Upstream) -> Self {
        Self {
            name: cert.name.clone(),
            info: cert.info.clone(),
            chain_sha256: cert.chain_sha256(),
            upstream,
            last: Mutex::new(None),
            accepted_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Keeps the verdict of an exchange that began at `now` (Unix seconds).
    pub(super) fn record(&self, result: Result<(), &UpstreamFailure>, now: i64) {
        let (accepted, detail) = match result {
            // Every worker records every success: once a second is enough, and shares no lock.
            Ok(()) if self.accepted_at.load(Ordering::Relaxed) == now => return,
            Ok(()) => (true, "accepted".to_string()),
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

    /// Its labels in the certificate metrics.
    pub(super) fn labels(&self, app: &AppName) -> CertLabels {
        CertLabels {
            app: app.clone(),
            name: self.name.clone(),
            serial: self.info.serial.clone(),
        }
    }
}

impl Candidate for ClientCert {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> &CertInfo {
        &self.info
    }
}
