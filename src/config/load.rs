//! The layers settings are read from, and where each value came from (for error messages
//! that name the setting, its source and its value).

use std::collections::BTreeMap;
use std::path::PathBuf;

use config::{Map, Source, Value, ValueKind};

use super::{Environment, Settings, SettingsError, SignalExporter};

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
    ("RATE_LIMIT_BACKEND", "rate_limit.backend"),
    ("CACHE_BACKEND", "cache.backend"),
    ("REDIS_URL", "redis.url"),
    ("DATABASE_URL", "database.url"),
    ("TLS_CERT_FILE", "tls.cert_path"),
    ("TLS_KEY_FILE", "tls.key_path"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel.endpoint"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel.traces_endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "otel.protocol"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "otel.traces_protocol"),
    ("OTEL_METRICS_EXPORTER", "otel.metrics_exporter"),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "otel.metrics_endpoint",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "otel.metrics_protocol",
    ),
    ("OTEL_METRIC_EXPORT_INTERVAL", "otel.metric_export_interval"),
    ("OTEL_METRIC_EXPORT_TIMEOUT", "otel.metric_export_timeout"),
    ("OTEL_LOGS_EXPORTER", "otel.logs_exporter"),
    ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "otel.logs_endpoint"),
    ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "otel.logs_protocol"),
    ("OTEL_SERVICE_NAME", "otel.service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "otel.resource_attributes"),
    ("OTEL_TRACES_SAMPLER", "otel.sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "otel.sampler_arg"),
];

/// Settings that are lists; their environment variables are comma-separated.
const LIST_SETTINGS: &[&str] = &[
    "rate_limit.trusted_proxies",
    "auth.api_key_hashes",
    "auth.admin_principals",
    "cors.allowed_origins",
];

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
        let mut nested = config::Environment::with_prefix("FLOODGATE")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(
                all_vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ));
        for key in LIST_SETTINGS {
            nested = nested.with_list_parse_key(key);
        }
        layers.push((NESTED.into(), Box::new(nested)));

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
            settings.otel.metrics_exporter = SignalExporter::None;
            settings.otel.logs_exporter = SignalExporter::None;
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
    // `auth.api_key_hashes[0]` is set wherever `auth.api_key_hashes` is.
    let key = key.split('[').next().unwrap_or(key);
    layers.iter().rev().find_map(|(name, source)| {
        let map = source.collect().ok()?;
        // Environment sources keep dotted keys flat (`cors.max_age`); files nest tables.
        if let Some(v) = map.get(key) {
            return Some((name.as_str(), v.clone()));
        }
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

/// The name of the nested-variables layer.
const NESTED: &str = "FLOODGATE__* environment variables";

/// Which layer last set `key`, for error messages; for the nested variables, the variable.
fn origin_of(key: &str, layers: &[(String, Box<dyn Source + Send + Sync>)]) -> String {
    match lookup(key, layers) {
        Some((NESTED, _)) => format!("environment variable {}", nested_variable(key)),
        Some((name, v)) => v.origin().unwrap_or(name).to_owned(),
        None => "built-in defaults".to_owned(),
    }
}

/// `cors.max_age` → `FLOODGATE__CORS__MAX_AGE`.
fn nested_variable(key: &str) -> String {
    let key = key.split('[').next().unwrap_or(key);
    format!("FLOODGATE__{}", key.to_ascii_uppercase().replace('.', "__"))
}

/// The origin the `config` crate gives every value of an environment source: too vague
/// to act on, so the layers are asked which variable it was.
const VAGUE_ORIGIN: &str = "the environment";

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
                source: origin
                    .filter(|o| o != VAGUE_ORIGIN)
                    .unwrap_or_else(|| origin_of(&setting, layers)),
                setting,
                value: unexpected.to_string(),
                reason: format!("expected {expected}"),
            }
        }
        E::At { error, origin, key } => {
            let mut setting = key.unwrap_or_else(|| "?".into());
            // An unknown key is reported at its section, with the origin of whichever layer
            // made the section: name the key itself, and blame the layer that set it.
            let source = match unknown_field(&error.to_string()) {
                Some(field) => {
                    setting = format!("{setting}.{field}");
                    origin_of(&setting, layers)
                }
                None => origin
                    .filter(|o| o != VAGUE_ORIGIN)
                    .unwrap_or_else(|| origin_of(&setting, layers)),
            };
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
        E::Message(message) if unknown_field(&message).is_some() => {
            let setting = unknown_field(&message).unwrap_or_default();
            let section = layers
                .iter()
                .rev()
                .find_map(|(_, source)| {
                    let map = source.collect().ok()?;
                    map.keys()
                        .find(|k| k.ends_with(&format!(".{setting}")))
                        .cloned()
                })
                .unwrap_or(setting);
            SettingsError {
                source: origin_of(&section, layers),
                value: value_of(&section, layers),
                setting: section,
                reason: message,
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

/// The key named by serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}
