//! One limit for every replica: GCRA in one atomic Lua script per decision, run on Redis
//! with Redis's own clock (so replica clocks do not matter), its key expiring by itself once
//! the bucket is full again. While Redis is unavailable (breaker open, call failed or late),
//! the configured fallback decides, within the call's deadline.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;

use super::local::LocalLimiter;
use super::{Check, ClientKey, Limit};
use crate::config::RedisFallback;
use crate::dependency::{Operation, Redis};

/// GCRA: `ARGV[1]` is the emission interval and `ARGV[2]` the burst tolerance, both in
/// microseconds. Answers `{1, 0}` (admitted) or `{0, wait_µs}`.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then
  return {0, math.ceil(wait)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

/// What the limiter counts, by outcome.
#[derive(Clone)]
pub struct RedisDecisions {
    pub allowed: Counter,
    pub limited: Counter,
    pub fallback: Counter,
}

/// The Redis-backed limiter.
pub struct RedisLimiter {
    redis: Redis,
    script: Arc<redis::Script>,
    interval_us: f64,
    tolerance_us: f64,
    fallback: Arc<Fallback>,
    decisions: RedisDecisions,
}

enum Fallback {
    Local(LocalLimiter),
    Allow,
    Deny,
}

/// How long a denied caller is asked to wait while Redis is unavailable.
const DENY_RETRY: Duration = Duration::from_secs(1);

impl RedisLimiter {
    /// `rate` per second with bursts of `burst`, keys under the Redis prefix.
    pub fn new(
        redis: Redis,
        rate: u32,
        burst: u32,
        per_client: bool,
        fallback: RedisFallback,
        decisions: RedisDecisions,
    ) -> Option<Self> {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(if burst == 0 { rate as u32 } else { burst });
        let interval_us = 1_000_000.0 / rate;
        let fallback = match fallback {
            RedisFallback::Local => {
                Fallback::Local(LocalLimiter::new(rate as u32, burst as u32, per_client)?)
            }
            RedisFallback::Allow => Fallback::Allow,
            RedisFallback::Deny => Fallback::Deny,
        };
        Some(Self {
            redis,
            script: Arc::new(redis::Script::new(GCRA)),
            interval_us,
            tolerance_us: interval_us * burst,
            fallback: Arc::new(fallback),
            decisions,
        })
    }

    fn key(&self, key: Option<&ClientKey>) -> String {
        match key {
            None => self.redis.key("rl:global"),
            Some(ClientKey::Address(ip)) => self.redis.key(&format!("rl:addr:{ip}")),
            Some(ClientKey::Principal(p)) => self.redis.key(&format!("rl:{{{}}}", p.0)),
        }
    }
}

fn fall_back(
    fallback: &Fallback,
    key: Option<&ClientKey>,
    counter: &Counter,
) -> Result<(), Duration> {
    counter.increment(1);
    match fallback {
        Fallback::Local(local) => match local.check(key) {
            Check::Ready(decision) => decision,
            Check::Pending(_) => Ok(()),
        },
        Fallback::Allow => Ok(()),
        Fallback::Deny => Err(DENY_RETRY),
    }
}

impl Limit for RedisLimiter {
    fn check(&self, key: Option<&ClientKey>) -> Check {
        if !self.redis.available() {
            // The breaker is open: decide now, without a round trip.
            return Check::Ready(fall_back(&self.fallback, key, &self.decisions.fallback));
        }
        let redis_key = self.key(key);
        let owned_key = key.cloned();
        let (redis, script) = (self.redis.clone(), Arc::clone(&self.script));
        let (interval, tolerance) = (self.interval_us, self.tolerance_us);
        let decisions = self.decisions.clone();
        let fallback = Arc::clone(&self.fallback);
        Check::Pending(Box::pin(async move {
            let answer = redis
                .run(Operation::RateLimit, move |mut c| async move {
                    script
                        .key(redis_key)
                        .arg(interval)
                        .arg(tolerance)
                        .invoke_async::<(i64, i64)>(&mut c)
                        .await
                })
                .await;
            match answer {
                Ok((1, _)) => {
                    decisions.allowed.increment(1);
                    Ok(())
                }
                Ok((_, wait_us)) => {
                    decisions.limited.increment(1);
                    Err(Duration::from_micros(wait_us.max(1) as u64))
                }
                Err(_) => fall_back(&fallback, owned_key.as_ref(), &decisions.fallback),
            }
        }))
    }

    fn housekeeping(&self) {
        if let Fallback::Local(local) = &*self.fallback {
            local.housekeeping();
        }
    }
}
