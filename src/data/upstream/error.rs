//! Why an upstream call failed: the error type, and how hyper's, h2's, rustls' and the OS's
//! errors are classified into it (502 or 504, and the message).

use std::error::Error as StdError;

use rustls::AlertDescription;

use crate::model::config::{TimeoutsConfig, UpstreamTarget};

/// Why an upstream call failed; decides 502 versus 504 and the message.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing listens at the upstream address.
    #[error("upstream {addr} refused the connection")]
    Refused {
        /// host:port.
        addr: String,
    },
    /// The TCP connect took longer than `timeouts.connect_ms`.
    #[error("connecting to upstream {addr} timed out after {ms} ms")]
    ConnectTimeout {
        /// host:port.
        addr: String,
        /// The bound.
        ms: u64,
    },
    /// Connecting failed for another network reason.
    #[error("cannot connect to upstream {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// The OS reason.
        reason: String,
    },
    /// The TLS handshake took longer than `timeouts.handshake_ms`.
    #[error("TLS handshake with upstream {addr} timed out after {ms} ms")]
    HandshakeTimeout {
        /// host:port.
        addr: String,
        /// The bound.
        ms: u64,
    },
    /// The upstream refused our client certificate with a TLS alert.
    #[error("upstream rejected our client certificate (TLS alert {alert})")]
    ClientCertRejected {
        /// The alert, e.g. `unknown_ca`.
        alert: String,
    },
    /// The upstream's certificate did not verify.
    #[error("upstream certificate is not trusted: {reason}")]
    ServerCertUntrusted {
        /// rustls' reason.
        reason: String,
    },
    /// Another TLS failure.
    #[error("TLS with upstream failed: {reason}")]
    Tls {
        /// rustls' reason.
        reason: String,
    },
    /// No response head within the bound.
    #[error("upstream sent no response within {ms} ms (timeouts.response_ms)")]
    ResponseTimeout {
        /// The bound.
        ms: u64,
    },
    /// The connection broke or the upstream spoke bad HTTP.
    #[error("upstream connection failed: {reason}")]
    Protocol {
        /// hyper's reason.
        reason: String,
    },
}

impl UpstreamError {
    /// Whether it is a timeout (504) rather than a failure (502).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout { .. }
                | Self::HandshakeTimeout { .. }
                | Self::ResponseTimeout { .. }
        )
    }

    /// TLS failures happen before the upstream reads any request, so one retry is safe.
    pub fn is_tls_failure(&self) -> bool {
        matches!(
            self,
            Self::ClientCertRejected { .. } | Self::ServerCertUntrusted { .. } | Self::Tls { .. }
        )
    }

    /// Whether the connection (TCP or TLS) failed, rather than the exchange on it.
    pub fn is_connection_failure(&self) -> bool {
        !matches!(self, Self::ResponseTimeout { .. } | Self::Protocol { .. })
    }

    /// A short machine-readable kind for logs and error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "upstream_refused",
            Self::ConnectTimeout { .. } => "upstream_connect_timeout",
            Self::Connect { .. } => "upstream_connect_failed",
            Self::HandshakeTimeout { .. } => "upstream_handshake_timeout",
            Self::ClientCertRejected { .. } => "client_cert_rejected",
            Self::ServerCertUntrusted { .. } => "upstream_cert_untrusted",
            Self::Tls { .. } => "upstream_tls_failed",
            Self::ResponseTimeout { .. } => "upstream_response_timeout",
            Self::Protocol { .. } => "upstream_protocol_error",
        }
    }
}

/// Marker error: the connector's bound on connect + handshake ran out.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake timed out")]
pub(super) struct HandshakeTimedOut;

/// The failure for `err`, or for `tls` (what the connection's TLS layer saw) if known;
/// `target` and `timeouts` give the address and the bounds the message names.
pub(super) fn explain(
    err: &(dyn StdError + 'static),
    tls: Option<rustls::Error>,
    target: &UpstreamTarget,
    timeouts: &TimeoutsConfig,
) -> UpstreamError {
    if let Some(t) = tls {
        return from_tls(&t);
    }
    let addr = format!("{}:{}", target.host, target.port);
    // The innermost I/O error seen: rustls and tokio-rustls wrap a text in one (the
    // upstream closing mid-handshake is "tls handshake eof"), which says no more.
    let mut last_io: Option<&std::io::Error> = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<HandshakeTimedOut>() {
            return UpstreamError::HandshakeTimeout {
                addr,
                ms: timeouts.handshake_ms,
            };
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return from_tls(t);
        }
        // h2 keeps an I/O error's kind and text but does not expose it as the source.
        let io = e
            .downcast_ref::<h2::Error>()
            .and_then(h2::Error::get_io)
            .or_else(|| e.downcast_ref::<std::io::Error>());
        if let Some(io) = io {
            last_io = Some(io);
            // io::Error::source skips the wrapped error itself; look at it directly.
            cur = io.get_ref().map(|inner| inner as &(dyn StdError + 'static));
            continue;
        }
        cur = e.source();
    }
    let Some(io) = last_io else {
        return UpstreamError::Protocol {
            reason: error_chain(err),
        };
    };
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => UpstreamError::Refused { addr },
        std::io::ErrorKind::TimedOut => UpstreamError::ConnectTimeout {
            addr,
            ms: timeouts.connect_ms,
        },
        _ => UpstreamError::Connect {
            addr,
            reason: io.to_string(),
        },
    }
}

pub(super) fn from_tls(e: &rustls::Error) -> UpstreamError {
    match e {
        rustls::Error::AlertReceived(a) if is_cert_alert(*a) => UpstreamError::ClientCertRejected {
            alert: alert_name(*a),
        },
        rustls::Error::InvalidCertificate(c) => UpstreamError::ServerCertUntrusted {
            reason: c.to_string(),
        },
        other => UpstreamError::Tls {
            reason: other.to_string(),
        },
    }
}

/// Alerts with which a server refuses the client's certificate.
pub fn is_cert_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            // rustls sends this when a chain's signature does not verify against a same-named CA.
            | AlertDescription::DecryptError
    )
}

/// The alert's name as the TLS RFCs spell it, e.g. `unknown_ca`.
pub fn alert_name(a: AlertDescription) -> String {
    let debug = format!("{a:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    let chars: Vec<char> = debug.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Every message in an error's chain, joined with ": ".
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_rfc_spelled() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
    }
}
