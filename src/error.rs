//! The HTTP boundary's one error type and the JSON envelope it becomes.
//!
//! Handlers, extractors and layers return [`ApiError`]; its `IntoResponse` only tags an empty
//! response with the error. The request-context layer, which knows the request ID, turns the
//! tag into the envelope `{"request_id","error","code","timestamp"}` in [`render`] — the single
//! place errors become bodies.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// Every error a client can receive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 `INVALID_REQUEST`: the body is not a valid request; the text says why.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `UNAUTHORIZED`, with a `WWW-Authenticate` challenge. The text never contains the
    /// credential.
    #[error("{reason}")]
    Unauthorized {
        reason: &'static str,
        /// A credential was sent but is not valid (RFC 6750 `invalid_token`).
        invalid: bool,
    },
    /// 403 `FORBIDDEN`: the credential is valid but lacks the required scope.
    #[error("token lacks the required scope `{0}`")]
    Forbidden(String),
    /// 404 `NOT_FOUND`.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405 `METHOD_NOT_ALLOWED`.
    #[error("method {0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// 408 `TIMEOUT`: the request took longer than the configured request timeout.
    #[error("request timeout")]
    Timeout,
    /// 413 `PAYLOAD_TOO_LARGE`.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `UNSUPPORTED_MEDIA_TYPE`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429 `RATE_LIMIT_EXCEEDED`, with `Retry-After`.
    #[error("Rate limit exceeded")]
    RateLimited { retry_after: Duration },
    /// 503 `SERVICE_OVERLOADED`, with `Retry-After`: the job queue is full.
    #[error("job queue full")]
    Overloaded { retry_after: Duration },
    /// 503 `PROFILER_BUSY`, with `Retry-After`: another profile is being taken.
    #[error("a profile is already being taken")]
    ProfilerBusy { retry_after: Duration },
    /// 500 `PROCESSING_ERROR`: the job failed on its worker.
    #[error("{0}")]
    Processing(String),
    /// 500 `INTERNAL_ERROR`: a bug; details go to the log, not the client.
    #[error("internal server error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded { .. } | ApiError::ProfilerBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Processing(_) | ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The documented `code` string.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "INVALID_REQUEST",
            ApiError::Unauthorized { .. } => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::Timeout => "TIMEOUT",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            ApiError::Overloaded { .. } => "SERVICE_OVERLOADED",
            ApiError::ProfilerBusy { .. } => "PROFILER_BUSY",
            ApiError::Processing(_) => "PROCESSING_ERROR",
            ApiError::Internal => "INTERNAL_ERROR",
        }
    }

    /// Every `code` a client can receive, for the API document.
    pub const CODES: [&'static str; 13] = [
        "INVALID_REQUEST",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "TIMEOUT",
        "PAYLOAD_TOO_LARGE",
        "UNSUPPORTED_MEDIA_TYPE",
        "RATE_LIMIT_EXCEEDED",
        "SERVICE_OVERLOADED",
        "PROFILER_BUSY",
        "PROCESSING_ERROR",
        "INTERNAL_ERROR",
    ];

    /// The RFC 6750 challenge for authentication failures.
    fn challenge(&self) -> Option<String> {
        match self {
            ApiError::Unauthorized { invalid: false, .. } => {
                Some(format!("Bearer realm=\"{REALM}\""))
            }
            ApiError::Unauthorized { invalid: true, .. } => {
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
            }
            ApiError::Forbidden(scope) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::Overloaded { retry_after }
            | ApiError::ProfilerBusy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "floodgate";

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
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ApiError::CODES))
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
    let mut response = (err.status(), body).into_response();
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
    if let Some(challenge) = err.challenge() {
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_for_the_document() {
        let d = Duration::ZERO;
        for err in [
            ApiError::InvalidRequest(String::new()),
            ApiError::Unauthorized {
                reason: "",
                invalid: true,
            },
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::MethodNotAllowed(String::new()),
            ApiError::Timeout,
            ApiError::PayloadTooLarge(0),
            ApiError::UnsupportedMediaType,
            ApiError::RateLimited { retry_after: d },
            ApiError::Overloaded { retry_after: d },
            ApiError::ProfilerBusy { retry_after: d },
            ApiError::Processing(String::new()),
            ApiError::Internal,
        ] {
            assert!(ApiError::CODES.contains(&err.code()), "{}", err.code());
        }
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let r = render(
            &ApiError::RateLimited {
                retry_after: Duration::from_millis(1200),
            },
            "id",
            1,
        );
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = render(
            &ApiError::Overloaded {
                retry_after: Duration::ZERO,
            },
            "id",
            1,
        );
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
