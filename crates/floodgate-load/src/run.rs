//! Closed- and open-loop load phases.
//!
//! A phase opens `concurrency` connections, connection `w` to target
//! `w % targets`, so the connections are spread round robin, and starts a
//! worker per connection, or with HTTP/2 streams (`--streams N`) N workers
//! per connection, each with its own stream. Workers claim request indices
//! until the request budget or the deadline is reached. In closed loop they
//! share one counter and a worker sends its next request as soon as the
//! previous one is answered; in open loop request `i` is due at
//! `start + i / rate` (see [`crate::schedule`]), goes to target `i % targets`
//! (round robin again), and its latency counts from that due time.
//! Statistics go to a few mutex-guarded shards per target (one lock per
//! request, uncontended on a single thread) and are merged at the end; each
//! shard hands its second of the [`Timeline`] over once a later second
//! begins.
//!
//! In the jobs scenario each claimed request is a job: the worker submits it,
//! then polls it on the same connection every poll interval until it
//! finishes, the server no longer knows it, or the deadline passes; only then
//! does the worker claim the next one. Every HTTP request (submissions and
//! polls) is counted in the phase's statistics; what became of each job, in
//! its job statistics.

use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Conn, Outcome, Protocol, Req, RequestTemplate, SharedConn, Slot};
use crate::jobs::{self, Job, JobState, JobStats};
use crate::net::{Endpoint, Setup};
use crate::options::NumberRange;
use crate::schedule;
use crate::stages::Profile;
use crate::stats::{latency_ns, new_histogram, Latencies, LatencySummary, Stats};
use crate::steal::CpuTimes;
use crate::timeline::{SlotClock, SlotData, SlotRecorder, Timeline, TimelineReport};

/// Open-loop requests due within this much of now are sent at once rather
/// than slept for: the timer's resolution is one millisecond, and sleeping
/// would add that lateness to every measured latency.
const EARLY_SEND: Duration = Duration::from_millis(1);

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LoadModel {
    /// Each connection sends its next request as soon as the previous one is answered.
    Closed { concurrency: u32 },
    /// Requests on a fixed schedule; `concurrency` caps those in flight.
    Open { rate: f64, concurrency: u32 },
}

impl LoadModel {
    pub fn concurrency(&self) -> u32 {
        match *self {
            LoadModel::Closed { concurrency } | LoadModel::Open { concurrency, .. } => concurrency,
        }
    }
}

/// Parameters of one phase.
#[derive(Debug, Clone)]
pub struct PhasePlan {
    pub model: LoadModel,
    pub max_requests: u64,
    pub max_duration: Duration,
    pub timeout: Duration,
    /// Runtime worker threads (sizes the statistics shards).
    pub threads: usize,
    /// Keep the window histogram the progress display drains.
    pub record_window: bool,
    /// Keep the live-metrics window (`--out`) of each shard.
    pub record_out: bool,
    /// HTTP/2 streams per connection (1 otherwise): workers per connection.
    pub streams: u32,
    /// A staged profile: in open loop the rate follows it (the model's rate
    /// is its peak), in closed loop the connections at work (the model's
    /// concurrency is its peak); `max_duration` is its duration.
    pub profile: Option<Arc<Profile>>,
    /// The jobs scenario: each request is a job, followed until it finishes.
    pub jobs: Option<JobPlan>,
}

/// How the jobs of the jobs scenario are made and followed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobPlan {
    /// Each job's `number` is drawn uniformly from this range.
    pub numbers: NumberRange,
    /// Each job's `rounds`; `None` leaves the field out (the server's default).
    pub rounds: Option<u64>,
    /// Time between two polls of a job.
    pub poll_interval: Duration,
}

/// Why a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every requested request was sent and finished.
    Requests,
    /// The duration limit came first.
    Duration,
    /// Ctrl-C.
    Interrupted,
    /// A `:abort` threshold failed while the phase ran.
    Aborted,
}

/// One server of a phase: where its connections go and what they send.
#[derive(Debug, Clone)]
pub struct PhaseTarget {
    pub endpoint: Endpoint,
    pub template: RequestTemplate,
}

/// Connections per target when `concurrency` connections are assigned to
/// `targets` targets round robin (the first ones get one more when it does
/// not divide evenly).
pub fn spread(concurrency: u32, targets: usize) -> Vec<u32> {
    let n = u32::try_from(targets).unwrap_or(u32::MAX).max(1);
    (0..n)
        .map(|t| concurrency / n + u32::from(t < concurrency % n))
        .collect()
}

