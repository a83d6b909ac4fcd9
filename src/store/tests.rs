//! The store against a real SQLite file: every call path is cancel-safe, and a write the
//! database refused is never reported as done.

use std::time::{Duration, Instant};

use super::*;
use crate::dependency::CircuitState;
use crate::testing::drop_at_every_await;

fn sqlite_settings() -> DatabaseSettings {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir()
        .join("floodgate-store-tests")
        .join(format!("{}-{n}.db", std::process::id()));
    DatabaseSettings {
        url: format!("sqlite://{}", path.display()),
        ..DatabaseSettings::default()
    }
}

fn breaker_config(open_for: Duration) -> BreakerConfig {
    BreakerConfig {
        failure_ratio: 1.0,
        min_calls: 1000,
        consecutive_failures: 1,
        window: Duration::from_secs(10),
        open_for,
    }
}

async fn store(s: &DatabaseSettings, open_for: Duration) -> JobStore {
    JobStore::open(s, StoreMetrics::default(), breaker_config(open_for))
        .await
        .unwrap_or_else(|e| panic!("store opens: {e}"))
}

fn new_job(n: u64, key: Option<&str>) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        number: n,
        rounds: 1,
        created_at: now_us(),
        run_at: now_us(),
        owner: None,
        idempotency: key.map(|k| (k.to_owned(), "hash".to_owned(), i64::MAX)),
    }
}

/// The injected fault of the lock tests: another connection, as another process would,
/// holding SQLite's write lock (`BEGIN IMMEDIATE`) until it commits or rolls back.
async fn write_lock_elsewhere(settings: &DatabaseSettings) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut other = sqlx::SqliteConnection::connect(&settings.url)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    other
}

/// Trip the breaker and wait for its open period to lapse: the next call is the probe.
async fn half_open(store: &JobStore) {
    store.breaker.trip();
    let started = Instant::now();
    while store.breaker.state() != CircuitState::HalfOpen {
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::task::yield_now().await;
    }
}

