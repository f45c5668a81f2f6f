//! The response body handed back to the caller, from either upstream protocol.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use super::{BoxError, RecvBody};

/// A response body from the upstream: over HTTP/2 (the usual case) or HTTP/1.1.
pub enum UpstreamBody {
    /// From the worker's multiplexed HTTP/2 connection.
    Http2(RecvBody),
    /// From hyper-util's pool of HTTP/1.1 connections.
    Http1(Incoming),
}

/// What [`UpstreamBody::read_start`] read: the frames, in order, the body's rest (`None` once it
/// ended) and the first bytes of its data.
pub struct BodyStart {
    /// The frames read, in order.
    pub frames: Vec<Frame<Bytes>>,
    /// What is left of the body; `None` once it ended.
    pub rest: Option<UpstreamBody>,
    /// Its first bytes, at most the limit.
    pub data: Vec<u8>,
}

impl UpstreamBody {
    /// Reads frames until the body ends or `limit` bytes of data came; nothing read is lost.
    pub async fn read_start(self, limit: usize) -> Result<BodyStart, BoxError> {
        let mut start = BodyStart {
            frames: Vec::new(),
            rest: Some(self),
            data: Vec::new(),
        };
        while start.data.len() < limit {
            let Some(rest) = start.rest.as_mut() else {
                break;
            };
            match rest.frame().await {
                None => start.rest = None,
                Some(frame) => {
                    let frame = frame?;
                    if let Some(d) = frame.data_ref() {
                        let room = limit - start.data.len();
                        start.data.extend_from_slice(&d[..d.len().min(room)]);
                    }
                    start.frames.push(frame);
                }
            }
        }
        Ok(start)
    }
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
