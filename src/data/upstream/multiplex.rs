//! HTTP/2 connections per worker and certificate, used through the h2 crate directly: one,
//! and more only while each has as many streams open as the upstream allows.
//!
//! With multiplexed connections per worker there is little to pool: hyper-util's checkout
//! (a hashed pool key, large futures moved around) and hyper's client dispatch (a channel, a
//! oneshot and a task hop per request) cost about as much as the HTTP/2 exchange itself.
//! Here a request goes straight into a connection's stream table.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;

use super::watched::{TlsFailure, Watched};

// A stream's window is what one response nobody reads can hold of its connection's window
// (until `timeouts.send_ms` drops it): the connection's is many times larger, so that a few
// such responses leave room for every other caller's.
const STREAM_WINDOW: u32 = 256 << 10;
const CONNECTION_WINDOW: u32 = 8 << 20;
// hyper's HTTP/2 client settings, kept as they were when requests went through hyper.
const MAX_FRAME: u32 = 16 << 10;
const MAX_HEADER_LIST: u32 = 16 << 10;
const MAX_SEND_BUFFER: usize = 1 << 20;

/// A live connection: the handle that opens streams, and what its TLS layer saw.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) send: h2::client::SendRequest<Bytes>,
    /// Also the connection's identity: one per connection.
    pub(super) failure: TlsFailure,
}

/// A connection taken for one request, its stream counted against the connection's
/// concurrency limit until the response body is done or dropped.
pub(super) struct Lease {
    pub(super) conn: Conn,
    pub(super) open: OpenStream,
}

/// One stream counted in its connection's [`Held::open`].
pub(super) struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Held {
    conn: Conn,
    /// Streams of this connection whose response has not been read to the end.
    open: Arc<AtomicUsize>,
    /// A request used it since the last idle check.
    used: bool,
    /// Idle checks in a row that found it unused.
    quiet: u32,
}

impl Held {
    fn lease(&mut self) -> Lease {
        self.used = true;
        self.open.fetch_add(1, Ordering::Relaxed);
        Lease {
            conn: self.conn.clone(),
            open: OpenStream(self.open.clone()),
        }
    }
}

/// One worker's connections for one certificate: one, and more only while every one has as
/// many streams open as the upstream allows on a connection (its
/// SETTINGS_MAX_CONCURRENT_STREAMS), so that a slow upstream does not cap the requests in
/// flight at that limit.
#[derive(Default)]
pub(super) struct Slot {
    /// Locked by every request of the worker.
    held: Arc<Mutex<Vec<Held>>>,
    /// Requests that find no room wait for the connection being made rather than make their
    /// own. It holds when opening another connection last failed.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    /// Streams the upstream allowed on a connection, as last seen; what a new connection
    /// assumes once the others are gone (0: not seen yet).
    streams_seen: AtomicUsize,
}

/// Connections per worker and certificate at most; beyond, streams queue in the least busy one.
pub(super) const MAX_CONNECTIONS: usize = 8;

/// After another connection could not be opened, requests queue on the open ones for this
/// long before one tries again. Without it, every request that found no room would wait for
/// an attempt of its own, one after the other: at a connect timeout each, the wait grows
/// with the queue.
pub(super) const RETRY_ANOTHER: Duration = Duration::from_secs(5);

/// Streams assumed allowed on the first connection until the upstream's SETTINGS say, and
/// kept if they say nothing (RFC 9113 asks servers to allow at least 100); h2 would
/// otherwise assume no limit. Later connections assume what the first one was told.
const INITIAL_MAX_STREAMS: usize = 100;

