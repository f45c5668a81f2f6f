//! Parking an idle HTTP/1 connection: hyper's buffers are given back while the bare socket
//! waits for the next request (see the module above).

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Activity, Socket};

/// Reports end-of-stream to hyper, instead of "not ready", once parking is asked for and
/// nothing read is still unanswered; then leaves the socket open when hyper shuts down.
pub(super) struct ParkIo<S> {
    pub(super) io: S,
    pub(super) activity: Arc<Activity>,
    /// Ended by parking: the socket stays open for the next request.
    pub(super) parked: bool,
}

impl<S: Socket> AsyncRead for ParkIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let a = &self.activity;
                if !a.unanswered.load(Ordering::Relaxed) {
                    a.head_ms.store(a.since_start(), Ordering::Relaxed);
                    a.unanswered.store(true, Ordering::Relaxed);
                    // Asked to park, but a request came first: parking now could end the
                    // connection with a pipelined request still in hyper's buffer.
                    if a.park.load(Ordering::Relaxed) {
                        a.park.store(false, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending
                if self.activity.park.load(Ordering::Relaxed)
                    && !self.activity.unanswered.load(Ordering::Relaxed) =>
            {
                self.parked = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: Socket> AsyncWrite for ParkIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.answered(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.answered(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S> ParkIo<S> {
    fn answered(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.unanswered.store(false, Ordering::Relaxed);
        }
    }
}