/// Until every connection is back in the pool: sqlx gives a dropped connection back in a task
/// of its own, after a ping that waits on SQLite's worker thread.
async fn all_idle(store: &JobStore) {
    let started = Instant::now();
    while store.connections().1 != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a connection was not given back"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn every_call_path_dropped_at_every_await_hands_its_probe_back() {
    let mut settings = sqlite_settings();
    // One connection: holding it makes every call wait at its first await, for certain.
    settings.max_connections = 1;
    let store = store(&settings, Duration::from_millis(1)).await;
    let seeded = new_job(7, None);
    let id = seeded.id.clone();
    assert!(matches!(
        store.insert(seeded).await.unwrap(),
        Inserted::Created(_)
    ));
    let owner = "runner";
    let claimed = store
        .claim(owner, 1, Duration::from_secs(60), now_us())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the seeded job is claimed");
    assert_eq!(claimed[0].id, id);

    type Op<'a> =
        Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> + 'a>;
    let s = &store;
    let (id, owner) = (&id, owner);
    let ops: Vec<(&str, Op)> = vec![
        (
            "insert",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.insert(new_job(1, None)).await;
                })
            }),
        ),
        (
            "insert with a key",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.insert(new_job(2, Some("k"))).await;
                })
            }),
        ),
        (
            "get",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.get(id, None).await;
                })
            }),
        ),
        (
            "list",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.list(None, None, 10, None).await;
                })
            }),
        ),
        (
            "claim",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.claim("other", 8, Duration::from_secs(1), now_us()).await;
                })
            }),
        ),
        (
            "renew",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.renew(owner, Duration::from_secs(60), now_us()).await;
                })
            }),
        ),
        (
            "upkeep",
            Box::new(|| {
                Box::pin(async {
                    let backoff = Backoff {
                        base: Duration::from_secs(1),
                        max: Duration::from_secs(10),
                    };
                    let _ = s
                        .upkeep(now_us(), 3, backoff, Duration::from_secs(60), 10)
                        .await;
                })
            }),
        ),
        (
            "release someone else's claim",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.release(id, "other").await;
                })
            }),
        ),
        (
            "retry an unknown job",
            Box::new(|| {
                Box::pin(async {
                    let _ = s
                        .retry(&uuid::Uuid::now_v7().to_string(), None, now_us())
                        .await;
                })
            }),
        ),
        (
            "cancel an unknown job",
            Box::new(|| {
                Box::pin(async {
                    let _ = s
                        .cancel(&uuid::Uuid::now_v7().to_string(), None, now_us())
                        .await;
                })
            }),
        ),
        (
            "finish someone else's run",
            Box::new(|| {
                Box::pin(async {
                    let end = End::Failed { error: "x".into() };
                    let _ = s.finish("other", &[(id.clone(), now_us(), end)]).await;
                })
            }),
        ),
    ];
    let Backend::Sqlite(file) = &store.backend else {
        unreachable!()
    };
    // Another writer, which must find the lock free after every drop: a transaction that
    // writes holds it from its first statement, and a dropped call's must be rolled back
    // then, not when its connection is next used.
    let outside = &tokio::sync::Mutex::new(
        sqlx::ConnectOptions::connect(
            &SqliteConnectOptions::from_str(&settings.url)
                .unwrap()
                .busy_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap(),
    );
    for (name, op) in &ops {
        let store = &store;
        // The probe dropped while it waits for a connection: certain to happen.
        half_open(store).await;
        let held = file.pool().acquire().await.unwrap();
        let waiting = crate::testing::drop_at_suspension(op(), 1).await;
        assert!(waiting.is_none(), "{name} did not wait for the connection");
        drop(held);
        store
            .get(id, None)
            .await
            .unwrap_or_else(|e| panic!("{name}, dropped waiting for a connection: {e}"));
        assert_eq!(store.breaker.state(), CircuitState::Closed, "{name}");
        // A write dropped while it waits for its turn (reads take none) leaves the queue.
        if !matches!(*name, "get" | "list") {
            half_open(store).await;
            all_idle(store).await;
            let turn = file.writer_turn(true).await;
            let mut waiting = op();
            // Polled once: it waits, and holds no connection (it has not reached the pool).
            let polled = tokio::time::timeout(Duration::ZERO, &mut waiting).await;
            assert!(polled.is_err(), "{name} did not wait for its turn");
            assert_eq!(store.connections().1, 0, "{name} did not wait for its turn");
            drop(waiting);
            drop(turn);
            assert_eq!(file.writers.available_permits(), 1, "{name}");
            store
                .get(id, None)
                .await
                .unwrap_or_else(|e| panic!("{name}, dropped waiting for its turn: {e}"));
            assert_eq!(store.breaker.state(), CircuitState::Closed, "{name}");
        }
        // Then at every await it reaches with the connection free (how many depends on how
        // soon SQLite's worker thread answers).
        half_open(store).await;
        drop_at_every_await(op, |k| async move {
            let mut outside = outside.lock().await;
            for statement in ["BEGIN IMMEDIATE", "ROLLBACK"] {
                sqlx::query(statement)
                    .execute(&mut *outside)
                    .await
                    .unwrap_or_else(|e| panic!("{name}, dropped at await {k}, kept the lock: {e}"));
            }
            // Dropped at its k-th await: the next call is let through as the probe, and
            // closes the breaker.
            let started = Instant::now();
            store
                .get(id, None)
                .await
                .unwrap_or_else(|e| panic!("{name}, dropped at await {k}: {e}"));
            assert_eq!(store.breaker.state(), CircuitState::Closed, "{name} at {k}");
            assert!(started.elapsed() < store.deadline);
            half_open(store).await;
        })
        .await;
        assert_eq!(
            store.breaker.state(),
            CircuitState::Closed,
            "{name} ran to its end"
        );
    }
}

