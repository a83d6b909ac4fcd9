//! Building and running the application: the only module that wires the others together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};

use crate::admission::overload::{
    probe_runtime_delay, Cause, ClassMetrics, OverloadConfig, Tuning,
};
use crate::admission::rate_limit::{redis::RedisDecisions, Decisions};
use crate::admission::{Admission, Authenticator, Class, FailureThrottle, Overload, RateLimiter};
use crate::config::{Settings, SignalExporter};
use crate::dependency::{BreakerConfig, BreakerMetrics, Redis, RedisMetrics};
use crate::domain::cache::Cache;
use crate::domain::execution::StartGate;
use crate::domain::jobs::{JobMetrics, Jobs};
use crate::domain::{Compute, Kernel};
use crate::grpc::{self, RpcContextConfig, RpcContextLayer};
use crate::health::{DatabaseCheck, HealthCheck, HealthRegistry, RedisCheck, WorkerPoolCheck};
use crate::http::routes::docs::Document;
use crate::http::{self, ContextConfig, ContextLayer, RouteSpec, RouteTable, StackOptions};
use crate::observability::access_log::AccessLog;
use crate::observability::metrics::{self as m, Metrics, Scheme};
use crate::observability::{otlp_metrics, telemetry};
use crate::pool::{PoolMetrics, WorkerPool};
use crate::state::{AppState, Inner, Readiness, Streams};
use crate::store::{JobStatus, JobStore, OpenError, StoreMetrics};
use crate::transport::server::ConnectionErrors;
use crate::transport::tls::{self, ReloadableCert};
use crate::transport::{ConnectionLimits, Protocols, Server, Tls};

/// How often the TLS certificate files are checked for changes.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// The public listener's service: the HTTP stack, and the gRPC stack for gRPC calls.
pub type Service = Protocols<http::Stack, grpc::Stack>;

/// A built application whose listeners are already bound.
pub struct Application {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    service: Service,
    admin_service: Option<http::Stack>,
    state: AppState,
    admission: Admission,
    access_log: Option<AccessLog>,
    tls: Option<Tls>,
    kernel: Kernel,
    /// The jobs database could not be reached at start: keep trying while serving.
    pending_store: bool,
    job_metrics: JobMetrics,
    /// SIGHUP, handled from before the listeners are bound.
    hangups: tokio::signal::unix::Signal,
}

/// Totals reported when the application stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub total_requests: u64,
    pub success_count: u64,
    pub error_count: u64,
    /// Whether every connection and job finished within the shutdown timeout.
    pub drained: bool,
}

/// Options beyond [`Settings`]: extra health checks, and the workload (replaceable in tests).
pub struct ApplicationBuilder {
    settings: Settings,
    health: HealthRegistry,
    kernel: Kernel,
    routes: Vec<RouteSpec>,
}

impl ApplicationBuilder {
    /// Register an additional health check.
    pub fn with_health_check(mut self, check: impl HealthCheck + 'static) -> Self {
        self.health.register(check);
        self
    }

