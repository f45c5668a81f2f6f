//! Counters and a histogram that each worker updates in a shard of its own.
//!
//! prometheus-client's `Counter` is one atomic and its `Histogram` one mutex for the whole
//! process: with several workers, every request moved those cache lines between cores.
//! Here a worker writes only its own shard, and a scrape adds the shards up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::data::workers::{local, Padded};

/// One shard per core: workers beyond that share shards, which stays correct (every
/// update is atomic), only no longer free of sharing.
fn shard_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(64)))
}

/// A monotonic counter, exported as a Prometheus counter.
#[derive(Clone, Debug)]
pub struct ShardedCounter(Arc<[Padded<AtomicU64>]>);

impl Default for ShardedCounter {
    fn default() -> Self {
        Self((0..shard_count()).map(|_| Padded::default()).collect())
    }
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        local(&self.0).fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every shard.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the finite buckets: 1 ms doubling to about 33 s.
const BUCKETS: usize = 16;

#[derive(Debug, Default)]
struct HistogramShard {
    sum_nanos: AtomicU64,
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: [AtomicU64; BUCKETS + 1],
}

/// A histogram of durations with exponential buckets from 1 ms, exported in seconds.
#[derive(Clone, Debug)]
pub struct DurationHistogram(Arc<[Padded<HistogramShard>]>);

impl Default for DurationHistogram {
    fn default() -> Self {
        Self((0..shard_count()).map(|_| Padded::default()).collect())
    }
}

fn upper_bound_nanos(i: usize) -> u64 {
    1_000_000 << i
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BUCKETS)
            .find(|&i| nanos <= upper_bound_nanos(i))
            .unwrap_or(BUCKETS);
        let shard = local(&self.0);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum in seconds, and (upper bound in seconds, count) per bucket, not cumulative.
    fn totals(&self) -> (f64, Vec<(f64, u64)>) {
        let mut sum = 0u64;
        let mut buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| match i {
                BUCKETS => (f64::INFINITY, 0),
                i => (upper_bound_nanos(i) as f64 / 1e9, 0),
            })
            .collect();
        for shard in self.0.iter() {
            sum = sum.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
            for (total, b) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += b.load(Ordering::Relaxed);
            }
        }
        (sum as f64 / 1e9, buckets)
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, buckets) = self.totals();
        // The count from the buckets themselves, so that it always equals the +Inf bucket.
        let count = buckets.iter().map(|b| b.1).sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = DurationHistogram::default();
        for ms in [0, 1, 2, 3, 40_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (sum, buckets) = h.totals();
        assert!((sum - 40.006).abs() < 1e-9, "{sum}");
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        // 0 and 1 ms in le=0.001, 2 ms in le=0.002, 3 ms in le=0.004, 40 s beyond 32.768 s.
        assert_eq!(&counts[..3], &[2, 1, 1]);
        assert_eq!(counts[BUCKETS], 1);
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert_eq!(buckets[BUCKETS - 1].0, 32.768);
    }

    #[test]
    fn counter_adds_every_thread() {
        let c = ShardedCounter::default();
        std::thread::scope(|s| {
            for i in 0..4 {
                let c = &c;
                s.spawn(move || {
                    crate::data::workers::set_index(i);
                    (0..1000).for_each(|_| c.inc());
                });
            }
        });
        assert_eq!(c.get(), 4000);
    }
}
