//! `check --live`: proves that the upstream accepts a certificate.

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};

use super::{upstream_path, Outgoing, Upstream, UpstreamError};
use crate::model::config::{LoadedApp, LoadedCert, Validated};
use crate::telemetry::metrics::Metrics;

/// `check --live`: one request over a new mTLS connection presenting `cert`.
/// Any HTTP answer means the handshake was accepted.
pub async fn probe(
    v: &Validated,
    app: &LoadedApp,
    cert: &LoadedCert,
) -> Result<String, UpstreamError> {
    let upstream = Upstream::new(
        app.upstream.clone(),
        &app.config.upstream,
        &app.extra_roots,
        Some(cert),
        &v.config.timeouts,
        Metrics::new().app(app.name()),
        1,
    )
    .map_err(|e| UpstreamError::Tls {
        reason: e.to_string(),
    })?;
    let out = Outgoing {
        method: Method::GET,
        path_and_query: upstream_path(&app.upstream.path_prefix, &PathAndQuery::from_static("/"))?,
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let t = &v.config.timeouts;
    let resp = tokio::time::timeout(t.response(), upstream.send(&out))
        .await
        .map_err(|_| UpstreamError::ResponseTimeout { ms: t.response_ms })??;
    Ok(format!(
        "accepted by {}:{} (serial {}; the upstream answered HTTP {} over {:?})",
        app.upstream.host,
        app.upstream.port,
        cert.info.serial,
        resp.status().as_u16(),
        resp.version()
    ))
}