    /// Replace the intensive workload.
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// Serve an additional route, behind the layers of its surface; it gets its own metric
    /// label and span name, and its operation in the API document when it has one.
    pub fn with_route(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// Bind the listeners and assemble state, routes and layers. Unusable key, certificate
    /// or credential files are `InvalidInput` errors naming the file.
    pub async fn build(self) -> std::io::Result<Application> {
        // Before any port is bound: SIGHUP's default action would kill the process, and
        // process managers send it to ask for a reload.
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let settings = Arc::new(self.settings);
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let tls = Tls::from_settings(&settings.tls).map_err(invalid)?;
        let auth = Authenticator::from_settings(&settings.auth)
            .map_err(invalid)?
            .map(Arc::new);
        let metrics = Arc::new(Metrics::new());
        let redis = match &settings.redis.url {
            Some(_) => {
                Some(Redis::connect(&settings.redis, redis_metrics(&metrics)).map_err(invalid)?)
            }
            None => None,
        };
        if let Some(redis) = &redis {
            redis.warm_up().await;
        }
        if let Some(redis) = redis.clone() {
            metrics.on_render(move || {
                redis.state();
            });
        }
        raise_open_file_limit(settings.server.max_connections);
        let listener = bind(settings.server.address)?;
        let admin_listener = settings.server.admin_address.map(bind).transpose()?;
        let port = listener.local_addr()?.port();

        let pool = WorkerPool::start(
            settings.pool.effective_workers(),
            settings.pool.queue_size,
            settings.pool.worker_niceness,
            pool_metrics(&metrics),
        );
        let mut health = self.health;
        health.register(WorkerPoolCheck(pool.clone()));
        if let Some(redis) = &redis {
            health.register(RedisCheck(redis.clone()));
        }
        let jobs: Arc<std::sync::OnceLock<Jobs>> = Arc::new(std::sync::OnceLock::new());
        if settings.jobs.enabled {
            health.register(DatabaseCheck(Arc::clone(&jobs)));
            let jobs = Arc::clone(&jobs);
            metrics.on_render(move || {
                if let Some(jobs) = jobs.get() {
                    jobs.store.state();
                }
            });
        }
        let cache = Cache::from_settings(&settings.cache, redis.as_ref(), &metrics);
        let access_log = if settings.log.access_log_enabled() {
            let path = settings.log.access_log_path.as_deref();
            let format = settings.log.effective_format(settings.environment);
            Some(AccessLog::open(path, format).map_err(|e| {
                let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                invalid(format!(
                    "invalid setting `log.access_log_path`: value `{path}`: cannot open it: {e}"
                ))
            })?)
        } else {
            None
        };
        let overload = settings.admission.adaptive.then(|| {
            let workers = pool.status().workers;
            let ceiling = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            let a = &settings.admission;
            Overload::new(OverloadConfig {
                tuning: Tuning {
                    target_delay: a.target_delay,
                    window: a.window,
                    baseline_window: a.baseline_window,
                    runtime_delay: a.runtime_delay,
                },
                floor: ceiling(a.effective_min_limit(workers)),
                // The fixed limits: connections (each carries one fast call at a time over
                // HTTP/1.1), the pool's queue and workers, and the jobs running at once.
                ceilings: [
                    ceiling(settings.server.max_connections),
                    ceiling(settings.pool.queue_size.saturating_add(workers)),
                    ceiling(settings.jobs.effective_max_running(workers)),
                ],
                metrics: Class::ALL.map(|class| class_metrics(&metrics, class)),
                runtime_delay: metrics.gauge(m::ADMISSION_RUNTIME_DELAY),
            })
        });
        let state = AppState::new(Inner {
            settings: Arc::clone(&settings),
            compute: Compute::new(
                pool.clone(),
                cache.clone(),
                self.kernel,
                settings.compute.intensive_rounds,
            ),
            pool,
            metrics: Arc::clone(&metrics),
            health,
            readiness: Readiness::default(),
            cache,
            access_log_sink: access_log
                .as_ref()
                .filter(|_| settings.log.access_log_path.is_some())
                .map(|log| log.sink().clone()),
            jobs,
            streams: Streams::new(
                settings.streams.max_connections,
                settings.streams.max_operational_connections,
            ),
            overload: overload.clone(),
        });
        // The jobs database: a setting that cannot work stops the start (exit 64); a
        // database that is only away is retried while the service runs without API v2.
        let pending_store = if settings.jobs.enabled {
            match JobStore::open(
                &settings.database,
                store_metrics(&metrics),
                BreakerConfig::from(&settings.database.breaker),
            )
            .await
            {
                Ok(store) => {
                    let _ = state.jobs.set(Jobs::new(
                        store,
                        settings.jobs.clone(),
                        job_metrics(&metrics),
                    ));
                    false
                }
                Err(OpenError::Config(e)) => return Err(invalid(e)),
                Err(OpenError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "jobs database unavailable; API v2 answers 503 until it is reachable");
                    true
                }
            }
        } else {
            false
        };

        let routes = self.routes;
        let table = Arc::new(RouteTable::new(&routes));
        let context_for = |scheme| {
            ContextLayer::new(ContextConfig {
                routes: Arc::clone(&table),
                metrics: Arc::clone(&metrics),
                access_log: access_log.clone(),
                trusted_proxies: settings.rate_limit.trusted_proxies.clone(),
                server_port: port,
                scheme,
                deprecations: settings
                    .api
                    .deprecations
                    .iter()
                    .map(deprecation_headers)
                    .collect(),
            })
        };
        let context = context_for(if tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        });
        // The admin listener is plain HTTP whatever the public one speaks.
        let admin_context = context_for(Scheme::Http);
        let (auth_enabled, max_rounds) = (settings.auth.enabled, settings.jobs.max_rounds);
        let document = Arc::new(Document::new(move || {
            http::openapi::document_json(table.paths(), auth_enabled, max_rounds)
        }));
        let failures = FailureThrottle::new(
            settings.auth.failed_attempts_per_minute,
            settings.auth.failed_attempts_burst,
        );
        let mut admission = Admission::new(
            auth,
            failures,
            RateLimiter::from_settings(&settings.rate_limit, redis.as_ref(), decisions(&metrics)),
        );
        if let Some(overload) = overload {
            admission = admission.with_overload(overload);
        }
        let service = http::stack(
            state.clone(),
            context.clone(),
            &routes,
            StackOptions {
                api: true,
                operational: settings.server.public_operational_routes,
                profiling: false,
                admission: admission.clone(),
                cors: http::cors_layer(&settings.cors),
                request_timeout: settings.server.request_timeout,
                document: Arc::clone(&document),
            },
        );
        let grpc = settings.grpc.enabled.then(|| {
            grpc::stack(
                state.clone(),
                RpcContextLayer::new(RpcContextConfig {
                    metrics: Arc::clone(&metrics),
                    access_log: access_log.clone(),
                    trusted_proxies: settings.rate_limit.trusted_proxies.clone(),
                    methods: grpc::methods(),
                    unknown: grpc::unknown_method(),
                }),
                admission.clone(),
                settings.server.request_timeout,
                settings.grpc.reflection,
            )
        });
        let service = Protocols::new(service, grpc);
        // The admin listener: health, metrics, documents and profiling, never the API.
        let admin_service = admin_listener.as_ref().map(|_| {
            http::stack(
                state.clone(),
                admin_context,
                &routes,
                StackOptions {
                    api: false,
                    operational: true,
                    profiling: settings.server.profiling,
                    admission: Admission::default(),
                    cors: None,
                    request_timeout: settings.server.request_timeout,
                    document,
                },
            )
        });
        Ok(Application {
            listener,
            admin_listener,
            service,
            admin_service,
            state,
            admission,
            access_log,
            tls,
            kernel: self.kernel,
            pending_store,
            job_metrics: job_metrics(&metrics),
            hangups,
        })
    }
}

