//! Outcome counters and the latency histogram.
//!
//! Every worker records into a [`Stats`]; the run merges them at the end (and
//! the progress display merges them periodically). Memory is fixed: an HDR
//! histogram, a status-code table and a bounded map of error codes, however
//! many requests are sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram resolves (one hour, in nanoseconds); larger
/// values are recorded as this value.
pub const MAX_TRACKED_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// Significant decimal digits kept by the histogram (0.1 % relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// At most this many distinct error codes are kept; further ones are counted
/// under [`OTHER_ERROR_CODE`], so a misbehaving server cannot grow memory.
const MAX_ERROR_CODES: usize = 64;

/// Bucket for error codes beyond [`MAX_ERROR_CODES`] distinct values.
pub const OTHER_ERROR_CODE: &str = "(other)";

/// Bucket for non-2xx responses whose body has no JSON `code`.
pub const NO_ERROR_CODE: &str = "(none)";

/// HTTP status codes hyper accepts are 100..=999.
const STATUS_SLOTS: usize = 1000;

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// No answer within `--timeout`.
    Timeout,
    /// The TCP connection could not be established.
    Connect,
    /// The connection failed after the request was written (reset, closed
    /// before the response was complete, malformed response).
    Io,
}

/// A new, empty latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_NS, SIGNIFICANT_DIGITS)
        .expect("static histogram bounds are valid")
}

/// Nanoseconds of `d`, clamped into the histogram's range.
pub fn latency_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TRACKED_LATENCY_NS)
}

/// Durations in an HDR histogram, with their exact sum, minimum and maximum.
#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            histogram: new_histogram(),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let ns = latency_ns(d);
        self.histogram.saturating_record(ns);
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share the same bounds");
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The latency at each of [`SPECTRUM`]'s percentiles, up to the first
    /// that reaches the maximum (the later ones would repeat it); empty when
    /// nothing was recorded. The percentiles of [`LatencySummary`] are among
    /// them, with the same values.
    pub fn spectrum(&self) -> Vec<PercentilePoint> {
        if self.count == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(SPECTRUM.len());
        for &(percentile, quantile) in &SPECTRUM {
            let ns = if quantile == 0.0 {
                self.min_ns
            } else {
                self.histogram.value_at_quantile(quantile).min(self.max_ns)
            };
            out.push(PercentilePoint {
                percentile,
                latency_ms: ns_to_ms(ns),
            });
            if ns == self.max_ns {
                break;
            }
        }
        out
    }

    /// The summary, `None` when nothing was recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.count == 0 {
            return None;
        }
        let max = self.max_ns;
        // Percentiles report the highest value equivalent to the bucket;
        // never let that exceed the exact maximum.
        let q = |quantile: f64| ns_to_ms(self.histogram.value_at_quantile(quantile).min(max));
        Some(LatencySummary {
            min_ms: ns_to_ms(self.min_ns),
            mean_ms: self.sum_ns as f64 / self.count as f64 / 1e6,
            max_ms: ns_to_ms(max),
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p99_9_ms: q(0.999),
            p99_99_ms: q(0.9999),
        })
    }
}

