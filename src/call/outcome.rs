//! How a call's end is recorded, alike for both transports: the refusal it is counted as, the
//! error mark on its span and its access-log line.

use std::time::Duration;

use tracing::Span;

use super::RequestInfo;
use crate::error::ApiError;
use crate::observability::access_log::{AccessLog, AccessRecord};
use crate::observability::metrics::Refused;

/// The refusal `err` is counted as, if it is one the metrics tell apart.
pub fn refused(err: &ApiError) -> Option<Refused> {
    match err {
        ApiError::RateLimitExceeded { .. } => Some(Refused::RateLimited),
        ApiError::ServiceOverloaded { .. } => Some(Refused::Overloaded),
        _ => None,
    }
}

/// How a call ended.
pub struct Ended<'a> {
    /// The HTTP method (`POST` for every RPC).
    pub method: &'a str,
    pub path: &'a str,
    /// The HTTP status (200 for every RPC: its outcome is `grpc_status`).
    pub status: u16,
    /// The gRPC status code, for an RPC.
    pub grpc_status: Option<i32>,
    /// The server failed (a 5xx, or a gRPC code OpenTelemetry counts as the server's error).
    pub server_error: bool,
    pub elapsed: Duration,
    /// Hex trace and span IDs when the call is traced.
    pub trace: Option<(String, String)>,
}

impl RequestInfo {
    /// Record how the call ended: its span is marked as failed when the server failed, and
    /// the access log, when there is one, gets its line.
    pub fn record(&self, span: &Span, access_log: Option<&AccessLog>, ended: Ended<'_>) {
        if ended.server_error {
            span.record("otel.status_code", "ERROR");
        }
        let Some(log) = access_log else {
            return;
        };
        log.write(&AccessRecord {
            request_id: self.id(),
            method: ended.method,
            path: ended.path,
            status: ended.status,
            grpc_status: ended.grpc_status,
            latency: ended.elapsed,
            client_ip: self.client,
            trace: ended.trace.as_ref().map(|(t, s)| (t.as_str(), s.as_str())),
        });
    }
}
