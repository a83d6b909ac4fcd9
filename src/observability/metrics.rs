//! Metric names, one recorder per application, and the request statistics behind `/metrics`.
//!
//! Each [`Metrics`] owns a local `PrometheusRecorder` instead of installing a global one, so
//! several applications can live in one process (tests do this). Per-request recording goes
//! through [`Metrics::record_request`], which updates the Prometheus series and the JSON
//! statistics in the same call, so the two always agree; label sets are resolved once and
//! cached, so the hot path allocates nothing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use super::exemplars::TraceRef;
use super::exemplars::{ExemplarIndex, Exemplars};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Histogram bucket bounds (seconds) shared by every duration histogram: 50 µs to 30 s,
/// with 0.25 s present for the latency SLO.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// OpenTelemetry's `http.server.request.duration` (its `_count` counts the requests).
pub const HTTP_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// OpenTelemetry's `http.server.active_requests`.
pub const HTTP_ACTIVE_REQUESTS: &str = "http_server_active_requests";
pub const RATE_LIMITED_TOTAL: &str = "floodgate_rate_limited_total";
/// OpenTelemetry's `rpc.server.call.duration`.
pub const RPC_DURATION: &str = "rpc_server_call_duration_seconds";
pub const JOBS_TOTAL: &str = "floodgate_jobs_total";
pub const JOB_QUEUE_DEPTH: &str = "floodgate_job_queue_depth";
pub const JOB_QUEUE_CAPACITY: &str = "floodgate_job_queue_capacity";
pub const WORKERS: &str = "floodgate_workers";
pub const WORKERS_BUSY: &str = "floodgate_workers_busy";
pub const JOB_QUEUE_WAIT: &str = "floodgate_job_queue_wait_seconds";
pub const JOB_DURATION: &str = "floodgate_job_duration_seconds";
pub const BUILD_INFO: &str = "floodgate_build_info";
pub const SPANS_DROPPED: &str = "floodgate_otel_spans_dropped_total";
pub const LOG_LINES_DROPPED: &str = "floodgate_log_lines_dropped_total";
pub const LOG_RECORDS_DROPPED: &str = "floodgate_otel_log_records_dropped_total";
pub const METRIC_EXPORTS_FAILED: &str = "floodgate_otel_metric_exports_failed_total";
pub const CONNECTION_ERRORS: &str = "floodgate_http_connection_errors_total";
pub const DEPENDENCY_UP: &str = "floodgate_dependency_up";
pub const CIRCUIT_STATE: &str = "floodgate_circuit_state";
pub const CIRCUIT_TRANSITIONS: &str = "floodgate_circuit_transitions_total";
pub const DEPENDENCY_DURATION: &str = "floodgate_dependency_duration_seconds";
pub const RATE_LIMIT_DECISIONS: &str = "floodgate_rate_limit_decisions_total";
pub const JOBS: &str = "floodgate_jobs";
pub const JOBS_FINISHED: &str = "floodgate_jobs_finished_total";
pub const JOBS_OLDEST_QUEUED_AGE: &str = "floodgate_jobs_oldest_queued_age_seconds";
pub const JOB_ATTEMPTS: &str = "floodgate_job_attempts";
pub const JOB_RUNNER_RESTARTS: &str = "floodgate_job_runner_restarts_total";
pub const JOB_RETRIES: &str = "floodgate_job_retries_total";
pub const DB_CONNECTIONS: &str = "floodgate_db_connections";
pub const DB_ACQUIRE_WAIT: &str = "floodgate_db_acquire_wait_seconds";
pub const STREAMS_OPEN: &str = "floodgate_streams_open";
pub const STREAM_MESSAGES: &str = "floodgate_stream_messages_total";
pub const STREAM_SLOW_CONSUMERS: &str = "floodgate_stream_slow_consumers_total";
pub const DB_QUERY_DURATION: &str = "floodgate_db_query_duration_seconds";
pub const CACHE_REQUESTS: &str = "floodgate_cache_requests_total";
pub const CACHE_EVICTIONS: &str = "floodgate_cache_evictions_total";
pub const CACHE_ENTRIES: &str = "floodgate_cache_entries";
pub const ADMISSION_LIMIT: &str = "floodgate_admission_limit";
pub const ADMISSION_IN_FLIGHT: &str = "floodgate_admission_in_flight";
pub const ADMISSION_REFUSALS: &str = "floodgate_admission_refusals_total";
pub const ADMISSION_BASELINE: &str = "floodgate_admission_baseline_latency_seconds";
pub const ADMISSION_PAUSES: &str = "floodgate_admission_paused_connections_total";
pub const ADMISSION_RUNTIME_DELAY: &str = "floodgate_admission_runtime_delay_seconds";
pub const TOKIO_WORKERS: &str = "tokio_runtime_workers";
pub const TOKIO_ALIVE_TASKS: &str = "tokio_runtime_alive_tasks";
pub const TOKIO_GLOBAL_QUEUE_DEPTH: &str = "tokio_runtime_global_queue_depth";

/// Content type of the Prometheus text exposition.
pub const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request method as a label value: the common HTTP methods, others as `_OTHER` (as
/// OpenTelemetry asks). Transports map their own method type onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    Get,
    Post,
    Put,
    Delete,
    Patch,
    Head,
    Options,
    Other,
}

impl MethodLabel {
    const COUNT: usize = 8;

