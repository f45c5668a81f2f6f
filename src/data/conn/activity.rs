//! A connection's bookkeeping: when it last finished a request, what is in flight, and its
//! parking state, shared by the driver, the parking stream and the response watchdog.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;

/// `timeouts.send_ms`'s default, for an [`Activity`] made without one.
const DEFAULT_SEND: Duration = Duration::from_secs(10);

/// When a connection last finished a request, how many it has in flight, and its parking state.
pub struct Activity {
    pub(super) start: Instant,
    pub(super) last_ms: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    /// The watchdog asks the connection to park at its next idle read.
    pub(super) park: AtomicBool,
    /// Bytes were read since the last write: a request may be partly in hyper's buffer.
    pub(super) unanswered: AtomicBool,
    /// When the first of those bytes arrived, in ms since `start`.
    pub(super) head_ms: AtomicU64,
    /// When the latest request began, in ms since `start`.
    pub(super) began_ms: AtomicU64,
    /// Responses given up on as not taken within `send` (see [`Tracked`](super::Tracked)), still
    /// counted in `in_flight` until hyper lets go of them.
    pub(super) stalled: AtomicUsize,
    /// How long a response body may go untaken.
    pub(super) send: Duration,
    /// Counts the responses given up on.
    pub(super) send_timeouts: Counter,
    /// Wakes the connection's driver when a response is given up on.
    pub(super) wake: AtomicWaker,
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

    pub(super) fn since_start(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// When the request head now arriving must be complete: `None` while nothing unanswered
    /// has been read or a request is in flight (its body has a bound of its own).
    pub(super) fn head_deadline(&self, limit: Duration) -> Option<Instant> {
        (self.quiet() && self.unanswered.load(Ordering::Relaxed)).then(|| {
            self.start + Duration::from_millis(self.head_ms.load(Ordering::Relaxed)) + limit
        })
    }

    pub(super) fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// When the request in flight began, if one is.
    pub(super) fn busy_since(&self) -> Option<u64> {
        (!self.quiet()).then(|| self.began_ms.load(Ordering::Relaxed))
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.began_ms.store(self.since_start(), Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks a request in flight; on drop, records the activity.
pub struct Busy(pub(super) Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_ms.store(a.since_start(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
