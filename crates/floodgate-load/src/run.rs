//! Closed- and open-loop load phases.
//!
//! A phase starts `concurrency` workers, each with its own connection. They
//! claim request indices from one shared counter until the request budget or
//! the deadline is reached. In closed loop a worker sends its next request as
//! soon as the previous one is answered; in open loop request `i` is due at
//! `start + i / rate` (see [`crate::schedule`]) and its latency counts from
//! that due time. Statistics go to a few mutex-guarded shards (one lock per
//! request, uncontended on a single thread) and are merged at the end.

use std::net::SocketAddr;
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

/// Result of one phase.
#[derive(Debug)]
pub struct PhaseResult {
    pub stats: Stats,
    pub elapsed: Duration,
    pub stop_reason: StopReason,
    /// Requests in flight when the run was interrupted (not in `stats`).
    pub cancelled: u64,
    /// Open loop only: requests that were due before the deadline but never
    /// sent because every connection was busy.
    pub unsent: u64,
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

    fn merged(&self) -> Stats {
        let mut all = Stats::new();
        for shard in &self.shards {
            all.merge(&shard.lock().expect("stats lock").stats);
        }
        all
    }
}

struct Shared {
    live: Arc<Live>,
    template: RequestTemplate,
    model: LoadModel,
    limit: u64,
    deadline: Instant,
    timeout: Duration,
    next: AtomicU64,
    started: AtomicU64,
    record_window: bool,
}

/// Connections kept between phases of the same target (warmup → measurement).
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

/// Runs one phase. `on_start` receives the live statistics (for progress);
/// `interrupt` turning true stops the phase at once.
pub async fn run_phase(
    addr: SocketAddr,
    template: RequestTemplate,
    plan: &PhasePlan,
    pool: Pool,
    on_start: impl FnOnce(Arc<Live>),
    mut interrupt: watch::Receiver<bool>,
) -> (PhaseResult, Pool) {
    let concurrency = plan.model.concurrency();
    let limit = match plan.model {
        LoadModel::Closed { .. } => plan.max_requests,
        LoadModel::Open { rate, .. } => {
            schedule::planned_requests(rate, plan.max_duration, plan.max_requests)
        }
    };
    let pool = connect_pool(
        addr,
        concurrency,
        pool,
        plan.timeout.min(Duration::from_secs(5)),
    )
    .await;

    let shard_count = if plan.threads <= 1 {
        1
    } else {
        (plan.threads * 4).min(concurrency as usize)
    };
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
        template,
        model: plan.model,
        limit,
        deadline: started_at + plan.max_duration,
        timeout: plan.timeout,
        next: AtomicU64::new(0),
        started: AtomicU64::new(0),
        record_window: plan.record_window,
    });
    on_start(live.clone());

    let mut workers = JoinSet::new();
    for (i, conn) in pool.into_iter().enumerate() {
        let shared = shared.clone();
        workers.spawn(worker(shared, i % shard_count, Slot::new(addr, conn)));
    }

    let mut pool = Vec::with_capacity(concurrency as usize);
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(conn)) => pool.push(conn),
                Some(Err(_)) => {}
            },
            () = wait_for_interrupt(&mut interrupt), if !interrupted => {
                interrupted = true;
                workers.abort_all();
            }
        }
    }
    let elapsed = started_at.elapsed();

    let stats = live.merged();
    let started = shared.started.load(Ordering::Relaxed);
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
        },
        pool,
    )
}

/// Resolves when `interrupt` turns true; never if its sender is gone.
pub async fn wait_for_interrupt(interrupt: &mut watch::Receiver<bool>) {
    if interrupt.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn worker(shared: Arc<Shared>, shard: usize, mut slot: Slot) -> Option<Conn> {
    let mut rng = fastrand::Rng::new();
    let mut timeout = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let shard = &shared.live.shards[shard];
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= shared.limit {
            break;
        }
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
        shared.started.fetch_add(1, Ordering::Relaxed);
        let req = shared.template.build(&mut rng);
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
