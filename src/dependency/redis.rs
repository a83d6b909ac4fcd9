//! The shared Redis: one multiplexed connection for every caller (concurrent commands share
//! round trips), established lazily and re-established by `redis`' connection manager, and
//! every command behind the breaker with a per-call deadline.

use std::sync::Arc;
use std::time::Duration;

use metrics::Histogram;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tracing::Instrument;

use super::breaker::{Breaker, BreakerConfig, BreakerMetrics, CallError, CircuitState};
use crate::config::RedisSettings;

/// Handles Redis records into, per operation.
#[derive(Clone)]
pub struct RedisMetrics {
    pub breaker: BreakerMetrics,
    pub rate_limit: Histogram,
    pub cache_get: Histogram,
    pub cache_set: Histogram,
}

impl Default for RedisMetrics {
    fn default() -> Self {
        Self {
            breaker: BreakerMetrics::default(),
            rate_limit: Histogram::noop(),
            cache_get: Histogram::noop(),
            cache_set: Histogram::noop(),
        }
    }
}

/// What a command is, for its duration histogram and its span.
#[derive(Debug, Clone, Copy)]
pub enum Operation {
    RateLimit,
    CacheGet,
    CacheSet,
}

impl Operation {
    fn command(self) -> &'static str {
        match self {
            Operation::RateLimit => "EVALSHA",
            Operation::CacheGet => "GET",
            Operation::CacheSet => "SET",
        }
    }
}

/// A Redis shared by the limiter and the cache; cheap to clone.
#[derive(Clone)]
pub struct Redis(Arc<Inner>);

struct Inner {
    connection: ConnectionManager,
    breaker: Breaker,
    timeout: Duration,
    /// How long making the connection may take (at least 250 ms, whatever the call timeout).
    connect_timeout: Duration,
    prefix: String,
    metrics: RedisMetrics,
}

impl Redis {
    /// Prepare the connection without making it: an unreachable Redis at start is not an
    /// error (calls fail, the breaker opens, callers fall back). A malformed URL or an
    /// unreadable password file is.
    pub fn connect(s: &RedisSettings, metrics: RedisMetrics) -> Result<Redis, String> {
        let url = s.url.as_deref().ok_or("redis.url is not set")?;
        let mut info = url
            .into_connection_info()
            .map_err(|e| format!("invalid setting `redis.url`: {e}"))?;
        if let Some(path) = &s.password_file {
            let password = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "invalid setting `redis.password_file`: value `{}`: {e}",
                    path.display()
                )
            })?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end_matches(['\r', '\n']));
            info = info.set_redis_settings(settings);
        }
        let client =
            redis::Client::open(info).map_err(|e| format!("invalid setting `redis.url`: {e}"))?;
        // The breaker and the per-call deadline decide how long a caller waits; the manager
        // only reconnects, quickly and without end.
        let connect_timeout = s.timeout.max(Duration::from_millis(250));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(connect_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        let breaker = Breaker::new(
            "redis",
            BreakerConfig::from(&s.breaker),
            metrics.breaker.clone(),
        );
        Ok(Redis(Arc::new(Inner {
            connection,
            breaker,
            timeout: s.timeout,
            connect_timeout,
            prefix: s.key_prefix.clone(),
            metrics,
        })))
    }

    /// Make the connection now, at start, waiting at most the connection timeout: the
    /// first requests then find it open, rather than each paying for the connect within its
    /// own call deadline (20 ms by default, less than a TLS handshake to a remote Redis) and
    /// falling back meanwhile. An unreachable Redis is not waited for longer and is not an
    /// error: it is logged, and calls fall back until it answers. Outside the breaker: no
    /// caller waits on it.
    pub async fn warm_up(&self) {
        let mut connection = self.0.connection.clone();
        let ping = async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.0.connect_timeout, ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis is not reachable at start; its calls fall back until it is")
            }
            Err(_) => tracing::warn!(
                timeout_ms = self.0.connect_timeout.as_millis() as u64,
                "Redis did not answer at start; its calls fall back until it does"
            ),
        }
    }

    /// `prefix` + `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.0.prefix)
    }

    /// Whether calls are let through now (closed, or half-open with its probe free).
    pub fn available(&self) -> bool {
        self.0.breaker.state() != CircuitState::Open
    }

    /// The breaker's state.
    pub fn state(&self) -> CircuitState {
        self.0.breaker.state()
    }

    /// Run `command` on the shared connection, within the per-call deadline and through
    /// the breaker, as a child span of the caller's.
    pub async fn run<T, F, Fut>(&self, operation: Operation, command: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let inner = &self.0;
        let histogram = match operation {
            Operation::RateLimit => &inner.metrics.rate_limit,
            Operation::CacheGet => &inner.metrics.cache_get,
            Operation::CacheSet => &inner.metrics.cache_set,
        };
        let span = tracing::info_span!(
            "redis",
            otel.name = operation.command(),
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = operation.command(),
        );
        inner
            .breaker
            .call(inner.timeout, histogram, command(inner.connection.clone()))
            .instrument(span)
            .await
    }
}
