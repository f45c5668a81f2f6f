//! Warnings that can repeat once per request or connection (overload, rate limits, upstream
//! failures, refused handshakes), summarised so that a flood cannot fill a disk: the first of
//! each kind in a [`PERIOD`] is written, the others only counted, and one line with that count
//! follows when the period ends. Metrics keep the exact counts; the log says what and how often.
//!
//! ```ignore
//! if logthrottle::allow("request_failed", reject.reason()) {
//!     tracing::warn!(reason = reject.reason(), "...");
//! }
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per kind per period, plus one summary line.
pub const PERIOD: Duration = Duration::from_secs(1);

/// What a warning is about, and why: `("inbound_handshake", "unknown_ca")`.
type Kind = (&'static str, &'static str);

#[derive(Debug)]
struct Window {
    kind: Kind,
    until: Instant,
    suppressed: u64,
}

/// What to do with one warning.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Write it; first write the summary of the window before, if it left any out.
    Write { summary: Option<u64> },
    /// Left out and counted; `first` if it is the first left out in its window (then the
    /// window's summary must be scheduled).
    Counted { first: bool, until: Instant },
}

/// The windows of every kind seen; a handful of kinds, so a list.
#[derive(Debug, Default)]
struct Throttle(Mutex<Vec<Window>>);

impl Throttle {
    fn check(&self, kind: Kind, now: Instant) -> Verdict {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(w) = windows.iter_mut().find(|w| w.kind == kind) else {
            windows.push(Window {
                kind,
                until: now + PERIOD,
                suppressed: 0,
            });
            return Verdict::Write { summary: None };
        };
        if now < w.until {
            w.suppressed += 1;
            return Verdict::Counted {
                first: w.suppressed == 1,
                until: w.until,
            };
        }
        let left_out = std::mem::take(&mut w.suppressed);
        w.until = now + PERIOD;
        Verdict::Write {
            summary: (left_out > 0).then_some(left_out),
        }
    }

    /// The count left out in the window of `kind` that ends at `until`, taken once.
    fn take_summary(&self, kind: Kind, until: Instant) -> u64 {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        windows
            .iter_mut()
            .find(|w| w.kind == kind && w.until == until)
            .map_or(0, |w| std::mem::take(&mut w.suppressed))
    }
}

static THROTTLE: Throttle = Throttle(Mutex::new(Vec::new()));

fn summarise((kind, reason): Kind, suppressed: u64) {
    tracing::warn!(
        kind,
        reason,
        suppressed,
        period_ms = PERIOD.as_millis() as u64,
        "{suppressed} more {kind} warnings ({reason}) in the past second, left out of the log (the metrics count each one)"
    );
}

/// Whether to write a warning about `kind` for `reason` now. The first of each [`PERIOD`] is written; the
/// others are counted, and a summary line with their number follows when the period ends
/// (written by a timer on the current tokio runtime, or else before the next warning of
/// that kind).
pub fn allow(kind: &'static str, reason: &'static str) -> bool {
    let kind = (kind, reason);
    match THROTTLE.check(kind, Instant::now()) {
        Verdict::Write { summary } => {
            if let Some(n) = summary {
                summarise(kind, n);
            }
            true
        }
        Verdict::Counted { first, until } => {
            if first {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        tokio::time::sleep_until(until.into()).await;
                        let n = THROTTLE.take_summary(kind, until);
                        if n > 0 {
                            summarise(kind, n);
                        }
                    });
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_period_then_the_count() {
        const A: Kind = ("request_failed", "overloaded");
        const B: Kind = ("request_failed", "rate_limited");
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.check(A, t0), Verdict::Write { summary: None });
        let until = t0 + PERIOD;
        assert_eq!(t.check(A, t0), Verdict::Counted { first: true, until });
        assert_eq!(t.check(B, t0), Verdict::Write { summary: None });
        for _ in 0..998 {
            assert_eq!(
                t.check(A, t0 + PERIOD / 2),
                Verdict::Counted {
                    first: false,
                    until
                }
            );
        }
        // The summary is taken once, by the timer or by the next warning.
        assert_eq!(t.take_summary(A, until), 999);
        assert_eq!(t.take_summary(A, until), 0);
        assert_eq!(t.check(A, t0 + PERIOD), Verdict::Write { summary: None });
        assert!(matches!(
            t.check(A, t0 + PERIOD),
            Verdict::Counted { first: true, .. }
        ));
        // No timer ran: the next warning after the window carries the count.
        assert_eq!(
            t.check(A, t0 + PERIOD * 3),
            Verdict::Write { summary: Some(1) }
        );
    }
}
