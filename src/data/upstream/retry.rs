//! Whether a request that failed may be sent again: the one policy every retry decision goes
//! through. The fact it rests on, whether the upstream may have seen the request, is set
//! where the exchange knows it (`client.rs`, `multiplex.rs`), never guessed from the kind of
//! failure: a request is sent again only when the upstream cannot have seen it.

use super::UpstreamError;

/// Whether the upstream may have seen a request that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// It cannot have: nothing was written (connect or handshake failed, the connection was
    /// closing or going away, the stream was refused or above a GOAWAY's last id), or the
    /// connection's handshake was refused, so the upstream processed nothing on it.
    Never,
    /// It may have: the request was written, then the exchange failed.
    Maybe,
}

/// A request that got no answer: why, and whether the upstream may have seen it.
#[derive(Debug)]
pub struct Unanswered {
    /// Why.
    pub error: UpstreamError,
    /// Whether sending it again could make the upstream act twice.
    pub seen: Seen,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Unanswered {
    /// A failure before anything was written.
    pub fn unsent(error: UpstreamError) -> Self {
        Self {
            error,
            seen: Seen::Never,
        }
    }
}

/// What becomes of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Its failure is the answer.
    No,
    /// Sent once more, presenting the same certificate, on a new connection.
    OnNewConnection,
    /// Sent once more, presenting the other certificate.
    WithOtherCert,
}

/// hyper-util's pool sends a request again on another connection when the pooled one it took
/// closed before the request was written: a retry of a request never seen.
pub const POOL_RETRIES_UNSENT: bool = true;

/// Why the exchange failed, as far as a retry is concerned.
pub enum Failure<'a> {
    /// No answer.
    Unanswered(&'a Unanswered),
    /// The front server's page refusing our certificate: nothing reached Amity.
    RefusalPage,
}

/// The one retry decision: at most one more try, and only for a request the upstream cannot
/// have acted on. A refused certificate tries the other one (`other_cert`: one is usable),
/// else a new connection when the refusal came in TLS; another TLS failure tries a new
/// connection, unless the upstream's own certificate did not verify (it will not the next
/// time either).
pub fn decide(failure: Failure<'_>, other_cert: bool) -> Retry {
    let e = match failure {
        Failure::RefusalPage if other_cert => return Retry::WithOtherCert,
        Failure::RefusalPage => return Retry::No,
        Failure::Unanswered(u) if u.seen == Seen::Maybe => return Retry::No,
        Failure::Unanswered(u) => &u.error,
    };
    match e {
        UpstreamError::ClientCertRejected { .. } if other_cert => Retry::WithOtherCert,
        UpstreamError::ClientCertRejected { .. } | UpstreamError::Tls { .. } => {
            Retry::OnNewConnection
        }
        _ => Retry::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unanswered(error: UpstreamError, seen: Seen) -> Unanswered {
        Unanswered { error, seen }
    }

    #[test]
    fn only_what_the_upstream_cannot_have_seen_is_sent_again() {
        let tls = || UpstreamError::Tls {
            reason: "decrypt error".into(),
        };
        let rejected = || UpstreamError::ClientCertRejected {
            alert: "unknown_ca".into(),
        };
        let decide_on = |e, seen, other| decide(Failure::Unanswered(&unanswered(e, seen)), other);
        // Written, then the TLS layer failed: it may have been processed.
        assert_eq!(decide_on(tls(), Seen::Maybe, true), Retry::No);
        assert_eq!(decide_on(rejected(), Seen::Maybe, true), Retry::No);
        assert_eq!(decide_on(tls(), Seen::Never, false), Retry::OnNewConnection);
        assert_eq!(
            decide_on(rejected(), Seen::Never, true),
            Retry::WithOtherCert
        );
        assert_eq!(
            decide_on(rejected(), Seen::Never, false),
            Retry::OnNewConnection
        );
        let untrusted = UpstreamError::ServerCertUntrusted {
            reason: "unknown issuer".into(),
        };
        assert_eq!(decide_on(untrusted, Seen::Never, true), Retry::No);
        let refused = UpstreamError::Refused {
            addr: "127.0.0.1:1".into(),
        };
        assert_eq!(decide_on(refused, Seen::Never, true), Retry::No);
        assert_eq!(decide(Failure::RefusalPage, true), Retry::WithOtherCert);
        assert_eq!(decide(Failure::RefusalPage, false), Retry::No);
    }
}
