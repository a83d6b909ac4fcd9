//! Exemplars of the request-duration histograms: per bucket, the trace of a recent sampled
//! request that fell in it, for the OpenMetrics exposition.
//!
//! `metrics-exporter-prometheus` has no exemplars (metrics-rs issue 175), and the histograms
//! stay there, so the exemplars are kept beside them: each cached series owns one slot per
//! bucket, written with `try_lock` (a contended slot skips the exemplar rather than wait) and
//! read when the exposition is rendered. Requests that are not sampled never touch them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::Label;

/// A sampled request's trace and span IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// One bucket's exemplar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace: TraceRef,
    /// The observed value (seconds).
    pub value: f64,
    /// When it was observed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The exemplars of one histogram series, one slot per bucket (the last is `+Inf`).
pub struct Exemplars {
    bounds: &'static [f64],
    slots: Box<[Mutex<Option<Exemplar>>]>,
}

impl Exemplars {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            slots: (0..=bounds.len()).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Keep `trace` as the exemplar of the bucket `value` falls in (`le` is inclusive, as in
    /// the histogram). O(log buckets), allocation-free; skipped when the slot is busy.
    pub fn offer(&self, value: f64, trace: TraceRef) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        if let Ok(mut slot) = self.slots[bucket].try_lock() {
            *slot = Some(Exemplar {
                trace,
                value,
                at_ms: now_ms(),
            });
        }
    }

    /// The exemplar of the bucket whose upper bound is `le` (`f64::INFINITY` for `+Inf`).
    pub fn get(&self, le: f64) -> Option<Exemplar> {
        let bucket = if le.is_infinite() {
            self.bounds.len()
        } else {
            self.bounds.iter().position(|b| *b == le)?
        };
        *self.slots[bucket].lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every series with exemplars, by metric name and label set, for the exposition to find.
#[derive(Default)]
pub struct ExemplarIndex {
    series: Mutex<HashMap<String, Arc<Exemplars>>>,
}

impl ExemplarIndex {
    /// The exemplars of series `name{labels}`, created on first use.
    pub fn register(&self, name: &str, labels: &[Label], bounds: &'static [f64]) -> Arc<Exemplars> {
        let key = series_key(name, labels.iter().map(|l| (l.key(), l.value())));
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            series
                .entry(key)
                .or_insert_with(|| Arc::new(Exemplars::new(bounds))),
        )
    }

    /// The exemplars of series `name{labels}`, if it has any.
    pub fn find<'a>(
        &self,
        name: &str,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Option<Arc<Exemplars>> {
        let key = series_key(name, labels);
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

/// A label set in its order, as one string (names and values cannot hold the separators).
fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut key = name.to_owned();
    for (k, v) in labels {
        key.push('\u{1f}');
        key.push_str(k);
        key.push('\u{1e}');
        key.push_str(v);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];
    const TRACE: TraceRef = TraceRef {
        trace_id: [1; 16],
        span_id: [2; 8],
    };

    #[test]
    fn a_value_lands_in_the_bucket_whose_bound_is_at_or_above_it() {
        let e = Exemplars::new(BOUNDS);
        e.offer(0.01, TRACE);
        e.offer(0.5, TRACE);
        assert!(e.get(0.001).is_none());
        assert_eq!(e.get(0.01).unwrap().value, 0.01);
        assert!(e.get(0.1).is_none());
        assert_eq!(e.get(f64::INFINITY).unwrap().value, 0.5);
        assert!(e.get(0.2).is_none(), "not a bound");
    }

    #[test]
    fn the_latest_exemplar_wins() {
        let e = Exemplars::new(BOUNDS);
        e.offer(0.002, TRACE);
        let later = TraceRef {
            trace_id: [3; 16],
            span_id: [4; 8],
        };
        e.offer(0.003, later);
        assert_eq!(e.get(0.01).unwrap().trace, later);
    }

    #[test]
    fn series_are_found_by_name_and_labels_in_order() {
        let index = ExemplarIndex::default();
        let labels = [Label::new("a", "1"), Label::new("b", "2")];
        let e = index.register("h", &labels, BOUNDS);
        assert!(Arc::ptr_eq(&e, &index.register("h", &labels, BOUNDS)));
        let found = index
            .find("h", [("a", "1"), ("b", "2")].into_iter())
            .unwrap();
        assert!(Arc::ptr_eq(&e, &found));
        assert!(index.find("h", [("a", "1")].into_iter()).is_none());
        assert!(index
            .find("g", [("a", "1"), ("b", "2")].into_iter())
            .is_none());
    }
}
