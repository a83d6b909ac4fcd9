use std::io::{Read, Write};
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn invalid_bodies_are_400_with_a_reason() {
    let app = spawn_app().await;
    let cases = [
        ("{}", "number is required"),
        (r#"{"number": null}"#, "number is required"),
        (r#"{"number": "42"}"#, "between 0 and 1000000"),
        (r#"{"number": 1.5}"#, "between 0 and 1000000"),
        (r#"{"number": -1}"#, "between 0 and 1000000"),
        (r#"{"number": 1000001}"#, "between 0 and 1000000"),
        (
            r#"{"number": 99999999999999999999999}"#,
            "between 0 and 1000000",
        ),
        ("{\"number\": 1", "JSON"),
        ("not json", "JSON"),
        ("", "empty"),
        (r#"{"number": 1} {"number": 2}"#, "JSON"),
        ("[42]", "JSON object"),
    ];
    for endpoint in ["fast", "intensive"] {
        for (body, reason) in cases {
            let r = app
                .post_json(&format!("/api/v1/compute/{endpoint}"), body)
                .await;
            let env = assert_envelope(r, 400, "INVALID_REQUEST").await;
            let msg = env["error"].as_str().unwrap();
            assert!(
                msg.contains(reason),
                "{body:?}: {msg:?} should mention {reason:?}"
            );
        }
    }
}

#[tokio::test]
async fn content_type_must_be_json() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/api/v1/compute/fast"))
        .body(r#"{"number": 1}"#)
        .send()
        .await
        .unwrap();
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let r = app
        .client
        .post(app.url("/api/v1/compute/intensive"))
        .header("content-type", "text/plain")
        .body(r#"{"number": 1}"#)
        .send()
        .await
        .unwrap();
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let app = spawn_with(|s| s.server.max_body_bytes = 1024).await;
    let big = format!(r#"{{"number": 1, "pad": "{}"}}"#, "x".repeat(2000));
    assert_envelope(
        app.post_json("/api/v1/compute/fast", &big).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
}

#[tokio::test]
async fn a_huge_declared_body_is_refused_without_being_read() {
    let app = spawn_app().await;
    let addr = app.addr;
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /api/v1/compute/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"number\":",
            100 * 1024 * 1024
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("PAYLOAD_TOO_LARGE"), "{response}");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let app = spawn_app().await;
    assert_envelope(app.get("/nope").await, 404, "NOT_FOUND").await;
    assert_envelope(
        app.get("/api/v1/compute/fast").await,
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
    let r = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/health"))
        .header("x-big", "a".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
}

/// The whole stack, driven in-process without a socket: routing, the envelope and its
/// headers are the same as over the network.
#[tokio::test]
async fn the_service_answers_without_a_socket() {
    use tower::ServiceExt;
    let app = floodgate::Application::build(test_settings())
        .await
        .unwrap();
    let request = http::Request::get("/no/such/route")
        .header("host", "floodgate")
        .header("x-request-id", "in-process-1")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.service().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "in-process-1");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["request_id"], "in-process-1");
}
