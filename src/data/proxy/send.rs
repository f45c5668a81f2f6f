//! The exchange with the upstream: the certificate presented, the one retry after a TLS
//! failure, failover when the upstream refuses our certificate (by a TLS alert, or by an HTTP
//! answer that `upstream.cert_rejected_answers` recognises).

use http::Response;

use super::app::App;
use super::body::FromUpstream;
use super::failure::UpstreamFailure;
use super::reject::{upstream_reject, Reject};
use crate::data::upstream::{Outgoing, Retry, Upstream};
use crate::model::pki;

/// A response from the upstream, with the name of the certificate presented for it.
type Answered<'g> = (Response<FromUpstream>, Option<&'g str>);

impl App {
    /// Sends upstream with the active certificate; a failure is sent once more as the retry
    /// policy (`data/upstream/retry.rs`) decides: only a request the upstream cannot have
    /// acted on, with the other certificate when ours was refused and another is usable.
    pub async fn send(&self, out: &Outgoing) -> Result<Answered<'_>, Reject> {
        let Some(anonymous) = &self.anonymous else {
            return self.send_with_cert(out).await;
        };
        let mut result = self.exchange(anonymous, out).await;
        if result
            .as_ref()
            .is_err_and(|e| e.retry(false) == Retry::OnNewConnection)
        {
            result = self.exchange(anonymous, out).await;
        }
        result
            .map(|r| (r, None))
            .map_err(|e| upstream_reject(&e, None))
    }

    /// One exchange; an answer that `cert_refusals` recognises is an error.
    async fn exchange(
        &self,
        upstream: &Upstream,
        out: &Outgoing,
    ) -> Result<Response<FromUpstream>, UpstreamFailure> {
        let resp = upstream
            .send(out)
            .await
            .map_err(UpstreamFailure::Upstream)?;
        let status = resp.status().as_u16();
        // Only a status a rule names has its body read: a 200 goes on untouched.
        if !self.cert_refusals.names(status) {
            return Ok(resp.map(FromUpstream::new));
        }
        let (parts, body) = resp.into_parts();
        let (body, start) = FromUpstream::read_start(body).await?;
        let content_type = parts.headers.get(http::header::CONTENT_TYPE);
        match self
            .cert_refusals
            .refusal(status, content_type.map(|v| v.as_bytes()), &start)
        {
            Some(rule) => {
                self.metrics.handshake_failed("client_cert_rejected");
                Err(UpstreamFailure::CertRefused {
                    status,
                    says: rule.title_contains.clone(),
                })
            }
            None => Ok(Response::from_parts(parts, body)),
        }
    }

    async fn send_with_cert(&self, out: &Outgoing) -> Result<Answered<'_>, Reject> {
        let now = pki::now_unix();
        let mut usable = self.failover.usable(&self.identities, now);
        let Some((first_n, first)) = usable.next() else {
            return Err(Reject::NoUsableCert {
                why: self.unusable_reason(now),
            });
        };
        let result = self.exchange(&first.upstream, out).await;
        first.record(result.as_ref().map(|_| ()), now);
        let err = match result {
            Ok(r) => {
                self.failover.accepted(first_n);
                return Ok((r, Some(first.name.as_str())));
            }
            Err(e) => e,
        };
        let second = usable.next();
        let retry = match (err.retry(second.is_some()), second) {
            (Retry::WithOtherCert, Some((second_n, second))) => {
                self.metrics.failovers.inc();
                if crate::telemetry::logthrottle::allow("failover", "client_cert_rejected") {
                    tracing::warn!(rejected = %first.name, retry_with = %second.name, error = %err, "client certificate rejected; retrying with the other one");
                }
                self.count_rejection(first_n, second_n);
                second
            }
            (Retry::OnNewConnection, _) => {
                if crate::telemetry::logthrottle::allow("upstream_retry", "tls_failure") {
                    tracing::warn!(cert = %first.name, error = %err, "upstream TLS failed before the request was seen; retrying once on a new connection");
                }
                first
            }
            _ => return Err(upstream_reject(&err, Some(&first.name))),
        };
        let result = self.exchange(&retry.upstream, out).await;
        retry.record(result.as_ref().map(|_| ()), now);
        result
            .map(|r| (r, Some(retry.name.as_str())))
            .map_err(|e| upstream_reject(&e, Some(&retry.name)))
    }

    /// After `failover_after` consecutive rejections of the active certificate, switch to `to`.
    fn count_rejection(&self, from: usize, to: usize) {
        if let Some(n) = self.failover.rejected(from, to) {
            tracing::warn!(
                from = %self.identities[from].name,
                to = %self.identities[to].name,
                rejections = n,
                "switching client certificate until the next reload"
            );
            self.publish_active();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn cert_refusals_get_the_client_cert_rejected_error() {
        let e = UpstreamFailure::CertRefused {
            status: 400,
            says: "The SSL certificate error".into(),
        };
        assert!(e.is_cert_rejection() && !e.is_tls_failure());
        let r = upstream_reject(&e, Some("backend-a"));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(r.reason(), "client_cert_rejected");
        let message = r.message();
        assert!(message.contains("HTTP 400"), "{message}");
        assert!(message.contains("\"backend-a\" was presented"), "{message}");
    }
}
