//! The open-loop schedule: request `i` is due at `start + i / rate`.
//!
//! Latency in open loop is measured from the due time, not from the moment a
//! connection was free to send it, so a server that stalls cannot hide the
//! time requests spent waiting (coordinated-omission correction).

use std::time::Duration;

/// Offset from the start of the run at which request `i` is due.
pub fn offset(i: u64, rate: f64) -> Duration {
    debug_assert!(rate > 0.0);
    Duration::from_nanos((i as f64 * 1e9 / rate).round() as u64)
}

/// Number of requests the schedule holds: those due strictly before
/// `max_duration`, at most `max_requests`.
pub fn planned_requests(rate: f64, max_duration: Duration, max_requests: u64) -> u64 {
    let estimate = (max_duration.as_secs_f64() * rate).ceil();
    if estimate >= max_requests as f64 {
        // Still honour the duration when the estimate is only barely larger.
        let mut n = max_requests;
        while n > 0 && offset(n - 1, rate) >= max_duration {
            n -= 1;
        }
        return n;
    }
    let mut n = estimate as u64;
    // Correct floating-point rounding at the edge so that
    // `offset(n - 1) < max_duration <= offset(n)`.
    while n > 0 && offset(n - 1, rate) >= max_duration {
        n -= 1;
    }
    while n < max_requests && offset(n, rate) < max_duration {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_evenly_spaced() {
        assert_eq!(offset(0, 200.0), Duration::ZERO);
        assert_eq!(offset(1, 200.0), Duration::from_millis(5));
        assert_eq!(offset(399, 200.0), Duration::from_millis(1995));
        assert_eq!(offset(3, 0.5), Duration::from_secs(6));
        assert_eq!(offset(1, 3.0), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn offsets_never_decrease() {
        let rate = 12_345.678;
        let mut last = Duration::ZERO;
        for i in 0..100_000 {
            let o = offset(i, rate);
            assert!(o >= last);
            last = o;
        }
    }

    #[test]
    fn duration_bounds_the_plan() {
        assert_eq!(
            planned_requests(200.0, Duration::from_secs(2), u64::MAX),
            400
        );
        assert_eq!(
            planned_requests(1.0, Duration::from_millis(2500), u64::MAX),
            3
        );
        assert_eq!(planned_requests(3.0, Duration::from_secs(1), u64::MAX), 3);
        assert_eq!(planned_requests(0.5, Duration::from_secs(10), u64::MAX), 5);
        assert_eq!(planned_requests(1000.0, Duration::ZERO, u64::MAX), 0);
    }

    #[test]
    fn request_count_bounds_the_plan() {
        assert_eq!(planned_requests(200.0, Duration::from_secs(2), 100), 100);
        assert_eq!(planned_requests(200.0, Duration::from_secs(2), 400), 400);
        assert_eq!(planned_requests(200.0, Duration::from_secs(2), 401), 400);
        assert_eq!(planned_requests(200.0, Duration::from_secs(2), 0), 0);
    }

    #[test]
    fn every_planned_request_is_due_before_the_end() {
        for &(rate, ms) in &[(7.0, 1000), (333.3, 2000), (99_999.0, 1234), (0.1, 60_000)] {
            let d = Duration::from_millis(ms);
            let n = planned_requests(rate, d, u64::MAX);
            assert!(n == 0 || offset(n - 1, rate) < d, "rate {rate}");
            assert!(offset(n, rate) >= d, "rate {rate}");
        }
    }
}
