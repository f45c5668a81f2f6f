//! The per-caller rate limit (`limits.rate_limit`), kept across reloads: one store of the
//! callers' states lives as long as the limit is configured, and each generation reads it with
//! its own quota. A reload hands no caller a fresh burst, and a changed limit applies to the
//! counts so far. Callers whose state is back to fresh are swept out in amortised constant time
//! per call.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::nanos::Nanos;
use governor::state::keyed::{DefaultKeyedStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use crate::model::config::RateLimitConfig;

/// The fewest calls between two sweeps of the callers' states.
const SWEEP_EVERY: usize = 10_000;

/// The callers' states, shared by the limiters of every generation. A state is stored as
/// nanoseconds after `epoch`.
pub(super) struct RateStore {
    states: DefaultKeyedStateStore<String>,
    clock: DefaultClock,
    epoch: <DefaultClock as Clock>::Instant,
    /// Calls until the next sweep: at least as many as there were callers after the last, so
    /// that a sweep's cost is spread over as many calls.
    until_sweep: AtomicUsize,
}

impl RateStore {
    fn new() -> Self {
        let clock = DefaultClock::default();
        Self {
            states: DefaultKeyedStateStore::default(),
            epoch: clock.now(),
            clock,
            until_sweep: AtomicUsize::new(SWEEP_EVERY),
        }
    }
}

/// The store seen from one limiter, whose times count from its own start: `offset` after the
/// store's epoch.
struct Shifted {
    store: Arc<RateStore>,
    offset: Nanos,
}

impl StateStore for Shifted {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let offset = self.offset;
        self.store.states.measure_and_replace(key, |stored| {
            // A state from before this limiter started lies in its past: as good as fresh.
            let (t, next) = f(stored.map(|s| s.saturating_sub(offset)))?;
            Ok((t, next + offset))
        })
    }
}

impl ShrinkableKeyedStateStore<String> for Shifted {
    fn retain_recent(&self, drop_below: Nanos) {
        self.store.states.retain_recent(drop_below + self.offset);
    }

    fn len(&self) -> usize {
        self.store.states.len()
    }

    fn is_empty(&self) -> bool {
        self.store.states.is_empty()
    }
}

/// One generation's rate limit.
pub(super) struct RateLimit {
    limiter: RateLimiter<String, Shifted, DefaultClock>,
    store: Arc<RateStore>,
}

impl RateLimit {
    /// The limit `config` sets, on `previous`'s store when there is one; `None` for a limit of 0.
    pub(super) fn new(config: &RateLimitConfig, previous: Option<&RateLimit>) -> Option<Self> {
        let quota = Quota::per_second(NonZeroU32::new(config.per_second)?)
            .allow_burst(NonZeroU32::new(config.burst)?);
        let store = previous.map_or_else(|| Arc::new(RateStore::new()), |p| p.store.clone());
        let offset = store.clock.now().duration_since(store.epoch);
        let shifted = Shifted {
            store: store.clone(),
            offset,
        };
        let limiter = RateLimiter::new(quota, shifted, store.clock.clone());
        Some(Self { limiter, store })
    }

    /// Counts a call of `caller`; `Err` with the wait before the next would pass.
    pub(super) fn check(&self, caller: &String) -> Result<(), Duration> {
        let checked = self
            .limiter
            .check_key(caller)
            .map_err(|not_until| not_until.wait_time_from(self.store.clock.now()));
        if self.store.until_sweep.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.limiter.retain_recent();
            let left = self.limiter.len().max(SWEEP_EVERY);
            self.store.until_sweep.store(left, Ordering::Relaxed);
        }
        checked
    }

    /// Callers whose state is kept.
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_second: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig { per_second, burst }
    }

    fn passed(limit: &RateLimit, caller: &str, n: usize) -> usize {
        let caller = caller.to_string();
        (0..n).filter(|_| limit.check(&caller).is_ok()).count()
    }

    #[test]
    fn a_new_generation_keeps_every_callers_count() {
        let first = RateLimit::new(&config(1, 5), None).unwrap();
        assert_eq!(passed(&first, "bot-1", 10), 5, "the burst, then refused");
        let same = RateLimit::new(&config(1, 5), Some(&first)).unwrap();
        assert_eq!(passed(&same, "bot-1", 10), 0, "a reload is no fresh burst");
        assert_eq!(passed(&same, "bot-2", 10), 5, "another caller has its own");
        // A larger burst applies to the count so far: 5 were used of 8.
        let larger = RateLimit::new(&config(1, 8), Some(&same)).unwrap();
        assert_eq!(passed(&larger, "bot-1", 10), 3);
        let wait = larger.check(&"bot-1".to_string()).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn callers_back_to_fresh_are_swept_and_memory_stays_bounded() {
        let limit = RateLimit::new(&config(1_000_000, 1), None).unwrap();
        // A million a second: a caller is fresh again a microsecond after its call.
        for i in 0..3 * SWEEP_EVERY {
            limit.check(&format!("caller-{i}")).unwrap();
        }
        assert!(
            limit.callers() <= SWEEP_EVERY,
            "{} callers kept",
            limit.callers()
        );
    }
}
