//! The connection driver: serves one backend connection with hyper and bounds its life (idle,
//! request head, shutdown, responses given up on), parking quiet HTTP/1 connections between
//! requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::hangup::HangUp;
use super::park::ParkIo;
use super::{Activity, Proto, Socket, PARK_AFTER};
use crate::telemetry::metrics::FixedReason;

/// The HTTP/1 and HTTP/2 connection builders, configured once.
pub struct Builders {
    /// HTTP/1.
    pub h1: hyper::server::conn::http1::Builder,
    /// HTTP/2.
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// How a connection's life is bounded, and where it is counted.
pub struct Bounds {
    /// Closed after this long without a request.
    pub idle: Duration,
    /// An HTTP/1 request head must be complete this long after its first byte.
    pub head: Duration,
    /// Resolves (changes) when the proxy shuts down.
    pub stop: watch::Receiver<bool>,
    /// Connections parked now.
    pub parked: Gauge,
    /// Requests refused before routing, by reason (here: `header_timeout`).
    pub refused: Family<FixedReason, Counter>,
    /// Bound on a response body the backend does not take (see [`Tracked`](super::Tracked)).
    pub send: Duration,
}

/// A hyper connection that can be asked to finish after its current requests.
trait Graceful: Future<Output = hyper::Result<()>> + Unpin {
    fn graceful(&mut self);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Self: Unpin,
{
    fn graceful(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    Self: Unpin,
{
    fn graceful(&mut self) {
        Pin::new(self).graceful_shutdown();
    }
}

/// Runs a hyper connection until it ends, goes idle for `idle`, or shutdown asks it to finish.
/// For HTTP/1 (given `hangup`), also closes it when a request head is not complete in time or
/// the caller hangs up on a long request (see [`HangUp`]), and asks it to park once quiet for
/// [`PARK_AFTER`] (see [`ParkIo`]).
///
/// The head bound is kept here rather than by hyper's header-read timer, which is a new
/// timer-wheel entry for every request; this watchdog wakes at most twice a second.
async fn drive<C: Graceful>(
    c: &mut C,
    activity: &Activity,
    bounds: &mut Bounds,
    mut hangup: Option<&mut HangUp>,
) -> hyper::Result<()> {
    let http1 = hangup.is_some();
    loop {
        let head = http1.then(|| activity.head_deadline(bounds.head)).flatten();
        // A head arriving, a request in flight or parking asked for: things this loop is not
        // told of when they end, so it looks again shortly.
        let soon = Instant::now() + PARK_AFTER;
        let deadline = match head {
            Some(head) => head.min(soon),
            None if activity.quiet() && !activity.park.load(Ordering::Relaxed) => {
                activity.last() + if http1 { PARK_AFTER } else { bounds.idle }
            }
            None => soon,
        };
        let woke = {
            let mut stop = std::pin::pin!(bounds.stop.changed());
            let mut sleep = std::pin::pin!(tokio::time::sleep_until(deadline.into()));
            let mut closed = std::pin::pin!(async {
                match hangup.as_deref() {
                    Some(h) => h.closed().await,
                    None => std::future::pending().await,
                }
            });
            std::future::poll_fn(|cx| {
                // Before looking at `stalled`, so that a response given up on after the look
                // still wakes this task.
                activity.wake.register(cx.waker());
                if let Poll::Ready(r) = Pin::new(&mut *c).poll(cx) {
                    return Poll::Ready(Woke::Done(r));
                }
                if activity.stalled.load(Ordering::Relaxed) > 0 {
                    return Poll::Ready(Woke::Stalled);
                }
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Stop);
                }
                if closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::HangUp);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Tick);
                }
                Poll::Pending
            })
            .await
        };
        match woke {
            Woke::Done(r) => return r,
            Woke::Stalled => return close(c, activity).await,
            Woke::Stop => {
                c.graceful();
                return c.await;
            }
            Woke::HangUp => {
                tracing::debug!(
                    "the caller hung up while its request was in flight; dropping the request"
                );
                return Ok(());
            }
            Woke::Tick => {
                let now = Instant::now();
                if head.is_some_and(|h| now >= h) && activity.head_deadline(bounds.head) == head {
                    bounds
                        .refused
                        .get_or_create(&FixedReason {
                            reason: "header_timeout",
                        })
                        .inc();
                    if crate::telemetry::logthrottle::allow(
                        "refused_before_routing",
                        "header_timeout",
                    ) {
                        tracing::warn!(
                            reason = "header_timeout",
                            header_read_ms = bounds.head.as_millis() as u64,
                            "request head not complete within timeouts.header_read_ms; closing"
                        );
                    }
                    return Ok(());
                }
                if activity.quiet() && now >= activity.last() + bounds.idle {
                    return close(c, activity).await;
                }
                if let Some(h) = hangup.as_deref_mut() {
                    match activity.busy_since() {
                        Some(began)
                            if now
                                >= activity.start + Duration::from_millis(began) + PARK_AFTER =>
                        {
                            h.watch()
                        }
                        _ => h.stop(),
                    }
                }
                if http1
                    && activity.quiet()
                    && !activity.unanswered.load(Ordering::Relaxed)
                    && now >= activity.last() + PARK_AFTER
                {
                    activity.park.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// How long a connection asked to close may take to do so once no request is in flight.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes a connection (idle, or with a response given up on): gracefully, and within
/// [`CLOSE_WAIT`] once nothing is in flight but responses given up on.
///
/// hyper's HTTP/2 graceful close sends GOAWAY and a PING, and sends its final GOAWAY only once
/// the client acknowledges that PING: a client that never does (sending PINGs of its own, or
/// nothing) would hold the connection open for good; and a response the caller does not take
/// is never finished. Requests that raced the GOAWAY are still waited for; they have bounds
/// of their own.
async fn close<C: Graceful>(c: &mut C, activity: &Activity) -> hyper::Result<()> {
    c.graceful();
    loop {
        match tokio::time::timeout(CLOSE_WAIT, &mut *c).await {
            Ok(r) => return r,
            Err(_)
                if activity.in_flight.load(Ordering::Relaxed)
                    <= activity.stalled.load(Ordering::Relaxed) =>
            {
                tracing::debug!(
                    close_wait_ms = CLOSE_WAIT.as_millis() as u64,
                    "a connection did not finish closing after GOAWAY; dropping it"
                );
                return Ok(());
            }
            Err(_) => {}
        }
    }
}

/// What woke [`drive`]'s connection: it ended, a response given up on, shutdown, the hang-up
/// watch, or its timer.
enum Woke {
    Done(hyper::Result<()>),
    /// A response was given up on (see [`Tracked`](super::Tracked)).
    Stalled,
    Stop,
    HangUp,
    Tick,
}

/// Serves one backend connection speaking `proto` with `svc` until it ends.
pub async fn serve<S, Svc, B>(
    mut io: S,
    proto: Proto,
    svc: Svc,
    activity: Arc<Activity>,
    builders: &Builders,
    mut bounds: Bounds,
) -> hyper::Result<()>
where
    S: Socket,
    Svc: HttpService<Incoming, ResBody = B> + Clone + Unpin + Send + 'static,
    Svc::Future: Send + 'static,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if proto == Proto::Http2 {
        // Boxed so that an idle connection task stays small.
        let mut c = Box::new(builders.h2.serve_connection(TokioIo::new(io), svc));
        return drive(&mut *c, &activity, &mut bounds, None).await;
    }
    let mut hangup = HangUp::new(io.tcp());
    loop {
        activity.park.store(false, Ordering::Relaxed);
        let pio = ParkIo {
            io,
            activity: activity.clone(),
            parked: false,
        };
        let mut c = Box::new(builders.h1.serve_connection(TokioIo::new(pio), svc.clone()));
        drive(&mut *c, &activity, &mut bounds, Some(&mut hangup)).await?;
        let hyper::server::conn::http1::Parts {
            io: pio, read_buf, ..
        } = c.into_parts();
        let pio = pio.into_inner();
        if !pio.parked || !read_buf.is_empty() {
            return Ok(());
        }
        io = pio.io;
        // The (empty) read buffer keeps its 8 KiB until dropped; a parked connection holds
        // one descriptor, its socket, and takes the second again when woken.
        drop(read_buf);
        hangup.release();
        let deadline = activity.last() + bounds.idle;
        bounds.parked.inc();
        let woken = tokio::select! {
            biased;
            r = io.tcp().readable() => r.is_ok(),
            _ = bounds.stop.changed() => false,
            _ = tokio::time::sleep_until(deadline.into()) => false,
        };
        bounds.parked.dec();
        if !woken {
            return Ok(());
        }
        hangup = HangUp::new(io.tcp());
    }
}