    pub const fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Head => "HEAD",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Other => "_OTHER",
        }
    }
}
/// The URI scheme a request came by (`url.scheme`): `https` on a TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    const COUNT: usize = 2;

    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The HTTP version a request came by (`network.protocol.version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    Http10,
    Http11,
    Http2,
}

impl ProtocolVersion {
    const COUNT: usize = 3;

    pub const fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::Http10 => "1.0",
            ProtocolVersion::Http11 => "1.1",
            ProtocolVersion::Http2 => "2",
        }
    }
}

/// Status codes whose series are cached; any other status is registered on use.
const STATUSES: [u16; 17] = [
    200, 400, 404, 405, 408, 413, 415, 429, 431, 500, 503, 401, 403, 422, 202, 409, 499,
];
/// Series cached per route: one per scheme, protocol version, method and status.
const ROUTE_SERIES: usize =
    Scheme::COUNT * ProtocolVersion::COUNT * MethodLabel::COUNT * STATUSES.len();
/// Routes whose series are cached; a route table larger than this still works, its extra
/// routes registering their series on use.
pub const MAX_ROUTES: usize = 32;

/// A route as metrics see it: a template label and whether it counts as API traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel {
    /// Dense index below [`MAX_ROUTES`], used to find cached series.
    pub index: usize,
    /// The matched route template, or `unmatched`.
    pub template: &'static str,
    /// Counted in the JSON statistics (`total_requests` etc.).
    pub api: bool,
    /// Recorded at all (metrics scrapes are not).
    pub recorded: bool,
}

/// Refusals counted on their own in the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    RateLimited,
    Overloaded,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub method: MethodLabel,
    pub scheme: Scheme,
    pub version: ProtocolVersion,
    pub status: u16,
    pub refused: Option<Refused>,
    pub elapsed: Duration,
    /// The request's trace, when it was sampled: the exemplar of its duration bucket.
    pub trace: Option<TraceRef>,
}

/// A duration histogram and the exemplars of its buckets.
struct Series {
    duration: Histogram,
    exemplars: Arc<Exemplars>,
}

/// One route's cached series, indexed by scheme, version, method, then status; each is
/// allocated when it is first used.
type RouteSeries = [OnceLock<Box<Series>>; ROUTE_SERIES];

/// The JSON statistics: atomics updated with the Prometheus series in one call.
#[derive(Default)]
pub struct RequestStats {
    total: AtomicU64,
    success: AtomicU64,
    error: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    latency_sum_us: AtomicU64,
    latency: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// The statistics and the latency histogram, read at one instant.
pub struct Reading {
    /// The grid instant it stands for, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// When it was taken, by the monotonic clock.
    taken: Instant,
    pub stats: StatsSnapshot,
    pub latency: Option<hdrhistogram::Histogram<u64>>,
}

/// Readings taken at instants on a grid (milliseconds since the Unix epoch), each taken once
/// and shared by every reader that asks for the same instant soon enough. The histogram is
/// ~25 KiB: a thousand live-statistics streams ticking together share one copy instead of
/// holding a thousand.
#[derive(Default)]
pub struct Readings {
    recent: Mutex<std::collections::VecDeque<Arc<Reading>>>,
    /// p50 and p99 of the requests completed between two readings, by when they were taken.
    between: Mutex<std::collections::VecDeque<(Span, (u64, u64))>>,
}

/// Two readings, by when they were taken.
type Span = (Instant, Instant);

/// Distinct instants kept: enough for streams of several intervals ticking near each other.
const READINGS_KEPT: usize = 8;

impl Readings {
    /// The reading for grid instant `at_ms`: one taken for it at most `fresh` ago, or one
    /// taken now. A grid instant is not a moment: after the wall clock is set back, the same
    /// instant comes round again, and a reading from the first time must not stand for it.
    pub fn at(&self, at_ms: u64, fresh: Duration, metrics: &Metrics) -> Arc<Reading> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reading) = recent
            .iter()
            .find(|r| r.at_ms == at_ms && r.taken.elapsed() <= fresh)
        {
            return Arc::clone(reading);
        }
        let reading = Arc::new(Reading {
            at_ms,
            taken: Instant::now(),
            stats: metrics.stats(),
            latency: metrics.latency_histogram(),
        });
        recent.retain(|r| r.at_ms != at_ms);
        if recent.len() == READINGS_KEPT {
            recent.pop_front();
        }
        recent.push_back(Arc::clone(&reading));
        reading
    }

    /// p50 and p99 latency of the requests completed between `from` and `to` (0 when none),
    /// computed once per pair of readings: it takes a copy of the histogram.
    pub fn percentiles_between(&self, from: &Reading, to: &Reading) -> (u64, u64) {
        let key = (from.taken, to.taken);
        let mut between = self.between.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, found)) = between.iter().find(|(k, _)| *k == key) {
            return *found;
        }
        let found = match (&to.latency, &from.latency) {
            (Some(to), Some(from)) => {
                let mut interval = to.clone();
                let _ = interval.subtract(from);
                quantiles(&interval)
            }
            (Some(to), None) => quantiles(to),
            _ => (0, 0),
        };
        if between.len() == READINGS_KEPT {
            between.pop_front();
        }
        between.push_back((key, found));
        found
    }
}

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> (u64, u64) {
    if h.is_empty() {
        (0, 0)
    } else {
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
    }
}

/// gRPC status codes, 0 (OK) to 16 (UNAUTHENTICATED).
const GRPC_CODES: usize = 17;

/// The gRPC status codes by number, as `rpc.response.status_code` and `error.type` name them.
pub const GRPC_CODE_NAMES: [&str; GRPC_CODES] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The codes OpenTelemetry's gRPC conventions count as the server's error.
pub fn grpc_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// One RPC method as metrics label it; unknown methods share one entry (`_OTHER`), so
/// callers cannot grow the label set.
pub struct RpcMethod {
    /// `floodgate.v1.ComputeService`.
    pub service: &'static str,
    /// `Fast`.
    pub method: &'static str,
    /// `rpc.method`: `floodgate.v1.ComputeService/Fast`, or `_OTHER`.
    full: String,
    /// Counted in the JSON statistics (the API, not health checks or reflection).
    pub api: bool,
    durations: [OnceLock<Series>; GRPC_CODES],
}

impl RpcMethod {
    pub fn new(service: &'static str, method: &'static str, api: bool) -> Self {
        Self {
            service,
            method,
            full: format!("{service}/{method}"),
            api,
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Every method the server does not serve.
    pub fn other() -> Self {
        Self {
            service: "_OTHER",
            method: "_OTHER",
            full: "_OTHER".to_owned(),
            api: false,
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// `rpc.method`.
    pub fn full_name(&self) -> &str {
        &self.full
    }
}

/// A consistent-enough snapshot of [`RequestStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    pub total_requests: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub rate_limited_count: u64,
    pub overloaded_count: u64,
    pub active_requests: i64,
    pub avg_latency_us: u64,
    pub latency_p50_us: u64,
    pub latency_p95_us: u64,
    pub latency_p99_us: u64,
}

