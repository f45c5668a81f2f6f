//! The response body handed back to the caller, from either upstream protocol.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Sleep;

use super::{BoxError, RecvBody};

/// The two protocols' bodies.
enum Inner {
    /// From the worker's multiplexed HTTP/2 connection.
    Http2(RecvBody),
    /// From hyper-util's pool of HTTP/1.1 connections.
    Http1(Incoming),
}

/// A response body from the upstream, over HTTP/2 (the usual case) or HTTP/1.1, whose gaps
/// between data are bounded: past the bound it ends with an error (the HTTP/2 stream is reset
/// as it drops), and the caller's response with it.
pub struct UpstreamBody {
    inner: Inner,
    gap: Duration,
    /// The bound on the current wait; made on the first wait only, reset for the next.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` counts the current wait.
    waiting: bool,
    stalls: Counter,
}

/// The upstream let a body wait longer than its bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "the upstream sent no more of the response body within {ms} ms (timeouts.upstream_body_gap_ms)"
)]
pub struct BodyStalled {
    ms: u128,
}

impl UpstreamBody {
    pub(super) fn http2(body: RecvBody, gap: Duration, stalls: &Counter) -> Self {
        Self::new(Inner::Http2(body), gap, stalls)
    }

    pub(super) fn http1(body: Incoming, gap: Duration, stalls: &Counter) -> Self {
        Self::new(Inner::Http1(body), gap, stalls)
    }

    fn new(inner: Inner, gap: Duration, stalls: &Counter) -> Self {
        Self {
            inner,
            gap,
            timer: None,
            waiting: false,
            stalls: stalls.clone(),
        }
    }
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
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        };
        if polled.is_ready() {
            // The next wait starts its own count.
            this.waiting = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + this.gap;
        let timer = match (&mut this.timer, this.waiting) {
            (Some(t), true) => t,
            (Some(t), false) => {
                t.as_mut().reset(deadline);
                t
            }
            (None, _) => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.waiting = true;
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.stalls.inc();
        Poll::Ready(Some(Err(Box::new(BodyStalled {
            ms: this.gap.as_millis(),
        }))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http2(b) => b.is_end_stream(),
            Inner::Http1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.inner {
            Inner::Http2(b) => b.size_hint(),
            Inner::Http1(b) => b.size_hint(),
        }
    }
}
