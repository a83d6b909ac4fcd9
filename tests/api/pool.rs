use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;
use floodgate::Application;

#[tokio::test]
async fn a_full_queue_is_refused_at_once_with_503() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 2;
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(sleepy_kernel)).await);
    // One running, two queued: the rest must be refused immediately.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let started = Instant::now();
                let r = app.compute("intensive", 300).await;
                (r, started.elapsed())
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (r, elapsed) = t.await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert!(
                    elapsed < Duration::from_millis(250),
                    "refusal took {elapsed:?}"
                );
                assert_eq!(r.headers()["retry-after"], "1");
                assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert_eq!(ok + refused, 8);
    let stats = app.stats().await;
    assert_eq!(stats["overloaded_count"], refused);
    assert_eq!(stats["rejected_count"], refused);
}

#[tokio::test]
async fn health_stays_fast_while_every_worker_is_busy() {
    let mut settings = test_settings();
    settings.pool.workers = 2;
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(sleepy_kernel)).await);
    let busy: Vec<_> = (0..6)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.compute("intensive", 400).await.status() })
        })
        .collect();
    // Both workers busy and jobs waiting: the queue depth is read live.
    let started = Instant::now();
    while app.stats().await["queue_depth"].as_u64().unwrap() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "jobs did not queue up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..10 {
        let started = Instant::now();
        let r = app.get("/health").await;
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "health took {:?}",
            started.elapsed()
        );
    }
    for t in busy {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn health_turns_unhealthy_when_the_queue_is_nearly_full() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 10;
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(sleepy_kernel)).await);
    let busy: Vec<_> = (0..11)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.compute("intensive", 200).await.status() })
        })
        .collect();
    // One job running and ten queued: wait until all have arrived, then the queue is full.
    let started = Instant::now();
    while app.stats().await["queue_depth"] != 10 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "jobs did not queue up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app.get("/health").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["status"]["worker_pool"]
            .as_str()
            .unwrap()
            .contains("queue"),
        "{body}"
    );
    for t in busy {
        t.await.unwrap();
    }
    assert_eq!(app.get("/health").await.status(), 200);
}
