//! The timer that bounds each request's wait for the upstream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

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
pub(super) fn fired(
    sleep: Pin<&mut tokio::time::Sleep>,
    first: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    let due = std::mem::take(first) || sleep.is_elapsed();
    due && sleep.poll(cx).is_ready()
}
