//! The audit trail: one JSON line per auth-token mint and per admin call, allowed or
//! refused, written to a file of its own (or standard error), apart from the access log.
//!
//! - `record.rs`: the record and its JSON line;
//! - `sink.rs`: the handle requests write through, and the receipts a required trail waits for;
//! - `queue.rs`: what the handle and the writer thread share;
//! - `writer.rs`: the writer thread, writing what is queued in batches;
//! - `output.rs`: the file (or standard error) the writer writes to, reopened for rotation.

mod output;
mod queue;
mod record;
mod sink;
mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use queue::Receipt;
pub use record::{now_rfc3339, AuditRecord, Decision};
pub use sink::{AuditSink, MAX_QUEUED};
pub use writer::GATHER;

use crate::model::config::AuditPath;

/// Why a record, an open or a reopen failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The audit file could not be opened (at start, on reopen, or before a batch after a
    /// failed write).
    #[error("{}: cannot open audit file: {source}", path.display())]
    Open {
        /// The path that failed.
        path: PathBuf,
        /// The error from the system.
        source: io::Error,
    },
    /// The batch holding the record could not be written; shared by every record in it.
    #[error("{target}: cannot write audit record: {source}")]
    Write {
        /// Where the batch went.
        target: AuditPath,
        /// The error from the system.
        source: Arc<io::Error>,
    },
    /// The queue held [`MAX_QUEUED`] records: the target is not keeping up.
    #[error("{target}: audit record dropped: {capacity} records already waiting to be written")]
    QueueFull {
        /// Where the queue goes.
        target: AuditPath,
        /// How many records the queue holds.
        capacity: usize,
    },
    /// The sink was closed (or its writer thread stopped) before the record was written.
    #[error("{target}: audit sink is closed")]
    Closed {
        /// Where the sink wrote.
        target: AuditPath,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(#[source] io::Error),
}
