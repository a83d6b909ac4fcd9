//! The run second by second: requests completed and their latency
//! percentiles in each interval (one second unless the run is long).
//!
//! Each statistics shard keeps the interval it is currently recording in a
//! [`SlotRecorder`] and hands it over to the phase's [`Timeline`] when one of
//! its requests completes in a later interval (and at the end of the phase),
//! so the shared timeline is locked about once per second per shard, not per
//! request. Requests are placed by the time they completed, counted from the
//! start of the phase.
//!
//! Memory is bounded: an interval's latencies go to a small HDR histogram
//! (2 significant digits, 1 µs resolution, grown only as far as the largest
//! latency recorded in it: about 5 KiB for latencies up to 100 ms, 13 KiB up
//! to an hour), and a run has at most [`MAX_SLOTS`] intervals plus those its
//! last requests may still complete in (`--timeout`): a run planned longer
//! than [`MAX_SLOTS`] seconds gets intervals of several seconds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::latency_ns;

/// Intervals of one second up to this many; longer runs get wider intervals
/// (30 minutes at one-second resolution).
pub const MAX_SLOTS: u64 = 1_800;

/// Significant digits of an interval's histogram (1 % relative error).
const SLOT_SIGNIFICANT_DIGITS: u8 = 2;

/// Smallest latency an interval's histogram tells apart, in nanoseconds.
const SLOT_RESOLUTION_NS: u64 = 1_000;

/// Marks a recorder that holds no interval yet.
const NO_SLOT: u64 = u64::MAX;

/// The width of the intervals for a phase planned to last at most
/// `max_duration`: whole seconds, at least one, and at most [`MAX_SLOTS`]
/// intervals over the planned duration.
pub fn interval_for(max_duration: Duration) -> u64 {
    let secs = max_duration.as_secs() + u64::from(max_duration.subsec_nanos() > 0);
    secs.div_ceil(MAX_SLOTS).max(1)
}

/// What completed in one interval.
#[derive(Clone)]
pub struct SlotData {
    /// Requests that finished: responses and transport errors.
    requests: u64,
    /// 2xx responses.
    successful: u64,
    /// Latencies of the responses (any status).
    histogram: Histogram<u32>,
    /// Latencies of the 2xx responses alone: under overload, what the served requests
    /// took, apart from the refusals.
    success_histogram: Histogram<u32>,
    /// The exact largest latency, so the histogram's bucket cannot overstate it.
    max_ns: u64,
}

impl std::fmt::Debug for SlotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotData")
            .field("requests", &self.requests)
            .field("successful", &self.successful)
            .field("responses", &self.histogram.len())
            .finish_non_exhaustive()
    }
}

impl Default for SlotData {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotData {
    pub fn new() -> Self {
        let mut histogram = Histogram::new_with_bounds(
            SLOT_RESOLUTION_NS,
            2 * SLOT_RESOLUTION_NS,
            SLOT_SIGNIFICANT_DIGITS,
        )
        .expect("static histogram bounds are valid");
        histogram.auto(true);
        Self {
            requests: 0,
            successful: 0,
            success_histogram: histogram.clone(),
            histogram,
            max_ns: 0,
        }
    }

    /// A response after `latency`; `success` for a 2xx status.
    pub fn record_response(&mut self, latency: Duration, success: bool) {
        let ns = latency_ns(latency);
        // Grows the histogram when needed; `latency_ns` keeps `ns` within
        // MAX_TRACKED_LATENCY_NS, so this cannot fail.
        let _ = self.histogram.record(ns);
        self.max_ns = self.max_ns.max(ns);
        self.requests += 1;
        self.successful += u64::from(success);
        if success {
            let _ = self.success_histogram.record(ns);
        }
    }

    /// A request that got no response.
    pub fn record_failure(&mut self) {
        self.requests += 1;
    }

    fn is_empty(&self) -> bool {
        self.requests == 0
    }

    /// Requests that finished: responses and transport errors.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// 2xx responses.
    pub fn successful(&self) -> u64 {
        self.successful
    }

