//! The worker pool: a bounded MPMC queue drained by dedicated OS threads.
//!
//! CPU-bound work never runs on the async runtime's threads, so health checks and cheap
//! requests stay fast while every worker is busy. The pool knows nothing of HTTP: callers
//! submit a closure and await its result; a caller that has gone away (timeout, disconnect)
//! has its job skipped rather than computed. How long a job waited for a worker is added to
//! [`QUEUE_WAIT`] of the task that awaited it, when that task set one: admission keeps queue
//! time apart from the work's own time that way.

mod kernel;

pub use kernel::intensive_digest;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::panic_message;

tokio::task_local! {
    /// Nanoseconds the jobs awaited by the current task spent queued before a worker took
    /// them; added to when each job's result is read. Set by whoever wants to know (the
    /// admission layer wraps the calls whose work queues here).
    pub static QUEUE_WAIT: Arc<AtomicU64>;
}

/// Handles the pool records into; built by the metrics module and passed in, so the pool
/// stays independent of how metrics are exported.
#[derive(Clone)]
pub struct PoolMetrics {
    pub completed: metrics::Counter,
    pub rejected_full: metrics::Counter,
    pub cancelled: metrics::Counter,
    pub failed: metrics::Counter,
    pub queue_wait_seconds: metrics::Histogram,
    pub duration_seconds: metrics::Histogram,
}

impl Default for PoolMetrics {
    /// Handles that record nothing.
    fn default() -> Self {
        Self {
            completed: metrics::Counter::noop(),
            rejected_full: metrics::Counter::noop(),
            cancelled: metrics::Counter::noop(),
            failed: metrics::Counter::noop(),
            queue_wait_seconds: metrics::Histogram::noop(),
            duration_seconds: metrics::Histogram::noop(),
        }
    }
}

/// Why a job produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The job panicked; its worker was replaced.
    #[error("job failed: {0}")]
    Failed(String),
    /// The pool stopped before the job ran.
    #[error("worker pool stopped")]
    Stopped,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full; the caller should refuse the request as overload.
    #[error("job queue full")]
    Full,
    /// The pool is draining for shutdown and takes no new jobs.
    #[error("worker pool shutting down")]
    ShuttingDown,
}

type Task = Box<dyn FnOnce() -> Outcome + Send>;

enum Outcome {
    Completed,
    Cancelled,
    Failed,
}

struct Job {
    enqueued: Instant,
    /// Lives while the job waits, so the trace shows queue time as its own span.
    wait_span: tracing::Span,
    parent: tracing::Span,
    id: u64,
    /// Shared with the job's handle.
    state: Arc<JobState>,
    task: Task,
}

/// What a job and its handle share.
#[derive(Default)]
struct JobState {
    /// Set by whoever takes the job first: a worker (to run it) or its abandoned handle.
    claimed: AtomicBool,
    /// Time the job waited for a worker, set before it runs.
    waited_ns: AtomicU64,
}

struct Shared {
    rx: Receiver<Job>,
    workers: usize,
    capacity: usize,
    /// Queued jobs that someone still waits for: the queue's real occupancy. Abandoned jobs
    /// (their caller timed out or left) stop counting at once, though their entries stay in
    /// the channel until a worker skips them.
    waiting: AtomicUsize,
    alive: AtomicUsize,
    busy: AtomicUsize,
    restarts: AtomicU64,
    stopping: AtomicBool,
    next_id: AtomicU64,
    niceness: i32,
    metrics: PoolMetrics,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A cheap handle to the pool; clones share it.
#[derive(Clone)]
pub struct WorkerPool {
    tx: Sender<Job>,
    shared: Arc<Shared>,
}

/// A snapshot of the pool's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub workers: usize,
    pub alive: usize,
    pub busy: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub restarts: u64,
}

