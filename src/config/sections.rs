//! The settings tree's sections, their defaults and derived values.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{duration, listen_addr, opt_listen_addr};
use super::Environment;

/// Listener, timeouts and connection limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// `:8080`, `8080`, `127.0.0.1:0` or `[::1]:8080`.
    #[serde(with = "listen_addr")]
    pub address: SocketAddr,
    /// Optional second listener for health, readiness, metrics, the OpenAPI document and
    /// profiling (`ADMIN_PORT`).
    #[serde(with = "opt_listen_addr")]
    pub admin_address: Option<SocketAddr>,
    /// Serve health, metrics and the API documents on the public listener too. Turn off
    /// with an admin listener so the public port exposes only the API.
    pub public_operational_routes: bool,
    /// `GET /debug/pprof/profile` on the admin listener.
    pub profiling: bool,
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// Time a client has to send a complete request head (slow-loris guard).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this long.
    #[serde(with = "duration")]
    pub keep_alive_timeout: Duration,
    /// Connections beyond this wait in the kernel's accept backlog.
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Request heads larger than this get 431.
    pub max_header_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_address: None,
            public_operational_routes: true,
            profiling: false,
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Worker pool size and queue bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// 0 means the available parallelism (cgroup-aware).
    pub workers: usize,
    pub queue_size: usize,
    /// Nice value (0–19) of worker threads; above 0 the async runtime wins the CPU from jobs.
    pub worker_niceness: i32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            workers: 0,
            queue_size: 10_000,
            worker_niceness: 0,
        }
    }
}

impl PoolSettings {
    /// The worker count actually used.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The intensive endpoint's workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeSettings {
    pub intensive_rounds: u32,
}

impl Default for ComputeSettings {
    fn default() -> Self {
        Self {
            intensive_rounds: 10_000,
        }
    }
}

/// Token-bucket admission control.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub requests_per_second: u32,
    /// Bucket size; 0 means one second's worth of requests.
    pub burst: u32,
    /// One bucket per client address instead of one for the whole service.
    pub per_client: bool,
    /// Peers whose `X-Forwarded-For` is believed when keying per client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Where the buckets live: this process, or Redis (one limit across replicas).
    pub backend: RateLimitBackend,
    /// What the Redis backend does while Redis is unavailable.
    pub redis_fallback: RedisFallback,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 100_000,
            burst: 0,
            per_client: false,
            trusted_proxies: Vec::new(),
            backend: RateLimitBackend::Local,
            redis_fallback: RedisFallback::Local,
        }
    }
}

/// Where rate-limit buckets live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// In this process: each replica has its own limit.
    #[default]
    Local,
    /// In Redis: one limit for every replica.
    Redis,
}

/// The limiter's decision while Redis is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisFallback {
    /// A local bucket with the same quota (per replica).
    #[default]
    Local,
    /// Admit everything.
    Allow,
    /// Refuse everything (429).
    Deny,
}

/// Where cached intensive results live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// In this process.
    #[default]
    Memory,
    /// In Redis: a result computed on one replica is a hit on every other.
    Redis,
}

/// The shared Redis (rate limits and cache across replicas). Unset `url`: no Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    pub url: Option<String>,
    /// A file holding the password (kept out of the URL).
    pub password_file: Option<PathBuf>,
    /// Prefix of every key floodgate writes.
    pub key_prefix: String,
    /// Deadline of each call.
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub breaker: BreakerSettings,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            key_prefix: "floodgate:".to_owned(),
            timeout: Duration::from_millis(20),
            breaker: BreakerSettings::default(),
        }
    }
}

/// The circuit breaker in front of a dependency.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open when at least this share of the window's calls failed...
    pub failure_ratio: f64,
    /// ...once the window holds at least this many calls.
    pub min_calls: u32,
    /// Or open after this many failures in a row (a hard outage).
    pub consecutive_failures: u32,
    #[serde(with = "duration")]
    pub window: Duration,
    /// How long it stays open before one probe call is let through.
    #[serde(with = "duration")]
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_calls: 20,
            consecutive_failures: 5,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }
}

