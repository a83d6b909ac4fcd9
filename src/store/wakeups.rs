//! Wake-ups between replicas, on PostgreSQL: a statement that queues jobs notifies the
//! channel `floodgate_jobs` (the migrations' trigger on insert, [`JobStore::notify`] on a
//! retry or a release), and every replica's runner listens on it.
//!
//! A replica wakes its own runner when it queues a job, so the notices its own connections
//! send are skipped: otherwise every submission cost the submitting replica a second claim
//! that found nothing (the first already took the job). A notice names the backend process
//! that sent it, and the pool records each connection's backend as it opens.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use sqlx::postgres::{PgConnection, PgNotification};

use super::{is_dependency_failure, Backend, DbError, JobStore};

/// The backends of this replica's most recent connections.
///
/// Bounded: a pool has at most `max_connections` open, and the oldest are the first to be
/// closed for idleness, so keeping four pools' worth covers the open ones in practice. A
/// connection forgotten while still open only costs its notices' echo (a claim that finds
/// nothing), and one remembered after it closed only a wake-up missed when PostgreSQL gives
/// its process id to another replica's connection (the upkeep's poll covers it).
pub(super) struct OwnBackends {
    recent: Mutex<VecDeque<u32>>,
    keep: usize,
}

impl OwnBackends {
    pub(super) fn new(max_connections: u32) -> Self {
        let keep = (max_connections as usize).saturating_mul(4).max(8);
        Self {
            recent: Mutex::new(VecDeque::with_capacity(keep)),
            keep,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u32>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, pid: u32) {
        let mut recent = self.lock();
        if recent.len() == self.keep {
            recent.pop_front();
        }
        recent.push_back(pid);
    }

    fn contains(&self, pid: u32) -> bool {
        self.lock().contains(&pid)
    }

    /// Record a new connection's backend (the pool's `after_connect`).
    pub(super) async fn opened(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await?;
        self.record(pid as u32);
        Ok(())
    }
}

impl JobStore {
    /// Tell the other replicas' runners that jobs were queued (PostgreSQL; a no-op on
    /// SQLite, whose one replica wakes its own runner). Best effort: a lost notice costs at
    /// most a poll interval.
    pub async fn notify(&self) {
        if let Backend::Postgres(_) = self.backend {
            let _ = on_pool!(
                self,
                finish,
                postgres | p | {
                    sqlx::query("SELECT pg_notify('floodgate_jobs', '')")
                        .execute(p)
                        .await?
                        .rows_affected()
                }
            );
        }
    }

    /// Wake-ups from the database when another replica queues jobs (PostgreSQL's
    /// `LISTEN`), on a connection of its own; `None` on SQLite, whose one replica wakes its
    /// own runner. A lost connection is re-established by the listener on its next receive;
    /// what was notified meanwhile is lost, and the upkeep's poll covers it.
    pub async fn listener(&self) -> Option<sqlx::postgres::PgListener> {
        let Backend::Postgres(pool) = &self.backend else {
            return None;
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.ok()?;
        listener.listen("floodgate_jobs").await.ok()?;
        Some(listener)
    }

    /// Whether one of this replica's own connections sent `notice`: its runner was woken
    /// when the statement was made.
    pub fn sent_here(&self, notice: &PgNotification) -> bool {
        self.own_backends.contains(notice.process_id())
    }
}

#[cfg(test)]
mod tests {
    use super::OwnBackends;

    #[test]
    fn the_most_recent_backends_are_kept() {
        let own = OwnBackends::new(2);
        assert_eq!(own.keep, 8);
        for pid in 1..=8 {
            own.record(pid);
        }
        assert!((1..=8).all(|pid| own.contains(pid)));
        own.record(9);
        assert!(!own.contains(1), "the oldest goes first");
        assert!((2..=9).all(|pid| own.contains(pid)));
        assert!(!own.contains(10));
    }
}