/// Counters and the latency histogram for one phase of a run.
#[derive(Clone)]
pub struct Stats {
    latency: Latencies,
    /// The 2xx responses alone: what a served request took.
    success_latency: Latencies,
    /// The refusals alone (429 and 503): how fast the server said no.
    refused_latency: Latencies,
    statuses: Vec<u64>,
    error_codes: HashMap<String, u64>,
    responses: u64,
    successes: u64,
    timeouts: u64,
    connect_errors: u64,
    io_errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("responses", &self.responses)
            .field("successes", &self.successes)
            .field("timeouts", &self.timeouts)
            .field("connect_errors", &self.connect_errors)
            .field("io_errors", &self.io_errors)
            .finish_non_exhaustive()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            latency: Latencies::new(),
            success_latency: Latencies::new(),
            refused_latency: Latencies::new(),
            statuses: vec![0; STATUS_SLOTS],
            error_codes: HashMap::new(),
            responses: 0,
            successes: 0,
            timeouts: 0,
            connect_errors: 0,
            io_errors: 0,
        }
    }

    /// Records a request that got an HTTP response. `error_code` is the JSON
    /// `code` of a non-2xx body, if it had one; it is ignored for 2xx.
    pub fn record_response(&mut self, status: u16, latency: Duration, error_code: Option<&str>) {
        self.latency.record(latency);
        self.responses += 1;
        if let Some(slot) = self.statuses.get_mut(usize::from(status)) {
            *slot += 1;
        }
        if is_refusal(status) {
            self.refused_latency.record(latency);
        }
        if (200..300).contains(&status) {
            self.successes += 1;
            self.success_latency.record(latency);
        } else if status >= 400 {
            self.count_error_code(error_code.unwrap_or(NO_ERROR_CODE), 1);
        }
    }

    /// Records a request that got no HTTP response.
    pub fn record_transport_error(&mut self, kind: TransportError) {
        match kind {
            TransportError::Timeout => self.timeouts += 1,
            TransportError::Connect => self.connect_errors += 1,
            TransportError::Io => self.io_errors += 1,
        }
    }

    fn count_error_code(&mut self, code: &str, n: u64) {
        if let Some(count) = self.error_codes.get_mut(code) {
            *count += n;
        } else if self.error_codes.len() < MAX_ERROR_CODES {
            self.error_codes.insert(code.to_owned(), n);
        } else {
            *self
                .error_codes
                .entry(OTHER_ERROR_CODE.to_owned())
                .or_insert(0) += n;
        }
    }

    /// Adds everything recorded in `other` to `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.latency.merge(&other.latency);
        self.success_latency.merge(&other.success_latency);
        self.refused_latency.merge(&other.refused_latency);
        for (mine, theirs) in self.statuses.iter_mut().zip(&other.statuses) {
            *mine += theirs;
        }
        for (code, n) in &other.error_codes {
            self.count_error_code(code, *n);
        }
        self.responses += other.responses;
        self.successes += other.successes;
        self.timeouts += other.timeouts;
        self.connect_errors += other.connect_errors;
        self.io_errors += other.io_errors;
    }

    /// Requests that finished one way or another: responses plus transport
    /// errors (timeouts included).
    pub fn total(&self) -> u64 {
        self.responses + self.timeouts + self.connect_errors + self.io_errors
    }

    /// Requests answered with a 2xx status.
    pub fn successful(&self) -> u64 {
        self.successes
    }

    /// Requests that did not get a 2xx response, transport errors included.
    pub fn failed(&self) -> u64 {
        self.total() - self.successes
    }

    /// Requests that got an HTTP response, whatever its status.
    pub fn responses(&self) -> u64 {
        self.responses
    }

    /// Responses with a 4xx or 5xx status.
    pub fn error_responses(&self) -> u64 {
        self.statuses[400..].iter().sum()
    }

    pub fn timeouts(&self) -> u64 {
        self.timeouts
    }

    pub fn connect_errors(&self) -> u64 {
        self.connect_errors
    }

    pub fn io_errors(&self) -> u64 {
        self.io_errors
    }

    /// Responses with status `status`.
    pub fn status_count(&self, status: u16) -> u64 {
        self.statuses.get(usize::from(status)).copied().unwrap_or(0)
    }

    /// Successful requests as a percentage of all finished requests (0 when
    /// nothing finished).
    pub fn success_rate(&self) -> f64 {
        percentage(self.successes, self.total())
    }

    /// Status code → count, for the codes that occurred.
    pub fn status_codes(&self) -> BTreeMap<u16, u64> {
        self.statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(status, n)| (status as u16, *n))
            .collect()
    }

    /// Error code (from non-2xx JSON bodies) → count.
    pub fn error_codes(&self) -> BTreeMap<String, u64> {
        self.error_codes
            .iter()
            .map(|(code, n)| (code.clone(), *n))
            .collect()
    }

    /// The latencies of all responses.
    pub fn latencies(&self) -> &Latencies {
        &self.latency
    }

    /// Latency summary over all responses, `None` when there were none.
    pub fn latency(&self) -> Option<LatencySummary> {
        self.latency.summary()
    }

    /// Latency summary over the 2xx responses, `None` when there were none.
    pub fn success_latency(&self) -> Option<LatencySummary> {
        self.success_latency.summary()
    }

    /// Latency summary over the refusals (429 and 503), `None` when there were none.
    pub fn refused_latency(&self) -> Option<LatencySummary> {
        self.refused_latency.summary()
    }

    /// Latency percentile spectrum over all responses (see [`Latencies::spectrum`]).
    pub fn spectrum(&self) -> Vec<PercentilePoint> {
        self.latency.spectrum()
    }
}