impl RequestStats {
    fn record(&self, status: u16, refused: Option<Refused>, latency: Duration) {
        let succeeded = if (200..300).contains(&status) {
            Some(true)
        } else if status >= 400 {
            Some(false)
        } else {
            None
        };
        self.record_outcome(succeeded, refused, latency);
    }

    /// `succeeded`: `None` for an answer that is neither (a redirect).
    fn record_outcome(&self, succeeded: Option<bool>, refused: Option<Refused>, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        self.total.fetch_add(1, Ordering::Relaxed);
        match succeeded {
            Some(true) => self.success.fetch_add(1, Ordering::Relaxed),
            Some(false) => self.error.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        match refused {
            Some(Refused::RateLimited) => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            Some(Refused::Overloaded) => {
                self.overloaded.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let mut hist = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let hist = hist.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds")
        });
        hist.saturating_record(us.max(1));
    }

    /// Read every counter now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let total = self.total.load(Ordering::Relaxed);
        let sum = self.latency_sum_us.load(Ordering::Relaxed);
        let (p50, p95, p99) = {
            let hist = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            match hist.as_ref() {
                Some(h) if !h.is_empty() => (
                    h.value_at_quantile(0.50),
                    h.value_at_quantile(0.95),
                    h.value_at_quantile(0.99),
                ),
                _ => (0, 0, 0),
            }
        };
        StatsSnapshot {
            total_requests: total,
            success_count: self.success.load(Ordering::Relaxed),
            error_count: self.error.load(Ordering::Relaxed),
            rate_limited_count: self.rate_limited.load(Ordering::Relaxed),
            overloaded_count: self.overloaded.load(Ordering::Relaxed),
            active_requests: 0,
            avg_latency_us: sum.checked_div(total).unwrap_or(0),
            latency_p50_us: p50,
            latency_p95_us: p95,
            latency_p99_us: p99,
        }
    }
}

