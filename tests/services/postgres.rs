//! API v2 on a real PostgreSQL (started by the test, see tests/support/postgres_server.rs):
//! three replicas of the real binary share one database, one is SIGKILLed mid-run and the
//! others finish its jobs once its lease lapses; and the database going away under load
//! (stopped at once, or hung) costs v2 a fast 503, never v1 or readiness, and v2 comes back
//! by itself.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use crate::helpers::*;
use crate::postgres_server::PostgresServer;

/// Jobs in the replica test.
const JOBS: u64 = 1000;
/// Rounds of each: a few milliseconds of work, so 1,000 take a few seconds on two cores.
const ROUNDS: u64 = 1_000_000;

async fn submit(c: &reqwest::Client, base: &str, number: u64, rounds: u64) -> reqwest::Response {
    c.post(format!("{base}/api/v2/jobs"))
        .header("content-type", "application/json")
        .body(format!("{{\"number\": {number}, \"rounds\": {rounds}}}"))
        .send()
        .await
        .unwrap()
}

/// Every job matching `query` (e.g. `status=succeeded&`), page by page of 1,000.
async fn list_all(c: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page: Value = c
            .get(format!("{base}/api/v2/jobs?{query}limit=1000{cursor}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return jobs,
        }
    }
    panic!("more than 100 pages");
}

/// A running job as the database holds it.
#[derive(Debug, Clone)]
struct Lease {
    id: String,
    owner: String,
    attempts: i32,
    until: i64,
}

async fn running(db: &PgPool) -> Vec<Lease> {
    sqlx::query("SELECT id, lease_owner, attempts, lease_until FROM jobs WHERE status = 'running'")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| Lease {
            id: r.get("id"),
            owner: r.get("lease_owner"),
            attempts: r.get("attempts"),
            until: r.get("lease_until"),
        })
        .collect()
}

