//! A live handshake that proves whether the upstream accepts a certificate: `check --live`, and
//! a reload before a new or changed certificate goes live. The refusal rules are the proxy's
//! own (`upstream.cert_rejected_answers` and the TLS alerts that refuse a certificate).

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};

use super::{upstream_path, Outgoing, Upstream, UpstreamError};
use crate::model::config::{LoadedApp, LoadedCert, TimeoutsConfig, CERT_REJECTED_BODY_BYTES};
use crate::telemetry::metrics::Metrics;

/// What one live handshake proved about a certificate.
#[derive(Debug)]
pub enum Proof {
    /// The upstream took it: it answered, and not with a refusal.
    Accepted(String),
    /// The upstream refused it: by a TLS alert, or by an answer a refusal rule recognises.
    Refused(String),
    /// Nothing was proved: the upstream could not be reached, or failed in another way.
    Unproven(UpstreamError),
}

impl Proof {
    /// The upstream took the certificate.
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Accepted(_))
    }
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted(how) => write!(f, "accepted by {how}"),
            Self::Refused(how) => write!(f, "refused: {how}"),
            Self::Unproven(e) => write!(f, "not proved: {e}"),
        }
    }
}

/// One request over a new mTLS connection presenting `cert`, bounded by `timeouts`' connect,
/// handshake and response bounds.
pub async fn probe(app: &LoadedApp, cert: &LoadedCert, timeouts: &TimeoutsConfig) -> Proof {
    let upstream = match Upstream::new(
        app.upstream.clone(),
        &app.upstream_config,
        &app.extra_roots,
        Some(cert),
        timeouts,
        Metrics::new().app(app.name()),
        1,
    ) {
        Ok(u) => u,
        Err(e) => {
            return Proof::Unproven(UpstreamError::Tls {
                reason: e.to_string(),
            })
        }
    };
    let path = match upstream_path(&app.upstream.path_prefix, &PathAndQuery::from_static("/")) {
        Ok(p) => p,
        Err(e) => return Proof::Unproven(e),
    };
    let out = Outgoing {
        method: Method::GET,
        path_and_query: path,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let exchange = async {
        let resp = upstream.send(&out).await.map_err(|u| u.error)?;
        let (parts, body) = resp.into_parts();
        let start = body
            .read_start(CERT_REJECTED_BODY_BYTES)
            .await
            .map_err(|e| UpstreamError::Protocol {
                reason: format!("reading the response body: {e}"),
            })?;
        Ok::<_, UpstreamError>((parts, start.data))
    };
    let (parts, start) = match tokio::time::timeout(timeouts.response(), exchange).await {
        Err(_) => {
            return Proof::Unproven(UpstreamError::ResponseTimeout {
                ms: timeouts.response_ms,
            })
        }
        Ok(Err(e @ UpstreamError::ClientCertRejected { .. })) => {
            return Proof::Refused(e.to_string())
        }
        Ok(Err(e)) => return Proof::Unproven(e),
        Ok(Ok(answer)) => answer,
    };
    let status = parts.status.as_u16();
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    let at = format!("{}:{}", app.upstream.host, app.upstream.port);
    match app.upstream_config.cert_rejected_answers.refusal(
        status,
        content_type.map(|v| v.as_bytes()),
        &start,
    ) {
        Some(rule) => Proof::Refused(format!(
            "{at} answered HTTP {status} with its page {:?} (upstream.cert_rejected_answers)",
            rule.title_contains
        )),
        None => Proof::Accepted(format!(
            "{at} (serial {}; the upstream answered HTTP {status} over {:?})",
            cert.info.serial, parts.version
        )),
    }
}
