//! Property tests through the real router (no socket): arbitrary bodies, content types,
//! methods, paths and request IDs never cause a panic or a 500, every error is the envelope,
//! and request IDs are always valid.

use http::{Method, Request};
use proptest::prelude::*;
use tower::ServiceExt;

use crate::helpers::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/api/v1/compute/fast".to_owned()),
        Just("/api/v1/compute".to_owned()),
        Just("/api/v1/compute/intensive".to_owned()),
        Just("/health".to_owned()),
        Just("/health/ready".to_owned()),
        Just("/metrics".to_owned()),
        "/[a-zA-Z0-9/._%-]{0,40}",
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(Some("application/json".to_owned())),
        Just(Some("application/json; charset=utf-8".to_owned())),
        Just(Some("text/plain".to_owned())),
        Just(None),
        "[ -~]{0,30}".prop_map(Some),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<i64>().prop_map(|n| format!("{{\"number\": {n}}}").into_bytes()),
        (0u64..=1_000_000).prop_map(|n| format!("{{\"number\":{n}}}").into_bytes()),
        "[ -~]{0,64}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn request_id() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        "[!-~]{1,128}".prop_map(|s| Some(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Some),
    ]
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[test]
fn arbitrary_requests_never_break_the_contract() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(async {
        let mut s = test_settings();
        s.compute.intensive_rounds = 10;
        floodgate::Application::build(s).await.unwrap()
    });
    let service = app.service();
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(m in method(), p in path(), ct in content_type(), b in body(), id in request_id())| {
        let mut builder = Request::builder().method(m.clone()).uri(p.as_str()).header("host", "floodgate");
        if let Some(ct) = &ct {
            if let Ok(v) = http::HeaderValue::from_str(ct) {
                builder = builder.header("content-type", v);
            }
        }
        if let Some(id) = &id {
            if let Ok(v) = http::HeaderValue::from_bytes(id) {
                builder = builder.header("x-request-id", v);
            }
        }
        let Ok(req) = builder.body(axum::body::Body::from(b.clone())) else { return Ok(()) };
        let (status, headers, bytes) = rt.block_on(async {
            let resp = service.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
            (status, headers, bytes)
        });
        prop_assert!(status.as_u16() != 500, "500 for {m} {p}: {}", String::from_utf8_lossy(&bytes));
        let rid = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        prop_assert!(valid_id(rid), "invalid request id {rid:?}");
        if m == Method::HEAD {
            return Ok(());
        }
        if !status.is_success() && !p.starts_with("/health") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {bytes:?}")))?;
            prop_assert_eq!(v["request_id"].as_str(), Some(rid));
            prop_assert!(v["code"].is_string() && v["error"].is_string() && v["timestamp"].is_u64());
            prop_assert_eq!(v.as_object().unwrap().len(), 4);
        }
        if status.is_success() && p.starts_with("/api/v1/compute") {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let n = v["result"].as_u64().unwrap();
            prop_assert!(n <= 1_000_000_000_000);
            prop_assert_eq!(v["request_id"].as_str(), Some(rid));
        }
    });
}
