//! Why an exchange with the upstream failed: connecting, TLS or HTTP (the upstream client's
//! error), or an answer by which the upstream refused our certificate.

use crate::data::upstream::{decide, Failure, Retry, Unanswered, UpstreamError};

/// Why an exchange with the upstream failed.
#[derive(Debug)]
pub(super) enum UpstreamFailure {
    /// No answer: connecting, TLS or HTTP failed (and whether the upstream may have seen it).
    Upstream(Unanswered),
    /// The upstream answered that it refused our client certificate (a rule of
    /// `upstream.cert_rejected_answers` matched).
    CertRefused {
        /// The answer's status.
        status: u16,
        /// The rule's text, which the answer held.
        says: String,
    },
}

impl UpstreamFailure {
    /// A TLS failure.
    pub(super) fn is_tls_failure(&self) -> bool {
        matches!(self, Self::Upstream(u) if u.error.is_tls_failure())
    }

    /// The upstream refused our client certificate, by a TLS alert or in HTTP.
    pub(super) fn is_cert_rejection(&self) -> bool {
        matches!(
            self,
            Self::Upstream(Unanswered {
                error: UpstreamError::ClientCertRejected { .. },
                ..
            }) | Self::CertRefused { .. }
        )
    }

    /// What the retry policy (`data/upstream/retry.rs`) decides for it.
    pub(super) fn retry(&self, other_cert: bool) -> Retry {
        let failure = match self {
            Self::Upstream(u) => Failure::Unanswered(u),
            Self::CertRefused { .. } => Failure::RefusalPage,
        };
        decide(failure, other_cert)
    }
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(u) => u.error.fmt(f),
            Self::CertRefused { status, says } => write!(
                f,
                "upstream refused our client certificate (HTTP {status} answer saying {says:?})"
            ),
        }
    }
}
