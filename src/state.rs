//! The state every transport's handlers share.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Settings;
use crate::domain::cache::Cache;
use crate::domain::jobs::Jobs;
use crate::domain::Compute;
use crate::health::HealthRegistry;
use crate::observability::log_sink::LogSink;
use crate::observability::metrics::{self as m, Metrics};
use crate::observability::telemetry;
use crate::pool::WorkerPool;

/// Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What handlers can reach.
pub struct Inner {
    pub settings: Arc<Settings>,
    pub compute: Compute,
    pub pool: WorkerPool,
    pub metrics: Arc<Metrics>,
    pub health: HealthRegistry,
    pub readiness: Readiness,
    /// Intensive results, when the cache is on.
    pub cache: Option<Cache>,
    /// The access log's own sink, when it writes to a file (its losses are counted apart).
    pub access_log_sink: Option<LogSink>,
    /// Durable jobs, once their database is open (API v2 answers 503 until then).
    pub jobs: Arc<std::sync::OnceLock<Jobs>>,
    pub streams: Streams,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The Prometheus exposition, with the gauges read from live state first.
    pub fn render_metrics(&self) -> String {
        let pool = self.pool.status();
        let metrics = &self.metrics;
        metrics
            .gauge(m::JOB_QUEUE_DEPTH)
            .set(pool.queue_depth as f64);
        metrics
            .gauge(m::JOB_QUEUE_CAPACITY)
            .set(pool.queue_capacity as f64);
        metrics.gauge(m::WORKERS).set(pool.alive as f64);
        metrics.gauge(m::WORKERS_BUSY).set(pool.busy as f64);
        let (queue_full, export_failed) = telemetry::spans_dropped();
        for (reason, n) in [("queue_full", queue_full), ("export_failed", export_failed)] {
            metrics
                .counter(m::SPANS_DROPPED, &[("reason", reason)])
                .absolute(n);
        }
        let access_log_dropped = self.access_log_sink.as_ref().map_or(0, LogSink::dropped);
        for (sink, n) in [
            (
                "stdout",
                LogSink::stdout_if_started().map_or(0, |s| s.dropped()),
            ),
            ("access_log", access_log_dropped),
        ] {
            metrics
                .counter(m::LOG_LINES_DROPPED, &[("sink", sink)])
                .absolute(n);
        }
        if let Some(cache) = &self.cache {
            cache.publish();
        }
        metrics.render()
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The long-lived streams of this replica: a bound on how many are open, and the signal that
/// tells them the service is shutting down (they close with 1001 before the drain ends).
#[derive(Clone)]
pub struct Streams {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
    closing: tokio::sync::watch::Sender<bool>,
    /// Readings shared by the statistics streams that tick at the same instant.
    pub readings: Arc<crate::observability::metrics::Readings>,
}

impl Streams {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            closing: tokio::sync::watch::channel(false).0,
            readings: Arc::default(),
        }
    }

    /// A place for one more stream, or `None` at the limit.
    pub fn open(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Resolves when the service starts shutting down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tell every stream to close, and wait up to `timeout` for them to have.
    pub async fn close_all(&self, timeout: std::time::Duration) -> bool {
        let _ = self.closing.send(true);
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(timeout, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Flipped to "draining" at the start of shutdown so load balancers stop sending traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn start_draining(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
