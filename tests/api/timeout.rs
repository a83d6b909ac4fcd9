use std::time::{Duration, Instant};

use crate::helpers::*;
use floodgate::Application;

#[tokio::test]
async fn slow_requests_get_one_408_and_their_job_is_abandoned() {
    let mut settings = test_settings();
    settings.server.request_timeout = Duration::from_millis(200);
    settings.pool.workers = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let started = Instant::now();
    // One job holds the only worker past the deadline; the other times out while queued.
    let (a, b) = tokio::join!(
        app.compute("intensive", gate.number()),
        app.compute("intensive", gate.number())
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_envelope(a, 408, "TIMEOUT").await;
    assert_envelope(b, 408, "TIMEOUT").await;
    // Once the running job finishes, the queued one must be skipped, not computed.
    drop(gate);
    let jobs = |text: &str, outcome: &str| {
        sum_series(text, "floodgate_jobs_total", |l| {
            l.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    let text = app
        .wait_for_exposition("both jobs leaving the pool", |text| {
            jobs(text, "completed") + jobs(text, "cancelled") >= 2.0
        })
        .await;
    assert_eq!(jobs(&text, "cancelled"), 1.0, "{text}");
    assert_eq!(jobs(&text, "completed"), 1.0, "{text}");
    // Fast requests are unaffected.
    assert_eq!(app.compute("fast", 5).await.status(), 200);
}

/// A job whose caller timed out gives its queue slot back at once: later requests queue
/// (and time out in their turn) instead of being refused as overload by a queue that only
/// abandoned jobs fill.
#[tokio::test]
async fn timed_out_jobs_free_their_queue_slots() {
    let mut settings = test_settings();
    settings.server.request_timeout = Duration::from_millis(100);
    settings.pool.workers = 1;
    settings.pool.queue_size = 2;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    // The first holds the worker; the next two fill the queue; all three time out.
    let first = {
        let (url, n) = (app.url("/api/v1/compute/intensive"), gate.number());
        tokio::spawn(async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(format!("{{\"number\":{n}}}"))
                .send()
                .await
                .unwrap()
        })
    };
    app.wait_for_busy_workers(1).await;
    let (b, c) = tokio::join!(
        app.compute("intensive", gate.number()),
        app.compute("intensive", gate.number())
    );
    for r in [first.await.unwrap(), b, c] {
        assert_envelope(r, 408, "TIMEOUT").await;
    }
    let stats = app.stats().await;
    assert_eq!(
        stats["queue_depth"], 0,
        "nobody waits for the queued jobs: {stats}"
    );
    // The worker is still held, yet the queue has room again.
    for _ in 0..3 {
        assert_envelope(
            app.compute("intensive", gate.number()).await,
            408,
            "TIMEOUT",
        )
        .await;
    }
    assert_eq!(app.stats().await["overloaded_count"], 0);
    drop(gate);
}

/// A client that gives up and closes its connection mid-request: the request is counted and
/// logged as 499, the in-flight gauge comes back down, and its queued job is skipped.
#[tokio::test]
async fn a_client_that_goes_away_is_counted_as_499_and_not_left_in_flight() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(app.url("/api/v1/compute/intensive"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"number": {}}}"#, gate.number()))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    app.wait_for_stats("the request no longer in flight", |s| {
        s["active_requests"] == 0
    })
    .await;
    let text = app
        .wait_for_exposition("the 499", |t| {
            t.contains("http_response_status_code=\"499\"")
        })
        .await;
    assert_eq!(
        sum_series(&text, "http_server_request_duration_seconds_count", |l| l
            .contains("http_response_status_code=\"499\"")),
        1.0
    );
    drop(gate);
}

/// A client that closes its connection while its body is still being read: the read fails,
/// the request leaves the in-flight gauge, and it is counted once, as a request whose body could
/// not be read (400, as nginx logs it), never as served. The early end reaches the body reader
/// before the connection is seen closed, so the answer is 400 every time, not 499.
#[tokio::test]
async fn a_client_that_goes_away_mid_body_is_not_left_in_flight() {
    let app = spawn_app().await;
    let s = app.request_stuck_mid_body().await;
    drop(s);
    app.wait_for_stats("the request no longer in flight", |s| {
        s["active_requests"] == 0
    })
    .await;
    let text = app
        .wait_for_exposition("the request counted", |t| {
            t.contains("http_route=\"/api/v1/compute/fast\"")
        })
        .await;
    let counted = |status: &str| {
        sum_series(&text, "http_server_request_duration_seconds_count", |l| {
            l.contains("http_route=\"/api/v1/compute/fast\"")
                && l.contains(&format!("http_response_status_code=\"{status}\""))
        })
    };
    assert_eq!(counted("400"), 1.0, "{text}");
    assert_eq!(counted("499") + counted("200"), 0.0, "{text}");
}
