//! The optional result cache for the intensive endpoint, keyed by `(number, rounds)`, with
//! hit/miss metrics: in memory (a bounded, expiring concurrent map, `moka`), or in Redis so a
//! result computed on one replica is a hit on every other. A Redis that is unavailable is
//! bypassed: the request computes, it never fails for the cache's sake.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use moka::notification::RemovalCause;

use crate::config::{CacheBackend, CacheSettings};
use crate::dependency::{Operation, Redis};
use crate::observability::metrics::{self as m, Metrics};

/// A computed intensive result: `(number², digest)`.
pub type Computed = (u64, u64);

/// The configured cache; cheap to clone.
#[derive(Clone)]
pub enum Cache {
    Memory(ResultCache),
    Redis(RedisCache),
}

impl Cache {
    /// Build from settings; `None` when the cache is off. The Redis backend needs `redis`
    /// (validation ensures it is configured).
    pub fn from_settings(
        s: &CacheSettings,
        redis: Option<&Redis>,
        metrics: &Arc<Metrics>,
    ) -> Option<Cache> {
        match (s.backend, redis) {
            (CacheBackend::Redis, Some(redis)) if s.enabled => Some(Cache::Redis(RedisCache {
                redis: redis.clone(),
                ttl: s.ttl,
                hits: metrics.counter(m::CACHE_REQUESTS, &[("result", "hit")]),
                misses: metrics.counter(m::CACHE_REQUESTS, &[("result", "miss")]),
            })),
            _ => ResultCache::from_settings(s, metrics).map(Cache::Memory),
        }
    }

    /// The cached result, counting the hit or miss.
    pub async fn get(&self, number: u64, rounds: u32) -> Option<Computed> {
        match self {
            Cache::Memory(c) => c.get(number, rounds),
            Cache::Redis(c) => c.get(number, rounds).await,
        }
    }

    /// Remember a result.
    pub async fn insert(&self, number: u64, rounds: u32, computed: Computed) {
        match self {
            Cache::Memory(c) => c.insert(number, rounds, computed),
            Cache::Redis(c) => c.insert(number, rounds, computed).await,
        }
    }

    /// Publish the entry count (the memory backend; Redis counts its own keys).
    pub fn publish(&self) {
        if let Cache::Memory(c) = self {
            c.publish();
        }
    }
}

/// Intensive results in Redis, as `"<result>:<digest>"` under `<prefix>cache:<n>:<rounds>`,
/// each with the cache's TTL; memory is bounded by Redis's `maxmemory` policy.
#[derive(Clone)]
pub struct RedisCache {
    redis: Redis,
    ttl: Duration,
    hits: Counter,
    misses: Counter,
}

impl RedisCache {
    fn key(&self, number: u64, rounds: u32) -> String {
        self.redis.key(&format!("cache:{number}:{rounds}"))
    }

    async fn get(&self, number: u64, rounds: u32) -> Option<Computed> {
        if !self.redis.available() {
            self.misses.increment(1);
            return None;
        }
        let key = self.key(number, rounds);
        let found = self
            .redis
            .run(Operation::CacheGet, move |mut c| async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await
            .ok()
            .flatten()
            .and_then(|v| {
                let (result, digest) = v.split_once(':')?;
                Some((result.parse().ok()?, digest.parse().ok()?))
            });
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    async fn insert(&self, number: u64, rounds: u32, (result, digest): Computed) {
        if !self.redis.available() {
            return;
        }
        let key = self.key(number, rounds);
        let ttl_ms = self.ttl.as_millis().max(1) as u64;
        let _ = self
            .redis
            .run(Operation::CacheSet, move |mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(format!("{result}:{digest}"))
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }
}

/// Intensive results in this process; cheap to clone, every clone is the same cache.
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
