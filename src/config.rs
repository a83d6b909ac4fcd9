//! Typed, layered settings.
//!
//! Layers, lowest first: built-in defaults → `config/default.toml` → `config/<environment>.toml`
//! → the file given with `--config` → the documented environment variables (`SERVER_PORT`,
//! `WORKER_COUNT`, …, and the standard `OTEL_*` ones) → `FLOODGATE__SECTION__KEY`.
//! Nothing here imports from the rest of the crate: configuration is the root of the data flow.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use config::{Map, Source, Value, ValueKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The documented environment variables and the setting each one sets.
pub const ENV_ALIASES: &[(&str, &str)] = &[
    ("SERVER_PORT", "server.address"),
    ("REQUEST_TIMEOUT", "server.request_timeout"),
    ("SHUTDOWN_TIMEOUT", "server.shutdown_timeout"),
    ("WORKER_COUNT", "pool.workers"),
    ("QUEUE_SIZE", "pool.queue_size"),
    ("INTENSIVE_ROUNDS", "compute.intensive_rounds"),
    ("RATE_LIMIT", "rate_limit.requests_per_second"),
    ("LOG_LEVEL", "log.level"),
    ("ADMIN_PORT", "server.admin_address"),
    ("API_KEY_HASHES", "auth.api_key_hashes"),
    ("TLS_CERT_FILE", "tls.cert_path"),
    ("TLS_KEY_FILE", "tls.key_path"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel.endpoint"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel.traces_endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "otel.protocol"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "otel.protocol"),
    ("OTEL_SERVICE_NAME", "otel.service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "otel.resource_attributes"),
    ("OTEL_TRACES_SAMPLER", "otel.sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "otel.sampler_arg"),
];

/// Settings that are lists; their environment variables are comma-separated.
const LIST_SETTINGS: &[&str] = &[
    "rate_limit.trusted_proxies",
    "auth.api_key_hashes",
    "cors.allowed_origins",
];

/// Deployment environment; selects `config/<environment>.toml` and logging defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

impl Environment {
    /// Lower-case name, as used for the file name and the `deployment.environment` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

impl TryFrom<&str> for Environment {
    type Error = String;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Environment::Development),
            "production" | "prod" => Ok(Environment::Production),
            other => Err(format!(
                "`{other}` is not an environment; use `development` or `production`"
            )),
        }
    }
}

/// Every setting of the service.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Set from `ENVIRONMENT`; not read from files.
    #[serde(skip_deserializing)]
    pub environment: Environment,
    pub server: ServerSettings,
    pub pool: PoolSettings,
    pub compute: ComputeSettings,
    pub rate_limit: RateLimitSettings,
    pub log: LogSettings,
    pub otel: OtelSettings,
    pub tls: TlsSettings,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub cache: CacheSettings,
}

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
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            requests_per_second: 100_000,
            burst: 0,
            per_client: false,
            trusted_proxies: Vec::new(),
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

/// OTLP wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Trace export.
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
    pub service_name: String,
    /// `key=value,key=value`, added to the resource.
    pub resource_attributes: Option<String>,
    /// `parentbased_traceidratio` (default), `parentbased_always_on`, `always_on`, `always_off`, `traceidratio`, `parentbased_always_off`.
    pub sampler: String,
    pub sampler_arg: f64,
    /// Spans buffered for export; beyond it spans are dropped and counted.
    pub max_queue_size: usize,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            traces_endpoint: None,
            protocol: OtlpProtocol::Grpc,
            service_name: "floodgate".to_owned(),
            resource_attributes: None,
            sampler: "parentbased_traceidratio".to_owned(),
            sampler_arg: 1.0,
            max_queue_size: 2048,
        }
    }
}

impl OtelSettings {
    /// Whether spans are exported at all.
    pub fn exporting(&self) -> bool {
        self.enabled || self.endpoint.is_some() || self.traces_endpoint.is_some()
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
    pub max_entries: u64,
    #[serde(with = "duration")]
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_entries: 100_000,
            ttl: Duration::from_secs(300),
        }
    }
}

/// A setting that could not be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub setting: String,
    pub source: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid setting `{}` from {}: value `{}`: {}",
            self.setting, self.source, self.value, self.reason
        )
    }
}

impl std::error::Error for SettingsError {}