#[tokio::test]
async fn a_write_the_database_refuses_is_an_error_and_a_breaker_failure() {
    let mut settings = sqlite_settings();
    settings.max_connections = 1;
    let store = store(&settings, Duration::from_secs(60)).await;
    let Backend::Sqlite(file) = &store.backend else {
        unreachable!()
    };
    let pool = &file.pool();
    // A database that cannot grow: the next page it needs is refused with SQLITE_FULL, as on
    // a full disk.
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {pages}"
    )))
    .execute(pool)
    .await
    .unwrap();
    let mut refused = None;
    for n in 0..10_000 {
        let job = new_job(n, Some(&format!("key-{n}-{}", "x".repeat(200))));
        let id = job.id.clone();
        match store.insert(job).await {
            Ok(Inserted::Created(_)) => {
                assert!(
                    store.get(&id, None).await.unwrap().is_some(),
                    "acknowledged, then lost"
                );
            }
            Ok(_) => unreachable!(),
            Err(e) => {
                refused = Some(e.to_string());
                break;
            }
        }
    }
    let refused = refused.expect("the database filled up");
    assert!(refused.contains("full"), "{refused}");
    assert_eq!(
        store.breaker.state(),
        CircuitState::Open,
        "a refused write is a failure of the database, not a success"
    );
}

fn owned_job(n: u64, owner: Option<&str>, key: &str) -> NewJob {
    NewJob {
        owner: owner.map(str::to_owned),
        ..new_job(n, Some(key))
    }
}

/// An idempotency key is one owner's: another owner's same key makes its own job, each
/// owner's replay finds its own, and lookups by owner see nothing of the others' jobs.
#[tokio::test]
async fn idempotency_keys_and_lookups_are_per_owner() {
    let store = store(&sqlite_settings(), Duration::from_secs(60)).await;
    let mut ids = Vec::new();
    for owner in [Some("key:alice"), Some("key:bob"), None] {
        match store.insert(owned_job(1, owner, "k")).await.unwrap() {
            Inserted::Created(job) => ids.push(job.id),
            _ => panic!("{owner:?}: the same key under another owner is a new job"),
        }
        match store.insert(owned_job(1, owner, "k")).await.unwrap() {
            Inserted::Replayed(job) => assert_eq!(&job.id, ids.last().unwrap(), "{owner:?}"),
            _ => panic!("{owner:?}: its own key replays its job"),
        }
    }
    let (alice, bob) = (&ids[0], &ids[1]);
    assert!(store.get(alice, Some("key:bob")).await.unwrap().is_none());
    assert!(store.get(alice, Some("key:alice")).await.unwrap().is_some());
    assert!(store.get(alice, None).await.unwrap().is_some());
    let listed = |owner| {
        let store = &store;
        async move {
            let jobs = store.list(owner, None, 10, None).await.unwrap();
            jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some("key:bob")).await, [bob.as_str()]);
    assert_eq!(listed(None).await.len(), 3);
    assert!(matches!(
        store
            .cancel(alice, Some("key:bob"), now_us())
            .await
            .unwrap(),
        Cancelled::NotFound
    ));
    assert!(matches!(
        store
            .cancel(alice, Some("key:alice"), now_us())
            .await
            .unwrap(),
        Cancelled::Cancelled(_)
    ));
}