impl RateLimitSettings {
    /// The bucket size actually used.
    pub fn effective_burst(&self) -> u32 {
        if self.burst == 0 {
            self.requests_per_second
        } else {
            self.burst
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Application log and access log.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: Option<String>,
    /// Defaults to JSON in production and pretty in development.
    pub format: Option<LogFormat>,
    /// Disable to drop the per-request line.
    pub access_log: Option<bool>,
    /// Write the access log here instead of standard output.
    pub access_log_path: Option<PathBuf>,
}

impl LogSettings {
    pub fn effective_level(&self) -> &str {
        self.level.as_deref().unwrap_or("info")
    }
    pub fn effective_format(&self, env: Environment) -> LogFormat {
        self.format.unwrap_or(match env {
            Environment::Production => LogFormat::Json,
            Environment::Development => LogFormat::Pretty,
        })
    }
    pub fn access_log_enabled(&self) -> bool {
        self.access_log.unwrap_or(true)
    }
}

/// OTLP wire protocol. `http/protobuf` is the OpenTelemetry specification's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Where a signal other than traces goes, by its `OTEL_METRICS_EXPORTER` /
/// `OTEL_LOGS_EXPORTER` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignalExporter {
    /// Not exported (metrics stay on the Prometheus endpoint, logs on stdout).
    #[default]
    None,
    Otlp,
}

/// The trace sampler, by its `OTEL_TRACES_SAMPLER` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    #[default]
    ParentbasedTraceIdRatio,
}

impl SamplerKind {
    /// Every sampler with its name: the one list both parsing and messages use.
    pub const ALL: [(&'static str, SamplerKind); 6] = [
        ("always_on", SamplerKind::AlwaysOn),
        ("always_off", SamplerKind::AlwaysOff),
        ("traceidratio", SamplerKind::TraceIdRatio),
        ("parentbased_always_on", SamplerKind::ParentbasedAlwaysOn),
        ("parentbased_always_off", SamplerKind::ParentbasedAlwaysOff),
        (
            "parentbased_traceidratio",
            SamplerKind::ParentbasedTraceIdRatio,
        ),
    ];
}

impl From<SamplerKind> for &'static str {
    fn from(kind: SamplerKind) -> &'static str {
        SamplerKind::ALL
            .iter()
            .find(|(_, k)| *k == kind)
            .map_or("parentbased_traceidratio", |(name, _)| name)
    }
}

impl TryFrom<String> for SamplerKind {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let name = name.trim();
        SamplerKind::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                let names: Vec<&str> = SamplerKind::ALL.iter().map(|(n, _)| *n).collect();
                format!("`{name}` is not a sampler; use one of {}", names.join(", "))
            })
    }
}

/// OTLP export: traces, and, when asked for, metrics and logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// Export spans; also turned on by `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`.
    pub enabled: bool,
    /// Base endpoint (`http://collector:4317` for gRPC, `:4318` for HTTP).
    pub endpoint: Option<String>,
    /// Full traces URL, used as-is (HTTP) or as the gRPC endpoint.
    pub traces_endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    /// The traces' protocol, when not `protocol`.
    pub traces_protocol: Option<OtlpProtocol>,
    /// `otlp` pushes the Prometheus endpoint's instruments over OTLP too.
    pub metrics_exporter: SignalExporter,
    /// Full metrics URL, used as-is (HTTP) or as the gRPC endpoint.
    pub metrics_endpoint: Option<String>,
    pub metrics_protocol: Option<OtlpProtocol>,
    /// Milliseconds between metric exports (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub metric_export_interval: u64,
    /// Milliseconds one metric export may take (`OTEL_METRIC_EXPORT_TIMEOUT`).
    pub metric_export_timeout: u64,
    /// `otlp` sends log records (the log lines and access-log lines) over OTLP too.
    pub logs_exporter: SignalExporter,
    /// Full logs URL, used as-is (HTTP) or as the gRPC endpoint.
    pub logs_endpoint: Option<String>,
    pub logs_protocol: Option<OtlpProtocol>,
    pub service_name: String,
    /// `key=value,key=value`, added to the resource.
    pub resource_attributes: Option<String>,
    pub sampler: SamplerKind,
    pub sampler_arg: f64,
    /// Traces started per second at most, whatever the sampler (and the caller's
    /// `traceparent`) says, so a span's cost cannot grow with the load; 0 for no cap.
    pub max_traces_per_second: u32,
    /// Spans buffered for export; beyond it spans are dropped and counted.
    pub max_queue_size: usize,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            traces_endpoint: None,
            protocol: OtlpProtocol::default(),
            traces_protocol: None,
            metrics_exporter: SignalExporter::None,
            metrics_endpoint: None,
            metrics_protocol: None,
            metric_export_interval: 60_000,
            metric_export_timeout: 30_000,
            logs_exporter: SignalExporter::None,
            logs_endpoint: None,
            logs_protocol: None,
            service_name: "floodgate".to_owned(),
            resource_attributes: None,
            sampler: SamplerKind::default(),
            sampler_arg: 1.0,
            max_traces_per_second: 1000,
            max_queue_size: 2048,
        }
    }
}