impl Application {
    /// Start from settings with the default checks and workload.
    pub fn builder(settings: Settings) -> ApplicationBuilder {
        ApplicationBuilder {
            settings,
            health: HealthRegistry::default(),
            kernel: crate::pool::intensive_digest,
            routes: http::routes::builtin(),
        }
    }

    /// Shorthand for `builder(settings).build()`.
    pub async fn build(settings: Settings) -> std::io::Result<Application> {
        Self::builder(settings).build().await
    }

    /// The bound API address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The bound admin address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The complete service (routes and layers), for driving without a socket.
    pub fn service(&self) -> Service {
        self.service.clone()
    }

    /// The public listener's certificate, when serving TLS.
    pub fn tls_cert(&self) -> Option<Arc<ReloadableCert>> {
        self.tls.as_ref().map(|t| Arc::clone(&t.cert))
    }

    /// Shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves, then drain: readiness turns 503 at once, listeners
    /// close, in-flight requests and queued jobs finish within the shutdown timeout. A TLS
    /// certificate is reloaded on SIGHUP and when its files change.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<Summary> {
        let settings = Arc::clone(&self.state.settings);
        let limits = ConnectionLimits {
            max_connections: settings.server.max_connections,
            header_read_timeout: settings.server.header_read_timeout,
            keep_alive_timeout: settings.server.keep_alive_timeout,
            max_header_bytes: settings.server.max_header_bytes,
        };
        tracing::info!(
            address = %self.local_addr(),
            admin_address = ?self.admin_addr(),
            workers = self.state.pool.status().workers,
            queue_size = settings.pool.queue_size,
            environment = settings.environment.as_str(),
            version = crate::VERSION,
            "listening"
        );
        let cert = self.tls_cert();
        // Tasks that run until the end.
        let background = [
            Some(tokio::spawn(reload_on_hangup(self.hangups, cert.clone()))),
            cert.map(|cert| tokio::spawn(tls::reload_when_changed(cert, CERT_CHECK_INTERVAL))),
            self.state
                .overload
                .clone()
                .filter(|_| !settings.admission.runtime_delay.is_zero())
                .map(|o| tokio::spawn(probe_runtime_delay(o))),
        ];
        let errors = connection_errors(&self.state.metrics);
        let server = Server::start(
            self.listener,
            self.service,
            limits,
            self.tls,
            errors.clone(),
        );
        let admin = match (self.admin_listener, self.admin_service) {
            (Some(l), Some(s)) => Some(Server::start(l, s, limits, None, errors)),
            _ => None,
        };
        let upkeep = Upkeep::start(Arc::clone(&self.state.metrics), self.admission.clone());
        // OTLP metrics: the scrape's exposition, pushed every interval.
        let otlp_metrics = (settings.otel.metrics_exporter == SignalExporter::Otlp).then(|| {
            let (endpoint, protocol) = settings.otel.signal_endpoint("metrics");
            let state = self.state.clone();
            otlp_metrics::Exporter {
                endpoint,
                protocol,
                interval: Duration::from_millis(settings.otel.metric_export_interval),
                timeout: Duration::from_millis(settings.otel.metric_export_timeout),
                resource: telemetry::resource_attributes(&settings.otel, settings.environment),
            }
            .start(move || state.render_metrics())
        });
        let runner = tokio::spawn(run_jobs(
            self.state.clone(),
            self.kernel,
            self.pending_store,
            self.job_metrics,
            crate::startup_code::release,
        ));

