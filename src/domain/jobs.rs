//! Durable jobs: the job resource, and the runner that claims jobs from the store and runs
//! them on the worker pool — a lease renewed while a job runs, cancellation noticed between
//! chunks of rounds, at most `jobs.max_running` at once so the v1 API is never starved.
//! Execution is at least once: a job whose replica died is claimed again once its lease
//! lapses, and the kernel is deterministic, so a retried job gives the same answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{oneshot, watch, Notify, Semaphore};

use sha2::{Digest, Sha256};

use super::job_events::{JobWatch, JobWatchers};
use super::Kernel;
use crate::config::JobsSettings;
use crate::dependency::CircuitState;
use crate::error::{ApiError, Missing};
use crate::pool::{SubmitError, WorkerPool};
use crate::store::{now_us, Cancelled, Finish, Inserted, JobStore, NewJob, StoreError};

/// A job as the domain hands it out, and where it is in its life. The store decodes its rows
/// into this record, which holds nothing a caller must not see (owner, lease and idempotency
/// key stay in the store); callers name it here, so no transport needs the store.
pub use crate::store::{Job, JobStatus};

/// How long a client is asked to wait while the database is unavailable.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The refusal while the jobs database cannot be reached (or jobs are off).
pub fn unavailable() -> ApiError {
    ApiError::DependencyUnavailable {
        what: "the jobs database",
        retry_after: RETRY_AFTER,
    }
}

fn store_error(_: StoreError) -> ApiError {
    unavailable()
}

/// A job id as clients write it: a UUID, returned in its canonical form.
pub fn job_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::InvalidRequest(format!("`{id}` is not a job id (a UUID)")))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(Missing::Job(id.to_owned()))
}

/// Whose jobs a call sees. With authentication on, a job belongs to the principal that
/// submitted it, idempotency keys included, and only a jobs admin sees every principal's;
/// another principal's job is not found, so a caller learns nothing of it, not even that it
/// exists. With authentication off, jobs have no owner and every call sees them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Who calls: the owner of the jobs it submits.
    owner: Option<String>,
    /// Sees every owner's jobs.
    all: bool,
}

impl Scope {
    /// The scope of a call that authenticated as `principal` (`None` with authentication
    /// off), seeing every principal's jobs when `admin`.
    pub fn of(principal: Option<&str>, admin: bool) -> Scope {
        Scope {
            owner: principal.map(str::to_owned),
            all: admin || principal.is_none(),
        }
    }

    /// The owner whose jobs alone the store may return; `None` for every job.
    fn only(&self) -> Option<&str> {
        if self.all {
            None
        } else {
            self.owner.as_deref()
        }
    }
}

/// What a submission gave back.
#[derive(Debug)]
pub struct Submitted {
    pub job: Job,
    /// An earlier submission with the same idempotency key and body made this job.
    pub replayed: bool,
}

/// A submission, validated by [`Jobs::submit`].
#[derive(Debug, Clone)]
pub struct Submission {
    pub number: u64,
    /// The configured default when absent.
    pub rounds: Option<u64>,
    /// 1–255 visible ASCII characters: the same key with the same body returns the first job.
    pub idempotency_key: Option<String>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Handles the runner records into.
#[derive(Clone)]
pub struct JobMetrics {
    pub succeeded: Counter,
    pub failed: Counter,
    pub cancelled: Counter,
    pub runner_restarts: Counter,
    pub attempts: Histogram,
    /// `floodgate_jobs{status}`, in [`JobStatus::ALL`] order.
    pub by_status: [Gauge; 5],
    pub oldest_queued_age: Gauge,
    pub db_idle: Gauge,
    pub db_used: Gauge,
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self {
            succeeded: Counter::noop(),
            failed: Counter::noop(),
            cancelled: Counter::noop(),
            runner_restarts: Counter::noop(),
            attempts: Histogram::noop(),
            by_status: std::array::from_fn(|_| Gauge::noop()),
            oldest_queued_age: Gauge::noop(),
            db_idle: Gauge::noop(),
            db_used: Gauge::noop(),
        }
    }
}