/// Where settings come from, beyond the process environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Directory holding `default.toml` and `<environment>.toml`.
    pub config_dir: Option<PathBuf>,
    /// Extra file given with `--config`; must exist.
    pub config_file: Option<PathBuf>,
}

/// Environment-variable lookup, injectable so tests need not touch the real environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Settings {
    /// Load every layer using the process environment.
    pub fn load(opts: &LoadOptions) -> Result<Settings, SettingsError> {
        let vars: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(opts, &|k| vars.get(k).cloned(), &vars)
    }

    /// Load every layer with the given environment.
    pub fn load_from(
        opts: &LoadOptions,
        env: EnvLookup<'_>,
        all_vars: &BTreeMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let environment = match env("ENVIRONMENT") {
            Some(v) => Environment::try_from(v.as_str()).map_err(|reason| SettingsError {
                setting: "environment".into(),
                source: "environment variable ENVIRONMENT".into(),
                value: v.clone(),
                reason,
            })?,
            None => Environment::default(),
        };
        let dir = opts
            .config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("config"));
        let mut layers: Vec<(String, Box<dyn Source + Send + Sync>)> = Vec::new();
        for name in ["default", environment.as_str()] {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                layers.push((
                    format!("file {}", path.display()),
                    Box::new(config::File::from(path.as_path()).required(true)),
                ));
            }
        }
        if let Some(path) = &opts.config_file {
            if !path.is_file() {
                return Err(SettingsError {
                    setting: "--config".into(),
                    source: "the command line".into(),
                    value: path.display().to_string(),
                    reason: "no such file".into(),
                });
            }
            layers.push((
                format!("file {}", path.display()),
                Box::new(config::File::from(path.as_path()).required(true)),
            ));
        }
        layers.push((
            "documented environment variables".into(),
            Box::new(AliasEnv::from_lookup(env)),
        ));
        layers.push((
            "FLOODGATE__* environment variables".into(),
            Box::new(
                config::Environment::with_prefix("FLOODGATE")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("rate_limit.trusted_proxies")
                    .with_list_parse_key("auth.api_key_hashes")
                    .with_list_parse_key("cors.allowed_origins")
                    .try_parsing(true)
                    .source(Some(
                        all_vars
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )),
            ),
        ));

        let mut builder = config::Config::builder();
        for (_, source) in &layers {
            builder = builder.add_source(Layered(source.clone_into_box()));
        }
        let merged = builder.build().map_err(|e| from_config_error(e, &layers))?;
        let mut settings: Settings = merged
            .try_deserialize()
            .map_err(|e| from_config_error(e, &layers))?;
        settings.environment = environment;
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            settings.otel.enabled = false;
            settings.otel.endpoint = None;
            settings.otel.traces_endpoint = None;
        }
        settings
            .validate()
            .map_err(|(key, value, reason)| SettingsError {
                source: origin_of(&key, &layers),
                setting: key,
                value,
                reason,
            })?;
        Ok(settings)
    }

    /// Semantic checks that types alone cannot express.
    fn validate(&self) -> Result<(), (String, String, String)> {
        fn check(
            ok: bool,
            key: &str,
            value: impl ToString,
            reason: &str,
        ) -> Result<(), (String, String, String)> {
            if ok {
                Ok(())
            } else {
                Err((key.to_owned(), value.to_string(), reason.to_owned()))
            }
        }
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        check(
            self.pool.queue_size >= 1,
            "pool.queue_size",
            self.pool.queue_size,
            "must be at least 1",
        )?;
        check(
            self.pool.workers <= 4096,
            "pool.workers",
            self.pool.workers,
            "must be at most 4096 (0 = one per CPU)",
        )?;
        check(
            self.rate_limit.requests_per_second >= 1,
            "rate_limit.requests_per_second",
            self.rate_limit.requests_per_second,
            "must be at least 1 (set rate_limit.enabled = false to turn the limiter off)",
        )?;
        check(
            self.compute.intensive_rounds >= 1,
            "compute.intensive_rounds",
            self.compute.intensive_rounds,
            "must be at least 1",
        )?;
        for (key, value) in [
            ("server.request_timeout", &self.server.request_timeout),
            ("server.shutdown_timeout", &self.server.shutdown_timeout),
            (
                "server.header_read_timeout",
                &self.server.header_read_timeout,
            ),
            ("server.keep_alive_timeout", &self.server.keep_alive_timeout),
        ] {
            check(!value.is_zero(), key, d(value), "must be longer than zero")?;
        }
        check(
            self.server.max_connections >= 1,
            "server.max_connections",
            self.server.max_connections,
            "must be at least 1",
        )?;
        check(
            self.server.max_body_bytes >= 64,
            "server.max_body_bytes",
            self.server.max_body_bytes,
            "must be at least 64",
        )?;
        check(
            self.server.max_header_bytes >= 8192,
            "server.max_header_bytes",
            self.server.max_header_bytes,
            "must be at least 8192",
        )?;
        check(
            (0.0..=1.0).contains(&self.otel.sampler_arg),
            "otel.sampler_arg",
            self.otel.sampler_arg,
            "must be between 0 and 1",
        )?;
        check(
            matches!(
                self.otel.sampler.as_str(),
                "always_on"
                    | "always_off"
                    | "traceidratio"
                    | "parentbased_always_on"
                    | "parentbased_always_off"
                    | "parentbased_traceidratio"
            ),
            "otel.sampler",
            &self.otel.sampler,
            "must be one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio",
        )?;
        check(
            self.tls.cert_path.is_some() == self.tls.key_path.is_some(),
            if self.tls.cert_path.is_some() {
                "tls.key_path"
            } else {
                "tls.cert_path"
            },
            "",
            "TLS needs both tls.cert_path and tls.key_path",
        )?;
        check(
            !self.server.profiling || self.server.admin_address.is_some(),
            "server.profiling",
            true,
            "profiling is served only on the admin listener; set server.admin_address (ADMIN_PORT)",
        )?;
        check(
            self.server.public_operational_routes || self.server.admin_address.is_some(),
            "server.public_operational_routes",
            false,
            "health and metrics would be unreachable; set server.admin_address (ADMIN_PORT)",
        )?;
        for (i, hash) in self.auth.api_key_hashes.iter().enumerate() {
            // Never echo the value: a plaintext key pasted here must not reach the logs.
            check(
                is_sha256_hex(hash),
                &format!("auth.api_key_hashes[{i}]"),
                "(redacted)",
                "must be the SHA-256 of the key as 64 hex digits (e.g. `printf %s \"$KEY\" | sha256sum`)",
            )?;
        }
        check(
            !self.auth.enabled
                || !self.auth.api_key_hashes.is_empty()
                || self.auth.api_keys_file.is_some()
                || self.auth.jwt_configured(),
            "auth.enabled",
            true,
            "authentication needs API key hashes, an API keys file or a JWT key",
        )?;
        for origin in &self.cors.allowed_origins {
            check(
                origin == "*"
                    || ((origin.starts_with("http://") || origin.starts_with("https://"))
                        && !origin.ends_with('/')
                        && http::HeaderValue::from_str(origin).is_ok()),
                "cors.allowed_origins",
                origin,
                "must be `*` or an origin like `https://app.example.com` (scheme and host, no path)",
            )?;
        }
        check(
            self.cache.max_entries >= 1,
            "cache.max_entries",
            self.cache.max_entries,
            "must be at least 1",
        )?;
        check(
            !self.cache.ttl.is_zero(),
            "cache.ttl",
            d(&self.cache.ttl),
            "must be longer than zero",
        )?;
        if let Some(level) = &self.log.level {
            check(
                tracing_subscriber_filter_ok(level),
                "log.level",
                level,
                "is not a log filter (e.g. `info`, `debug`, `floodgate=debug,warn`)",
            )?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        let mut out = format!("environment = \"{}\"\n\n", self.environment.as_str());
        out.push_str(&toml_string(self));
        out
    }
}

