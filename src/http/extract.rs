//! Request extractors whose rejections are [`ApiError`]s, and the JSON body rules.

use std::convert::Infallible;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use serde::Deserialize;

use crate::admission::Identity;
use crate::call;
use crate::domain::jobs::Scope;
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
        let body = BodyBytes::from_request(req, state).await?;
        parse_compute_body(&body.0)
    }
}

/// Whose jobs the caller sees, from the identity admission left in the request.
impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(call::jobs_scope(parts.extensions.get::<Identity>()))
    }
}

/// A JSON request body, within the body limit: 415 for another content type, 413 past the
/// limit (on the declared length before reading anything, else as soon as it is passed).
pub struct BodyBytes(pub bytes::Bytes);

impl<S> FromRequest<S> for BodyBytes
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(req, BodyLimit::from_ref(state).0)
            .await
            .map(BodyBytes)
    }
}

/// The JSON body of a batch of jobs, within `jobs.max_batch_bytes` (a batch of 1,000 jobs is
/// larger than any single request the other routes take).
pub struct BatchBytes(pub bytes::Bytes);

impl FromRequest<AppState> for BatchBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        json_body(req, state.settings.jobs.max_batch_bytes)
            .await
            .map(BatchBytes)
    }
}

/// A JSON request body, within `limit`: 415 for another content type, 413 past the limit
/// (on the declared length before reading anything, else as soon as it is passed).
async fn json_body(req: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    if !is_json(req.headers()) {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json",
        ));
    }
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
    read_all(Limited::new(req.into_body(), limit))
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::InvalidRequest(format!("could not read the request body: {e}"))
            }
        })
}

/// A body's data, trailers ignored. A body that comes in one frame, as a small request's
/// does, is returned as it came, with no buffer of chunks allocated to hold it.
async fn read_all<B>(mut body: B) -> Result<bytes::Bytes, B::Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    let mut first: Option<bytes::Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if joined.is_empty() && first.is_none() {
            first = Some(data);
            continue;
        }
        if let Some(first) = first.take() {
            joined.extend_from_slice(&first);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
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

#[cfg(test)]
const RANGE_MESSAGE: &str = "number must be an integer between 0 and 1000000";

/// The value of a JSON number literal when it is exactly a whole number: an integer literal,
/// or a fraction or exponent literal whose exact decimal value is an integer. JSON (and JSON
/// Schema's `integer`) do not distinguish `42`, `42.0` and `4.2e1`: all three are forty-two;
/// `42.000000000000001` and `1e-400` are not whole numbers, however a float would round them.
/// `None` for fractions, negatives and anything above `max`.
fn exact_integer(literal: &str, max: u64) -> Option<u64> {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    // Plain digits, as nearly every caller writes a number: nothing to scale.
    if exponent == "0" && !negative && mantissa.bytes().all(|b| b.is_ascii_digit()) {
        return mantissa.parse::<u64>().ok().filter(|&v| v <= max);
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0); // zero, however written (`-0.0e5` too)
    }
    if negative {
        return None;
    }
    // value = significant digits × 10^scale; exponents past a billion saturate, which is
    // far outside any whole number in range either way.
    let (exp_negative, exp_digits) = match exponent.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, exponent.trim_start_matches('+')),
    };
    let magnitude = exp_digits.bytes().try_fold(0i64, |acc, b| {
        b.is_ascii_digit()
            .then(|| (acc * 10 + i64::from(b - b'0')).min(1_000_000_000))
    })?;
    let exp = if exp_negative { -magnitude } else { magnitude };
    let significant = digits.trim_end_matches('0');
    let scale = exp - frac.len() as i64 + (digits.len() - significant.len()) as i64;
    // A u64 has at most 20 digits.
    if scale < 0 || significant.len() as i64 + scale > 20 {
        return None;
    }
    let value = significant
        .parse::<u64>()
        .ok()?
        .checked_mul(10u64.checked_pow(scale as u32)?)?;
    (value <= max).then_some(value)
}

/// The fields a body's struct names (each an `Option<&RawValue>`, kept as written), read
/// from a JSON object; every failure says what was wrong. Every JSON body goes through here:
/// a derived `Deserialize` refuses a field written twice (`duplicate field`), where a map
/// would let the last copy win over the one a proxy or a log may have read.
pub fn json_fields<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    check_object(body)?;
    serde_json::from_slice(body).map_err(json_error)
}

/// An empty body, or one that is not an object (serde would read some shapes from arrays).
fn check_object(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidRequest(
            "request body is empty; expected a JSON object like {\"number\": 42}".into(),
        ));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequest(
            "request body must be a JSON object like {\"number\": 42}".into(),
        ));
    }
    Ok(())
}

fn json_error(e: serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Data => {
            format!("request body must be a JSON object like {{\"number\": 42}}: {e}")
        }
        serde_json::error::Category::Eof => format!("request body is truncated JSON: {e}"),
        _ => format!("request body is not valid JSON: {e}"),
    };
    ApiError::InvalidRequest(what)
}