impl OtelSettings {
    /// Whether spans are exported at all.
    pub fn exporting(&self) -> bool {
        self.enabled || self.endpoint.is_some() || self.traces_endpoint.is_some()
    }

    /// The endpoint and protocol of `signal` (`traces`, `metrics`, `logs`): its own URL used
    /// as is, else the base endpoint with `/v1/<signal>` for HTTP, else the protocol's
    /// default port on localhost.
    pub fn signal_endpoint(&self, signal: &str) -> (String, OtlpProtocol) {
        let (own, protocol) = match signal {
            "metrics" => (&self.metrics_endpoint, self.metrics_protocol),
            "logs" => (&self.logs_endpoint, self.logs_protocol),
            _ => (&self.traces_endpoint, self.traces_protocol),
        };
        let protocol = protocol.unwrap_or(self.protocol);
        if let Some(url) = own {
            return (url.clone(), protocol);
        }
        let url = match protocol {
            OtlpProtocol::Grpc => self
                .endpoint
                .clone()
                .unwrap_or_else(|| "http://localhost:4317".to_owned()),
            OtlpProtocol::HttpProtobuf => {
                let base = self
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "http://localhost:4318".to_owned());
                format!("{}/v1/{signal}", base.trim_end_matches('/'))
            }
        };
        (url, protocol)
    }
}

/// HTTPS on the public listener (HTTP/1.1 and HTTP/2 by ALPN). On when both paths are set;
/// the files are read again when they change and on SIGHUP.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether the public listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some() || self.key_path.is_some()
    }
}

/// Authentication of the compute API (health and metrics stay open).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// SHA-256 hashes (hex) of accepted API keys (`API_KEY_HASHES`, comma-separated).
    /// Keys themselves never appear in configuration.
    pub api_key_hashes: Vec<String>,
    /// A file of SHA-256 hashes, one per line, optionally `name:hash`; `#` starts a comment.
    pub api_keys_file: Option<PathBuf>,
    /// HS256 shared secret, read from this file (trailing newline ignored).
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// JSON Web Key Set with RS256/ES256 public keys.
    pub jwt_jwks_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub jwt_issuer: Option<String>,
    /// Required `aud`, when set.
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub jwt_leeway: Duration,
    /// A scope every token must carry (`scope` or `scp` claim); missing gives 403.
    pub jwt_required_scope: Option<String>,
    /// Principals (`key:<name>`, `jwt:<sub>`) that see and cancel every principal's jobs, as
    /// a token with the `jobs:admin` scope does; others see only their own.
    pub admin_principals: Vec<String>,
    /// Failed authentications allowed per client address and minute, sustained; past them
    /// (and the burst) the address gets 429 without its credential being checked.
    pub failed_attempts_per_minute: u32,
    /// Failed authentications an address may make at once before the rate applies.
    pub failed_attempts_burst: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            api_key_hashes: Vec::new(),
            api_keys_file: None,
            jwt_hs256_secret_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: Duration::from_secs(60),
            jwt_required_scope: None,
            admin_principals: Vec::new(),
            failed_attempts_per_minute: 60,
            failed_attempts_burst: 10,
        }
    }
}

impl AuthSettings {
    /// Whether JWTs are accepted.
    pub fn jwt_configured(&self) -> bool {
        self.jwt_hs256_secret_file.is_some() || self.jwt_jwks_file.is_some()
    }
}

/// Cross-origin requests; off while no origin is listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "duration")]
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// In-memory cache of intensive results, keyed by `(number, rounds)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Entries kept in memory (the memory backend).
    pub max_entries: u64,
    #[serde(with = "duration")]
    pub ttl: Duration,
    pub backend: CacheBackend,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_entries: 100_000,
            ttl: Duration::from_secs(300),
            backend: CacheBackend::Memory,
        }
    }
}

/// Adaptive admission: a concurrency limit per class of work, computed from measured
/// latency, with the fixed limits (the pool's queue, `server.max_connections`,
/// `jobs.max_running`) as hard ceilings. See docs/overload.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSettings {
    /// Adapt the limits; off, only the fixed limits apply (what floodgate did before).
    pub adaptive: bool,
    /// Queueing a class's calls may add to its no-load latency before its limit shrinks.
    #[serde(with = "duration")]
    pub target_delay: Duration,
    /// How often each class's limit is recomputed from the latencies measured meanwhile.
    #[serde(with = "duration")]
    pub window: Duration,
    /// How long the lowest latency seen (the no-load latency) is remembered: a machine that
    /// slows down is taken into account within this long.
    #[serde(with = "duration")]
    pub baseline_window: Duration,
    /// The lowest a class's limit goes; 0 means the worker count.
    pub min_limit: usize,
    /// How late the async runtime may run a ready task (what every request waits before it
    /// is read, the fast calls' queue) before the lowest class with calls in flight is shed
    /// for the fast calls; 0 turns this off.
    #[serde(with = "duration")]
    pub runtime_delay: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            adaptive: true,
            target_delay: Duration::from_millis(5),
            window: Duration::from_millis(100),
            baseline_window: Duration::from_secs(10),
            min_limit: 0,
            runtime_delay: Duration::from_millis(5),
        }
    }
}

