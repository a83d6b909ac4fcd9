//! How an [`ApiError`] becomes an HTTP response: its status, its headers and the JSON
//! envelope `{"request_id","error","code","timestamp"}`.
//!
//! Handlers, extractors and layers return [`ApiError`]; its `IntoResponse` only tags an empty
//! response with the error. The request-context layer, which knows the request ID, turns the
//! tag into the envelope in [`render`] — the single place errors become bodies.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, RefOr};

use crate::error::{ApiError, ErrorCode};

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "floodgate";

/// The HTTP status of each error.
pub fn status(err: &ApiError) -> StatusCode {
    status_of(ErrorCode::from(err))
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::JobFinished | ErrorCode::JobNotRetryable => StatusCode::CONFLICT,
        ErrorCode::IdempotencyKeyReused | ErrorCode::ScheduleOutOfRange => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::ServiceOverloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::DependencyUnavailable
        | ErrorCode::ProfilerBusy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ProcessingError | ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The RFC 6750 challenge for authentication failures.
fn challenge(err: &ApiError) -> Option<String> {
    match err {
        ApiError::Unauthorized { invalid: false, .. } => Some(format!("Bearer realm=\"{REALM}\"")),
        ApiError::Unauthorized { invalid: true, .. } => {
            Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
        }
        ApiError::Forbidden(scope) => Some(format!(
            "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
        )),
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = status(&self).into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The JSON body of every error response.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Envelope<'a> {
    /// The request's ID, as in `X-Request-ID`.
    pub request_id: &'a str,
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs.
    #[schema(schema_with = code_schema)]
    pub code: &'static str,
    /// Unix seconds.
    pub timestamp: u64,
}

fn code_schema() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ErrorCode::all().map(ErrorCode::as_str)))
        .build()
}

/// Build the JSON envelope for `err`.
pub fn render(err: &ApiError, request_id: &str, timestamp: u64) -> Response {
    let body = serde_json::to_vec(&Envelope {
        request_id,
        error: err.to_string(),
        code: err.code(),
        timestamp,
    })
    .unwrap_or_default();
    let mut response = (status(err), body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(after) = err.retry_after() {
        // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if let Some(challenge) = challenge(err) {
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
    }
    if matches!(err, ApiError::UpgradeRequired(_)) {
        // RFC 9110 (15.5.22): a 426 names the protocol to upgrade to.
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    if matches!(err, ApiError::ShuttingDown { .. }) {
        // This connection is about to close; say so rather than let the client find out.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The error responses of the compute routes, each with the envelope and its headers, for
/// the API document.
pub struct ComputeErrors;

impl utoipa::IntoResponses for ComputeErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        use ErrorCode as C;
        documented(&[
            (
                &[C::InvalidRequest],
                "the body is not `{\"number\": n}` with `n` an integer in 0..=1000000",
            ),
            (
                &[C::Unauthorized],
                "authentication is on and the credential is missing or invalid",
            ),
            (&[C::Forbidden], "the token lacks the required scope"),
            (
                &[C::Timeout],
                "the request took longer than the request timeout",
            ),
            (&[C::PayloadTooLarge], "the body is larger than the limit"),
            (
                &[C::UnsupportedMediaType],
                "`Content-Type` is not `application/json`",
            ),
            (
                &[C::RateLimitExceeded],
                "over the rate limit; retry after `Retry-After` seconds",
            ),
            (
                &[C::ServiceOverloaded, C::ShuttingDown],
                "the call's class of work is at its adaptive limit (or shed for a higher one), the job queue is full, or the service is draining for shutdown; retry after `Retry-After` seconds",
            ),
            (
                &[C::ProcessingError, C::InternalError],
                "the job failed, or the service hit a bug",
            ),
        ])
    }
}

/// The error responses of the jobs routes (API v2).
pub struct JobErrors;

impl utoipa::IntoResponses for JobErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        use ErrorCode as C;
        documented(&[
            (
                &[C::InvalidRequest],
                "the body, the job id, the query or the `Idempotency-Key` is malformed",
            ),
            (
                &[C::Unauthorized],
                "authentication is on and the credential is missing or invalid",
            ),
            (&[C::Forbidden], "the token lacks the required scope"),
            (
                &[C::NotFound],
                "no job with this id that the caller may see (with authentication on, another principal's job is not found)",
            ),
            (&[C::JobFinished], "the job has already finished"),
            (
                &[C::JobNotRetryable],
                "the job is not discarded or failed, so there is nothing to retry",
            ),
            (
                &[C::IdempotencyKeyReused],
                "the caller used this `Idempotency-Key` with a different body",
            ),
            (
                &[C::ScheduleOutOfRange],
                "`run_at` or `delay` is more than 365 days ahead",
            ),
            (&[C::PayloadTooLarge], "the body is larger than the limit"),
            (
                &[C::UnsupportedMediaType],
                "`Content-Type` is not `application/json`",
            ),
            (
                &[C::Timeout],
                "the request took longer than the request timeout",
            ),
            (
                &[C::RateLimitExceeded],
                "over the rate limit; retry after `Retry-After` seconds",
            ),
            (
                &[C::DependencyUnavailable, C::ShuttingDown],
                "the jobs database is unavailable, or the service is draining; retry after `Retry-After` seconds",
            ),
            (&[C::InternalError], "the service hit a bug"),
        ])
    }
}