/// The unique index itself (what settles two submissions racing with one key) holds per
/// owner, and for jobs without an owner too, which a plain index on `(owner, key)` would
/// let repeat a key: NULLs are distinct in a unique index.
#[tokio::test]
async fn the_database_keeps_keys_unique_per_owner_even_without_one() {
    let store = store(&sqlite_settings(), Duration::from_secs(60)).await;
    let Backend::Sqlite(file) = &store.backend else {
        unreachable!()
    };
    let pool = &file.pool();
    let insert = |owner: Option<&'static str>| async move {
        sqlx::query(
            "INSERT INTO jobs (id, status, number, rounds, created_at, owner, idempotency_key) \
             VALUES ($1, 'queued', 1, 1, 0, $2, 'k')",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(owner)
        .execute(pool)
        .await
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

/// A database written before jobs had owners keeps its jobs and keys: they have no owner,
/// so a replay without authentication still finds them.
#[tokio::test]
async fn jobs_from_before_owners_keep_their_keys() {
    let settings = sqlite_settings();
    let path = settings.url.trim_start_matches("sqlite://");
    std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
    let options = SqliteConnectOptions::from_str(&settings.url)
        .unwrap()
        .create_if_missing(true);
    let old = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate!("migrations/sqlite")
        .run_to(1, &old)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO jobs (id, status, number, rounds, created_at, idempotency_key, request_hash, \
         idempotency_expires_at) VALUES ($1, 'succeeded', 3, 1, 0, 'k', 'hash', $2)",
    )
    .bind(&id)
    .bind(i64::MAX)
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let store = store(&settings, Duration::from_secs(60)).await;
    assert_eq!(store.get(&id, None).await.unwrap().unwrap().number, 3);
    match store.insert(new_job(3, Some("k"))).await.unwrap() {
        Inserted::Replayed(job) => assert_eq!(job.id, id),
        _ => panic!("the key written before the migration is replayed"),
    }
    let owned = store
        .insert(owned_job(3, Some("key:alice"), "k"))
        .await
        .unwrap();
    assert!(matches!(owned, Inserted::Created(_)));
}

/// A runner that ran a job and died before its batched commit: the job's lease lapses, the
/// upkeep schedules it again, another runner runs and records it; the dead runner's commit,
/// had it come late, changes nothing. The job ends once, with two attempts in its history.
#[tokio::test]
async fn a_run_lost_before_its_commit_runs_again_and_is_recorded_once() {
    let store = store(&sqlite_settings(), Duration::from_secs(60)).await;
    let job = new_job(5, None);
    let id = job.id.clone();
    store.insert(job).await.unwrap();
    let lease = Duration::from_millis(1);
    let claimed = store.claim("dead", 8, lease, now_us()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // The dead runner never commits. Its lease lapses; upkeep reschedules the job at once.
    let backoff = Backoff {
        base: Duration::from_micros(1),
        max: Duration::from_micros(1),
    };
    let later = now_us() + 1_000;
    let upkept = store
        .upkeep(later, 3, backoff, Duration::from_secs(3600), 10)
        .await
        .unwrap();
    assert_eq!((upkept.retried, upkept.discarded), (1, 0));
    let again = store
        .claim("alive", 8, Duration::from_secs(60), later + 1_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "taken up again");
    assert_eq!(again[0].attempts, 2);
    let end = End::Succeeded {
        result: 25,
        digest: 1,
    };
    let recorded = store
        .finish("alive", &[(id.clone(), later + 2_000, end.clone())])
        .await
        .unwrap();
    assert_eq!(recorded, vec![id.clone()]);
    // The dead runner's commit, late: not its job any more.
    let late = store
        .finish("dead", &[(id.clone(), later + 3_000, end)])
        .await
        .unwrap();
    assert!(late.is_empty(), "recorded once");
    let job = store.get(&id, None).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 2));
    let history = store.attempts(&id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].error.as_deref().unwrap().contains("lease"));
    assert!(history[0].finished_at.unwrap() <= history[1].started_at);
    assert_eq!(history[1].error, None);
}

