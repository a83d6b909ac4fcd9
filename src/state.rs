//! The state every transport's handlers share.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::admission::Overload;
use crate::config::Settings;
use crate::domain::cache::Cache;
use crate::domain::jobs::Jobs;
use crate::domain::Compute;
use crate::error::ApiError;
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
    /// The adaptive limits per class of work, when on (`admission.adaptive`).
    pub overload: Option<Arc<Overload>>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The Prometheus exposition, with the gauges read from live state first.
    pub fn render_metrics(&self) -> String {
        self.refresh_metrics();
        self.metrics.render()
    }

    /// The OpenMetrics exposition, with exemplars (gauges brought up to date first).
    pub fn render_openmetrics(&self) -> String {
        self.refresh_metrics();
        self.metrics.render_openmetrics()
    }

    /// Bring the gauges read lazily up to date.
    fn refresh_metrics(&self) {
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
        for (reason, n) in telemetry::spans_dropped() {
            metrics
                .counter(m::SPANS_DROPPED, &[("reason", reason)])
                .absolute(n);
        }
        let (queue_full, export_failed) = telemetry::log_records_dropped();
        for (reason, n) in [("queue_full", queue_full), ("export_failed", export_failed)] {
            metrics
                .counter(m::LOG_RECORDS_DROPPED, &[("reason", reason)])
                .absolute(n);
        }
        metrics
            .counter(m::METRIC_EXPORTS_FAILED, &[])
            .absolute(crate::observability::otlp_metrics::exports_failed());
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
        if let Some(overload) = &self.overload {
            overload.publish();
        }
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Which limit a stream counts against. Operational streams (the status page's, gRPC health
/// `Watch`) need no credential, so they have a limit of their own: anonymous clients that
/// fill it cannot take the places of authenticated API streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamClass {
    /// `streams.max_connections`: the API's streams (REST and gRPC `WatchJob`).
    Api,
    /// `streams.max_operational_connections`.
    Operational,
}

/// The long-lived streams of this replica: a bound on how many are open of each class, and
/// the signal that tells them the service is shutting down (they close with 1001 before the
/// drain ends).
#[derive(Clone)]
pub struct Streams {
    api: Limit,
    operational: Limit,
    closing: tokio::sync::watch::Sender<bool>,
    /// Readings shared by the statistics streams that tick at the same instant.
    pub readings: Arc<crate::observability::metrics::Readings>,
}

/// Places for streams, and how many there are.
#[derive(Clone)]
struct Limit {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Limit {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// Resolves once every place is free again.
    async fn all_free(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

/// How long a client refused a stream is asked to wait.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Streams {
    /// `max_api` API streams and `max_operational` operational ones at most.
    pub fn new(max_api: usize, max_operational: usize) -> Self {
        Self {
            api: Limit::new(max_api),
            operational: Limit::new(max_operational),
            closing: tokio::sync::watch::channel(false).0,
            readings: Arc::default(),
        }
    }

    /// A place for one more stream of `class`, held until the permit is dropped; refused
    /// at the limit (every transport renders the refusal its own way).
    pub fn admit(&self, class: StreamClass) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        let limit = match class {
            StreamClass::Api => &self.api,
            StreamClass::Operational => &self.operational,
        };
        Arc::clone(&limit.permits)
            .try_acquire_owned()
            .map_err(|_| ApiError::ServiceOverloaded {
                retry_after: RETRY_AFTER,
            })
    }

    /// Resolves when the service starts shutting down.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Tell every stream to close, and wait up to `timeout` for them to have.
    pub async fn close_all(&self, timeout: std::time::Duration) -> bool {
        // Stored even with no stream open: `send` would drop it, and a stream opened
        // during the drain would never hear of it.
        self.closing.send_replace(true);
        let both = async {
            tokio::join!(self.api.all_free(), self.operational.all_free());
        };
        tokio::time::timeout(timeout, both).await.is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shutdown reaches a stream opened after it began, even when none was open to hear
    /// it: before, the signal was dropped with no listener and such a stream held its
    /// connection until the shutdown timed out.
    #[tokio::test]
    async fn a_stream_opened_after_close_all_sees_the_service_closing() {
        let streams = Streams::new(4, 4);
        assert!(!*streams.closing().borrow());
        assert!(streams.close_all(std::time::Duration::from_secs(1)).await);
        let mut later = streams.closing();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            later.wait_for(|closing| *closing),
        )
        .await
        .expect("told at once")
        .expect("the sender lives");
    }
}