/// What one target of a phase did.
#[derive(Debug)]
pub struct TargetResult {
    /// Connections assigned to it.
    pub connections: u32,
    pub stats: Stats,
    /// Requests to it in flight when the run was interrupted (not in `stats`).
    pub cancelled: u64,
    /// The jobs scenario: what became of its jobs.
    pub jobs: Option<JobStats>,
}

/// Result of one phase.
#[derive(Debug)]
pub struct PhaseResult {
    /// All targets together.
    pub stats: Stats,
    pub elapsed: Duration,
    pub stop_reason: StopReason,
    /// Requests in flight when the run was interrupted (not in `stats`).
    pub cancelled: u64,
    /// Open loop only: requests that were due before the deadline but never
    /// sent because every connection was busy.
    pub unsent: u64,
    /// Per target, in the order given.
    pub targets: Vec<TargetResult>,
    /// The jobs scenario: what became of the jobs.
    pub jobs: Option<JobStats>,
    /// The jobs scenario: how its jobs were made and followed.
    pub job_plan: Option<JobPlan>,
    /// Requests completed and their latencies, interval by interval.
    pub timeline: TimelineReport,
    /// The connections the phase used: how long opening them took.
    pub connections: ConnectionStats,
    /// With a staged profile: what was sent in each stage (by the time each
    /// request was due, or sent), all targets together.
    pub stages: Vec<SlotData>,
    /// When the phase started, by the wall clock (milliseconds since 1970),
    /// to line the report up with the servers' own metrics.
    pub started_at_unix_ms: u64,
    /// The share of the machine's CPU time its host stole during the phase,
    /// percent (see [`crate::steal`]); `None` where the kernel does not say.
    pub stolen_pct: Option<f64>,
}

/// How long opening the connections of a phase took (those the phase opened,
/// and those it took over from its warmup or the step before), apart from
/// request latency.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    pub opened: u64,
    /// TCP connect and TLS handshake together.
    pub setup: Latencies,
    pub tcp_connect: Latencies,
    pub tls_handshake: Latencies,
}

impl ConnectionStats {
    fn record(&mut self, setup: Setup) {
        self.opened += 1;
        self.setup.record(setup.total());
        self.tcp_connect.record(setup.tcp);
        if let Some(tls) = setup.tls {
            self.tls_handshake.record(tls);
        }
    }

    /// The set-up time summary: `None` when no connection was opened.
    pub fn setup_summary(&self) -> Option<LatencySummary> {
        self.setup.summary()
    }
}

/// Per-shard statistics: the whole phase, and a window the progress display
/// drains (request latencies; in the jobs scenario, times to completion).
pub struct Shard {
    pub stats: Stats,
    pub window: Histogram<u64>,
    /// The interval of the timeline this shard is recording.
    pub timeline: SlotRecorder,
    /// The jobs scenario's job statistics.
    pub jobs: Option<JobStats>,
    /// With a staged profile: each stage's requests (by the time each was
    /// due, or sent).
    pub stages: Vec<SlotData>,
    /// The live-metrics window (`--out`), drained by the pusher.
    pub out: Option<SlotData>,
}

/// State the workers and the progress display share.
pub struct Live {
    pub shards: Vec<Mutex<Shard>>,
    /// Requests (jobs, in the jobs scenario) the phase plans to send.
    pub planned: u64,
    pub started_at: Instant,
    /// `started_at` by the wall clock.
    pub started_at_wall: std::time::SystemTime,
    /// The jobs scenario: progress counts jobs.
    pub jobs: bool,
    /// The intervals the shards have handed over.
    pub timeline: Mutex<Timeline>,
    /// Which interval a completion falls in.
    pub clock: SlotClock,
    /// How long opening each connection took.
    pub connections: Mutex<ConnectionStats>,
    /// The staged profile, if any.
    pub profile: Option<Arc<Profile>>,
    /// Each target's statistics shards, in the phase's order of targets.
    pub target_shards: Vec<Range<usize>>,
}

/// One target's figures for the live metrics (see [`Live::drain_targets`]).
#[derive(Debug, Clone)]
pub struct TargetSample {
    /// Requests finished, and those without a 2xx answer, so far.
    pub requests: u64,
    pub failed: u64,
    /// With a staged profile: each stage's `(requests, failed)` so far.
    pub stages: Vec<(u64, u64)>,
    /// What finished since the last call (the responses' latencies).
    pub window: SlotData,
}

