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
