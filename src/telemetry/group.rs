//! Group commit, for the log lines and the audit records alike: callers add to a pending batch
//! under a lock, and one writer thread takes the whole batch and writes it at once. An idle
//! writer is woken by the first addition and writes it at once; a busy one is never woken, and
//! writes what the gathering interval brought at most once per interval: under load an
//! addition costs no wake-up and no system call.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// What a batch is: it can be empty, and the writer leaves it empty once written.
pub trait Batch: Default + Send {
    /// Nothing to write.
    fn is_empty(&self) -> bool;
}

impl Batch for Vec<u8> {
    fn is_empty(&self) -> bool {
        <[u8]>::is_empty(self)
    }
}

/// The pending batch and the writer's state.
pub struct Group<B> {
    state: Mutex<State<B>>,
    /// Wakes the writer: work added, or closing.
    work: Condvar,
    /// Wakes `close`: the writer ended.
    done: Condvar,
}

struct State<B> {
    pending: B,
    /// Set by `close`: the writer writes what is pending and ends.
    closing: bool,
    /// Set once the writer has ended.
    stopped: bool,
    /// Set while the writer waits for work: only then does an addition wake it.
    idle: bool,
}

impl<B: Batch> Default for Group<B> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                pending: B::default(),
                closing: false,
                stopped: false,
                idle: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        }
    }
}

impl<B: Batch> Group<B> {
    /// The lock. No code panics while holding it, so a poisoned lock still guards consistent
    /// state and is used as it is.
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds to the pending batch with `add`, waking an idle writer; `None` (and `add` not
    /// called) once closing or stopped.
    pub fn add<R>(&self, add: impl FnOnce(&mut B) -> R) -> Option<R> {
        let mut st = self.lock();
        if st.closing || st.stopped {
            return None;
        }
        let r = add(&mut st.pending);
        if std::mem::take(&mut st.idle) {
            self.work.notify_one();
        }
        Some(r)
    }

    /// The writer thread's loop: hands each batch to `write` (which leaves it empty), at most
    /// once per `gather`; after `close`, writes what is pending and returns.
    pub fn run(&self, gather: Duration, mut write: impl FnMut(&mut B)) {
        let mut batch = B::default();
        loop {
            let last = {
                let mut st = self.lock();
                while st.pending.is_empty() && !st.closing {
                    st.idle = true;
                    st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                st.idle = false;
                std::mem::swap(&mut st.pending, &mut batch);
                st.closing
            };
            write(&mut batch);
            if last {
                return;
            }
            // What arrives meanwhile goes out in the next write, without waking this thread.
            std::thread::sleep(gather);
        }
    }

    /// Marks the writer ended, however its thread ends; returns what was still pending.
    pub fn stopped(&self) -> B {
        let pending = {
            let mut st = self.lock();
            st.stopped = true;
            std::mem::take(&mut st.pending)
        };
        self.done.notify_all();
        pending
    }

    /// Asks the writer to write what is pending and end, without waiting.
    pub fn request_close(&self) {
        self.lock().closing = true;
        self.work.notify_one();
    }

    /// [`Group::request_close`], then waits up to `bound` for the writer to end; whether it
    /// ended.
    pub fn close(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut st = self.lock();
        st.closing = true;
        self.work.notify_one();
        while !st.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn additions_are_written_in_batches_and_everything_before_close() {
        let group = Arc::new(Group::<Vec<u8>>::default());
        let written = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let writer = {
            let (group, written) = (group.clone(), written.clone());
            std::thread::spawn(move || {
                group.run(Duration::from_millis(20), |batch| {
                    written.lock().unwrap().push(std::mem::take(batch));
                });
                group.stopped();
            })
        };
        group.add(|b| b.extend_from_slice(b"a"));
        let t = Instant::now();
        while written.lock().unwrap().is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the idle writer was not woken"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // While the writer gathers, these go out together.
        for _ in 0..100 {
            group.add(|b| b.extend_from_slice(b"b"));
        }
        assert!(group.close(Duration::from_secs(5)));
        writer.join().unwrap();
        let batches = written.lock().unwrap();
        let all: Vec<u8> = batches.concat();
        assert_eq!(all, [&b"a"[..], &[b'b'; 100]].concat());
        assert!(
            batches.len() <= 3,
            "{} writes for 101 additions",
            batches.len()
        );
        assert_eq!(group.add(|_| ()), None, "closed");
    }
}