impl Live {
    /// The live state of a phase starting at `started_at` (`started_at_wall`
    /// by the wall clock, read with it: building the shards takes
    /// milliseconds) with `shards` statistics shards and `planned` requests.
    fn new(
        shard_ranges: &[Range<usize>],
        plan: &PhasePlan,
        planned: u64,
        (started_at, started_at_wall): (Instant, std::time::SystemTime),
    ) -> Live {
        let shards = shard_ranges.last().map_or(0, |r| r.end);
        let clock = SlotClock::new(plan.max_duration, plan.timeout);
        Live {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        stats: Stats::new(),
                        window: new_histogram(),
                        timeline: SlotRecorder::new(),
                        jobs: plan.jobs.map(|_| JobStats::default()),
                        stages: plan
                            .profile
                            .as_ref()
                            .map_or_else(Vec::new, |p| vec![SlotData::new(); p.stages.len()]),
                        out: plan.record_out.then(SlotData::new),
                    })
                })
                .collect(),
            planned,
            started_at,
            started_at_wall,
            jobs: plan.jobs.is_some(),
            timeline: Mutex::new(Timeline::new(clock)),
            clock,
            connections: Mutex::new(ConnectionStats::default()),
            profile: plan.profile.clone(),
            target_shards: shard_ranges.to_vec(),
        }
    }

    /// Each target's counts so far and what finished since the last call
    /// (whose live-metrics windows it empties).
    pub fn drain_targets(&self) -> Vec<TargetSample> {
        self.target_shards
            .iter()
            .map(|range| {
                let mut sample = TargetSample {
                    requests: 0,
                    failed: 0,
                    stages: Vec::new(),
                    window: SlotData::new(),
                };
                for shard in &self.shards[range.clone()] {
                    let mut s = shard.lock().expect("stats lock");
                    sample.requests += s.stats.total();
                    sample.failed += s.stats.failed();
                    sample.stages.resize(s.stages.len(), (0, 0));
                    for (mine, stage) in sample.stages.iter_mut().zip(&s.stages) {
                        mine.0 += stage.requests();
                        mine.1 += stage.requests() - stage.successful();
                    }
                    if let Some(out) = &mut s.out {
                        sample.window.merge(&out.take());
                    }
                }
                sample
            })
            .collect()
    }

    /// The stage of a request sent (or due) at `base`.
    fn stage_of(&self, base: Instant) -> Option<usize> {
        let profile = self.profile.as_ref()?;
        Some(
            profile.stage_at(
                base.saturating_duration_since(self.started_at)
                    .as_secs_f64(),
            ),
        )
    }

    /// Each stage's requests so far, in the shards of `shards` (all of them:
    /// `0..shards.len()`).
    pub fn stages(&self, shards: Range<usize>) -> Vec<SlotData> {
        let mut all: Vec<SlotData> = Vec::new();
        for shard in &self.shards[shards] {
            let s = shard.lock().expect("stats lock");
            all.resize_with(s.stages.len(), SlotData::new);
            for (mine, theirs) in all.iter_mut().zip(&s.stages) {
                mine.merge(theirs);
            }
        }
        all
    }

    /// A connection the phase uses was opened in `setup`.
    fn record_setup(&self, setup: Setup) {
        self.connections
            .lock()
            .expect("connections lock")
            .record(setup);
    }

    /// Finished requests (jobs the client is done with, in the jobs scenario)
    /// and failures (jobs not verified) so far, and drains the window histogram.
    pub fn sample(&self) -> (u64, u64, Histogram<u64>) {
        let mut window = new_histogram();
        let (mut total, mut failed) = (0, 0);
        for shard in &self.shards {
            let mut s = shard.lock().expect("stats lock");
            if let Some(jobs) = &s.jobs {
                total += jobs.done();
                failed += jobs.done() - jobs.verified();
            } else {
                total += s.stats.total();
                failed += s.stats.failed();
            }
            window.add(&s.window).expect("same bounds");
            s.window.reset();
        }
        (total, failed, window)
    }

    /// The figures thresholds are judged on, so far (the latencies only
    /// when `latency`, since merging them costs more than the counts).
    pub fn figures(&self, latency: bool) -> crate::thresholds::Figures {
        let mut f = crate::thresholds::Figures::default();
        let mut latencies = latency.then(Latencies::new);
        for shard in &self.shards {
            let s = shard.lock().expect("stats lock");
            let stats = &s.stats;
            f.requests += stats.total();
            f.successful += stats.successful();
            f.failed += stats.failed();
            f.timeouts += stats.timeouts();
            f.connection_errors += stats.connect_errors() + stats.io_errors();
            for (status, n) in stats.status_codes() {
                *f.statuses.entry(status).or_insert(0) += n;
            }
            if let Some(all) = &mut latencies {
                all.merge(stats.latencies());
            }
        }
        f.rps = crate::stats::rate_per_second(f.requests, self.started_at.elapsed());
        f.latency = latencies.and_then(|l| l.summary());
        f.setup = self
            .connections
            .lock()
            .expect("connections lock")
            .setup_summary();
        f
    }

    /// The timeline interval of a request completing at `at`.
    fn slot_of(&self, at: Instant) -> u64 {
        self.clock
            .slot_of(at.saturating_duration_since(self.started_at))
    }

    fn merged(&self, shards: Range<usize>) -> Stats {
        let mut all = Stats::new();
        for shard in &self.shards[shards] {
            all.merge(&shard.lock().expect("stats lock").stats);
        }
        all
    }

    fn merged_jobs(&self, shards: Range<usize>) -> Option<JobStats> {
        let mut all: Option<JobStats> = None;
        for shard in &self.shards[shards] {
            if let Some(jobs) = &shard.lock().expect("stats lock").jobs {
                all.get_or_insert_with(JobStats::default).merge(jobs);
            }
        }
        all
    }
}

