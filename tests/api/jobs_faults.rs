//! API v2 on SQLite when things go wrong under it: a full disk, the file deleted, two
//! replicas migrating one new file, a drain with a backlog, a runner that panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// A small tmpfs of its own, unmounted when dropped; `None` (with the reason printed) where
/// this process may not mount one (not root, or no `CAP_SYS_ADMIN`).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("floodgate-tmpfs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(dir)),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs here (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Take all but `left` bytes of the free space.
    fn fill(&self, left: u64) {
        let free = {
            let out = Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(&self.0)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let take = free.saturating_sub(left) as usize;
        std::fs::write(self.0.join("filler"), vec![0u8; take]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

async fn submit(c: &reqwest::Client, base: &str, number: u64) -> reqwest::Response {
    c.post(format!("{base}/api/v2/jobs"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"number": {number}, "rounds": 1000}}"#))
        .send()
        .await
        .unwrap()
}

/// On a full disk every submission is either refused with 503 or stored: none is answered
/// 202 and then gone, and `/health` says the database is failing.
#[tokio::test]
async fn a_full_disk_refuses_submissions_and_never_acknowledges_a_lost_one() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let url = format!("sqlite://{}/jobs.db", fs.path().display());
    let app = spawn_with(|s| {
        s.database.url = url.clone();
        s.database.breaker.consecutive_failures = 3;
    })
    .await;
    let c = client();
    let base = app.url("");
    // Jobs that stay queued behind a long one, to be cancelled once the disk is full.
    let mut queued = Vec::new();
    for _ in 0..3 {
        let r = c
            .post(format!("{base}/api/v2/jobs"))
            .header("content-type", "application/json")
            .body(r#"{"number": 1, "rounds": 100000000}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        queued.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    fs.fill(64 * 1024);
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    for n in 0..400 {
        let r = submit(&c, &base, n).await;
        match r.status().as_u16() {
            202 => acknowledged.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            503 => {
                assert_envelope(r, 503, "DEPENDENCY_UNAVAILABLE").await;
                refused += 1;
            }
            other => panic!("submission {n}: {other}"),
        }
    }
    assert!(
        refused > 0,
        "the disk never filled ({} stored)",
        acknowledged.len()
    );
    let victim = queued.last().unwrap();
    let cancel = c
        .delete(format!("{base}/api/v2/jobs/{victim}"))
        .send()
        .await
        .unwrap();
    let cancel_acknowledged = match cancel.status().as_u16() {
        200 => true,
        503 => false,
        other => panic!("cancel on a full disk: {other}"),
    };
    let health = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503, "a failing database is not healthy");
    let body: Value = health.json().await.unwrap();
    assert!(
        body["status"]["database"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"),
        "{body}"
    );
    // Room again: everything that was acknowledged is there.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    let started = Instant::now();
    for id in &acknowledged {
        loop {
            let r = c
                .get(format!("{base}/api/v2/jobs/{id}"))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert_eq!(r.status(), 503, "acknowledged job {id} is gone");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the database never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if cancel_acknowledged {
        let job: Value = c
            .get(format!("{base}/api/v2/jobs/{victim}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["status"], "cancelled", "answered cancelled, but {job}");
    }
}

/// `(status, attempts, started_at is set)` of every job in a SQLite file.
async fn rows(url: &str) -> Vec<(String, i64, bool)> {
    let db = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT status, attempts, started_at FROM jobs")
            .fetch_all(&db)
            .await
            .unwrap();
    db.close().await;
    rows.into_iter()
        .map(|(s, a, t)| (s, a, t.is_some()))
        .collect()
}

/// A backlog when SIGTERM arrives, with one attempt per job: the draining replica claims
/// nothing more, so the jobs it did not run stay queued with no attempt spent and no lease,
/// and run after the restart. Before, it kept claiming what its pool refused: every queued
/// job burnt its only attempt, and failed without ever running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_with_a_backlog_leaves_the_backlog_queued_and_untouched() {
    let _one_at_a_time = exclusive().await;
    let db = temp_database_url();
    let envs = [
        ("DATABASE_URL", db.as_str()),
        ("WORKER_COUNT", "2"),
        ("FLOODGATE__JOBS__MAX_ATTEMPTS", "1"),
        ("FLOODGATE__LOG__ACCESS_LOG", "false"),
    ];
    let mut app = spawn_binary(&envs).await;
    let c = client();
    let mut ids = Vec::new();
    for n in 0..30u64 {
        let r = c
            .post(format!("{}/api/v2/jobs", app.base))
            .header("content-type", "application/json")
            .body(format!(r#"{{"number": {n}, "rounds": 20000000}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // One is running: the backlog is real.
    let started = Instant::now();
    loop {
        let list: Value = get_json(&format!("{}/api/v2/jobs?status=running", app.base)).await;
        if !list["jobs"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no job started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.child.signal("-TERM");
    let (status, _) = app.wait_for_exit();
    assert_eq!(status.code(), Some(0));

    let after_drain = rows(&db).await;
    assert_eq!(after_drain.len(), 30);
    let queued = after_drain.iter().filter(|r| r.0 == "queued").count();
    assert!(
        queued > 0,
        "the backlog ran within the drain: nothing was tested"
    );
    for (status, attempts, started) in &after_drain {
        match status.as_str() {
            "succeeded" => assert_eq!(*attempts, 1),
            "queued" => assert_eq!(
                (*attempts, *started),
                (0, false),
                "a queued job was touched"
            ),
            other => panic!("a job is {other} after a graceful drain: {after_drain:?}"),
        }
    }

    let app = spawn_binary(&envs).await;
    for id in &ids {
        let started = Instant::now();
        loop {
            let job = get_json(&format!("{}/api/v2/jobs/{id}", app.base)).await;
            if job["status"] == "succeeded" {
                break;
            }
            assert!(
                ["queued", "running"].contains(&job["status"].as_str().unwrap()),
                "{job}"
            );
            assert!(started.elapsed() < Duration::from_secs(60), "{job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `/health` until `done` holds for its `database` entry (10 s at most).
async fn wait_for_database(app: &TestApp, done: impl Fn(u16, &str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let r = app.get("/health").await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        let database = body["status"]["database"].as_str().unwrap_or("").to_owned();
        if done(status, &database) {
            return database;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SQLite file deleted while the service runs: it notices within an upkeep round, says
/// so on `/health` (503) and refuses submissions rather than acknowledge jobs into a file
/// that no longer has a name; a file put back at the path is taken up without a restart.
/// Before, submissions went on being answered 202, `/health` said 200, and every job was
/// gone after the next start.
#[tokio::test]
async fn a_deleted_database_file_is_noticed_refused_and_replaced() {
    let url = temp_database_url();
    let path = PathBuf::from(url.strip_prefix("sqlite://").unwrap());
    let app = spawn_with(|s| s.database.url = url.clone()).await;
    let c = client();
    let base = app.url("");
    assert_eq!(submit(&c, &base, 1).await.status(), 202);
    std::fs::remove_file(&path).unwrap();
    let why = wait_for_database(&app, |status, db| status == 503 && db.contains("deleted")).await;
    assert!(why.contains(&path.display().to_string()), "{why}");
    let r = submit(&c, &base, 2).await;
    assert_envelope(r, 503, "DEPENDENCY_UNAVAILABLE").await;

    // An empty file at the path: a fresh database, as a restart would make.
    std::fs::write(&path, b"").unwrap();
    wait_for_database(&app, |status, db| status == 200 && db == "healthy").await;
    let r = submit(&c, &base, 3).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = c
        .get(format!("{base}/api/v2/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the job is in the new file");
    drop(app);
    let _ = path;
}

/// Replicas starting together on a new SQLite file take turns to migrate it: every one
/// starts and serves v2 at once. Before, one of two failed its migration ("table jobs
/// already exists") about one start in three, and answered 503 for seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_new_file_all_migrate_it() {
    for trial in 0..8 {
        let url = temp_database_url();
        let apps = futures_util::future::join_all((0..3).map(|_| {
            let url = url.clone();
            async move {
                let mut s = test_settings();
                s.database.url = url;
                floodgate::Application::build(s).await
            }
        }))
        .await;
        for app in apps {
            let app = app.unwrap_or_else(|e| panic!("trial {trial}: {e}"));
            assert!(
                app.state().jobs.get().is_some(),
                "trial {trial}: a replica started without its jobs database"
            );
        }
    }
}

/// Another process holding SQLite's write lock (a `sqlite3` shell left in a transaction, a
/// backup that locks): a write that waits out `database.acquire_timeout` is refused with 503
/// and `Retry-After`, never a hang or a 202; `/health` says so while the breaker is open;
/// once the lock is let go, submissions are taken again without a restart, and the refused
/// one was not stored. A shorter wait is contention and goes through (see the store's tests).
#[tokio::test]
async fn a_write_lock_held_elsewhere_is_refused_in_time_and_then_let_go() {
    use sqlx::Connection;
    let url = temp_database_url();
    let app = spawn_with(|s| {
        s.database.url = url.clone();
        s.database.acquire_timeout = Duration::from_millis(300);
        s.database.breaker.consecutive_failures = 1;
        s.database.breaker.open_for = Duration::from_millis(500);
    })
    .await;
    let c = client();
    let base = app.url("");
    assert_eq!(submit(&c, &base, 1).await.status(), 202);

    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let started = Instant::now();
    let refused = submit(&c, &base, 2).await;
    let waited = started.elapsed();
    assert!(
        refused.headers().contains_key("retry-after"),
        "{:?}",
        refused.headers()
    );
    assert_envelope(refused, 503, "DEPENDENCY_UNAVAILABLE").await;
    // The busy timeout, then the answer: never the request's own deadline.
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let why = wait_for_database(&app, |status, db| status == 503 && db != "healthy").await;
    assert!(why.contains("unavailable"), "{why}");

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    wait_for_database(&app, |status, db| status == 200 && db == "healthy").await;
    assert_eq!(submit(&c, &base, 3).await.status(), 202);
    let numbers: Vec<i64> = sqlx::query_scalar("SELECT number FROM jobs ORDER BY number")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert_eq!(numbers, [1, 3], "the refused submission was not stored");
}
