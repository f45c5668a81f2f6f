//! One backend connection: protocol choice, idle watchdog, and parking of idle HTTP/1 connections.
//!
//! hyper keeps a read buffer (8 to 16 KiB) and a write buffer (8 KiB) for as long as an HTTP/1
//! connection lives, and a fleet keeps many keep-alive connections open and mostly quiet. After
//! [`PARK_AFTER`] without a request, [`ParkIo`] answers hyper's next read with end-of-stream
//! instead of "not ready": hyper ends that connection cleanly without shutting the socket down,
//! its buffers are freed, and the bare socket waits for the next byte. The next request starts a
//! fresh hyper connection on the same socket, so the backend sees one keep-alive connection.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::telemetry::metrics::FixedReason;

/// `timeouts.send_ms`'s default, for an [`Activity`] made without one.
const DEFAULT_SEND: Duration = Duration::from_secs(10);

/// Quiet time after which an HTTP/1 connection gives back hyper's buffers.
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// A backend stream and the TCP socket under it.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket, for readiness (parking) and the hang-up probe.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    // Parking happens only after a read found rustls' plaintext buffer empty, so new input
    // can only arrive through the socket.
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// When a connection last finished a request, how many it has in flight, and its parking state.
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// The watchdog asks the connection to park at its next idle read.
    park: AtomicBool,
    /// Bytes were read since the last write: a request may be partly in hyper's buffer.
    unanswered: AtomicBool,
    /// When the first of those bytes arrived, in ms since `start`.
    head_ms: AtomicU64,
    /// When the latest request began, in ms since `start`.
    began_ms: AtomicU64,
    /// Responses given up on as not taken within `send` (see [`Tracked`]), still counted in
    /// `in_flight` until hyper lets go of them.
    stalled: AtomicUsize,
    /// How long a response body may go untaken.
    send: Duration,
    /// Counts the responses given up on.
    send_timeouts: Counter,
    /// Wakes [`drive`] when a response is given up on.
    wake: AtomicWaker,
}

