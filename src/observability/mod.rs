//! What the service says about itself: logs ([`telemetry`], [`log_sink`], [`access_log`]),
//! traces ([`telemetry`]) and metrics ([`metrics`]). Depends only on configuration.

pub mod access_log;
pub mod exemplars;
pub mod exposition;
pub mod log_sink;
pub mod metrics;
pub mod openmetrics;
pub mod otlp_metrics;
pub mod telemetry;
