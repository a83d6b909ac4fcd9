//! The claim path alone, for `scripts/capacity.sh`: floodgate's own statements
//! ([`JobStore::claim`] and [`JobStore::finish`], as a replica's runner issues them) against a
//! database, with no HTTP, no worker pool and no workload.
//!
//! Queues `--jobs` jobs (in batches of 1,000, as `POST /api/v2/jobs:batch` does), then runs
//! `--runners` claim loops at once, each claiming up to `--batch` jobs per statement and
//! finishing them all in one commit, until the queue is empty. Prints one JSON line:
//! `{"jobs", "runners", "batch", "seconds", "per_s"}`, where `per_s` counts jobs claimed and
//! finished per second; progress goes to stderr. Fails if any job was not finished exactly once.
//!
//! Usage: `claim_capacity --url postgres://… [--jobs 20000] [--runners 8] [--batch 8]`

use std::time::{Duration, Instant};

use floodgate::config::DatabaseSettings;
use floodgate::dependency::breaker::BreakerConfig;
use floodgate::store::{now_us, End, JobStore, NewJob, StoreMetrics};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn number(args: &[String], name: &str, default: u32) -> u32 {
    let raw = arg(args, name, &default.to_string());
    raw.parse()
        .unwrap_or_else(|_| panic!("{name} must be a whole number (got `{raw}`)"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--url", "");
    assert!(
        !url.is_empty(),
        "usage: claim_capacity --url DATABASE_URL [--jobs N] [--runners R] [--batch B]"
    );
    let (jobs, runners, batch) = (
        number(&args, "--jobs", 20_000),
        number(&args, "--runners", 8),
        number(&args, "--batch", 8),
    );
    let settings = DatabaseSettings {
        url,
        max_connections: runners + 2,
        ..DatabaseSettings::default()
    };
    let breaker = BreakerConfig::from(&settings.breaker);
    let store = JobStore::open(&settings, StoreMetrics::default(), breaker)
        .await
        .expect("the database opens");

    eprintln!("queueing {jobs} jobs");
    let created = now_us();
    let mut queued = 0;
    while queued < jobs {
        let chunk = (jobs - queued).min(1000);
        let batch_jobs = (0..chunk)
            .map(|i| NewJob {
                id: uuid::Uuid::now_v7().to_string(),
                number: u64::from((queued + i) % 1000),
                rounds: 1000,
                created_at: created,
                run_at: created,
                owner: None,
                idempotency: None,
            })
            .collect();
        store
            .insert_batch(batch_jobs)
            .await
            .expect("the jobs are queued");
        queued += chunk;
    }

    eprintln!("claiming with {runners} runners, up to {batch} jobs per claim");
    let started = Instant::now();
    let loops = (0..runners).map(|r| {
        let store = store.clone();
        tokio::spawn(async move {
            let name = format!("capacity-{r}");
            let mut done = 0u64;
            loop {
                let claimed = store
                    .claim(&name, batch, Duration::from_secs(60), now_us())
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    return done;
                }
                let at = now_us();
                let ends: Vec<_> = claimed
                    .into_iter()
                    .map(|j| {
                        (
                            j.id,
                            at,
                            End::Succeeded {
                                result: 1,
                                digest: 1,
                            },
                        )
                    })
                    .collect();
                let recorded = store.finish(&name, &ends).await.expect("finish");
                assert_eq!(
                    recorded.len(),
                    ends.len(),
                    "every claimed job is finished once"
                );
                done += recorded.len() as u64;
            }
        })
    });
    let mut finished = 0;
    for handle in loops.collect::<Vec<_>>() {
        finished += handle.await.expect("a claim loop");
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        finished,
        u64::from(jobs),
        "every job claimed and finished exactly once"
    );
    println!(
        "{}",
        serde_json::json!({
            "jobs": jobs,
            "runners": runners,
            "batch": batch,
            "seconds": seconds,
            "per_s": f64::from(jobs) / seconds,
        })
    );
}
