//! Closed- and open-loop load phases.
//!
//! A phase starts `concurrency` workers, each with its own connection to one
//! of the phase's targets: connection `w` goes to target `w % targets`, so
//! the connections are spread round robin. Workers claim request indices
//! until the request budget or the deadline is reached. In closed loop they
//! share one counter and a worker sends its next request as soon as the
//! previous one is answered; in open loop request `i` is due at
//! `start + i / rate` (see [`crate::schedule`]), goes to target `i % targets`
//! (round robin again), and its latency counts from that due time.
//! Statistics go to a few mutex-guarded shards per target (one lock per
//! request, uncontended on a single thread) and are merged at the end.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{error_code, Conn, Outcome, RequestTemplate, Slot};
use crate::schedule;
use crate::stats::{latency_ns, new_histogram, Stats};

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
}

/// One server of a phase: where its connections go and what they send.
#[derive(Debug, Clone)]
pub struct PhaseTarget {
    pub addr: SocketAddr,
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
}

/// Per-shard statistics: the whole phase, and a window the progress display
/// drains.
pub struct Shard {
    pub stats: Stats,
    pub window: Histogram<u64>,
}

/// State the workers and the progress display share.
pub struct Live {
    pub shards: Vec<Mutex<Shard>>,
    pub planned: u64,
    pub started_at: Instant,
}

impl Live {
    /// Finished requests and failures so far, and drains the window histogram.
    pub fn sample(&self) -> (u64, u64, Histogram<u64>) {
        let mut window = new_histogram();
        let (mut total, mut failed) = (0, 0);
        for shard in &self.shards {
            let mut s = shard.lock().expect("stats lock");
            total += s.stats.total();
            failed += s.stats.failed();
            window.add(&s.window).expect("same bounds");
            s.window.reset();
        }
        (total, failed, window)
    }

