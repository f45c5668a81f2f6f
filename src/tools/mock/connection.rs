//! The stand-in's connections: TLS, HTTP/1.1 or HTTP/2, and closing them as servers do
//! (after a number of requests, when idle, at an age, or refused at a connection limit).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::Response;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::{Counted, Mock};
use crate::model::pki::CertInfo;

/// Accepts until `stop`, serving each connection in a task of its own.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mock: Arc<Mock>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
            },
            _ = &mut stop => return,
        };
        // Without it, small h2 frames wait on delayed ACKs: about 40 ms per proxied call.
        let _ = tcp.set_nodelay(true);
        // Counted here, in the one accepting task, and counted out by the connection's task.
        let open = &mock.observed.connections;
        if mock
            .opts
            .max_connections
            .is_some_and(|max| open.load(Ordering::Relaxed) >= max)
        {
            mock.observed.turned_away.fetch_add(1, Ordering::Relaxed);
            // With a FIN, not a reset: dropped with the client's hello unread, the socket would
            // answer with a reset, and the client would see that or an end of stream by timing.
            tokio::spawn(lingering_close(tcp));
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let mock = mock.clone();
        tokio::spawn(async move {
            let observed = mock.observed.clone();
            let _open = Counted(&observed.connections);
            let accepting = acceptor.accept(tcp).into_fallible();
            let tls = match tokio::time::timeout(Duration::from_secs(10), accepting).await {
                Ok(Ok(t)) => t,
                Ok(Err((e, tcp))) => {
                    mock.observed
                        .rejected_handshakes
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "mock_amity", %peer, error = %e, "handshake refused");
                    lingering_close(tcp).await;
                    return;
                }
                Err(_) => {
                    mock.observed
                        .rejected_handshakes
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            mock.observed.handshakes.fetch_add(1, Ordering::Relaxed);
            let (subject, serial) = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| CertInfo::from_der(c).ok())
                .map(|i| (i.subject, i.serial))
                .unwrap_or_default();
            let limit = mock.opts.max_requests_per_connection;
            let streams = mock.opts.max_concurrent_streams;
            let idle = mock.opts.idle_timeout;
            let max_age = mock.opts.max_age;
            let counted = Arc::new(AtomicU64::new(0));
            let enough = Arc::new(tokio::sync::Notify::new());
            let reached = enough.clone();
            let activity = Arc::new(ConnActivity::default());
            let active = activity.clone();
            let svc = service_fn(move |req| {
                let mock = mock.clone();
                let (subject, serial) = (subject.clone(), serial.clone());
                if counted.fetch_add(1, Ordering::Relaxed) + 1 == limit {
                    reached.notify_one();
                }
                let busy = active.begin();
                async move {
                    let pause = mock.opts.body_pause;
                    let resp = paced(mock.handle(req, subject, serial).await, pause).await;
                    drop(busy);
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if let Some(n) = streams {
                builder.http2().max_concurrent_streams(n);
            }
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                _ = activity.idle_for(idle) => conn.as_mut().graceful_shutdown(),
                _ = until(max_age) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
}

/// When a connection last started or finished a request, and how many it has in flight.
struct ConnActivity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Default for ConnActivity {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }
}

/// A request in flight on a connection; on drop, the connection's last activity.
struct Busy(Arc<ConnActivity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnActivity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Resolves once the connection has had no request for `limit`; never without one.
    async fn idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if self.in_flight.load(Ordering::Relaxed) == 0 && last.elapsed() >= limit {
                return;
            }
            tokio::time::sleep_until((last + limit).max(Instant::now() + limit / 8).into()).await;
        }
    }
}

/// Resolves after `d`; never without one.
async fn until(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Closes as careful servers do: FIN after the alert, then read what the client
/// already sent, so the kernel does not answer it with a reset that can destroy the alert.
async fn lingering_close(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The response with its body sent in two halves `pause` apart (at once when zero).
async fn paced(
    resp: Response<Full<Bytes>>,
    pause: Duration,
) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    if pause.is_zero() {
        return resp.map(BodyExt::boxed_unsync);
    }
    let (parts, body) = resp.into_parts();
    let whole = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    let second = whole.slice(whole.len() / 2..);
    let first = whole.slice(..whole.len() / 2);
    let later = async move {
        tokio::time::sleep(pause).await;
        second
    };
    let frames = stream::once(std::future::ready(first))
        .chain(stream::once(later))
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    Response::from_parts(parts, StreamBody::new(frames).boxed_unsync())
}
