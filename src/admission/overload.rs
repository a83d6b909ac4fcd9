//! Adaptive concurrency per class of work, with priorities: what the service can serve now
//! is served, and the rest is refused at once (503 `SERVICE_OVERLOADED` with a
//! `Retry-After`), instead of waiting in a queue until its deadline.
//!
//! Each [`Class`] has a concurrency limit computed from the latency its calls take
//! ([`Gradient`]): every `window`, the lowest latency of the calls that completed is compared
//! with the class's no-load latency (the lowest latency of the last `baseline_window`, with
//! the time spent queued for a worker left out) plus `target_delay`. Above it — a queue that
//! stayed longer than `target_delay` all window long, as CoDel judges a queue — the limit
//! shrinks in proportion (so it does when more than half of the calls waited that long: the
//! runtime serves some calls of a standing queue out of turn); otherwise it grows by its
//! square root when it was in use. A burst that drains within the window is served, not
//! refused.
//! The fixed limits stay as ceilings, and a floor keeps every worker busy. The algorithm and
//! its settings: docs/overload.md.
//!
//! Classes have priorities ([`Class::ALL`], highest first). A class at its limit is refused
//! only while every lower class is already being shed: when one is not, it is shed now
//! (every call of it refused for [`Overload::hold`]) and this call is admitted over the
//! limit, up to the ceiling. So under pressure the lowest class yields first, and a class is
//! never refused while a lower one still runs freely. Operational routes (health, metrics,
//! status) do not pass admission and are never refused.
//!
//! Hand-written rather than taken from `tower-acc` or `tower-resilience-adaptive`: both wait
//! for a permit in `poll_ready` instead of refusing, take a lock per completed call, know one
//! service rather than classes with priorities, and keep their no-load latency for ever (or
//! reset it to a sample taken under load), which follows neither a machine that slows down
//! nor one that recovers. See docs/overload.md.
//!
//! Refusing costs CPU too, so refusals have a budget ([`CALLS_PER_REFUSAL`]): past it, a
//! refusal also pauses the connection it came on ([`ReadPause`](super::ReadPause)) until its
//! place in the budget's schedule, and the excess waits in the kernel instead of being read.
//!
//! The hot path is a few atomic operations per call; the limit is recomputed once per
//! window, under a lock only the call that closes the window takes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge};

use crate::domain::execution::{StartGate, StartSlot};
use crate::error::ApiError;

/// Work that admission tells apart, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// `POST /api/v1/compute/fast` (and its alias), gRPC `Fast`: computed inline.
    Fast,
    /// `POST /api/v1/compute/intensive`, gRPC `Intensive`: on the worker pool.
    Intensive,
    /// Durable jobs run by the job runner (their submission is not limited: it is cheap and
    /// durable, and a job that waits loses nothing).
    JobExecution,
}

impl Class {
    /// Every class, highest priority first.
    pub const ALL: [Class; 3] = [Class::Fast, Class::Intensive, Class::JobExecution];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Class::Fast => "fast",
            Class::Intensive => "intensive",
            Class::JobExecution => "job_execution",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// Whether the class's latency drives its limit. Jobs differ in size by orders of
    /// magnitude, so their run time says nothing about load: job execution is limited by
    /// `jobs.max_running` and yields to the other classes.
    const fn adaptive(self) -> bool {
        !matches!(self, Class::JobExecution)
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its class was at its limit (every lower class being shed already).
    Limit,
    /// Its class was being shed for a higher one.
    Priority,
}

impl Cause {
    pub const ALL: [Cause; 2] = [Cause::Limit, Cause::Priority];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::Limit => "limit",
            Cause::Priority => "priority",
        }
    }
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub class: Class,
    pub cause: Cause,
    /// When to try again, from the limiter's state (at least [`MIN_RETRY`]).
    pub retry_after: Duration,
    /// How long the connection the call came on should read nothing more: zero while the
    /// class refuses no faster than it serves (see [`ReadPause`](super::ReadPause)).
    pub pause: Duration,
}

impl From<Shed> for ApiError {
    fn from(s: Shed) -> ApiError {
        ApiError::ServiceOverloaded {
            retry_after: s.retry_after,
        }
    }
}

/// The shortest `Retry-After` given: HTTP counts it in whole seconds, and sooner would only
/// bring the same call back into the same overload.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// The longest `Retry-After` given.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// The algorithm's settings (`[admission]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// Queueing allowed on top of the no-load latency before the limit shrinks.
    pub target_delay: Duration,
    /// How often a limit is recomputed.
    pub window: Duration,
    /// How long the lowest latency is remembered.
    pub baseline_window: Duration,
    /// The runtime's delay allowed before lower classes are shed for the fast one (see
    /// [`Overload::runtime_delay`]); zero: never.
    pub runtime_delay: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            target_delay: Duration::from_millis(5),
            window: Duration::from_millis(100),
            baseline_window: Duration::from_secs(10),
            runtime_delay: Duration::from_millis(5),
        }
    }
}

/// What one window of completed calls showed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Calls completed in it.
    pub calls: u64,
    /// Their mean latency, from admission to response.
    pub mean: Duration,
    /// Their lowest latency: above the no-load latency, the queue that never drained.
    pub min: Duration,
    /// The lowest latency among them once the time spent queued for a worker is taken out:
    /// what a call costs with nothing ahead of it.
    pub unqueued_min: Duration,
    /// The most calls in flight at once.
    pub peak_in_flight: u32,
    /// Calls refused at the limit.
    pub refused: u64,
    /// Calls that took longer than the no-load latency plus `target_delay` known when they
    /// completed: when most did, the queue stood all window long even if some calls were
    /// served out of turn (the async runtime runs a task it just woke first; under open-loop
    /// overload a third to a half of a standing queue's calls were).
    pub over: u64,
}