/// A target's share of the phase.
struct TargetState {
    template: RequestTemplate,
    /// Open loop: this target takes requests `slot, slot + slots, …`.
    slot: u64,
    slots: u64,
    /// Open loop: how many of this target's requests were claimed.
    next: AtomicU64,
    /// Requests (jobs submitted, in the jobs scenario) started.
    started: AtomicU64,
    /// The jobs scenario: polls started.
    polls: AtomicU64,
}

struct Shared {
    live: Arc<Live>,
    targets: Vec<TargetState>,
    model: LoadModel,
    limit: u64,
    deadline: Instant,
    timeout: Duration,
    /// Closed loop: requests claimed, over all targets.
    next: AtomicU64,
    record_window: bool,
    jobs: Option<JobPlan>,
}

/// Connections to one target kept between phases (warmup → measurement).
pub type Pool = Vec<Option<Conn>>;

/// Opens up to `n` connections in parallel (`shared`: HTTP/2 connections
/// whose streams several workers share); failed ones are `None` and are
/// retried (and counted) by the worker's first request.
pub async fn connect_pool(
    endpoint: &Endpoint,
    protocol: Protocol,
    shared: bool,
    n: u32,
    mut pool: Pool,
    timeout: Duration,
) -> Pool {
    pool.retain(|c| c.as_ref().is_some_and(Conn::is_open));
    let missing = (n as usize).saturating_sub(pool.len());
    let mut set = JoinSet::new();
    for _ in 0..missing {
        let endpoint = endpoint.clone();
        set.spawn(async move {
            tokio::time::timeout(timeout, Conn::connect(&endpoint, protocol, shared))
                .await
                .ok()
                .and_then(Result::ok)
        });
    }
    while let Some(conn) = set.join_next().await {
        pool.push(conn.ok().flatten());
    }
    pool.truncate(n as usize);
    pool
}

/// Runs one phase against `targets`. `pools` holds each target's kept
/// connections (missing entries count as empty). `on_start` receives the live
/// statistics (for progress); `interrupt` turning true stops the phase at once.
pub async fn run_phase(
    targets: &[PhaseTarget],
    plan: &PhasePlan,
    pools: Vec<Pool>,
    on_start: impl FnOnce(Arc<Live>),
    mut interrupt: watch::Receiver<bool>,
) -> (PhaseResult, Vec<Pool>) {
    assert!(!targets.is_empty(), "a phase needs a target");
    let concurrency = plan.model.concurrency();
    let limit = match (plan.model, &plan.profile) {
        (LoadModel::Closed { .. }, _) => plan.max_requests,
        (LoadModel::Open { .. }, Some(profile)) => profile.planned_requests(plan.max_requests),
        (LoadModel::Open { rate, .. }, None) => {
            schedule::planned_requests(rate, plan.max_duration, plan.max_requests)
        }
    };
    let per_target = spread(concurrency, targets.len());
    let pools = connect_targets(targets, &per_target, pools, plan).await;

    let shard_ranges = shard_ranges(&per_target, plan.threads);
    let target_states = target_states(targets, &per_target);
    let cpu_at_start = CpuTimes::now();
    let started_at = Instant::now();
    let start = (started_at, std::time::SystemTime::now());
    let live = Arc::new(Live::new(&shard_ranges, plan, limit, start));
    let shared = Arc::new(Shared {
        live: live.clone(),
        targets: target_states,
        model: plan.model,
        limit,
        deadline: started_at + plan.max_duration,
        timeout: plan.timeout,
        next: AtomicU64::new(0),
        record_window: plan.record_window,
        jobs: plan.jobs,
    });
    on_start(live.clone());

    let (workers, groups) = spawn_workers(&shared, targets, pools, &shard_ranges, plan);
    let (mut pools, interrupted) = join_workers(workers, &per_target, &mut interrupt).await;
    for (t, group) in groups {
        pools[t].push(group.take());
    }
    let elapsed = started_at.elapsed();
    let result = phase_result(
        &shared,
        plan,
        shard_ranges,
        &per_target,
        elapsed,
        cpu_at_start,
        interrupted,
    );
    (result, pools)
}