/// One application's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    /// Per route, its series by scheme, version, method and status; a route's block is
    /// allocated when it first answers, so the cache costs memory only for the routes in use.
    series: [OnceLock<Box<RouteSeries>>; MAX_ROUTES],
    rate_limited: Counter,
    /// HTTP requests in flight, by scheme and method (`http.server.active_requests`).
    http_active: [AtomicI64; Scheme::COUNT * MethodLabel::COUNT],
    active: [Gauge; Scheme::COUNT * MethodLabel::COUNT],
    /// API calls over gRPC in flight.
    rpc_active: AtomicI64,
    /// Where the OpenMetrics exposition finds each series' exemplars.
    exemplars: ExemplarIndex,
    stats: RequestStats,
    /// Run before each exposition, to bring gauges that are read lazily up to date.
    refreshers: std::sync::RwLock<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh recorder with every metric described and `floodgate_build_info` set.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .expect("bucket list is not empty")
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(JOB_ATTEMPTS.to_owned()),
                &[1.0, 2.0, 3.0, 5.0, 10.0],
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());
        describe(&recorder);
        let reg =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &metadata());
        let rate_limited = reg(RATE_LIMITED_TOTAL);
        let _ = reg(METRIC_EXPORTS_FAILED);
        // Register zero-valued series up front so dashboards and alerts see them from the start.
        for (name, label, values) in [
            (
                SPANS_DROPPED,
                "reason",
                &["queue_full", "export_failed", "rate_limit"][..],
            ),
            (
                LOG_RECORDS_DROPPED,
                "reason",
                &["queue_full", "export_failed"],
            ),
            (LOG_LINES_DROPPED, "sink", &["stdout", "access_log"]),
            (STREAM_MESSAGES, "kind", &["stats", "job"]),
            (STREAM_SLOW_CONSUMERS, "kind", &["stats", "job"]),
        ] {
            for value in values {
                let key = Key::from_parts(name, vec![Label::new(label, *value)]);
                let _ = recorder.register_counter(&key, &metadata());
            }
        }
        for kind in ["stats", "job"] {
            let key = Key::from_parts(STREAMS_OPEN, vec![Label::new("kind", kind)]);
            recorder.register_gauge(&key, &metadata()).set(0.0);
        }
        let active = std::array::from_fn(|i| {
            let (scheme, method) = active_labels(i);
            let key = Key::from_parts(
                HTTP_ACTIVE_REQUESTS,
                vec![
                    Label::new("http_request_method", method.as_str()),
                    Label::new("url_scheme", scheme.as_str()),
                ],
            );
            recorder.register_gauge(&key, &metadata())
        });
        recorder
            .register_gauge(
                &Key::from_parts(
                    BUILD_INFO,
                    vec![
                        Label::new("version", crate::VERSION),
                        Label::new("git_sha", crate::GIT_SHA),
                    ],
                ),
                &metadata(),
            )
            .set(1.0);
        Self {
            recorder,
            handle,
            process,
            series: std::array::from_fn(|_| OnceLock::new()),
            rate_limited,
            http_active: std::array::from_fn(|_| AtomicI64::new(0)),
            active,
            rpc_active: AtomicI64::new(0),
            exemplars: ExemplarIndex::default(),
            stats: RequestStats::default(),
            refreshers: std::sync::RwLock::default(),
        }
    }

    /// Run `refresh` before each exposition: for state that changes with time alone, such as
    /// a breaker whose open period lapsed, whose gauge nothing else would set.
    pub fn on_render(&self, refresh: impl Fn() + Send + Sync + 'static) {
        self.refreshers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(refresh));
    }

    /// A counter in this application's registry.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &metadata())
    }

    /// A gauge in this application's registry.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_name(name), &metadata())
    }

    /// A histogram in this application's registry.
    pub fn histogram(&self, name: &'static str) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_name(name), &metadata())
    }

    /// A labelled gauge in this application's registry.
    pub fn labelled_gauge(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Gauge {
        self.recorder
            .register_gauge(&key(name, labels), &metadata())
    }

    /// A labelled histogram in this application's registry.
    pub fn labelled_histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &metadata())
    }

    /// A request started; pair with [`Metrics::record_request`].
    pub fn request_started(&self, route: RouteLabel, method: MethodLabel, scheme: Scheme) {
        if route.recorded {
            self.http_active[active_index(scheme, method)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request finished: its duration (with the exemplar of a sampled request) and the JSON
    /// statistics. O(1) and allocation-free once its series exists.
    pub fn record_request(&self, route: RouteLabel, outcome: Outcome) {
        if !route.recorded {
            return;
        }
        let Outcome {
            method,
            scheme,
            version,
            status,
            refused,
            elapsed,
            trace,
        } = outcome;
        self.http_active[active_index(scheme, method)].fetch_sub(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        match STATUSES.iter().position(|s| *s == status) {
            Some(status_index) if route.index < MAX_ROUTES => {
                let block = self.series[route.index]
                    .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                let slot = ((scheme as usize * ProtocolVersion::COUNT + version as usize)
                    * MethodLabel::COUNT
                    + method as usize)
                    * STATUSES.len()
                    + status_index;
                let series = block[slot]
                    .get_or_init(|| Box::new(self.register_series(route.template, &outcome)));
                series.duration.record(secs);
                if let Some(trace) = trace {
                    series.exemplars.offer(secs, trace);
                }
            }
            // Not cached: counted, without an exemplar.
            _ => self
                .recorder
                .register_histogram(
                    &Key::from_parts(HTTP_REQUEST_DURATION, http_labels(route.template, &outcome)),
                    &metadata(),
                )
                .record(secs),
        }
        if refused == Some(Refused::RateLimited) {
            self.rate_limited.increment(1);
        }
        if route.api {
            self.stats.record(status, refused, elapsed);
        }
    }

    /// An RPC started; pair with [`Metrics::record_rpc`].
    pub fn rpc_started(&self, method: &RpcMethod) {
        if method.api {
            self.rpc_active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An RPC finished with gRPC status `code`: its duration by method and code (with the
    /// exemplar of a sampled call), and, for the API's methods, the JSON statistics (an error
    /// unless OK; refusals as on REST).
    pub fn record_rpc(
        &self,
        method: &RpcMethod,
        code: i32,
        refused: Option<Refused>,
        elapsed: Duration,
        trace: Option<TraceRef>,
    ) {
        let secs = elapsed.as_secs_f64();
        match usize::try_from(code).ok().filter(|c| *c < GRPC_CODES) {
            Some(c) => {
                let series = method.durations[c].get_or_init(|| self.rpc_series(method, code));
                series.duration.record(secs);
                if let Some(trace) = trace {
                    series.exemplars.offer(secs, trace);
                }
            }
            None => self
                .recorder
                .register_histogram(
                    &Key::from_parts(RPC_DURATION, rpc_labels(method, code)),
                    &metadata(),
                )
                .record(secs),
        }
        if refused == Some(Refused::RateLimited) {
            self.rate_limited.increment(1);
        }
        if method.api {
            self.rpc_active.fetch_sub(1, Ordering::Relaxed);
            self.stats.record_outcome(Some(code == 0), refused, elapsed);
        }
    }

    fn rpc_series(&self, method: &RpcMethod, code: i32) -> Series {
        self.series_for(RPC_DURATION, rpc_labels(method, code))
    }

    fn register_series(&self, route: &'static str, outcome: &Outcome) -> Series {
        self.series_for(HTTP_REQUEST_DURATION, http_labels(route, outcome))
    }

    fn series_for(&self, name: &'static str, labels: Vec<Label>) -> Series {
        let exemplars = self.exemplars.register(name, &labels, DURATION_BUCKETS);
        Series {
            duration: self
                .recorder
                .register_histogram(&Key::from_parts(name, labels), &metadata()),
            exemplars,
        }
    }

    /// The JSON statistics.
    pub fn stats(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        snapshot.active_requests = self.active_requests();
        snapshot
    }

    /// Requests and API calls in flight now.
    fn active_requests(&self) -> i64 {
        let http: i64 = self
            .http_active
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        (http + self.rpc_active.load(Ordering::Relaxed)).max(0)
    }

    /// The API latencies seen so far (microseconds), for percentiles over an interval: the
    /// difference of two of these.
    pub fn latency_histogram(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.stats
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Prometheus text exposition; refreshes process and runtime gauges first.
    pub fn render(&self) -> String {
        for refresh in self
            .refreshers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            refresh();
        }
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        let rt = tokio::runtime::Handle::try_current()
            .ok()
            .map(|h| h.metrics());
        if let Some(rt) = rt {
            self.gauge(TOKIO_WORKERS).set(rt.num_workers() as f64);
            self.gauge(TOKIO_ALIVE_TASKS)
                .set(rt.num_alive_tasks() as f64);
            self.gauge(TOKIO_GLOBAL_QUEUE_DEPTH)
                .set(rt.global_queue_depth() as f64);
        }
        for (gauge, active) in self.active.iter().zip(&self.http_active) {
            gauge.set(active.load(Ordering::Relaxed).max(0) as f64);
        }
        self.handle.render()
    }

    /// The OpenMetrics exposition: the same series as [`Metrics::render`], with the
    /// exemplars of the request-duration histograms.
    pub fn render_openmetrics(&self) -> String {
        super::openmetrics::from_text(&self.render(), &self.exemplars)
    }

    /// Fold buffered histogram samples into their buckets; run periodically so memory
    /// does not grow with the request rate between scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn active_index(scheme: Scheme, method: MethodLabel) -> usize {
    scheme as usize * MethodLabel::COUNT + method as usize
}

fn active_labels(index: usize) -> (Scheme, MethodLabel) {
    const SCHEMES: [Scheme; Scheme::COUNT] = [Scheme::Http, Scheme::Https];
    const METHODS: [MethodLabel; MethodLabel::COUNT] = [
        MethodLabel::Get,
        MethodLabel::Post,
        MethodLabel::Put,
        MethodLabel::Delete,
        MethodLabel::Patch,
        MethodLabel::Head,
        MethodLabel::Options,
        MethodLabel::Other,
    ];
    (
        SCHEMES[index / MethodLabel::COUNT],
        METHODS[index % MethodLabel::COUNT],
    )
}

/// The labels of `http.server.request.duration`, in OpenTelemetry's names: no `http_route`
/// for a request no route matched, `error_type` (the status) for a server error.
fn http_labels(route: &'static str, outcome: &Outcome) -> Vec<Label> {
    let mut labels = vec![Label::new("http_request_method", outcome.method.as_str())];
    if route != UNMATCHED_ROUTE {
        labels.push(Label::new("http_route", route));
    }
    labels.push(Label::new(
        "http_response_status_code",
        outcome.status.to_string(),
    ));
    labels.push(Label::new("url_scheme", outcome.scheme.as_str()));
    labels.push(Label::new(
        "network_protocol_version",
        outcome.version.as_str(),
    ));
    if outcome.status >= 500 {
        labels.push(Label::new("error_type", outcome.status.to_string()));
    }
    labels
}

/// The labels of `rpc.server.call.duration`: `error_type` (the code) for a server error.
fn rpc_labels(method: &RpcMethod, code: i32) -> Vec<Label> {
    let name = usize::try_from(code)
        .ok()
        .and_then(|c| GRPC_CODE_NAMES.get(c).copied())
        .map_or_else(|| code.to_string(), str::to_owned);
    let mut labels = vec![
        Label::new("rpc_system_name", "grpc"),
        Label::new("rpc_method", method.full.clone()),
        Label::new("rpc_response_status_code", name.clone()),
    ];
    if grpc_server_error(code) {
        labels.push(Label::new("error_type", name));
    }
    labels
}

/// The route label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Live tokio tasks (reported as `goroutines` for existing clients).
pub fn live_tasks() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0)
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

fn metadata() -> Metadata<'static> {
    static META: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);
    META.clone()
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric's type, unit and help text.
const DESCRIPTIONS: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        HTTP_REQUEST_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Duration of HTTP server requests.",
    ),
    (
        HTTP_ACTIVE_REQUESTS,
        Kind::Gauge,
        Some(Unit::Count),
        "Number of active HTTP server requests.",
    ),
    (
        RPC_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Measures the duration of an incoming Remote Procedure Call (RPC).",
    ),
    (
        RATE_LIMITED_TOTAL,
        Kind::Counter,
        Some(Unit::Count),
        "Requests refused by the rate limiter (429).",
    ),
    (
        JOBS_TOTAL,
        Kind::Counter,
        Some(Unit::Count),
        "Worker-pool jobs by outcome: completed, rejected_full, cancelled, failed.",
    ),
    (
        JOB_QUEUE_DEPTH,
        Kind::Gauge,
        Some(Unit::Count),
        "Jobs waiting in the worker-pool queue.",
    ),
    (
        JOB_QUEUE_CAPACITY,
        Kind::Gauge,
        Some(Unit::Count),
        "Capacity of the worker-pool queue.",
    ),
    (
        WORKERS,
        Kind::Gauge,
        Some(Unit::Count),
        "Live worker threads.",
    ),
    (
        WORKERS_BUSY,
        Kind::Gauge,
        Some(Unit::Count),
        "Worker threads running a job now.",
    ),
    (
        JOB_QUEUE_WAIT,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time jobs spent queued before a worker took them.",
    ),
    (
        JOB_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time workers spent running jobs.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        None,
        "Always 1; labels carry the version and commit.",
    ),
    (
        SPANS_DROPPED,
        Kind::Counter,
        Some(Unit::Count),
        "Spans not exported, by reason: queue_full (the export buffer was full), export_failed, or rate_limit (a trace root over otel.max_traces_per_second, never built).",
    ),
    (
        LOG_RECORDS_DROPPED,
        Kind::Counter,
        Some(Unit::Count),
        "Log records not exported over OTLP, by reason: queue_full or export_failed.",
    ),
    (
        METRIC_EXPORTS_FAILED,
        Kind::Counter,
        Some(Unit::Count),
        "OTLP metric exports that failed (refused, unreachable or timed out); retried at the next interval.",
    ),
    (
        CACHE_REQUESTS,
        Kind::Counter,
        Some(Unit::Count),
        "Result-cache look-ups by result: hit or miss.",
    ),
    (
        CACHE_EVICTIONS,
        Kind::Counter,
        Some(Unit::Count),
        "Result-cache entries removed, by cause: size or expired.",
    ),
    (
        CACHE_ENTRIES,
        Kind::Gauge,
        Some(Unit::Count),
        "Entries in the result cache.",
    ),
    (
        TOKIO_WORKERS,
        Kind::Gauge,
        Some(Unit::Count),
        "Async runtime worker threads.",
    ),
    (
        TOKIO_ALIVE_TASKS,
        Kind::Gauge,
        Some(Unit::Count),
        "Live async tasks.",
    ),
    (
        TOKIO_GLOBAL_QUEUE_DEPTH,
        Kind::Gauge,
        Some(Unit::Count),
        "Tasks waiting in the async runtime's global queue.",
    ),
    (
        DEPENDENCY_UP,
        Kind::Gauge,
        None,
        "1 after a successful call to the dependency, 0 after a failed one or while its circuit is open.",
    ),
    (
        CIRCUIT_STATE,
        Kind::Gauge,
        None,
        "Circuit breaker state by dependency: 0 closed, 1 half-open, 2 open.",
    ),
    (
        CIRCUIT_TRANSITIONS,
        Kind::Counter,
        Some(Unit::Count),
        "Circuit breaker transitions by dependency and the state entered (to).",
    ),
    (
        DEPENDENCY_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Calls to a dependency by operation, including calls that timed out.",
    ),
    (
        RATE_LIMIT_DECISIONS,
        Kind::Counter,
        Some(Unit::Count),
        "Rate-limit decisions by backend (local, redis) and outcome (allowed, limited, fallback).",
    ),
    (
        JOBS,
        Kind::Gauge,
        Some(Unit::Count),
        "Durable jobs not yet ended, by status: queued, scheduled, running (counted from an index of them alone).",
    ),
    (
        JOBS_FINISHED,
        Kind::Counter,
        Some(Unit::Count),
        "Durable jobs that ended, by status: succeeded, failed, discarded (recorded by this replica's runner or upkeep), cancelled (through this replica's API).",
    ),
    (
        JOBS_OLDEST_QUEUED_AGE,
        Kind::Gauge,
        Some(Unit::Seconds),
        "How long the job due longest has waited for a runner (0 when none is due): the autoscaling signal.",
    ),
    (
        JOB_ATTEMPTS,
        Kind::Histogram,
        Some(Unit::Count),
        "Attempts per finished job.",
    ),
    (
        JOB_RETRIES,
        Kind::Counter,
        Some(Unit::Count),
        "Job attempts that failed with attempts left, scheduled again after a backoff.",
    ),
    (
        JOB_RUNNER_RESTARTS,
        Kind::Counter,
        Some(Unit::Count),
        "Times the job runner panicked and was started again.",
    ),
    (
        DB_CONNECTIONS,
        Kind::Gauge,
        Some(Unit::Count),
        "Jobs database connections by state: idle or used.",
    ),
    (
        STREAMS_OPEN,
        Kind::Gauge,
        Some(Unit::Count),
        "Open streams (WebSocket or server-sent events) by kind: stats or job.",
    ),
    (
        STREAM_MESSAGES,
        Kind::Counter,
        Some(Unit::Count),
        "Messages sent on streams, by kind.",
    ),
    (
        STREAM_SLOW_CONSUMERS,
        Kind::Counter,
        Some(Unit::Count),
        "Streams closed because the reader fell behind (1013), by kind.",
    ),
    (
        DB_ACQUIRE_WAIT,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time waiting for a jobs database connection from the pool (a SQLite write: its turn to write, then the connection).",
    ),
    (
        DB_QUERY_DURATION,
        Kind::Histogram,
        Some(Unit::Seconds),
        "Jobs database calls by operation, waiting for a connection included.",
    ),
    (
        CONNECTION_ERRORS,
        Kind::Counter,
        Some(Unit::Count),
        "Connections ended before a handler saw a request, by kind: malformed (400), too_large (431), header_timeout.",
    ),
    (
        ADMISSION_LIMIT,
        Kind::Gauge,
        Some(Unit::Count),
        "Adaptive concurrency limit by class of work (fast, intensive, job_execution).",
    ),
    (
        ADMISSION_IN_FLIGHT,
        Kind::Gauge,
        Some(Unit::Count),
        "Calls admitted and not yet answered, by class of work.",
    ),
    (
        ADMISSION_REFUSALS,
        Kind::Counter,
        Some(Unit::Count),
        "Calls refused by the adaptive limits (503), by class and cause: limit (the class at its limit) or priority (shed for a higher class).",
    ),
    (
        ADMISSION_PAUSES,
        Kind::Counter,
        Some(Unit::Count),
        "Refusals past the refusal budget, each of which paused its connection's reads, by class of work.",
    ),
    (
        ADMISSION_RUNTIME_DELAY,
        Kind::Gauge,
        Some(Unit::Seconds),
        "The longest delay, in the last admission window, with which the async runtime ran a task that was ready: what every request waited before it was read.",
    ),
    (
        ADMISSION_BASELINE,
        Kind::Gauge,
        Some(Unit::Seconds),
        "No-load latency of each class: the lowest latency of the baseline window, queue time left out.",
    ),
    (
        LOG_LINES_DROPPED,
        Kind::Counter,
        Some(Unit::Count),
        "Log lines dropped because the log writer fell behind, by sink: stdout or access_log.",
    ),
];

fn describe(r: &PrometheusRecorder) {
    for &(name, kind, unit, help) in DESCRIPTIONS {
        let name = metrics::KeyName::from(name);
        match kind {
            Kind::Counter => r.describe_counter(name, unit, help.into()),
            Kind::Gauge => r.describe_gauge(name, unit, help.into()),
            Kind::Histogram => r.describe_histogram(name, unit, help.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: RouteLabel = RouteLabel {
        index: 1,
        template: "/api/v1/compute/fast",
        api: true,
        recorded: true,
    };
    const HEALTH: RouteLabel = RouteLabel {
        index: 2,
        template: "/health",
        api: false,
        recorded: true,
    };

    fn outcome(method: MethodLabel, status: u16, refused: Option<Refused>, us: u64) -> Outcome {
        Outcome {
            method,
            scheme: Scheme::Http,
            version: ProtocolVersion::Http11,
            status,
            refused,
            elapsed: Duration::from_micros(us),
            trace: None,
        }
    }

    #[test]
    fn json_statistics_and_exposition_agree() {
        let m = Metrics::new();
        for status in [200, 200, 400, 429] {
            m.request_started(API, MethodLabel::Post, Scheme::Http);
            let refused = (status == 429).then_some(Refused::RateLimited);
            m.record_request(API, outcome(MethodLabel::Post, status, refused, 100));
        }
        m.request_started(HEALTH, MethodLabel::Get, Scheme::Http);
        m.record_request(HEALTH, outcome(MethodLabel::Get, 200, None, 10));
        let s = m.stats();
        assert_eq!(s.total_requests, 4);
        assert_eq!(s.success_count, 2);
        assert_eq!(s.error_count, 2);
        assert_eq!(s.rate_limited_count, 1);
        assert_eq!(s.avg_latency_us, 100);
        assert_eq!(s.active_requests, 0);
        let text = m.render();
        assert!(text.contains(r#"http_server_request_duration_seconds_count{http_request_method="POST",http_route="/api/v1/compute/fast",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1"} 2"#), "{text}");
        assert!(text.contains(
            r#"http_server_request_duration_seconds_count{http_request_method="GET",http_route="/health",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1"} 1"#
        ));
        assert!(text.contains("floodgate_rate_limited_total 1"));
        assert!(text.contains(r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/api/v1/compute/fast",http_response_status_code="400",url_scheme="http",network_protocol_version="1.1",le="0.00025"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"http_server_active_requests{http_request_method="POST",url_scheme="http"} 0"#
            ),
            "{text}"
        );
        assert!(text.contains("floodgate_build_info{"));
    }

    #[test]
    fn readings_are_shared_by_instant_and_percentiles_cover_only_the_interval() {
        let m = Metrics::new();
        let readings = Readings::default();
        let record = |us: u64, n: usize| {
            for _ in 0..n {
                m.request_started(API, MethodLabel::Post, Scheme::Http);
                m.record_request(API, outcome(MethodLabel::Post, 200, None, us));
            }
        };
        let fresh = Duration::from_secs(60);
        record(100, 10);
        let first = readings.at(1_000, fresh, &m);
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &readings.at(1_000, fresh, &m)
        ));
        record(5_000, 10);
        let second = readings.at(2_000, fresh, &m);
        assert!(!std::sync::Arc::ptr_eq(&first, &second));
        assert_eq!(second.stats.total_requests - first.stats.total_requests, 10);
        // Only the 5 ms requests completed between the two readings.
        let (p50, p99) = readings.percentiles_between(&first, &second);
        assert!((4_900..=5_100).contains(&p50), "{p50}");
        assert!((4_900..=5_100).contains(&p99), "{p99}");
        assert_eq!(readings.percentiles_between(&second, &second), (0, 0));
        // The wall clock set back: an instant that comes round again is read again.
        record(100, 1);
        let again = readings.at(1_000, Duration::ZERO, &m);
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(again.stats.total_requests, 21);
        assert!(Arc::ptr_eq(&again, &readings.at(1_000, fresh, &m)));
        assert_eq!(readings.percentiles_between(&second, &again), (100, 100));
    }

    #[test]
    fn two_instances_do_not_share_counts() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.request_started(API, MethodLabel::Post, Scheme::Http);
        a.record_request(API, outcome(MethodLabel::Post, 200, None, 5));
        assert_eq!(a.stats().total_requests, 1);
        assert_eq!(b.stats().total_requests, 0);
        assert!(!b.render().contains("http_route=\"/api/v1/compute/fast\""));
    }

    #[test]
    fn server_errors_carry_error_type_and_unmatched_requests_no_route() {
        let m = Metrics::new();
        let unmatched = RouteLabel {
            index: 0,
            template: UNMATCHED_ROUTE,
            api: true,
            recorded: true,
        };
        m.request_started(unmatched, MethodLabel::Get, Scheme::Https);
        m.record_request(
            unmatched,
            Outcome {
                scheme: Scheme::Https,
                version: ProtocolVersion::Http2,
                ..outcome(MethodLabel::Get, 404, None, 10)
            },
        );
        m.request_started(API, MethodLabel::Post, Scheme::Http);
        m.record_request(
            API,
            outcome(MethodLabel::Post, 503, Some(Refused::Overloaded), 10),
        );
        let text = m.render();
        assert!(text.contains(r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",url_scheme="https",network_protocol_version="2"} 1"#), "{text}");
        assert!(text.contains(r#"http_response_status_code="503",url_scheme="http",network_protocol_version="1.1",error_type="503"} 1"#), "{text}");
    }

    #[test]
    fn rpcs_are_labelled_as_opentelemetry_names_them() {
        let m = Metrics::new();
        let fast = RpcMethod::new("floodgate.v1.ComputeService", "Fast", true);
        for code in [0, 13, 3] {
            m.rpc_started(&fast);
            m.record_rpc(&fast, code, None, Duration::from_micros(10), None);
        }
        let other = RpcMethod::other();
        m.record_rpc(&other, 12, None, Duration::from_micros(10), None);
        let text = m.render();
        for want in [
            r#"rpc_server_call_duration_seconds_count{rpc_system_name="grpc",rpc_method="floodgate.v1.ComputeService/Fast",rpc_response_status_code="OK"} 1"#,
            r#"rpc_server_call_duration_seconds_count{rpc_system_name="grpc",rpc_method="floodgate.v1.ComputeService/Fast",rpc_response_status_code="INTERNAL",error_type="INTERNAL"} 1"#,
            r#"rpc_server_call_duration_seconds_count{rpc_system_name="grpc",rpc_method="floodgate.v1.ComputeService/Fast",rpc_response_status_code="INVALID_ARGUMENT"} 1"#,
            r#"rpc_server_call_duration_seconds_count{rpc_system_name="grpc",rpc_method="_OTHER",rpc_response_status_code="UNIMPLEMENTED",error_type="UNIMPLEMENTED"} 1"#,
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        let s = m.stats();
        assert_eq!(
            (s.total_requests, s.success_count, s.error_count),
            (3, 1, 2)
        );
    }

    #[test]
    fn sampled_requests_leave_exemplars_in_the_openmetrics_exposition_only() {
        let m = Metrics::new();
        let trace = TraceRef {
            trace_id: [0x4b; 16],
            span_id: [0x0f; 8],
        };
        m.request_started(API, MethodLabel::Post, Scheme::Http);
        m.record_request(
            API,
            Outcome {
                trace: Some(trace),
                ..outcome(MethodLabel::Post, 200, None, 3_000)
            },
        );
        let fast = RpcMethod::new("floodgate.v1.ComputeService", "Fast", true);
        m.record_rpc(&fast, 0, None, Duration::from_micros(70), Some(trace));
        let text = m.render();
        assert!(!text.contains("trace_id"), "0.0.4 stays as it was");
        let om = m.render_openmetrics();
        let exemplar = format!(
            r#" # {{trace_id="{}",span_id="{}"}} 0.003 "#,
            "4b".repeat(16),
            "0f".repeat(8)
        );
        let line = om
            .lines()
            .find(|l| l.contains(&exemplar))
            .unwrap_or_else(|| panic!("{om}"));
        assert!(line.starts_with(r#"http_server_request_duration_seconds_bucket{http_request_method="POST",http_route="/api/v1/compute/fast",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1",le="0.005"} 1 "#), "{line}");
        assert!(om.lines().any(|l| l.starts_with(r#"rpc_server_call_duration_seconds_bucket{rpc_system_name="grpc",rpc_method="floodgate.v1.ComputeService/Fast",rpc_response_status_code="OK",le="0.0001"} 1 # {trace_id="#)), "{om}");
        assert!(om.contains("# TYPE floodgate_rate_limited counter"));
        assert!(om.ends_with("# EOF\n"));
    }
}
