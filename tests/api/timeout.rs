use std::time::{Duration, Instant};

use crate::helpers::*;
use floodgate::Application;

#[tokio::test]
async fn slow_requests_get_one_408_and_their_job_is_abandoned() {
    let mut settings = test_settings();
    settings.server.request_timeout = Duration::from_millis(200);
    settings.pool.workers = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(sleepy_kernel)).await;
    let started = Instant::now();
    // The first job occupies the worker past the deadline; the second times out while queued.
    let (a, b) = tokio::join!(app.compute("intensive", 600), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        app.compute("intensive", 600).await
    });
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_envelope(a, 408, "TIMEOUT").await;
    assert_envelope(b, 408, "TIMEOUT").await;
    // Wait for the running job to finish: the queued one must be skipped, not computed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let text = app.exposition().await;
    assert_eq!(
        sum_series(&text, "floodgate_jobs_total", |l| l.contains("cancelled")),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum_series(&text, "floodgate_jobs_total", |l| l
            .contains("\"completed\"")),
        1.0
    );
    // Fast requests are unaffected.
    assert_eq!(app.compute("fast", 5).await.status(), 200);
}
