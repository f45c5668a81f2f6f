//! The response-body watchdog: a body keeps its request in flight until hyper lets go of it,
//! and one the backend leaves untaken for `timeouts.send_ms` is given up on.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::{Activity, Busy, PARK_AFTER};

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
/// [`serve`](super::serve)). A body that is complete with its first frame, as a token
/// response is, is never watched: no timer, no task.
pub struct Tracked<B> {
    body: Delivery<B>,
    busy: Busy,
}

/// How a response body goes to the backend.
enum Delivery<B> {
    /// Not watched (yet).
    Direct(B),
    /// Streaming, shared with its watchdog.
    Timed(Arc<Watch<B>>),
    /// Only while moving from `Direct` to `Timed`.
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
            body: Delivery::Direct(body),
            busy,
        }
    }
}

impl<B: Send + 'static> Tracked<B> {
    /// Starts watching the body: hyper has just taken a frame and there is more to come.
    fn watch(&mut self) {
        let Delivery::Direct(body) = std::mem::replace(&mut self.body, Delivery::Moving) else {
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
        self.body = Delivery::Timed(w);
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
        if let Delivery::Timed(w) = &self.body {
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
            Delivery::Direct(body) => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                let more = matches!(&r, Poll::Ready(Some(Ok(_)))) && !body.is_end_stream();
                if more {
                    this.watch();
                }
                r
            }
            Delivery::Timed(w) => {
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
            Delivery::Moving => Poll::Ready(None),
        };
        r.map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Delivery::Direct(body) => body.is_end_stream(),
            // Given up on: not the end, or hyper would end the caller's stream as complete.
            Delivery::Timed(w) => lock(&w.body).as_ref().is_some_and(|b| b.is_end_stream()),
            Delivery::Moving => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.body {
            Delivery::Direct(body) => body.size_hint(),
            Delivery::Timed(w) => lock(&w.body)
                .as_ref()
                .map(|b| b.size_hint())
                .unwrap_or_default(),
            Delivery::Moving => hyper::body::SizeHint::with_exact(0),
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
        let busy = activity.begin();
        let mut whole = Tracked::new(Full::new(Bytes::from_static(b"token")), busy);
        assert!(whole.frame().await.unwrap().unwrap().is_data());
        assert!(
            matches!(whole.body, Delivery::Direct(_)),
            "a complete body got a watchdog"
        );

        let busy = activity.begin();
        let frames = futures_util::stream::iter([b"a".as_slice(), b"b"].map(|b| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b)))
        }));
        let mut streaming = Tracked::new(StreamBody::new(frames), busy);
        assert!(streaming.frame().await.unwrap().unwrap().is_data());
        assert!(matches!(streaming.body, Delivery::Timed(_)));
    }
}
