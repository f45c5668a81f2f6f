//! Worker threads for the backend listener: one single-threaded tokio runtime each.
//!
//! Each worker accepts from the shared listening socket, serves its connections and keeps its
//! own upstream connection pool, so a request never hops between threads: no cross-thread
//! wake-ups and no contended pool lock on the hot path.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The configured worker count, with 0 meaning one per CPU core.
pub fn resolve(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// This thread's worker index (0 outside worker threads).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the current thread as worker `i`.
pub fn set_index(i: usize) {
    INDEX.with(|c| c.set(i));
}

/// A connection accepted by one worker for another to serve.
pub struct Handoff {
    /// The socket, out of the accepting worker's event loop.
    pub stream: std::net::TcpStream,
    /// The backend's address.
    pub peer: std::net::SocketAddr,
    /// Its place under `limits.max_connections`.
    pub slot: tokio::sync::OwnedSemaphorePermit,
}

/// Open connections per worker. All workers accept from one socket and the kernel wakes
/// whichever it likes: a burst of new connections (a backend's pool starting) could land
/// on one worker while another idles, so an accepting worker ahead by two or more hands
/// the connection to the worker with the fewest.
pub struct Balance {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

impl Balance {
    /// Counters and inboxes for `workers`; the receivers go to the workers in order.
    pub fn new(workers: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|_| AtomicUsize::new(0)).collect();
        let balance = Self {
            open,
            inboxes: inboxes.into(),
        };
        (Arc::new(balance), receivers)
    }

    /// The worker that should serve a connection `me` accepted, if not `me`.
    pub fn destination(&self, me: usize) -> Option<usize> {
        let mine = self.open.get(me)?.load(Ordering::Relaxed);
        let (least, n) = self
            .open
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)?;
        (least != me && n + 1 < mine).then_some(least)
    }

    /// Sends `h` to worker `to`; gives it back if that worker has stopped.
    pub fn hand(&self, to: usize, h: Handoff) -> Result<(), Handoff> {
        match self.inboxes.get(to) {
            Some(inbox) => inbox.send(h).map_err(|e| e.0),
            None => Err(h),
        }
    }

    /// Counts a connection served by worker `w` until the guard drops.
    pub fn serving(self: &Arc<Self>, w: usize) -> Serving {
        if let Some(c) = self.open.get(w) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Serving(self.clone(), w)
    }
}

/// One connection counted for its worker; see [`Balance::serving`].
pub struct Serving(Arc<Balance>, usize);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(c) = self.0.open.get(self.1) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_ahead_by_two_hands_over_to_the_least_loaded() {
        let (b, _inboxes) = Balance::new(3);
        assert_eq!(b.destination(0), None, "all equal");
        let _a = b.serving(0);
        assert_eq!(b.destination(0), None, "ahead by one only");
        let _c = b.serving(0);
        let _d = b.serving(2);
        assert_eq!(b.destination(0), Some(1), "two ahead of worker 1");
        assert_eq!(b.destination(1), None);
        drop(_c);
        assert_eq!(b.destination(0), None, "a closed connection counts down");
        assert_eq!(b.destination(7), None, "no such worker");
    }
}