        shutdown.await;
        let started = Instant::now();
        let timeout = settings.server.shutdown_timeout;
        self.state.readiness.start_draining();
        // No job is claimed from now on: what this replica can no longer run stays queued.
        // Without a store yet there is nothing in flight: stop trying to open it.
        match self.state.jobs.get() {
            Some(jobs) => jobs.drain(),
            None => runner.abort(),
        }
        // Streams are told first, so each gets its 1001 before its connection is cut.
        self.state.streams.close_all(Duration::from_secs(1)).await;
        tracing::info!(timeout = ?timeout, "shutting down: draining connections and jobs");
        let mut drained = server.shutdown(timeout).await;
        let pool = self.state.pool.clone();
        let remaining = timeout.saturating_sub(started.elapsed());
        drained &= tokio::task::spawn_blocking(move || pool.shutdown(remaining))
            .await
            .unwrap_or(false);
        // The jobs the pool ran record how they ended, and unstarted claims go back.
        let remaining = timeout.saturating_sub(started.elapsed());
        let runner_abort = runner.abort_handle();
        drained &= tokio::time::timeout(remaining, runner).await.is_ok();
        runner_abort.abort();
        if let Some(admin) = admin {
            admin.shutdown(Duration::from_millis(100)).await;
        }
        drop(upkeep);
        if let Some(export) = otlp_metrics {
            // The last export: what happened since the previous interval, drain included.
            let limit = Duration::from_millis(settings.otel.metric_export_timeout);
            let _ = tokio::time::timeout(limit, export.shutdown()).await;
        }
        for task in background.into_iter().flatten() {
            task.abort();
        }
        if let Some(log) = &self.access_log {
            log.flush();
        }
        let stats = self.state.metrics.stats();
        let summary = Summary {
            total_requests: stats.total_requests,
            success_count: stats.success_count,
            error_count: stats.error_count,
            drained,
        };
        tracing::info!(
            total_requests = stats.total_requests,
            success_count = stats.success_count,
            error_count = stats.error_count,
            rate_limited_count = stats.rate_limited_count,
            overloaded_count = stats.overloaded_count,
            drained,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stopped"
        );
        Ok(summary)
    }
}

/// At each SIGHUP, reload what can be reloaded without a restart, and say what was.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    cert: Option<Arc<ReloadableCert>>,
) {
    while hangups.recv().await.is_some() {
        match &cert {
            Some(cert) => match cert.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate reload failed; keeping the old one")
                }
            },
            None => tracing::info!(
                "SIGHUP: nothing to reload (no TLS certificate); the configuration is read at start"
            ),
        }
    }
}

/// Periodic maintenance — fold buffered histogram samples into buckets (every 250 ms: the
/// samples wait in memory until then, 8 bytes a request, so at 100k requests/s a second's
/// worth is most of a megabyte of the peak RSS), forget idle rate-limit buckets (every
/// second) — on its own thread: folding the samples takes long enough that doing it on a
/// runtime thread would stall the requests queued behind it. Stops when dropped.
struct Upkeep(Option<std::sync::mpsc::Sender<()>>);

