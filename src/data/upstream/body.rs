//! The response body handed back to the caller, from either upstream protocol.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Incoming;

use super::{BoxError, RecvBody};

/// A response body from the upstream: over HTTP/2 (the usual case) or HTTP/1.1.
pub enum UpstreamBody {
    /// From the worker's multiplexed HTTP/2 connection.
    Http2(RecvBody),
    /// From hyper-util's pool of HTTP/1.1 connections.
    Http1(Incoming),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http2(b) => b.is_end_stream(),
            Self::Http1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Http2(b) => b.size_hint(),
            Self::Http1(b) => b.size_hint(),
        }
    }
}
