//! Checks that types alone cannot express.

use std::time::Duration;

use super::values::redact_url;
use super::{is_sha256_hex, CacheBackend, RateLimitBackend, Settings};

/// A failed check: the setting, the value as the user wrote it, and why it is refused.
pub(super) type Invalid = (String, String, String);

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Settings {
    /// Every numeric setting with its documented range. Bounds are what one instance can
    /// use: a queue of a billion jobs or a trillion connections would abort or overflow,
    /// not serve.
    pub fn number_ranges(&self) -> [(&'static str, i128, i128, i128); 29] {
        let n = |v: usize| v as i128;
        [
            ("pool.workers", n(self.pool.workers), 0, 4096),
            ("pool.queue_size", n(self.pool.queue_size), 1, 1_000_000),
            (
                "pool.worker_niceness",
                self.pool.worker_niceness.into(),
                0,
                19,
            ),
            (
                "server.max_connections",
                n(self.server.max_connections),
                1,
                1_000_000,
            ),
            (
                "server.max_body_bytes",
                n(self.server.max_body_bytes),
                64,
                64 << 20,
            ),
            (
                "server.max_header_bytes",
                n(self.server.max_header_bytes),
                8192,
                1 << 20,
            ),
            (
                "compute.intensive_rounds",
                self.compute.intensive_rounds.into(),
                1,
                1_000_000_000,
            ),
            (
                "rate_limit.requests_per_second",
                self.rate_limit.requests_per_second.into(),
                1,
                100_000_000,
            ),
            (
                "rate_limit.burst",
                self.rate_limit.burst.into(),
                0,
                100_000_000,
            ),
            (
                "cache.max_entries",
                self.cache.max_entries.into(),
                1,
                100_000_000,
            ),
            (
                "otel.max_traces_per_second",
                self.otel.max_traces_per_second.into(),
                0,
                10_000_000,
            ),
            (
                "otel.max_queue_size",
                n(self.otel.max_queue_size),
                1,
                1_000_000,
            ),
            (
                "otel.metric_export_interval",
                self.otel.metric_export_interval.into(),
                100,
                3_600_000,
            ),
            (
                "otel.metric_export_timeout",
                self.otel.metric_export_timeout.into(),
                100,
                600_000,
            ),
            (
                "auth.failed_attempts_per_minute",
                self.auth.failed_attempts_per_minute.into(),
                1,
                1_000_000,
            ),
            (
                "auth.failed_attempts_burst",
                self.auth.failed_attempts_burst.into(),
                1,
                1_000_000,
            ),
            (
                "redis.breaker.min_calls",
                self.redis.breaker.min_calls.into(),
                1,
                1_000_000,
            ),
            (
                "redis.breaker.consecutive_failures",
                self.redis.breaker.consecutive_failures.into(),
                1,
                1_000_000,
            ),
            (
                "database.breaker.min_calls",
                self.database.breaker.min_calls.into(),
                1,
                1_000_000,
            ),
            (
                "database.breaker.consecutive_failures",
                self.database.breaker.consecutive_failures.into(),
                1,
                1_000_000,
            ),
            (
                "jobs.max_rounds",
                self.jobs.max_rounds.into(),
                1,
                1_000_000_000_000,
            ),
            ("jobs.max_running", n(self.jobs.max_running), 0, 4096),
            ("jobs.max_attempts", self.jobs.max_attempts.into(), 1, 100),
            (
                "jobs.max_batch_bytes",
                n(self.jobs.max_batch_bytes),
                1024,
                64 << 20,
            ),
            (
                "database.max_connections",
                self.database.max_connections.into(),
                1,
                1000,
            ),
            (
                "streams.max_connections",
                n(self.streams.max_connections),
                0,
                1_000_000,
            ),
            (
                "streams.max_operational_connections",
                n(self.streams.max_operational_connections),
                0,
                1_000_000,
            ),
            ("streams.send_queue", n(self.streams.send_queue), 1, 10_000),
            (
                "admission.min_limit",
                n(self.admission.min_limit),
                0,
                1_000_000,
            ),
        ]
    }

    /// Every duration setting with its documented range.
    pub fn duration_ranges(&self) -> [(&'static str, Duration, Duration, Duration); 25] {
        let s = &self.server;
        [
            ("server.request_timeout", s.request_timeout, MS, HOUR),
            ("server.shutdown_timeout", s.shutdown_timeout, MS, HOUR),
            (
                "server.header_read_timeout",
                s.header_read_timeout,
                MS,
                10 * MINUTE,
            ),
            ("server.keep_alive_timeout", s.keep_alive_timeout, MS, HOUR),
            ("cache.ttl", self.cache.ttl, MS, 30 * DAY),
            (
                "auth.jwt_leeway",
                self.auth.jwt_leeway,
                Duration::ZERO,
                10 * MINUTE,
            ),
            ("cors.max_age", self.cors.max_age, Duration::ZERO, DAY),
            ("redis.timeout", self.redis.timeout, MS, 10 * SECOND),
            (
                "redis.breaker.window",
                self.redis.breaker.window,
                SECOND,
                HOUR,
            ),
            (
                "redis.breaker.open_for",
                self.redis.breaker.open_for,
                10 * MS,
                HOUR,
            ),
            (
                "database.breaker.window",
                self.database.breaker.window,
                SECOND,
                HOUR,
            ),
            (
                "database.breaker.open_for",
                self.database.breaker.open_for,
                10 * MS,
                HOUR,
            ),
            ("jobs.lease", self.jobs.lease, SECOND, HOUR),
            ("jobs.retry_backoff", self.jobs.retry_backoff, MS, HOUR),
            (
                "jobs.retry_backoff_max",
                self.jobs.retry_backoff_max,
                MS,
                DAY,
            ),
            (
                "jobs.poll_interval",
                self.jobs.poll_interval,
                100 * MS,
                5 * MINUTE,
            ),
            ("jobs.retention", self.jobs.retention, MINUTE, 365 * DAY),
            (
                "jobs.idempotency_ttl",
                self.jobs.idempotency_ttl,
                SECOND,
                30 * DAY,
            ),
            (
                "database.acquire_timeout",
                self.database.acquire_timeout,
                MS,
                MINUTE,
            ),
            (
                "database.idle_timeout",
                self.database.idle_timeout,
                SECOND,
                DAY,
            ),
            (
                "streams.ping_interval",
                self.streams.ping_interval,
                100 * MS,
                HOUR,
            ),
            (
                "admission.target_delay",
                self.admission.target_delay,
                Duration::from_micros(100),
                10 * SECOND,
            ),
            (
                "admission.window",
                self.admission.window,
                10 * MS,
                10 * SECOND,
            ),
            (
                "admission.baseline_window",
                self.admission.baseline_window,
                SECOND,
                HOUR,
            ),
            (
                "admission.runtime_delay",
                self.admission.runtime_delay,
                Duration::ZERO,
                10 * SECOND,
            ),
        ]
    }

    /// Semantic checks that types alone cannot express.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        fn check(ok: bool, key: &str, value: impl ToString, reason: &str) -> Result<(), Invalid> {
            if ok {
                Ok(())
            } else {
                Err((key.to_owned(), value.to_string(), reason.to_owned()))
            }
        }
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        check(
            self.rate_limit.requests_per_second >= 1,
            "rate_limit.requests_per_second",
            self.rate_limit.requests_per_second,
            "must be at least 1 (set rate_limit.enabled = false to turn the limiter off)",
        )?;
        for &(key, value, min, max) in &self.number_ranges() {
            check(
                (min..=max).contains(&value),
                key,
                value,
                &format!("must be between {min} and {max}"),
            )?;
        }
        for &(key, value, min, max) in &self.duration_ranges() {
            check(
                (min..=max).contains(&value),
                key,
                d(&value),
                &format!("must be between {} and {}", d(&min), d(&max)),
            )?;
        }
        check(
            self.jobs.retry_backoff_max >= self.jobs.retry_backoff,
            "jobs.retry_backoff_max",
            d(&self.jobs.retry_backoff_max),
            &format!(
                "must be at least jobs.retry_backoff ({})",
                d(&self.jobs.retry_backoff)
            ),
        )?;
        check(
            self.jobs.retention >= self.jobs.idempotency_ttl,
            "jobs.retention",
            d(&self.jobs.retention),
            &format!(
                "must be at least jobs.idempotency_ttl ({}): a job purged before its key expires \
                 would let a retry with that key make a second job",
                d(&self.jobs.idempotency_ttl)
            ),
        )?;
        check(
            self.admission.runtime_delay.is_zero() || self.admission.runtime_delay >= 2 * MS,
            "admission.runtime_delay",
            d(&self.admission.runtime_delay),
            "must be 0s (off) or at least 2ms: the runtime's timer counts whole milliseconds, \
             so an idle runtime already reads up to 1ms late",
        )?;
        check(
            self.admission.baseline_window >= self.admission.window,
            "admission.baseline_window",
            d(&self.admission.baseline_window),
            &format!(
                "must be at least admission.window ({}): the no-load latency is the lowest of \
                 several windows",
                d(&self.admission.window)
            ),
        )?;
        for (key, ratio) in [
            (
                "redis.breaker.failure_ratio",
                self.redis.breaker.failure_ratio,
            ),
            (
                "database.breaker.failure_ratio",
                self.database.breaker.failure_ratio,
            ),
        ] {
            check(
                ratio > 0.0 && ratio <= 1.0,
                key,
                ratio,
                "must be more than 0 and at most 1",
            )?;
        }
        if let Some(url) = &self.redis.url {
            check(
                url.starts_with("redis://") || url.starts_with("rediss://"),
                "redis.url",
                redact_url(url),
                "must be a redis:// or rediss:// URL",
            )?;
        }
        for (i, d) in self.api.deprecations.iter().enumerate() {
            let key = |field: &str| format!("api.deprecations[{i}].{field}");
            check(
                d.prefix.starts_with('/'),
                &key("prefix"),
                &d.prefix,
                "must be a path like /api/v1",
            )?;
            for (field, value) in [("since", Some(&d.since)), ("sunset", d.sunset.as_ref())] {
                if let Some(v) = value {
                    check(
                        humantime::parse_rfc3339(v).is_ok(),
                        &key(field),
                        v,
                        "must be an RFC 3339 time like 2027-06-30T00:00:00Z",
                    )?;
                }
            }
            if let Some(s) = &d.successor {
                check(
                    s.starts_with('/') && http::HeaderValue::from_str(s).is_ok(),
                    &key("successor"),
                    s,
                    "must be a path like /api/v2",
                )?;
            }
        }
        let db = &self.database.url;
        check(
            db.starts_with("sqlite://")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"),
            "database.url",
            redact_url(db),
            "must be sqlite://PATH or postgres://…",
        )?;
        check(
            self.rate_limit.backend != RateLimitBackend::Redis || self.redis.url.is_some(),
            "rate_limit.backend",
            "redis",
            "the Redis backend needs redis.url (REDIS_URL)",
        )?;
        check(
            self.cache.backend != CacheBackend::Redis || self.redis.url.is_some(),
            "cache.backend",
            "redis",
            "the Redis backend needs redis.url (REDIS_URL)",
        )?;
        check(
            (0.0..=1.0).contains(&self.otel.sampler_arg),
            "otel.sampler_arg",
            self.otel.sampler_arg,
            "must be between 0 and 1",
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
        for principal in &self.auth.admin_principals {
            let named = |kind| {
                principal
                    .strip_prefix(kind)
                    .is_some_and(|name: &str| !name.is_empty() && name.trim() == name)
            };
            check(
                named("key:") || named("jwt:"),
                "auth.admin_principals",
                principal,
                "must name a principal: `key:<API key name>` or `jwt:<token subject>`",
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
}

/// Whether `level` parses as a log filter, by the parser the logger itself uses.
fn tracing_subscriber_filter_ok(level: &str) -> bool {
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .is_ok()
}