/// A finished job past its retention is purged with its attempts (there is no cascade to do
/// it), and a job not yet past it keeps both.
#[tokio::test]
async fn the_upkeep_purges_a_job_with_its_attempts() {
    let store = store(&sqlite_settings(), Duration::from_secs(60)).await;
    let (old, young) = (new_job(1, Some("k-old")), new_job(2, None));
    let (old_id, young_id) = (old.id.clone(), young.id.clone());
    store.insert(old).await.unwrap();
    let claimed = store
        .claim("r", 8, Duration::from_secs(60), now_us())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let end = End::Succeeded {
        result: 1,
        digest: 1,
    };
    store
        .finish("r", &[(old_id.clone(), now_us(), end.clone())])
        .await
        .unwrap();
    let finished = now_us();
    store.insert(young).await.unwrap();
    store
        .claim("r", 8, Duration::from_secs(60), now_us())
        .await
        .unwrap();
    store
        .finish("r", &[(young_id.clone(), finished + 10_000_000, end)])
        .await
        .unwrap();
    assert_eq!(store.attempts(&old_id).await.unwrap().len(), 1);

    let backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(1),
    };
    // One second past the old job's end, with a retention of half a second.
    let upkept = store
        .upkeep(
            finished + 1_000_000,
            3,
            backoff,
            Duration::from_millis(500),
            10,
        )
        .await
        .unwrap();
    assert_eq!(upkept.purged, 1);
    assert!(store.get(&old_id, None).await.unwrap().is_none());
    assert!(
        store.attempts(&old_id).await.unwrap().is_empty(),
        "attempts purged too"
    );
    assert!(store.get(&young_id, None).await.unwrap().is_some());
    assert_eq!(store.attempts(&young_id).await.unwrap().len(), 1);
    // Its key is free again: a new job may take it.
    assert!(matches!(
        store.insert(new_job(3, Some("k-old"))).await.unwrap(),
        Inserted::Created(_)
    ));
}

/// Another writer holding SQLite's lock is contention, not a failing database: each write
/// path waits for the lock (within the busy timeout) and goes through, and the breaker stays
/// closed. The upkeep reads before it writes; begun deferred, it failed at its first write
/// whenever the other writer committed meanwhile, and a batch of submissions running
/// alongside the upkeep opened the breaker.
#[tokio::test]
async fn a_write_waits_out_another_writer_and_the_breaker_stays_closed() {
    let settings = sqlite_settings();
    let store = store(&settings, Duration::from_secs(60)).await;
    store.insert(new_job(1, None)).await.unwrap();
    let claimed = store
        .claim("r", 1, Duration::from_secs(60), now_us())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.insert(new_job(2, None)).await.unwrap();

    let mut other = write_lock_elsewhere(&settings).await;
    sqlx::query("UPDATE jobs SET rounds = rounds")
        .execute(&mut other)
        .await
        .unwrap();
    let backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(1),
    };
    // Past the claimed job's lease: the upkeep reads it, then rescues it.
    let later = now_us() + 120_000_000;
    let upkeep = store.upkeep(later, 3, backoff, Duration::from_secs(3600), 10);
    // A lease past `later`, so the job this claims is not lapsed if the upkeep comes after.
    let claim = store.claim("r", 1, Duration::from_secs(3600), now_us());
    let batch = store.insert_batch(vec![new_job(3, Some("k")), new_job(4, None)]);
    let hold = async {
        // The injected fault: the other writer keeps the lock this long, then commits.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    };
    let (upkept, claimed, inserted, ()) = tokio::join!(upkeep, claim, batch, hold);
    let upkept = upkept.expect("the upkeep waits for the lock");
    assert_eq!(upkept.retried, 1, "the lapsed job is rescued");
    assert_eq!(claimed.expect("the claim waits for the lock").len(), 1);
    assert!(matches!(
        inserted.expect("the batch waits for the lock"),
        Batch::Inserted(ref jobs) if jobs.len() == 2
    ));
    assert_eq!(store.state(), CircuitState::Closed);
}

/// The locks a batch takes for its keys: one per distinct (owner, key), sorted, so any two
/// batches take shared ones in the same order; none where one key cannot cross another batch.
#[test]
fn a_batch_locks_its_distinct_keys_in_one_order() {
    let job = |owner: Option<&str>, key: &str| NewJob {
        owner: owner.map(str::to_owned),
        ..new_job(1, Some(key))
    };
    assert!(key_locks(&[job(None, "a")]).is_empty(), "one key");
    assert!(
        key_locks(&[job(None, "a"), job(None, "a"), new_job(2, None)]).is_empty(),
        "one key twice, and a job without one"
    );
    let ids = key_locks(&[
        job(None, "b"),
        job(None, "a"),
        job(Some("key:alice"), "a"),
        job(None, "b"),
    ]);
    assert_eq!(ids.len(), 3, "a key is per owner: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(
        ids,
        key_locks(&[job(Some("key:alice"), "a"), job(None, "b"), job(None, "a")]),
        "the same keys in another order"
    );
}

