//! The circuit breaker every call to an outbound dependency goes through.
//!
//! Closed, it lets calls through and counts their outcomes over a sliding window; when the
//! share of failures passes `failure_ratio` (after at least `min_calls`), or after
//! `consecutive_failures` failures in a row (a hard outage, which a window full of earlier
//! successes would hide), it opens: calls are refused at once, and the caller takes its
//! fallback, for `open_for`. Then it half-opens and
//! lets exactly one probe through: success closes it, failure opens it again.
//!
//! A call's leave is a [`Ticket`], and a ticket that is dropped unsettled (the caller's future
//! was dropped mid-call: a client that gave up, a deadline that passed) frees what it held:
//! the half-open probe slot goes back, so the next call probes. Without that, one cancelled
//! probe would leave the breaker half-open with its probe "out" for good.
//!
//! Hand-written because the behaviour the service depends on is small and exact — a single
//! probe in half-open, a ratio over a time window, a deadline on every call, and metrics on
//! every transition. `failsafe` lets every call through while half-open (a recovering
//! dependency meets the whole backlog at once) and reports through its own instrument trait;
//! `tower-resilience-circuitbreaker` is a young 0.x release whose breaker is a tower layer,
//! which the store's and the limiter's calls (not services) would have to be bent into.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open when at least this share of the window's calls failed (0 < r ≤ 1)...
    pub failure_ratio: f64,
    /// ...and the window holds at least this many calls.
    pub min_calls: u32,
    /// Or open after this many failures in a row.
    pub consecutive_failures: u32,
    /// The sliding window over which calls are counted.
    pub window: Duration,
    /// How long to refuse calls before letting one probe through.
    pub open_for: Duration,
}

impl From<&crate::config::BreakerSettings> for BreakerConfig {
    fn from(s: &crate::config::BreakerSettings) -> Self {
        Self {
            failure_ratio: s.failure_ratio,
            min_calls: s.min_calls,
            consecutive_failures: s.consecutive_failures,
            window: s.window,
            open_for: s.open_for,
        }
    }
}

/// The breaker's state, as exported: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }
}

/// Handles the breaker records into.
#[derive(Clone)]
pub struct BreakerMetrics {
    /// 0 closed, 1 half-open, 2 open.
    pub state: Gauge,
    /// 1 after a successful call, 0 after a failed one or while open.
    pub up: Gauge,
    /// Transitions into each state.
    pub to_closed: Counter,
    pub to_half_open: Counter,
    pub to_open: Counter,
}

impl Default for BreakerMetrics {
    /// Handles that record nothing.
    fn default() -> Self {
        Self {
            state: Gauge::noop(),
            up: Gauge::noop(),
            to_closed: Counter::noop(),
            to_half_open: Counter::noop(),
            to_open: Counter::noop(),
        }
    }
}

/// Why a guarded call produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The breaker is open (or a probe is already out): the call was not made.
    #[error("circuit open")]
    Open,
    /// The call took longer than its deadline.
    #[error("timed out")]
    Timeout,
    /// The dependency answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Buckets the window is divided into.
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which slice of time the counts belong to.
    epoch: u64,
    ok: u32,
    failed: u32,
}

enum State {
    Closed {
        buckets: [Bucket; BUCKETS],
        /// Failures since the last success.
        streak: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

/// A circuit breaker for one dependency.
pub struct Breaker {
    /// The dependency, for logs.
    name: &'static str,
    config: BreakerConfig,
    started: Instant,
    state: Mutex<State>,
    metrics: BreakerMetrics,
}

/// Leave to make one call; settle it with [`Ticket::settle`]. Dropped unsettled, the call's
/// outcome is unknown and counted neither way, and a probe's slot is freed for the next call.
#[must_use]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Ticket<'_> {
    /// Report how the call went.
    pub fn settle(self, ok: bool) {
        self.settle_with(ok, "");
    }

    /// Report how the call went; `why` it failed goes into the log line of the transition it
    /// causes.
    pub fn settle_with(mut self, ok: bool, why: &str) {
        self.settled = true;
        self.breaker.record(self.probe, ok, why);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.release_probe();
        }
    }
}