/// Whether the phase's HTTP/2 connections are shared by several workers
/// (REST over HTTP/2, whose connections run in a task of their own, and
/// several streams per connection).
fn shares_connections(protocol: Protocol, streams: u32) -> bool {
    protocol == Protocol::Http2 || streams > 1
}

/// Each target's pool topped up to its share of the connections, all
/// targets connecting at once.
async fn connect_targets(
    targets: &[PhaseTarget],
    per_target: &[u32],
    mut pools: Vec<Pool>,
    plan: &PhasePlan,
) -> Vec<Pool> {
    pools.resize_with(targets.len(), Vec::new);
    let connect_timeout = plan.timeout.min(Duration::from_secs(5));
    let mut connecting = JoinSet::new();
    for (t, (target, pool)) in targets.iter().zip(pools).enumerate() {
        let (endpoint, n, protocol) = (
            target.endpoint.clone(),
            per_target[t],
            target.template.protocol,
        );
        let shared = shares_connections(protocol, plan.streams);
        connecting.spawn(async move {
            (
                t,
                connect_pool(&endpoint, protocol, shared, n, pool, connect_timeout).await,
            )
        });
    }
    let mut pools: Vec<Pool> = (0..targets.len()).map(|_| Vec::new()).collect();
    while let Some(joined) = connecting.join_next().await {
        if let Ok((t, pool)) = joined {
            pools[t] = pool;
        }
    }
    pools
}

/// The statistics shards of each target, as consecutive index ranges: each
/// target gets its own, so its statistics can be told apart.
fn shard_ranges(per_target: &[u32], threads: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::with_capacity(per_target.len());
    let mut shard_count = 0;
    for &n in per_target {
        let count = if threads <= 1 {
            1
        } else {
            (threads * 4).min(n as usize).max(1)
        };
        ranges.push(shard_count..shard_count + count);
        shard_count += count;
    }
    ranges
}

/// Each target's share of the phase. In open loop request `i` goes to the
/// `i % slots`-th target that has connections.
fn target_states(targets: &[PhaseTarget], per_target: &[u32]) -> Vec<TargetState> {
    let slots = per_target.iter().filter(|&&n| n > 0).count() as u64;
    let mut slot = 0;
    targets
        .iter()
        .zip(per_target)
        .map(|(target, &n)| {
            let state = TargetState {
                template: target.template.clone(),
                slot,
                slots,
                next: AtomicU64::new(0),
                started: AtomicU64::new(0),
                polls: AtomicU64::new(0),
            };
            slot += u64::from(n > 0);
            state
        })
        .collect()
}

/// The workers: connection `w` goes to target `w % targets`, with one worker
/// (or, with HTTP/2 streams, one per stream), and the workers of a target
/// take its shards in turn. Each worker returns its target and its
/// connection; the shared HTTP/2 connections are returned apart, with their
/// targets.
#[allow(clippy::type_complexity)]
fn spawn_workers(
    shared: &Arc<Shared>,
    targets: &[PhaseTarget],
    pools: Vec<Pool>,
    shard_ranges: &[Range<usize>],
    plan: &PhasePlan,
) -> (
    JoinSet<(usize, Option<Conn>)>,
    Vec<(usize, Arc<SharedConn>)>,
) {
    let mut workers = JoinSet::new();
    let mut groups = Vec::new();
    let mut conns: Vec<_> = pools.into_iter().map(Vec::into_iter).collect();
    let mut assigned = vec![0usize; targets.len()];
    let streams = plan.streams.max(1);
    for w in 0..plan.model.concurrency() as usize {
        let t = w % targets.len();
        let Some(conn) = conns[t].next() else {
            continue;
        };
        let protocol = targets[t].template.protocol;
        let endpoint = targets[t].endpoint.clone();
        let slots: Vec<Slot> = if shares_connections(protocol, streams) {
            let group = Arc::new(SharedConn::new(endpoint, protocol, conn));
            groups.push((t, group.clone()));
            (0..streams).map(|_| Slot::sharing(group.clone())).collect()
        } else {
            vec![Slot::new(endpoint, protocol, conn)]
        };
        for (stream, slot) in slots.into_iter().enumerate() {
            let range = &shard_ranges[t];
            let shard = range.start + assigned[t] % range.len();
            assigned[t] += 1;
            let shared = shared.clone();
            // A staged closed loop starts the first stream of every
            // connection before the second of any.
            let index = (stream * plan.model.concurrency() as usize + w) as u64;
            workers.spawn(async move { (t, worker(shared, t, shard, index, slot).await) });
        }
    }
    (workers, groups)
}