fn toml_string(settings: &Settings) -> String {
    // The `config` crate pulls in a TOML parser but no serializer; serde_json → a small
    // TOML writer keeps the dependency list as it is.
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, body) in sections {
            if let serde_json::Value::Object(fields) = body {
                out.push_str(&format!("[{section}]\n"));
                for (k, v) in fields {
                    if !v.is_null() {
                        out.push_str(&format!("{k} = {v}\n"));
                    }
                }
                out.push('\n');
            }
        }
    }
    out
}

/// 64 hex digits: the form API keys are configured in.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tracing_subscriber_filter_ok(level: &str) -> bool {
    level.split(',').all(|directive| {
        let lvl = directive.rsplit('=').next().unwrap_or("").trim();
        matches!(
            lvl.to_ascii_lowercase().as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "off"
        ) || (directive.contains('=') && lvl.is_empty())
    })
}

/// A boxed layer, so one list of layers serves both building and provenance look-ups.
#[derive(Debug)]
struct Layered(Box<dyn Source + Send + Sync>);

impl Source for Layered {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(Layered(self.0.clone_into_box()))
    }
    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        self.0.collect()
    }
}

/// The documented variables as a `config` source, each value tagged with its variable's name
/// so that a type error names it.
#[derive(Debug, Clone)]
struct AliasEnv {
    values: Vec<(&'static str, &'static str, String)>,
}