/// SQLite's own wait for its write lock is a poll with sleeps of up to 100 ms, which a newer
/// writer overtakes: under load, a writer could lose every round until its busy timeout and
/// be refused while later ones went through. This process's writers take their turns first
/// come, first served.
#[tokio::test]
async fn writers_waiting_on_the_lock_take_it_in_the_order_they_came() {
    let mut settings = sqlite_settings();
    settings.acquire_timeout = Duration::from_secs(5);
    let store = store(&settings, Duration::from_secs(60)).await;
    store.insert(new_job(0, None)).await.unwrap();
    let mut other = write_lock_elsewhere(&settings).await;
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.insert(new_job(1, None)).await }
    });
    // The injected fault: another process keeps the lock while the first writer waits on
    // it, long enough for SQLite's polls to be 100 ms apart; then more writers come, and the
    // lock is let go as they do.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later: Vec<_> = (2..=8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.insert(new_job(n, None)).await })
        })
        .collect();
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    first.await.unwrap().expect("the first writer goes through");
    for w in later {
        w.await.unwrap().expect("every writer goes through");
    }
    let order: Vec<i64> = sqlx::query_scalar("SELECT number FROM jobs ORDER BY rowid")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert_eq!(order.len(), 9);
    assert_eq!(
        order[..2],
        [0, 1],
        "the writer that waited longest went first: {order:?}"
    );
}

/// Writers queued behind a lock another process holds past `acquire_timeout`: each is either
/// refused or stored, never both — a refusal comes before its statement started or from
/// SQLite giving up, not from a deadline while SQLite may still commit. And each answers
/// within its wait for a turn plus the statement's deadline.
#[tokio::test]
async fn a_writer_refused_behind_a_held_lock_is_not_stored() {
    let mut settings = sqlite_settings();
    settings.acquire_timeout = Duration::from_millis(300);
    settings.max_connections = 2;
    let store = store(&settings, Duration::from_millis(1)).await;
    for round in 0..3 {
        let mut other = write_lock_elsewhere(&settings).await;
        let jobs: Vec<NewJob> = (0..8).map(|n| new_job(round * 10 + n, None)).collect();
        let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let started = Instant::now();
        let writers: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let store = store.clone();
                tokio::spawn(async move {
                    let outcome = store.insert(job).await;
                    (outcome, started.elapsed())
                })
            })
            .collect();
        // The injected fault: the lock held past the wait each writer is allowed (longer
        // each round), then let go while some may still be waiting for it.
        tokio::time::sleep(Duration::from_millis(350 + 100 * round)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        let mut refused = 0;
        for (w, id) in writers.into_iter().zip(&ids) {
            let (outcome, took) = w.await.unwrap();
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&mut other)
                .await
                .unwrap();
            match outcome {
                Ok(Inserted::Created(_)) => assert_eq!(stored, 1, "round {round}: 202 but lost"),
                Ok(_) => unreachable!("no idempotency key"),
                Err(e) => {
                    refused += 1;
                    assert_eq!(stored, 0, "round {round}: refused ({e}) but stored");
                    // Refused while waiting, or by SQLite at its busy timeout: never by the
                    // statement's deadline, which fires only on a stalled database.
                    let why = e.to_string();
                    assert!(
                        why.contains(WAIT_TIMEOUT) || why.contains("locked"),
                        "round {round}: {why}"
                    );
                }
            }
            assert!(
                took < settings.acquire_timeout * 3 + Duration::from_millis(500),
                "round {round}: answered after {took:?}"
            );
        }
        assert!(refused > 0, "round {round}: the lock outlasted every wait");
        half_open(&store).await;
        store.get(&ids[0], None).await.unwrap();
    }
}