impl Upkeep {
    const FOLD_EVERY: Duration = Duration::from_millis(250);
    const HOUSEKEEPING_EVERY: u32 = 4;

    fn start(metrics: Arc<Metrics>, admission: Admission) -> Upkeep {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let _ = std::thread::Builder::new()
            .name("floodgate-upkeep".into())
            .spawn(move || {
                let mut tick = 0u32;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::FOLD_EVERY)
                {
                    metrics.run_upkeep();
                    tick = tick.wrapping_add(1);
                    if tick.is_multiple_of(Self::HOUSEKEEPING_EVERY) {
                        admission.housekeeping();
                    }
                }
            });
        Upkeep(Some(stop))
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.take();
    }
}

fn class_metrics(metrics: &Metrics, class: Class) -> ClassMetrics {
    let c = ("class", class.as_str());
    ClassMetrics {
        limit: metrics.labelled_gauge(m::ADMISSION_LIMIT, &[c]),
        in_flight: metrics.labelled_gauge(m::ADMISSION_IN_FLIGHT, &[c]),
        baseline_seconds: metrics.labelled_gauge(m::ADMISSION_BASELINE, &[c]),
        refusals: Cause::ALL
            .map(|cause| metrics.counter(m::ADMISSION_REFUSALS, &[c, ("cause", cause.as_str())])),
        pauses: metrics.counter(m::ADMISSION_PAUSES, &[c]),
    }
}

fn pool_metrics(metrics: &Metrics) -> PoolMetrics {
    let outcome = |o: &'static str| metrics.counter(m::JOBS_TOTAL, &[("outcome", o)]);
    PoolMetrics {
        completed: outcome("completed"),
        rejected_full: outcome("rejected_full"),
        cancelled: outcome("cancelled"),
        failed: outcome("failed"),
        queue_wait_seconds: metrics.histogram(m::JOB_QUEUE_WAIT),
        duration_seconds: metrics.histogram(m::JOB_DURATION),
    }
}

/// Opens the jobs database first if it was away at start, then runs the jobs. `started` is
/// called when start-up is over: once the jobs ran their first round, or at once when there
/// are no jobs here or their database is away.
async fn run_jobs(
    state: AppState,
    kernel: Kernel,
    pending: bool,
    metrics: JobMetrics,
    started: fn(),
) {
    let settings = &state.settings;
    if pending {
        started();
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let opened = JobStore::open(
                &settings.database,
                store_metrics(&state.metrics),
                BreakerConfig::from(&settings.database.breaker),
            )
            .await;
            if let Ok(store) = opened {
                if state.readiness.is_draining() {
                    return;
                }
                tracing::info!("jobs database reachable; API v2 is available");
                let _ = state
                    .jobs
                    .set(Jobs::new(store, settings.jobs.clone(), metrics));
                break;
            }
        }
    }
    let Some(jobs) = state.jobs.get().cloned() else {
        started();
        return;
    };
    let max_running = settings
        .jobs
        .effective_max_running(state.pool.status().workers);
    // Already called when the database was away at start.
    let started = if pending { || () } else { started };
    // Under overload, job execution yields first: the runner asks the adaptive limits
    // before each job starts.
    let gate = state
        .overload
        .as_ref()
        .map_or_else(StartGate::open, |o| o.start_gate());
    jobs.run(state.pool.clone(), kernel, max_running, gate, started)
        .await;
}

fn store_metrics(metrics: &Metrics) -> StoreMetrics {
    let op =
        |o: &'static str| metrics.labelled_histogram(m::DB_QUERY_DURATION, &[("operation", o)]);
    StoreMetrics {
        breaker: breaker_metrics(metrics, "database"),
        acquire_wait: metrics.histogram(m::DB_ACQUIRE_WAIT),
        insert: op("insert"),
        get: op("get"),
        list: op("list"),
        cancel: op("cancel"),
        claim: op("claim"),
        renew: op("renew"),
        finish: op("finish"),
        tidy: op("tidy"),
    }
}

