//! The upstream TLS stream, watched: TLS errors are recorded where hyper's and h2's reports
//! would lose them, and the connector that makes these streams bounds and counts handshakes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::HandshakeTimedOut;
use super::BoxError;
use crate::telemetry::metrics::AppMetrics;

/// The first TLS error seen on a connection. h2 flattens I/O errors into text,
/// so a TLS alert that arrives after the handshake (TLS 1.3 client-certificate
/// rejections do) is recorded here and read back through the connection's extras.
#[derive(Clone, Default)]
pub(super) struct TlsFailure(Arc<Mutex<Option<rustls::Error>>>);

impl TlsFailure {
    fn record(&self, t: &rustls::Error) {
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert_with(|| t.clone());
        }
    }

    pub(super) fn get(&self) -> Option<rustls::Error> {
        self.0.lock().ok().and_then(|s| s.clone())
    }

    /// Whether both belong to the same connection.
    pub(super) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// An upstream TLS stream that records TLS errors into a [`TlsFailure`].
pub(super) struct Watched {
    inner: MaybeHttpsStream<TokioIo<TcpStream>>,
    pub(super) failure: TlsFailure,
}

impl Watched {
    fn watch<T>(&self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Some(t) = match &r {
            Poll::Ready(Err(e)) => tls_error(e),
            _ => None,
        } {
            self.failure.record(t);
        }
        r
    }

    /// A write fails (broken pipe) when the server has already refused our certificate
    /// and closed; its alert may still wait unread. One read brings it to light.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if matches!(r, Poll::Ready(Err(_))) && self.failure.get().is_none() {
            let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 256];
            let mut buf = hyper::rt::ReadBuf::uninit(&mut scratch);
            if let Poll::Ready(Err(e)) =
                hyper::rt::Read::poll_read(Pin::new(&mut self.inner), cx, buf.unfilled())
            {
                if let Some(t) = tls_error(&e) {
                    self.failure.record(t);
                }
            }
        }
        self.watch(r)
    }
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(r)
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, r)
    }
}

impl Connection for Watched {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(self.failure.clone())
    }
}

/// A connection made for HTTP/2 on which the upstream chose HTTP/1.1: the HTTP/1.1 pool's
/// next connect takes it, rather than the handshake being made twice.
#[derive(Clone, Default)]
pub(super) struct Learned(Arc<Mutex<Option<Watched>>>);

impl Learned {
    pub(super) fn keep(&self, io: Watched) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(io);
        }
    }

    fn take(&self) -> Option<Watched> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Wraps the rustls connector to bound the handshake and count connections.
#[derive(Clone)]
pub(super) struct CountingConnector {
    pub(super) inner: HttpsConnector<HttpConnector>,
    pub(super) metrics: AppMetrics,
    pub(super) bound: Duration,
    pub(super) learned: Learned,
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Watched;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(io) = self.learned.take() {
            return Box::pin(std::future::ready(Ok(io)));
        }
        self.metrics.handshakes.inc();
        let bound = self.bound;
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(bound, connecting).await {
                Ok(r) => r.map(|inner| Watched {
                    inner,
                    failure: TlsFailure::default(),
                }),
                Err(_) => Err(Box::new(HandshakeTimedOut) as BoxError),
            }
        })
    }
}