    /// The latency at quantile `q` of the responses, in milliseconds (2
    /// significant digits, never above the exact maximum); `None` without
    /// responses.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        (!self.histogram.is_empty()).then(|| self.quantile_ms(q))
    }

    /// The largest latency, exact, in milliseconds; `None` without responses.
    pub fn max_ms(&self) -> Option<f64> {
        (!self.histogram.is_empty()).then(|| self.max_ns as f64 / 1e6)
    }

    /// Adds what `other` holds.
    pub fn merge(&mut self, other: &SlotData) {
        self.add(other);
    }

    /// What it holds, leaving it empty.
    pub fn take(&mut self) -> SlotData {
        let taken = self.clone();
        self.reset();
        taken
    }

    fn add(&mut self, other: &SlotData) {
        self.requests += other.requests;
        self.successful += other.successful;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.histogram
            .add(&other.histogram)
            .expect("an auto-resizing histogram takes any recorded value");
        self.success_histogram
            .add(&other.success_histogram)
            .expect("an auto-resizing histogram takes any recorded value");
    }

    fn reset(&mut self) {
        self.requests = 0;
        self.successful = 0;
        self.max_ns = 0;
        self.histogram.reset();
        self.success_histogram.reset();
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q).min(self.max_ns) as f64 / 1e6
    }

    /// The 2xx responses' quantile; `None` without any.
    fn success_quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.success_histogram.is_empty())
            .then(|| self.success_histogram.value_at_quantile(q).min(self.max_ns) as f64 / 1e6)
    }
}

/// A shard's current interval.
pub struct SlotRecorder {
    slot: u64,
    data: SlotData,
}

impl Default for SlotRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotRecorder {
    pub fn new() -> Self {
        Self {
            slot: NO_SLOT,
            data: SlotData::new(),
        }
    }

    /// The data of interval `slot`, handing what it held of another interval
    /// over to `timeline` first.
    pub fn at(&mut self, slot: u64, timeline: &std::sync::Mutex<Timeline>) -> &mut SlotData {
        if slot != self.slot {
            self.flush(timeline);
            self.slot = slot;
        }
        &mut self.data
    }

    /// Hands what it holds over to `timeline`.
    pub fn flush(&mut self, timeline: &std::sync::Mutex<Timeline>) {
        if self.slot != NO_SLOT && !self.data.is_empty() {
            timeline
                .lock()
                .expect("timeline lock")
                .add(self.slot, &self.data);
        }
        self.data.reset();
        self.slot = NO_SLOT;
    }
}

/// Which interval a completion falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotClock {
    /// Width of an interval in seconds.
    interval_secs: u64,
    /// Completions after this interval are placed in it.
    last_slot: u64,
}

impl SlotClock {
    /// The intervals of a phase planned to last at most `max_duration`,
    /// whose last requests may still complete `timeout` later.
    pub fn new(max_duration: Duration, timeout: Duration) -> Self {
        let interval_secs = interval_for(max_duration);
        let span = (max_duration + timeout).as_secs() + 1;
        Self {
            interval_secs,
            last_slot: span.div_ceil(interval_secs),
        }
    }

    /// Width of an interval in seconds.
    pub fn interval_secs(&self) -> u64 {
        self.interval_secs
    }

    /// The interval of a request completing `at` after the phase's start.
    pub fn slot_of(&self, at: Duration) -> u64 {
        (at.as_secs() / self.interval_secs).min(self.last_slot)
    }
}

/// A phase's intervals.
#[derive(Debug, Clone)]
pub struct Timeline {
    clock: SlotClock,
    /// Intervals by index; `None` until something completed in it.
    slots: Vec<Option<Box<SlotData>>>,
}

impl Timeline {
    pub fn new(clock: SlotClock) -> Self {
        Self {
            clock,
            slots: Vec::new(),
        }
    }

    fn add(&mut self, slot: u64, data: &SlotData) {
        let i = slot.min(self.clock.last_slot) as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        match &mut self.slots[i] {
            Some(mine) => mine.add(data),
            empty => *empty = Some(Box::new(data.clone())),
        }
    }

