//! The runner: claims due jobs in batches, runs them on the worker pool, renews the leases
//! it holds in one statement a tick, and records how runs ended in batches — a commit per
//! batch, not per job. An idle runner issues no claim: it waits for a wake-up (a job queued
//! here; on PostgreSQL, a `NOTIFY` from another replica's insert; a scheduled job coming
//! due; its upkeep finding due work a lost wake-up missed).
//!
//! Execution is at least once: a job is reported done only once its end is committed, and a
//! runner that dies between the run and the commit leaves the job leased; when the lease
//! lapses, some replica's upkeep schedules it again (or discards it after its last attempt).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::{Jobs, RESTART_AFTER};
use crate::domain::execution::{StartGate, StartSlot};
use crate::domain::Kernel;
use crate::pool::{JobError, SubmitError, WorkerPool};
use crate::store::{now_us, Backoff, End, Job};

/// Rounds run between two looks at the cancellation flag.
pub(super) const CHUNK: u64 = 1 << 20;

/// Claimed jobs kept ready per running slot, so the workers never wait on a claim and each
/// claim takes several jobs in one statement.
const PREFETCH_PER_SLOT: usize = 8;

/// Runs' ends recorded in one commit at most...
const FINISH_BATCH: usize = 128;
/// ...and the longest an end waits for others to share its commit.
const FINISH_WINDOW: Duration = Duration::from_millis(2);

/// Runs `rounds` of `kernel` from `number` in chunks; `None` once `cancelled` is set.
pub(super) fn run_chunked(
    kernel: Kernel,
    number: u64,
    rounds: u64,
    cancelled: &AtomicBool,
) -> Option<u64> {
    let mut state = number;
    let mut left = rounds;
    while left > 0 {
        if cancelled.load(Ordering::Relaxed) {
            return None;
        }
        let step = left.min(CHUNK);
        state = kernel(state, step as u32);
        left -= step;
    }
    Some(state)
}

/// How a claimed job's run went.
enum Run {
    /// Ended at this time (µs since the epoch), so.
    Ended(i64, End),
    /// Cancelled, or taken over after its lease lapsed: whoever did it recorded it.
    NotOurs,
    /// The pool took no more work (the service is shutting down): it never ran.
    NotStarted,
}

/// A run to record.
struct Done {
    id: String,
    attempts: u32,
    /// When the run ended.
    at: i64,
    end: End,
}

/// One start of the runner: what its tasks share.
struct Runner {
    jobs: Jobs,
    pool: WorkerPool,
    kernel: Kernel,
    /// This runner's name in the leases it holds: one per replica and start.
    id: String,
    /// Jobs on the worker pool at once.
    slots: usize,
    /// Asked before each job starts: under overload, job execution yields to the API.
    gate: StartGate,
    /// Claimed, not started yet (leased, renewed with the running ones).
    ready: Mutex<VecDeque<Job>>,
    /// Jobs handed to the pool and not yet ended.
    running: std::sync::atomic::AtomicUsize,
    /// Woken when work may be due (a job queued here or announced, a retry or scheduled job
    /// coming due, the upkeep finding due work).
    wake: Arc<Notify>,
    /// Woken when a run ends and its slot frees.
    freed: Notify,
    /// The earliest time a job this runner scheduled (a retry) comes due.
    next_retry: Mutex<Option<i64>>,
}

impl Jobs {
    /// Claim and run jobs, at most `max_running` on the worker pool at once, and keep the
    /// store tidy: rescue jobs whose runner stopped renewing, purge old ones, publish the
    /// gauges. Runs until [`Jobs::drain`]ed. `started` is called once the first round of
    /// upkeep and then the first claim are done: what the jobs need (connections, prepared
    /// statements) is in place, and start-up is over. `gate` is asked before each job starts
    /// (admission's verdict on job execution): a job it refuses stays claimed, and the runner
    /// asks again when the gate says.
    ///
    /// Supervised: a panic in the runner is logged, counted, reported by `/health`, and the
    /// runner starts again a second later; it never stops silently while submissions are
    /// still accepted.
    pub async fn run(
        self,
        pool: WorkerPool,
        kernel: Kernel,
        max_running: usize,
        gate: StartGate,
        started: impl FnOnce() + Send + 'static,
    ) {
        let mut started: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(started));
        let start = || {
            let runner = Arc::new(Runner {
                jobs: self.clone(),
                pool: pool.clone(),
                kernel,
                id: uuid::Uuid::new_v4().to_string(),
                slots: max_running.max(1),
                gate: gate.clone(),
                ready: Mutex::default(),
                running: Default::default(),
                wake: Arc::clone(&self.wake),
                freed: Notify::new(),
                next_retry: Mutex::default(),
            });
            tokio::spawn(runner.run(started.take()))
        };
        let fault = |fault: String| {
            tracing::error!(error = %fault, "the job runner panicked; it starts again in 1 s");
            self.metrics.runner_restarts.increment(1);
            *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
        };
        supervise(start, fault, self.draining.subscribe()).await;
    }
}

