//! Log output in batches: a request appends its access-log line to the pending batch, and a
//! background thread writes it to stderr, by the group commit of `group.rs`, at most once
//! per [`FLUSH_EVERY`]: under load a line costs no system call and no wake-up.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::group::Group;

/// How long a line may wait in the batch while the writer is busy.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Lines beyond this many buffered bytes (stderr not keeping up) are dropped and counted.
const MAX_BUFFERED: usize = 8 << 20;

/// How long the last lines may take to be written at exit.
const LAST_WRITE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Shared {
    group: Group<Vec<u8>>,
    dropped: AtomicU64,
}

/// The `MakeWriter` given to tracing-subscriber.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Writes what is batched and stops the writer thread when dropped; keep it until exit.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread; its output goes to `out`.
pub fn batched(mut out: impl Write + Send + 'static) -> (BatchWriter, FlushGuard) {
    let shared = Arc::new(Shared::default());
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            s.group.run(FLUSH_EVERY, |batch| {
                let dropped = s.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let _ = writeln!(
                        batch,
                        "amity-mtls-proxy: {dropped} log lines dropped: stderr did not keep up"
                    );
                }
                let _ = out.write_all(batch).and_then(|()| out.flush());
                batch.clear();
            });
            s.group.stopped();
        })
        .ok();
    (BatchWriter(shared.clone()), FlushGuard { shared, thread })
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if self.shared.group.close(LAST_WRITE) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let added = self.0.group.add(|buf| {
            let room = buf.len() + data.len() <= MAX_BUFFERED;
            if room {
                buf.extend_from_slice(data);
            }
            room
        });
        if added == Some(false) {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A `Write` that records into shared memory.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_flush_interval_and_at_exit() {
        let sink = Sink::default();
        let (mut w, guard) = batched(sink.clone());
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        let t = std::time::Instant::now();
        while sink.0.lock().unwrap().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "nothing written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&sink.0.lock().unwrap()[..], b"one\ntwo\n");
        w.write_all(b"three\n").unwrap();
        drop(guard);
        assert_eq!(&sink.0.lock().unwrap()[..], b"one\ntwo\nthree\n");
    }
}
