//! Typed, layered settings.
//!
//! Layers, lowest first: built-in defaults → `config/default.toml` → `config/<environment>.toml`
//! → the file given with `--config` → the documented environment variables (`SERVER_PORT`,
//! `WORKER_COUNT`, …, and the standard `OTEL_*` ones) → `FLOODGATE__SECTION__KEY`.
//! Nothing here imports from the rest of the crate: configuration is the root of the data flow.
//!
//! [`sections`] holds the tree, [`load`] the layers and where each value came from,
//! [`validate`] the checks types cannot express, [`print`] `--print-config`, and [`values`]
//! the textual forms of durations and addresses.

mod load;
mod print;
pub mod sections;
mod validate;
pub mod values;

pub use load::{EnvLookup, LoadOptions, ENV_ALIASES};
pub use sections::*;
pub use values::{is_sha256_hex, parse_duration, parse_listen_addr};

use std::fmt;

use serde::{Deserialize, Serialize};

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
    pub admission: AdmissionSettings,
    pub log: LogSettings,
    pub otel: OtelSettings,
    pub tls: TlsSettings,
    pub auth: AuthSettings,
    pub cors: CorsSettings,
    pub cache: CacheSettings,
    pub redis: RedisSettings,
    pub jobs: JobsSettings,
    pub database: DatabaseSettings,
    pub api: ApiSettings,
    pub streams: StreamsSettings,
    pub grpc: GrpcSettings,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

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
    fn log_levels_are_checked_by_the_logger_own_parser() {
        for ok in [
            "info",
            "floodgate",
            "floodgate=debug,warn",
            "warn,floodgate::app=info",
        ] {
            assert!(load(&[("LOG_LEVEL", ok)]).is_ok(), "{ok} is a valid filter");
        }
        let e = load(&[("LOG_LEVEL", "floodgate=loud")]).unwrap_err();
        assert_eq!(e.setting, "log.level");
        assert!(e.source.contains("LOG_LEVEL"), "{e}");
    }

    #[test]
    fn samplers_are_named_as_opentelemetry_names_them() {
        let s = load(&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")]).unwrap();
        assert_eq!(s.otel.sampler, SamplerKind::ParentbasedAlwaysOff);
        let s = load(&[("OTEL_TRACES_SAMPLER", "traceidratio")]).unwrap();
        assert_eq!(s.otel.sampler, SamplerKind::TraceIdRatio);
        let e = load(&[("OTEL_TRACES_SAMPLER", "sometimes")]).unwrap_err();
        assert_eq!(e.setting, "otel.sampler");
        assert!(e.to_string().contains("always_on"), "{e}");
        assert_eq!(load(&[]).unwrap().otel.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn values_out_of_their_range_are_refused_with_setting_source_and_value() {
        for (var, value, setting) in [
            ("QUEUE_SIZE", "18446744073709551615", "pool.queue_size"),
            ("QUEUE_SIZE", "1000000000000", "pool.queue_size"),
            (
                "FLOODGATE__SERVER__MAX_CONNECTIONS",
                "18446744073709551615",
                "server.max_connections",
            ),
            (
                "FLOODGATE__SERVER__MAX_CONNECTIONS",
                "4294967296",
                "server.max_connections",
            ),
            ("FLOODGATE__CACHE__TTL", "500000000000y", "cache.ttl"),
            (
                "FLOODGATE__SERVER__HEADER_READ_TIMEOUT",
                "500000000000y",
                "server.header_read_timeout",
            ),
            (
                "SHUTDOWN_TIMEOUT",
                "500000000000y",
                "server.shutdown_timeout",
            ),
            (
                "FLOODGATE__POOL__WORKER_NICENESS",
                "-20",
                "pool.worker_niceness",
            ),
            (
                "FLOODGATE__POOL__WORKER_NICENESS",
                "100",
                "pool.worker_niceness",
            ),
            ("FLOODGATE__AUTH__JWT_LEEWAY", "100y", "auth.jwt_leeway"),
            (
                "FLOODGATE__DATABASE__BREAKER__OPEN_FOR",
                "500000000000y",
                "database.breaker.open_for",
            ),
            (
                "FLOODGATE__DATABASE__BREAKER__WINDOW",
                "500000000000y",
                "database.breaker.window",
            ),
            (
                "FLOODGATE__DATABASE__BREAKER__MIN_CALLS",
                "0",
                "database.breaker.min_calls",
            ),
            (
                "FLOODGATE__DATABASE__BREAKER__CONSECUTIVE_FAILURES",
                "0",
                "database.breaker.consecutive_failures",
            ),
            (
                "FLOODGATE__DATABASE__BREAKER__FAILURE_RATIO",
                "1.5",
                "database.breaker.failure_ratio",
            ),
        ] {
            let e = load(&[(var, value)]).unwrap_err();
            assert_eq!(e.setting, setting, "{var}={value}: {e}");
            assert!(e.source.contains(var), "{var}={value}: {e}");
            if !value.ends_with('y') {
                assert_eq!(e.value, value, "{var}={value}: {e}");
            }
        }
    }

    #[test]
    fn errors_blame_the_layer_and_value_that_caused_them() {
        let e = load(&[("FLOODGATE__CORS__MAX_AGE", "abc")]).unwrap_err();
        assert_eq!(e.setting, "cors.max_age", "{e}");
        assert!(e.source.contains("FLOODGATE"), "{e}");
        assert!(e.to_string().contains("abc"), "{e}");

        let e = load(&[
            ("SERVER_PORT", ":9000"),
            ("FLOODGATE__SERVER__UNKNOWN_KEY", "1"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "server.unknown_key", "{e}");
        assert!(e.source.contains("FLOODGATE"), "{e}");
        assert!(!e.source.contains("SERVER_PORT"), "{e}");

        let e = load(&[("API_KEY_HASHES", "plaintext")]).unwrap_err();
        assert!(e.setting.starts_with("auth.api_key_hashes"), "{e}");
        assert!(e.source.contains("API_KEY_HASHES"), "{e}");
        assert!(!e.to_string().contains("plaintext"), "never echoed: {e}");
    }

    #[test]
    fn a_retention_shorter_than_the_idempotency_ttl_is_refused() {
        let e = load(&[
            ("FLOODGATE__JOBS__RETENTION", "1h"),
            ("FLOODGATE__JOBS__IDEMPOTENCY_TTL", "2h"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "jobs.retention", "{e}");
        assert!(e.reason.contains("idempotency_ttl"), "{e}");
        load(&[
            ("FLOODGATE__JOBS__RETENTION", "2h"),
            ("FLOODGATE__JOBS__IDEMPOTENCY_TTL", "2h"),
        ])
        .unwrap();
    }

    #[test]
    fn admission_settings_are_held_to_their_ranges() {
        let s = load(&[]).unwrap();
        assert!(s.admission.adaptive);
        assert_eq!(s.admission.target_delay, Duration::from_millis(5));
        assert_eq!(s.admission.effective_min_limit(8), 8);
        for (var, value, setting) in [
            ("FLOODGATE__ADMISSION__WINDOW", "1ms", "admission.window"),
            (
                "FLOODGATE__ADMISSION__TARGET_DELAY",
                "1m",
                "admission.target_delay",
            ),
            (
                "FLOODGATE__ADMISSION__MIN_LIMIT",
                "2000000",
                "admission.min_limit",
            ),
            (
                "FLOODGATE__ADMISSION__BASELINE_WINDOW",
                "500ms",
                "admission.baseline_window",
            ),
            (
                "FLOODGATE__ADMISSION__RUNTIME_DELAY",
                "1ms",
                "admission.runtime_delay",
            ),
            (
                "FLOODGATE__ADMISSION__RUNTIME_DELAY",
                "11s",
                "admission.runtime_delay",
            ),
        ] {
            let e = load(&[(var, value)]).unwrap_err();
            assert_eq!(e.setting, setting, "{var}={value}: {e}");
        }
        let e = load(&[
            ("FLOODGATE__ADMISSION__WINDOW", "5s"),
            ("FLOODGATE__ADMISSION__BASELINE_WINDOW", "2s"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "admission.baseline_window", "{e}");
        assert!(e.reason.contains("admission.window"), "{e}");
        let off = load(&[("FLOODGATE__ADMISSION__ADAPTIVE", "false")]).unwrap();
        assert!(!off.admission.adaptive);
        let never = load(&[("FLOODGATE__ADMISSION__RUNTIME_DELAY", "0s")]).unwrap();
        assert!(never.admission.runtime_delay.is_zero());
    }

    #[test]
    fn a_database_url_of_another_kind_is_refused() {
        let e = load(&[("DATABASE_URL", "mysql://u:secret@db/jobs")]).unwrap_err();
        assert_eq!(e.setting, "database.url", "{e}");
        assert!(e.source.contains("DATABASE_URL"), "{e}");
        assert!(
            !e.to_string().contains("secret"),
            "the password is not echoed: {e}"
        );
        assert!(load(&[("DATABASE_URL", "postgres://db/jobs")]).is_ok());
    }

    #[test]
    fn admin_principals_are_a_list_of_named_principals() {
        let s = load(&[("FLOODGATE__AUTH__ADMIN_PRINCIPALS", "key:ops,jwt:auditor")]).unwrap();
        assert_eq!(s.auth.admin_principals, ["key:ops", "jwt:auditor"]);
        for bad in ["ops", "key:", "user:ops", "key: ops"] {
            let e = load(&[("FLOODGATE__AUTH__ADMIN_PRINCIPALS", bad)]).unwrap_err();
            assert_eq!(e.setting, "auth.admin_principals", "{bad}: {e}");
        }
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