/// Rounds run between two looks at the cancellation flag.
const CHUNK: u64 = 1 << 20;

/// Runs `rounds` of `kernel` from `number` in chunks; `None` once `cancelled` is set.
fn run_chunked(kernel: Kernel, number: u64, rounds: u64, cancelled: &AtomicBool) -> Option<u64> {
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

/// The jobs side of the service: the store, and the runner's handles.
#[derive(Clone)]
pub struct Jobs {
    pub store: JobStore,
    pub settings: JobsSettings,
    wake: Arc<Notify>,
    /// Flags of the jobs running here, so a cancellation here stops them at once (elsewhere,
    /// the lease renewal notices).
    running: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
    /// Set when the service starts shutting down.
    draining: Arc<watch::Sender<bool>>,
    /// Why the runner last stopped, until it works again.
    fault: Arc<Mutex<Option<String>>>,
    metrics: JobMetrics,
    /// One watcher per job followed by a stream, shared by its streams.
    watchers: JobWatchers,
}

/// How a claimed job's run went.
enum Run {
    Ended(Finish),
    /// Cancelled, or taken over after its lease lapsed.
    NotOurs,
    /// The pool took no more work (the service is shutting down): it never ran.
    NotStarted,
}

impl Jobs {
    pub fn new(store: JobStore, settings: JobsSettings, metrics: JobMetrics) -> Self {
        Self {
            store,
            settings,
            wake: Arc::new(Notify::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            draining: Arc::new(watch::channel(false).0),
            fault: Arc::default(),
            metrics,
            watchers: JobWatchers::default(),
        }
    }

    /// Validate and queue a job for the caller; it is committed to the database before this
    /// returns.
    pub async fn submit(
        &self,
        scope: &Scope,
        s: Submission,
        default_rounds: u32,
    ) -> Result<Submitted, ApiError> {
        let max = crate::domain::MAX_NUMBER;
        if s.number > max {
            return Err(ApiError::InvalidRequest(format!(
                "number must be an integer between 0 and {max} (got {})",
                s.number
            )));
        }
        let max_rounds = self.settings.max_rounds;
        // The operator's default is not held to the limit set for what clients ask.
        let rounds = match s.rounds {
            None => u64::from(default_rounds),
            Some(r) if (1..=max_rounds).contains(&r) => r,
            Some(r) => {
                return Err(ApiError::InvalidRequest(format!(
                    "rounds must be an integer between 1 and {max_rounds} (got {r})"
                )))
            }
        };
        if let Some(key) = &s.idempotency_key {
            if !(1..=255).contains(&key.len()) || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                return Err(ApiError::InvalidRequest(
                    "Idempotency-Key must be one header of 1-255 visible ASCII characters".into(),
                ));
            }
        }
        let now = now_us();
        let idempotency = s.idempotency_key.map(|k| {
            let hash = hex::encode(Sha256::digest(format!("{}:{rounds}", s.number)));
            let ttl = i64::try_from(self.settings.idempotency_ttl.as_micros()).unwrap_or(i64::MAX);
            (k, hash, now.saturating_add(ttl))
        });
        let inserted = self
            .store
            .insert(NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                number: s.number,
                rounds,
                created_at: now,
                owner: scope.owner.clone(),
                idempotency,
            })
            .await
            .map_err(store_error)?;
        match inserted {
            Inserted::Created(job) => {
                self.wake();
                Ok(Submitted {
                    job,
                    replayed: false,
                })
            }
            Inserted::Replayed(job) => Ok(Submitted {
                job,
                replayed: true,
            }),
            Inserted::KeyReused => Err(ApiError::IdempotencyKeyReused),
        }
    }

    /// The job `id` (any UUID spelling), when `scope` sees it.
    pub async fn find(&self, scope: &Scope, id: &str) -> Result<Job, ApiError> {
        let id = job_id(id)?;
        self.store
            .get(&id, scope.only())
            .await
            .map_err(store_error)?
            .ok_or_else(|| not_found(&id))
    }

    /// Follow the job `id` (as [`Jobs::find`] returned it): its changes, from the one
    /// watcher this replica runs for the job.
    pub fn watch(&self, id: &str) -> JobWatch {
        self.watchers.subscribe(&self.store, id)
    }

    /// Jobs this replica is watching for streams now.
    pub fn watched(&self) -> usize {
        self.watchers.len()
    }

    /// Cancel a queued or running job `scope` sees (a running one stops between chunks of
    /// rounds).
    pub async fn cancel(&self, scope: &Scope, id: &str) -> Result<Job, ApiError> {
        let id = job_id(id)?;
        match self
            .store
            .cancel(&id, scope.only(), now_us())
            .await
            .map_err(store_error)?
        {
            Cancelled::Cancelled(job) => {
                self.cancelled(&job.id);
                Ok(job)
            }
            Cancelled::AlreadyFinished(job) => Err(ApiError::JobFinished(job.id)),
            Cancelled::NotFound => Err(not_found(&id)),
        }
    }

    /// The jobs `scope` sees, newest first, after `cursor` (`(created_at, id)` of the last
    /// one seen).
    pub async fn list(
        &self,
        scope: &Scope,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<(i64, String)>,
    ) -> Result<Vec<Job>, ApiError> {
        self.store
            .list(scope.only(), status, limit, cursor)
            .await
            .map_err(store_error)
    }

    /// Whether API v2 can be served: `Err` says why not, for `/health`.
    pub fn health(&self) -> Result<(), String> {
        if let Some(fault) = &*self.fault.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(format!(
                "unhealthy: the job runner panicked ({fault}) and is restarting"
            ));
        }
        if let Some(why) = self.store.lost() {
            return Err(format!("unavailable: {why}"));
        }
        match self.store.state() {
            CircuitState::Closed => Ok(()),
            CircuitState::HalfOpen => {
                Err("unavailable: probing after failures; API v2 answers 503".to_owned())
            }
            CircuitState::Open => Err("unavailable: circuit open; API v2 answers 503".to_owned()),
        }
    }

    /// A job was queued: look for work now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A job was cancelled: stop it if it runs here.
    fn cancelled(&self, id: &str) {
        if let Some(flag) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            flag.store(true, Ordering::Relaxed);
        }
        self.metrics.cancelled.increment(1);
    }

    /// Stop claiming: the service is shutting down. Jobs already handed to the worker pool
    /// run to their end and are recorded; a claim the pool no longer takes goes back to the
    /// queue as it was; [`Jobs::run`] returns once nothing is in flight.
    pub fn drain(&self) {
        let _ = self.draining.send(true);
    }

    /// Claim and run jobs, at most `max_running` at once, and keep the store tidy: fail jobs
    /// out of attempts, purge old ones, publish the gauges. Runs until [`Jobs::drain`]ed.
    /// `started` is called once the first round of upkeep and then the first claim are done:
    /// what the jobs need (connections, prepared statements) is in place, and start-up is
    /// over.
    ///
    /// Supervised: a panic in the runner is logged, counted, reported by `/health`, and the
    /// runner starts again a second later; it never stops silently while submissions are
    /// still accepted.
    pub async fn run(
        self,
        pool: WorkerPool,
        kernel: Kernel,
        max_running: usize,
        started: impl FnOnce() + Send + 'static,
    ) {
        let mut started: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(started));
        let start = || {
            tokio::spawn(
                self.clone()
                    .run_once(pool.clone(), kernel, max_running, started.take()),
            )
        };
        let fault = |fault: String| {
            tracing::error!(error = %fault, "the job runner panicked; it starts again in 1 s");
            self.metrics.runner_restarts.increment(1);
            *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
        };
        supervise(start, fault, self.draining.subscribe()).await;
    }

    async fn run_once(
        self,
        pool: WorkerPool,
        kernel: Kernel,
        max_running: usize,
        started: Option<Box<dyn FnOnce() + Send>>,
    ) {
        let (upkept, first_upkeep) = oneshot::channel();
        let upkeep = self.clone().upkeep(upkept);
        let claims = self.claim_loop(pool, kernel, max_running, first_upkeep, started);
        tokio::join!(upkeep, claims);
    }

    async fn claim_loop(
        self,
        pool: WorkerPool,
        kernel: Kernel,
        max_running: usize,
        first_upkeep: oneshot::Receiver<()>,
        mut started: Option<Box<dyn FnOnce() + Send>>,
    ) {
        let _ = first_upkeep.await;
        let owner = uuid::Uuid::new_v4().to_string();
        let slots = max_running.max(1);
        let permits = Arc::new(Semaphore::new(slots));
        let mut draining = self.draining.subscribe();
        loop {
            let permit = tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => break,
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            };
            if *draining.borrow() {
                break;
            }
            let now = now_us();
            let claimed = self
                .store
                .claim(
                    &owner,
                    now,
                    now + micros(self.settings.lease),
                    self.settings.max_attempts,
                )
                .await;
            if let Some(started) = started.take() {
                started();
            }
            match claimed {
                Ok(Some(job)) => {
                    // The runner is doing its work again after a restart.
                    self.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let (jobs, pool, owner) = (self.clone(), pool.clone(), owner.clone());
                    tokio::spawn(async move {
                        jobs.run_job(job, &owner, pool, kernel).await;
                        drop(permit);
                    });
                }
                Ok(None) | Err(_) => {
                    if claimed.is_ok() {
                        self.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
                    }
                    drop(permit);
                    // Nothing to do (or the database is away): wait for a new job here,
                    // or poll for other replicas' jobs and lapsed leases.
                    tokio::select! {
                        _ = draining.wait_for(|d| *d) => break,
                        _ = tokio::time::timeout(Duration::from_millis(250), self.wake.notified()) => {}
                    }
                }
            }
        }
        // Draining: every job in flight records how it ended before the runner returns.
        let _ = permits.acquire_many(slots as u32).await;
    }

    async fn run_job(&self, job: Job, owner: &str, pool: WorkerPool, kernel: Kernel) {
        let flag = Arc::new(AtomicBool::new(false));
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id.clone(), Arc::clone(&flag));
        let outcome = self.execute(&job, owner, pool, kernel, &flag).await;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id);
        let end = match outcome {
            Run::Ended(end) => end,
            // Cancelled, or no longer ours: whoever ended it recorded it.
            Run::NotOurs => return,
            Run::NotStarted => {
                // The claim cost the job nothing: back to the queue, its attempt returned,
                // for this replica after its restart or for another one now.
                match self.store.release(&job.id, owner).await {
                    Ok(_) => {
                        tracing::info!(job = %job.id, "job released unstarted: the service is shutting down")
                    }
                    Err(e) => {
                        tracing::warn!(job = %job.id, error = %e, "could not release a job at shutdown; it is taken again when its lease lapses")
                    }
                }
                return;
            }
        };
        let succeeded = matches!(end, Finish::Succeeded { .. });
        if let Ok(true) = self.store.finish(&job.id, owner, now_us(), end).await {
            self.metrics.attempts.record(f64::from(job.attempts));
            if succeeded {
                self.metrics.succeeded.increment(1);
            } else {
                self.metrics.failed.increment(1);
            }
        }
    }

    /// Run the job on the pool, renewing the lease meanwhile.
    async fn execute(
        &self,
        job: &Job,
        owner: &str,
        pool: WorkerPool,
        kernel: Kernel,
        flag: &Arc<AtomicBool>,
    ) -> Run {
        let (number, rounds) = (job.number, job.rounds);
        let renew_every = (self.settings.lease / 3).min(Duration::from_secs(1));
        let mut renew = tokio::time::interval(renew_every);
        renew.tick().await;
        let handle = loop {
            let running = Arc::clone(flag);
            match pool.submit(move || run_chunked(kernel, number, rounds, &running)) {
                Ok(handle) => break handle,
                Err(SubmitError::ShuttingDown) => return Run::NotStarted,
                // The pool is busy with v1 work: keep the lease and try again, unless the
                // service is shutting down.
                Err(SubmitError::Full) => {
                    renew.tick().await;
                    if *self.draining.borrow() {
                        return Run::NotStarted;
                    }
                    if !self.renew(job, owner).await {
                        return Run::NotOurs;
                    }
                }
            }
        };
        tokio::pin!(handle);
        loop {
            tokio::select! {
                done = &mut handle => {
                    return match done {
                        Ok(Some(digest)) => Run::Ended(Finish::Succeeded {
                            result: number.wrapping_mul(number),
                            digest,
                        }),
                        Ok(None) => Run::NotOurs,
                        Err(e) => Run::Ended(Finish::Failed(e.to_string())),
                    };
                }
                _ = renew.tick() => {
                    if !self.renew(job, owner).await {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Extend the lease; false when the job was cancelled or taken over.
    async fn renew(&self, job: &Job, owner: &str) -> bool {
        let until = now_us() + micros(self.settings.lease);
        // A database that is away for a moment does not take the job from us; a lease
        // that lapses meanwhile does.
        self.store
            .renew(&job.id, owner, until)
            .await
            .unwrap_or(true)
    }

    async fn upkeep(self, upkept: oneshot::Sender<()>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut first = Some(upkept);
        let mut draining = self.draining.subscribe();
        loop {
            tokio::select! {
                _ = draining.wait_for(|d| *d) => return,
                _ = tick.tick() => {}
            }
            let (idle, used) = self.store.connections();
            self.metrics.db_idle.set(f64::from(idle));
            self.metrics.db_used.set(f64::from(used));
            self.store.check_file().await;
            let now = now_us();
            let before = now - micros(self.settings.retention);
            // A database that is away skips a round; the next one catches up.
            if let Ok(tidied) = self
                .store
                .tidy(now, self.settings.max_attempts, before, 1000)
                .await
            {
                for (status, gauge) in JobStatus::ALL.iter().zip(&self.metrics.by_status) {
                    let count = tidied.by_status.get(status.as_str()).copied();
                    gauge.set(count.unwrap_or(0) as f64);
                }
                let age = tidied
                    .oldest_queued
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1e6);
                self.metrics.oldest_queued_age.set(age);
            }
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        }
    }
}

/// How long a runner that panicked waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Runs the task `start` spawns until it returns; a panic is handed to `fault` and the task
/// started again after [`RESTART_AFTER`], unless `stop` says the service is shutting down.
async fn supervise(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_runner_that_panics_is_reported_and_started_again() {
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut faults = Vec::new();
        let (_stop, stopped) = watch::channel(false);
        let counted = Arc::clone(&starts);
        let begun = tokio::time::Instant::now();
        supervise(
            || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if n < 2 {
                        panic!("runner fault {n}");
                    }
                })
            },
            |f| faults.push(f),
            stopped,
        )
        .await;
        assert_eq!(
            starts.load(Ordering::SeqCst),
            3,
            "started again after each panic"
        );
        assert_eq!(faults, ["runner fault 0", "runner fault 1"]);
        assert!(
            begun.elapsed() >= RESTART_AFTER * 2,
            "a pause between restarts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stops_the_restarts() {
        let (stop, stopped) = watch::channel(false);
        let mut faults = 0;
        let _ = stop.send(true);
        supervise(
            || tokio::spawn(async { panic!("always") }),
            |_| faults += 1,
            stopped,
        )
        .await;
        assert_eq!(faults, 1);
    }

    #[test]
    fn chunks_give_the_same_digest_and_stop_when_cancelled() {
        let kernel: Kernel = crate::pool::intensive_digest;
        let rounds = 3 * CHUNK + 17;
        let whole = (0..rounds / 1000).fold(42u64, |c, _| kernel(c, 1000));
        let whole = kernel(whole, (rounds % 1000) as u32);
        assert_eq!(
            run_chunked(kernel, 42, rounds, &AtomicBool::new(false)),
            Some(whole)
        );
        assert_eq!(
            run_chunked(kernel, 42, rounds, &AtomicBool::new(true)),
            None
        );
    }
}