    fn merged(&self, shards: Range<usize>) -> Stats {
        let mut all = Stats::new();
        for shard in &self.shards[shards] {
            all.merge(&shard.lock().expect("stats lock").stats);
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
    started: AtomicU64,
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
}

/// Connections to one target kept between phases (warmup → measurement).
pub type Pool = Vec<Option<Conn>>;

/// Opens up to `n` connections in parallel; failed ones are `None` and are
/// retried (and counted) by the worker's first request.
pub async fn connect_pool(addr: SocketAddr, n: u32, mut pool: Pool, timeout: Duration) -> Pool {
    pool.retain(|c| c.as_ref().is_some_and(Conn::is_open));
    let missing = (n as usize).saturating_sub(pool.len());
    let mut set = JoinSet::new();
    for _ in 0..missing {
        set.spawn(async move {
            tokio::time::timeout(timeout, Conn::connect(addr))
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
    mut pools: Vec<Pool>,
    on_start: impl FnOnce(Arc<Live>),
    mut interrupt: watch::Receiver<bool>,
) -> (PhaseResult, Vec<Pool>) {
    assert!(!targets.is_empty(), "a phase needs a target");
    let concurrency = plan.model.concurrency();
    let limit = match plan.model {
        LoadModel::Closed { .. } => plan.max_requests,
        LoadModel::Open { rate, .. } => {
            schedule::planned_requests(rate, plan.max_duration, plan.max_requests)
        }
    };
    let per_target = spread(concurrency, targets.len());
    pools.resize_with(targets.len(), Vec::new);
    let connect_timeout = plan.timeout.min(Duration::from_secs(5));
    let mut connecting = JoinSet::new();
    for (t, (target, pool)) in targets.iter().zip(pools).enumerate() {
        let (addr, n) = (target.addr, per_target[t]);
        connecting.spawn(async move { (t, connect_pool(addr, n, pool, connect_timeout).await) });
    }
    let mut pools: Vec<Pool> = (0..targets.len()).map(|_| Vec::new()).collect();
    while let Some(joined) = connecting.join_next().await {
        if let Ok((t, pool)) = joined {
            pools[t] = pool;
        }
    }

    // Each target gets its own shards, so its statistics can be told apart.
    let mut shard_ranges = Vec::with_capacity(targets.len());
    let mut shard_count = 0;
    for &n in &per_target {
        let count = if plan.threads <= 1 {
            1
        } else {
            (plan.threads * 4).min(n as usize).max(1)
        };
        shard_ranges.push(shard_count..shard_count + count);
        shard_count += count;
    }
    // Open loop: request `i` goes to the `i % slots`-th target that has connections.
    let slots = per_target.iter().filter(|&&n| n > 0).count() as u64;
    let mut slot = 0;
    let target_states = targets
        .iter()
        .zip(&per_target)
        .map(|(target, &n)| {
            let state = TargetState {
                template: target.template.clone(),
                slot,
                slots,
                next: AtomicU64::new(0),
                started: AtomicU64::new(0),
            };
            slot += u64::from(n > 0);
            state
        })
        .collect();
    let started_at = Instant::now();
    let live = Arc::new(Live {
        shards: (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    stats: Stats::new(),
                    window: new_histogram(),
                })
            })
            .collect(),
        planned: limit,
        started_at,
    });
    let shared = Arc::new(Shared {
        live: live.clone(),
        targets: target_states,
        model: plan.model,
        limit,
        deadline: started_at + plan.max_duration,
        timeout: plan.timeout,
        next: AtomicU64::new(0),
        record_window: plan.record_window,
    });
    on_start(live.clone());

    // Connection `w` goes to target `w % targets`.
    let mut workers = JoinSet::new();
    let mut conns: Vec<_> = pools.into_iter().map(Vec::into_iter).collect();
    let mut assigned = vec![0usize; targets.len()];
    for w in 0..concurrency as usize {
        let t = w % targets.len();
        let Some(conn) = conns[t].next() else {
            continue;
        };
        let range = &shard_ranges[t];
        let shard = range.start + assigned[t] % range.len();
        assigned[t] += 1;
        let slot = Slot::new(targets[t].addr, conn);
        let shared = shared.clone();
        workers.spawn(async move { (t, worker(shared, t, shard, slot).await) });
    }

    let mut pools: Vec<Pool> = (0..targets.len())
        .map(|t| Vec::with_capacity(per_target[t] as usize))
        .collect();
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok((t, conn))) => pools[t].push(conn),
                Some(Err(_)) => {}
            },
            () = wait_for_interrupt(&mut interrupt), if !interrupted => {
                interrupted = true;
                workers.abort_all();
            }
        }
    }
    let elapsed = started_at.elapsed();

    let target_results: Vec<TargetResult> = shard_ranges
        .into_iter()
        .zip(&shared.targets)
        .zip(&per_target)
        .map(|((range, state), &connections)| {
            let stats = live.merged(range);
            let started = state.started.load(Ordering::Relaxed);
            TargetResult {
                connections,
                cancelled: started.saturating_sub(stats.total()),
                stats,
            }
        })
        .collect();
    let stats = live.merged(0..shard_count);
    let started: u64 = shared
        .targets
        .iter()
        .map(|t| t.started.load(Ordering::Relaxed))
        .sum();
    let cancelled = started.saturating_sub(stats.total());
    let stop_reason = if interrupted {
        StopReason::Interrupted
    } else if started >= plan.max_requests {
        StopReason::Requests
    } else {
        StopReason::Duration
    };
    let unsent = match (plan.model, stop_reason) {
        (LoadModel::Open { .. }, StopReason::Duration | StopReason::Requests) => {
            limit.saturating_sub(started)
        }
        _ => 0,
    };
    (
        PhaseResult {
            stats,
            elapsed,
            stop_reason,
            cancelled,
            unsent,
            targets: target_results,
        },
        pools,
    )
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

async fn worker(shared: Arc<Shared>, target: usize, shard: usize, mut slot: Slot) -> Option<Conn> {
    let mut rng = fastrand::Rng::new();
    let mut timeout = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let shard = &shared.live.shards[shard];
    let target = &shared.targets[target];
    while let Some(i) = claim(&shared, target) {
        let base = match shared.model {
            LoadModel::Closed { .. } => {
                let now = Instant::now();
                if now >= shared.deadline {
                    break;
                }
                now
            }
            LoadModel::Open { rate, .. } => {
                let due = shared.live.started_at + schedule::offset(i, rate);
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
        let req = target.template.build(&mut rng);
        let sent = match shared.model {
            LoadModel::Closed { .. } => base,
            LoadModel::Open { .. } => Instant::now(),
        };
        timeout.as_mut().reset(sent + shared.timeout);
        let outcome = slot.execute(req, timeout.as_mut()).await;
        let latency = base.elapsed();
        match outcome {
            Outcome::Answer(answer) => {
                let code = if (200..300).contains(&answer.status) {
                    None
                } else {
                    error_code(&answer.body)
                };
                let mut s = shard.lock().expect("stats lock");
                s.stats
                    .record_response(answer.status, latency, code.as_deref());
                if shared.record_window {
                    s.window.saturating_record(latency_ns(latency));
                }
            }
            Outcome::Failed(kind) => {
                shard
                    .lock()
                    .expect("stats lock")
                    .stats
                    .record_transport_error(kind);
            }
        }
    }
    slot.into_conn()
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
}