/// Waits for every worker (aborting them all if `interrupt` turns true) and
/// gathers the connections they kept, per target; also says whether the
/// phase was interrupted.
async fn join_workers(
    mut workers: JoinSet<(usize, Option<Conn>)>,
    per_target: &[u32],
    interrupt: &mut watch::Receiver<bool>,
) -> (Vec<Pool>, bool) {
    let mut pools: Vec<Pool> = per_target
        .iter()
        .map(|&n| Vec::with_capacity(n as usize))
        .collect();
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok((t, conn))) => pools[t].push(conn),
                Some(Err(_)) => {}
            },
            () = wait_for_interrupt(interrupt), if !interrupted => {
                interrupted = true;
                workers.abort_all();
            }
        }
    }
    (pools, interrupted)
}

/// What the phase did, once its workers are done: statistics per target and
/// together, the timeline, and why and how it stopped; `elapsed` since it
/// started, when the machine's CPU times were `cpu_at_start`.
fn phase_result(
    shared: &Shared,
    plan: &PhasePlan,
    shard_ranges: Vec<Range<usize>>,
    per_target: &[u32],
    elapsed: Duration,
    cpu_at_start: Option<CpuTimes>,
    interrupted: bool,
) -> PhaseResult {
    let live = &shared.live;
    for shard in &live.shards {
        shard
            .lock()
            .expect("stats lock")
            .timeline
            .flush(&live.timeline);
    }
    let timeline = live.timeline.lock().expect("timeline lock").report(elapsed);

    let targets: Vec<TargetResult> = shard_ranges
        .into_iter()
        .zip(&shared.targets)
        .zip(per_target)
        .map(|((range, state), &connections)| {
            let stats = live.merged(range.clone());
            let requests =
                state.started.load(Ordering::Relaxed) + state.polls.load(Ordering::Relaxed);
            TargetResult {
                connections,
                cancelled: requests.saturating_sub(stats.total()),
                stats,
                jobs: live.merged_jobs(range),
            }
        })
        .collect();
    let all_shards = 0..live.shards.len();
    let stats = live.merged(all_shards.clone());
    let started: u64 = shared
        .targets
        .iter()
        .map(|t| t.started.load(Ordering::Relaxed))
        .sum();
    let polls: u64 = shared
        .targets
        .iter()
        .map(|t| t.polls.load(Ordering::Relaxed))
        .sum();
    let cancelled = (started + polls).saturating_sub(stats.total());
    let stop_reason = if interrupted {
        StopReason::Interrupted
    } else if started >= plan.max_requests {
        StopReason::Requests
    } else {
        StopReason::Duration
    };
    let unsent = match (plan.model, stop_reason) {
        (LoadModel::Open { .. }, StopReason::Duration | StopReason::Requests) => {
            shared.limit.saturating_sub(started)
        }
        _ => 0,
    };
    PhaseResult {
        stats,
        elapsed,
        stop_reason,
        cancelled,
        unsent,
        targets,
        jobs: live.merged_jobs(all_shards),
        job_plan: plan.jobs,
        timeline,
        connections: live.connections.lock().expect("connections lock").clone(),
        stages: live.stages(0..live.shards.len()),
        started_at_unix_ms: live
            .started_at_wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        stolen_pct: cpu_at_start
            .zip(CpuTimes::now())
            .and_then(|(start, end)| end.stolen_pct_since(&start)),
    }
}

