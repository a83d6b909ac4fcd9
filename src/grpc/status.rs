//! [`ApiError`] as a gRPC status: the one place the gRPC transport renders errors, beside the
//! JSON envelope's (`http::error`). The documented `code` string travels as the
//! `google.rpc.ErrorInfo` reason, so a client can tell the same cases apart on both APIs.
//!
//! | error | status | details |
//! |---|---|---|
//! | `INVALID_REQUEST`, `UNSUPPORTED_MEDIA_TYPE`, `UPGRADE_REQUIRED` | `INVALID_ARGUMENT` | `BadRequest` (the field, when the message names one) |
//! | `PAYLOAD_TOO_LARGE` (a request message over [`MAX_MESSAGE_BYTES`]) | `RESOURCE_EXHAUSTED` | |
//! | `UNAUTHORIZED` | `UNAUTHENTICATED` | |
//! | `FORBIDDEN` | `PERMISSION_DENIED` | |
//! | `NOT_FOUND` | `NOT_FOUND` | |
//! | `METHOD_NOT_ALLOWED` | `UNIMPLEMENTED` | |
//! | `TIMEOUT` | `DEADLINE_EXCEEDED` | |
//! | `RATE_LIMIT_EXCEEDED` | `RESOURCE_EXHAUSTED` | `RetryInfo` |
//! | `SERVICE_OVERLOADED`, `SHUTTING_DOWN`, `DEPENDENCY_UNAVAILABLE`, `PROFILER_BUSY` | `UNAVAILABLE` | `RetryInfo` |
//! | `JOB_FINISHED`, `JOB_NOT_RETRYABLE` | `FAILED_PRECONDITION` | |
//! | `IDEMPOTENCY_KEY_REUSED` | `ALREADY_EXISTS` | |
//! | `PROCESSING_ERROR` | `ABORTED` | |
//! | `INTERNAL_ERROR` | `INTERNAL` | none: details go to the log |
//!
//! Every status but `INTERNAL` also carries `ErrorInfo { reason: <code>, domain: "floodgate" }`.
//!
//! Tonic's codec answers a message over its decode limit itself, as `OUT_OF_RANGE`;
//! [`MessageLimit`] renders that refusal here too.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::MapOk;
use futures_util::TryFutureExt;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::error::ApiError;

/// The largest request message every service decodes (tonic's default, set explicitly so
/// the refusal can name it).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The `ErrorInfo` domain.
pub const ERROR_DOMAIN: &str = "floodgate";

/// The gRPC status code for `err`.
pub fn code(err: &ApiError) -> Code {
    match err {
        ApiError::InvalidRequest(_)
        | ApiError::UnsupportedMediaType(_)
        | ApiError::UpgradeRequired(_) => Code::InvalidArgument,
        // What gRPC's own servers answer for a message over the limit.
        ApiError::PayloadTooLarge(_) => Code::ResourceExhausted,
        ApiError::Unauthorized { .. } => Code::Unauthenticated,
        ApiError::Forbidden(_) => Code::PermissionDenied,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::MethodNotAllowed(_) => Code::Unimplemented,
        ApiError::Timeout => Code::DeadlineExceeded,
        ApiError::RateLimitExceeded { .. } => Code::ResourceExhausted,
        ApiError::ServiceOverloaded { .. }
        | ApiError::ShuttingDown { .. }
        | ApiError::DependencyUnavailable { .. }
        | ApiError::ProfilerBusy { .. } => Code::Unavailable,
        ApiError::JobFinished(_) | ApiError::JobNotRetryable(_) => Code::FailedPrecondition,
        ApiError::IdempotencyKeyReused { .. } => Code::AlreadyExists,
        ApiError::ScheduleOutOfRange(_) => Code::OutOfRange,
        ApiError::ProcessingError(_) => Code::Aborted,
        ApiError::InternalError => Code::Internal,
    }
}

/// `err` as a status with its details.
pub fn status(err: &ApiError) -> Status {
    let code = code(err);
    if code == Code::Internal {
        return Status::new(code, err.to_string());
    }
    let mut details = ErrorDetails::with_error_info(
        err.code(),
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    if let Some(wait) = err.retry_after() {
        details.set_retry_info(Some(wait));
    }
    if code == Code::InvalidArgument {
        let message = err.to_string();
        let field = field(&message).unwrap_or("request").to_owned();
        details.add_bad_request_violation(field, message);
    }
    Status::with_error_details(code, err.to_string(), details)
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        status(&err)
    }
}

/// Applies [`MessageLimit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit(inner)
    }
}

/// Answers a request message over [`MAX_MESSAGE_BYTES`] as `PAYLOAD_TOO_LARGE`
/// (`RESOURCE_EXHAUSTED`) where tonic's codec answered `OUT_OF_RANGE`. The codec's refusal is
/// told by a trailers-only `OUT_OF_RANGE`: no service here answers that code, and the codec
/// refuses on the declared length, before the handler runs.
#[derive(Debug, Clone)]
pub struct MessageLimit<S>(S);

type Answer = http::Response<tonic::body::Body>;

impl<S, R> Service<R> for MessageLimit<S>
where
    S: Service<R, Response = Answer, Error = Infallible>,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = MapOk<S::Future, fn(Answer) -> Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.0.call(request).map_ok(over_the_limit)
    }
}

fn over_the_limit(response: Answer) -> Answer {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        == Some(Code::OutOfRange as i32);
    if out_of_range {
        status(&ApiError::PayloadTooLarge(MAX_MESSAGE_BYTES)).into_http()
    } else {
        response
    }
}

/// The field a validation message is about: messages name it first (`number must be …`).
fn field(message: &str) -> Option<&str> {
    let word = message.split_whitespace().next()?;
    let word = word.trim_matches('`');
    (!word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then_some(word)
        .filter(|w| matches!(*w, "number" | "rounds" | "id" | "idempotency_key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refusals_carry_retry_info_and_bad_input_names_its_field() {
        let limited = status(&ApiError::RateLimitExceeded {
            retry_after: Duration::from_secs(2),
        });
        assert_eq!(limited.code(), Code::ResourceExhausted);
        assert_eq!(
            limited.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(2))
        );
        let info = limited.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("RATE_LIMIT_EXCEEDED", "floodgate")
        );
        let full = status(&ApiError::ServiceOverloaded {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(full.code(), Code::Unavailable);
        assert!(full.get_details_retry_info().is_some());

        let bad = status(&ApiError::InvalidRequest(
            "number must be an integer between 0 and 1000000 (got 2000000)".into(),
        ));
        assert_eq!(bad.code(), Code::InvalidArgument);
        let violations = bad.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, "number");

        let bug = status(&ApiError::InternalError);
        assert_eq!(bug.code(), Code::Internal);
        assert!(bug.details().is_empty());
    }
}
