//! Worker threads for the backend listener: one single-threaded tokio runtime each.
//!
//! Each worker accepts from the shared listening socket, serves its connections and keeps its
//! own upstream connection pool, so a request never hops between threads: no cross-thread
//! wake-ups and no contended pool lock on the hot path.

use std::cell::Cell;

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

/// Per-worker data aligned to two cache lines: what one worker writes never shares a line,
/// nor the line prefetched beside it, with another worker's, so a request does not pull
/// lines from the other cores.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// This worker's entry of a per-worker slice (shared when there are fewer entries than workers).
pub fn local<T>(per_worker: &[Padded<T>]) -> &T {
    &per_worker[index() % per_worker.len()]
}
