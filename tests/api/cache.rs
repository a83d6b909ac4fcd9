//! The intensive-result cache: off by default; when on, hits are marked, still get their own
//! request ID, and are counted; entries expire and the size bound holds.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn intensive(app: &TestApp, n: u64) -> Value {
    let r = app.compute("intensive", n).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn series(text: &str, name: &str, label: &str) -> f64 {
    sum_series(text, name, |l| l.contains(label))
}

#[tokio::test]
async fn without_the_cache_every_request_runs_a_job() {
    let app = spawn_app().await;
    let a = intensive(&app, 11).await;
    let b = intensive(&app, 11).await;
    assert!(a.get("cached").is_none() && b.get("cached").is_none());
    assert_ne!(a["job_id"], b["job_id"]);
    assert!(!app
        .exposition()
        .await
        .contains("floodgate_cache_requests_total"));
}

#[tokio::test]
async fn repeated_requests_are_answered_from_the_cache() {
    let app = spawn_with(|s| s.cache.enabled = true).await;
    let first = intensive(&app, 12).await;
    assert!(first.get("cached").is_none());
    assert!(first["job_id"].as_u64().unwrap() > 0);
    let second = intensive(&app, 12).await;
    assert_eq!(second["cached"], true);
    assert_eq!(second["job_id"], 0);
    assert_eq!(second["result"], first["result"]);
    assert_eq!(second["digest"], first["digest"]);
    assert_ne!(second["request_id"], first["request_id"]);
    intensive(&app, 13).await;
    // A worker counts its job just after replying: wait for the count, not the reply.
    let text = app
        .wait_for_exposition("both jobs counted", |t| {
            series(t, "floodgate_jobs_total", "\"completed\"") >= 2.0
        })
        .await;
    assert_eq!(
        series(&text, "floodgate_cache_requests_total", "\"hit\""),
        1.0
    );
    assert_eq!(
        series(&text, "floodgate_cache_requests_total", "\"miss\""),
        2.0
    );
    assert_eq!(series(&text, "floodgate_cache_entries", ""), 2.0);
    assert_eq!(
        series(&text, "floodgate_jobs_total", "\"completed\""),
        2.0,
        "the hit ran no job"
    );
}

#[tokio::test]
async fn entries_expire_and_the_size_bound_holds() {
    let app = spawn_with(|s| {
        s.cache.enabled = true;
        s.cache.ttl = Duration::from_millis(300);
    })
    .await;
    intensive(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = intensive(&app, 1).await;
    assert!(
        again.get("cached").is_none(),
        "expired entries are recomputed"
    );
    let text = app
        .wait_for_exposition("an expiry eviction", |t| {
            series(t, "floodgate_cache_evictions_total", "\"expired\"") >= 1.0
        })
        .await;
    assert!(text.contains("floodgate_cache_evictions_total"));

    let app = spawn_with(|s| {
        s.cache.enabled = true;
        s.cache.max_entries = 3;
    })
    .await;
    for n in 0..20 {
        intensive(&app, n).await;
    }
    let text = app
        .wait_for_exposition("size evictions", |t| {
            series(t, "floodgate_cache_evictions_total", "\"size\"") >= 1.0
        })
        .await;
    assert!(
        series(&text, "floodgate_cache_entries", "") <= 3.0,
        "{text}"
    );
}
