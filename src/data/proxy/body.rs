//! Response bodies: the upstream's, passed on as it comes (its start read first when a
//! certificate-refusal rule names its status), or one of the proxy's own.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use super::failure::UpstreamFailure;
use crate::data::upstream::{Seen, Unanswered, UpstreamBody, UpstreamError};
use crate::model::config::CERT_REJECTED_BODY_BYTES;

/// Response body: the upstream's, streamed, or one of ours. Not boxed: no allocation per
/// response.
pub type ProxyBody = Either<FromUpstream, Full<Bytes>>;

/// One of the proxy's own bodies.
pub(super) fn full(b: Bytes) -> ProxyBody {
    Either::Right(Full::new(b))
}

/// An upstream response body, passed on as it comes. After a status that a refusal rule
/// names, its start was read first (see [`FromUpstream::read_start`]) and is sent before the rest.
pub struct FromUpstream {
    /// Frames read already, last first; empty on the usual path.
    read: Vec<Frame<Bytes>>,
    /// The rest; `None` once it ended while its start was read.
    rest: Option<UpstreamBody>,
}

impl FromUpstream {
    pub(super) fn new(body: UpstreamBody) -> Self {
        Self {
            read: Vec::new(),
            rest: Some(body),
        }
    }

    /// Reads frames until the body ends or [`CERT_REJECTED_BODY_BYTES`] came; returns the body
    /// (nothing of it lost) and its first [`CERT_REJECTED_BODY_BYTES`] at most.
    pub(super) async fn read_start(body: UpstreamBody) -> Result<(Self, Vec<u8>), UpstreamFailure> {
        let start = body
            .read_start(CERT_REJECTED_BODY_BYTES)
            .await
            .map_err(|e| {
                UpstreamFailure::Upstream(Unanswered {
                    error: UpstreamError::Protocol {
                        reason: format!("reading the response body: {e}"),
                    },
                    seen: Seen::Maybe,
                })
            })?;
        let mut read = start.frames;
        read.reverse();
        Ok((
            Self {
                read,
                rest: start.rest,
            },
            start.data,
        ))
    }
}

impl Body for FromUpstream {
    type Data = Bytes;
    type Error = <UpstreamBody as Body>::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.read.pop() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Some(rest) => std::pin::Pin::new(rest).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(UpstreamBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), UpstreamBody::size_hint);
        if self.read.is_empty() {
            return rest;
        }
        let read: u64 = self
            .read
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + read);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}
