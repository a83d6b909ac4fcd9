//! The optional result cache for the intensive endpoint: a bounded, expiring concurrent map
//! (`moka`) from `(number, rounds)` to the computed result, with hit/miss/eviction metrics.

use std::sync::Arc;

use metrics::Counter;
use moka::notification::RemovalCause;

use crate::config::CacheSettings;
use crate::observability::metrics::{self as m, Metrics};

/// A computed intensive result: `(number², digest)`.
pub type Computed = (u64, u64);

/// Cheap to clone; every clone is the same cache.
#[derive(Clone)]
pub struct ResultCache {
    entries: moka::sync::Cache<(u64, u32), Computed>,
    hits: Counter,
    misses: Counter,
    metrics: Arc<Metrics>,
}

impl ResultCache {
    /// Build from settings; `None` when the cache is off.
    pub fn from_settings(s: &CacheSettings, metrics: &Arc<Metrics>) -> Option<ResultCache> {
        if !s.enabled {
            return None;
        }
        let by_size = metrics.counter(m::CACHE_EVICTIONS, &[("cause", "size")]);
        let expired = metrics.counter(m::CACHE_EVICTIONS, &[("cause", "expired")]);
        let entries = moka::sync::Cache::builder()
            .max_capacity(s.max_entries)
            .time_to_live(s.ttl)
            .eviction_listener(move |_key, _value, cause| match cause {
                RemovalCause::Size => by_size.increment(1),
                RemovalCause::Expired => expired.increment(1),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Some(ResultCache {
            entries,
            hits: metrics.counter(m::CACHE_REQUESTS, &[("result", "hit")]),
            misses: metrics.counter(m::CACHE_REQUESTS, &[("result", "miss")]),
            metrics: Arc::clone(metrics),
        })
    }

    /// The cached result, counting the hit or miss.
    pub fn get(&self, number: u64, rounds: u32) -> Option<Computed> {
        let found = self.entries.get(&(number, rounds));
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// Remember a result.
    pub fn insert(&self, number: u64, rounds: u32, computed: Computed) {
        self.entries.insert((number, rounds), computed);
    }

    /// Apply pending evictions and publish the entry count (called before each scrape).
    pub fn publish(&self) {
        self.entries.run_pending_tasks();
        self.metrics
            .gauge(m::CACHE_ENTRIES)
            .set(self.entries.entry_count() as f64);
    }
}
