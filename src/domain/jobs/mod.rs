//! Durable jobs: the job resource — submitted one by one or in batches, scheduled for later,
//! retried with backoff, discarded after its last attempt — and the runner ([`runner`]) that
//! claims jobs from the store and runs them on the worker pool, at most `jobs.max_running` at
//! once so the v1 API is never starved. Execution is at least once: a job whose replica died
//! runs again once its lease lapses, and the kernel is deterministic, so a job run twice gives
//! the same answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{watch, Notify};

use sha2::{Digest, Sha256};

use super::job_events::{JobWatch, JobWatchers};
use crate::config::JobsSettings;
use crate::dependency::CircuitState;
use crate::error::{ApiError, Missing};
use crate::store::{now_us, Batch, Cancelled, Inserted, JobStore, NewJob, Retried, StoreError};

mod runner;

/// A job as the domain hands it out, and where it is in its life. The store decodes its rows
/// into this record, which holds nothing a caller must not see (owner, lease and idempotency
/// key stay in the store); callers name it here, so no transport needs the store.
pub use crate::store::{Attempt, Discarded, Job, JobStatus};

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
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub number: u64,
    /// The configured default when absent.
    pub rounds: Option<u64>,
    /// 1–255 visible ASCII characters: the same key with the same body returns the first job.
    pub idempotency_key: Option<String>,
    /// When the job may run.
    pub when: When,
}

/// When a submitted job may run, as the client wrote it (validated by [`Jobs::submit`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum When {
    /// As soon as a runner is free.
    #[default]
    Now,
    /// Not before this time: RFC 3339 with any offset (`2026-12-24T18:00:00Z`).
    At(String),
    /// Not before this long after submission: a duration (`30s`, `1h30m`).
    After(String),
}

/// The furthest ahead a job may be scheduled.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(365 * 24 * 3600);

/// Jobs one batch may submit.
pub const MAX_BATCH: usize = 1000;

impl When {
    /// The time (µs since the epoch) the job may run from, submitted at `now`.
    fn run_at(&self, now: i64) -> Result<i64, ApiError> {
        let ahead = |d: Duration| -> Result<i64, ApiError> {
            if d > MAX_SCHEDULE_AHEAD {
                return Err(ApiError::ScheduleOutOfRange(
                    "a job may be scheduled at most 365 days ahead".into(),
                ));
            }
            Ok(now.saturating_add(micros(d)))
        };
        match self {
            When::Now => Ok(now),
            When::After(raw) => ahead(humantime::parse_duration(raw).map_err(|e| match e {
                // Well-formed but too large to hold: further ahead than allowed.
                humantime::DurationError::NumberOverflow => ApiError::ScheduleOutOfRange(
                    "a job may be scheduled at most 365 days ahead".into(),
                ),
                _ => ApiError::InvalidRequest(format!(
                    "delay must be a duration such as `30s` or `1h30m` (got `{raw}`)"
                )),
            })?),
            When::At(raw) => {
                let at = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ApiError::InvalidRequest(format!(
                            "run_at must be an RFC 3339 time such as `2026-12-24T18:00:00Z` (got `{raw}`)"
                        ))
                    })?;
                // Before the epoch is past: at once.
                let at = i64::try_from(at.unix_timestamp_nanos() / 1000)
                    .unwrap_or(0)
                    .max(0);
                // A time past is now; one too far ahead is refused.
                ahead(Duration::from_micros(at.saturating_sub(now).max(0) as u64))
            }
        }
    }
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
    pub discarded: Counter,
    /// Attempts that failed with attempts left: scheduled again after a backoff.
    pub retried: Counter,
    pub runner_restarts: Counter,
    pub attempts: Histogram,
    /// `floodgate_jobs{status}` for the jobs not yet ended, in [`JobStatus::ACTIVE`] order.
    pub by_status: [Gauge; 3],
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
            discarded: Counter::noop(),
            retried: Counter::noop(),
            runner_restarts: Counter::noop(),
            attempts: Histogram::noop(),
            by_status: std::array::from_fn(|_| Gauge::noop()),
            oldest_queued_age: Gauge::noop(),
            db_idle: Gauge::noop(),
            db_used: Gauge::noop(),
        }
    }
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
    /// What the last upkeep round found, and this replica's successes, for the status page.
    seen: Arc<Mutex<JobsNow>>,
}