impl WorkerPool {
    /// Start `workers` threads draining a queue of `capacity` jobs.
    ///
    /// Workers run at `niceness` (0–19); above 0, the async runtime gets the CPU before jobs
    /// when every core is busy, at some cost in job throughput.
    pub fn start(workers: usize, capacity: usize, niceness: i32, metrics: PoolMetrics) -> Self {
        let workers = workers.max(1);
        // Unbounded as a channel, bounded by `waiting` (and, counting abandoned entries, by
        // `max_entries`): memory grows with use, not with the bound.
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            rx,
            workers,
            capacity: capacity.max(1),
            waiting: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            niceness,
            metrics,
            threads: Mutex::new(Vec::new()),
        });
        for index in 0..workers {
            spawn_worker(&shared, index);
        }
        Self { tx, shared }
    }

    /// Queue `f`; fails at once when the queue is full. The job is parented to the current span.
    pub fn submit<T, F>(&self, f: F) -> Result<JobHandle<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.shared.stopping.load(Ordering::Relaxed) {
            return Err(SubmitError::ShuttingDown);
        }
        let shared = &self.shared;
        let full = || {
            shared.metrics.rejected_full.increment(1);
            Err(SubmitError::Full)
        };
        if shared.waiting.fetch_add(1, Ordering::AcqRel) >= shared.capacity {
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return full();
        }
        if self.tx.len() >= max_entries(shared.capacity) {
            // Workers are stuck and abandoned entries pile up: refuse rather than grow.
            shared.waiting.fetch_sub(1, Ordering::AcqRel);
            return full();
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(JobState::default());
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            if reply.is_closed() {
                return Outcome::Cancelled;
            }
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(value) => {
                    // A caller that left after the job started simply never reads it.
                    let _ = reply.send(Ok(value));
                    Outcome::Completed
                }
                Err(payload) => {
                    let _ = reply.send(Err(JobError::Failed(panic_message(&payload))));
                    Outcome::Failed
                }
            }
        });
        let parent = tracing::Span::current();
        let wait_span = tracing::info_span!(parent: &parent, "job.queue_wait", job_id = id);
        let job = Job {
            enqueued: Instant::now(),
            wait_span,
            parent,
            id,
            state: Arc::clone(&state),
            task,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(JobHandle {
                id,
                rx,
                state,
                shared: Arc::clone(shared),
            }),
            Err(TrySendError::Full(_)) => {
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
                full()
            }
            Err(TrySendError::Disconnected(_)) => {
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
                Err(SubmitError::ShuttingDown)
            }
        }
    }

    /// Live state, read at the moment of the call.
    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            workers: self.shared.workers,
            alive: self.shared.alive.load(Ordering::Relaxed),
            busy: self.shared.busy.load(Ordering::Relaxed),
            queue_depth: self.shared.waiting.load(Ordering::Relaxed),
            queue_capacity: self.shared.capacity,
            restarts: self.shared.restarts.load(Ordering::Relaxed),
        }
    }

    /// Refuse new jobs, let workers finish what is queued, and wait for them up to `timeout`.
    /// Returns whether every worker exited in time.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock().expect("pool lock"));
            if threads.is_empty() {
                return true;
            }
            for handle in threads {
                while !handle.is_finished() {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                let _ = handle.join();
            }
        }
    }
}

/// Channel entries allowed, counting abandoned ones not yet skipped: when every worker is
/// stuck, abandoned entries pile up with each timed-out request, and this keeps that memory
/// bounded (an entry is about 150 bytes).
fn max_entries(capacity: usize) -> usize {
    capacity.saturating_mul(2).max(1024)
}

/// The pending result of a submitted job. Dropping it before a worker takes the job frees
/// the job's queue slot at once; the worker then skips it.
pub struct JobHandle<T> {
    id: u64,
    rx: oneshot::Receiver<Result<T, JobError>>,
    state: Arc<JobState>,
    shared: Arc<Shared>,
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        if !self.state.claimed.swap(true, Ordering::AcqRel) {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl<T> JobHandle<T> {
    /// Unique, increasing id of the job.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, JobError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(Pin::new(&mut self.rx).poll(cx));
        let waited = self.state.waited_ns.load(Ordering::Acquire);
        let _ = QUEUE_WAIT.try_with(|total| total.fetch_add(waited, Ordering::Relaxed));
        Poll::Ready(result.unwrap_or(Err(JobError::Stopped)))
    }
}

fn spawn_worker(shared: &Arc<Shared>, index: usize) {
    let worker_shared = Arc::clone(shared);
    shared.alive.fetch_add(1, Ordering::SeqCst);
    let handle = std::thread::Builder::new()
        .name(format!("floodgate-worker-{index}"))
        .spawn(move || worker_loop(worker_shared, index))
        .expect("spawning a worker thread");
    shared.threads.lock().expect("pool lock").push(handle);
}

fn worker_loop(shared: Arc<Shared>, index: usize) {
    lower_priority(shared.niceness);
    loop {
        let job = if shared.stopping.load(Ordering::Relaxed) {
            match shared.rx.try_recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        } else {
            match shared.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => job,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        };
        let m = &shared.metrics;
        if job.state.claimed.swap(true, Ordering::AcqRel) {
            // Abandoned while queued; its slot was freed then.
            m.cancelled.increment(1);
            continue;
        }
        shared.waiting.fetch_sub(1, Ordering::AcqRel);
        let started = Instant::now();
        let waited = started.duration_since(job.enqueued);
        job.state.waited_ns.store(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        m.queue_wait_seconds.record(waited.as_secs_f64());
        drop(job.wait_span);
        shared.busy.fetch_add(1, Ordering::Relaxed);
        let span = crate::observability::telemetry::child_span(
            &job.parent,
            || tracing::info_span!(parent: &job.parent, "job.execute", job_id = job.id, worker = index),
        );
        let outcome = span.in_scope(job.task);
        shared.busy.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Outcome::Completed => {
                m.duration_seconds.record(started.elapsed().as_secs_f64());
                m.completed.increment(1);
            }
            Outcome::Cancelled => m.cancelled.increment(1),
            Outcome::Failed => {
                m.failed.increment(1);
                shared.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    worker = index,
                    job_id = job.id,
                    "job panicked; replacing its worker"
                );
                // A panic may have left thread-local state poisoned: retire this thread.
                shared.alive.fetch_sub(1, Ordering::SeqCst);
                if !shared.stopping.load(Ordering::Relaxed) {
                    spawn_worker(&shared, index);
                }
                return;
            }
        }
    }
    shared.alive.fetch_sub(1, Ordering::SeqCst);
}

