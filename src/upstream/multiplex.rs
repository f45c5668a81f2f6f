//! One HTTP/2 connection per worker and certificate, used through the h2 crate directly.
//!
//! With a single multiplexed connection per worker there is nothing to pool: hyper-util's
//! checkout (a hashed pool key, large futures moved around) and hyper's client dispatch (a
//! channel, a oneshot and a task hop per request) cost about as much as the HTTP/2 exchange
//! itself. Here a request goes straight into the connection's stream table.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;

use super::{TlsFailure, Watched};
use crate::workers::Padded;

// hyper's HTTP/2 client settings, kept as they were when requests went through hyper.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;
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

struct Held {
    conn: Conn,
    /// A request used it since the last idle check.
    used: bool,
}

/// One worker's connection for one certificate.
#[derive(Default)]
pub(super) struct Slot {
    /// Locked by every request of the worker: padded, so that it shares no line with
    /// another worker's slot (they are made one after the other, at reload).
    held: Arc<Padded<Mutex<Option<Held>>>>,
    /// Requests that find no connection wait for the one being made rather than make their own.
    connecting: tokio::sync::Mutex<()>,
}

fn lock(held: &Mutex<Option<Held>>) -> MutexGuard<'_, Option<Held>> {
    // Nothing in the critical sections can panic midway; a poisoned lock still holds good state.
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// The connection, if there is one.
    pub(super) fn current(&self) -> Option<Conn> {
        let mut held = lock(&self.held);
        let h = held.as_mut()?;
        h.used = true;
        Some(h.conn.clone())
    }

    /// Lets go of the connection `id` names, if the slot still holds it, so that the next
    /// request makes a new one.
    pub(super) fn forget(&self, id: &TlsFailure) {
        let mut held = lock(&self.held);
        if held.as_ref().is_some_and(|h| h.conn.failure.same(id)) {
            *held = None;
        }
    }

    /// Waits until no other request of this worker is making a connection.
    pub(super) async fn connecting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.connecting.lock().await
    }

    /// Starts HTTP/2 on a new TLS stream, drives it on this thread's runtime and keeps it.
    /// A connection unused for `idle` (checked every `idle`) is let go.
    pub(super) async fn start(&self, io: Watched, idle: Duration) -> Result<Conn, h2::Error> {
        let failure = io.failure.clone();
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(TokioIo::new(io))
            .await?;
        let conn = Conn { send, failure };
        *lock(&self.held) = Some(Held {
            conn: conn.clone(),
            used: true,
        });
        let this = Arc::downgrade(&self.held);
        let id = conn.failure.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut check = tokio::time::interval_at(tokio::time::Instant::now() + idle, idle);
            loop {
                tokio::select! {
                    ended = &mut connection => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                        }
                        return;
                    }
                    _ = check.tick() => expire_if_idle(&this, &id),
                }
            }
        });
        Ok(conn)
    }
}

/// Second idle check without a request: drop the slot's handle. h2 then closes the
/// connection (GOAWAY) once its last stream is done.
fn expire_if_idle(held: &Weak<Padded<Mutex<Option<Held>>>>, id: &TlsFailure) {
    let Some(held) = held.upgrade() else {
        return;
    };
    let mut held = lock(&held);
    match held.as_mut() {
        Some(h) if h.conn.failure.same(id) && h.used => h.used = false,
        Some(h) if h.conn.failure.same(id) => *held = None,
        _ => {}
    }
}

/// How an exchange failed.
pub(super) enum Failed {
    /// The upstream never saw the request: the connection was already closed, or it
    /// refused the stream. Safe to send again on another connection.
    Unsent(h2::Error),
    /// The request may have reached the upstream.
    Sent(h2::Error),
}

/// Sends one request with `send` (a connection's handle, taken by value: each clone of it
/// takes the connection's lock once more) and waits for the response head.
pub(super) async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    req: Request<()>,
    body: &Bytes,
) -> Result<Response<RecvBody>, Failed> {
    let mut send = send.ready().await.map_err(Failed::Unsent)?;
    let (response, mut stream) = send
        .send_request(req, body.is_empty())
        .map_err(Failed::Unsent)?;
    if !body.is_empty() {
        // Buffered by h2 and sent as the peer's flow-control window allows.
        stream.send_data(body.clone(), true).map_err(Failed::Sent)?;
    }
    let resp = response.await.map_err(|e| {
        // GOAWAY refuses streams above its last id, REFUSED_STREAM one stream: both unprocessed.
        if (e.is_go_away() && e.is_remote()) || e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            Failed::Unsent(e)
        } else {
            Failed::Sent(e)
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
        },
    ))
}

/// A response body read from an h2 stream, returning flow-control credit as it goes.
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    /// Bytes still expected, from `content-length`.
    left: Option<u64>,
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
