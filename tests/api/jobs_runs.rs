//! API v2 job semantics on SQLite: retries with backoff, discarded jobs and asking for a
//! retry, jobs scheduled for later, and batches that commit or fail as a whole.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use floodgate::Application;
use serde_json::Value;

use crate::helpers::*;

/// Fails the first two runs of number 7, every run of number 13; digests the rest.
fn flaky(number: u64, rounds: u32) -> u64 {
    static SEVENS: AtomicU32 = AtomicU32::new(0);
    match number {
        7 if SEVENS.fetch_add(1, Ordering::SeqCst) < 2 => panic!("seven fails at first"),
        13 => panic!("thirteen always fails"),
        _ => floodgate::pool::intensive_digest(number, rounds),
    }
}

async fn app_with(kernel: floodgate::domain::Kernel) -> TestApp {
    let mut s = test_settings();
    s.jobs.retry_backoff = Duration::from_millis(200);
    s.jobs.retry_backoff_max = Duration::from_secs(10);
    s.jobs.max_attempts = 3;
    s.jobs.poll_interval = Duration::from_millis(100);
    spawn_builder(Application::builder(s).with_kernel(kernel)).await
}

async fn post(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn job(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v2/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// Poll the job until `done` holds (20 s at most).
async fn wait_for(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let j = job(app, id).await;
        if done(&j) {
            return j;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "stuck: {j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn micros(t: &Value) -> i64 {
    let t = humantime::parse_rfc3339(t.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_failing_run_is_retried_after_its_backoff_then_discarded_then_retried_on_request() {
    let app = app_with(flaky).await;
    let seven = id_of(
        &post(&app, "/api/v2/jobs", r#"{"number": 7, "rounds": 10}"#)
            .await
            .json()
            .await
            .unwrap(),
    );
    let thirteen = id_of(
        &post(&app, "/api/v2/jobs", r#"{"number": 13, "rounds": 10}"#)
            .await
            .json()
            .await
            .unwrap(),
    );

    // Seven fails twice, then succeeds on its third attempt, each after its backoff.
    let done = wait_for(&app, &seven, |j| j["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert_eq!(done["digest"], floodgate::pool::intensive_digest(7, 10));
    let history = done["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{done}");
    for (i, attempt) in history.iter().enumerate() {
        assert_eq!(attempt["attempt"], i + 1);
        let failed = attempt.get("error").is_some();
        assert_eq!(failed, i < 2, "{attempt}");
    }
    for i in 0..2 {
        let gap = micros(&history[i + 1]["started_at"]) - micros(&history[i]["finished_at"]);
        let backoff = 200_000 << i;
        assert!(
            gap >= backoff,
            "attempt {}: {gap} µs after the last, backoff {backoff}",
            i + 2
        );
    }

    // Thirteen always fails: discarded after its third attempt, each error kept.
    let discarded = wait_for(&app, &thirteen, |j| j["status"] == "discarded").await;
    assert_eq!(discarded["attempts"], 3, "{discarded}");
    assert!(discarded["error"]
        .as_str()
        .unwrap()
        .contains("thirteen always fails"));
    let errors = discarded["history"].as_array().unwrap();
    assert!(errors
        .iter()
        .all(|a| a["error"].as_str().unwrap().contains("thirteen")));
    let counted = app
        .wait_for_exposition("the discard counted", |t| {
            sum_series(t, "floodgate_jobs_finished_total", |l| {
                l.contains("\"discarded\"")
            }) == 1.0
        })
        .await;
    assert_eq!(
        sum_series(&counted, "floodgate_job_retries_total", |_| true),
        4.0
    );

    // Retry brings it back, attempts counted afresh, history kept; a job that did not fail
    // cannot be retried.
    let again = post(&app, &format!("/api/v2/jobs/{thirteen}/retry"), "").await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["status"].as_str(), again["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    let discarded = wait_for(&app, &thirteen, |j| j["status"] == "discarded").await;
    assert_eq!(
        discarded["history"].as_array().unwrap().len(),
        6,
        "{discarded}"
    );
    let refused = post(&app, &format!("/api/v2/jobs/{seven}/retry"), "").await;
    assert_envelope(refused, 409, "JOB_NOT_RETRYABLE").await;
    let unknown = post(
        &app,
        &format!("/api/v2/jobs/{}/retry", uuid::Uuid::now_v7()),
        "",
    )
    .await;
    assert_envelope(unknown, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_scheduled_job_is_not_run_before_its_time() {
    let app = app_with(floodgate::pool::intensive_digest).await;
    let r = post(
        &app,
        "/api/v2/jobs",
        r#"{"number": 3, "rounds": 10, "delay": "1500ms"}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    let submitted: Value = r.json().await.unwrap();
    assert_eq!(submitted["status"], "scheduled");
    let run_at = micros(&submitted["run_at"]);
    assert!(run_at >= micros(&submitted["created_at"]) + 1_500_000);
    let done = wait_for(&app, &id_of(&submitted), |j| j["status"] == "succeeded").await;
    let started = micros(&done["history"][0]["started_at"]);
    assert!(started >= run_at, "claimed {} µs early", run_at - started);

    // An absolute time, in the past: at once. Both, or nonsense: 400.
    let past = post(
        &app,
        "/api/v2/jobs",
        r#"{"number": 3, "run_at": "2020-01-01T00:00:00Z"}"#,
    )
    .await;
    assert_eq!(past.json::<Value>().await.unwrap()["status"], "queued");
    for bad in [
        r#"{"number": 3, "run_at": "2030-01-01T00:00:00Z", "delay": "1s"}"#,
        r#"{"number": 3, "run_at": "tomorrow"}"#,
        r#"{"number": 3, "delay": "soon"}"#,
    ] {
        assert_envelope(
            post(&app, "/api/v2/jobs", bad).await,
            400,
            "INVALID_REQUEST",
        )
        .await;
    }
    // Well-formed, but further ahead than a job may wait: 422.
    for far in [
        r#"{"number": 3, "delay": "400d"}"#,
        r#"{"number": 3, "run_at": "9999-12-31T23:59:59+01:00"}"#,
    ] {
        assert_envelope(
            post(&app, "/api/v2/jobs", far).await,
            422,
            "SCHEDULE_OUT_OF_RANGE",
        )
        .await;
    }
}

#[tokio::test]
async fn a_batch_commits_or_fails_as_a_whole_and_keys_behave_as_one_by_one() {
    let app = app_with(floodgate::pool::intensive_digest).await;
    let count = |app: &TestApp| {
        let url = app.url("/api/v2/jobs?limit=1000");
        async move {
            let page = get_json(&url).await;
            page["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("not a page of jobs: {page}"))
                .len()
        }
    };
    let earlier: Value = app
        .client
        .post(app.url("/api/v2/jobs"))
        .header("content-type", "application/json")
        .header("idempotency-key", "k-earlier")
        .body(r#"{"number": 1, "rounds": 10}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // 1,000 jobs, the last reusing a key with another body: nothing is committed.
    let mut jobs: Vec<String> = (0..999)
        .map(|n| format!(r#"{{"number": {n}, "rounds": 10}}"#))
        .collect();
    jobs.push(r#"{"number": 2, "rounds": 10, "idempotency_key": "k-earlier"}"#.into());
    let body = format!(r#"{{"jobs": [{}]}}"#, jobs.join(","));
    let refused = post(&app, "/api/v2/jobs:batch", &body).await;
    let envelope = assert_envelope(refused, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert!(
        envelope["error"].as_str().unwrap().contains("jobs[999]"),
        "{envelope}"
    );
    assert_eq!(
        count(&app).await,
        1,
        "a refused batch leaves nothing behind"
    );
    // An invalid job refuses the batch too, naming it.
    let invalid = post(
        &app,
        "/api/v2/jobs:batch",
        r#"{"jobs": [{"number": 1}, {"number": -1}]}"#,
    )
    .await;
    let envelope = assert_envelope(invalid, 400, "INVALID_REQUEST").await;
    assert!(
        envelope["error"].as_str().unwrap().contains("jobs[1]"),
        "{envelope}"
    );
    let too_many = format!(
        r#"{{"jobs": [{}]}}"#,
        vec![r#"{"number": 1}"#; 1001].join(",")
    );
    assert_envelope(
        post(&app, "/api/v2/jobs:batch", &too_many).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert_envelope(
        post(&app, "/api/v2/jobs:batch", r#"{"jobs": []}"#).await,
        400,
        "INVALID_REQUEST",
    )
    .await;

    // The same 1,000 with the key used as before: all committed, in order; the keyed job is
    // the earlier one, and a key repeated within the batch is its first job.
    jobs[999] = r#"{"number": 1, "rounds": 10, "idempotency_key": "k-earlier"}"#.into();
    jobs[500] =
        r#"{"number": 500, "rounds": 10, "idempotency_key": "k-twice", "delay": "1h"}"#.into();
    jobs[501] =
        r#"{"number": 500, "rounds": 10, "idempotency_key": "k-twice", "delay": "1h"}"#.into();
    let body = format!(r#"{{"jobs": [{}]}}"#, jobs.join(","));
    let accepted = post(&app, "/api/v2/jobs:batch", &body).await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let answered = accepted["jobs"].as_array().unwrap();
    assert_eq!(answered.len(), 1000);
    for (n, job) in answered.iter().enumerate().take(500) {
        assert_eq!(
            (job["number"].as_u64(), job["replayed"].as_bool()),
            (Some(n as u64), Some(false))
        );
    }
    assert_eq!(answered[500]["status"], "scheduled");
    assert_eq!(answered[501]["id"], answered[500]["id"], "one key, one job");
    assert_eq!(
        (
            answered[500]["replayed"].as_bool(),
            answered[501]["replayed"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(answered[999]["id"], earlier["id"]);
    assert_eq!(answered[999]["replayed"], true);
    assert_eq!(count(&app).await, 1 + 998, "998 new jobs");
}

/// The statistics stream (and so the status page) shows the jobs: counts by status, the
/// running total of successes and the last jobs discarded, with their errors.
#[tokio::test]
async fn the_stats_stream_carries_the_jobs_and_their_last_discards() {
    use futures_util::StreamExt;
    let app = app_with(flaky).await;
    let ok = id_of(
        &post(&app, "/api/v2/jobs", r#"{"number": 2, "rounds": 10}"#)
            .await
            .json()
            .await
            .unwrap(),
    );
    let thirteen = id_of(
        &post(&app, "/api/v2/jobs", r#"{"number": 13, "rounds": 10}"#)
            .await
            .json()
            .await
            .unwrap(),
    );
    let later = post(&app, "/api/v2/jobs", r#"{"number": 3, "delay": "1h"}"#).await;
    assert_eq!(later.status(), 202);
    wait_for(&app, &ok, |j| j["status"] == "succeeded").await;
    wait_for(&app, &thirteen, |j| j["status"] == "discarded").await;

    let url = format!("ws://{}/api/v2/stats/stream?interval=100ms", app.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let started = Instant::now();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the stream is open")
            .unwrap();
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let m: Value = serde_json::from_str(&text).unwrap();
        let jobs = &m["jobs"];
        let discards = jobs["recent_discards"]
            .as_array()
            .expect("jobs in the message");
        if discards.iter().any(|d| d["id"] == thirteen.as_str()) {
            assert_eq!(jobs["scheduled"], 1, "{m}");
            assert_eq!(
                (jobs["queued"].clone(), jobs["running"].clone()),
                (0.into(), 0.into()),
                "{m}"
            );
            assert!(jobs["succeeded_total"].as_u64().unwrap() >= 1, "{m}");
            let d = discards
                .iter()
                .find(|d| d["id"] == thirteen.as_str())
                .unwrap();
            assert!(
                d["error"]
                    .as_str()
                    .unwrap()
                    .contains("thirteen always fails"),
                "{m}"
            );
            assert!(d["finished_at"].as_str().unwrap().ends_with('Z'), "{m}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never shown: {m}"
        );
    }
}
