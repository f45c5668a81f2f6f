//! What the status page reads of the metrics, as typed values: prometheus-client's families
//! cannot be iterated and its histograms give no bucket counts, so the request counters are
//! listed as they are made and the latency is counted by bucket once more.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::labels::{AppName, RequestLabels};

/// Upper bounds of the upstream latency buckets, in seconds, doubling from 1 ms; a last one,
/// +Inf, holds the slower.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768,
];

pub(super) fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

/// `requests`, with every series it holds listed for [`Metrics::traffic`]: a family cannot be
/// iterated.
#[derive(Clone, Default)]
pub(super) struct Requests {
    pub(super) family: Family<RequestLabels, Counter>,
    listed: Arc<Mutex<HashMap<RequestLabels, Counter>>>,
}

impl Requests {
    /// The counter of `labels`, listed when it is new.
    pub(super) fn counter(&self, labels: RequestLabels) -> Counter {
        if let Some(c) = self.family.get(&labels) {
            return c.clone();
        }
        let c = self.family.get_or_create_owned(&labels);
        self.listed().entry(labels).or_insert_with(|| c.clone());
        c
    }

    /// Counts one request; a series seen before costs what the family alone would.
    pub(super) fn inc(&self, labels: RequestLabels) {
        if let Some(c) = self.family.get(&labels) {
            c.inc();
        } else {
            self.counter(labels).inc();
        }
    }

    fn listed(&self) -> MutexGuard<'_, HashMap<RequestLabels, Counter>> {
        // Poisoned or not, the map holds only handles onto the counters.
        self.listed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An app's series that [`Metrics::traffic`] adds up.
#[derive(Clone)]
pub(super) struct AppSeries {
    pub(super) upstream_requests: Counter,
    pub(super) handshakes: Counter,
    pub(super) latency: Latency,
}

/// An app's upstream latency: the exported histogram, and its counts by bucket once more,
/// for the status page (the histogram does not give them).
#[derive(Clone)]
pub struct Latency {
    histogram: Histogram,
    /// Not cumulative; the last is +Inf's.
    buckets: Arc<[AtomicU64; LATENCY_BOUNDS.len() + 1]>,
}

impl Latency {
    /// Counting into `histogram`, the exported one.
    pub(super) fn new(histogram: Histogram) -> Self {
        Self {
            histogram,
            buckets: Arc::default(),
        }
    }

    /// Observes `secs` in the histogram and in the status page's buckets.
    pub fn observe(&self, secs: f64) {
        self.histogram.observe(secs);
        // Inclusive upper bounds, NaN in +Inf: as the histogram counts.
        let i = LATENCY_BOUNDS
            .iter()
            .position(|&upper| upper >= secs)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// The figures the status page shows, every app added up since start.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Requests answered, by route class and status.
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Requests sent upstream, retries included.
    pub upstream_requests: u64,
    /// New upstream connections, one TLS handshake each.
    pub handshakes: u64,
    /// Upstream latency as cumulative buckets, `(upper bound in seconds, count)`, the last
    /// +Inf.
    pub latency: Vec<(f64, u64)>,
}

/// Every app's series added up: [`super::metrics::Metrics::traffic`].
pub(super) fn sum(requests: &Requests, apps: &Mutex<HashMap<AppName, AppSeries>>) -> Traffic {
    let mut t = Traffic::default();
    for (l, c) in requests.listed().iter() {
        *t.requests.entry((l.route, l.status)).or_default() += c.get();
    }
    let mut latency = [0; LATENCY_BOUNDS.len() + 1];
    for a in apps.lock().unwrap_or_else(PoisonError::into_inner).values() {
        t.upstream_requests += a.upstream_requests.get();
        t.handshakes += a.handshakes.get();
        for (sum, n) in latency.iter_mut().zip(a.latency.buckets.iter()) {
            *sum += n.load(Ordering::Relaxed);
        }
    }
    let mut below = 0;
    t.latency = LATENCY_BOUNDS
        .into_iter()
        .chain([f64::INFINITY])
        .zip(latency)
        .map(|(upper, n)| {
            below += n;
            (upper, below)
        })
        .collect();
    t
}
