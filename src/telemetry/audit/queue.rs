//! What the request side and the writer thread share: the queue of lines and reopen
//! requests (a group commit, `telemetry/group.rs`), and the receipt a record's writer answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::AuditError;
use crate::model::config::AuditPath;
use crate::telemetry::group::{Batch, Group};
use crate::telemetry::metrics::AuditCounters;

/// Resolves once its record was written (`Ok`) or could not be (`Err`). Dropping it is fine:
/// the record is written all the same.
pub struct Receipt {
    pub(super) rx: oneshot::Receiver<Reply>,
    pub(super) shared: Arc<Shared>,
}

impl Future for Receipt {
    type Output = Result<(), AuditError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(this.shared.closed())))
    }
}

pub(super) type Reply = Result<(), AuditError>;

pub(super) enum Job {
    Line(Vec<u8>, oneshot::Sender<Reply>),
    Reopen(mpsc::SyncSender<Reply>),
}

/// The records and reopen requests waiting for the writer.
#[derive(Default)]
pub(super) struct Jobs {
    pub(super) jobs: Vec<Job>,
    /// Lines in `jobs`: the queue's bound counts records, not reopen requests.
    pub(super) lines: usize,
}

impl Batch for Jobs {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

pub(super) struct Shared {
    pub(super) target: AuditPath,
    pub(super) capacity: usize,
    pub(super) group: Group<Jobs>,
    pub(super) counters: AuditCounters,
    pub(super) healthy: AtomicBool,
    /// When the write in progress began, in milliseconds after `opened` plus one; 0: none.
    pub(super) writing_since: AtomicU64,
    pub(super) opened: Instant,
}

impl Shared {
    /// The error of a record or reopen the writer will not take: the sink is closed.
    pub(super) fn closed(&self) -> AuditError {
        AuditError::Closed {
            target: self.target.clone(),
        }
    }

    /// Marks a write begun (`true`) or ended.
    pub(super) fn writing(&self, begun: bool) {
        let at = match begun {
            true => self.opened.elapsed().as_millis() as u64 + 1,
            false => 0,
        };
        self.writing_since.store(at, Ordering::Relaxed);
    }

    /// How long the write in progress has taken, if one is.
    pub(super) fn writing_for(&self) -> Option<Duration> {
        match self.writing_since.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }

    pub(super) fn fail(&self, tx: oneshot::Sender<Reply>, err: AuditError) {
        self.counters.failed.inc();
        let _ = tx.send(Err(err));
    }
}