/// The error responses of the stream routes (API v2).
pub struct StreamErrors;

impl utoipa::IntoResponses for StreamErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        use ErrorCode as C;
        documented(&[
            (
                &[C::InvalidRequest],
                "the job id or `interval` is malformed, or the WebSocket handshake is (a missing `Sec-WebSocket-Key`, a `Sec-WebSocket-Version` other than 13, HTTP/2)",
            ),
            (
                &[C::UpgradeRequired],
                "an HTTP/1.1 request that does not ask to upgrade (`Connection: Upgrade`, `Upgrade: websocket`), and for job events does not accept `text/event-stream` either",
            ),
            (
                &[C::Unauthorized],
                "authentication is on and the credential is missing or invalid",
            ),
            (
                &[C::Forbidden],
                "the `Origin` is not an allowed CORS origin, or the token lacks the required scope",
            ),
            (
                &[C::NotFound],
                "no job with this id that the caller may see (with authentication on, another principal's job is not found)",
            ),
            (
                &[C::RateLimitExceeded],
                "over the rate limit; retry after `Retry-After` seconds",
            ),
            (
                &[C::ServiceOverloaded, C::DependencyUnavailable, C::ShuttingDown],
                "the stream limit is reached (`streams.max_connections` for the API's streams, `streams.max_operational_connections` for `/status/stream`), the jobs database is unavailable, or the service is draining; retry after `Retry-After` seconds",
            ),
            (&[C::InternalError], "the service hit a bug"),
        ])
    }
}

/// Responses, by status, for the codes listed with why each happens.
fn documented(
    errors: &[(&[ErrorCode], &str)],
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    errors
        .iter()
        .map(|(codes, why)| {
            let status = status_of(codes[0]);
            let names = codes
                .iter()
                .map(|c| format!("`{}`", c.as_str()))
                .collect::<Vec<_>>()
                .join(" or ");
            let mut response = ResponseBuilder::new()
                .description(format!("{names}: {why}."))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Envelope",
                        ))))
                        .build(),
                );
            if matches!(status.as_u16(), 429 | 503) {
                response = response.header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1)),
                        )
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                );
            }
            if status == StatusCode::UPGRADE_REQUIRED {
                for (name, value) in [("Upgrade", "websocket"), ("Connection", "Upgrade")] {
                    response = response.header(
                        name,
                        HeaderBuilder::new()
                            .schema(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .enum_values(Some([value])),
                            )
                            .description(Some(format!("`{value}`: the protocol to upgrade to.")))
                            .build(),
                    );
                }
            }
            if matches!(status.as_u16(), 401 | 403) {
                response = response.header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("The RFC 6750 Bearer challenge."))
                        .build(),
                );
            }
            (status.as_str().to_owned(), RefOr::T(response.build()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let r = render(
            &ApiError::RateLimitExceeded {
                retry_after: Duration::from_millis(1200),
            },
            "id",
            1,
        );
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = render(
            &ApiError::ServiceOverloaded {
                retry_after: Duration::ZERO,
            },
            "id",
            1,
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn shutting_down_is_its_own_503_and_closes_the_connection() {
        let r = render(
            &ApiError::ShuttingDown {
                retry_after: Duration::from_secs(1),
            },
            "id",
            1,
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