/// The limit of one class: a gradient over a windowed minimum.
///
/// - **Baseline**: the lowest `unqueued_min` of the windows of the last `baseline_window`
///   (a monotonic queue of window minimums). Queue time is left out, so a queue that never
///   empties under sustained load does not raise it; old windows are forgotten, so a machine
///   that slows down (or recovers) moves it within `baseline_window`.
/// - **Shrink**: when every call of a window took longer than `baseline + target_delay` (its
///   lowest latency, `min`, did: a standing queue, not a burst), or more than half did
///   ([`Window::over`]: calls of a standing queue are served out of turn), the limit
///   becomes what was in use (`min(limit, peak_in_flight)`) times
///   `(baseline + target_delay) / min` (the mean when only the half rule saw the queue), at
///   most halved per window.
/// - **Grow**: otherwise, when the limit was in use (calls refused, or at least half of it
///   in flight), it grows by its square root (at least 1): quickly from small limits, in
///   proportion from large ones.
/// - Always between `floor` and `ceiling`; it starts at the ceiling, so a service that is
///   not overloaded refuses nothing while it learns.
#[derive(Debug, Clone)]
pub struct Gradient {
    tuning: Tuning,
    floor: f64,
    ceiling: f64,
    limit: f64,
    /// `(when, minimum)` of recent windows, minimums increasing from the front.
    minimums: VecDeque<(Instant, Duration)>,
}

impl Gradient {
    pub fn new(tuning: Tuning, floor: u32, ceiling: u32) -> Self {
        let ceiling = f64::from(ceiling.max(1));
        let floor = f64::from(floor.max(1)).min(ceiling);
        Gradient {
            tuning,
            floor,
            ceiling,
            limit: ceiling,
            minimums: VecDeque::new(),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.floor() as u32
    }

    /// The no-load latency, once a window has been seen.
    pub fn baseline(&self) -> Option<Duration> {
        self.minimums.front().map(|(_, d)| *d)
    }

    /// Learn from the window that closed at `now`; returns the new limit.
    pub fn update(&mut self, now: Instant, w: &Window) -> u32 {
        if w.calls == 0 {
            return self.limit();
        }
        let oldest = now.checked_sub(self.tuning.baseline_window);
        while let Some(&(at, _)) = self.minimums.front() {
            match oldest {
                Some(oldest) if at < oldest => self.minimums.pop_front(),
                _ => break,
            };
        }
        while self
            .minimums
            .back()
            .is_some_and(|&(_, d)| d >= w.unqueued_min)
        {
            self.minimums.pop_back();
        }
        self.minimums.push_back((now, w.unqueued_min));
        let baseline = self.baseline().unwrap_or(w.unqueued_min);
        let allowed = baseline + self.tuning.target_delay;
        // A standing queue: every call of the window, or more than half of them, waited longer
        // than the target delay.
        let standing = w.min > allowed || (w.calls >= MIN_CALLS && w.over * 2 > w.calls);
        if standing {
            // What the queued calls took: their lowest latency, or their mean when calls
            // served out of turn make the lowest meaningless.
            let seen = if w.min > allowed { w.min } else { w.mean };
            let gradient = (allowed.as_secs_f64() / seen.as_secs_f64()).clamp(0.5, 1.0);
            let in_use = f64::from(w.peak_in_flight).min(self.limit);
            self.limit = (in_use * gradient).max(self.floor);
        } else if w.refused > 0 || f64::from(w.peak_in_flight) * 2.0 >= self.limit {
            self.limit = (self.limit + self.limit.sqrt().max(1.0)).min(self.ceiling);
        }
        self.limit()
    }
}

/// Handles one class records into; built by the metrics module, so admission stays
/// independent of how metrics are exported.
#[derive(Clone)]
pub struct ClassMetrics {
    pub limit: Gauge,
    pub in_flight: Gauge,
    pub baseline_seconds: Gauge,
    /// By [`Cause::ALL`].
    pub refusals: [Counter; 2],
    /// Refusals past the refusal budget (each paused its connection).
    pub pauses: Counter,
}

impl Default for ClassMetrics {
    /// Handles that record nothing.
    fn default() -> Self {
        ClassMetrics {
            limit: Gauge::noop(),
            in_flight: Gauge::noop(),
            baseline_seconds: Gauge::noop(),
            refusals: [Counter::noop(), Counter::noop()],
            pauses: Counter::noop(),
        }
    }
}

/// What [`Overload::new`] needs.
#[derive(Clone)]
pub struct OverloadConfig {
    pub tuning: Tuning,
    /// The lowest limit of an adaptive class.
    pub floor: u32,
    /// The fixed limits, by [`Class::ALL`]: the ceilings.
    pub ceilings: [u32; 3],
    /// By [`Class::ALL`].
    pub metrics: [ClassMetrics; 3],
    /// The longest [runtime delay](Overload::runtime_delay) of the last window, in seconds.
    pub runtime_delay: Gauge,
}

/// A class's state, read at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassState {
    pub class: Class,
    pub limit: u32,
    pub in_flight: u32,
    /// The no-load latency, once known.
    pub baseline: Option<Duration>,
    /// Every call of the class is refused now, for a higher class.
    pub shed: bool,
    /// Refusals so far, by [`Cause::ALL`].
    pub refusals: [u64; 2],
}

/// The calls completed, refused and seen in flight since a lane's window opened.
#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    latency_ns: AtomicU64,
    min_ns: AtomicU64,
    unqueued_min_ns: AtomicU64,
    peak_in_flight: AtomicU32,
    refused: AtomicU64,
    admitted: AtomicU64,
    over: AtomicU64,
}

/// One class's limiter.
struct Lane {
    class: Class,
    ceiling: u32,
    limit: AtomicU32,
    in_flight: AtomicU32,
    /// Shed for a higher class until this instant (nanoseconds since the epoch); 0: not.
    shed_until: AtomicU64,
    /// When the current window closes (nanoseconds since the epoch).
    window_ends: AtomicU64,
    window: Counters,
    /// The last closed window's mean latency and refusals per admission (×1000), for
    /// `Retry-After`.
    last_mean_ns: AtomicU64,
    last_refused_per_admitted_milli: AtomicU64,
    /// The no-load latency plus `target_delay` of the last closed window (nanoseconds;
    /// `u64::MAX` until known): a call slower than it counts in [`Window::over`].
    allowed_ns: AtomicU64,
    refusals: [AtomicU64; 2],
    /// Calls admitted so far.
    admitted: AtomicU64,
    /// The refusal budget: refusals answered at once are spaced at least this far apart
    /// (nanoseconds): [`CALLS_PER_REFUSAL`] times the class's time per completed call in
    /// its last window. Until a window closes, no spacing.
    refusal_spacing_ns: AtomicU64,
    /// When the next refused connection may read again (nanoseconds since the epoch).
    next_read_ns: AtomicU64,
    gradient: Option<Mutex<Gradient>>,
    metrics: ClassMetrics,
}