/// The jobs as the last upkeep round saw them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsNow {
    /// Jobs queued, scheduled and running, in [`JobStatus::ACTIVE`] order.
    pub active: [i64; 3],
    /// How long the job due longest has waited for a runner.
    pub oldest_due_age: Duration,
    /// The last few jobs discarded, newest first.
    pub recent_discards: Vec<Discarded>,
    /// Jobs this replica's runner recorded as succeeded since it started.
    pub succeeded: u64,
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
            seen: Arc::default(),
        }
    }

    /// Validate a submission into the job to insert.
    fn prepare(
        &self,
        scope: &Scope,
        s: Submission,
        default_rounds: u32,
        now: i64,
    ) -> Result<NewJob, ApiError> {
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
        let run_at = s.when.run_at(now)?;
        let idempotency = s.idempotency_key.map(|k| {
            // What makes two requests the same: a job to run at once hashes as it did before
            // jobs could be scheduled, so keys issued then still replay.
            let request = match &s.when {
                When::Now => format!("{}:{rounds}", s.number),
                When::At(at) => format!("{}:{rounds}:at:{at}", s.number),
                When::After(delay) => format!("{}:{rounds}:after:{delay}", s.number),
            };
            let hash = hex::encode(Sha256::digest(request));
            (
                k,
                hash,
                now.saturating_add(micros(self.settings.idempotency_ttl)),
            )
        });
        Ok(NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            number: s.number,
            rounds,
            created_at: now,
            run_at,
            owner: scope.owner.clone(),
            idempotency,
        })
    }

    /// Validate and queue a job for the caller; it is committed to the database before this
    /// returns.
    pub async fn submit(
        &self,
        scope: &Scope,
        s: Submission,
        default_rounds: u32,
    ) -> Result<Submitted, ApiError> {
        let job = self.prepare(scope, s, default_rounds, now_us())?;
        let inserted = self.store.insert(job).await.map_err(store_error)?;
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
            Inserted::KeyReused => Err(ApiError::IdempotencyKeyReused { job: None }),
        }
    }

    /// Validate and queue up to [`MAX_BATCH`] jobs in one transaction: every one is
    /// committed, or none (an invalid job or a reused key refuses the batch, naming the job).
    /// Idempotency keys behave as they do one by one, within the batch too.
    pub async fn submit_batch(
        &self,
        scope: &Scope,
        batch: Vec<Submission>,
        default_rounds: u32,
    ) -> Result<Vec<Submitted>, ApiError> {
        if batch.is_empty() || batch.len() > MAX_BATCH {
            return Err(ApiError::InvalidRequest(format!(
                "a batch holds 1 to {MAX_BATCH} jobs (got {})",
                batch.len()
            )));
        }
        let now = now_us();
        let jobs = batch
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                self.prepare(scope, s, default_rounds, now)
                    .map_err(|e| match e {
                        ApiError::InvalidRequest(why) => {
                            ApiError::InvalidRequest(format!("jobs[{i}]: {why}"))
                        }
                        ApiError::ScheduleOutOfRange(why) => {
                            ApiError::ScheduleOutOfRange(format!("jobs[{i}]: {why}"))
                        }
                        other => other,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match self.store.insert_batch(jobs).await.map_err(store_error)? {
            Batch::KeyReused(i) => Err(ApiError::IdempotencyKeyReused { job: Some(i) }),
            Batch::Inserted(all) => {
                let submitted = all
                    .into_iter()
                    .map(|inserted| match inserted {
                        Inserted::Created(job) => Ok(Submitted {
                            job,
                            replayed: false,
                        }),
                        Inserted::Replayed(job) => Ok(Submitted {
                            job,
                            replayed: true,
                        }),
                        // The store ends a batch at its first reused key.
                        Inserted::KeyReused => Err(ApiError::IdempotencyKeyReused { job: None }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if submitted.iter().any(|s| !s.replayed) {
                    self.wake();
                }
                Ok(submitted)
            }
        }
    }

    /// Put a discarded or failed job back in the queue, its attempts counted afresh.
    pub async fn retry(&self, scope: &Scope, id: &str) -> Result<Job, ApiError> {
        let id = job_id(id)?;
        match self
            .store
            .retry(&id, scope.only(), now_us())
            .await
            .map_err(store_error)?
        {
            Retried::Retried(job) => {
                self.wake();
                Ok(job)
            }
            Retried::NotRetryable(job) => Err(ApiError::JobNotRetryable(job.id)),
            Retried::NotFound => Err(not_found(&id)),
        }
    }

    /// Every attempt at the job `id` (as [`Jobs::find`] returned it), first to last.
    pub async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, ApiError> {
        self.store.attempts(id).await.map_err(store_error)
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
    /// run to their end and are recorded; claims not started go back to the queue as they
    /// were; [`Jobs::run`] returns once nothing is in flight.
    pub fn drain(&self) {
        // Stored even with no runner listening yet (a stop during start-up): `send` would
        // drop it, and a runner that subscribed afterwards would never stop.
        self.draining.send_replace(true);
    }

    /// The jobs as the last upkeep round saw them.
    pub fn now(&self) -> JobsNow {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, JobsNow> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runner works again after a restart.
    fn clear_fault(&self) {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicBool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a runner that panicked waits before it starts again.
const RESTART_AFTER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::runner::{run_chunked, supervise, CHUNK};
    use super::*;
    use crate::domain::Kernel;

    #[test]
    fn run_at_takes_any_offset_and_a_time_before_the_epoch_as_now() {
        let now = 1_796_000_000_000_000;
        let at = |raw: &str| When::At(raw.into()).run_at(now);
        let utc = at("2026-12-24T18:00:00Z").unwrap();
        assert_eq!(at("2026-12-24T23:30:00+05:30").unwrap(), utc);
        assert_eq!(at("2026-12-24T13:00:00.000-05:00").unwrap(), utc);
        assert_eq!(at("0446-06-02T01:13:44.40+05:33").unwrap(), now);
        assert_eq!(at("1970-01-01T00:00:00Z").unwrap(), now);
        for bad in ["2026-12-24", "2026-12-24T18:00:00", "tomorrow"] {
            assert!(matches!(at(bad), Err(ApiError::InvalidRequest(_))), "{bad}");
        }
        assert!(matches!(
            at("2036-12-24T18:00:00Z"),
            Err(ApiError::ScheduleOutOfRange(_))
        ));
        let after = |raw: &str| When::After(raw.into()).run_at(now);
        assert_eq!(after("1h30m").unwrap(), now + 5_400_000_000);
        for far in [
            "366d",
            "30637943930667202095d164461847ns",
            "99999999999999999999s",
        ] {
            assert!(
                matches!(after(far), Err(ApiError::ScheduleOutOfRange(_))),
                "{far}"
            );
        }
    }

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

    /// A stop that comes before the runner has started (SIGTERM during start-up) still
    /// stops it: before, the drain was lost when no runner listened yet, and the shutdown
    /// waited its whole timeout for a runner that never stopped.
    #[tokio::test]
    async fn a_drain_before_the_runner_starts_stops_it_at_once() {
        let path = std::env::temp_dir()
            .join("floodgate-jobs-tests")
            .join(format!("drain-{}.db", std::process::id()));
        let settings = crate::config::DatabaseSettings {
            url: format!("sqlite://{}", path.display()),
            ..Default::default()
        };
        let store = JobStore::open(
            &settings,
            crate::store::StoreMetrics::default(),
            crate::dependency::breaker::BreakerConfig::from(&settings.breaker),
        )
        .await
        .expect("store opens");
        let jobs = Jobs::new(store, JobsSettings::default(), JobMetrics::default());
        jobs.drain();
        let pool = crate::pool::WorkerPool::start(1, 8, 0, Default::default());
        let run = jobs.clone().run(
            pool,
            crate::pool::intensive_digest,
            1,
            crate::domain::execution::StartGate::open(),
            || {},
        );
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the runner stops");
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