/// The field `name`, as written, when it is a whole number in `0..=max` (see
/// [`exact_integer`] for the exact rule); missing, null, another type or out of range is 400.
pub fn whole_number(raw: Option<&str>, name: &str, max: u64) -> Result<u64, ApiError> {
    // Formatted only on the way out with an error: the accepted path allocates nothing.
    let range = || format!("{name} must be an integer between 0 and {max}");
    let raw = match raw {
        None | Some("null") => {
            return Err(ApiError::InvalidRequest(format!(
                "{name} is required; {}",
                range()
            )))
        }
        Some(raw) => raw,
    };
    let kind = match raw.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => {
            return exact_integer(raw, max)
                .ok_or_else(|| ApiError::InvalidRequest(format!("{} (got {raw})", range())));
        }
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        _ => "an object",
    };
    Err(ApiError::InvalidRequest(format!(
        "{} (got {kind})",
        range()
    )))
}

/// The compute body's one field, kept as written: a float would round `42.000000000000001`
/// to forty-two. (A struct, not a map: nothing is allocated on the fast path.)
#[derive(Deserialize)]
struct RawCompute<'a> {
    #[serde(default, borrow)]
    number: Option<&'a serde_json::value::RawValue>,
}

/// Decode a compute body; every failure says what was wrong.
pub fn parse_compute_body(body: &[u8]) -> Result<ComputeInput, ApiError> {
    let raw: RawCompute = json_fields(body)?;
    let number = whole_number(raw.number.map(|n| n.get()), "number", MAX_NUMBER)?;
    Ok(ComputeInput { number })
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
    fn plain_digits_take_the_short_way_to_the_same_answer() {
        // The short way (digits only) against the general rule (digits with a zero fraction,
        // which the short way does not take), across u64's edge.
        for digits in [
            "0",
            "7",
            "42",
            "1000000",
            "1000001",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "000000000000000000000000042",
        ] {
            for max in [1_000_000, u64::MAX] {
                assert_eq!(
                    exact_integer(digits, max),
                    exact_integer(&format!("{digits}.0"), max),
                    "{digits} within {max}"
                );
            }
        }
        assert_eq!(
            exact_integer("18446744073709551615", u64::MAX),
            Some(u64::MAX)
        );
        assert_eq!(exact_integer("18446744073709551616", u64::MAX), None);
    }

    #[tokio::test]
    async fn a_body_is_read_whole_and_one_frame_is_not_copied() {
        use http_body::Frame;
        use http_body_util::StreamBody;

        let chunks = |parts: Vec<Frame<bytes::Bytes>>| {
            StreamBody::new(futures_util::stream::iter(
                parts.into_iter().map(Ok::<_, Infallible>),
            ))
        };
        let one = bytes::Bytes::from_static(b"{\"number\": 42}");
        let read = read_all(chunks(vec![Frame::data(one.clone())]))
            .await
            .unwrap();
        assert_eq!(read, one);
        assert_eq!(
            read.as_ptr(),
            one.as_ptr(),
            "the one frame is returned as it came"
        );

        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-check", http::HeaderValue::from_static("1"));
        let frames = vec![
            Frame::data(bytes::Bytes::new()),
            Frame::data(bytes::Bytes::from_static(b"{\"num")),
            Frame::data(bytes::Bytes::new()),
            Frame::data(bytes::Bytes::from_static(b"ber\": ")),
            Frame::data(bytes::Bytes::from_static(b"42}")),
            Frame::trailers(trailers),
        ];
        assert_eq!(read_all(chunks(frames)).await.unwrap(), one);
        assert!(read_all(chunks(vec![])).await.unwrap().is_empty());
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
        for (body, n) in [
            (r#"{"number":4200e-2}"#, 42),
            (r#"{"number":0.042E+3}"#, 42),
            (r#"{"number":1e6}"#, 1_000_000),
            (r#"{"number":1000000.000}"#, 1_000_000),
            (r#"{"number":-0.0}"#, 0),
            (r#"{"number":0e-400}"#, 0),
            (r#"{"number":420000000000e-10}"#, 42),
        ] {
            assert_eq!(
                parse_compute_body(body.as_bytes()).unwrap().number,
                n,
                "{body}"
            );
        }
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
        // The exact decimal value decides, not a float's rounding of it.
        for not_whole in [
            r#"{"number": 42.000000000000001}"#,
            r#"{"number": 1000000.0000000001}"#,
            r#"{"number": 1e-400}"#,
            r#"{"number": 1e400}"#,
            r#"{"number": 1000001.0}"#,
            r#"{"number": 10e5000000000000000000}"#,
            r#"{"number": -1e0}"#,
        ] {
            assert!(err(not_whole).contains(RANGE_MESSAGE), "{not_whole}");
        }
        assert!(err("").contains("empty"));
        assert!(err(r#"{"number": 1"#).contains("truncated"));
        assert!(err(r#"{"number": 1} trailing"#).contains("not valid JSON"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"number": 1, "number": 2}"#).contains("duplicate field `number`"));
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
