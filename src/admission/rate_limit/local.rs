//! Token buckets in this process (`governor`, GCRA): one for the service, or one per client.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use super::{Check, ClientKey, Limit};

/// The in-process limiter.
pub enum LocalLimiter {
    Global(DefaultDirectRateLimiter),
    PerClient(DefaultKeyedRateLimiter<ClientKey>),
}

impl LocalLimiter {
    /// `rate` per second with bursts of `burst`; `None` when `rate` is 0.
    pub fn new(rate: u32, burst: u32, per_client: bool) -> Option<Self> {
        let rate = NonZeroU32::new(rate)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(if per_client {
            LocalLimiter::PerClient(governor::RateLimiter::keyed(quota))
        } else {
            LocalLimiter::Global(governor::RateLimiter::direct(quota))
        })
    }
}

impl Limit for LocalLimiter {
    fn check(&self, key: Option<&ClientKey>) -> Check {
        // The limiter's own clock: building a clock calibrates it, far too slow per request.
        Check::Ready(match self {
            LocalLimiter::Global(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(l.clock().now())),
            LocalLimiter::PerClient(l) => {
                let unknown = ClientKey::Address(IpAddr::from([0, 0, 0, 0]));
                l.check_key(key.unwrap_or(&unknown))
                    .map_err(|not_until| not_until.wait_time_from(l.clock().now()))
            }
        })
    }

    fn housekeeping(&self) {
        if let LocalLimiter::PerClient(l) = self {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
