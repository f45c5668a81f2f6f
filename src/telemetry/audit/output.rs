//! Where the writer writes: a file opened for appending (reopened after a rotation or a
//! failure) or standard error, each batch written whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::AuditError;
use crate::model::config::AuditPath;

/// The writer thread's end of the target.
pub(super) struct Output {
    /// `None` for standard error.
    path: Option<PathBuf>,
    /// `None` after a failed write or reopen: the next batch opens the path first.
    file: Option<File>,
    /// The last write stopped inside a line; the next starts with a newline so that the
    /// fragment stays on a line of its own and later records still parse.
    torn: bool,
}

impl Output {
    pub(super) fn open(target: &AuditPath) -> Result<Self, AuditError> {
        let (path, file) = match target {
            AuditPath::Stderr => (None, None),
            AuditPath::File(p) => (Some(p.clone()), Some(open_append(p).map_err(open_err(p))?)),
        };
        Ok(Self {
            path,
            file,
            torn: false,
        })
    }

    pub(super) fn reopen(&mut self) -> Result<(), AuditError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        // Dropped even on failure, so that nothing more goes to a renamed file.
        self.file = None;
        self.file = Some(open_append(path).map_err(open_err(path))?);
        Ok(())
    }

    pub(super) fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        let Some(path) = &self.path else {
            return write_whole(&mut io::stderr().lock(), batch, &mut self.torn);
        };
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(open_append(path)?),
        };
        let r = write_batch(file, batch, &mut self.torn);
        if r.is_err() {
            self.file = None;
        }
        r
    }
}

/// Opens for appending (`O_APPEND`: every write lands at the end even if another process
/// appends too), creating the file with mode 0640 if missing. Unbuffered: a batch is one write.
fn open_append(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
    o.open(path)
}

/// A file that a failed batch can be cut back from.
trait CutBack: Write {
    /// Removes the last `n` bytes.
    fn cut_back(&mut self, n: u64) -> io::Result<()>;
}

impl CutBack for File {
    fn cut_back(&mut self, n: u64) -> io::Result<()> {
        let len = self.metadata()?.len();
        self.set_len(len.saturating_sub(n))
    }
}

/// Writes the batch whole or not at all: what part of a failed one went in is cut off again (a
/// full disk takes a truncation). Only if that fails too does the next batch end the torn line
/// first.
fn write_batch(f: &mut impl CutBack, batch: &[u8], torn: &mut bool) -> io::Result<()> {
    let (was_torn, mut written) = (*torn, 0);
    let r = write_counted(f, batch, torn, &mut written);
    if r.is_err() && written > 0 && f.cut_back(written).is_ok() {
        *torn = was_torn;
    }
    r
}

/// Writes all of `batch`, first ending a line a failed earlier write left unfinished.
fn write_whole(w: &mut impl Write, batch: &[u8], torn: &mut bool) -> io::Result<()> {
    write_counted(w, batch, torn, &mut 0)
}

/// [`write_whole`], adding the bytes written to `written`.
fn write_counted(
    w: &mut impl Write,
    batch: &[u8],
    torn: &mut bool,
    written: &mut u64,
) -> io::Result<()> {
    if *torn {
        write_tracked(w, b"\n", torn, written)?;
    }
    write_tracked(w, batch, torn, written)
}

/// `write_all` that keeps track of whether the bytes written so far end a line.
fn write_tracked(
    w: &mut impl Write,
    mut data: &[u8],
    torn: &mut bool,
    written: &mut u64,
) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(n) => {
                let Some((done, rest)) = data.split_at_checked(n).filter(|_| n > 0) else {
                    return Err(io::ErrorKind::WriteZero.into());
                };
                *torn = done.last() != Some(&b'\n');
                *written += n as u64;
                data = rest;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Open {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::audit::AuditRecord;

    fn record(request_id: &str) -> Vec<u8> {
        AuditRecord::example("bot-7", request_id).to_line()
    }

    /// Takes `budget` bytes, then fails every write.
    struct Flaky {
        out: Vec<u8>,
        budget: usize,
    }

    impl Write for Flaky {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let n = d.len().min(self.budget);
            self.budget -= n;
            self.out.extend_from_slice(&d[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl CutBack for Flaky {
        fn cut_back(&mut self, n: u64) -> io::Result<()> {
            let len = self.out.len() - n as usize;
            self.out.truncate(len);
            Ok(())
        }
    }

    #[test]
    fn a_batch_the_disk_filled_up_in_leaves_no_part_of_itself() {
        let mut w = Flaky {
            out: Vec::new(),
            budget: usize::MAX,
        };
        let mut torn = false;
        write_batch(&mut w, &record("first"), &mut torn).unwrap();
        // The disk fills halfway through the next batch.
        w.budget = 40;
        let batch = [record("withheld-1"), record("withheld-2")].concat();
        assert!(write_batch(&mut w, &batch, &mut torn).is_err());
        assert!(!torn);
        w.budget = usize::MAX;
        write_batch(&mut w, &record("later"), &mut torn).unwrap();
        let text = String::from_utf8(w.out).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("every line parses");
                v["request_id"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(ids, ["first", "later"]);
    }

    #[test]
    fn a_line_cut_by_a_failed_write_does_not_swallow_the_next_record() {
        let mut w = Flaky {
            out: Vec::new(),
            budget: 5,
        };
        let mut torn = false;
        assert!(write_whole(&mut w, &record("lost"), &mut torn).is_err());
        w.budget = usize::MAX;
        write_whole(&mut w, &record("kept"), &mut torn).unwrap();
        let text = String::from_utf8(w.out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["request_id"], "kept");
    }
}
