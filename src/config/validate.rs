//! Checks that types alone cannot express.

use std::time::Duration;

use super::{is_sha256_hex, Settings};

/// A failed check: the setting, the value as the user wrote it, and why it is refused.
pub(super) type Invalid = (String, String, String);

impl Settings {
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
}

/// Whether `level` parses as a log filter, by the parser the logger itself uses.
fn tracing_subscriber_filter_ok(level: &str) -> bool {
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(level)
        .is_ok()
}