/// The adaptive limits of one replica, shared by every transport (REST and gRPC draw from
/// the same limits) and asked by the job runner through [`Overload::start_gate`].
pub struct Overload {
    epoch: Instant,
    tuning: Tuning,
    lanes: [Lane; 3],
    delay: Mutex<DelayWindow>,
    delay_gauge: Gauge,
}

/// The runtime-delay samples of the window under way (only the probe writes them).
struct DelayWindow {
    /// When it closes (nanoseconds since the epoch).
    ends: u64,
    /// Samples over `runtime_delay`, and the longest.
    over: u32,
    longest: Duration,
    /// Fast calls admitted before it opened.
    fast_before: u64,
}

/// How often [`probe_runtime_delay`] samples the runtime's delay.
pub const DELAY_SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// Samples over `runtime_delay` that make a window of runtime delay congested. One could be
/// the machine taking the CPU away for a moment; two in a window (a fifth of its samples, by
/// default) is a run queue that stood. Offered intensive calls alone at twice capacity, the
/// server on one core, 1 sample in 86 went over 5 ms; with fast calls at 30,000/s alongside,
/// 5 to 23 in 80.
const DELAYED_SAMPLES: u32 = 2;

/// The smallest number of calls a window needs before it is judged (a window with fewer is
/// extended, up to ten times its length).
const MIN_CALLS: u64 = 5;

/// The refusal budget: refusals are answered at once while a class refuses no more than one
/// call for every `CALLS_PER_REFUSAL` it serves; past that, each refused call's connection
/// waits for its place in the budget's schedule. A refusal costs the event loop about what a
/// small call does, so four gives refusing at most a fifth of the CPU that serving the
/// cheapest class takes, and a small part of what an intensive call does. Measured with the
/// server on one core, offered twice its intensive capacity open loop: 1 served 0.77 of what
/// the fixed limits (which refuse nothing) did, 4 served 0.99, 16 served 0.94 (longer pauses
/// leave the workers waiting for calls); see docs/overload.md.
pub const CALLS_PER_REFUSAL: u64 = 4;