impl Breaker {
    pub fn new(name: &'static str, config: BreakerConfig, metrics: BreakerMetrics) -> Self {
        metrics.state.set(0.0);
        Self {
            name,
            config,
            started: Instant::now(),
            state: Mutex::new(State::Closed {
                buckets: [Bucket::default(); BUCKETS],
                streak: 0,
            }),
            metrics,
        }
    }

    /// The state now. An open period that has lapsed is half-open from that moment, whether
    /// or not a call came to probe: the state (and its gauge, refreshed by calling this)
    /// never shows open after `open_for`.
    pub fn state(&self) -> CircuitState {
        let mut state = self.lock();
        self.lapse(&mut state);
        match &*state {
            State::Closed { .. } => CircuitState::Closed,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
        }
    }

    /// An open period that is over becomes half-open with the probe free.
    fn lapse(&self, state: &mut State) {
        if let State::Open { until } = state {
            if Instant::now() >= *until {
                *state = State::HalfOpen { probing: false };
                self.entered(CircuitState::HalfOpen, "");
            }
        }
    }

    /// Leave for one call, or `None` while open (and while the one half-open probe is out).
    pub fn try_call(&self) -> Option<Ticket<'_>> {
        let mut state = self.lock();
        self.lapse(&mut state);
        let probe = match &mut *state {
            State::Closed { .. } => false,
            State::Open { .. } | State::HalfOpen { probing: true } => return None,
            State::HalfOpen { probing } => {
                *probing = true;
                true
            }
        };
        Some(Ticket {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// The probe's caller went away without an outcome: let the next call probe.
    fn release_probe(&self) {
        if let State::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    fn record(&self, probe: bool, ok: bool, why: &str) {
        self.metrics.up.set(if ok { 1.0 } else { 0.0 });
        let mut state = self.lock();
        if probe {
            if matches!(*state, State::HalfOpen { .. }) {
                if ok {
                    *state = State::Closed {
                        buckets: [Bucket::default(); BUCKETS],
                        streak: 0,
                    };
                    self.entered(CircuitState::Closed, "");
                } else {
                    self.open(&mut state, why);
                }
            }
            return;
        }
        let State::Closed { buckets, streak } = &mut *state else {
            return;
        };
        let slice = (self.config.window / BUCKETS as u32).max(Duration::from_millis(1));
        let epoch = (self.started.elapsed().as_nanos() / slice.as_nanos()) as u64;
        let bucket = &mut buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        if ok {
            bucket.ok += 1;
            *streak = 0;
            return;
        }
        bucket.failed += 1;
        *streak += 1;
        if *streak >= self.config.consecutive_failures {
            self.open(&mut state, why);
            return;
        }
        let recent = buckets
            .iter()
            .filter(|b| epoch.saturating_sub(b.epoch) < BUCKETS as u64);
        let (ok, failed) = recent.fold((0u64, 0u64), |(o, f), b| {
            (o + u64::from(b.ok), f + u64::from(b.failed))
        });
        let calls = ok + failed;
        if calls >= u64::from(self.config.min_calls)
            && failed as f64 >= self.config.failure_ratio * calls as f64
        {
            self.open(&mut state, why);
        }
    }

    /// Make `call` through the breaker with a deadline, timing it into `duration`.
    pub async fn call<T, E, F>(
        &self,
        deadline: Duration,
        duration: &Histogram,
        call: F,
    ) -> Result<T, CallError>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let ticket = self.try_call().ok_or(CallError::Open)?;
        let started = Instant::now();
        let outcome = tokio::time::timeout(deadline, call).await;
        duration.record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(value)) => {
                ticket.settle(true);
                Ok(value)
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                ticket.settle_with(false, &why);
                Err(CallError::Failed(why))
            }
            Err(_) => {
                ticket.settle_with(false, "no answer within the call deadline");
                Err(CallError::Timeout)
            }
        }
    }