    /// The report of a phase that lasted `elapsed`: one point per interval
    /// from the start to the end of the phase (and to the last interval with
    /// a completion), intervals without completions included. The last
    /// interval ends with the phase; when that leaves it shorter than half an
    /// interval, it is counted in the one before (a few requests in a few
    /// milliseconds are no rate).
    pub fn report(&self, elapsed: Duration) -> TimelineReport {
        let interval_secs = self.clock.interval_secs;
        let interval = interval_secs as f64;
        let secs = elapsed.as_secs_f64();
        let covered = (secs / interval).ceil() as usize;
        let mut count = covered.max(self.slots.len());
        let mut tail: Option<SlotData> = None;
        if count >= 2 && count == covered && secs - (count - 1) as f64 * interval < interval / 2.0 {
            count -= 1;
            let last = self.slots.get(count).and_then(Option::as_deref);
            let before = self.slots.get(count - 1).and_then(Option::as_deref);
            if let Some(last) = last {
                let mut merged = before.cloned().unwrap_or_default();
                merged.add(last);
                tail = Some(merged);
            }
        }
        let points = (0..count)
            .map(|i| {
                let start = i as f64 * interval;
                // The last interval ends with the phase.
                let span = if i + 1 == count {
                    secs - start
                } else {
                    interval
                };
                let span = if span > 0.0 { span } else { interval };
                let data = match &tail {
                    Some(merged) if i + 1 == count => Some(merged),
                    _ => self.slots.get(i).and_then(Option::as_deref),
                };
                let requests = data.map_or(0, |d| d.requests);
                let successful = data.map_or(0, |d| d.successful);
                let latency = data.filter(|d| !d.histogram.is_empty());
                TimelinePoint {
                    start_secs: i as u64 * interval_secs,
                    requests,
                    successful,
                    failed: requests - successful,
                    rps: requests as f64 / span,
                    p50_ms: latency.map(|d| d.quantile_ms(0.50)),
                    p90_ms: latency.map(|d| d.quantile_ms(0.90)),
                    p99_ms: latency.map(|d| d.quantile_ms(0.99)),
                    max_ms: latency.map(|d| d.max_ns as f64 / 1e6),
                    success_p99_ms: data.and_then(|d| d.success_quantile_ms(0.99)),
                }
            })
            .collect();
        TimelineReport {
            interval_secs,
            points,
        }
    }
}

/// The timeline of a scenario's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineReport {
    /// Width of each interval (1 unless the run was planned longer than
    /// [`MAX_SLOTS`] seconds).
    pub interval_secs: u64,
    pub points: Vec<TimelinePoint>,
}

