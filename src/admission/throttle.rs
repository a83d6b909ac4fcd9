//! Failed authentications, limited per client address: past the allowance an address is
//! refused with 429 before its credential is checked, so guessing keys or forging tokens
//! gets slow. Callers at other addresses are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// Per-address failure buckets, and the addresses refused until a given instant.
pub struct FailureThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureThrottle {
    /// `per_minute` failures sustained, `burst` at once; `None` if either is 0.
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute)?).allow_burst(NonZeroU32::new(burst)?);
        Some(Self {
            failures: governor::RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    /// How long `addr` is still refused, if it is.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&addr)?;
        until.checked_duration_since(Instant::now())
    }

    /// Record a failure from `addr`; past the allowance, how long it is now refused for.
    pub fn failed(&self, addr: IpAddr) -> Option<Duration> {
        let not_until = self.failures.check_key(&addr).err()?;
        let wait = not_until
            .wait_time_from(self.failures.clock().now())
            .max(Duration::from_millis(1));
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, Instant::now() + wait);
        Some(wait)
    }

    /// Forget expired blocks and idle buckets.
    pub fn housekeeping(&self) {
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_its_failures_and_others_are_not() {
        let t = FailureThrottle::new(60, 3).unwrap();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(t.failed(a).is_none());
        }
        assert!(t.blocked(a).is_none(), "within the allowance");
        let wait = t.failed(a).expect("past the allowance");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(t.blocked(a).is_some());
        assert!(t.blocked(b).is_none());
        assert!(t.failed(b).is_none());
    }
}
