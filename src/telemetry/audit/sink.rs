//! The handle to the audit trail's writer: queue a line and get a [`Receipt`] saying whether
//! it reached the file, so a mint that must not happen without its record
//! (`audit.required`) can wait for it; reopen after rotation; close at shutdown.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::output::Output;
use super::queue::{Job, Receipt, Shared};
use super::{writer, AuditError};
use crate::model::config::AuditPath;
use crate::telemetry::group::Group;
use crate::telemetry::metrics::AuditCounters;

/// Records waiting beyond this many are refused at once: memory stays bounded when the file
/// does not keep up, and a request never waits for room.
pub const MAX_QUEUED: usize = 1 << 16;

/// Handle to the writer thread; cheap to clone. The thread ends, after writing everything
/// queued, when the last handle is dropped or on [`AuditSink::close`].
#[derive(Clone)]
pub struct AuditSink {
    shared: Arc<Shared>,
    _last: Arc<CloseOnDrop>,
}

/// Held only by handles (not by the writer thread or receipts), so it drops with the last one.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.group.request_close();
    }
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSink")
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl AuditSink {
    /// Opens the target (a file is created with mode 0640 if missing, and appended to) in the
    /// caller's thread, so that a bad path is an error now, then starts the writer thread.
    /// Records are counted in `counters`.
    pub fn open(target: AuditPath, counters: AuditCounters) -> Result<Self, AuditError> {
        let out = Output::open(&target)?;
        let sink = Self::idle(target, MAX_QUEUED, counters);
        sink.start(out)?;
        Ok(sink)
    }

    /// A sink whose writer thread is not started yet.
    fn idle(target: AuditPath, capacity: usize, counters: AuditCounters) -> Self {
        let shared = Arc::new(Shared {
            target,
            capacity,
            group: Group::default(),
            counters,
            healthy: AtomicBool::new(true),
            writing_since: AtomicU64::new(0),
            opened: std::time::Instant::now(),
        });
        Self {
            _last: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        }
    }

    fn start(&self, out: Output) -> Result<(), AuditError> {
        writer::spawn(self.shared.clone(), out)
    }

    /// Where this sink writes.
    pub fn target(&self) -> AuditPath {
        self.shared.target.clone()
    }

    /// Queues one line (see [`AuditRecord::to_line`]); the receipt resolves once it was written
    /// or could not be. A full queue or a closed sink fails the receipt at once.
    pub fn write(&self, line: Vec<u8>) -> Receipt {
        let (tx, rx) = oneshot::channel();
        let receipt = Receipt {
            rx,
            shared: self.shared.clone(),
        };
        let s = &*self.shared;
        let mut job = Some((line, tx));
        let queued = s.group.add(|batch| {
            if batch.lines >= s.capacity {
                return;
            }
            if let Some((line, tx)) = job.take() {
                batch.jobs.push(Job::Line(line, tx));
                batch.lines += 1;
            }
        });
        let Some((_, tx)) = job else {
            return receipt;
        };
        let refusal = match queued {
            None => s.closed(),
            Some(()) => AuditError::QueueFull {
                target: s.target.clone(),
                capacity: s.capacity,
            },
        };
        if matches!(refusal, AuditError::QueueFull { .. }) {
            // Records are being refused: not healthy until a batch is written again.
            s.healthy.store(false, Ordering::Relaxed);
            if crate::telemetry::logthrottle::allow("audit", "queue_full") {
                tracing::error!(error = %refusal, "audit record dropped");
            }
        }
        s.fail(tx, refusal);
        receipt
    }

    /// Reopens the file at its path (after a logrotate-style rename): everything queued before
    /// is written to the old file first, so no record is lost. Returns once reopened. Blocks,
    /// for as long as the write in progress takes; call it from a blocking context (reload).
    /// A no-op for standard error. After a failure, every batch tries the path again first and
    /// its records fail until the path opens: records never go anywhere but the configured path.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let s = &*self.shared;
        if s.target == AuditPath::Stderr {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if s.group
            .add(|batch| batch.jobs.push(Job::Reopen(tx)))
            .is_none()
        {
            return Err(s.closed());
        }
        rx.recv().unwrap_or_else(|_| Err(s.closed()))
    }

    /// False after a failed write or reopen (or a full queue), and while a write has taken
    /// longer than `stuck` (a hung volume); true again after a batch is written.
    pub fn healthy(&self, stuck: std::time::Duration) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
            && self.shared.writing_for().is_none_or(|d| d <= stuck)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.shared.counters.written.get()
    }

    /// Records that could not be written (write error, full queue, closed sink).
    pub fn failed(&self) -> u64 {
        self.shared.counters.failed.get()
    }

    /// Writes everything queued, then stops the writer thread; returns when it has stopped,
    /// or after `bound` (a write hung on its volume), saying whether it stopped. Blocks: call
    /// it off the event loop. Later writes and reopens fail with [`AuditError::Closed`].
    pub fn close(&self, bound: std::time::Duration) -> bool {
        self.shared.group.close(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::audit::AuditRecord;
    use std::collections::HashSet;
    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// Polls a future to completion on this thread (receipts need no runtime).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn record(request_id: &str) -> Vec<u8> {
        AuditRecord::example("bot-7", request_id).to_line()
    }

    const STUCK: Duration = Duration::from_secs(5);

    /// The request ids of the file's lines, checking that every line is a whole JSON object.
    fn ids(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "last line unfinished"
        );
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("line is JSON");
                v["request_id"].as_str().expect("request_id").to_owned()
            })
            .collect()
    }

    fn file_sink(dir: &tempfile::TempDir) -> (AuditSink, PathBuf) {
        let path = dir.path().join("audit.jsonl");
        let sink =
            AuditSink::open(AuditPath::File(path.clone()), AuditCounters::default()).unwrap();
        (sink, path)
    }

    #[test]
    fn receipt_resolves_after_the_line_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = file_sink(&dir);
        let line = record("r1");
        block_on(sink.write(line.clone())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), line);
        assert_eq!(
            (sink.written(), sink.failed(), sink.healthy(STUCK)),
            (1, 0, true)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o027,
                0,
                "group-writable or world-readable: {mode:o}"
            );
        }
    }

    #[test]
    fn eight_threads_of_2000_writes_give_16000_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = file_sink(&dir);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    (0..2000)
                        .map(|i| sink.write(record(&format!("{t}-{i}"))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for r in t.join().unwrap() {
                block_on(r).unwrap();
            }
        }
        assert!(sink.close(STUCK));
        let ids = ids(&path);
        assert_eq!(ids.len(), 16_000);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 16_000);
        assert_eq!((sink.written(), sink.failed()), (16_000, 0));
    }

    #[test]
    fn rename_then_reopen_mid_stream_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = file_sink(&dir);
        let rotated = dir.path().join("audit.jsonl.1");
        let sent = Arc::new(AtomicUsize::new(0));
        let (go_on, resume) = mpsc::channel::<()>();
        let writer = {
            let (sink, sent) = (sink.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut receipts = Vec::new();
                for i in 0..10_000 {
                    // Half the records race the rename; the rest come after reopen() returned.
                    if i == 5_000 {
                        resume.recv().unwrap();
                    }
                    receipts.push(sink.write(record(&i.to_string())));
                    sent.store(i + 1, Ordering::SeqCst);
                }
                receipts
            })
        };
        while sent.load(Ordering::SeqCst) < 2_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::rename(&path, &rotated).unwrap();
        let before = sent.load(Ordering::SeqCst);
        sink.reopen().unwrap();
        let after = sent.load(Ordering::SeqCst);
        go_on.send(()).unwrap();
        for r in writer.join().unwrap() {
            block_on(r).unwrap();
        }
        assert!(sink.close(STUCK));

        let old: Vec<usize> = ids(&rotated).iter().map(|s| s.parse().unwrap()).collect();
        let new: Vec<usize> = ids(&path).iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(old.len() + new.len(), 10_000);
        let all: HashSet<_> = old.iter().chain(&new).copied().collect();
        assert_eq!(all, (0..10_000).collect());
        // Queued before reopen() was called: in the old file; written after it returned: new.
        assert!((0..before).all(|i| old.contains(&i)), "before = {before}");
        let new: HashSet<_> = new.into_iter().collect();
        assert!(
            (after + 1..10_000).all(|i| new.contains(&i)),
            "after = {after}"
        );
        assert_eq!(sink.written(), 10_000);
    }

    #[test]
    fn open_fails_naming_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("audit.jsonl");
        let err =
            AuditSink::open(AuditPath::File(path.clone()), AuditCounters::default()).unwrap_err();
        assert!(matches!(&err, AuditError::Open { path: p, .. } if *p == path));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_failing_device_fails_receipts_and_health() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return; // Linux only: every write to it fails with ENOSPC.
        }
        let sink = AuditSink::open(AuditPath::File(full.into()), AuditCounters::default()).unwrap();
        let receipts: Vec<_> = (0..5).map(|i| sink.write(record(&i.to_string()))).collect();
        for r in receipts {
            let err = block_on(r).unwrap_err();
            assert!(matches!(err, AuditError::Write { .. }), "{err}");
            assert!(err.to_string().contains("/dev/full"), "{err}");
        }
        assert_eq!(
            (sink.written(), sink.failed(), sink.healthy(STUCK)),
            (0, 5, false)
        );
    }

    #[test]
    fn a_failed_reopen_fails_records_until_the_path_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let sink =
            AuditSink::open(AuditPath::File(path.clone()), AuditCounters::default()).unwrap();
        block_on(sink.write(record("a"))).unwrap();

        std::fs::rename(&path, &rotated).unwrap();
        std::fs::remove_dir(&sub).unwrap();
        let err = sink.reopen().unwrap_err();
        assert!(
            matches!(&err, AuditError::Open { path: p, .. } if *p == path),
            "{err}"
        );
        assert!(!sink.healthy(STUCK));
        assert!(block_on(sink.write(record("b"))).is_err());
        assert_eq!(sink.failed(), 1);

        std::fs::create_dir(&sub).unwrap();
        block_on(sink.write(record("c"))).unwrap();
        assert!(sink.healthy(STUCK));
        assert_eq!(ids(&rotated), ["a"]);
        assert_eq!(ids(&path), ["c"]);
    }

    #[test]
    fn close_writes_everything_queued_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = file_sink(&dir);
        for i in 0..1000 {
            drop(sink.write(record(&i.to_string())));
        }
        assert!(sink.close(STUCK));
        assert_eq!(ids(&path).len(), 1000);
        let err = block_on(sink.write(record("late"))).unwrap_err();
        assert!(matches!(err, AuditError::Closed { .. }), "{err}");
        assert!(matches!(sink.reopen(), Err(AuditError::Closed { .. })));
        assert_eq!((sink.written(), sink.failed()), (1000, 1));
        assert!(sink.close(STUCK)); // a second close returns at once
    }

    #[test]
    fn dropping_the_last_handle_writes_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, path) = file_sink(&dir);
        let other = sink.clone();
        let receipts: Vec<_> = (0..100)
            .map(|i| other.write(record(&i.to_string())))
            .collect();
        drop(other);
        drop(sink);
        for r in receipts {
            block_on(r).unwrap();
        }
        assert_eq!(ids(&path).len(), 100);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let target = AuditPath::File(dir.path().join("audit.jsonl"));
        // Writer not started yet: nothing leaves the queue.
        let sink = AuditSink::idle(target.clone(), 3, AuditCounters::default());
        let queued: Vec<_> = (0..3).map(|i| sink.write(record(&i.to_string()))).collect();
        let err = block_on(sink.write(record("3"))).unwrap_err();
        assert!(
            matches!(err, AuditError::QueueFull { capacity: 3, .. }),
            "{err}"
        );
        assert_eq!(sink.failed(), 1);
        assert!(!sink.healthy(STUCK));

        sink.start(Output::open(&target).unwrap()).unwrap();
        for r in queued {
            block_on(r).unwrap();
        }
        assert!(sink.healthy(STUCK));
        assert_eq!(sink.written(), 3);
    }

    #[test]
    fn standard_error_takes_records_and_ignores_reopen() {
        let sink = AuditSink::open(AuditPath::Stderr, AuditCounters::default()).unwrap();
        block_on(sink.write(b"{\"test\":\"audit to standard error\"}\n".to_vec())).unwrap();
        sink.reopen().unwrap();
        assert_eq!(sink.written(), 1);
    }
}
