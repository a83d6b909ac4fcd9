//! Pluggable health checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The boxed future a check returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One named check; `Err` carries the message `/health` reports.
pub trait HealthCheck: Send + Sync {
    fn name(&self) -> &str;
    fn check(&self) -> CheckFuture<'_>;
    /// Whether a failure takes the instance out of the load balancer (`/health/ready`): true
    /// for what the instance cannot serve without; false for conditions another replica
    /// would share, such as load, or a dependency with a fallback.
    fn gates_readiness(&self) -> bool {
        true
    }
    /// Whether a failure makes `/health` answer 503: false for a degraded dependency the
    /// service has a fallback for (reported, but the service is still healthy).
    fn fails_health(&self) -> bool {
        true
    }
}

/// The result of running every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// `(name, "healthy" | failure message)` in registration order.
    pub checks: Vec<(String, String)>,
    pub healthy: bool,
}

/// The set of registered checks.
#[derive(Clone, Default)]
pub struct HealthRegistry {
    checks: Vec<Arc<dyn HealthCheck>>,
}

impl HealthRegistry {
    pub fn register(&mut self, check: impl HealthCheck + 'static) {
        self.checks.push(Arc::new(check));
    }

    /// Run every check concurrently.
    pub async fn run(&self) -> HealthReport {
        Self::run_checks(self.checks.iter()).await
    }

    /// Run the checks that gate readiness.
    pub async fn run_readiness(&self) -> HealthReport {
        Self::run_checks(self.checks.iter().filter(|c| c.gates_readiness())).await
    }

    async fn run_checks<'a>(
        checks: impl Iterator<Item = &'a Arc<dyn HealthCheck>> + Clone,
    ) -> HealthReport {
        let results = futures_util::future::join_all(checks.clone().map(|c| c.check())).await;
        let mut healthy = true;
        let checks = checks
            .zip(results)
            .map(|(c, r)| {
                let status = match r {
                    Ok(()) => "healthy".to_owned(),
                    Err(msg) => {
                        healthy &= !c.fails_health();
                        msg
                    }
                };
                (c.name().to_owned(), status)
            })
            .collect();
        HealthReport { checks, healthy }
    }
}

/// Unhealthy when the queue is over 90% full or a worker has died. It does not gate
/// readiness: a full queue already answers fast 503s, and a dead worker is replaced.
pub struct WorkerPoolCheck(pub crate::pool::WorkerPool);

impl HealthCheck for WorkerPoolCheck {
    fn name(&self) -> &str {
        "worker_pool"
    }

    fn gates_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> CheckFuture<'_> {
        let s = self.0.status();
        Box::pin(async move {
            if s.alive < s.workers {
                return Err(format!(
                    "unhealthy: {} of {} workers alive",
                    s.alive, s.workers
                ));
            }
            if s.queue_depth * 10 > s.queue_capacity * 9 {
                return Err(format!(
                    "unhealthy: job queue {} of {} full",
                    s.queue_depth, s.queue_capacity
                ));
            }
            Ok(())
        })
    }
}

/// Redis, when configured: `degraded` while its breaker is open. With the limiter's and the
/// cache's fallbacks the service still serves, so this neither fails `/health` nor readiness.
pub struct RedisCheck(pub crate::dependency::Redis);

impl HealthCheck for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> CheckFuture<'_> {
        let state = self.0.state();
        Box::pin(async move {
            match state {
                crate::dependency::CircuitState::Closed => Ok(()),
                crate::dependency::CircuitState::HalfOpen => {
                    Err("degraded: probing after failures".to_owned())
                }
                crate::dependency::CircuitState::Open => Err(
                    "degraded: circuit open; rate limits fall back, the cache is bypassed"
                        .to_owned(),
                ),
            }
        })
    }

    fn gates_readiness(&self) -> bool {
        false
    }

    fn fails_health(&self) -> bool {
        false
    }
}

/// The jobs database, when jobs are on: unavailable while it cannot be reached (at start, or
/// its breaker open or probing), or while the runner is not running. API v2 answers 503
/// meanwhile, so `/health` does too; readiness is not gated, because every replica shares
/// the database and API v1 does not need it.
pub struct DatabaseCheck(pub Arc<std::sync::OnceLock<crate::domain::jobs::Jobs>>);

impl HealthCheck for DatabaseCheck {
    fn name(&self) -> &str {
        "database"
    }

    fn check(&self) -> CheckFuture<'_> {
        let verdict = match self.0.get() {
            None => Err("unavailable: not reachable since start; API v2 answers 503".to_owned()),
            Some(jobs) => jobs.health(),
        };
        Box::pin(async move { verdict })
    }

    fn gates_readiness(&self) -> bool {
        false
    }
}
