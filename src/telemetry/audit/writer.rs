//! The audit trail's writer thread: the group commit of `telemetry/group.rs`, every batch of
//! records going out with one `write_all`, each answered in its receipt.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::output::Output;
use super::queue::{Job, Jobs, Reply, Shared};
use super::AuditError;

/// How long a busy writer gathers records before its next write.
pub const GATHER: Duration = Duration::from_millis(1);

/// Starts the writer thread on `shared`'s queue, writing to `out`.
pub(super) fn spawn(shared: Arc<Shared>, mut out: Output) -> Result<(), AuditError> {
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let stop = StopOnExit(shared);
            let s = &*stop.0;
            let (mut bytes, mut waiting) = (Vec::with_capacity(64 * 1024), Vec::new());
            s.group.run(GATHER, |batch| {
                write_batch(s, &mut out, batch, &mut bytes, &mut waiting)
            });
        })
        .map(drop)
        .map_err(AuditError::Spawn)
}

/// Marks the writer stopped however its thread ends, so `close()` never waits forever and
/// requests queued after a (never expected) panic resolve as closed instead of hanging.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        for job in self.0.group.stopped().jobs {
            if let Job::Line(_, tx) = job {
                self.0.fail(tx, self.0.closed());
            }
        }
    }
}

/// Writes one batch: its lines, in order, with one write, and each reopen between the lines
/// queued before it and those after.
fn write_batch(
    s: &Shared,
    out: &mut Output,
    batch: &mut Jobs,
    bytes: &mut Vec<u8>,
    waiting: &mut Vec<oneshot::Sender<Reply>>,
) {
    batch.lines = 0;
    for job in batch.jobs.drain(..) {
        match job {
            Job::Line(line, tx) => {
                bytes.extend_from_slice(&line);
                waiting.push(tx);
            }
            Job::Reopen(reply) => {
                commit(s, out, bytes, waiting);
                let r = out.reopen();
                if r.is_err() {
                    s.healthy.store(false, Ordering::Relaxed);
                }
                let _ = reply.send(r);
            }
        }
    }
    commit(s, out, bytes, waiting);
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
