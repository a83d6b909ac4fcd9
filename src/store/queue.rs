//! The queue side of the store: what runners do, each in one statement per batch, so the
//! queue's ceiling is the database's commit rate rather than a round trip per job.
//!
//! - [`JobStore::claim`] takes up to `n` jobs that are due (queued, or scheduled and past
//!   their `run_at`), soonest first, and logs an attempt for each; PostgreSQL skips rows
//!   another runner is claiming (`FOR UPDATE SKIP LOCKED`), SQLite has a single writer.
//! - [`JobStore::renew`] extends every lease a runner holds at once, and says which jobs are
//!   still its own (a cancelled or rescued job is not).
//! - [`JobStore::finish`] records how a batch of runs ended, in one commit.
//! - [`JobStore::upkeep`] rescues jobs whose runner stopped renewing (retry after a backoff,
//!   or discard after the last attempt), purges old finished jobs, and counts the active
//!   ones from an index of them alone, never a scan of finished jobs.
//!
//! On PostgreSQL "now" in these statements is the database's clock, so replicas with skewed
//! clocks agree on when a scheduled job is due; SQLite runs on this host's clock.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::Row;

use super::{
    begin_write, is_dependency_failure, job_from_row, Backend, DbError, Job, JobStore, StoreError,
};

/// The database's clock in microseconds since the Unix epoch, on PostgreSQL.
macro_rules! pg_now {
    () => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
    };
}

/// The error a job's attempt gets when its runner stopped renewing the lease.
const LAPSED: &str = "its runner stopped renewing its lease (the replica died or hung)";

/// How a run ended, for [`JobStore::finish`].
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Succeeded {
        result: u64,
        digest: u64,
    },
    /// Run again, not before `run_at`: the attempt failed and attempts are left.
    Retry {
        error: String,
        run_at: i64,
    },
    /// The last attempt failed: give up, keeping the error.
    Discard {
        error: String,
    },
    /// An error another attempt would not mend.
    Failed {
        error: String,
    },
}

impl End {
    /// The status, result, digest, error and `run_at` the job is left with.
    fn columns(
        &self,
    ) -> (
        &'static str,
        Option<i64>,
        Option<i64>,
        Option<&str>,
        Option<i64>,
    ) {
        match self {
            End::Succeeded { result, digest } => (
                "succeeded",
                Some(*result as i64),
                Some(*digest as i64),
                None,
                None,
            ),
            End::Retry { error, run_at } => ("scheduled", None, None, Some(error), Some(*run_at)),
            End::Discard { error } => ("discarded", None, None, Some(error), None),
            End::Failed { error } => ("failed", None, None, Some(error), None),
        }
    }
}

/// The backoff before a retry: `base × 2^(attempt − 1)`, at most `max`, never shorter than
/// that and up to a quarter longer (jitter, so jobs that failed together do not retry in
/// step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before the attempt after `attempt` (1 for the first), `jitter` in [0, 1).
    pub fn after(&self, attempt: u32, jitter: f64) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
        doubled
            .min(self.max)
            .mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// What one round of [`JobStore::upkeep`] did and found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Upkept {
    /// Jobs whose runner stopped renewing, scheduled for another attempt.
    pub retried: u64,
    /// Jobs whose runner stopped renewing during their last attempt.
    pub discarded: u64,
    /// Finished jobs deleted.
    pub purged: u64,
    /// Jobs queued, scheduled and running, in [`JobStatus::ACTIVE`] order.
    pub active: [i64; 3],
    /// When the job that has been due longest became due, if any is due.
    pub oldest_due: Option<i64>,
    /// When the next scheduled job becomes due, if any is not due yet.
    pub next_due: Option<i64>,
    /// The time the round was counted at (the database's clock on PostgreSQL).
    pub now: i64,
    /// The last few jobs discarded, newest first.
    pub recent_discards: Vec<Discarded>,
}

/// A job discarded after its last attempt, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Discarded {
    pub id: String,
    pub error: Option<String>,
    pub finished_at: i64,
}

/// Discarded jobs the upkeep reports.
const RECENT_DISCARDS: i64 = 5;