/// Raise this thread's nice value; on Linux, priority is per thread.
fn lower_priority(niceness: i32) {
    if niceness <= 0 {
        return;
    }
    // SAFETY: setpriority has no memory-safety preconditions; `who = 0` is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, niceness) };
    if rc != 0 {
        tracing::debug!(niceness, "could not lower the worker's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_returns_each_its_own_result() {
        let pool = WorkerPool::start(2, 64, 0, PoolMetrics::default());
        let handles: Vec<_> = (0..50u64)
            .map(|n| pool.submit(move || n * n).unwrap())
            .collect();
        let mut last_id = 0;
        for (n, h) in handles.into_iter().enumerate() {
            assert!(h.id() > last_id);
            last_id = h.id();
            assert_eq!(h.await.unwrap(), (n * n) as u64);
        }
        assert!(pool.shutdown(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn full_queue_is_refused_immediately() {
        let pool = WorkerPool::start(1, 1, 0, PoolMetrics::default());
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let first = pool.submit(move || block_rx.recv().ok()).unwrap();
        // Wait until the worker holds the first job so the queue is empty again.
        while pool.status().busy == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _queued = pool.submit(|| ()).unwrap();
        assert_eq!(pool.submit(|| ()).err(), Some(SubmitError::Full));
        block_tx.send(()).unwrap();
        first.await.unwrap();
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_its_worker_is_replaced() {
        let pool = WorkerPool::start(1, 8, 0, PoolMetrics::default());
        let bad = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
        assert_eq!(bad.await, Err(JobError::Failed("boom".into())));
        let good = pool.submit(|| 7u32).unwrap();
        assert_eq!(good.await.unwrap(), 7);
        let status = pool.status();
        assert_eq!(status.alive, 1);
        assert_eq!(status.restarts, 1);
    }

    #[tokio::test]
    async fn a_draining_pool_says_so_instead_of_full() {
        let pool = WorkerPool::start(1, 8, 0, PoolMetrics::default());
        assert!(pool.shutdown(Duration::from_secs(5)));
        assert_eq!(pool.submit(|| ()).err(), Some(SubmitError::ShuttingDown));
    }

    #[tokio::test]
    async fn an_abandoned_job_frees_its_queue_slot_at_once() {
        let pool = WorkerPool::start(1, 2, 0, PoolMetrics::default());
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let first = pool.submit(move || block_rx.recv().ok()).unwrap();
        while pool.status().busy == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (0..2).map(|_| pool.submit(|| ()).unwrap()).collect();
        assert_eq!(pool.submit(|| ()).err(), Some(SubmitError::Full));
        drop(queued);
        assert_eq!(pool.status().queue_depth, 0, "nobody waits for them");
        let again: Vec<_> = (0..2).map(|_| pool.submit(|| ()).unwrap()).collect();
        block_tx.send(()).unwrap();
        first.await.unwrap();
        for h in again {
            h.await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_wait_for_a_worker_is_added_to_the_awaiting_tasks_total() {
        let pool = WorkerPool::start(1, 8, 0, PoolMetrics::default());
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let first = pool.submit(move || block_rx.recv().ok()).unwrap();
        while pool.status().busy == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued = pool.submit(|| 7).unwrap();
        let total = Arc::new(AtomicU64::new(0));
        let waiter = tokio::spawn(QUEUE_WAIT.scope(Arc::clone(&total), queued));
        // The queued job waits at least this long for the one worker.
        let held = Duration::from_millis(20);
        tokio::time::sleep(held).await;
        block_tx.send(()).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        let waited = Duration::from_nanos(total.load(Ordering::Relaxed));
        assert!(
            waited >= held && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        first.await.unwrap();
        // Awaited outside any scope, a job's wait is simply not collected.
        assert_eq!(pool.submit(|| 1).unwrap().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn abandoned_jobs_are_skipped() {
        let pool = WorkerPool::start(1, 8, 0, PoolMetrics::default());
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let first = pool.submit(move || block_rx.recv().ok()).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let abandoned = pool
            .submit(move || flag.store(true, Ordering::SeqCst))
            .unwrap();
        drop(abandoned);
        block_tx.send(()).unwrap();
        first.await.unwrap();
        pool.submit(|| ()).unwrap().await.unwrap();
        assert!(!ran.load(Ordering::SeqCst));
    }
}