/// The longest a refused call's connection is paused: a pause delays whatever else the
/// client sends on that connection, and a refused caller is told to come back no sooner
/// than [`MIN_RETRY`] anyway.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// `d` in nanoseconds, saturating (the clocks here count nanoseconds in a `u64`).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Overload {
    pub fn new(config: OverloadConfig) -> Arc<Overload> {
        let epoch = Instant::now();
        let window = nanos(config.tuning.window);
        let [m0, m1, m2] = config.metrics;
        let lane = |class: Class, metrics: ClassMetrics| {
            let ceiling = config.ceilings[class.index()].max(1);
            let gradient = class
                .adaptive()
                .then(|| Mutex::new(Gradient::new(config.tuning, config.floor, ceiling)));
            metrics.limit.set(f64::from(ceiling));
            metrics.in_flight.set(0.0);
            Lane {
                class,
                ceiling,
                limit: AtomicU32::new(ceiling),
                in_flight: AtomicU32::new(0),
                shed_until: AtomicU64::new(0),
                window_ends: AtomicU64::new(window),
                window: Counters {
                    min_ns: AtomicU64::new(u64::MAX),
                    unqueued_min_ns: AtomicU64::new(u64::MAX),
                    ..Counters::default()
                },
                last_mean_ns: AtomicU64::new(0),
                allowed_ns: AtomicU64::new(u64::MAX),
                last_refused_per_admitted_milli: AtomicU64::new(0),
                refusals: Default::default(),
                admitted: AtomicU64::new(0),
                refusal_spacing_ns: AtomicU64::new(0),
                next_read_ns: AtomicU64::new(0),
                gradient,
                metrics,
            }
        };
        config.runtime_delay.set(0.0);
        Arc::new(Overload {
            epoch,
            tuning: config.tuning,
            delay: Mutex::new(DelayWindow {
                ends: window,
                over: 0,
                longest: Duration::ZERO,
                fast_before: 0,
            }),
            delay_gauge: config.runtime_delay,
            lanes: [
                lane(Class::Fast, m0),
                lane(Class::Intensive, m1),
                lane(Class::JobExecution, m2),
            ],
        })
    }

    /// How long a class is shed for a higher one, each time that one reaches its limit:
    /// ten windows, between one and ten seconds.
    pub fn hold(&self) -> Duration {
        (self.tuning.window * 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }

    /// A place for one call of `class`, or its refusal.
    pub fn admit(self: &Arc<Self>, class: Class) -> Result<Slot, Shed> {
        self.admit_at(class, Instant::now())
    }

    fn admit_at(self: &Arc<Self>, class: Class, now: Instant) -> Result<Slot, Shed> {
        let at = self.since_epoch(now);
        let lane = &self.lanes[class.index()];
        let shed_until = lane.shed_until.load(Ordering::Acquire);
        if shed_until > at {
            let left = Duration::from_nanos(shed_until - at);
            return Err(self.refuse(lane, Cause::Priority, left, at));
        }
        let in_flight = lane.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        // At the limit: refused only once every lower class is being shed. One that is not
        // is shed now, and this call goes ahead over the limit (not the ceiling).
        let admitted = in_flight <= lane.limit.load(Ordering::Acquire)
            || self.shed_below(class, at, |_| true) && in_flight <= lane.ceiling;
        if !admitted {
            lane.in_flight.fetch_sub(1, Ordering::AcqRel);
            let retry = lane.retry_after();
            return Err(self.refuse(lane, Cause::Limit, retry, at));
        }
        lane.admitted.fetch_add(1, Ordering::Relaxed);
        lane.window.admitted.fetch_add(1, Ordering::Relaxed);
        lane.window
            .peak_in_flight
            .fetch_max(in_flight, Ordering::Relaxed);
        Ok(Slot {
            overload: Arc::clone(self),
            class,
            admitted: now,
        })
    }

    fn refuse(&self, lane: &Lane, cause: Cause, retry_after: Duration, at: u64) -> Shed {
        let i = match cause {
            Cause::Limit => 0,
            Cause::Priority => 1,
        };
        lane.refusals[i].fetch_add(1, Ordering::Relaxed);
        lane.metrics.refusals[i].increment(1);
        if cause == Cause::Limit {
            lane.window.refused.fetch_add(1, Ordering::Relaxed);
        }
        let pause = lane.pause(at);
        if !pause.is_zero() {
            lane.metrics.pauses.increment(1);
        }
        Shed {
            class: lane.class,
            cause,
            retry_after: retry_after.clamp(MIN_RETRY, MAX_RETRY),
            pause,
        }
    }

    /// Shed for [`hold`](Self::hold) every class below `class` that `which` picks among
    /// those not shed already; whether there was one.
    fn shed_below(&self, class: Class, at: u64, mut which: impl FnMut(&Lane) -> bool) -> bool {
        let mut shed = false;
        for lower in self.lanes[class.index() + 1..].iter().rev() {
            if lower.shed_until.load(Ordering::Acquire) <= at && which(lower) {
                shed = true;
                lower
                    .shed_until
                    .fetch_max(at + nanos(self.hold()), Ordering::AcqRel);
            }
        }
        shed
    }

    /// How late the runtime ran a task that was due at `now - delay`: what every request
    /// waits before it is even read, and so the fast class's queue, since its calls are
    /// computed on the runtime (their latency, from admission, never shows it). A window in
    /// which [`DELAYED_SAMPLES`] samples were over `runtime_delay` while fast calls came in
    /// is that queue standing: the lowest class with calls in flight is shed, one more
    /// each such window, so the CPU they take (a worker's, and reading their requests)
    /// goes back to the fast calls. Fed by [`probe_runtime_delay`].
    pub fn runtime_delay(&self, now: Instant, delay: Duration) {
        let at = self.since_epoch(now);
        let mut w = self.delay.lock().unwrap_or_else(|p| p.into_inner());
        w.over += u32::from(delay > self.tuning.runtime_delay);
        w.longest = w.longest.max(delay);
        if at < w.ends {
            return;
        }
        let fast = self.lanes[Class::Fast.index()]
            .admitted
            .load(Ordering::Relaxed);
        let congested = w.over >= DELAYED_SAMPLES
            && fast - w.fast_before >= MIN_CALLS
            && !self.tuning.runtime_delay.is_zero();
        self.delay_gauge.set(w.longest.as_secs_f64());
        *w = DelayWindow {
            ends: at + nanos(self.tuning.window),
            over: 0,
            longest: Duration::ZERO,
            fast_before: fast,
        };
        drop(w);
        if congested {
            let mut picked = false;
            self.shed_below(Class::Fast, at, |lane| {
                let pick = !picked && lane.in_flight.load(Ordering::Acquire) > 0;
                picked |= pick;
                pick
            });
        }
    }

    /// A call of `class` completed at `now`, `latency` after admission, `queued` of it
    /// waiting for a worker.
    fn completed(&self, class: Class, now: Instant, latency: Duration, queued: Duration) {
        let lane = &self.lanes[class.index()];
        let Some(gradient) = &lane.gradient else {
            return;
        };
        let w = &lane.window;
        w.calls.fetch_add(1, Ordering::Relaxed);
        w.latency_ns.fetch_add(nanos(latency), Ordering::Relaxed);
        w.min_ns.fetch_min(nanos(latency), Ordering::Relaxed);
        if nanos(latency) > lane.allowed_ns.load(Ordering::Relaxed) {
            w.over.fetch_add(1, Ordering::Relaxed);
        }
        w.unqueued_min_ns
            .fetch_min(nanos(latency.saturating_sub(queued)), Ordering::Relaxed);
        let at = self.since_epoch(now);
        let ends = lane.window_ends.load(Ordering::Acquire);
        if at < ends {
            return;
        }
        let calls = w.calls.load(Ordering::Relaxed);
        let overdue = at >= ends + 9 * nanos(self.tuning.window);
        if calls < MIN_CALLS && !overdue {
            return;
        }
        // One caller closes the window; the others go on.
        let Ok(mut gradient) = gradient.try_lock() else {
            return;
        };
        if lane.window_ends.load(Ordering::Acquire) != ends {
            return;
        }
        let calls = w.calls.swap(0, Ordering::AcqRel);
        let latency_ns = w.latency_ns.swap(0, Ordering::AcqRel);
        let min = w.min_ns.swap(u64::MAX, Ordering::AcqRel);
        let unqueued_min = w.unqueued_min_ns.swap(u64::MAX, Ordering::AcqRel);
        let in_flight = lane.in_flight.load(Ordering::Acquire);
        let peak = w.peak_in_flight.swap(in_flight, Ordering::AcqRel);
        let refused = w.refused.swap(0, Ordering::AcqRel);
        let over = w.over.swap(0, Ordering::AcqRel);
        let admitted = w.admitted.swap(0, Ordering::AcqRel);
        let window = Window {
            calls,
            mean: Duration::from_nanos(latency_ns / calls.max(1)),
            min: Duration::from_nanos(min.min(latency_ns)),
            unqueued_min: Duration::from_nanos(unqueued_min.min(latency_ns)),
            peak_in_flight: peak,
            refused,
            over: over.min(calls),
        };
        let limit = gradient.update(now, &window);
        if let Some(b) = gradient.baseline() {
            lane.allowed_ns
                .store(nanos(b + self.tuning.target_delay), Ordering::Relaxed);
        }
        lane.limit.store(limit, Ordering::Release);
        lane.last_mean_ns
            .store(nanos(window.mean), Ordering::Relaxed);
        lane.last_refused_per_admitted_milli.store(
            refused.saturating_mul(1000) / admitted.max(1),
            Ordering::Relaxed,
        );
        // The window opened `window` before it was due to end (or when it was last extended
        // past that: then the calls were too few for the spacing to matter much).
        let opened = ends.saturating_sub(nanos(self.tuning.window));
        lane.refusal_spacing_ns.store(
            at.saturating_sub(opened) / calls.max(1) * CALLS_PER_REFUSAL,
            Ordering::Relaxed,
        );
        lane.window_ends
            .store(at + nanos(self.tuning.window), Ordering::Release);
        lane.metrics.limit.set(f64::from(limit));
        if let Some(b) = gradient.baseline() {
            lane.metrics.baseline_seconds.set(b.as_secs_f64());
        }
    }

    /// Set a class's refusal budget, as a closed window would.
    #[cfg(test)]
    pub(crate) fn set_refusal_spacing(&self, class: Class, spacing: Duration) {
        self.lanes[class.index()]
            .refusal_spacing_ns
            .store(nanos(spacing), Ordering::Relaxed);
    }

    /// Every class's state now.
    pub fn state(&self) -> [ClassState; 3] {
        let now = self.since_epoch(Instant::now());
        Class::ALL.map(|class| {
            let lane = &self.lanes[class.index()];
            ClassState {
                class,
                limit: lane.limit.load(Ordering::Acquire),
                in_flight: lane.in_flight.load(Ordering::Acquire),
                baseline: lane
                    .gradient
                    .as_ref()
                    .and_then(|g| g.lock().unwrap_or_else(|p| p.into_inner()).baseline()),
                shed: lane.shed_until.load(Ordering::Acquire) > now,
                refusals: [0, 1].map(|i| lane.refusals[i].load(Ordering::Relaxed)),
            }
        })
    }

    /// Bring the gauges read lazily up to date (before an exposition).
    pub fn publish(&self) {
        for lane in &self.lanes {
            lane.metrics
                .in_flight
                .set(f64::from(lane.in_flight.load(Ordering::Acquire)));
            lane.metrics
                .limit
                .set(f64::from(lane.limit.load(Ordering::Acquire)));
        }
    }

    /// The job runner's question, "may I start a job now?": yes while job execution is below
    /// `jobs.max_running` and not shed for a higher class; otherwise, when to ask again.
    pub fn start_gate(self: &Arc<Self>) -> StartGate {
        let overload = Arc::clone(self);
        StartGate::new(move || {
            overload
                .admit(Class::JobExecution)
                .map(StartSlot::holding)
                .map_err(|shed| shed.retry_after)
        })
    }
}

