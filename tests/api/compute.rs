use crate::helpers::*;
use floodgate::Application;
use serde_json::Value;

#[tokio::test]
async fn fast_squares_the_number() {
    let app = spawn_app().await;
    for path in ["/api/v1/compute/fast", "/api/v1/compute"] {
        let r = app.post_json(path, r#"{"number": 42}"#).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"], 1764);
        assert_eq!(body["job_id"], 0);
        assert_eq!(body["request_id"], id.as_str());
        assert!(body["latency_us"].is_u64());
        assert!(body["timestamp"].as_u64().unwrap() > 1_600_000_000);
        assert!(body.get("digest").is_none());
    }
    let body: Value = app.compute("fast", 1_000_000).await.json().await.unwrap();
    assert_eq!(body["result"], 1_000_000_000_000u64);
}

#[tokio::test]
async fn intensive_runs_on_the_pool_with_increasing_job_ids() {
    let app = spawn_app().await;
    let a: Value = app.compute("intensive", 42).await.json().await.unwrap();
    let b: Value = app.compute("intensive", 42).await.json().await.unwrap();
    assert_eq!(a["result"], 1764);
    assert_eq!(a["digest"], 600_042);
    assert!(b["job_id"].as_u64().unwrap() > a["job_id"].as_u64().unwrap());
    assert!(a["job_id"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn rounds_are_configurable() {
    let app = spawn_with(|s| s.compute.intensive_rounds = 3).await;
    let body: Value = app.compute("intensive", 7).await.json().await.unwrap();
    assert_eq!(body["digest"], 7 * 31 * 31 * 31);
}

#[tokio::test]
async fn hundreds_of_concurrent_intensive_requests_each_get_their_own_result() {
    // Every one of the burst is admitted by the fixed queue alone; with the adaptive limits,
    // part of a burst this far past what two workers serve within the target delay may be
    // refused (tests/api/overload.rs).
    let app = spawn_with(|s| s.admission.adaptive = false).await;
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = (0..400u64)
        .map(|i| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let n = i * 2_500 + 1;
                let r = app.compute("intensive", n).await;
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["result"], n * n, "request {i}");
                assert_eq!(
                    body["digest"],
                    floodgate::pool::intensive_digest(n, 10_000),
                    "request {i}"
                );
                body["job_id"].as_u64().unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 400, "job ids are unique");
}

#[tokio::test]
async fn a_panicking_handler_becomes_500_and_the_server_keeps_serving() {
    use floodgate::http::{RouteSpec, Surface};
    let route = RouteSpec::new(http::Method::GET, "/api/v1/boom", Surface::Api, boom);
    let app = spawn_builder(Application::builder(test_settings()).with_route(route)).await;
    let r = app.get("/api/v1/boom").await;
    let body = assert_envelope(r, 500, "INTERNAL_ERROR").await;
    assert!(
        !body["error"].as_str().unwrap().contains("kaboom"),
        "panic text is not leaked"
    );
    assert_eq!(app.compute("fast", 3).await.status(), 200);
    // An embedder's route is labelled as itself, not lumped in with unknown paths.
    let exposition = app.exposition().await;
    assert!(
        exposition.contains(r#"http_route="/api/v1/boom",http_response_status_code="500""#),
        "{exposition}"
    );
}

fn panics_on_13(n: u64, rounds: u32) -> u64 {
    assert!(n != 13, "unlucky number");
    floodgate::pool::intensive_digest(n, rounds)
}

#[tokio::test]
async fn a_panicking_job_is_a_processing_error_for_that_request_only() {
    let app = spawn_builder(Application::builder(test_settings()).with_kernel(panics_on_13)).await;
    assert_envelope(app.compute("intensive", 13).await, 500, "PROCESSING_ERROR").await;
    for n in [1, 2, 3, 4] {
        assert_eq!(app.compute("intensive", n).await.status(), 200);
    }
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(
        health["status"]["worker_pool"], "healthy",
        "the worker was replaced"
    );
    let text = app.exposition().await;
    assert_eq!(
        sum_series(&text, "floodgate_jobs_total", |l| l.contains("failed")),
        1.0
    );
}

async fn boom() -> &'static str {
    panic!("kaboom")
}

/// The plain listener speaks HTTP/2 to a client that starts with its preface (h2c, prior
/// knowledge, as gRPC clients do), beside HTTP/1.1; many requests share one connection.
#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_is_served() {
    let app = spawn_app().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let sends = (0..50u64).map(|n| {
        h2.post(app.url("/api/v1/compute/fast"))
            .header("content-type", "application/json")
            .body(format!("{{\"number\":{n}}}"))
            .send()
    });
    let mut ids = std::collections::HashSet::new();
    for (n, r) in futures_util::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["result"], (n * n) as u64);
        ids.insert(body["request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 50);
    // HTTP/1.1 on the same listener is unchanged.
    let r = client().get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

/// The protocol is told by the first bytes however they are split: a connection that has
/// sent part of the HTTP/2 preface, or the start of an HTTP/1.1 request, is waited for, not
/// answered or closed, and then served in the protocol it turns out to speak.
#[tokio::test]
async fn the_protocol_is_told_from_first_bytes_however_they_arrive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let app = spawn_app().await;
    // Nothing comes back for a while: the server waits for the rest.
    async fn waits(s: &mut tokio::net::TcpStream) {
        let mut byte = [0u8; 1];
        let quiet = std::time::Duration::from_millis(200);
        let read = tokio::time::timeout(quiet, s.read(&mut byte)).await;
        assert!(read.is_err(), "answered or closed before the rest came");
    }

    let mut h2 = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    h2.set_nodelay(true).unwrap();
    h2.write_all(&PREFACE[..10]).await.unwrap();
    waits(&mut h2).await;
    h2.write_all(&PREFACE[10..]).await.unwrap();
    // An empty SETTINGS frame; the server's first frame is its own SETTINGS.
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut frame = [0u8; 9];
    h2.read_exact(&mut frame).await.unwrap();
    assert_eq!(frame[3], 4, "an HTTP/2 SETTINGS frame, got {frame:?}");

    let request = format!(
        "POST /api/v1/compute/fast HTTP/1.1\r\nHost: {}\r\ncontent-type: application/json\r\n\
         content-length: 13\r\nconnection: close\r\n\r\n{{\"number\":12}}",
        app.addr
    );
    let mut h1 = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    h1.set_nodelay(true).unwrap();
    h1.write_all(&request.as_bytes()[..3]).await.unwrap();
    waits(&mut h1).await;
    h1.write_all(&request.as_bytes()[3..40]).await.unwrap();
    waits(&mut h1).await;
    h1.write_all(&request.as_bytes()[40..]).await.unwrap();
    let mut answer = String::new();
    h1.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"result\":144"), "{answer}");
}