    /// Open it now, as a run of failures would.
    #[cfg(test)]
    pub(crate) fn trip(&self) {
        self.open(&mut self.lock(), "tripped by a test");
    }

    fn open(&self, state: &mut State, why: &str) {
        // Checked: an open period past what `Instant` can hold means "until further notice".
        let now = Instant::now();
        let until = now
            .checked_add(self.config.open_for)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600));
        *state = State::Open { until };
        self.metrics.up.set(0.0);
        self.entered(CircuitState::Open, why);
    }

    fn entered(&self, to: CircuitState, why: &str) {
        let (value, counter) = match to {
            CircuitState::Closed => (0.0, &self.metrics.to_closed),
            CircuitState::HalfOpen => (1.0, &self.metrics.to_half_open),
            CircuitState::Open => (2.0, &self.metrics.to_open),
        };
        self.metrics.state.set(value);
        counter.increment(1);
        if why.is_empty() {
            tracing::warn!(
                dependency = self.name,
                state = to.as_str(),
                "circuit breaker changed state"
            );
        } else {
            tracing::warn!(
                dependency = self.name,
                state = to.as_str(),
                error = why,
                "circuit breaker changed state"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(
            "test",
            BreakerConfig {
                failure_ratio: 0.5,
                min_calls: 4,
                consecutive_failures: 1000,
                window: Duration::from_secs(10),
                open_for,
            },
            BreakerMetrics::default(),
        )
    }

    fn call(b: &Breaker, ok: bool) -> bool {
        match b.try_call() {
            Some(t) => {
                t.settle(ok);
                true
            }
            None => false,
        }
    }

    #[test]
    fn opens_on_the_failure_ratio_only_after_enough_calls() {
        let b = breaker(Duration::from_secs(60));
        assert!(call(&b, false) && call(&b, false) && call(&b, false));
        assert_eq!(b.state(), CircuitState::Closed, "three calls are too few");
        assert!(call(&b, true));
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "a success does not open it"
        );
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open, "4 of 5 failed");
        assert!(b.try_call().is_none(), "open refuses calls");
    }

    #[test]
    fn a_run_of_failures_opens_it_whatever_came_before() {
        let mut config = breaker(Duration::from_secs(60)).config;
        config.consecutive_failures = 5;
        let b = Breaker::new("test", config, BreakerMetrics::default());
        for _ in 0..1000 {
            call(&b, true);
        }
        for _ in 0..4 {
            call(&b, false);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open, "five in a row");
    }

    #[test]
    fn successes_keep_it_closed() {
        let b = breaker(Duration::from_secs(60));
        for i in 0..100 {
            assert!(call(&b, i % 4 != 0), "a quarter failing never reaches half");
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_outcome_decides() {
        let b = breaker(Duration::from_millis(20));
        for _ in 0..4 {
            call(&b, false);
        }
        assert_eq!(b.state(), CircuitState::Open);
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.try_call().expect("one probe after open_for");
        assert!(b.try_call().is_none(), "only one probe at a time");
        probe.settle(false);
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.try_call().unwrap();
        probe.settle(true);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(call(&b, true));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_a_failure() {
        let b = breaker(Duration::from_secs(60));
        let h = Histogram::noop();
        let slow = b
            .call(Duration::from_millis(10), &h, async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, String>(1)
            })
            .await;
        assert_eq!(slow, Err(CallError::Timeout));
        let fast = b
            .call(Duration::from_secs(1), &h, async { Ok::<_, String>(2) })
            .await;
        assert_eq!(fast, Ok(2));
    }

    /// Polls `b.state()` until it is `want` (within `within`).
    async fn until_state(b: &Breaker, want: CircuitState, within: Duration) {
        let started = Instant::now();
        while b.state() != want {
            assert!(started.elapsed() < within, "never reached {want:?}");
            tokio::task::yield_now().await;
        }
    }

    /// A call that answers after `after`.
    async fn answer(after: Duration, ok: bool) -> Result<(), String> {
        tokio::time::sleep(after).await;
        if ok {
            Ok(())
        } else {
            Err("refused".into())
        }
    }

    #[tokio::test]
    async fn a_probe_dropped_at_any_await_frees_the_probe_for_the_next_call() {
        let open_for = Duration::from_millis(20);
        let deadline = Duration::from_millis(200);
        let b = breaker(open_for);
        let h = Histogram::noop();
        for _ in 0..4 {
            call(&b, false);
        }
        until_state(&b, CircuitState::HalfOpen, Duration::from_secs(1)).await;
        let covered = crate::testing::drop_at_every_await(
            || b.call(deadline, &h, answer(Duration::from_millis(5), true)),
            |_| async {
                // The dropped probe left no outcome: the breaker is still half-open, and the
                // next call is let through as its probe at once.
                assert_eq!(b.state(), CircuitState::HalfOpen);
                let probe = b.try_call().expect("the dropped probe freed its slot");
                drop(probe);
            },
        )
        .await;
        assert!(covered >= 1, "the probe was dropped mid-call");
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "the probe that ran to the end closed it"
        );
    }

    #[tokio::test]
    async fn after_dropped_probes_the_breaker_settles_within_open_for_and_the_deadline() {
        let (open_for, deadline) = (Duration::from_millis(20), Duration::from_millis(50));
        for dependency_ok in [true, false] {
            let b = breaker(open_for);
            let h = Histogram::noop();
            for _ in 0..4 {
                call(&b, false);
            }
            until_state(&b, CircuitState::HalfOpen, Duration::from_secs(1)).await;
            // Callers that give up before the dependency answers, one after another.
            for _ in 0..5 {
                let gave_up = crate::testing::drop_at_suspension(
                    b.call(deadline, &h, answer(Duration::from_secs(1), dependency_ok)),
                    1,
                )
                .await;
                assert!(gave_up.is_none());
            }
            let started = Instant::now();
            let _ = b
                .call(
                    deadline,
                    &h,
                    answer(Duration::from_millis(1), dependency_ok),
                )
                .await;
            let want = if dependency_ok {
                CircuitState::Closed
            } else {
                CircuitState::Open
            };
            assert_eq!(b.state(), want, "dependency ok: {dependency_ok}");
            assert!(started.elapsed() < open_for + deadline);
        }
    }

    #[tokio::test]
    async fn a_closed_call_dropped_mid_call_is_counted_neither_way() {
        let b = breaker(Duration::from_secs(60));
        let h = Histogram::noop();
        for _ in 0..3 {
            call(&b, false);
        }
        for _ in 0..10 {
            let dropped = crate::testing::drop_at_suspension(
                b.call(
                    Duration::from_secs(1),
                    &h,
                    answer(Duration::from_secs(1), false),
                ),
                1,
            )
            .await;
            assert!(dropped.is_none());
        }
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "ten dropped calls are not ten failures"
        );
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Open, "the fourth failure counted");
    }

    #[test]
    fn an_open_period_that_lapsed_reads_half_open_and_sets_the_gauge() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gauge = metrics::with_local_recorder(&recorder, || metrics::gauge!("state"));
        let b = Breaker::new(
            "test",
            breaker(Duration::from_millis(10)).config,
            BreakerMetrics {
                state: gauge,
                ..BreakerMetrics::default()
            },
        );
        for _ in 0..4 {
            call(&b, false);
        }
        assert!(handle.render().contains("state 2"));
        let started = Instant::now();
        while b.state() != CircuitState::HalfOpen {
            assert!(started.elapsed() < Duration::from_secs(1));
            std::thread::yield_now();
        }
        assert!(handle.render().contains("state 1"), "{}", handle.render());
    }
}