/// Sample the runtime's delay for `overload` every [`DELAY_SAMPLE_EVERY`], until dropped: a
/// timer task that the runtime polls late was as late as every task that became ready with
/// it. (The timer counts in whole milliseconds, so a sample on an idle runtime reads up to
/// 1 ms.)
pub async fn probe_runtime_delay(overload: Arc<Overload>) {
    loop {
        let due = Instant::now() + DELAY_SAMPLE_EVERY;
        tokio::time::sleep_until(due.into()).await;
        let now = Instant::now();
        overload.runtime_delay(now, now.saturating_duration_since(due));
    }
}

impl Lane {
    /// The pause for the connection of a call refused at `at`: the next place in the
    /// refusal budget's schedule, if that is still to come. While refusals come no faster
    /// than the budget allows, every place is already due and nothing is paused.
    fn pause(&self, at: u64) -> Duration {
        let spacing = self.refusal_spacing_ns.load(Ordering::Relaxed);
        if spacing == 0 {
            return Duration::ZERO;
        }
        let mut next = self.next_read_ns.load(Ordering::Relaxed);
        loop {
            let place = next.max(at).min(at + nanos(MAX_PAUSE));
            match self.next_read_ns.compare_exchange_weak(
                next,
                place + spacing,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::from_nanos(place - at),
                Err(now) => next = now,
            }
        }
    }

    /// When a call refused at the limit should come back: the class's recent latency times
    /// how many calls were refused per call admitted, plus one (the calls ahead of it).
    fn retry_after(&self) -> Duration {
        let mean = self.last_mean_ns.load(Ordering::Relaxed);
        let ratio = self.last_refused_per_admitted_milli.load(Ordering::Relaxed);
        Duration::from_nanos(mean.saturating_mul(1000 + ratio) / 1000)
    }
}

/// An admitted call's place in its class, given back when dropped. [`Slot::finish`] records
/// the call's latency on the way; a slot dropped unfinished (the caller went away) records
/// nothing, since its latency is unknown.
#[must_use = "the call counts as in flight only while its slot is held"]
pub struct Slot {
    overload: Arc<Overload>,
    class: Class,
    admitted: Instant,
}

impl Slot {
    pub fn class(&self) -> Class {
        self.class
    }

