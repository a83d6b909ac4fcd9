//! API v2, durable jobs, on SQLite: every route and error, idempotency, cancellation of a
//! queued and of a running job, keyset pagination, and a job surviving a SIGKILL.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use floodgate::Application;
use serde_json::Value;

use crate::helpers::*;

async fn submit(app: &TestApp, body: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/v2/jobs"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.send().await.unwrap()
}

/// Poll a job until `done` holds.
async fn wait_for_job(base: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let c = client();
    let started = Instant::now();
    loop {
        let job: Value = c
            .get(format!("{base}/api/v2/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "job stuck: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_is_queued_committed_and_run_to_its_digest() {
    let app = spawn_app().await;
    let r = submit(&app, r#"{"number": 42, "rounds": 3000000}"#, None).await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = r.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v2/jobs/{id}"));
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert!(["queued", "running"].contains(&job["status"].as_str().unwrap()));
    assert_eq!(job["rounds"], 3_000_000);
    assert!(
        job.get("result").is_none(),
        "absent fields are omitted: {job}"
    );
    let done = wait_for_job(&app.url(""), id, |j| j["status"] == "succeeded").await;
    assert_eq!(done["result"], 42 * 42);
    assert_eq!(
        done["digest"],
        floodgate::pool::intensive_digest(42, 3_000_000)
    );
    assert_eq!(done["attempts"], 1);
    for t in ["created_at", "started_at", "finished_at"] {
        humantime::parse_rfc3339(done[t].as_str().unwrap()).unwrap();
    }
    // The default rounds are the intensive endpoint's.
    let r = submit(&app, r#"{"number": 7}"#, None).await;
    assert_eq!(r.json::<Value>().await.unwrap()["rounds"], 10_000);
}

/// The upkeep round publishes the jobs not yet ended by status, counted from an index of
/// them alone (finished jobs are not scanned: they are counted as they end, in
/// `floodgate_jobs_finished_total`).
#[tokio::test]
async fn upkeep_publishes_the_active_jobs_by_status() {
    let app = spawn_with(|s| s.jobs.poll_interval = std::time::Duration::from_millis(100)).await;
    let r = submit(&app, r#"{"number": 5, "rounds": 1000}"#, None).await;
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let later = submit(&app, r#"{"number": 6, "delay": "1h"}"#, None).await;
    assert_eq!(later.status(), 202);
    assert_eq!(later.json::<Value>().await.unwrap()["status"], "scheduled");
    wait_for_job(&app.url(""), &id, |j| j["status"] == "succeeded").await;
    // The round after the job ended counts it out of `running` (the one before may have
    // counted it in).
    let text = app
        .wait_for_exposition("the active jobs counted", |t| {
            let active = |status: &str| {
                let quoted = format!("\"{status}\"");
                sum_series(t, "floodgate_jobs", |l| l.contains(&quoted))
            };
            active("scheduled") == 1.0 && active("queued") == 0.0 && active("running") == 0.0
        })
        .await;
    assert_eq!(
        sum_series(&text, "floodgate_jobs_finished_total", |l| l
            .contains("\"succeeded\"")),
        1.0
    );
    assert!(
        !text.contains("floodgate_jobs{status=\"succeeded\"}"),
        "finished jobs are not counted by the gauge"
    );
    assert_eq!(
        sum_series(&text, "floodgate_jobs_oldest_queued_age_seconds", |_| true),
        0.0,
        "nothing is due"
    );
}

#[tokio::test]
async fn idempotency_keys_replay_the_job_or_refuse_a_different_body() {
    let app = spawn_app().await;
    let first: Value = submit(&app, r#"{"number": 5}"#, Some("order-17"))
        .await
        .json()
        .await
        .unwrap();
    let again = submit(&app, r#"{"number": 5}"#, Some("order-17")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "never a second job");
    let other = submit(&app, r#"{"number": 6}"#, Some("order-17")).await;
    assert_envelope(other, 422, "IDEMPOTENCY_KEY_REUSED").await;
    let bad = submit(&app, r#"{"number": 5}"#, Some(&"k".repeat(256))).await;
    assert_envelope(bad, 400, "INVALID_REQUEST").await;
    let list: Value = app.get("/api/v2/jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn errors_are_the_envelope_with_the_right_status() {
    let app = spawn_with(|s| s.jobs.max_rounds = 1000).await;
    let unknown = uuid::Uuid::now_v7();
    assert_envelope(
        app.get(&format!("/api/v2/jobs/{unknown}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_envelope(
        app.get("/api/v2/jobs/not-a-uuid").await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    for body in [
        r#"{"number": 5, "rounds": 1001}"#,
        r#"{"number": 5, "rounds": 0}"#,
        r#"{"number": 5.5}"#,
        r#"{"rounds": 5}"#,
        "[]",
    ] {
        assert_envelope(submit(&app, body, None).await, 400, "INVALID_REQUEST").await;
    }
    for query in [
        "?limit=0",
        "?limit=1001",
        "?status=done",
        "?cursor=nonsense",
    ] {
        let r = app.get(&format!("/api/v2/jobs{query}")).await;
        assert_envelope(r, 400, "INVALID_REQUEST").await;
    }
    let job: Value = submit(&app, r#"{"number": 3}"#, None)
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    wait_for_job(&app.url(""), id, |j| j["status"] == "succeeded").await;
    let r = app
        .client
        .delete(app.url(&format!("/api/v2/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_envelope(r, 409, "JOB_FINISHED").await;
}

/// An unknown job is 404 `NOT_FOUND` saying the job was not found, wherever it is asked
/// for; a path no route serves still says so.
#[tokio::test]
async fn an_unknown_job_is_not_found_and_says_so() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::now_v7();
    let expected = format!("job {unknown} not found");
    let path = format!("/api/v2/jobs/{unknown}");
    let events = app
        .client
        .get(app.url(&format!("{path}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let delete = app.client.delete(app.url(&path)).send().await.unwrap();
    for r in [app.get(&path).await, delete, events] {
        let env = assert_envelope(r, 404, "NOT_FOUND").await;
        assert_eq!(env["error"], expected.as_str());
    }
    // Any spelling of the id names the job canonically.
    let upper = unknown.to_string().to_uppercase();
    let env = assert_envelope(
        app.get(&format!("/api/v2/jobs/{upper}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(env["error"], expected.as_str());
    let env = assert_envelope(app.get("/api/v2/nothing").await, 404, "NOT_FOUND").await;
    assert_eq!(env["error"], "no route for /api/v2/nothing");
}

/// A field written twice is refused on v2 as on v1, with the same message: which copy
/// counts would be a guess, and a proxy or a log may have read the other one.
#[tokio::test]
async fn a_field_written_twice_is_refused_as_on_v1() {
    let app = spawn_app().await;
    let v1 = app
        .post_json("/api/v1/compute/fast", r#"{"number": 5, "number": 6}"#)
        .await;
    let v1 = assert_envelope(v1, 400, "INVALID_REQUEST").await;
    for (body, field) in [
        (r#"{"number": 5, "number": 6}"#, "number"),
        (r#"{"number": 5, "rounds": 10, "rounds": 20}"#, "rounds"),
        (r#"{"number": 5, "rounds": null, "rounds": 20}"#, "rounds"),
    ] {
        let env = assert_envelope(submit(&app, body, None).await, 400, "INVALID_REQUEST").await;
        let msg = env["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("duplicate field `{field}`")),
            "{body}: {msg}"
        );
        if field == "number" {
            assert_eq!(msg, v1["error"].as_str().unwrap(), "v1 says the same");
        }
    }
    let list: Value = app.get("/api/v2/jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], serde_json::json!([]), "no job was queued");
}

#[tokio::test]
async fn queued_and_running_jobs_can_be_cancelled() {
    let mut settings = test_settings();
    settings.pool.workers = 2;
    settings.jobs.max_running = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let body = format!("{{\"number\": {}}}", gate.number());
    let running: Value = submit(&app, &body, None).await.json().await.unwrap();
    let queued: Value = submit(&app, &body, None).await.json().await.unwrap();
    let (running, queued) = (
        running["id"].as_str().unwrap(),
        queued["id"].as_str().unwrap(),
    );
    wait_for_job(&app.url(""), running, |j| j["status"] == "running").await;
    for id in [queued, running] {
        let r = app
            .client
            .delete(app.url(&format!("/api/v2/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    }
    drop(gate);
    // The running one stops at its next chunk; the queued one never starts.
    let text = app
        .wait_for_exposition("the running job to stop", |t| {
            sum_series(t, "floodgate_jobs_total", |l| l.contains("completed")) >= 1.0
        })
        .await;
    assert!(
        text.contains("floodgate_jobs_finished_total{status=\"cancelled\"} 2"),
        "{text}"
    );
    for id in [queued, running] {
        let job: Value = app
            .get(&format!("/api/v2/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "cancelled", "{job}");
        assert!(job.get("digest").is_none());
    }
}

#[tokio::test]
async fn pages_of_2500_jobs_have_no_duplicate_and_no_gap() {
    let app = spawn_with(|s| s.jobs.enabled = true).await;
    let send = |n: u64| {
        let c = app.client.clone();
        let url = app.url("/api/v2/jobs");
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(format!("{{\"number\": {}, \"rounds\": 1}}", n % 1000))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let mut submitted = Vec::new();
    for first in (0..2500u64).step_by(50) {
        submitted.extend(futures_util::future::join_all((first..first + 50).map(send)).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v2/jobs?limit=1000&cursor={c}"),
            None => "/api/v2/jobs?limit=1000".into(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        let jobs = page["jobs"].as_array().unwrap();
        seen.extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 2500);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        2500,
        "no duplicate"
    );
    let submitted: HashSet<_> = submitted.iter().collect();
    assert!(seen.iter().all(|id| submitted.contains(id)), "no stranger");
    let mut newest_first = seen.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, newest_first, "newest first (UUIDv7 order)");
}

/// Submit 500 jobs to the real binary, SIGKILL it mid-run, start it again on the same file:
/// every job succeeds with its digest, none is lost or listed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_sigkill() {
    let _one_at_a_time = exclusive().await;
    let db = temp_database_url();
    let envs = [
        ("DATABASE_URL", db.as_str()),
        ("WORKER_COUNT", "2"),
        ("FLOODGATE__JOBS__LEASE", "1s"),
        ("FLOODGATE__LOG__ACCESS_LOG", "false"),
    ];
    let mut app = spawn_binary(&envs).await;
    let c = client();
    let mut ids = Vec::new();
    for n in 0..500u64 {
        let r = c
            .post(format!("{}/api/v2/jobs", app.base))
            .header("content-type", "application/json")
            .body(format!("{{\"number\": {n}, \"rounds\": 200000}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push((
            n,
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    // Kill it while some jobs are done and others are not.
    let started = Instant::now();
    loop {
        let page: Value = c
            .get(format!(
                "{}/api/v2/jobs?status=succeeded&limit=1000",
                app.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let done = page["jobs"].as_array().unwrap().len();
        if done >= 20 {
            assert!(done < 500, "all done before the kill; make the jobs longer");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.child.signal("-KILL");
    app.wait_for_exit();

    let app = spawn_binary(&envs).await;
    for (n, id) in &ids {
        let job = wait_for_job(&app.base, id, |j| j["status"] == "succeeded").await;
        assert_eq!(
            job["digest"],
            floodgate::pool::intensive_digest(*n, 200_000),
            "{job}"
        );
    }
    let page: Value = c
        .get(format!("{}/api/v2/jobs?limit=1000", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(listed.len(), 500, "none lost, none twice");
    assert_eq!(
        listed
            .iter()
            .map(|v| v.to_string())
            .collect::<HashSet<_>>()
            .len(),
        500
    );
}

/// A database whose schema a newer floodgate migrated is refused at start (exit 64), not
/// written to by a binary that does not know it.
#[test]
fn a_schema_newer_than_the_binary_exits_64() {
    let url = temp_database_url();
    // Let the binary create and migrate the file, then stop it.
    let mut child = ChildGuard(
        floodgate_command()
            .env("SERVER_PORT", "127.0.0.1:0")
            .env("DATABASE_URL", &url)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let listening = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|l| l.contains("listening"));
    assert!(listening);
    drop(child);
    // A migration from the future, written straight into the migrations table.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut db)
        .await
        .unwrap();
        db.close().await.unwrap();
    });
    let refused = floodgate_command()
        .env("SERVER_PORT", "127.0.0.1:0")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("database.url") && err.contains("9999"),
        "{err}"
    );
}

/// API v2 as the holder of one API key.
struct Holder<'a> {
    app: &'a TestApp,
    key: &'static str,
}

impl Holder<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .request(method, self.app.url(path))
            .header("x-api-key", self.key)
    }

    async fn submit(&self, number: u64, idempotency_key: &str) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/api/v2/jobs")
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .body(format!("{{\"number\": {number}}}"))
            .send()
            .await
            .unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.request(method, path).send().await.unwrap()
    }

    /// The ids of the jobs it lists.
    async fn listed(&self) -> HashSet<String> {
        let page: Value = self
            .send(reqwest::Method::GET, "/api/v2/jobs")
            .await
            .json()
            .await
            .unwrap();
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn id_of(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status(), status);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// With authentication on, a job is its submitter's: another principal cannot read, cancel,
/// list or watch it (404, as for a job that does not exist), and its idempotency key is the
/// submitter's alone, so the same key from another principal makes that principal's own job.
/// A principal in `auth.admin_principals` sees every job.
#[tokio::test]
async fn jobs_belong_to_the_principal_that_submitted_them() {
    use reqwest::Method;
    let keys = TempFile::new(
        "keys",
        &format!(
            "alice:{}\nbob:{}\nops:{}\n",
            sha256_hex("alice-key"),
            sha256_hex("bob-key"),
            sha256_hex("ops-key")
        ),
    );
    let mut settings = test_settings();
    settings.auth.enabled = true;
    settings.auth.api_keys_file = Some(keys.0.clone());
    settings.auth.admin_principals = vec!["key:ops".into()];
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let (alice, bob, ops) = (
        Holder {
            app: &app,
            key: "alice-key",
        },
        Holder {
            app: &app,
            key: "bob-key",
        },
        Holder {
            app: &app,
            key: "ops-key",
        },
    );
    // Alice's job waits on the gate: nothing ends it but a cancellation.
    let gate = Gate::hold();
    let hers = id_of(alice.submit(gate.number(), "order-17").await, 202).await;
    let path = format!("/api/v2/jobs/{hers}");

    let not_found = format!("job {hers} not found");
    let events = bob
        .request(Method::GET, &format!("{path}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    for r in [
        bob.send(Method::GET, &path).await,
        bob.send(Method::DELETE, &path).await,
        events,
    ] {
        let env = assert_envelope(r, 404, "NOT_FOUND").await;
        assert_eq!(env["error"], not_found.as_str());
    }
    let mut upgrade =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}{path}/events",
            app.addr
        ))
        .unwrap();
    upgrade
        .headers_mut()
        .insert("x-api-key", "bob-key".parse().unwrap());
    match tokio_tungstenite::connect_async(upgrade).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("Bob watches Alice's job: {other:?}"),
    }

    // Bob's "order-17" is his own key: a new job, whatever Alice's body was.
    let his = id_of(bob.submit(6, "order-17").await, 202).await;
    assert_ne!(his, hers);
    assert_eq!(id_of(bob.submit(6, "order-17").await, 200).await, his);
    assert_eq!(
        id_of(alice.submit(gate.number(), "order-17").await, 200).await,
        hers
    );
    let reused = alice.submit(6, "order-17").await;
    assert_envelope(reused, 422, "IDEMPOTENCY_KEY_REUSED").await;

    assert_eq!(alice.listed().await, HashSet::from([hers.clone()]));
    assert_eq!(bob.listed().await, HashSet::from([his.clone()]));
    assert_eq!(ops.listed().await, HashSet::from([hers.clone(), his]));
    let job: Value = alice.send(Method::GET, &path).await.json().await.unwrap();
    assert_ne!(
        job["status"], "cancelled",
        "Bob's cancel did nothing: {job}"
    );
    let cancelled = ops.send(Method::DELETE, &path).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );
}
