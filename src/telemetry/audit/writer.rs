//! The writer thread: everything queued goes out with one `write_all` (group commit). An idle
//! writer is woken by the first record and writes it at once; a busy one is never woken, and
//! writes what [`GATHER`] brought at most once per that interval: under load a request costs
//! no wake-up and no system call.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::output::Output;
use super::queue::{Job, Reply, Shared};
use super::AuditError;

/// How long a busy writer gathers records before its next write.
pub const GATHER: Duration = Duration::from_millis(1);

/// Starts the writer thread on `shared`'s queue, writing to `out`.
pub(super) fn spawn(shared: Arc<Shared>, out: Output) -> Result<(), AuditError> {
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let stop = StopOnExit(shared);
            write_loop(&stop.0, out);
        })
        .map(drop)
        .map_err(AuditError::Spawn)
}

/// Marks the writer stopped however its thread ends, so `close()` never waits forever and
/// requests queued after a (never expected) panic resolve as closed instead of hanging.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let orphans = {
            let mut st = self.0.lock();
            st.stopped = true;
            st.lines = 0;
            std::mem::take(&mut st.jobs)
        };
        self.0.done.notify_all();
        for job in orphans {
            if let Job::Line(_, tx) = job {
                self.0.fail(tx, self.0.closed());
            }
        }
    }
}

fn write_loop(s: &Shared, mut out: Output) {
    let mut jobs = Vec::new();
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut waiting = Vec::new();
    loop {
        let last = {
            let mut st = s.lock();
            while st.jobs.is_empty() && !st.closing {
                st.idle = true;
                st = s.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.idle = false;
            st.lines = 0;
            std::mem::swap(&mut st.jobs, &mut jobs);
            st.closing
        };
        for job in jobs.drain(..) {
            match job {
                Job::Line(line, tx) => {
                    batch.extend_from_slice(&line);
                    waiting.push(tx);
                }
                Job::Reopen(reply) => {
                    commit(s, &mut out, &mut batch, &mut waiting);
                    let r = out.reopen();
                    if r.is_err() {
                        s.healthy.store(false, Ordering::Relaxed);
                    }
                    let _ = reply.send(r);
                }
            }
        }
        commit(s, &mut out, &mut batch, &mut waiting);
        if last {
            return;
        }
        // What arrives meanwhile goes out in the next write, without waking this thread.
        std::thread::sleep(GATHER);
    }
}

/// Writes the batch with one `write_all` and answers its receipts. No fsync: once written, the
/// kernel holds the data, so a crash of the process loses nothing that was acknowledged (only a
/// crash of the machine could).
fn commit(
    s: &Shared,
    out: &mut Output,
    batch: &mut Vec<u8>,
    waiting: &mut Vec<oneshot::Sender<Reply>>,
) {
    if waiting.is_empty() {
        return;
    }
    s.writing(true);
    let written = out.write(batch);
    s.writing(false);
    match written {
        Ok(()) => {
            s.counters.written.inc_by(waiting.len() as u64);
            s.healthy.store(true, Ordering::Relaxed);
            for tx in waiting.drain(..) {
                let _ = tx.send(Ok(()));
            }
        }
        Err(e) => {
            s.healthy.store(false, Ordering::Relaxed);
            if crate::telemetry::logthrottle::allow("audit", "write_failed") {
                tracing::error!(
                    target_file = %s.target,
                    records = waiting.len(),
                    error = %e,
                    "audit records could not be written"
                );
            }
            let e = Arc::new(e);
            for tx in waiting.drain(..) {
                let err = AuditError::Write {
                    target: s.target.clone(),
                    source: e.clone(),
                };
                s.fail(tx, err);
            }
        }
    }
    batch.clear();
}