fn discards_from_json(json: Option<String>) -> Result<Vec<Discarded>, sqlx::Error> {
    match json {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| sqlx::Error::Decode(e.into())),
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl JobStore {
    /// Take up to `n` due jobs for `runner`, leased for `lease`, soonest due first; each
    /// take counts as an attempt and is logged with its start.
    pub async fn claim(
        &self,
        runner: &str,
        n: u32,
        lease: Duration,
        now: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let lease = micros(lease);
        let n = i64::from(n);
        Ok(match &self.backend {
            Backend::Postgres(_) => {
                let sql = concat!(
                    "WITH now AS (SELECT ",
                    pg_now!(),
                    " AS t), ",
                    "picked AS (SELECT id FROM jobs WHERE status IN ('queued', 'scheduled') ",
                    "AND run_at <= (SELECT t FROM now) ORDER BY run_at, id LIMIT $2 ",
                    "FOR UPDATE SKIP LOCKED), ",
                    "claimed AS (UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, ",
                    "lease_owner = $1, lease_until = now.t + $3, ",
                    "started_at = COALESCE(jobs.started_at, now.t) ",
                    "FROM picked, now WHERE jobs.id = picked.id RETURNING jobs.*), ",
                    "logged AS (INSERT INTO job_attempts (job_id, attempt, runner, started_at) ",
                    "SELECT id, attempts, $1, (SELECT t FROM now) FROM claimed) ",
                    "SELECT ",
                    columns!(),
                    " FROM claimed ORDER BY run_at, id"
                );
                on_pool!(
                    self,
                    claim,
                    postgres | p | {
                        sqlx::query(sql)
                            .bind(runner)
                            .bind(n)
                            .bind(lease)
                            .fetch_all(p)
                            .await?
                            .iter()
                            .map(job_from_row)
                            .collect::<Result<Vec<_>, _>>()?
                    }
                )?
            }
            Backend::Sqlite(_) => {
                let claim = concat!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, ",
                    "lease_until = $2 + $3, started_at = COALESCE(started_at, $2) ",
                    "WHERE id IN (SELECT id FROM jobs WHERE status IN ('queued', 'scheduled') ",
                    "AND run_at <= $2 ORDER BY run_at, id LIMIT $4) RETURNING ",
                    columns!()
                );
                let log = "INSERT INTO job_attempts (job_id, attempt, runner, started_at) \
                           VALUES ($1, $2, $3, $4)";
                on_pool!(
                    self,
                    claim,
                    sqlite | p | {
                        let mut tx = begin_write(&mut *p).await?;
                        let mut jobs = sqlx::query(claim)
                            .bind(runner)
                            .bind(now)
                            .bind(lease)
                            .bind(n)
                            .fetch_all(&mut *tx)
                            .await?
                            .iter()
                            .map(job_from_row)
                            .collect::<Result<Vec<_>, _>>()?;
                        for job in &jobs {
                            sqlx::query(log)
                                .bind(&job.id)
                                .bind(i64::from(job.attempts))
                                .bind(runner)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                        }
                        tx.commit().await?;
                        jobs.sort_by(|a, b| (a.run_at, &a.id).cmp(&(b.run_at, &b.id)));
                        jobs
                    }
                )?
            }
        })
    }

    /// Extend every lease `runner` holds to `lease` from now; the ids of the jobs that are
    /// still its own (a job cancelled, or rescued after its lease lapsed, is not).
    pub async fn renew(
        &self,
        runner: &str,
        lease: Duration,
        now: i64,
    ) -> Result<HashSet<String>, StoreError> {
        Ok(match self.backend {
            Backend::Postgres(_) => {
                let sql = concat!(
                    "UPDATE jobs SET lease_until = ",
                    pg_now!(),
                    " + $2 WHERE status = 'running' AND lease_owner = $1 RETURNING id"
                );
                on_pool!(
                    self,
                    renew,
                    postgres | p | {
                        sqlx::query(sql)
                            .bind(runner)
                            .bind(micros(lease))
                            .fetch_all(p)
                            .await?
                            .iter()
                            .map(|row| row.try_get::<String, _>("id"))
                            .collect::<Result<HashSet<_>, _>>()?
                    }
                )?
            }
            Backend::Sqlite(_) => {
                let sql = "UPDATE jobs SET lease_until = $3 + $2 \
                           WHERE status = 'running' AND lease_owner = $1 RETURNING id";
                on_pool!(
                    self,
                    renew,
                    sqlite | p | {
                        sqlx::query(sql)
                            .bind(runner)
                            .bind(micros(lease))
                            .bind(now)
                            .fetch_all(p)
                            .await?
                            .iter()
                            .map(|row| row.try_get::<String, _>("id"))
                            .collect::<Result<HashSet<_>, _>>()?
                    }
                )?
            }
        })
    }

    /// Record how `runner`'s runs ended (each with the time it ended), all in one commit; the
    /// ids recorded (a job that is no longer the runner's, cancelled meanwhile say, is left
    /// as it is).
    pub async fn finish(
        &self,
        runner: &str,
        ends: &[(String, i64, End)],
    ) -> Result<Vec<String>, StoreError> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match &self.backend {
            Backend::Postgres(_) => {
                let sql = concat!(
                    "WITH v AS (SELECT * FROM UNNEST($2::text[], $3::text[], $4::bigint[], ",
                    "$5::bigint[], $6::text[], $7::bigint[], $8::bigint[]) ",
                    "AS v(id, status, result, digest, error, run_at, at)), ",
                    "done AS (UPDATE jobs SET status = v.status, result = v.result, digest = v.digest, ",
                    "error = v.error, run_at = COALESCE(v.run_at, jobs.run_at), ",
                    "finished_at = CASE WHEN v.status = 'scheduled' THEN NULL ELSE v.at END, ",
                    "lease_owner = NULL, lease_until = NULL ",
                    "FROM v WHERE jobs.id = v.id AND jobs.lease_owner = $1 AND jobs.status = 'running' ",
                    "RETURNING jobs.id, v.error, v.at), ",
                    "logged AS (UPDATE job_attempts SET finished_at = done.at, error = done.error FROM done ",
                    "WHERE job_attempts.job_id = done.id AND job_attempts.finished_at IS NULL) ",
                    "SELECT id FROM done"
                );
                let mut ids = Vec::with_capacity(ends.len());
                let mut statuses = Vec::with_capacity(ends.len());
                let mut results = Vec::with_capacity(ends.len());
                let mut digests = Vec::with_capacity(ends.len());
                let mut errors = Vec::with_capacity(ends.len());
                let mut run_ats = Vec::with_capacity(ends.len());
                let mut ats = Vec::with_capacity(ends.len());
                for (id, at, end) in ends {
                    let (status, result, digest, error, run_at) = end.columns();
                    ids.push(id.as_str());
                    statuses.push(status);
                    results.push(result);
                    digests.push(digest);
                    errors.push(error);
                    run_ats.push(run_at);
                    ats.push(*at);
                }
                on_pool!(
                    self,
                    finish,
                    postgres | p | {
                        sqlx::query(sql)
                            .bind(runner)
                            .bind(&ids)
                            .bind(&statuses)
                            .bind(&results)
                            .bind(&digests)
                            .bind(&errors)
                            .bind(&run_ats)
                            .bind(&ats)
                            .fetch_all(p)
                            .await?
                            .iter()
                            .map(|row| row.try_get::<String, _>("id"))
                            .collect::<Result<Vec<_>, _>>()?
                    }
                )?
            }
            Backend::Sqlite(_) => {
                let job = "UPDATE jobs SET status = $3, result = $4, digest = $5, error = $6, \
                           run_at = COALESCE($7, run_at), \
                           finished_at = CASE WHEN $3 = 'scheduled' THEN NULL ELSE $8 END, \
                           lease_owner = NULL, lease_until = NULL \
                           WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING id";
                let attempt = "UPDATE job_attempts SET finished_at = $2, error = $3 \
                               WHERE job_id = $1 AND finished_at IS NULL";
                on_pool!(
                    self,
                    finish,
                    sqlite | p | {
                        let mut tx = begin_write(&mut *p).await?;
                        let mut recorded = Vec::with_capacity(ends.len());
                        for (id, at, end) in ends {
                            let (status, result, digest, error, run_at) = end.columns();
                            let rows = sqlx::query(job)
                                .bind(id)
                                .bind(runner)
                                .bind(status)
                                .bind(result)
                                .bind(digest)
                                .bind(error)
                                .bind(run_at)
                                .bind(at)
                                .fetch_all(&mut *tx)
                                .await?;
                            if !rows.is_empty() {
                                sqlx::query(attempt)
                                    .bind(id)
                                    .bind(at)
                                    .bind(error)
                                    .execute(&mut *tx)
                                    .await?;
                                recorded.push(id.clone());
                            }
                        }
                        tx.commit().await?;
                        recorded
                    }
                )?
            }
        })
    }

    /// Put a job `runner` claimed but never started back in the queue, its attempt returned
    /// and forgotten; false when it was no longer its job.
    pub async fn release(&self, id: &str, runner: &str) -> Result<bool, StoreError> {
        let back = "UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease_owner = NULL, \
                    lease_until = NULL, started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END \
                    WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING id";
        let forget = "DELETE FROM job_attempts WHERE job_id = $1 AND finished_at IS NULL";
        let released = on_pool!(self, finish, |p| {
            let mut tx = begin_write(&mut *p).await?;
            let rows = sqlx::query(back)
                .bind(id)
                .bind(runner)
                .fetch_all(&mut *tx)
                .await?;
            let released = !rows.is_empty();
            if released {
                sqlx::query(forget).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            released
        })?;
        if released {
            self.notify().await;
        }
        Ok(released)
    }

    /// One round of upkeep: rescue the jobs whose runner stopped renewing their lease (run
    /// again after `backoff`, or discarded after `max_attempts`), delete up to `batch` jobs
    /// that finished more than `retention` ago, and count the active jobs. One statement on
    /// PostgreSQL, so an idle replica's upkeep is one statement a round.
    pub async fn upkeep(
        &self,
        now: i64,
        max_attempts: u32,
        backoff: Backoff,
        retention: Duration,
        batch: u32,
    ) -> Result<Upkept, StoreError> {
        let (max_attempts, batch) = (i64::from(max_attempts), i64::from(batch));
        let (base, max, retention) = (micros(backoff.base), micros(backoff.max), micros(retention));
        match &self.backend {
            Backend::Postgres(_) => {
                let sql = concat!(
                    "WITH now AS (SELECT ",
                    pg_now!(),
                    " AS t), ",
                    "lapsed AS (UPDATE jobs SET ",
                    "status = CASE WHEN jobs.attempts >= $1 THEN 'discarded' ELSE 'scheduled' END, ",
                    "run_at = CASE WHEN jobs.attempts >= $1 THEN jobs.run_at ELSE now.t + CAST(",
                    "LEAST($2 * POWER(2, LEAST(jobs.attempts - 1, 30)), $3) * (1 + random() / 4) AS BIGINT) END, ",
                    "finished_at = CASE WHEN jobs.attempts >= $1 THEN now.t END, ",
                    "error = $6, lease_owner = NULL, lease_until = NULL ",
                    "FROM now WHERE jobs.status = 'running' AND jobs.lease_until < now.t ",
                    "RETURNING jobs.id, jobs.attempts, jobs.status), ",
                    "lapsed_attempts AS (UPDATE job_attempts SET finished_at = (SELECT t FROM now), ",
                    "error = $6 FROM lapsed WHERE job_attempts.job_id = lapsed.id ",
                    "AND job_attempts.finished_at IS NULL), ",
                    "purged AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs ",
                    "WHERE finished_at < (SELECT t FROM now) - $4 LIMIT $5) RETURNING id), ",
                    "purged_attempts AS (DELETE FROM job_attempts ",
                    "WHERE job_id IN (SELECT id FROM purged)) ",
                    "SELECT ",
                    "(SELECT COUNT(*) FROM lapsed WHERE status = 'scheduled') AS retried, ",
                    "(SELECT COUNT(*) FROM lapsed WHERE status = 'discarded') AS discarded, ",
                    "(SELECT COUNT(*) FROM purged) AS purged, ",
                    "(SELECT COUNT(*) FROM jobs WHERE status = 'queued') AS queued, ",
                    "(SELECT COUNT(*) FROM jobs WHERE status = 'scheduled') AS scheduled, ",
                    "(SELECT COUNT(*) FROM jobs WHERE status = 'running') AS running, ",
                    "(SELECT MIN(run_at) FROM jobs WHERE status IN ('queued', 'scheduled') ",
                    "AND run_at <= (SELECT t FROM now)) AS oldest_due, ",
                    "(SELECT MIN(run_at) FROM jobs WHERE status IN ('queued', 'scheduled') ",
                    "AND run_at > (SELECT t FROM now)) AS next_due, ",
                    "(SELECT t FROM now) AS now, ",
                    "(SELECT CAST(json_agg(d) AS TEXT) FROM (SELECT id, error, finished_at FROM jobs ",
                    "WHERE status = 'discarded' ORDER BY finished_at DESC LIMIT $7) d) AS discards"
                );
                Ok(on_pool!(
                    self,
                    tidy,
                    postgres | p | {
                        let row = sqlx::query(sql)
                            .bind(max_attempts)
                            .bind(base as f64)
                            .bind(max as f64)
                            .bind(retention)
                            .bind(batch)
                            .bind(LAPSED)
                            .bind(RECENT_DISCARDS)
                            .fetch_one(p)
                            .await?;
                        upkept_from_row(&row)?
                    }
                )?)
            }
            Backend::Sqlite(_) => {
                let lapsed =
                    "SELECT id, attempts FROM jobs WHERE status = 'running' AND lease_until < $1";
                let rescue = "UPDATE jobs SET status = $2, run_at = COALESCE($3, run_at), \
                              finished_at = $4, error = $5, lease_owner = NULL, lease_until = NULL \
                              WHERE id = $1 AND status = 'running'";
                let lapsed_attempt = "UPDATE job_attempts SET finished_at = $2, error = $3 \
                                      WHERE job_id = $1 AND finished_at IS NULL";
                let purge = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
                             WHERE finished_at < $1 LIMIT $2) RETURNING id";
                let purge_attempts = "DELETE FROM job_attempts WHERE job_id = $1";
                let counts = "SELECT \
                    (SELECT COUNT(*) FROM jobs WHERE status = 'queued') AS queued, \
                    (SELECT COUNT(*) FROM jobs WHERE status = 'scheduled') AS scheduled, \
                    (SELECT COUNT(*) FROM jobs WHERE status = 'running') AS running, \
                    (SELECT MIN(run_at) FROM jobs WHERE status IN ('queued', 'scheduled') AND run_at <= $1) AS oldest_due, \
                    (SELECT MIN(run_at) FROM jobs WHERE status IN ('queued', 'scheduled') AND run_at > $1) AS next_due, \
                    (SELECT json_group_array(json_object('id', id, 'error', error, 'finished_at', finished_at)) \
                     FROM (SELECT id, error, finished_at FROM jobs WHERE status = 'discarded' \
                     ORDER BY finished_at DESC LIMIT $2)) AS discards";
                Ok(on_pool!(
                    self,
                    tidy,
                    sqlite | p | {
                        let mut tx = begin_write(&mut *p).await?;
                        let mut done = Upkept {
                            now,
                            ..Upkept::default()
                        };
                        let rows = sqlx::query(lapsed).bind(now).fetch_all(&mut *tx).await?;
                        for row in rows {
                            let id: String = row.try_get("id")?;
                            let attempts: i64 = row.try_get("attempts")?;
                            let (status, run_at, finished_at) = if attempts >= max_attempts {
                                done.discarded += 1;
                                ("discarded", None, Some(now))
                            } else {
                                done.retried += 1;
                                let delay = backoff.after(attempts as u32, fastrand::f64());
                                ("scheduled", Some(now.saturating_add(micros(delay))), None)
                            };
                            sqlx::query(rescue)
                                .bind(&id)
                                .bind(status)
                                .bind(run_at)
                                .bind(finished_at)
                                .bind(LAPSED)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(lapsed_attempt)
                                .bind(&id)
                                .bind(now)
                                .bind(LAPSED)
                                .execute(&mut *tx)
                                .await?;
                        }
                        let purged = sqlx::query(purge)
                            .bind(now.saturating_sub(retention))
                            .bind(batch)
                            .fetch_all(&mut *tx)
                            .await?;
                        for row in &purged {
                            sqlx::query(purge_attempts)
                                .bind(row.try_get::<String, _>("id")?)
                                .execute(&mut *tx)
                                .await?;
                        }
                        done.purged = purged.len() as u64;
                        let row = sqlx::query(counts)
                            .bind(now)
                            .bind(RECENT_DISCARDS)
                            .fetch_one(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        done.active = [
                            row.try_get("queued")?,
                            row.try_get("scheduled")?,
                            row.try_get("running")?,
                        ];
                        done.oldest_due = row.try_get("oldest_due")?;
                        done.next_due = row.try_get("next_due")?;
                        done.recent_discards = discards_from_json(row.try_get("discards")?)?;
                        done
                    }
                )?)
            }
        }
    }
}

fn upkept_from_row(row: &sqlx::postgres::PgRow) -> Result<Upkept, sqlx::Error> {
    let count = |name: &str| -> Result<i64, sqlx::Error> { row.try_get(name) };
    Ok(Upkept {
        retried: count("retried")? as u64,
        discarded: count("discarded")? as u64,
        purged: count("purged")? as u64,
        active: [count("queued")?, count("scheduled")?, count("running")?],
        oldest_due: row.try_get("oldest_due")?,
        next_due: row.try_get("next_due")?,
        now: count("now")?,
        recent_discards: discards_from_json(row.try_get("discards")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_jitter_only_lengthens_it() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.after(1, 0.0), Duration::from_secs(1));
        assert_eq!(b.after(2, 0.0), Duration::from_secs(2));
        assert_eq!(b.after(3, 0.0), Duration::from_secs(4));
        assert_eq!(b.after(5, 0.0), Duration::from_secs(10), "capped");
        assert_eq!(b.after(60, 0.0), Duration::from_secs(10), "no overflow");
        assert_eq!(b.after(1, 0.999_999).as_millis(), 1249);
        for j in [0.0, 0.3, 0.7, 0.99] {
            assert!(b.after(2, j) >= Duration::from_secs(2));
        }
    }
}
