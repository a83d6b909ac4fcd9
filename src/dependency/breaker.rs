//! The circuit breaker every call to an outbound dependency goes through.
//!
//! Closed, it lets calls through and counts their outcomes over a sliding window; when the
//! share of failures passes `failure_ratio` (after at least `min_calls`), or after
//! `consecutive_failures` failures in a row (a hard outage, which a window full of earlier
//! successes would hide), it opens: calls are refused at once, and the caller takes its
//! fallback, for `open_for`. Then it half-opens and
//! lets exactly one probe through: success closes it, failure opens it again.
//!
//! Hand-written because the behaviour the service depends on is small and exact — a single
//! probe in half-open, a ratio over a time window, a deadline on every call, and metrics on
//! every transition — and the crates that offer breakers let several calls through when
//! half-open or report transitions only through their own instrumentation types.

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

/// Leave to make one call; report its outcome with [`Breaker::record`].
#[must_use]
pub struct Ticket {
    probe: bool,
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

    /// The state now (an expired open period counts as half-open).
    pub fn state(&self) -> CircuitState {
        match &*self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::Open { until } if Instant::now() >= *until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
        }
    }

    /// Leave for one call, or `None` while open (and while the one half-open probe is out).
    pub fn try_call(&self) -> Option<Ticket> {
        let mut state = self.lock();
        match &mut *state {
            State::Closed { .. } => Some(Ticket { probe: false }),
            State::Open { until } => {
                if Instant::now() < *until {
                    return None;
                }
                *state = State::HalfOpen { probing: true };
                self.entered(CircuitState::HalfOpen, "");
                Some(Ticket { probe: true })
            }
            State::HalfOpen { probing } => {
                if *probing {
                    None
                } else {
                    *probing = true;
                    Some(Ticket { probe: true })
                }
            }
        }
    }

    /// Report how the call behind `ticket` went; `why` it failed goes into the log line of
    /// the transition it causes.
    pub fn record(&self, ticket: Ticket, ok: bool) {
        self.record_with(ticket, ok, "");
    }

    fn record_with(&self, ticket: Ticket, ok: bool, why: &str) {
        self.metrics.up.set(if ok { 1.0 } else { 0.0 });
        let mut state = self.lock();
        if ticket.probe {
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
                self.record(ticket, true);
                Ok(value)
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                self.record_with(ticket, false, &why);
                Err(CallError::Failed(why))
            }
            Err(_) => {
                self.record_with(ticket, false, "no answer within the call deadline");
                Err(CallError::Timeout)
            }
        }
    }

    fn open(&self, state: &mut State, why: &str) {
        *state = State::Open {
            until: Instant::now() + self.config.open_for,
        };
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
                b.record(t, ok);
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
        b.record(probe, false);
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.try_call().unwrap();
        b.record(probe, true);
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
}