fn breaker_metrics(metrics: &Metrics, dependency: &'static str) -> BreakerMetrics {
    let dep = ("dependency", dependency);
    let to = |state: &'static str| metrics.counter(m::CIRCUIT_TRANSITIONS, &[dep, ("to", state)]);
    let breaker = BreakerMetrics {
        state: metrics.labelled_gauge(m::CIRCUIT_STATE, &[dep]),
        up: metrics.labelled_gauge(m::DEPENDENCY_UP, &[dep]),
        to_closed: to("closed"),
        to_half_open: to("half_open"),
        to_open: to("open"),
    };
    // Not known to be up until a call has succeeded.
    breaker.up.set(0.0);
    breaker
}

fn job_metrics(metrics: &Metrics) -> JobMetrics {
    let finished = |s: &'static str| metrics.counter(m::JOBS_FINISHED, &[("status", s)]);
    JobMetrics {
        succeeded: finished("succeeded"),
        failed: finished("failed"),
        cancelled: finished("cancelled"),
        discarded: finished("discarded"),
        retried: metrics.counter(m::JOB_RETRIES, &[]),
        runner_restarts: metrics.counter(m::JOB_RUNNER_RESTARTS, &[]),
        attempts: metrics.histogram(m::JOB_ATTEMPTS),
        by_status: JobStatus::ACTIVE
            .map(|s| metrics.labelled_gauge(m::JOBS, &[("status", s.as_str())])),
        oldest_queued_age: metrics.gauge(m::JOBS_OLDEST_QUEUED_AGE),
        db_idle: metrics.labelled_gauge(m::DB_CONNECTIONS, &[("state", "idle")]),
        db_used: metrics.labelled_gauge(m::DB_CONNECTIONS, &[("state", "used")]),
    }
}

fn redis_metrics(metrics: &Metrics) -> RedisMetrics {
    let dep = ("dependency", "redis");
    let call = |op: &'static str| {
        metrics.labelled_histogram(m::DEPENDENCY_DURATION, &[dep, ("operation", op)])
    };
    RedisMetrics {
        breaker: breaker_metrics(metrics, "redis"),
        rate_limit: call("rate_limit"),
        cache_get: call("cache_get"),
        cache_set: call("cache_set"),
    }
}

fn decisions(metrics: &Metrics) -> Decisions {
    let count = |backend: &'static str, outcome: &'static str| {
        metrics.counter(
            m::RATE_LIMIT_DECISIONS,
            &[("backend", backend), ("outcome", outcome)],
        )
    };
    Decisions {
        local_allowed: count("local", "allowed"),
        local_limited: count("local", "limited"),
        redis: RedisDecisions {
            allowed: count("redis", "allowed"),
            limited: count("redis", "limited"),
            fallback: count("redis", "fallback"),
        },
    }
}

/// The headers of a deprecated prefix: `Deprecation` (RFC 9745, `@<unix seconds>`),
/// `Sunset` (RFC 8594, an HTTP date) and a `Link` to the successor. Validated at load.
fn deprecation_headers(
    d: &crate::config::DeprecationSettings,
) -> (String, Vec<(::http::HeaderName, ::http::HeaderValue)>) {
    let time = |t: &str| humantime::parse_rfc3339(t).unwrap_or(std::time::UNIX_EPOCH);
    let since = time(&d.since)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |s| s.as_secs());
    let mut headers = vec![(
        ::http::HeaderName::from_static("deprecation"),
        ::http::HeaderValue::from_str(&format!("@{since}")).expect("digits"),
    )];
    if let Some(sunset) = &d.sunset {
        if let Ok(v) = ::http::HeaderValue::from_str(&httpdate::fmt_http_date(time(sunset))) {
            headers.push((::http::HeaderName::from_static("sunset"), v));
        }
    }
    if let Some(successor) = &d.successor {
        let link = format!("<{successor}>; rel=\"successor-version\"");
        if let Ok(v) = ::http::HeaderValue::from_str(&link) {
            headers.push((::http::header::LINK, v));
        }
    }
    (d.prefix.clone(), headers)
}

fn connection_errors(metrics: &Metrics) -> ConnectionErrors {
    let kind = |k: &'static str| metrics.counter(m::CONNECTION_ERRORS, &[("kind", k)]);
    ConnectionErrors {
        malformed: kind("malformed"),
        too_large: kind("too_large"),
        header_timeout: kind("header_timeout"),
    }
}

/// Each connection is a descriptor, and the usual soft limit (1024) is far below
/// `server.max_connections`: raise it to the hard limit, as Go's runtime does at start.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + 64 => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below server.max_connections: connections beyond it cannot be accepted"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(4096)
}
