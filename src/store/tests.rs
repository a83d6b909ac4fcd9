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
        idempotency: key.map(|k| (k.to_owned(), "hash".to_owned(), i64::MAX)),
    }
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

#[tokio::test]
async fn every_call_path_dropped_at_every_await_hands_its_probe_back() {
    let store = store(&sqlite_settings(), Duration::from_millis(1)).await;
    let seeded = new_job(7, None);
    let id = seeded.id.clone();
    assert!(matches!(
        store.insert(seeded).await.unwrap(),
        Inserted::Created(_)
    ));
    let owner = "runner";
    let claimed = store
        .claim(owner, now_us(), now_us() + 60_000_000, 3)
        .await
        .unwrap()
        .expect("the seeded job is claimed");
    assert_eq!(claimed.id, id);

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
                    let _ = s.get(id).await;
                })
            }),
        ),
        (
            "list",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.list(None, 10, None).await;
                })
            }),
        ),
        (
            "claim",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.claim("other", now_us(), now_us() + 1, 3).await;
                })
            }),
        ),
        (
            "renew",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.renew(id, owner, now_us() + 60_000_000).await;
                })
            }),
        ),
        (
            "tidy",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.tidy(now_us(), 3, 0, 10).await;
                })
            }),
        ),
        (
            "cancel an unknown job",
            Box::new(|| {
                Box::pin(async {
                    let _ = s.cancel(&uuid::Uuid::now_v7().to_string(), now_us()).await;
                })
            }),
        ),
        (
            "finish someone else's run",
            Box::new(|| {
                Box::pin(async {
                    let end = Finish::Failed("x".into());
                    let _ = s.finish(id, "other", now_us(), end).await;
                })
            }),
        ),
    ];
    let mut covered_in_all = 0;
    for (name, op) in &ops {
        half_open(&store).await;
        let store = &store;
        let covered = drop_at_every_await(op, |k| async move {
            // Dropped at its k-th await: the next call is let through as the probe, and
            // closes the breaker.
            let started = Instant::now();
            store
                .get(id)
                .await
                .unwrap_or_else(|e| panic!("{name}, dropped at await {k}: {e}"));
            assert_eq!(store.breaker.state(), CircuitState::Closed, "{name} at {k}");
            assert!(started.elapsed() < store.deadline);
            half_open(store).await;
        })
        .await;
        covered_in_all += covered;
        assert_eq!(
            store.breaker.state(),
            CircuitState::Closed,
            "{name} ran to its end"
        );
    }
    // A statement SQLite's worker thread answers before the first look may not suspend at
    // all; most must, or this test tests nothing.
    assert!(
        covered_in_all >= ops.len(),
        "{covered_in_all} awaits covered"
    );
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
                    store.get(&id).await.unwrap().is_some(),
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