impl AliasEnv {
    fn from_lookup(env: EnvLookup<'_>) -> Self {
        let mut values = Vec::new();
        for (var, key) in ENV_ALIASES {
            if let Some(v) = env(var) {
                values.push((*var, *key, v));
            }
        }
        Self { values }
    }
}

impl Source for AliasEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let mut root: Map<String, Value> = Map::new();
        for (var, key, raw) in &self.values {
            let origin = format!("environment variable {var}");
            let (section, field) = key.split_once('.').expect("aliases are section.key");
            let kind = if LIST_SETTINGS.contains(key) {
                ValueKind::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| Value::new(Some(&origin), ValueKind::String(v.to_owned())))
                        .collect(),
                )
            } else {
                ValueKind::String(raw.trim().to_owned())
            };
            let entry = root
                .entry(section.to_owned())
                .or_insert_with(|| Value::new(Some(&origin), ValueKind::Table(Map::new())));
            if let ValueKind::Table(table) = &mut entry.kind {
                table.insert(field.to_owned(), Value::new(Some(&origin), kind));
            }
        }
        Ok(root)
    }
}

/// The highest layer that sets `key` (dotted), with the value it sets.
fn lookup<'a>(
    key: &str,
    layers: &'a [(String, Box<dyn Source + Send + Sync>)],
) -> Option<(&'a str, Value)> {
    layers.iter().rev().find_map(|(name, source)| {
        let map = source.collect().ok()?;
        let mut parts = key.split('.');
        let mut current = map.get(parts.next()?).cloned();
        for part in parts {
            current = match current? {
                Value {
                    kind: ValueKind::Table(t),
                    ..
                } => t.get(part).cloned(),
                _ => None,
            };
        }
        current.map(|v| (name.as_str(), v))
    })
}

/// Which layer last set `key`, for error messages.
fn origin_of(key: &str, layers: &[(String, Box<dyn Source + Send + Sync>)]) -> String {
    match lookup(key, layers) {
        Some((name, v)) => v.origin().unwrap_or(name).to_owned(),
        None => "built-in defaults".to_owned(),
    }
}

/// The value `key` was given, for error messages.
fn value_of(key: &str, layers: &[(String, Box<dyn Source + Send + Sync>)]) -> String {
    lookup(key, layers)
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn from_config_error(
    err: config::ConfigError,
    layers: &[(String, Box<dyn Source + Send + Sync>)],
) -> SettingsError {
    use config::ConfigError as E;
    match err {
        E::Type {
            origin,
            unexpected,
            expected,
            key,
        } => {
            let setting = key.unwrap_or_else(|| "?".into());
            SettingsError {
                source: origin.unwrap_or_else(|| origin_of(&setting, layers)),
                setting,
                value: unexpected.to_string(),
                reason: format!("expected {expected}"),
            }
        }
        E::At { error, origin, key } => {
            let setting = key.unwrap_or_else(|| "?".into());
            let source = origin.unwrap_or_else(|| origin_of(&setting, layers));
            let inner = from_config_error(*error, layers);
            let value = if inner.value.is_empty() {
                value_of(&setting, layers)
            } else {
                inner.value
            };
            SettingsError {
                setting,
                source,
                value,
                reason: inner.reason,
            }
        }
        E::FileParse { uri, cause } => SettingsError {
            setting: "(file)".into(),
            source: format!("file {}", uri.unwrap_or_default()),
            value: String::new(),
            reason: cause.to_string(),
        },
        other => SettingsError {
            setting: "(settings)".into(),
            source: "configuration files or environment".into(),
            value: String::new(),
            reason: other.to_string(),
        },
    }
}

/// Parse `:8080`, `8080`, `host:port`, `[v6]:port`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let candidate = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        format!("0.0.0.0:{s}")
    } else {
        s.to_owned()
    };
    if let Ok(addr) = candidate.parse::<SocketAddr>() {
        return Ok(addr);
    }
    candidate
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| {
            format!("`{s}` is not a listen address; use `:8080`, `8080` or `127.0.0.1:8080`")
        })
}

