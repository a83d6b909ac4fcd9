//! Outbound dependencies: the circuit breaker every call to one goes through, and the
//! clients built on it (Redis). Transport-free: the limiter, the cache and the job store use
//! them, each with its own fallback.

pub mod breaker;
pub mod redis;

pub use self::redis::{Operation, Redis, RedisMetrics};
pub use breaker::{Breaker, BreakerConfig, BreakerMetrics, CallError, CircuitState};