    /// The call completed, `queued` of its time waiting for a worker.
    pub fn finish(self, queued: Duration) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.admitted);
        self.overload
            .completed(self.class, now, latency, queued.min(latency));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.overload.lanes[self.class.index()]
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("class", &self.class).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tuning() -> Tuning {
        Tuning {
            target_delay: 5 * MS,
            window: 100 * MS,
            baseline_window: Duration::from_secs(10),
            runtime_delay: 5 * MS,
        }
    }

    /// A window of calls that each took `latency`, `unqueued` of it without queueing.
    fn window(latency: Duration, unqueued: Duration, peak: u32, refused: u64) -> Window {
        Window {
            calls: 100,
            mean: latency,
            min: latency,
            unqueued_min: unqueued,
            peak_in_flight: peak,
            refused,
            over: 0,
        }
    }

    /// Runs `windows` windows 100 ms apart from `start`, each from `make(limit)`.
    fn run(
        g: &mut Gradient,
        start: &mut Instant,
        windows: usize,
        make: impl Fn(u32) -> Window,
    ) -> u32 {
        for _ in 0..windows {
            *start += 100 * MS;
            let w = make(g.limit());
            g.update(*start, &w);
        }
        g.limit()
    }

    #[test]
    fn starts_at_the_ceiling_and_refuses_nothing_while_latency_is_low() {
        let mut g = Gradient::new(tuning(), 2, 1000);
        assert_eq!(g.limit(), 1000);
        let mut now = Instant::now();
        // 64 calls queued, 3 ms: under the 5 ms target delay, so nothing shrinks.
        let limit = run(&mut g, &mut now, 50, |_| window(3 * MS, MS / 20, 64, 0));
        assert_eq!(limit, 1000);
        assert_eq!(g.baseline(), Some(MS / 20));
    }

    #[test]
    fn shrinks_under_rising_latency_in_proportion_and_at_most_by_half() {
        let mut g = Gradient::new(tuning(), 2, 1000);
        let mut now = Instant::now();
        // A 1 ms no-load latency, then a window at 12 ms mean with 200 in flight: the limit
        // is what was in use times (1 + 5) / 12, i.e. halved.
        run(&mut g, &mut now, 1, |_| window(MS, MS, 10, 0));
        let limit = run(&mut g, &mut now, 1, |_| window(12 * MS, MS, 200, 0));
        assert_eq!(limit, 100);
        // 8 ms: 100 × 6 / 8.
        let limit = run(&mut g, &mut now, 1, |_| window(8 * MS, MS, 100, 0));
        assert_eq!(limit, 75);
        // A latency far above the allowance still only halves it.
        let limit = run(&mut g, &mut now, 1, |_| {
            window(Duration::from_secs(30), MS, 75, 0)
        });
        assert_eq!(limit, 37);
    }

    #[test]
    fn a_burst_that_drains_within_a_window_is_not_congestion() {
        let mut g = Gradient::new(tuning(), 2, 1000);
        let mut now = Instant::now();
        run(&mut g, &mut now, 1, |_| window(MS, MS, 10, 0));
        // 400 calls at once: the mean is high, but the queue emptied (the last calls took
        // 1 ms): nothing to shed.
        let burst = Window {
            mean: 40 * MS,
            min: MS,
            peak_in_flight: 400,
            ..window(MS, MS, 0, 0)
        };
        now += 100 * MS;
        assert_eq!(g.update(now, &burst), 1000);
        // The same mean with a queue that never drained is congestion.
        let standing = Window {
            min: 30 * MS,
            ..burst
        };
        now += 100 * MS;
        assert_eq!(g.update(now, &standing), 200);
    }

    #[test]
    fn a_queue_that_a_few_calls_jump_is_still_congestion() {
        let mut g = Gradient::new(tuning(), 2, 1000);
        let mut now = Instant::now();
        run(&mut g, &mut now, 1, |_| window(MS, MS, 10, 0));
        // The async runtime runs a task it just woke first, so many calls of a standing
        // queue complete out of turn: the lowest latency is low, but 60 of 100 calls waited
        // past the target delay (open-loop overload showed a third to a half out of turn).
        // The limit shrinks by the mean: 400 × 6 / 10, i.e. 240.
        let jumped = Window {
            mean: 10 * MS,
            over: 60,
            ..window(MS, MS, 400, 0)
        };
        now += 100 * MS;
        assert_eq!(g.update(now, &jumped), 240);
        // Most calls under the allowance: a burst, not a queue; the limit, in use, grows
        // by its square root.
        let burst = Window { over: 50, ..jumped };
        now += 100 * MS;
        assert_eq!(g.update(now, &burst), 255);
    }

    #[test]
    fn never_goes_below_its_floor() {
        let mut g = Gradient::new(tuning(), 3, 1000);
        let mut now = Instant::now();
        run(&mut g, &mut now, 1, |_| window(MS, MS, 1, 0));
        let limit = run(&mut g, &mut now, 40, |l| {
            window(Duration::from_secs(1), MS, l, 5)
        });
        assert_eq!(limit, 3);
    }

    #[test]
    fn grows_under_headroom_only_when_the_limit_is_in_use() {
        let mut g = Gradient::new(tuning(), 1, 1000);
        let mut now = Instant::now();
        run(&mut g, &mut now, 1, |_| window(MS, MS, 1, 0));
        run(&mut g, &mut now, 20, |_| {
            window(Duration::from_secs(1), MS, 1, 1)
        });
        assert_eq!(g.limit(), 1);
        // Fast again, but nearly idle: no evidence the limit is too low, so it stays.
        let idle = run(&mut g, &mut now, 10, |_| window(MS, MS, 0, 0));
        assert_eq!(idle, 1);
        // In use (calls refused): it grows by its square root (at least 1) each window.
        let mut seen = vec![g.limit()];
        for _ in 0..6 {
            seen.push(run(&mut g, &mut now, 1, |l| window(MS, MS, l, 3)));
        }
        assert_eq!(seen, [1, 2, 3, 5, 7, 10, 13]);
    }

    #[test]
    fn recovers_to_the_ceiling_when_latency_falls_back() {
        let mut g = Gradient::new(tuning(), 2, 500);
        let mut now = Instant::now();
        run(&mut g, &mut now, 1, |_| window(MS, MS, 5, 0));
        let low = run(&mut g, &mut now, 20, |l| window(40 * MS, MS, l, 10));
        assert_eq!(low, 2);
        // Load stays but latency is back under the allowance: the limit climbs back.
        let mut windows = 0;
        while g.limit() < 500 {
            run(&mut g, &mut now, 1, |l| window(2 * MS, MS, l, 10));
            windows += 1;
            assert!(
                windows < 100,
                "still at {} after {windows} windows",
                g.limit()
            );
        }
        assert!(windows > 10, "{windows}: grows steadily, not at once");
    }

    #[test]
    fn the_baseline_ignores_queue_time_and_follows_a_slower_machine() {
        let t = tuning();
        let mut g = Gradient::new(t, 1, 1000);
        let mut now = Instant::now();
        // Calls take 1 ms of work and queue for 20 ms: the baseline is the work alone, so the
        // queue is seen as queue, window after window.
        run(&mut g, &mut now, 30, |l| window(21 * MS, MS, l, 10));
        assert_eq!(g.baseline(), Some(MS));
        assert_eq!(g.limit(), 1);
        // The machine slows down: the same work takes 7 ms, and calls queue 1 ms. Against the
        // old 1 ms baseline that is congestion, so the limit stays at its floor…
        let windows = (t.baseline_window.as_millis() / 100) as usize - 1;
        run(&mut g, &mut now, windows, |l| window(8 * MS, 7 * MS, l, 10));
        assert_eq!((g.baseline(), g.limit()), (Some(MS), 1));
        // …until the 1 ms minimum is older than the baseline window: then 7 ms is the
        // baseline, 8 ms is within it plus 5 ms, and the limit grows again.
        run(&mut g, &mut now, 5, |l| window(8 * MS, 7 * MS, l, 10));
        assert_eq!(g.baseline(), Some(7 * MS));
        assert!(g.limit() >= 4, "{}", g.limit());
    }

    fn overload(ceilings: [u32; 3]) -> Arc<Overload> {
        Overload::new(OverloadConfig {
            tuning: tuning(),
            floor: 1,
            ceilings,
            metrics: Default::default(),
            runtime_delay: Gauge::noop(),
        })
    }

    fn set_limit(o: &Overload, class: Class, limit: u32) {
        o.lanes[class.index()].limit.store(limit, Ordering::Release);
    }

    #[test]
    fn a_class_is_refused_only_once_every_lower_class_is_shed() {
        let o = overload([100, 100, 4]);
        set_limit(&o, Class::Fast, 1);
        let now = Instant::now();
        let first = o.admit_at(Class::Fast, now).unwrap();
        // At its limit with the lower classes running: they are shed, this one goes ahead.
        let second = o.admit_at(Class::Fast, now).unwrap();
        let state = o.state();
        assert!(
            !state[0].shed && state[1].shed && state[2].shed,
            "{state:?}"
        );
        // Now the lower ones are shed: fast at its limit is refused, and they are too.
        let refused = o.admit_at(Class::Fast, now).unwrap_err();
        assert_eq!((refused.class, refused.cause), (Class::Fast, Cause::Limit));
        for class in [Class::Intensive, Class::JobExecution] {
            let shed = o.admit_at(class, now).unwrap_err();
            assert_eq!(shed.cause, Cause::Priority);
            // Asked back when the shedding ends (rounded up to the minimum).
            assert_eq!(shed.retry_after, o.hold().max(MIN_RETRY));
        }
        assert!(o.start_gate().may_start().is_err());
        // Once the hold is over, the lower classes run again.
        let later = now + o.hold() + MS;
        drop((first, second));
        assert!(o.admit_at(Class::Intensive, later).is_ok());
        assert!(o.admit_at(Class::JobExecution, later).is_ok());
        let s = o.state();
        assert_eq!(s[0].refusals, [1, 0]);
        assert_eq!(s[1].refusals, [0, 1]);
        // The job runner's question was refused too.
        assert_eq!(s[2].refusals, [0, 2]);
    }

    #[test]
    fn the_lowest_class_is_refused_at_its_limit_and_the_ceiling_holds() {
        let o = overload([100, 2, 1]);
        let now = Instant::now();
        let job = o.admit_at(Class::JobExecution, now).unwrap();
        let refused = o.admit_at(Class::JobExecution, now).unwrap_err();
        assert_eq!(refused.cause, Cause::Limit);
        assert_eq!(refused.retry_after, MIN_RETRY);
        drop(job);
        // Intensive at its ceiling: even over the limit it never goes past it.
        let a = o.admit_at(Class::Intensive, now).unwrap();
        let b = o.admit_at(Class::Intensive, now).unwrap();
        assert_eq!(
            o.admit_at(Class::Intensive, now).unwrap_err().cause,
            Cause::Limit
        );
        assert_eq!(o.state()[1].in_flight, 2);
        drop((a, b));
        assert_eq!(o.state()[1].in_flight, 0);
    }

    #[test]
    fn a_slot_dropped_unfinished_gives_its_place_back_and_records_nothing() {
        let o = overload([10, 10, 1]);
        let slot = o.admit(Class::Intensive).unwrap();
        assert_eq!(o.state()[1].in_flight, 1);
        drop(slot);
        assert_eq!(o.state()[1].in_flight, 0);
        assert_eq!(o.lanes[1].window.calls.load(Ordering::Relaxed), 0);
        let slot = o.admit(Class::Intensive).unwrap();
        slot.finish(Duration::ZERO);
        assert_eq!(o.state()[1].in_flight, 0);
        assert_eq!(o.lanes[1].window.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn windows_close_on_completions_and_move_the_limit() {
        let o = overload([1000, 1000, 1]);
        let start = Instant::now();
        let lane = &o.lanes[Class::Intensive.index()];
        let admit = |at| o.admit_at(Class::Intensive, at).unwrap();
        // Forty calls in flight at once, each 50 ms with 49 ms of it queued: once the window
        // is over, the mean (50 ms) is far above the 1 ms of work plus 5 ms.
        let slots: Vec<_> = (0..40).map(|_| admit(start)).collect();
        let end = start + 150 * MS;
        for slot in slots {
            o.completed(slot.class, end, 50 * MS, 49 * MS);
            drop(slot);
        }
        // (1 + 5) / 50 of 40 in use is under half: halved.
        assert_eq!(lane.limit.load(Ordering::Acquire), 20);
        assert_eq!(o.state()[1].baseline, Some(MS));
        // At the new limit, the first call over it sheds job execution and goes ahead; the
        // next is refused, and asked back after about one latency of the class (at least a
        // second).
        lane.in_flight.store(20, Ordering::Release);
        let over = o.admit_at(Class::Intensive, end).unwrap();
        let shed = o.admit_at(Class::Intensive, end).unwrap_err();
        drop(over);
        assert_eq!(shed.retry_after, MIN_RETRY);
        assert_eq!(lane.retry_after(), 50 * MS);
    }

    #[test]
    fn refusals_within_the_budget_pause_nothing_and_past_it_each_waits_its_place() {
        let o = overload([1000, 1000, 1]);
        let lane = &o.lanes[Class::Intensive.index()];
        assert_eq!(
            lane.pause(0),
            Duration::ZERO,
            "no budget before a window closed"
        );
        lane.refusal_spacing_ns
            .store(nanos(10 * MS), Ordering::Relaxed);
        let at = nanos(Duration::from_secs(5));
        // Three refusals at once: the first is within the budget, each next one a place
        // further on.
        assert_eq!(lane.pause(at), Duration::ZERO);
        assert_eq!(lane.pause(at), 10 * MS);
        assert_eq!(lane.pause(at), 20 * MS);
        // 25 ms on, the next place is 5 ms away; 100 ms on, every place is past.
        assert_eq!(lane.pause(at + nanos(25 * MS)), 5 * MS);
        assert_eq!(lane.pause(at + nanos(100 * MS)), Duration::ZERO);
        // A flood waits no longer than MAX_PAUSE.
        let at = at + nanos(200 * MS);
        let longest = (0..1000).map(|_| lane.pause(at)).max().unwrap();
        assert_eq!(longest, MAX_PAUSE);
    }

    #[test]
    fn a_window_sets_the_refusal_budget_from_the_calls_it_served() {
        let o = overload([1000, 1000, 1]);
        let lane = &o.lanes[Class::Intensive.index()];
        let end = o.epoch + 200 * MS;
        // 39 calls within the window, the 40th after its end, which closes it.
        for i in 0..40 {
            let slot = o.admit_at(Class::Intensive, o.epoch).unwrap();
            let at = if i < 39 { o.epoch + 50 * MS } else { end };
            o.completed(slot.class, at, MS, Duration::ZERO);
            drop(slot);
        }
        // 40 calls served in the 200 ms the window lasted: one refusal per 4 of them, 20 ms.
        assert_eq!(
            Duration::from_nanos(lane.refusal_spacing_ns.load(Ordering::Relaxed)),
            200 * MS / 40 * 4
        );
        // A refusal now carries its pause.
        lane.limit.store(1, Ordering::Release);
        o.lanes[Class::JobExecution.index()]
            .shed_until
            .store(u64::MAX, Ordering::Release);
        let held = o.admit_at(Class::Intensive, end).unwrap();
        let first = o.admit_at(Class::Intensive, end).unwrap_err();
        let second = o.admit_at(Class::Intensive, end).unwrap_err();
        drop(held);
        assert_eq!((first.pause, second.pause), (Duration::ZERO, 20 * MS));
    }

    /// `delays` sampled within the first window, then one sample that closes it; the state
    /// after.
    fn delay_window(o: &Overload, window: u32, delays: &[Duration]) -> [ClassState; 3] {
        let opens = o.epoch + 100 * MS * window;
        for (i, &delay) in delays.iter().enumerate() {
            o.runtime_delay(opens + 10 * MS * (i as u32 + 1), delay);
        }
        o.runtime_delay(opens + 100 * MS, Duration::ZERO);
        o.state()
    }

    fn fast_calls(o: &Arc<Overload>, n: usize) {
        for _ in 0..n {
            drop(o.admit_at(Class::Fast, o.epoch).unwrap());
        }
    }

    #[test]
    fn a_runtime_running_tasks_late_under_fast_calls_sheds_the_lowest_busy_class_first() {
        let o = overload([100, 100, 4]);
        let _intensive = o.admit_at(Class::Intensive, o.epoch).unwrap();
        let _job = o.admit_at(Class::JobExecution, o.epoch).unwrap();
        fast_calls(&o, MIN_CALLS as usize);
        // Two samples over the target delay in a window in which fast calls came: the
        // lowest class with calls in flight is shed, the others not yet.
        let s = delay_window(&o, 0, &[6 * MS, MS, 6 * MS]);
        assert!(!s[0].shed && !s[1].shed && s[2].shed, "{s:?}");
        // Another such window: the next one up.
        fast_calls(&o, MIN_CALLS as usize);
        let s = delay_window(&o, 1, &[6 * MS, 6 * MS]);
        assert!(!s[0].shed && s[1].shed && s[2].shed, "{s:?}");
        // Refused for priority, asked back when the shedding ends; fast is never shed.
        let refused = o
            .admit_at(Class::Intensive, o.epoch + 200 * MS)
            .unwrap_err();
        assert_eq!(refused.cause, Cause::Priority);
        fast_calls(&o, MIN_CALLS as usize);
        let s = delay_window(&o, 2, &[6 * MS, 6 * MS, 6 * MS]);
        assert!(!s[0].shed, "{s:?}");
    }

    #[test]
    fn a_late_runtime_sheds_nothing_without_fast_calls_once_in_a_window_or_with_nothing_busy() {
        let o = overload([100, 100, 4]);
        let _intensive = o.admit_at(Class::Intensive, o.epoch).unwrap();
        // Late, but no fast call came: the lower classes' own load, judged by their limits.
        let s = delay_window(&o, 0, &[9 * MS, 9 * MS, 9 * MS]);
        assert!(s.iter().all(|c| !c.shed), "{s:?}");
        // Fast calls, but one late sample in the window: a moment, not a queue.
        fast_calls(&o, MIN_CALLS as usize);
        let s = delay_window(&o, 1, &[9 * MS, MS, MS]);
        assert!(s.iter().all(|c| !c.shed), "{s:?}");
        // Fewer fast calls than a window needs to be judged.
        fast_calls(&o, MIN_CALLS as usize - 1);
        let s = delay_window(&o, 2, &[9 * MS, 9 * MS]);
        assert!(s.iter().all(|c| !c.shed), "{s:?}");
        // Late with fast calls, and no lower class has anything in flight: nothing to shed.
        let idle = overload([100, 100, 4]);
        fast_calls(&idle, MIN_CALLS as usize);
        let s = delay_window(&idle, 0, &[9 * MS, 9 * MS]);
        assert!(s.iter().all(|c| !c.shed), "{s:?}");
    }
}