impl AdmissionSettings {
    /// The floor actually used for `workers` worker threads.
    pub fn effective_min_limit(&self, workers: usize) -> usize {
        if self.min_limit > 0 {
            self.min_limit
        } else {
            workers.max(1)
        }
    }
}

/// Durable jobs (API v2) and the runner that executes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    pub enabled: bool,
    /// Largest `rounds` a job may ask for.
    pub max_rounds: u64,
    /// v2 jobs running at once in this replica; 0 means half the workers, at least 1, so the
    /// v1 API is never starved.
    pub max_running: usize,
    /// How long a claim holds before another replica may take the job over; renewed while
    /// the job runs.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Attempts a job gets; after the last one fails it is discarded.
    pub max_attempts: u32,
    /// The backoff before the second attempt; it doubles with each attempt after that.
    #[serde(with = "duration")]
    pub retry_backoff: Duration,
    /// The longest backoff between two attempts.
    #[serde(with = "duration")]
    pub retry_backoff_max: Duration,
    /// Largest body of `POST /api/v2/jobs:batch`.
    pub max_batch_bytes: usize,
    /// How often each replica's upkeep runs (rescue, purge, gauges); also how late a job is
    /// noticed at worst when the wake-up that announced it was lost.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Finished jobs are deleted after this long.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// How long an `Idempotency-Key` keeps returning its job.
    #[serde(with = "duration")]
    pub idempotency_ttl: Duration,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_rounds: 100_000_000,
            max_running: 0,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            max_batch_bytes: 1 << 20,
            retention: Duration::from_secs(24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl JobsSettings {
    /// The running cap actually used for `workers` worker threads.
    pub fn effective_max_running(&self, workers: usize) -> usize {
        if self.max_running > 0 {
            self.max_running
        } else {
            (workers / 2).max(1)
        }
    }
}

/// The jobs database: `sqlite://PATH` (embedded, one replica) or `postgres://…`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    /// How long a query may wait for a connection before the request gets 503.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    pub breaker: BreakerSettings,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/floodgate-jobs.db".to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            breaker: BreakerSettings::default(),
        }
    }
}

/// The API's versions.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Prefixes marked deprecated: every response under one carries `Deprecation`
    /// (RFC 9745), and `Sunset` (RFC 8594) and a `Link` to the successor when given.
    pub deprecations: Vec<DeprecationSettings>,
}

/// One deprecated prefix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecationSettings {
    /// e.g. `/api/v1`.
    pub prefix: String,
    /// When it was deprecated (RFC 3339).
    pub since: String,
    /// When it will stop answering (RFC 3339).
    pub sunset: Option<String>,
    /// Where clients should move (e.g. `/api/v2`).
    pub successor: Option<String>,
}

/// The gRPC API, on the HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    /// Serve `floodgate.v1.ComputeService`, health and reflection to `application/grpc`
    /// requests; off, they get the REST API's 404/415 answers.
    pub enabled: bool,
    /// Server reflection (v1 and v1alpha), so tools can call without the proto file.
    pub reflection: bool,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            reflection: true,
        }
    }
}

/// Live streams (WebSocket, server-sent events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsSettings {
    /// Open API streams per replica (REST and gRPC `WatchJob`); beyond it, 503 before any
    /// upgrade (gRPC: `UNAVAILABLE`).
    pub max_connections: usize,
    /// Open operational streams per replica (`/status/stream`, gRPC health `Watch`), apart
    /// from the API's: they need no credential, so anonymous clients that fill this limit
    /// leave the API's places alone.
    pub max_operational_connections: usize,
    /// How often a WebSocket peer is pinged; one that has not answered by the next ping is
    /// closed.
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// Messages queued for a slow reader before it is closed with 1013.
    pub send_queue: usize,
}

impl Default for StreamsSettings {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            max_operational_connections: 100,
            ping_interval: Duration::from_secs(15),
            send_queue: 16,
        }
    }
}