/// What completed in one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Start of the interval, in seconds from the start of the phase.
    pub start_secs: u64,
    /// Requests that finished in it: responses and transport errors.
    pub requests: u64,
    pub successful: u64,
    pub failed: u64,
    /// `requests` per second of the interval (the last one may be shorter).
    pub rps: f64,
    /// Percentiles of the responses' latencies (2 significant digits; the
    /// maximum exact); `null` without responses.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The p99 of the 2xx responses alone; `null` without any.
    pub success_p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_served_requests_p99_is_kept_apart_from_the_refusals() {
        let clock = SlotClock::new(Duration::from_secs(10), ms(500));
        let timeline = Mutex::new(Timeline::new(clock));
        let mut r = SlotRecorder::new();
        // Under overload: most answers are slow refusals, the served ones are quick.
        for i in 0..100u64 {
            r.at(clock.slot_of(ms(i * 5)), &timeline)
                .record_response(if i % 10 == 0 { ms(2) } else { ms(50) }, i % 10 == 0);
        }
        r.flush(&timeline);
        let p = &timeline.lock().unwrap().report(ms(1_000)).points[0];
        assert_eq!((p.requests, p.successful), (100, 10));
        assert!(p.p99_ms.unwrap() >= 49.0, "{p:?}");
        let served = p.success_p99_ms.unwrap();
        assert!((1.9..=2.1).contains(&served), "{p:?}");
    }

    #[test]
    fn intervals_are_one_second_up_to_the_limit() {
        assert_eq!(interval_for(ms(500)), 1);
        assert_eq!(interval_for(Duration::from_secs(300)), 1);
        assert_eq!(interval_for(Duration::from_secs(MAX_SLOTS)), 1);
        assert_eq!(interval_for(Duration::from_secs(MAX_SLOTS + 1)), 2);
        assert_eq!(interval_for(Duration::from_secs(24 * 3_600)), 48);
    }

    #[test]
    fn shards_hand_their_intervals_over_and_the_report_fills_gaps() {
        let clock = SlotClock::new(Duration::from_secs(10), ms(500));
        let timeline = Mutex::new(Timeline::new(clock));
        let mut a = SlotRecorder::new();
        let mut b = SlotRecorder::new();
        let slot = |at: Duration| clock.slot_of(at);
        for i in 0..100u64 {
            a.at(slot(ms(i * 5)), &timeline)
                .record_response(ms(1 + i % 10), true);
        }
        b.at(slot(ms(300)), &timeline).record_failure();
        b.at(slot(ms(999)), &timeline)
            .record_response(ms(40), false);
        // Nothing in second 1; second 2 from both.
        a.at(slot(ms(2_100)), &timeline)
            .record_response(ms(7), true);
        b.at(slot(ms(2_900)), &timeline)
            .record_response(ms(9), true);
        a.flush(&timeline);
        b.flush(&timeline);

        let report = timeline.lock().unwrap().report(ms(2_500));
        assert_eq!(report.interval_secs, 1);
        let p = &report.points;
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].start_secs, p[0].requests, p[0].successful, p[0].failed),
            (0, 102, 100, 2)
        );
        assert_eq!(p[0].rps, 102.0);
        assert_eq!(p[0].max_ms, Some(40.0));
        let p50 = p[0].p50_ms.unwrap();
        assert!((5.0..=6.1).contains(&p50), "p50 {p50}");
        assert!(p[0].p99_ms.unwrap() <= 40.0);
        assert_eq!((p[1].requests, p[1].rps, p[1].p99_ms), (0, 0.0, None));
        assert_eq!(p[1].success_p99_ms, None);
        assert_eq!(p[2].requests, 2);
        // The phase ended half-way through the last interval.
        assert_eq!(p[2].rps, 4.0);
        assert_eq!(p[2].max_ms, Some(9.0));
    }

    #[test]
    fn a_short_last_interval_is_counted_in_the_one_before() {
        let clock = SlotClock::new(Duration::from_secs(10), ms(500));
        let timeline = Mutex::new(Timeline::new(clock));
        let mut a = SlotRecorder::new();
        for at in [100, 900, 1_100, 2_050, 2_100] {
            a.at(clock.slot_of(ms(at)), &timeline)
                .record_response(ms(at / 100), true);
        }
        a.flush(&timeline);
        let p = timeline.lock().unwrap().report(ms(2_200)).points;
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].requests, p[0].rps), (2, 2.0));
        assert_eq!((p[1].start_secs, p[1].requests), (1, 3));
        assert!((p[1].rps - 3.0 / 1.2).abs() < 1e-9, "{}", p[1].rps);
        assert_eq!(p[1].max_ms, Some(21.0));
        assert!(Timeline::new(clock)
            .report(Duration::ZERO)
            .points
            .is_empty());
    }

    #[test]
    fn late_completions_land_in_the_last_interval() {
        let clock = SlotClock::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(clock.slot_of(ms(1_500)), 1);
        assert_eq!(clock.slot_of(Duration::from_secs(3_600)), 4);
    }

    #[test]
    fn percentiles_are_within_one_percent_and_never_above_the_maximum() {
        let mut d = SlotData::new();
        for us in 1..=10_000u64 {
            d.record_response(Duration::from_micros(us), true);
        }
        for (q, expected) in [(0.5, 5.0), (0.9, 9.0), (0.99, 9.9)] {
            let v = d.quantile_ms(q);
            assert!((v - expected).abs() <= expected * 0.01, "q {q}: {v}");
        }
        assert!(d.quantile_ms(1.0) <= 10.0);
        // A latency far above the others grows the histogram.
        d.record_response(Duration::from_secs(3_000), true);
        assert_eq!(d.max_ns, 3_000_000_000_000);
    }
}