/// Resolves when `interrupt` turns true; never if its sender is gone.
pub async fn wait_for_interrupt(interrupt: &mut watch::Receiver<bool>) {
    if interrupt.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The next request index for a worker of `target`, `None` when the phase
/// has no more requests.
fn claim(shared: &Shared, target: &TargetState) -> Option<u64> {
    let i = match shared.model {
        LoadModel::Closed { .. } => shared.next.fetch_add(1, Ordering::Relaxed),
        LoadModel::Open { .. } => {
            let k = target.next.fetch_add(1, Ordering::Relaxed);
            k.checked_mul(target.slots)?.checked_add(target.slot)?
        }
    };
    (i < shared.limit).then_some(i)
}

/// Closed loop with a staged profile: waits until worker `index` is to run;
/// `false` when it is not to run again before the deadline.
async fn staged_turn(shared: &Shared, profile: &Profile, index: u64) -> bool {
    loop {
        let now = Instant::now();
        if now >= shared.deadline {
            return false;
        }
        let t = now
            .saturating_duration_since(shared.live.started_at)
            .as_secs_f64();
        match profile.next_active(index, t) {
            Some(at) if at <= t => return true,
            Some(at) => {
                let wake = shared.live.started_at + Duration::from_secs_f64(at);
                if wake >= shared.deadline {
                    return false;
                }
                tokio::time::sleep_until(wake).await;
            }
            None => return false,
        }
    }
}

async fn worker(
    shared: Arc<Shared>,
    target: usize,
    shard: usize,
    index: u64,
    mut slot: Slot,
) -> Option<Conn> {
    let mut rng = fastrand::Rng::new();
    let mut timeout = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let shard = &shared.live.shards[shard];
    let target = &shared.targets[target];
    if let Some(setup) = slot.take_setup() {
        shared.live.record_setup(setup);
    }
    let staged_closed = match (&shared.live.profile, shared.model) {
        (Some(profile), LoadModel::Closed { .. }) => Some(profile.clone()),
        _ => None,
    };
    loop {
        if let Some(profile) = &staged_closed {
            if !staged_turn(&shared, profile, index).await {
                break;
            }
        }
        let Some(i) = claim(&shared, target) else {
            break;
        };
        let base = match shared.model {
            LoadModel::Closed { .. } => {
                let now = Instant::now();
                if now >= shared.deadline {
                    break;
                }
                now
            }
            LoadModel::Open { rate, .. } => {
                let offset = match &shared.live.profile {
                    Some(profile) => profile.offset(i),
                    None => schedule::offset(i, rate),
                };
                let due = shared.live.started_at + offset;
                let now = Instant::now();
                if now >= shared.deadline {
                    break;
                }
                if due > now + EARLY_SEND {
                    tokio::time::sleep_until(due - EARLY_SEND).await;
                }
                // Late: count from the due time. Early by < EARLY_SEND: count
                // from the actual send.
                due.min(Instant::now())
            }
        };
        target.started.fetch_add(1, Ordering::Relaxed);
        if let Some(plan) = &shared.jobs {
            follow_job(
                &shared,
                plan,
                target,
                shard,
                &mut slot,
                &mut rng,
                timeout.as_mut(),
                base,
            )
            .await;
            continue;
        }
        let sent = match shared.model {
            LoadModel::Closed { .. } => base,
            LoadModel::Open { .. } => Instant::now(),
        };
        timeout.as_mut().reset(sent + shared.timeout);
        let outcome = slot
            .execute(
                Req::Template(&target.template),
                &mut rng,
                timeout.as_mut(),
                false,
            )
            .await;
        let base = after_setup(&shared, &mut slot, base);
        record(&shared.live, shard, &outcome, base, shared.record_window);
    }
    slot.into_conn()
}

/// Records the set-up of a connection the slot opened for its last request,
/// and returns when that request's latency starts: in closed loop, after the
/// set-up (reported apart); in open loop, at its due time whatever happened.
fn after_setup(shared: &Shared, slot: &mut Slot, base: Instant) -> Instant {
    match slot.take_setup() {
        None => base,
        Some(setup) => {
            shared.live.record_setup(setup);
            match shared.model {
                LoadModel::Closed { .. } => base + setup.total(),
                LoadModel::Open { .. } => base,
            }
        }
    }
}

/// Records the outcome of a request that started at `base` (its due time in
/// open loop) in the shard's statistics, its timeline (by the time it
/// completed: now) and, if `window`, its latency in the window. Returns the
/// latency.
fn record(
    live: &Live,
    shard: &Mutex<Shard>,
    outcome: &Outcome,
    base: Instant,
    window: bool,
) -> Duration {
    let now = Instant::now();
    let latency = now.saturating_duration_since(base);
    match outcome {
        Outcome::Answer(answer) => {
            let success = (200..300).contains(&answer.status);
            let code = if success { None } else { answer.error_code() };
            let mut guard = shard.lock().expect("stats lock");
            let s = &mut *guard;
            s.stats
                .record_response(answer.status, latency, code.as_deref());
            if window {
                s.window.saturating_record(latency_ns(latency));
            }
            s.timeline
                .at(live.slot_of(now), &live.timeline)
                .record_response(latency, success);
            if let Some(stage) = live.stage_of(base) {
                s.stages[stage].record_response(latency, success);
            }
            if let Some(out) = &mut s.out {
                out.record_response(latency, success);
            }
        }
        Outcome::Failed(kind) => {
            let mut guard = shard.lock().expect("stats lock");
            let s = &mut *guard;
            s.stats.record_transport_error(*kind);
            s.timeline
                .at(live.slot_of(now), &live.timeline)
                .record_failure();
            if let Some(stage) = live.stage_of(base) {
                s.stages[stage].record_failure();
            }
            if let Some(out) = &mut s.out {
                out.record_failure();
            }
        }
    }
    latency
}

/// Updates the shard's job statistics.
fn with_jobs(shard: &Mutex<Shard>, f: impl FnOnce(&mut JobStats, &mut Histogram<u64>)) {
    let mut s = shard.lock().expect("stats lock");
    let Shard { jobs, window, .. } = &mut *s;
    f(
        jobs.as_mut().expect("a jobs phase has job statistics"),
        window,
    );
}

/// Whether a poll answered with `status` means the server does not know the
/// job (404, or another client error that retrying will not change).
fn gone(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// One job of the jobs scenario, from `base` (its due or claim time): submits
/// it, then polls it every poll interval until it is seen finished, the
/// server no longer knows it, or the next poll would fall after the deadline
/// (it is then unfinished). Polls that fail (5xx, 408, 429, no answer, a body
/// that is not the job) are retried at the next interval.
#[allow(clippy::too_many_arguments)]
async fn follow_job(
    shared: &Shared,
    plan: &JobPlan,
    target: &TargetState,
    shard: &Mutex<Shard>,
    slot: &mut Slot,
    rng: &mut fastrand::Rng,
    mut timeout: Pin<&mut tokio::time::Sleep>,
    base: Instant,
) {
    let number = rng.u64(plan.numbers.lo..=plan.numbers.hi);
    let body = jobs::job_body(number, plan.rounds);
    timeout.as_mut().reset(Instant::now() + shared.timeout);
    let outcome = slot
        .execute(
            Req::Body(&target.template, &body),
            rng,
            timeout.as_mut(),
            true,
        )
        .await;
    let base = after_setup(shared, slot, base);
    let latency = record(&shared.live, shard, &outcome, base, false);
    let submitted = match &outcome {
        Outcome::Answer(a) if (200..300).contains(&a.status) => Job::parse(&a.body),
        _ => None,
    };
    let Some(mut job) = submitted else {
        with_jobs(shard, |j, _| j.record_submit_failed());
        return;
    };
    with_jobs(shard, |j, _| j.record_submitted(latency));
    loop {
        if !matches!(job.state(), JobState::Pending | JobState::Unknown) {
            let completion = base.elapsed();
            with_jobs(shard, |j, window| {
                j.record_finished(&job, number, plan.rounds, completion);
                if shared.record_window {
                    window.saturating_record(latency_ns(completion));
                }
            });
            return;
        }
        let next = Instant::now() + plan.poll_interval;
        if next >= shared.deadline {
            return;
        }
        tokio::time::sleep_until(next).await;
        let Ok(uri) = target.template.poll_uri(&job.id) else {
            // An id that cannot be a path segment: the job cannot be followed.
            with_jobs(shard, |j, _| j.record_lost());
            return;
        };
        target.polls.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        timeout.as_mut().reset(sent + shared.timeout);
        let outcome = slot
            .execute(
                Req::Get(&target.template, &uri),
                rng,
                timeout.as_mut(),
                true,
            )
            .await;
        let sent = after_setup(shared, slot, sent);
        record(&shared.live, shard, &outcome, sent, false);
        let seen = match &outcome {
            Outcome::Answer(a) if a.status == 200 => {
                Job::parse(&a.body).filter(|j| j.id == job.id && j.state() != JobState::Unknown)
            }
            Outcome::Answer(a) if gone(a.status) => {
                with_jobs(shard, |j, _| {
                    j.record_poll(false);
                    j.record_lost();
                });
                return;
            }
            _ => None,
        };
        with_jobs(shard, |j, _| j.record_poll(seen.is_some()));
        if let Some(seen) = seen {
            job = seen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_spread_round_robin() {
        assert_eq!(spread(6, 3), [2, 2, 2]);
        assert_eq!(spread(7, 3), [3, 2, 2]);
        assert_eq!(spread(500, 1), [500]);
        assert_eq!(spread(2, 3), [1, 1, 0]);
    }

    #[test]
    fn each_target_gets_its_own_shards() {
        assert_eq!(shard_ranges(&[3, 2], 1), [0..1, 1..2]);
        assert_eq!(shard_ranges(&[500, 2, 0], 4), [0..16, 16..18, 18..19]);
    }
}