fn signal(pid: u32, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Freeze `victim` (SIGSTOP) and watch the leases until the two other replicas have each
/// claimed three jobs since: the owners that keep claiming are theirs, so a claimed job held
/// by any other owner is the frozen replica's (a runner holds the job it runs and the few
/// it claimed ahead). Returns those jobs (empty when the replica was frozen holding none).
async fn frozen_replicas_jobs(db: &PgPool, victim: u32) -> Vec<Lease> {
    signal(victim, "-STOP");
    let first = running(db).await;
    let held: HashSet<String> = first.iter().map(|l| l.id.clone()).collect();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    let started = Instant::now();
    loop {
        for lease in running(db).await {
            if !held.contains(&lease.id) {
                seen.entry(lease.owner).or_default().insert(lease.id);
            }
        }
        let claiming: HashSet<&String> = seen
            .iter()
            .filter(|(_, ids)| ids.len() >= 3)
            .map(|(owner, _)| owner)
            .collect();
        if claiming.len() == 2 {
            return first
                .into_iter()
                .filter(|l| !claiming.contains(&l.owner))
                .collect();
        }
        assert!(
            claiming.len() < 2 && started.elapsed() < Duration::from_secs(20),
            "the other replicas did not go on claiming: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `intensive_digest(n, rounds)` for each `n`, on every core.
fn expected_digests(numbers: std::ops::Range<u64>, rounds: u32) -> HashMap<u64, u64> {
    let numbers: Vec<u64> = numbers.collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        let parts: Vec<_> = numbers
            .chunks(numbers.len().div_ceil(threads).max(1))
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&n| (n, floodgate::pool::intensive_digest(n, rounds)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    })
}

/// Three replicas on one PostgreSQL run 1,000 jobs submitted round robin; one is SIGKILLed
/// mid-run. Every job succeeds exactly once in the list with its digest, and the job the dead
/// replica was running is finished by another after its lease lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_replicas_finish_a_killed_replicas_jobs() {
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("WORKER_COUNT", "2"),
        ("FLOODGATE__JOBS__LEASE", "1s"),
        ("FLOODGATE__JOBS__RETRY_BACKOFF", "100ms"),
        ("FLOODGATE__LOG__ACCESS_LOG", "false"),
    ];
    // Started together, as a deployment does: the migration runs once under its lock.
    let (a, b, victim) = tokio::join!(
        spawn_binary(&envs),
        spawn_binary(&envs),
        spawn_binary(&envs)
    );
    let mut victim = victim;
    let bases = [a.base.clone(), b.base.clone(), victim.base.clone()];
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let c = client();

    let started = Instant::now();
    let mut submitted: HashMap<String, u64> = HashMap::new();
    for first in (0..JOBS).step_by(25) {
        let batch = (first..first + 25).map(|n| {
            let (c, base) = (c.clone(), bases[(n % 3) as usize].clone());
            async move {
                let r = submit(&c, &base, n, ROUNDS).await;
                assert_eq!(r.status(), 202);
                let job: Value = r.json().await.unwrap();
                (job["id"].as_str().unwrap().to_owned(), n)
            }
        });
        submitted.extend(futures_util::future::join_all(batch).await);
    }
    assert_eq!(submitted.len(), JOBS as usize);

    // Some jobs done, most not: freeze the victim, learn what it was running, kill it.
    // Frozen between two jobs, it holds none: let it go on and try again.
    let mut caught = Vec::new();
    let mut tries = 0;
    while caught.is_empty() && tries < 10 {
        let done = list_all(&c, &a.base, "status=succeeded&").await.len();
        assert!(
            done < JOBS as usize / 2,
            "{done} jobs done before the kill; make them longer"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {done} jobs done after a minute"
        );
        if done >= 50 {
            tries += 1;
            caught = frozen_replicas_jobs(&db, victim.child.0.id()).await;
            if caught.is_empty() {
                signal(victim.child.0.id(), "-CONT");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !caught.is_empty(),
        "the victim was never caught running a job"
    );
    assert!(
        caught.iter().all(|l| l.owner == caught[0].owner),
        "one frozen runner: {caught:?}"
    );
    signal(victim.child.0.id(), "-KILL");
    victim.wait_for_exit();
    let killed_at = Instant::now();

    // Poll until nothing is scheduled, queued or running, in one statement: asked one status
    // at a time, a job of the killed replica could go from running back to scheduled (its
    // lease lapsed) between the question about scheduled jobs and the one about running ones.
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status IN ('scheduled', 'queued', 'running')",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if unfinished == 0 {
            break;
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let left = sqlx::query_as::<_, (String, String, i32, i64)>(
                "SELECT id, status, attempts, run_at FROM jobs \
                 WHERE status IN ('scheduled', 'queued', 'running') LIMIT 5",
            )
            .fetch_all(&db)
            .await
            .unwrap();
            panic!("jobs still unfinished a minute after the kill: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();

    // The digests to expect: as much work again as the replicas did, so on every core.
    let expected = tokio::task::spawn_blocking(|| expected_digests(0..JOBS, ROUNDS as u32))
        .await
        .unwrap();
    let listed = list_all(&c, &b.base, "").await;
    assert_eq!(listed.len(), JOBS as usize, "none lost, none twice");
    let mut ids = HashSet::new();
    let mut retried = 0;
    for job in &listed {
        let id = job["id"].as_str().unwrap();
        assert!(ids.insert(id.to_owned()), "listed twice: {job}");
        let n = *submitted
            .get(id)
            .unwrap_or_else(|| panic!("a stranger: {job}"));
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["number"], n, "{job}");
        assert_eq!(job["result"], n * n, "{job}");
        assert_eq!(job["digest"], expected[&n], "{job}");
        if job["attempts"].as_u64().unwrap() >= 2 {
            retried += 1;
        }
    }
    assert!(retried >= 1, "the killed replica's job was taken up again");

    // The jobs the victim held: finished by another replica, after their lease lapsed. A
    // finish the victim sent just before it froze may still commit after the jobs were read:
    // such a job ends with the victim's attempt, inside its lease, and is not taken up.
    let mut taken_up = 0;
    for held in &caught {
        let row = sqlx::query("SELECT status, attempts, finished_at FROM jobs WHERE id = $1")
            .bind(&held.id)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("status"), "succeeded");
        let (attempts, finished_at) = (
            row.get::<i32, _>("attempts"),
            row.get::<i64, _>("finished_at"),
        );
        if attempts > held.attempts {
            taken_up += 1;
            assert!(
                finished_at > held.until,
                "finished only after the lease lapsed: {held:?}"
            );
        } else {
            assert!(
                attempts == held.attempts && finished_at <= held.until,
                "neither taken up again nor finished by the victim in its lease: {held:?}"
            );
        }
    }
    assert!(taken_up >= 1, "none of {caught:?} was taken up again");
    eprintln!(
        "1,000 jobs on three replicas in {took:?}; {retried} ran more than once; the killed \
         replica's {} jobs were finished by others",
        caught.len()
    );
}

/// What a request during the outage got.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<String>,
    took: Duration,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        code: body["code"].as_str().map(str::to_owned),
        retry_after,
        took: started.elapsed(),
    }
}