/// Parse Go-style durations (`30s`, `1m30s`, `500ms`, `1h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. `30s`, `1m`, `500ms`"))
}

mod duration {
    use super::*;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(d)?;
        parse_duration(&raw).map_err(serde::de::Error::custom)
    }
}

mod listen_addr {
    use super::*;
    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let raw = String::deserialize(d)?;
        parse_listen_addr(&raw).map_err(serde::de::Error::custom)
    }
}

mod opt_listen_addr {
    use super::*;
    pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => s.serialize_str(&a.to_string()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        match raw.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(s) => parse_listen_addr(s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let opts = LoadOptions {
            config_dir: Some(PathBuf::from("/nonexistent")),
            config_file: None,
        };
        Settings::load_from(&opts, &|k| map.get(k).cloned(), &map)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.address, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.pool.queue_size, 10_000);
        assert_eq!(s.rate_limit.requests_per_second, 100_000);
        assert_eq!(s.server.request_timeout, Duration::from_secs(30));
        assert_eq!(s.compute.intensive_rounds, 10_000);
        assert_eq!(s.environment, Environment::Development);
    }

    #[test]
    fn documented_variables_apply() {
        let s = load(&[
            ("SERVER_PORT", ":3000"),
            ("WORKER_COUNT", "16"),
            ("QUEUE_SIZE", "20000"),
            ("RATE_LIMIT", "200000"),
            ("REQUEST_TIMEOUT", "1m30s"),
            ("SHUTDOWN_TIMEOUT", "500ms"),
            ("ENVIRONMENT", "production"),
        ])
        .unwrap();
        assert_eq!(s.server.address.port(), 3000);
        assert_eq!(s.pool.workers, 16);
        assert_eq!(s.pool.queue_size, 20_000);
        assert_eq!(s.rate_limit.requests_per_second, 200_000);
        assert_eq!(s.server.request_timeout, Duration::from_secs(90));
        assert_eq!(s.server.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(s.environment, Environment::Production);
    }

    #[test]
    fn nested_variables_win_over_documented_ones() {
        let s = load(&[("QUEUE_SIZE", "5"), ("FLOODGATE__POOL__QUEUE_SIZE", "7")]).unwrap();
        assert_eq!(s.pool.queue_size, 7);
    }

    #[test]
    fn bad_values_name_setting_source_and_value() {
        let e = load(&[("WORKER_COUNT", "abc")]).unwrap_err();
        assert_eq!(e.setting, "pool.workers");
        assert!(e.source.contains("WORKER_COUNT"), "{e}");
        assert!(e.to_string().contains("abc"), "{e}");

        let e = load(&[("QUEUE_SIZE", "0")]).unwrap_err();
        assert_eq!(e.setting, "pool.queue_size");
        assert!(e.source.contains("QUEUE_SIZE"), "{e}");
        assert_eq!(e.value, "0");

        let e = load(&[("RATE_LIMIT", "-1")]).unwrap_err();
        assert_eq!(e.setting, "rate_limit.requests_per_second");
        assert!(e.to_string().contains("-1"), "{e}");

        let e = load(&[("REQUEST_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(e.setting, "server.request_timeout");
        assert!(e.source.contains("REQUEST_TIMEOUT"), "{e}");

        let e = load(&[("ENVIRONMENT", "staging")]).unwrap_err();
        assert_eq!(e.setting, "environment");
    }

    #[test]
    fn listen_address_forms() {
        assert_eq!(
            parse_listen_addr(":8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(parse_listen_addr("9000").unwrap().port(), 9000);
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:81").unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert!(parse_listen_addr("nope").is_err());
    }

    #[test]
    fn go_style_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn unknown_keys_in_files_are_rejected() {
        let dir = std::env::temp_dir().join(format!("floodgate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("extra.toml");
        std::fs::write(&file, "[pool]\nqueue_sise = 3\n").unwrap();
        let opts = LoadOptions {
            config_dir: Some(dir.clone()),
            config_file: Some(file.clone()),
        };
        let empty = BTreeMap::new();
        let e = Settings::load_from(&opts, &|_| None, &empty).unwrap_err();
        assert!(e.to_string().contains("queue_sise"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
