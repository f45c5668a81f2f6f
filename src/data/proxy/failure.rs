//! Why an exchange with the upstream failed: connecting, TLS or HTTP (the upstream client's
//! error), or an answer by which the upstream refused our certificate.

use crate::data::upstream::UpstreamError;

/// Why an exchange with the upstream failed.
#[derive(Debug)]
pub(super) enum UpstreamFailure {
    /// Connecting, TLS or HTTP failed.
    Upstream(UpstreamError),
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
    /// A TLS failure, before the upstream read the request.
    pub(super) fn is_tls_failure(&self) -> bool {
        matches!(self, Self::Upstream(e) if e.is_tls_failure())
    }

    /// A TLS failure that another connection might not meet; the upstream's own certificate
    /// will not verify the next time either.
    pub(super) fn another_connection_may_help(&self) -> bool {
        self.is_tls_failure()
            && !matches!(
                self,
                Self::Upstream(UpstreamError::ServerCertUntrusted { .. })
            )
    }

    /// The upstream refused our client certificate, by a TLS alert or in HTTP.
    pub(super) fn is_cert_rejection(&self) -> bool {
        matches!(
            self,
            Self::Upstream(UpstreamError::ClientCertRejected { .. }) | Self::CertRefused { .. }
        )
    }
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(e) => e.fmt(f),
            Self::CertRefused { status, says } => write!(
                f,
                "upstream refused our client certificate (HTTP {status} answer saying {says:?})"
            ),
        }
    }
}