/// The longest a 503 may take while the database is away: a call waits up to the 500 ms
/// acquire timeout for a connection, and its statement then has twice that, plus room for a
/// loaded machine; the request timeout is 30 s.
const FAST_503: Duration = Duration::from_millis(2500);

/// The v2 routes, once each, while the database is away: each a 503
/// `DEPENDENCY_UNAVAILABLE` with `Retry-After`, within [`FAST_503`].
async fn assert_v2_unavailable(c: &reqwest::Client, base: &str, id: &str) {
    let requests = [
        c.post(format!("{base}/api/v2/jobs"))
            .header("content-type", "application/json")
            .body(r#"{"number": 1, "rounds": 1}"#),
        c.get(format!("{base}/api/v2/jobs/{id}")),
        c.get(format!("{base}/api/v2/jobs?limit=10")),
        c.delete(format!("{base}/api/v2/jobs/{id}")),
    ];
    for request in requests {
        let a = answer(request).await;
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.code.as_deref(), Some("DEPENDENCY_UNAVAILABLE"), "{a:?}");
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
        assert!(a.took < FAST_503, "{a:?}");
    }
}

/// v1 and readiness while the database is away.
async fn assert_v1_and_readiness_unaffected(c: &reqwest::Client, base: &str) {
    for (endpoint, number) in [("fast", 12u64), ("intensive", 13)] {
        let r = c
            .post(format!("{base}/api/v1/compute/{endpoint}"))
            .header("content-type", "application/json")
            .body(format!("{{\"number\":{number}}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{endpoint}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["result"], number * number, "{body}");
    }
    let r = c.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

/// Clients submitting jobs in a loop, until stopped (bounded in requests and time).
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, Answer)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
                let (c, url) = (client(), format!("{base}/api/v2/jobs"));
                tokio::spawn(async move {
                    let started = Instant::now();
                    for n in 0..5000u64 {
                        if stop.load(Ordering::Relaxed)
                            || started.elapsed() > Duration::from_secs(120)
                        {
                            break;
                        }
                        let a = answer(
                            c.post(&url)
                                .header("content-type", "application/json")
                                .body(format!(
                                    "{{\"number\": {}, \"rounds\": 200000}}",
                                    n + i as u64
                                )),
                        )
                        .await;
                        answers.lock().unwrap().push((Instant::now(), a));
                        // A client's pace, not a synchronisation.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            tasks,
        }
    }

    /// Answers with `status` received after `since`.
    fn count(&self, status: u16, since: Instant) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, a)| a.status == status && *at > since)
            .count()
    }

    /// Wait (20 s at most) until `n` answers with `status` arrived after `since`.
    async fn wait_for(&self, status: u16, n: usize, since: Instant) {
        let started = Instant::now();
        while self.count(status, since) < n {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{n} answers {status} did not arrive; since: {:?}",
                self.answers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(at, _)| *at > since)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> Vec<(Instant, Answer)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

/// Submit job `number` until it is accepted (20 s at most, every refusal a 503); how long it
/// took, and the job's id.
async fn wait_for_v2(c: &reqwest::Client, base: &str, number: u64) -> (Duration, String) {
    let started = Instant::now();
    loop {
        let r = submit(c, base, number, 1000).await;
        if r.status() == 202 {
            let job: Value = r.json().await.unwrap();
            return (started.elapsed(), job["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(r.status(), 503);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "v2 did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Under load, PostgreSQL is stopped at once (`pg_ctl stop -m immediate`), started again,
/// then hung (every server process SIGSTOPped) and let go: while it is away v2 answers a fast
/// 503 with `Retry-After`, v1 and readiness are untouched; when it is back, v2 and the job
/// runner recover without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_database_down_costs_v2_a_fast_503_and_v2_comes_back() {
    let _one_at_a_time = exclusive().await;
    let mut pg = PostgresServer::start();
    let url = pg.url();
    let app = spawn_binary(&[
        ("DATABASE_URL", url.as_str()),
        ("WORKER_COUNT", "2"),
        ("FLOODGATE__JOBS__LEASE", "1s"),
        ("FLOODGATE__DATABASE__ACQUIRE_TIMEOUT", "500ms"),
        ("FLOODGATE__LOG__ACCESS_LOG", "false"),
    ])
    .await;
    let c = client();
    let before: Value = submit(&c, &app.base, 5, 1000).await.json().await.unwrap();
    let before = before["id"].as_str().unwrap().to_owned();

    for outage in ["stopped", "hung"] {
        let load = Load::start(&app.base, 4);
        let up = Instant::now();
        load.wait_for(202, 20, up).await;

        let down = Instant::now();
        match outage {
            "stopped" => pg.stop_immediately(),
            _ => pg.signal_all("-STOP"),
        }
        load.wait_for(503, 20, down).await;
        assert_v2_unavailable(&c, &app.base, &before).await;
        assert_v1_and_readiness_unaffected(&c, &app.base).await;
        load.wait_for(503, 40, down).await;
        assert_v1_and_readiness_unaffected(&c, &app.base).await;

        match outage {
            "stopped" => pg.start_again(),
            _ => pg.signal_all("-CONT"),
        }
        let (recovered_in, after) = wait_for_v2(&c, &app.base, 77).await;
        let back = Instant::now();
        load.wait_for(202, 20, back).await;
        let answers = load.finish().await;

        // Every answer the clients got: accepted, or a fast 503 with `Retry-After`.
        for (_, a) in &answers {
            match a.status {
                202 => {}
                503 => {
                    assert_eq!(a.code.as_deref(), Some("DEPENDENCY_UNAVAILABLE"), "{a:?}");
                    assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
                    assert!(a.took < FAST_503, "{a:?}");
                }
                _ => panic!("{outage}: {a:?}"),
            }
        }
        let slowest = answers
            .iter()
            .filter(|(_, a)| a.status == 503)
            .map(|(_, a)| a.took)
            .max()
            .unwrap();
        eprintln!(
            "database {outage}: {} answers, slowest 503 {slowest:?}; v2 back {recovered_in:?} \
             after the database",
            answers.len()
        );

        // The jobs from before the outage are still there, and the runner works again.
        let r = c
            .get(format!("{}/api/v2/jobs/{before}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let started = Instant::now();
        loop {
            let job: Value = c
                .get(format!("{}/api/v2/jobs/{after}", app.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if job["status"] == "succeeded" {
                assert_eq!(job["digest"], floodgate::pool::intensive_digest(77, 1000));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{outage}: a job submitted after the database came back never ran: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The database breaker's state in the exposition (0 closed, 1 half-open, 2 open).
async fn database_breaker(app: &TestApp) -> f64 {
    sum_series(&app.exposition().await, "floodgate_circuit_state", |l| {
        l.contains("\"database\"")
    })
}

/// PostgreSQL hung (SIGSTOP), then gRPC callers with a 5 ms deadline arriving whenever the
/// breaker is half-open (each dropped mid-call, holding the probe), then PostgreSQL let go:
/// v2 and the breaker are back within seconds. Before, the first dropped probe left the
/// breaker half-open for good: every v2 call 503, no job claimed, `/health` 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_dropped_probes_do_not_keep_the_database_breaker_half_open() {
    use floodgate::grpc::pb::compute_service_client::ComputeServiceClient;
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let app = spawn_with(|s| {
        s.database.url = url.clone();
        s.database.acquire_timeout = Duration::from_millis(200);
        s.database.breaker.open_for = Duration::from_millis(300);
    })
    .await;
    let c = client();
    let r = submit(&c, &app.url(""), 5, 1000).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = ComputeServiceClient::new(channel);

    pg.signal_all("-STOP");
    let started = Instant::now();
    while database_breaker(&app).await != 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the breaker never opened"
        );
        let _ = submit(&c, &app.url(""), 5, 1000).await;
    }
    // For two seconds, whenever the breaker is half-open, callers that give up at once.
    let impatient = Instant::now();
    let mut dropped = 0;
    while impatient.elapsed() < Duration::from_secs(2) {
        if database_breaker(&app).await == 1.0 {
            for _ in 0..5 {
                let mut request =
                    tonic::Request::new(floodgate::grpc::pb::JobRequest { id: id.clone() });
                request.set_timeout(Duration::from_millis(5));
                let _ = grpc.get_job(request).await;
                dropped += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dropped > 0, "the breaker was never half-open");
    pg.signal_all("-CONT");
    let back = Instant::now();
    loop {
        let r = submit(&c, &app.url(""), 6, 1000).await;
        if r.status() == 202 && database_breaker(&app).await == 0.0 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "PostgreSQL is back but v2 answers {} and the breaker is {}",
            r.status(),
            database_breaker(&app).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = c.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A database migrated before jobs had owners keeps its keyed job, which has no owner: a
/// replay without authentication still finds it. With authentication on, the same key from
/// two principals makes two jobs, neither the old one, and each replays its own. The unique
/// index that settles two submissions racing with one key holds per owner, and for jobs
/// without an owner too.
#[tokio::test]
async fn jobs_pg_idempotency_keys_are_unique_per_owner() {
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    sqlx::migrate!("migrations/postgres")
        .run_to(1, &db)
        .await
        .unwrap();
    let legacy = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, status, number, rounds, created_at, idempotency_key, request_hash, \
         idempotency_expires_at) VALUES ($1, 'succeeded', 3, 1000, 0, 'order-17', $2, $3)",
    )
    .bind(&legacy)
    .bind(sha256_hex("3:1000"))
    .bind(i64::MAX)
    .execute(&db)
    .await
    .unwrap();

    let app = spawn_with(|s| s.database.url = url.clone()).await;
    let c = client();
    let replay = c
        .post(app.url("/api/v2/jobs"))
        .header("content-type", "application/json")
        .header("idempotency-key", "order-17")
        .body(r#"{"number": 3, "rounds": 1000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], legacy.as_str());

    let keys = TempFile::new(
        "keys",
        &format!(
            "alice:{}\nbob:{}\n",
            sha256_hex("alice-key"),
            sha256_hex("bob-key")
        ),
    );
    let authenticated = spawn_with(|s| {
        s.database.url = url.clone();
        s.auth.enabled = true;
        s.auth.api_keys_file = Some(keys.0.clone());
    })
    .await;
    let submit_as = |key: &'static str| {
        let request = c
            .post(authenticated.url("/api/v2/jobs"))
            .header("content-type", "application/json")
            .header("idempotency-key", "order-17")
            .header("x-api-key", key)
            .body(r#"{"number": 3, "rounds": 1000}"#);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            (status, id)
        }
    };
    let (created, alices) = submit_as("alice-key").await;
    assert_eq!(created, 202);
    let (created, bobs) = submit_as("bob-key").await;
    assert_eq!(created, 202);
    assert!(alices != bobs && alices != legacy && bobs != legacy);
    assert_eq!(submit_as("alice-key").await, (200, alices));
    assert_eq!(submit_as("bob-key").await, (200, bobs));

    let insert = |owner: Option<&'static str>| {
        sqlx::query(
            "INSERT INTO jobs (id, status, number, rounds, created_at, owner, idempotency_key) \
             VALUES ($1, 'queued', 1, 1, 0, $2, 'k')",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(owner)
        .execute(&db)
    };
    for owner in [None, Some("key:alice"), Some("key:bob")] {
        insert(owner).await.unwrap();
        let again = insert(owner).await.unwrap_err();
        assert!(
            matches!(&again, sqlx::Error::Database(e) if e.is_unique_violation()),
            "{owner:?}: {again}"
        );
    }
}

/// Insert a queued job behind the service's back, as another replica's submission would:
/// the database's own trigger announces it.
async fn insert_directly(db: &PgPool, number: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let now = floodgate::store::now_us();
    sqlx::query(
        "INSERT INTO jobs (id, status, number, rounds, created_at, run_at) \
         VALUES ($1, 'queued', $2, 1000, $3, $3)",
    )
    .bind(&id)
    .bind(number)
    .bind(now)
    .execute(db)
    .await
    .unwrap();
    id
}

/// Poll the count `sql` asks for until `done` holds for it, `within` at most; the count then.
async fn wait_for_count(
    db: &PgPool,
    sql: &'static str,
    done: impl Fn(i64) -> bool,
    within: Duration,
    what: &str,
) -> i64 {
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(db).await.unwrap();
        if done(n) {
            return n;
        }
        assert!(
            started.elapsed() < within,
            "{what}: still {n} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long until the job is claimed (its first attempt starts), 30 s at most.
async fn time_to_claim(db: &PgPool, id: &str) -> Duration {
    let started = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_attempts WHERE job_id = $1")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap();
        if n > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{id} never claimed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A job another replica queues wakes this one's runner at once (LISTEN/NOTIFY), with no
/// polling; with its listening connection killed, the wake-up is lost and the upkeep's poll
/// finds the job within `jobs.poll_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_a_lost_wake_up_costs_at_most_the_poll_interval() {
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let poll = Duration::from_secs(3);
    let app = spawn_with(|s| {
        s.database.url = url.clone();
        s.jobs.poll_interval = poll;
    })
    .await;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    // Listening: woken well within a poll.
    wait_for_count(
        &db,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
        |n| n > 0,
        Duration::from_secs(10),
        "the runner never listened",
    )
    .await;
    let woken = time_to_claim(&db, &insert_directly(&db, 1).await).await;
    assert!(woken < poll / 2, "a notified job waited {woken:?}");

    // The listening connection killed: the next notice is lost.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'",
    )
    .execute(&db)
    .await
    .unwrap();
    let lost = time_to_claim(&db, &insert_directly(&db, 2).await).await;
    assert!(
        lost <= poll + Duration::from_secs(1),
        "a job whose wake-up was lost waited {lost:?}"
    );
    eprintln!("claimed {woken:?} after its notice; {lost:?} with the notice lost (poll {poll:?})");
    drop(app);
}

/// Calls of the statements PostgreSQL ran since its statistics were last reset, but for the
/// statistics' own.
async fn statements(db: &PgPool) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT query, calls FROM pg_stat_statements \
         WHERE query NOT ILIKE '%pg_stat_statements%' AND calls > 0",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("query"), r.get("calls")))
    .collect()
}

/// Claims among `statements`.
fn claims(statements: &[(String, i64)]) -> i64 {
    statements
        .iter()
        .filter(|(q, _)| q.contains("SKIP LOCKED"))
        .map(|(_, n)| n)
        .sum()
}

/// Jobs submitted in each [`submit_one_by_one`].
const SUBMITTED: i64 = 10;

/// Submit `n` jobs one at a time, each run to its end before the next; a submission the
/// service refuses (its database connections just replaced) is sent again.
async fn submit_one_by_one(app: &TestApp, db: &PgPool, n: i64) {
    for number in 0..n {
        let (_, id) = wait_for_v2(&client(), &app.url(""), number as u64 + 3).await;
        let started = Instant::now();
        loop {
            let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                .bind(&id)
                .fetch_one(db)
                .await
                .unwrap();
            if status == "succeeded" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "job {id} is still {status} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A fresh PostgreSQL with `pg_stat_statements`, a connection of the test's own to read it,
/// and a replica on it.
async fn counted_replica() -> (PostgresServer, PgPool, TestApp) {
    let pg = PostgresServer::start();
    let url = pg.url();
    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&db)
        .await
        .unwrap();
    let app = spawn_with(|s| s.database.url = url.clone()).await;
    (pg, db, app)
}

async fn reset_statements(db: &PgPool) {
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(db)
        .await
        .unwrap();
}

/// [`SUBMITTED`] jobs submitted one by one cost one claim each; an upkeep round that found
/// a job queued may add one.
async fn assert_one_claim_per_submission(app: &TestApp, db: &PgPool, when: &str) {
    reset_statements(db).await;
    submit_one_by_one(app, db, SUBMITTED).await;
    let submitting = statements(db).await;
    assert!(
        (SUBMITTED..=SUBMITTED + 2).contains(&claims(&submitting)),
        "{} claims for {SUBMITTED} jobs {when}: {submitting:?}",
        claims(&submitting)
    );
}

/// A replica claims once for each job submitted to it (its own insert's notice, echoed back
/// by PostgreSQL, wakes nothing: the submission did); idle, it issues no claim and only its
/// upkeep's statement a round (pg_stat_statements counts what it asks over 12 s with the
/// default 5 s poll interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_an_idle_replica_issues_no_claim_and_its_upkeep_alone() {
    let _one_at_a_time = exclusive().await;
    let (_pg, db, app) = counted_replica().await;
    assert_one_claim_per_submission(&app, &db, "submitted one by one").await;
    reset_statements(&db).await;
    let idle = Duration::from_secs(12);
    tokio::time::sleep(idle).await;
    let statements = statements(&db).await;
    let total: i64 = statements.iter().map(|(_, n)| n).sum();
    assert_eq!(
        claims(&statements),
        0,
        "an idle replica claimed: {statements:?}"
    );
    assert!(
        total <= 4,
        "{total} statements in {idle:?} of idle: {statements:?}"
    );
    eprintln!("idle for {idle:?}: {total} statements");
    drop(app);
}

/// The faults: every database session of the replica terminated (a failover, a pooler
/// restart), then the database frozen (every server process SIGSTOPped) while the replica
/// connects again, so the submission waiting for a connection is dropped at its deadline,
/// and let go. The connections it opens after are recorded as they open, so its own notices
/// are still skipped: one claim per submission, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_a_replica_knows_its_own_notices_after_its_sessions_are_replaced() {
    let _one_at_a_time = exclusive().await;
    let (pg, db, app) = counted_replica().await;
    submit_one_by_one(&app, &db, 1).await;
    let before: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(!before.is_empty());
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .execute(&db)
    .await
    .unwrap();
    pg.signal_all("-STOP");
    // The first submissions fail at once on the terminated sessions; one then waits for a
    // new connection to the frozen database until its deadline.
    let mut waited = Vec::new();
    while waited.last().is_none_or(|w| *w < Duration::from_secs(1)) && waited.len() < 20 {
        let sent = Instant::now();
        let r = submit(&client(), &app.url(""), 2, 1000).await;
        waited.push(sent.elapsed());
        assert_eq!(r.status(), 503, "{:?}", r.text().await);
    }
    eprintln!("submissions to the frozen database answered after {waited:?}");
    pg.signal_all("-CONT");
    assert!(
        waited.last().is_some_and(|w| *w >= Duration::from_secs(1)),
        "no submission waited for a connection: {waited:?}"
    );
    // Its sessions come back (the listener's too, within its second of back-off) before
    // the count starts.
    let started = Instant::now();
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' \
             AND NOT (pid = ANY($1))",
        )
        .bind(&before)
        .fetch_one(&db)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the listener did not come back"
        );
        // Submissions bring the pool's connections back meanwhile.
        submit_one_by_one(&app, &db, 1).await;
    }
    submit_one_by_one(&app, &db, 1).await;
    assert_one_claim_per_submission(&app, &db, "after the sessions were replaced").await;
    drop(app);
}

/// Three replicas, 5,000 jobs submitted in batches: every job succeeds, once, with its
/// digest, and no two claims of one job overlap (from each attempt's start and end as the
/// database recorded them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_three_replicas_claim_5000_jobs_each_once_per_attempt() {
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("WORKER_COUNT", "2"),
        ("FLOODGATE__LOG__ACCESS_LOG", "false"),
    ];
    let (a, b, c3) = tokio::join!(
        spawn_binary(&envs),
        spawn_binary(&envs),
        spawn_binary(&envs)
    );
    let bases = [a.base.clone(), b.base.clone(), c3.base.clone()];
    let c = client();
    let started = Instant::now();
    for batch in 0..5u64 {
        let jobs: Vec<String> = (0..1000u64)
            .map(|i| {
                format!(
                    r#"{{"number": {}, "rounds": 1000}}"#,
                    (batch * 1000 + i) % 1_000_000
                )
            })
            .collect();
        let r = c
            .post(format!("{}/api/v2/jobs:batch", bases[batch as usize % 3]))
            .header("content-type", "application/json")
            .body(format!(r#"{{"jobs": [{}]}}"#, jobs.join(",")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    wait_for_count(
        &db,
        "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'scheduled', 'running')",
        |left| left == 0,
        Duration::from_secs(120).saturating_sub(started.elapsed()),
        "jobs left",
    )
    .await;
    let took = started.elapsed();
    let rows = sqlx::query("SELECT number, status, digest FROM jobs")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5000);
    for row in &rows {
        let n: i64 = row.get("number");
        assert_eq!(row.get::<String, _>("status"), "succeeded");
        assert_eq!(
            row.get::<i64, _>("digest") as u64,
            floodgate::pool::intensive_digest(n as u64, 1000)
        );
    }
    let attempts = sqlx::query(
        "SELECT job_id, runner, started_at, finished_at FROM job_attempts ORDER BY job_id, started_at",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut runners = HashSet::new();
    let mut last: Option<(String, i64)> = None;
    for row in &attempts {
        let (job, start, end): (String, i64, Option<i64>) = (
            row.get("job_id"),
            row.get("started_at"),
            row.get("finished_at"),
        );
        runners.insert(row.get::<String, _>("runner"));
        let end = end.unwrap_or_else(|| panic!("an attempt at {job} never ended"));
        assert!(start <= end);
        if let Some((previous, previous_end)) = &last {
            if *previous == job {
                assert!(*previous_end <= start, "two claims of {job} overlap");
            }
        }
        last = Some((job, end));
    }
    assert!(attempts.len() >= 5000);
    assert_eq!(runners.len(), 3, "all three replicas claimed");
    eprintln!(
        "5,000 jobs on three replicas in {took:?} ({:.0}/s), {} attempts",
        5000.0 / took.as_secs_f64(),
        attempts.len()
    );
}

/// Two batches sharing their keys in opposite orders, submitted together: both are 202 with
/// one job per key, and the breaker counts nothing: two clients meeting is not the database
/// failing. Before, each inserted keys the other then needed, PostgreSQL aborted one as a
/// deadlock, and its retry met the other again in the middle: a 503, and a failure on the
/// breaker. Now a batch takes its keys' locks in one order first, and the second waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_pg_batches_crossing_their_keys_are_both_taken() {
    const KEYS: u64 = 300;
    let _one_at_a_time = exclusive().await;
    let pg = PostgresServer::start();
    let url = pg.url();
    let app = spawn_with(|s| {
        s.database.url = url.clone();
        // One failure would open it: a deadlock counted would show.
        s.database.breaker.consecutive_failures = 1;
    })
    .await;
    let c = client();
    let batch = |reversed: bool| {
        let mut jobs: Vec<String> = (0..KEYS)
            .map(|n| format!(r#"{{"number": {n}, "rounds": 1000, "idempotency_key": "k-{n}"}}"#))
            .collect();
        if reversed {
            jobs.reverse();
        }
        c.post(app.url("/api/v2/jobs:batch"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"jobs": [{}]}}"#, jobs.join(",")))
            .send()
    };
    let (forward, backward) = tokio::join!(batch(false), batch(true));
    let mut ids = Vec::new();
    for r in [forward.unwrap(), backward.unwrap()] {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        let by_number: HashMap<u64, String> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["number"].as_u64().unwrap(),
                    j["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(by_number.len(), KEYS as usize);
        ids.push(by_number);
    }
    assert_eq!(ids[0], ids[1], "one job per key, whichever batch made it");
    assert_eq!(list_all(&c, &app.url(""), "").await.len(), KEYS as usize);
    assert_eq!(
        database_breaker(&app).await,
        0.0,
        "the breaker stayed closed"
    );

    // A batch whose client goes while it waits on a key another transaction is inserting:
    // its transaction is rolled back and its keys' locks let go, so the next batch with
    // those keys makes both jobs afresh.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let mut held = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, status, number, rounds, created_at, idempotency_key, request_hash, \
         idempotency_expires_at) VALUES ($1, 'queued', 1, 1, 0, 'k-held', 'x', $2)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(i64::MAX)
    .execute(&mut *held)
    .await
    .unwrap();
    let two_keys = r#"{"jobs": [{"number": 1, "idempotency_key": "k-free"}, {"number": 2, "idempotency_key": "k-held"}]}"#;
    let post_batch = |body: &'static str| {
        c.post(app.url("/api/v2/jobs:batch"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let gone = tokio::spawn(post_batch(two_keys));
    wait_for_count(
        &db,
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO jobs%'",
        |waiting| waiting == 1,
        Duration::from_secs(10),
        "the batch waiting on the held key",
    )
    .await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    // The server has dropped the request (the client's connection closed) before the key
    // is let go: otherwise the batch could still commit.
    app.wait_for_exposition("the abandoned batch dropped", |text| {
        sum_series(text, "http_server_active_requests", |l| {
            l.contains("\"POST\"")
        }) == 0.0
    })
    .await;
    held.rollback().await.unwrap();
    let r = post_batch(two_keys).await.unwrap();
    assert_eq!(r.status(), 202);
    let fresh: Value = r.json().await.unwrap();
    for job in fresh["jobs"].as_array().unwrap() {
        assert_eq!(job["replayed"], false, "{fresh}");
    }
    let keyed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE idempotency_key IN ('k-free', 'k-held')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(keyed, 2, "the abandoned batch left nothing");
    assert_eq!(database_breaker(&app).await, 0.0);
    let health = c.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
