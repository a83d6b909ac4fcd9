//! Request extractors whose rejections are [`ApiError`]s, and the JSON body rules.

use axum::extract::{FromRef, FromRequest, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use crate::domain::{ComputeInput, MAX_NUMBER};
use crate::error::ApiError;
use crate::state::AppState;

/// A compute request: `{"number": n}` with `n` an integer in `0..=1_000_000`, read from a JSON body.
impl<S> FromRequest<S> for ComputeInput
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = BodyLimit::from_ref(state).0;
        // Refuse on the declared length before reading anything.
        if let Some(len) = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit as u64 {
                return Err(ApiError::PayloadTooLarge(limit));
            }
        }
        // Stop reading as soon as the limit is passed, whatever the client declared.
        let body = Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::InvalidRequest(format!("could not read the request body: {e}"))
                }
            })?
            .to_bytes();
        parse_compute_body(&body)
    }
}

/// The request body of the compute endpoints, as the API document describes it (decoding is
/// done by [`parse_compute_body`], which accepts exactly this).
#[derive(Debug, utoipa::ToSchema)]
#[schema(example = json!({"number": 42}))]
pub struct ComputeRequest {
    /// The number to square.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub number: u64,
}

/// The body-size limit in force, taken from the state so the extractor can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        BodyLimit(state.settings.server.max_body_bytes)
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[derive(Deserialize)]
struct RawCompute {
    #[serde(default)]
    number: Option<serde_json::Value>,
}

const RANGE_MESSAGE: &str = "number must be an integer between 0 and 1000000";

/// The number's value when it is a whole number. JSON (and JSON Schema's `integer`) do not
/// distinguish `42`, `42.0` and `4.2e1`; all three are forty-two.
fn integer(n: &serde_json::Number) -> Option<u64> {
    if let Some(n) = n.as_u64() {
        return Some(n);
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.fract() == 0.0 && (0.0..=MAX_NUMBER as f64).contains(&f))
        .then_some(f as u64)
}

/// Decode a compute body; every failure says what was wrong.
pub fn parse_compute_body(body: &[u8]) -> Result<ComputeInput, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest(
            "request body is empty; expected a JSON object like {\"number\": 42}".into(),
        ));
    }
    // serde would also read a struct from an array (`[1]`); only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "request body must be a JSON object like {\"number\": 42}".into(),
        ));
    }
    let raw: RawCompute = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                format!("request body must be a JSON object like {{\"number\": 42}}: {e}")
            }
            serde_json::error::Category::Eof => format!("request body is truncated JSON: {e}"),
            _ => format!("request body is not valid JSON: {e}"),
        };
        ApiError::InvalidRequest(what)
    })?;
    match raw.number {
        None | Some(serde_json::Value::Null) => Err(ApiError::InvalidRequest(format!(
            "number is required; {RANGE_MESSAGE}"
        ))),
        Some(serde_json::Value::Number(n)) => match integer(&n) {
            Some(n) if n <= MAX_NUMBER => Ok(ComputeInput { number: n }),
            _ => Err(ApiError::InvalidRequest(format!(
                "{RANGE_MESSAGE} (got {n})"
            ))),
        },
        Some(other) => {
            let kind = match other {
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(ApiError::InvalidRequest(format!(
                "{RANGE_MESSAGE} (got {kind})"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse_compute_body(body.as_bytes()) {
            Err(ApiError::InvalidRequest(msg)) => msg,
            other => panic!("expected INVALID_REQUEST for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_valid_range() {
        assert_eq!(parse_compute_body(br#"{"number": 42}"#).unwrap().number, 42);
        assert_eq!(parse_compute_body(br#"{"number":0}"#).unwrap().number, 0);
        // Whole numbers written as floats are still whole numbers (JSON Schema agrees).
        assert_eq!(
            parse_compute_body(br#"{"number":42.0}"#).unwrap().number,
            42
        );
        assert_eq!(
            parse_compute_body(br#"{"number":4.2e1}"#).unwrap().number,
            42
        );
        assert_eq!(
            parse_compute_body(br#" {"number":1000000} "#)
                .unwrap()
                .number,
            1_000_000
        );
        assert_eq!(
            parse_compute_body(br#"{"number":5,"extra":true}"#)
                .unwrap()
                .number,
            5
        );
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        assert!(err("{}").contains("number is required"));
        assert!(err(r#"{"number": null}"#).contains("number is required"));
        assert!(err(r#"{"number": "42"}"#).contains("(got a string)"));
        assert!(err(r#"{"number": true}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": 4.5}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": -0.5}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": 1000000.5}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": -1}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": 1000001}"#).contains(RANGE_MESSAGE));
        assert!(err(r#"{"number": 1e400}"#).contains("JSON"));
        assert!(err("").contains("empty"));
        assert!(err(r#"{"number": 1"#).contains("truncated"));
        assert!(err(r#"{"number": 1} trailing"#).contains("not valid JSON"));
        assert!(err("[1]").contains("JSON object"));
    }

    #[test]
    fn content_type_rules() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::CONTENT_TYPE, v.parse().unwrap());
            is_json(&m)
        };
        assert!(h("application/json"));
        assert!(h("application/json; charset=utf-8"));
        assert!(h("Application/JSON"));
        assert!(h("application/vnd.api+json"));
        assert!(!h("text/plain"));
        assert!(!h("application/jsonx"));
        assert!(!is_json(&http::HeaderMap::new()));
    }
}
