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

/// This worker's entry of a per-worker slice (shared when there are fewer entries than workers).
pub fn local<T>(per_worker: &[T]) -> &T {
    &per_worker[index() % per_worker.len()]
}