impl Activity {
    /// A connection that starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            park: AtomicBool::new(false),
            unanswered: AtomicBool::new(false),
            head_ms: AtomicU64::new(0),
            began_ms: AtomicU64::new(0),
            stalled: AtomicUsize::new(0),
            send: DEFAULT_SEND,
            send_timeouts: Counter::default(),
            wake: AtomicWaker::new(),
        }
    }

    /// A connection that starts now, whose response bodies the backend must take within
    /// `send`; those it does not are counted in `timeouts`.
    pub fn with_send_bound(send: Duration, timeouts: Counter) -> Self {
        Self {
            send,
            send_timeouts: timeouts,
            ..Self::new()
        }
    }

    fn since_start(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the request head now arriving must be complete: `None` while nothing unanswered
    /// has been read or a request is in flight (its body has a bound of its own).
    fn head_deadline(&self, limit: Duration) -> Option<Instant> {
        (self.quiet() && self.unanswered.load(Ordering::Relaxed)).then(|| {
            self.start + Duration::from_millis(self.head_ms.load(Ordering::Relaxed)) + limit
        })
    }

    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// When the request in flight began, if one is.
    fn busy_since(&self) -> Option<u64> {
        (!self.quiet()).then(|| self.began_ms.load(Ordering::Relaxed))
    }

    /// Marks a request in flight until the returned guard drops; also returns the time it
    /// began, for the request's own timing (one clock reading serves both).
    pub fn begin(self: &Arc<Self>) -> (Busy, Instant) {
        let now = Instant::now();
        let ms = now.saturating_duration_since(self.start).as_millis() as u64;
        self.began_ms.store(ms, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        (Busy(self.clone()), now)
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request in flight; on drop, records the activity.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms.store(a.since_start(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight until hyper drops it (written
/// to the end, or abandoned): a connection streaming a slow body is neither idle nor parkable.
///
/// It also bounds how long the backend may leave it untaken. hyper polls a body only when
/// the caller has room for more (HTTP/2 flow-control window, HTTP/1 socket buffer); an upstream
/// HTTP/2 stream that nobody reads keeps its share of the upstream connection's window, which
/// the other callers' responses on that connection need. A body still streaming after a frame
/// is watched: once hyper has not taken a frame for `timeouts.send_ms` (and is not waiting on
/// the upstream for one), the body is dropped, which resets the upstream stream and frees its
/// window, and the backend connection is closed once its other requests are done (see
/// [`drive`]). A body that is complete with its first frame, as a token response is, is never
/// watched: no timer, no task.
pub struct Tracked<B> {
    body: Sent<B>,
    busy: Busy,
}

enum Sent<B> {
    /// Not watched (yet).
    Direct(B),
    /// Streaming, shared with its watchdog.
    Watched(Arc<Watch<B>>),
    /// Only while moving from `Direct` to `Watched`.
    Moving,
}

struct Watch<B> {
    /// `None` once given up on.
    body: std::sync::Mutex<Option<B>>,
    /// When hyper last took a frame, in ms since the connection's start.
    taken_ms: AtomicU64,
    /// hyper waits on the upstream for the next frame: the caller is not the one holding up.
    waiting: AtomicBool,
}

/// The error hyper gets, instead of the rest of the body, for a response given up on.
#[derive(Debug, thiserror::Error)]
#[error("the backend did not take the response within timeouts.send_ms ({0} ms)")]
pub struct SendTimeout(u64);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while it is held; a poisoned lock still holds good state.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> Tracked<B> {
    /// `body`, counted by `busy` until dropped.
    pub fn new(body: B, busy: Busy) -> Self {
        Self {
            body: Sent::Direct(body),
            busy,
        }
    }
}

impl<B: Send + 'static> Tracked<B> {
    /// Starts watching the body: hyper has just taken a frame and there is more to come.
    fn watch(&mut self) {
        let Sent::Direct(body) = std::mem::replace(&mut self.body, Sent::Moving) else {
            return;
        };
        let activity = self.busy.0.clone();
        let w = Arc::new(Watch {
            body: std::sync::Mutex::new(Some(body)),
            taken_ms: AtomicU64::new(activity.since_start()),
            waiting: AtomicBool::new(false),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(watchdog(Arc::downgrade(&w), activity));
        }
        self.body = Sent::Watched(w);
    }
}

/// Gives up on `w`'s body once hyper has not taken a frame of it for the connection's `send`
/// bound; ends when the body is dropped (then `w` is gone) or given up on.
async fn watchdog<B>(w: std::sync::Weak<Watch<B>>, activity: Arc<Activity>) {
    let send = activity.send;
    let mut at = Instant::now() + send;
    loop {
        tokio::time::sleep_until(at.into()).await;
        let Some(w) = w.upgrade() else { return };
        let now = Instant::now();
        let due = activity.start + Duration::from_millis(w.taken_ms.load(Ordering::Relaxed)) + send;
        if w.waiting.load(Ordering::Relaxed) || now < due {
            at = due.max(now + send.min(PARK_AFTER));
            continue;
        }
        let body = {
            let mut slot = lock(&w.body);
            let body = slot.take();
            if body.is_some() {
                activity.stalled.fetch_add(1, Ordering::Relaxed);
            }
            body
        };
        // Dropping the upstream body resets its stream and gives its window back.
        drop(body);
        activity.send_timeouts.inc();
        activity.wake.wake();
        if crate::telemetry::logthrottle::allow("response", "send_timeout") {
            tracing::warn!(
                reason = "send_timeout",
                send_ms = send.as_millis() as u64,
                "a backend did not take its response within timeouts.send_ms; dropped it (the upstream stream is reset) and closing that backend connection"
            );
        }
        return;
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Sent::Watched(w) = &self.body {
            if lock(&w.body).is_none() {
                self.busy.0.stalled.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<B> hyper::body::Body for Tracked<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        let r = match &mut this.body {
            Sent::Direct(body) => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                let more = matches!(&r, Poll::Ready(Some(Ok(_)))) && !body.is_end_stream();
                if more {
                    this.watch();
                }
                r
            }
            Sent::Watched(w) => {
                let mut slot = lock(&w.body);
                let Some(body) = slot.as_mut() else {
                    let ms = this.busy.0.send.as_millis() as u64;
                    return Poll::Ready(Some(Err(SendTimeout(ms).into())));
                };
                let r = Pin::new(body).poll_frame(cx);
                w.waiting.store(r.is_pending(), Ordering::Relaxed);
                if r.is_ready() {
                    w.taken_ms
                        .store(this.busy.0.since_start(), Ordering::Relaxed);
                }
                r
            }
            Sent::Moving => Poll::Ready(None),
        };
        r.map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Sent::Direct(body) => body.is_end_stream(),
            // Given up on: not the end, or hyper would end the caller's stream as complete.
            Sent::Watched(w) => lock(&w.body).as_ref().is_some_and(|b| b.is_end_stream()),
            Sent::Moving => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.body {
            Sent::Direct(body) => body.size_hint(),
            Sent::Watched(w) => lock(&w.body)
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
            Sent::Moving => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// Reports end-of-stream to hyper, instead of "not ready", once parking is asked for and
/// nothing read is still unanswered; then leaves the socket open when hyper shuts down.
struct ParkIo<S> {
    io: S,
    activity: Arc<Activity>,
    parked: bool,
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

/// A timer kept between the requests of one backend connection, for bounding each request's
/// wait for the upstream.
///
/// Moving a registered timer to a later instant is one atomic update; a new timer per request
/// would take the runtime's timer-wheel lock twice (registering, then removing it). Concurrent
/// requests (HTTP/2) beyond the one kept make timers of their own.
#[derive(Debug, Default)]
pub struct SpareTimer(std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl SpareTimer {
    /// Runs `f` until `deadline`; `None` if the deadline came first.
    pub async fn within<F: Future>(&self, deadline: Instant, f: F) -> Option<F::Output> {
        let kept = self.0.lock().ok().and_then(|mut t| t.take());
        let mut timer = match kept {
            Some(mut t) => {
                t.as_mut().reset(deadline.into());
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline.into())),
        };
        let mut f = std::pin::pin!(f);
        let mut first = true;
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if fired(timer.as_mut(), &mut first, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if let Ok(mut t) = self.0.lock() {
            *t = Some(timer);
        }
        out
    }
}

/// Whether `sleep` has fired, polling it only when it may have: at the first call (`first`,
/// then cleared), which registers the task's waker, and once it has left the timer wheel.
/// Each poll takes the timer's lock, and the futures that wait on one are polled at every
/// wake-up of their task; a task's waker does not change, so the first one stays good.
fn fired(sleep: Pin<&mut tokio::time::Sleep>, first: &mut bool, cx: &mut Context<'_>) -> bool {
    let due = std::mem::take(first) || sleep.is_elapsed();
    due && sleep.poll(cx).is_ready()
}

/// How the backend speaks on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (ALPN `h2`, or the prior-knowledge preface on plain TCP).
    Http2,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits for the first bytes of a plain connection and tells HTTP/2's preface from HTTP/1;
/// `None` if the peer closed without sending anything.
pub async fn sniff(s: &TcpStream) -> io::Result<Option<Proto>> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = s.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(Proto::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Proto::Http2));
        }
        // A split preface: peek returns the same bytes until more arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
    /// Bound on a response body the backend does not take (see [`Tracked`]).
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

/// Notices a caller that closes its HTTP/1 connection while its request waits on Amity.
///
/// hyper is told to allow half-closed connections: otherwise it reads the socket once more
/// while each request is in flight, only to see whether the caller left, and as the request
/// still holds hyper's read buffer, that read takes a fresh 8 KiB buffer every time. Instead,
/// once a request has waited [`PARK_AFTER`], a second descriptor of the same socket is
/// registered and watched for the caller's FIN; when it comes, the connection ends and the
/// dropped request resets its upstream stream and frees its in-flight slot.
struct HangUp {
    /// The second descriptor, made when the connection starts (later, hyper owns the socket).
    fd: Option<OwnedFd>,
    /// `fd`, registered with the runtime while a long request is watched (then `fd` is
    /// `None`). Boxed, as is the wait on it: rarely used, they would otherwise enlarge every
    /// connection's task.
    watching: Option<Box<TcpStream>>,
}

impl HangUp {
    fn new(tcp: &TcpStream) -> Self {
        Self {
            fd: tcp.as_fd().try_clone_to_owned().ok(),
            watching: None,
        }
    }

    /// Watches for a hang-up until [`HangUp::stop`]; already watching, carries on.
    fn watch(&mut self) {
        if let Some(fd) = self.fd.take() {
            match TcpStream::from_std(std::net::TcpStream::from(fd)) {
                Ok(s) => self.watching = Some(Box::new(s)),
                Err(e) => tracing::debug!(error = %e, "cannot watch the caller's connection"),
            }
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.watching.take() {
            self.fd = s.into_std().ok().map(OwnedFd::from);
        }
    }

    /// Resolves, while watching, once the caller has closed its side. Bytes that come
    /// first (a TLS close_notify alert ahead of the FIN, a pipelined request) are left for
    /// hyper to read: their readiness is cleared, never the closed state, which tokio keeps.
    async fn closed(&self) {
        let Some(s) = &self.watching else {
            return std::future::pending().await;
        };
        Box::pin(async {
            loop {
                match s.ready(Interest::READABLE).await {
                    Ok(r) if !r.is_read_closed() => {
                        let _ = s.try_io(Interest::READABLE, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                    _ => return,
                }
            }
        })
        .await
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
    // Tells, without a lock, whether shutdown was signalled (see `Woke` below).
    let stopping = bounds.stop.clone();
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
            let (mut first_stop, mut first_sleep) = (true, true);
            // Registered once: a task's waker does not change (see `fired`).
            let mut first_wake = true;
            std::future::poll_fn(|cx| {
                if std::mem::take(&mut first_wake) {
                    activity.wake.register(cx.waker());
                }
                if let Poll::Ready(r) = Pin::new(&mut *c).poll(cx) {
                    return Poll::Ready(Woke::Done(r));
                }
                if activity.stalled.load(Ordering::Relaxed) > 0 {
                    return Poll::Ready(Woke::Stalled);
                }
                // This runs at every wake-up of the connection; the shutdown signal, like the
                // timer (see `fired`), takes a lock at each poll and keeps its first waker.
                let signalled =
                    std::mem::take(&mut first_stop) || stopping.has_changed().unwrap_or(true);
                if signalled && stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Stop);
                }
                if closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::HangUp);
                }
                if fired(sleep.as_mut(), &mut first_sleep, cx) {
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
    /// A response was given up on (see [`Tracked`]).
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
        // The (empty) read buffer keeps its 8 KiB until dropped.
        drop(read_buf);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};

    #[tokio::test]
    async fn only_a_body_still_streaming_after_a_frame_is_watched() {
        let activity = Arc::new(Activity::new());
        let (busy, _) = activity.begin();
        let mut whole = Tracked::new(Full::new(Bytes::from_static(b"token")), busy);
        assert!(whole.frame().await.unwrap().unwrap().is_data());
        assert!(
            matches!(whole.body, Sent::Direct(_)),
            "a complete body got a watchdog"
        );

        let (busy, _) = activity.begin();
        let frames = futures_util::stream::iter([b"a".as_slice(), b"b"].map(|b| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b)))
        }));
        let mut streaming = Tracked::new(StreamBody::new(frames), busy);
        assert!(streaming.frame().await.unwrap().unwrap().is_data());
        assert!(matches!(streaming.body, Sent::Watched(_)));
    }
}