fn lock(held: &Mutex<Vec<Held>>) -> MutexGuard<'_, Vec<Held>> {
    // Nothing in the critical sections can panic midway; a poisoned lock still holds good state.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// A connection with room for one more stream, if there is one.
    pub(super) fn current(&self) -> Option<Lease> {
        let mut held = lock(&self.held);
        let h = held
            .iter_mut()
            .find(|h| h.open.load(Ordering::Relaxed) < h.conn.send.current_max_send_streams())?;
        Some(h.lease())
    }

    /// The least busy connection, if there are `at_least` connections (h2 queues a stream
    /// beyond the upstream's limit until one ends).
    pub(super) fn least_busy(&self, at_least: usize) -> Option<Lease> {
        let mut held = lock(&self.held);
        if held.len() < at_least {
            return None;
        }
        let h = held
            .iter_mut()
            .min_by_key(|h| h.open.load(Ordering::Relaxed))?;
        Some(h.lease())
    }

    /// Lets go of the connection `id` names, if the slot still holds it, so that no
    /// further request uses it.
    pub(super) fn forget(&self, id: &TlsFailure) {
        remove(&self.held, id);
    }

    /// Waits until no other request of this worker is making a connection; the guard holds
    /// when opening another one last failed.
    pub(super) async fn connecting(&self) -> tokio::sync::MutexGuard<'_, Option<Instant>> {
        self.connecting.lock().await
    }

    /// Starts HTTP/2 on a new TLS stream, drives it on this thread's runtime and keeps it
    /// beside the others. A connection unused for `idle` (checked every quarter of it) is let
    /// go, and so is one whose connection has ended.
    pub(super) async fn start(&self, io: Watched, idle: Duration) -> Result<Lease, h2::Error> {
        let failure = io.failure.clone();
        let assumed = match lock(&self.held).first() {
            Some(h) => {
                let n = h.conn.send.current_max_send_streams();
                self.streams_seen.store(n, Ordering::Relaxed);
                n
            }
            None => match self.streams_seen.load(Ordering::Relaxed) {
                0 => INITIAL_MAX_STREAMS,
                n => n,
            },
        };
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_max_send_streams(assumed)
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(TokioIo::new(io))
            .await?;
        let id = failure.clone();
        let mut held = Held {
            conn: Conn { send, failure },
            open: Arc::default(),
            used: true,
            quiet: 0,
        };
        let lease = held.lease();
        lock(&self.held).push(held);
        let this = Arc::downgrade(&self.held);
        let every = idle / IDLE_CHECKS;
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    ended = &mut connection => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                        }
                        // Closed by the upstream (after its GOAWAY, or at its idle timeout):
                        // no request may be handed to it any more.
                        if let Some(held) = this.upgrade() {
                            remove(&held, &id);
                        }
                        return;
                    }
                    _ = check.tick() => expire_if_idle(&this, &id),
                }
            }
        });
        Ok(lease)
    }
}

/// Idle checks per idle timeout: a connection is let go between one and 1 + 1/this idle
/// timeouts after its last request, so that a default below the usual server timeouts
/// (nginx 75 s, cloud load balancers 60 s) closes it before the server does.
const IDLE_CHECKS: u32 = 4;

fn remove(held: &Mutex<Vec<Held>>, id: &TlsFailure) {
    lock(held).retain(|h| !h.conn.failure.same(id));
}

/// After [`IDLE_CHECKS`] checks in a row without a request, drop the slot's handle. h2 then
/// closes the connection (GOAWAY) once its last stream is done.
fn expire_if_idle(held: &Weak<Mutex<Vec<Held>>>, id: &TlsFailure) {
    let Some(held) = held.upgrade() else {
        return;
    };
    let mut held = lock(&held);
    if let Some(i) = held.iter().position(|h| h.conn.failure.same(id)) {
        let h = &mut held[i];
        h.quiet = if std::mem::take(&mut h.used) {
            0
        } else {
            h.quiet + 1
        };
        if h.quiet >= IDLE_CHECKS {
            held.remove(i);
        }
    }
}

/// How an exchange failed.
pub(super) enum Failed {
    /// The upstream never saw the request: the connection was already closed or going
    /// away. Safe to send again on another connection.
    Unsent(h2::Error),
    /// The upstream refused the stream (REFUSED_STREAM: more streams than it allows at
    /// once, before its SETTINGS said so) and processed nothing; the connection is good.
    Refused(h2::Error),
    /// The request may have reached the upstream.
    Written(h2::Error),
}

/// Sends one request with `send` (a leased connection's handle, taken by value: each clone
/// of it takes the connection's lock once more) and waits for the response head; `open`
/// stays with the response body.
pub(super) async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    open: OpenStream,
    req: Request<()>,
    body: &Bytes,
) -> Result<Response<RecvBody>, Failed> {
    let mut send = send.ready().await.map_err(Failed::Unsent)?;
    let (response, mut stream) = send
        .send_request(req, body.is_empty())
        .map_err(Failed::Unsent)?;
    if !body.is_empty() {
        // Buffered by h2 and sent as the peer's flow-control window allows.
        stream
            .send_data(body.clone(), true)
            .map_err(Failed::Written)?;
    }
    let resp = response.await.map_err(|e| {
        // GOAWAY refuses streams above its last id, REFUSED_STREAM one stream: both unprocessed.
        if e.is_go_away() && e.is_remote() {
            Failed::Unsent(e)
        } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            Failed::Refused(e)
        } else {
            Failed::Written(e)
        }
    })?;
    let (parts, recv) = resp.into_parts();
    let left = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok(Response::from_parts(
        parts,
        RecvBody {
            recv,
            data_done: false,
            left,
            _open: open,
        },
    ))
}

/// A response body read from an h2 stream, returning flow-control credit as it goes.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    /// Bytes still expected, from `content-length`.
    left: Option<u64>,
    /// The stream counted in its connection until the body is dropped.
    _open: OpenStream,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let n = data.len();
                    // Only fails once the stream is gone, which the next poll reports.
                    let _ = self.recv.flow_control().release_capacity(n);
                    self.left = self.left.map(|l| l.saturating_sub(n as u64));
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
