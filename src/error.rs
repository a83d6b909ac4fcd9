//! The one error type every layer returns, and its documented codes.
//!
//! [`ApiError`] knows nothing of a transport: the HTTP side renders it as the JSON envelope
//! (`http::error`), a gRPC side as a status. The `code` strings are derived from the variant
//! names ([`ErrorCode`]), so the list in the API document cannot drift from the type.

use std::any::Any;
use std::time::Duration;

/// Every error a client can receive. Each variant's name, in `SCREAMING_SNAKE_CASE`, is its
/// documented `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, strum::EnumDiscriminants)]
#[strum_discriminants(
    name(ErrorCode),
    derive(strum::IntoStaticStr, strum::EnumIter, strum::AsRefStr),
    strum(serialize_all = "SCREAMING_SNAKE_CASE")
)]
pub enum ApiError {
    /// The request is not valid; the text says why.
    #[error("{0}")]
    InvalidRequest(String),
    /// No valid credential. The text never contains the credential.
    #[error("{reason}")]
    Unauthorized {
        reason: &'static str,
        /// A credential was sent but is not valid (RFC 6750 `invalid_token`).
        invalid: bool,
    },
    /// The credential is valid but lacks the required scope.
    #[error("token lacks the required scope `{0}`")]
    Forbidden(String),
    /// No such route, or no such resource behind one; one code for both, the text says which.
    #[error("{0}")]
    NotFound(Missing),
    /// The route exists but not with this method.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// The route speaks WebSocket and the request did not ask to upgrade; the text says
    /// what to send.
    #[error("{0}")]
    UpgradeRequired(&'static str),
    /// The request took longer than the configured request timeout.
    #[error("request timeout")]
    Timeout,
    /// The body is larger than the limit (bytes).
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The body is not in a form the service reads (not JSON, or content-encoded); the
    /// text says which.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// Over the rate limit.
    #[error("Rate limit exceeded")]
    RateLimitExceeded { retry_after: Duration },
    /// The job has already ended and cannot be cancelled.
    #[error("job {0} has already finished")]
    JobFinished(String),
    /// A well-formed `run_at` or `delay` past the furthest a job may be scheduled (365 days,
    /// or a duration too large to add).
    #[error("{0}")]
    ScheduleOutOfRange(String),
    /// The job is neither discarded nor failed: there is nothing to retry.
    #[error("job {0} is not discarded or failed: only those can be retried")]
    JobNotRetryable(String),
    /// The `Idempotency-Key` was used before with a different request (in a batch, the
    /// index of the first job that did).
    #[error("{}this Idempotency-Key was used with a different request", match .job { Some(i) => format!("jobs[{i}]: "), None => String::new() })]
    IdempotencyKeyReused { job: Option<usize> },
    /// A dependency without a fallback (the jobs database) is unavailable.
    #[error("{what} is unavailable")]
    DependencyUnavailable {
        what: &'static str,
        retry_after: Duration,
    },
    /// No room for the call now: its class of work is at its adaptive limit (or shed for a
    /// higher class), the job queue is full, or a stream limit is reached.
    #[error("the service is overloaded; retry later")]
    ServiceOverloaded { retry_after: Duration },
    /// The service is draining for shutdown and takes no new work.
    #[error("the service is shutting down")]
    ShuttingDown { retry_after: Duration },
    /// Another profile is being taken.
    #[error("a profile is already being taken")]
    ProfilerBusy { retry_after: Duration },
    /// The job failed on its worker.
    #[error("{0}")]
    ProcessingError(String),
    /// A bug; details go to the log, not the client.
    #[error("internal server error")]
    InternalError,
}

/// What a `NOT_FOUND` did not find: a client told "no route" for a job it mistyped would look
/// for a wrong URL instead of a wrong id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No route serves this path.
    #[error("no route for {0}")]
    Route(String),
    /// No job has this id.
    #[error("job {0} not found")]
    Job(String),
}

impl ApiError {
    /// The documented `code` string.
    pub fn code(&self) -> &'static str {
        ErrorCode::from(self).into()
    }

    /// How long a refused client should wait before retrying, for the refusals that have one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimitExceeded { retry_after }
            | ApiError::ServiceOverloaded { retry_after }
            | ApiError::ShuttingDown { retry_after }
            | ApiError::DependencyUnavailable { retry_after, .. }
            | ApiError::ProfilerBusy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        <ErrorCode as strum::IntoEnumIterator>::iter()
    }

    /// The code as sent to clients.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The message of a panic payload (`panic!` with a string or a format). Every layer that
/// catches a panic reports it so: the worker threads, the job runner and each transport's
/// call guard.
pub fn panic_message(payload: &Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_strings() {
        let d = Duration::ZERO;
        assert_eq!(
            ApiError::RateLimitExceeded { retry_after: d }.code(),
            "RATE_LIMIT_EXCEEDED"
        );
        assert_eq!(
            ApiError::ServiceOverloaded { retry_after: d }.code(),
            "SERVICE_OVERLOADED"
        );
        assert_eq!(ApiError::InternalError.code(), "INTERNAL_ERROR");
        assert_eq!(
            ApiError::InvalidRequest(String::new()).code(),
            "INVALID_REQUEST"
        );
        let route = ApiError::NotFound(Missing::Route("/nope".into()));
        let job = ApiError::NotFound(Missing::Job("0193".into()));
        assert_eq!((route.code(), job.code()), ("NOT_FOUND", "NOT_FOUND"));
        assert_eq!(route.to_string(), "no route for /nope");
        assert_eq!(job.to_string(), "job 0193 not found");
        let all: Vec<_> = ErrorCode::all().map(ErrorCode::as_str).collect();
        assert_eq!(all.len(), 20);
        assert!(all.contains(&"JOB_NOT_RETRYABLE"));
        assert!(all.contains(&"SHUTTING_DOWN") && all.contains(&"PROCESSING_ERROR"));
    }
}