impl Runner {
    async fn run(self: Arc<Self>, started: Option<Box<dyn FnOnce() + Send>>) {
        let (upkept_tx, upkept) = oneshot::channel();
        let (done_tx, done_rx) = mpsc::channel(self.slots * 4 + FINISH_BATCH);
        let upkeep = tokio::spawn(Arc::clone(&self).upkeep(upkept_tx));
        let listen = tokio::spawn(Arc::clone(&self).listen());
        let renew = tokio::spawn(Arc::clone(&self).renew());
        let finish = tokio::spawn(Arc::clone(&self).finish(done_rx));
        Arc::clone(&self).claim(upkept, started, done_tx).await;
        // Drained: every run has sent its end (the claim loop waited for them), and the
        // finisher records what it holds once the last sender is gone.
        let _ = finish.await;
        for task in [upkeep, listen, renew] {
            task.abort();
        }
    }

    fn draining(&self) -> bool {
        *self.jobs.draining.borrow()
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim when there is room and work may be due, and hand ready jobs to free slots.
    async fn claim(
        self: Arc<Self>,
        first_upkeep: oneshot::Receiver<()>,
        mut started: Option<Box<dyn FnOnce() + Send>>,
        done: mpsc::Sender<Done>,
    ) {
        let _ = first_upkeep.await;
        let settings = &self.jobs.settings;
        let prefetch = self.slots * PREFETCH_PER_SLOT;
        let mut draining = self.jobs.draining.subscribe();
        // Whether work may be due: at start, after a wake-up, after a full claim. A slot that
        // frees is no reason to look: if the last claim took everything due, an idle replica
        // asks nothing until it is told of new work.
        let mut look = true;
        loop {
            if self.draining() {
                break;
            }
            let held = self.lock_ready().len() + self.running.load(Ordering::Acquire);
            if look && held < prefetch {
                let want = (prefetch - held) as u32;
                let claimed = self
                    .jobs
                    .store
                    .claim(&self.id, want, settings.lease, now_us())
                    .await;
                if let Some(started) = started.take() {
                    started();
                }
                look = match claimed {
                    Ok(jobs) => {
                        self.jobs.clear_fault();
                        let full = jobs.len() as u32 == want;
                        self.lock_ready().extend(jobs);
                        full
                    }
                    // The database is away: the upkeep and the next wake-up look again.
                    Err(_) => false,
                };
            }
            // Refused by the gate: ask again when it says.
            let gate_wait = self.start_ready(&done);
            // A full claim: more may be due at once, while there is room for it.
            if look && self.lock_ready().len() + self.running.load(Ordering::Acquire) < prefetch {
                continue;
            }
            let retry_at = *self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
            let until_retry =
                retry_at.map(|at| Duration::from_micros(at.saturating_sub(now_us()).max(0) as u64));
            tokio::select! {
                _ = draining.wait_for(|d| *d) => break,
                _ = self.wake.notified() => look = true,
                _ = self.freed.notified() => {}
                _ = tokio::time::sleep(gate_wait.unwrap_or(Duration::MAX)), if gate_wait.is_some() => {}
                _ = tokio::time::sleep(until_retry.unwrap_or(Duration::MAX)), if until_retry.is_some() => {
                    self.next_retry.lock().unwrap_or_else(|p| p.into_inner()).take();
                    look = true;
                }
            }
        }
        // Draining: claims not started go back to the queue as they were; the runs on the
        // pool end and send their ends.
        let unstarted: Vec<Job> = self.lock_ready().drain(..).collect();
        for job in unstarted {
            self.release(&job.id).await;
        }
        while self.running.load(Ordering::Acquire) > 0 {
            self.freed.notified().await;
        }
        drop(done);
    }

    /// Hand ready jobs to the pool while slots are free and the gate lets them start; when
    /// it does not, how long to wait before asking it again.
    fn start_ready(self: &Arc<Self>, done: &mpsc::Sender<Done>) -> Option<Duration> {
        while self.running.load(Ordering::Acquire) < self.slots {
            if self.lock_ready().is_empty() {
                break;
            }
            let slot: StartSlot = match self.gate.may_start() {
                Ok(slot) => slot,
                Err(wait) => return Some(wait),
            };
            let Some(job) = self.lock_ready().pop_front() else {
                break;
            };
            self.running.fetch_add(1, Ordering::AcqRel);
            let (runner, done) = (Arc::clone(self), done.clone());
            tokio::spawn(async move {
                let (id, attempts) = (job.id.clone(), job.attempts);
                let run = runner.execute(job).await;
                match run {
                    Run::Ended(at, end) => {
                        let _ = done
                            .send(Done {
                                id,
                                attempts,
                                at,
                                end,
                            })
                            .await;
                    }
                    Run::NotOurs => {}
                    Run::NotStarted => runner.release(&id).await,
                }
                // The job's place in job execution is given back as it leaves the pool.
                drop(slot);
                runner.running.fetch_sub(1, Ordering::AcqRel);
                runner.freed.notify_one();
            });
        }
        None
    }

    /// A claim the pool never started goes back to the queue with its attempt returned.
    async fn release(&self, id: &str) {
        match self.jobs.store.release(id, &self.id).await {
            Ok(_) => {
                tracing::info!(job = %id, "job released unstarted: the service is shutting down")
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not release a job at shutdown; it runs again when its lease lapses")
            }
        }
    }

    /// Run the job on the pool.
    async fn execute(&self, job: Job) -> Run {
        let flag = Arc::new(AtomicBool::new(false));
        self.jobs
            .lock_running()
            .insert(job.id.clone(), Arc::clone(&flag));
        let run = self.run_on_pool(&job, &flag).await;
        self.jobs.lock_running().remove(&job.id);
        run
    }

    async fn run_on_pool(&self, job: &Job, flag: &Arc<AtomicBool>) -> Run {
        let (number, rounds, kernel) = (job.number, job.rounds, self.kernel);
        let handle = loop {
            let cancelled = Arc::clone(flag);
            match self
                .pool
                .submit(move || run_chunked(kernel, number, rounds, &cancelled))
            {
                Ok(handle) => break handle,
                Err(SubmitError::ShuttingDown) => return Run::NotStarted,
                // The pool is busy with v1 work: wait for room, unless the service is
                // shutting down. The lease is renewed meanwhile.
                Err(SubmitError::Full) => {
                    if self.draining() {
                        return Run::NotStarted;
                    }
                    if flag.load(Ordering::Relaxed) {
                        return Run::NotOurs;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let done = handle.await;
        let at = now_us();
        match done {
            Ok(Some(digest)) => Run::Ended(
                at,
                End::Succeeded {
                    result: number.wrapping_mul(number),
                    digest,
                },
            ),
            Ok(None) => Run::NotOurs,
            // The pool stopped before the job ran: the claim goes back.
            Err(JobError::Stopped) => Run::NotStarted,
            Err(e) => Run::Ended(at, self.after_failure(job, &e, at)),
        }
    }

    /// A run that failed at `at`: another attempt after the backoff, or discarded after the
    /// last.
    fn after_failure(&self, job: &Job, error: &JobError, at: i64) -> End {
        let settings = &self.jobs.settings;
        let error = error.to_string();
        if job.attempts >= settings.max_attempts {
            return End::Discard { error };
        }
        let backoff = Backoff {
            base: settings.retry_backoff,
            max: settings.retry_backoff_max,
        };
        let delay = backoff.after(job.attempts, fastrand::f64());
        let run_at = at.saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
        End::Retry { error, run_at }
    }

    /// Record runs' ends in batches: the first end waits up to [`FINISH_WINDOW`] for others.
    async fn finish(self: Arc<Self>, mut ends: mpsc::Receiver<Done>) {
        let mut batch: Vec<Done> = Vec::with_capacity(FINISH_BATCH);
        while let Some(first) = ends.recv().await {
            batch.push(first);
            let window = tokio::time::sleep(FINISH_WINDOW);
            tokio::pin!(window);
            while batch.len() < FINISH_BATCH {
                tokio::select! {
                    biased;
                    more = ends.recv() => match more {
                        Some(done) => batch.push(done),
                        None => break,
                    },
                    _ = &mut window => break,
                }
            }
            self.record(&mut batch).await;
        }
    }

    /// Commit a batch of ends, trying again while the leases would still hold: a run is
    /// reported only once its end is committed; if it cannot be, the lease lapses and the
    /// job runs again (at least once).
    async fn record(&self, batch: &mut Vec<Done>) {
        let ends: Vec<(String, i64, End)> = batch
            .iter()
            .map(|d| (d.id.clone(), d.at, d.end.clone()))
            .collect();
        let give_up = tokio::time::Instant::now() + self.jobs.settings.lease / 2;
        let recorded = loop {
            match self.jobs.store.finish(&self.id, &ends).await {
                Ok(ids) => break ids.into_iter().collect::<HashSet<_>>(),
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(error = %e, jobs = ends.len(), "could not record how jobs ended; they run again when their leases lapse");
                    break HashSet::new();
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let metrics = &self.jobs.metrics;
        for done in batch.drain(..) {
            if !recorded.contains(&done.id) {
                continue;
            }
            match &done.end {
                End::Succeeded { .. } => {
                    metrics.succeeded.increment(1);
                    self.jobs.seen().succeeded += 1;
                }
                End::Failed { .. } => metrics.failed.increment(1),
                End::Discard { .. } => metrics.discarded.increment(1),
                End::Retry { run_at, .. } => {
                    metrics.retried.increment(1);
                    let mut next = self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
                    *next = Some(next.map_or(*run_at, |t| t.min(*run_at)));
                    self.wake.notify_one();
                    continue;
                }
            }
            metrics.attempts.record(f64::from(done.attempts));
        }
    }

    /// Extend every lease this runner holds, once a tick while it holds any; a job that is
    /// no longer its own (cancelled, or rescued after the lease lapsed) is stopped or dropped.
    async fn renew(self: Arc<Self>) {
        let settings = &self.jobs.settings;
        let mut tick = tokio::time::interval((settings.lease / 3).min(Duration::from_secs(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let held = self.lock_ready().len() + self.running.load(Ordering::Acquire);
            if held == 0 {
                continue;
            }
            // A database away for a moment takes no job from us; a lease that lapses does.
            let Ok(ours) = self
                .jobs
                .store
                .renew(&self.id, settings.lease, now_us())
                .await
            else {
                continue;
            };
            self.lock_ready().retain(|job| ours.contains(&job.id));
            for (id, flag) in self.jobs.lock_running().iter() {
                if !ours.contains(id) {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Other replicas' inserts, announced by PostgreSQL: wake the claim loop. This replica's
    /// own notices are skipped: whatever queued the jobs woke it already.
    async fn listen(self: Arc<Self>) {
        let Some(mut listener) = self.jobs.store.listener().await else {
            return;
        };
        loop {
            match listener.recv().await {
                Ok(notice) if self.jobs.store.sent_here(&notice) => {}
                Ok(_) => self.wake.notify_one(),
                // Re-established on the next receive; what was announced meanwhile the
                // upkeep's poll finds.
                Err(e) => {
                    tracing::debug!(error = %e, "job wake-ups: listening connection lost");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Every `jobs.poll_interval`: rescue, purge, count, and wake the claim loop when due
    /// work is waiting (a lost wake-up, another replica's lapsed job, a scheduled job due).
    async fn upkeep(self: Arc<Self>, upkept: oneshot::Sender<()>) {
        let settings = &self.jobs.settings;
        let metrics = &self.jobs.metrics;
        let mut tick = tokio::time::interval(settings.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = Some(upkept);
        let backoff = Backoff {
            base: settings.retry_backoff,
            max: settings.retry_backoff_max,
        };
        loop {
            tick.tick().await;
            let (idle, used) = self.jobs.store.connections();
            metrics.db_idle.set(f64::from(idle));
            metrics.db_used.set(f64::from(used));
            self.jobs.store.check_file().await;
            // A database that is away skips a round; the next one catches up. The failure is
            // the breaker's to count (and `/health`'s to show); the log says which round.
            let upkept = self
                .jobs
                .store
                .upkeep(
                    now_us(),
                    settings.max_attempts,
                    backoff,
                    settings.retention,
                    1000,
                )
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "the jobs upkeep failed"));
            if let Ok(done) = upkept {
                metrics.retried.increment(done.retried);
                metrics.discarded.increment(done.discarded);
                for (count, gauge) in done.active.iter().zip(&metrics.by_status) {
                    gauge.set(*count as f64);
                }
                let age = done
                    .oldest_due
                    .map_or(0.0, |t| (done.now - t).max(0) as f64 / 1e6);
                metrics.oldest_queued_age.set(age);
                {
                    let mut seen = self.jobs.seen();
                    seen.active = done.active;
                    seen.oldest_due_age = Duration::from_secs_f64(age);
                    seen.recent_discards = done.recent_discards.clone();
                }
                if done.oldest_due.is_some() {
                    self.wake.notify_one();
                }
                if let Some(next) = done.next_due {
                    // Local time for the wake-up, from the database's clock's distance.
                    let at = now_us().saturating_add(next.saturating_sub(done.now));
                    let mut retry = self.next_retry.lock().unwrap_or_else(|p| p.into_inner());
                    *retry = Some(retry.map_or(at, |t| t.min(at)));
                    drop(retry);
                    self.wake.notify_one();
                }
            }
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        }
    }
}

/// Runs the task `start` spawns until it returns; a panic is handed to `fault` and the task
/// started again after [`RESTART_AFTER`], unless `stop` says the service is shutting down.
pub(super) async fn supervise(
    mut start: impl FnMut() -> tokio::task::JoinHandle<()>,
    mut fault: impl FnMut(String),
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match start().await {
            Ok(()) => return,
            Err(e) if e.is_panic() => fault(crate::error::panic_message(&e.into_panic())),
            Err(_) => return,
        }
        tokio::select! {
            _ = stop.wait_for(|d| *d) => return,
            _ = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
}