/// A refusal: the server declined the request for load (429 rate limited, 503 overloaded
/// or shutting down), as opposed to failing it.
pub fn is_refusal(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// `part / whole` in percent; 0 when `whole` is 0.
pub fn percentage(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Requests per second over `elapsed`; 0 for an empty interval.
pub fn rate_per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The percentiles of the latency spectrum, as `(percentile, quantile)`:
/// for each power of ten of `1 / (1 - q)` (0, 90, 99, 99.9 … 99.9999 %), the
/// points where `1 - q` is 1, 0.7, 0.5, 0.3, 0.2 and 0.15 of that power, so
/// they are evenly spread on the logarithmic axis an HDR percentile plot
/// uses. The quantiles are written out (not computed from the percentiles)
/// so that 0.999 is exactly the quantile of `p99_9_ms`.
pub const SPECTRUM: [(f64, f64); 37] = [
    (0.0, 0.0),
    (30.0, 0.30),
    (50.0, 0.50),
    (70.0, 0.70),
    (80.0, 0.80),
    (85.0, 0.85),
    (90.0, 0.90),
    (93.0, 0.93),
    (95.0, 0.95),
    (97.0, 0.97),
    (98.0, 0.98),
    (98.5, 0.985),
    (99.0, 0.99),
    (99.3, 0.993),
    (99.5, 0.995),
    (99.7, 0.997),
    (99.8, 0.998),
    (99.85, 0.9985),
    (99.9, 0.999),
    (99.93, 0.9993),
    (99.95, 0.9995),
    (99.97, 0.9997),
    (99.98, 0.9998),
    (99.985, 0.99985),
    (99.99, 0.9999),
    (99.993, 0.99993),
    (99.995, 0.99995),
    (99.997, 0.99997),
    (99.998, 0.99998),
    (99.9985, 0.999985),
    (99.999, 0.99999),
    (99.9993, 0.999993),
    (99.9995, 0.999995),
    (99.9997, 0.999997),
    (99.9998, 0.999998),
    (99.99985, 0.9999985),
    (99.9999, 0.999999),
];

/// One point of the latency spectrum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PercentilePoint {
    /// In percent (`99.9`).
    pub percentile: f64,
    pub latency_ms: f64,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Within the histogram's 0.1 % precision.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.001 + 1e-9
    }

    #[test]
    fn empty_stats_have_no_latency_and_zero_rate() {
        let s = Stats::new();
        assert_eq!(s.total(), 0);
        assert_eq!(s.failed(), 0);
        assert_eq!(s.success_rate(), 0.0);
        assert!(s.latency().is_none());
        assert!(s.status_codes().is_empty());
    }

    #[test]
    fn counts_successes_errors_and_transport_failures() {
        let mut s = Stats::new();
        s.record_response(200, ms(1), None);
        s.record_response(201, ms(1), Some("IGNORED_FOR_2XX"));
        s.record_response(429, ms(1), Some("RATE_LIMIT_EXCEEDED"));
        s.record_response(503, ms(1), Some("SERVICE_OVERLOADED"));
        s.record_response(500, ms(1), None);
        s.record_transport_error(TransportError::Timeout);
        s.record_transport_error(TransportError::Connect);
        s.record_transport_error(TransportError::Io);

        assert_eq!(s.total(), 8);
        assert_eq!(s.responses(), 5);
        assert_eq!(s.successful(), 2);
        assert_eq!(s.failed(), 6);
        assert_eq!(s.error_responses(), 3);
        assert_eq!(s.timeouts(), 1);
        assert_eq!(s.connect_errors(), 1);
        assert_eq!(s.io_errors(), 1);
        assert_eq!(s.status_count(429), 1);
        assert!(close(s.success_rate(), 25.0));
        let codes = s.error_codes();
        assert_eq!(codes.len(), 3);
        assert_eq!(codes["RATE_LIMIT_EXCEEDED"], 1);
        assert_eq!(codes["SERVICE_OVERLOADED"], 1);
        assert_eq!(codes[NO_ERROR_CODE], 1);
        assert_eq!(
            s.status_codes().into_iter().collect::<Vec<_>>(),
            vec![(200, 1), (201, 1), (429, 1), (500, 1), (503, 1)]
        );
    }

    #[test]
    fn served_requests_and_refusals_have_latencies_of_their_own() {
        let mut s = Stats::new();
        for _ in 0..10 {
            s.record_response(200, ms(20), None);
            s.record_response(503, ms(1), Some("SERVICE_OVERLOADED"));
        }
        s.record_response(429, ms(3), Some("RATE_LIMIT_EXCEEDED"));
        s.record_response(500, ms(900), None);
        let served = s.success_latency().unwrap();
        assert!(close(served.max_ms, 20.0) && close(served.min_ms, 20.0));
        let refused = s.refused_latency().unwrap();
        assert!(close(refused.min_ms, 1.0) && close(refused.max_ms, 3.0));
        // Neither counts the 500; all responses together do.
        assert!(close(s.latency().unwrap().max_ms, 900.0));
        let mut merged = Stats::new();
        merged.merge(&s);
        assert_eq!(merged.refused_latency(), s.refused_latency());
        assert!(Stats::new().refused_latency().is_none());
        assert!(is_refusal(503) && is_refusal(429) && !is_refusal(500));
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut s = Stats::new();
        for i in 1..=10_000 {
            s.record_response(200, Duration::from_micros(i), None);
        }
        let l = s.latency().unwrap();
        assert!(close(l.min_ms, 0.001));
        assert!(close(l.max_ms, 10.0));
        assert!(close(l.mean_ms, 5.0005));
        assert!(close(l.p50_ms, 5.0), "p50 {}", l.p50_ms);
        assert!(close(l.p90_ms, 9.0), "p90 {}", l.p90_ms);
        assert!(close(l.p95_ms, 9.5), "p95 {}", l.p95_ms);
        assert!(close(l.p99_ms, 9.9), "p99 {}", l.p99_ms);
        assert!(close(l.p99_9_ms, 9.99), "p99.9 {}", l.p99_9_ms);
        assert!(l.p99_99_ms <= l.max_ms);
        assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p95_ms && l.p95_ms <= l.p99_ms);
    }

    #[test]
    fn a_single_outlier_shows_in_the_tail_only() {
        let mut s = Stats::new();
        for _ in 0..999 {
            s.record_response(200, ms(1), None);
        }
        s.record_response(200, ms(2_000), None);
        let l = s.latency().unwrap();
        assert!(close(l.p99_ms, 1.0));
        assert!(close(l.p99_9_ms, 1.0));
        assert!(close(l.p99_99_ms, 2_000.0));
        assert!(close(l.max_ms, 2_000.0));
    }

    #[test]
    fn huge_latencies_are_clamped_not_lost() {
        let mut s = Stats::new();
        s.record_response(200, Duration::from_secs(10 * 3_600), None);
        s.record_response(200, Duration::ZERO, None);
        assert_eq!(s.responses(), 2);
        let l = s.latency().unwrap();
        assert!(close(l.max_ms, 3_600_000.0));
        assert!(l.min_ms > 0.0);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        let mut all = Stats::new();
        for i in 0..1_000u64 {
            let latency = Duration::from_micros(50 + i * 7);
            let (status, code) = if i % 10 == 0 {
                (429, Some("RATE_LIMIT_EXCEEDED"))
            } else {
                (200, None)
            };
            let target = if i % 3 == 0 { &mut a } else { &mut b };
            target.record_response(status, latency, code);
            all.record_response(status, latency, code);
        }
        b.record_transport_error(TransportError::Timeout);
        all.record_transport_error(TransportError::Timeout);

        let mut merged = Stats::new();
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.total(), all.total());
        assert_eq!(merged.successful(), all.successful());
        assert_eq!(merged.timeouts(), 1);
        assert_eq!(merged.status_codes(), all.status_codes());
        assert_eq!(merged.error_codes(), all.error_codes());
        assert_eq!(merged.latency(), all.latency());
    }

    #[test]
    fn merging_empty_stats_changes_nothing() {
        let mut s = Stats::new();
        s.record_response(200, ms(3), None);
        let before = s.latency();
        s.merge(&Stats::new());
        assert_eq!(s.latency(), before);
        assert_eq!(s.total(), 1);
    }

    #[test]
    fn error_codes_are_bounded() {
        let mut s = Stats::new();
        for i in 0..(MAX_ERROR_CODES + 10) {
            s.record_response(400, ms(1), Some(&format!("CODE_{i}")));
        }
        let codes = s.error_codes();
        assert_eq!(codes.len(), MAX_ERROR_CODES + 1);
        assert_eq!(codes[OTHER_ERROR_CODE], 10);
        assert_eq!(codes.values().sum::<u64>(), (MAX_ERROR_CODES + 10) as u64);
    }

    #[test]
    fn spectrum_holds_the_summary_percentiles_and_stops_at_the_maximum() {
        let mut s = Stats::new();
        assert!(s.spectrum().is_empty());
        // A long tail: from 1 µs, each sample 0.02 % above the one before.
        for i in 0..100_000 {
            let ns = 1_000.0 * 1.0002f64.powi(i);
            s.record_response(200, Duration::from_nanos(ns as u64), None);
        }
        let spectrum = s.spectrum();
        let l = s.latency().unwrap();
        let at = |p: f64| {
            spectrum
                .iter()
                .find(|x| x.percentile == p)
                .unwrap_or_else(|| panic!("no {p} in {spectrum:?}"))
                .latency_ms
        };
        assert_eq!(at(50.0), l.p50_ms);
        assert_eq!(at(90.0), l.p90_ms);
        assert_eq!(at(95.0), l.p95_ms);
        assert_eq!(at(99.0), l.p99_ms);
        assert_eq!(at(99.9), l.p99_9_ms);
        assert_eq!(at(99.99), l.p99_99_ms);
        assert_eq!(at(0.0), l.min_ms);
        assert!(spectrum
            .windows(2)
            .all(|w| w[0].percentile < w[1].percentile && w[0].latency_ms <= w[1].latency_ms));
        // 100,000 samples: beyond 99.999 % every quantile is the maximum,
        // which appears once, last.
        let last = spectrum.last().unwrap();
        assert_eq!(last.latency_ms, l.max_ms);
        assert!(last.percentile <= 99.9995, "{last:?}");
        assert_eq!(
            spectrum.iter().filter(|p| p.latency_ms == l.max_ms).count(),
            1
        );
    }

    #[test]
    fn spectrum_quantiles_match_their_percentiles() {
        for (percentile, quantile) in SPECTRUM {
            assert!(
                (percentile / 100.0 - quantile).abs() < 1e-12,
                "{percentile}"
            );
        }
        assert!(SPECTRUM.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn rate_and_percentage_helpers() {
        assert_eq!(rate_per_second(100, Duration::from_secs(2)), 50.0);
        assert_eq!(rate_per_second(100, Duration::ZERO), 0.0);
        assert_eq!(percentage(1, 4), 25.0);
        assert_eq!(percentage(1, 0), 0.0);
    }
}
