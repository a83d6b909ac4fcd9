//! Durable jobs in a pooled database: SQLite embedded by default, PostgreSQL across
//! replicas, behind one type. Migrations are embedded and applied at start; the same SQL
//! serves both backends (numbered parameters, `RETURNING`), except the claim, where
//! PostgreSQL skips rows other replicas hold and SQLite relies on its single writer.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::Histogram;

use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::config::DatabaseSettings;
use crate::dependency::{Breaker, BreakerConfig, BreakerMetrics, CircuitState};

mod record;
mod sqlite_file;
#[cfg(test)]
mod tests;

pub use record::{now_us, Attempt, Job, JobStatus};

/// Why a store call produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database was unreachable, too slow, or refused the statement.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting is unusable (exit 64).
    #[error("{0}")]
    Config(String),
    /// The database refused us (it may come back; the service starts degraded).
    #[error("{0}")]
    Unavailable(String),
}

/// The pool, by backend.
#[derive(Clone)]
enum Backend {
    Sqlite(Arc<sqlite_file::SqliteFile>),
    Postgres(PgPool),
}

/// Handles the store records into.
#[derive(Clone)]
pub struct StoreMetrics {
    pub breaker: BreakerMetrics,
    /// Time waiting for a pooled connection (a SQLite write: its turn, then the connection).
    pub acquire_wait: Histogram,
    /// Statement time by operation.
    pub insert: Histogram,
    pub get: Histogram,
    pub list: Histogram,
    pub cancel: Histogram,
    pub claim: Histogram,
    pub renew: Histogram,
    pub finish: Histogram,
    pub tidy: Histogram,
}

impl Default for StoreMetrics {
    /// Handles that record nothing.
    fn default() -> Self {
        Self {
            breaker: BreakerMetrics::default(),
            acquire_wait: Histogram::noop(),
            insert: Histogram::noop(),
            get: Histogram::noop(),
            list: Histogram::noop(),
            cancel: Histogram::noop(),
            claim: Histogram::noop(),
            renew: Histogram::noop(),
            finish: Histogram::noop(),
            tidy: Histogram::noop(),
        }
    }
}

/// The jobs database: a pool behind the service's circuit breaker; cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    backend: Backend,
    breaker: Arc<Breaker>,
    /// How long a call waits for its turn and a connection (`acquire_timeout`).
    wait_deadline: Duration,
    /// How long a statement may then take: SQLite's busy timeout (`acquire_timeout`), then as
    /// long again.
    deadline: Duration,
    /// This replica's database sessions, whose wake-up notices its runner skips.
    own_backends: Arc<wakeups::OwnBackends>,
    metrics: Arc<StoreMetrics>,
}

/// What inserting a job did.
pub enum Inserted {
    Created(Job),
    /// The idempotency key was used before with the same request: the original job.
    Replayed(Job),
    /// The idempotency key was used before with a different request.
    KeyReused,
}

/// What asking for a retry did.
pub enum Retried {
    Retried(Job),
    /// Not discarded or failed: nothing to retry.
    NotRetryable(Job),
    NotFound,
}

/// What cancelling did.
pub enum Cancelled {
    Cancelled(Job),
    AlreadyFinished(Job),
    NotFound,
}

/// What inserting a batch did.
pub enum Batch {
    /// Every job, in order: created, or the earlier job of its idempotency key.
    Inserted(Vec<Inserted>),
    /// The job at this index reused a key with another request: nothing was inserted.
    KeyReused(usize),
}

/// A job to insert.
pub struct NewJob {
    pub id: String,
    pub number: u64,
    pub rounds: u64,
    pub created_at: i64,
    /// Not run before this; at or before `created_at` for a job to run at once.
    pub run_at: i64,
    /// The principal that submitted it; `None` while authentication is off.
    pub owner: Option<String>,
    /// `(key, hash of the request, when the key may be reused)`, unique per owner.
    pub idempotency: Option<(String, String, i64)>,
}

impl NewJob {
    /// Queued to run at once, or scheduled for later.
    fn status(&self) -> JobStatus {
        if self.run_at > self.created_at {
            JobStatus::Scheduled
        } else {
            JobStatus::Queued
        }
    }
}

/// Why a statement through [`on_pool!`] produced nothing.
#[derive(Debug)]
enum DbError {
    /// The breaker refused the call.
    Open,
    /// The SQLite file is gone: nothing is tried.
    Lost(String),
    /// No turn or connection, or no answer to the statement, within its deadline: which.
    Timeout(&'static str),
    /// The database answered with an error.
    Sql(sqlx::Error),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Open => StoreError::Unavailable("circuit open".into()),
            DbError::Lost(why) => StoreError::Unavailable(why),
            DbError::Timeout(why) => StoreError::Unavailable(why.into()),
            DbError::Sql(e) => e.into(),
        }
    }
}

/// Whether an error says the database is failing (the breaker counts it), rather than that
/// it answered and refused this statement (a constraint, or a transaction given up for
/// another's sake, [`is_contention`]) or that a row was not as expected.
fn is_dependency_failure(e: &sqlx::Error) -> bool {
    use sqlx::error::ErrorKind;
    if is_contention(e) {
        return false;
    }
    match e {
        sqlx::Error::Database(db) => matches!(db.kind(), ErrorKind::Other),
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

/// Whether PostgreSQL gave this transaction up because another one was in its way: a
/// deadlock (`40P01`: two batches inserting shared idempotency keys in opposite orders), or a
/// serialization failure (`40001`, where the database runs at a stricter isolation level).
/// The database is working; the transaction can be tried again.
fn is_contention(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// A connection that can open a transaction which writes, each backend its own way.
trait BeginWrite: sqlx::Connection + Sized {
    /// The statement that opens it.
    const BEGIN: &'static str;

    /// Take the transaction's locks on the idempotency keys it will insert, `ids` sorted (see
    /// [`key_locks`]), so that transactions sharing keys queue in one order instead of
    /// deadlocking.
    fn lock_keys<'c>(
        &'c mut self,
        ids: &'c [i32],
    ) -> impl std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c;
}

/// SQLite takes the write lock at once, waiting out the busy timeout like any statement.
/// A deferred transaction that reads first fails at its first write, without waiting, when
/// another connection holds the lock or wrote since the read began (`SQLITE_BUSY`, 517), and
/// the breaker would count that contention as the database failing.
impl BeginWrite for sqlx::SqliteConnection {
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    /// Nothing to take: with the write lock held from `BEGIN`, writers already go one at a time.
    async fn lock_keys(&mut self, _: &[i32]) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl BeginWrite for sqlx::PgConnection {
    const BEGIN: &'static str = "BEGIN";

    /// Transaction-scoped advisory locks, taken in the array's order (a function scan yields
    /// its rows in order), in a lock class of floodgate's own; released at commit or rollback.
    async fn lock_keys(&mut self, ids: &[i32]) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, id) FROM unnest($2::int4[]) AS id")
            .bind(KEY_LOCK_CLASS)
            .bind(ids)
            .execute(self)
            .await
            .map(drop)
    }
}

/// The advisory lock class for idempotency keys (the first of the two-integer key; the
/// one-integer key space, which sqlx's migrator uses, is another).
const KEY_LOCK_CLASS: i32 = 0x6667_6b79;

/// Open a transaction that writes (see [`BeginWrite`]).
fn begin_write<C: BeginWrite>(
    c: &mut C,
) -> impl std::future::Future<Output = Result<sqlx::Transaction<'_, C::Database>, sqlx::Error>> + Send + '_
{
    c.begin_with(C::BEGIN)
}

/// The lock ids of a batch's distinct idempotency keys, sorted; none for fewer than two keys,
/// which cannot cross another batch's. Each is the first four bytes of SHA-256 over owner and
/// key: stable across builds and replicas, and two keys sharing an id only queue behind one
/// another.
fn key_locks(jobs: &[NewJob]) -> Vec<i32> {
    use sha2::{Digest, Sha256};
    let mut ids: Vec<i32> = jobs
        .iter()
        .filter_map(|job| {
            let (key, _, _) = job.idempotency.as_ref()?;
            let mut h = Sha256::new();
            h.update(job.owner.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
            h.update(key.as_bytes());
            let d = h.finalize();
            Some(i32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() < 2 {
        ids.clear();
    }
    ids
}

/// Runs the same statement, on a pooled connection of whichever backend is configured,
/// through the breaker, timing the wait for the connection and the statement (under `$op`).
/// In `$body`, `$c` is the connection and `?` applies to database errors; the macro's value
/// is `Result<body, DbError>`.
///
/// Two deadlines, one per phase. Waiting (on SQLite, a call that writes first waits for its
/// turn, [`sqlite_file::SqliteFile::writer_turn`]; then the pool) ends after
/// `acquire_timeout`, before anything is sent: a refusal then leaves nothing behind. The
/// statement then has `deadline`, longer than SQLite's busy timeout, so it is not given up
/// while SQLite may still commit it, only when the database stalls (a disk that hangs).
///
/// Cancel-safe: the breaker's ticket is a local of the caller's future, so a caller that is
/// dropped at any await here (a client gone, a deadline passed) hands its probe back.
/// Statements that write and return rows are read with `fetch_all`, never `fetch_one` or
/// `fetch_optional`: those stop at the first row, and SQLite commits (and reports a full
/// disk or a busy database) only when the statement is stepped to its end.
macro_rules! on_pool {
    ($store:expr, $op:ident, |$c:ident| $body:expr) => {
        on_pool!(@call $store, $op, |store, started| match &store.backend {
            Backend::Sqlite(file) => on_pool!(@conn store, started, file.pool(), file.writer_turn(writes!($op)), |$c| $body),
            Backend::Postgres(pool) => on_pool!(@conn store, started, pool, std::future::ready(()), |$c| $body),
        })
    };
    // A statement only PostgreSQL speaks; the caller has checked the backend.
    ($store:expr, $op:ident, postgres |$c:ident| $body:expr) => {
        on_pool!(@call $store, $op, |store, started| match &store.backend {
            Backend::Postgres(pool) => on_pool!(@conn store, started, pool, std::future::ready(()), |$c| $body),
            Backend::Sqlite(_) => Err(DbError::Sql(sqlx::Error::Configuration("a PostgreSQL statement on SQLite".into()))),
        })
    };
    // A statement only SQLite speaks; the caller has checked the backend.
    ($store:expr, $op:ident, sqlite |$c:ident| $body:expr) => {
        on_pool!(@call $store, $op, |store, started| match &store.backend {
            Backend::Sqlite(file) => on_pool!(@conn store, started, file.pool(), file.writer_turn(writes!($op)), |$c| $body),
            Backend::Postgres(_) => Err(DbError::Sql(sqlx::Error::Configuration("a SQLite statement on PostgreSQL".into()))),
        })
    };
    (@conn $store:ident, $started:ident, $pool:expr, $turn:expr, |$c:ident| $body:expr) => {{
        let waited = tokio::time::timeout($store.wait_deadline, async {
            let turn = $turn.await;
            let conn = $pool.acquire().await?;
            Ok::<_, sqlx::Error>((turn, conn))
        })
        .await;
        match waited {
            Err(_) => Err(DbError::Timeout($crate::store::WAIT_TIMEOUT)),
            Ok(Err(e)) => Err(DbError::Sql(e)),
            Ok(Ok((_turn, mut conn))) => {
                $store
                    .metrics
                    .acquire_wait
                    .record($started.elapsed().as_secs_f64());
                let $c = &mut *conn;
                match tokio::time::timeout($store.deadline, async { Ok::<_, sqlx::Error>($body) }).await {
                    Err(_) => Err(DbError::Timeout($crate::store::STATEMENT_TIMEOUT)),
                    Ok(Err(e)) => Err(DbError::Sql(e)),
                    Ok(Ok(value)) => Ok(value),
                }
            }
        }
    }};
    (@call $store_expr:expr, $op:ident, |$store:ident, $started:ident| $run:expr) => {{
        let $store = $store_expr;
        match $store.lost() {
            Some(why) => Err(DbError::Lost(why)),
            None => match $store.breaker.try_call() {
                None => Err(DbError::Open),
                Some(ticket) => {
                    let $started = Instant::now();
                    let store = $store;
                    let started = $started;
                    let run = async { $run };
                    let span = tracing::info_span!(
                        "db",
                        otel.name = stringify!($op),
                        otel.kind = "client",
                        db.system.name = store.system(),
                        db.operation.name = stringify!($op),
                    );
                    let outcome = tracing::Instrument::instrument(run, span).await;
                    store.metrics.$op.record(started.elapsed().as_secs_f64());
                    match outcome {
                        Ok(value) => {
                            ticket.settle(true);
                            Ok(value)
                        }
                        Err(DbError::Sql(e)) => {
                            ticket.settle_with(!is_dependency_failure(&e), &e.to_string());
                            Err(DbError::Sql(e))
                        }
                        Err(DbError::Timeout(why)) => {
                            ticket.settle_with(false, why);
                            Err(DbError::Timeout(why))
                        }
                        Err(e) => {
                            ticket.settle_with(false, "refused before it was tried");
                            Err(e)
                        }
                    }
                }
            },
        }
    }};
}

/// Why a call waited in vain: for its turn or a connection, before anything was sent.
const WAIT_TIMEOUT: &str = "no connection within `database.acquire_timeout`";
/// Why a statement was given up: no answer within twice `database.acquire_timeout`.
const STATEMENT_TIMEOUT: &str = "no answer to the statement within its deadline";

/// Whether the store call `$op` writes: all but the reads.
macro_rules! writes {
    (get) => {
        false
    };
    (list) => {
        false
    };
    ($op:ident) => {
        true
    };
}

/// The columns a [`Job`] is read from, as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, status, number, rounds, result, digest, error, attempts, created_at, run_at, started_at, finished_at"
    };
}

mod queue;
mod wakeups;

pub use queue::{Backoff, Discarded, End, Upkept};

/// The pool settings both backends share. A connection is not pinged before each use: a
/// dead one fails its statement, which the breaker counts and the pool then replaces, and
/// an idle replica's database sees no statement but its upkeep.
fn pool_options<DB: sqlx::Database>(s: &DatabaseSettings) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(s.max_connections)
        .acquire_timeout(s.acquire_timeout)
        .idle_timeout(s.idle_timeout)
        .test_before_acquire(false)
}

impl JobStore {
    /// Open the pool named by `database.url`, create the SQLite file (and its directory) on
    /// first start, and apply the embedded migrations. A database whose schema is newer
    /// than this binary knows is a configuration error.
    pub async fn open(
        s: &DatabaseSettings,
        metrics: StoreMetrics,
        breaker: BreakerConfig,
    ) -> Result<JobStore, OpenError> {
        let url = s.url.as_str();
        let own_backends = Arc::new(wakeups::OwnBackends::new(s.max_connections));
        let store = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| {
                    OpenError::Config(format!(
                        "invalid setting `database.url`: cannot create `{}`: {e}",
                        dir.display()
                    ))
                })?;
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| OpenError::Config(format!("invalid setting `database.url`: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(s.acquire_timeout);
            Backend::Sqlite(Arc::new(sqlite_file::SqliteFile::open(options, s).await?))
        } else {
            let own = Arc::clone(&own_backends);
            let pool = pool_options(s)
                .after_connect(move |conn, _| {
                    let own = Arc::clone(&own);
                    Box::pin(async move { own.opened(conn).await })
                })
                .connect(url)
                .await
                .map_err(|e| OpenError::Unavailable(format!("cannot reach PostgreSQL: {e}")))?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(migration_error)?;
            Backend::Postgres(pool)
        };
        Ok(JobStore {
            backend: store,
            breaker: Arc::new(Breaker::new("database", breaker, metrics.breaker.clone())),
            wait_deadline: s.acquire_timeout,
            deadline: s.acquire_timeout * 2,
            own_backends,
            metrics: Arc::new(metrics),
        })
    }

    /// The breaker's state: whether calls go through now.
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Why every call is refused without trying (the SQLite file was deleted), while it is.
    pub fn lost(&self) -> Option<String> {
        match &self.backend {
            Backend::Sqlite(file) => file.lost(),
            Backend::Postgres(_) => None,
        }
    }

    /// Check that the SQLite file open is still the one at its path (see
    /// [`sqlite_file::SqliteFile::check`]); nothing to do on PostgreSQL.
    pub async fn check_file(&self) {
        if let Backend::Sqlite(file) = &self.backend {
            file.check().await;
        }
    }

    /// The database system, as OpenTelemetry names it.
    fn system(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    /// Connections `(idle, in use)`.
    pub fn connections(&self) -> (u32, u32) {
        let (size, idle) = match &self.backend {
            Backend::Sqlite(file) => {
                let p = file.pool();
                (p.size(), p.num_idle() as u32)
            }
            Backend::Postgres(p) => (p.size(), p.num_idle() as u32),
        };
        (idle, size.saturating_sub(idle))
    }

    /// Insert a job, honouring its idempotency key: the same owner's earlier job with that
    /// key is replayed; another owner's key is another key. Committed before this returns.
    pub async fn insert(&self, job: NewJob) -> Result<Inserted, StoreError> {
        if job.idempotency.is_some() {
            return Ok(match self.insert_batch(vec![job]).await? {
                Batch::Inserted(mut one) => one.pop().expect("one job in, one out"),
                Batch::KeyReused(_) => Inserted::KeyReused,
            });
        }
        let sql = concat!(
            "INSERT INTO jobs (id, status, number, rounds, attempts, created_at, run_at, owner) ",
            "VALUES ($1, $2, $3, $4, 0, $5, $6, $7) RETURNING ",
            columns!()
        );
        let job = on_pool!(self, insert, |p| {
            sqlx::query(sql)
                .bind(&job.id)
                .bind(job.status().as_str())
                .bind(job.number as i64)
                .bind(job.rounds as i64)
                .bind(job.created_at)
                .bind(job.run_at)
                .bind(&job.owner)
                .fetch_all(p)
                .await?
                .first()
                .map(job_from_row)
                .ok_or(sqlx::Error::RowNotFound)??
        })?;
        Ok(Inserted::Created(job))
    }

    /// Insert jobs in one transaction: all are committed, or none. A job whose idempotency
    /// key was used before with the same request is the earlier job (also within the batch);
    /// a key used with another request refuses the whole batch, naming the first such job.
    pub async fn insert_batch(&self, jobs: Vec<NewJob>) -> Result<Batch, StoreError> {
        // Two submissions with one key racing (batches with two keys or more queue on their
        // keys' locks instead, [`key_locks`]): the loser's insert violates the unique index,
        // its transaction rolls back, and the second try finds the winner's job. A deadlock or
        // a serialization failure is tried again the same way.
        // Hashed only where they are taken: SQLite's writers already go one at a time.
        let locks = match &self.backend {
            Backend::Postgres(_) => key_locks(&jobs),
            Backend::Sqlite(_) => Vec::new(),
        };
        for _ in 0..2 {
            match self.try_insert_batch(&jobs, &locks).await {
                Err(DbError::Sql(e))
                    if is_contention(&e)
                        || matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation()) =>
                {
                    continue
                }
                other => return other.map_err(StoreError::from),
            }
        }
        Err(StoreError::Unavailable(
            "idempotency keys in use by concurrent submissions; try again".into(),
        ))
    }

    /// One try of [`JobStore::insert_batch`], `locks` being the jobs' [`key_locks`].
    async fn try_insert_batch(&self, jobs: &[NewJob], locks: &[i32]) -> Result<Batch, DbError> {
        // A key past its lifetime may be used again.
        let expire = "UPDATE jobs SET idempotency_key = NULL \
                      WHERE COALESCE(owner, '') = $1 AND idempotency_key = $2 AND idempotency_expires_at < $3";
        let find = concat!(
            "SELECT ",
            columns!(),
            ", request_hash FROM jobs WHERE COALESCE(owner, '') = $1 AND idempotency_key = $2"
        );
        let insert = concat!(
            "INSERT INTO jobs (id, status, number, rounds, attempts, created_at, run_at, owner, ",
            "idempotency_key, request_hash, idempotency_expires_at) ",
            "VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10) RETURNING ",
            columns!()
        );
        on_pool!(self, insert, |p| {
            let mut tx = begin_write(&mut *p).await?;
            if !locks.is_empty() {
                BeginWrite::lock_keys(&mut *tx, locks).await?;
            }
            let mut out: Vec<Inserted> = Vec::with_capacity(jobs.len());
            // Keys met earlier in this batch: (owner, key) → (hash, index of its job).
            let mut seen: std::collections::HashMap<(&str, &str), (&str, usize)> =
                std::collections::HashMap::new();
            let mut reused = None;
            for (i, job) in jobs.iter().enumerate() {
                // As the unique index reads it: no owner is '', which no principal is.
                let owner = job.owner.as_deref().unwrap_or("");
                if let Some((key, hash, _)) = &job.idempotency {
                    if let Some(&(first_hash, first)) = seen.get(&(owner, key.as_str())) {
                        if first_hash != hash {
                            reused = Some(i);
                            break;
                        }
                        let earlier = match &out[first] {
                            Inserted::Created(j) | Inserted::Replayed(j) => j.clone(),
                            Inserted::KeyReused => unreachable!("a refused key ends the batch"),
                        };
                        out.push(Inserted::Replayed(earlier));
                        continue;
                    }
                    seen.insert((owner, key.as_str()), (hash.as_str(), i));
                    sqlx::query(expire)
                        .bind(owner)
                        .bind(key)
                        .bind(job.created_at)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(row) = sqlx::query(find)
                        .bind(owner)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?
                    {
                        let stored: Option<String> = row.try_get("request_hash")?;
                        if stored.as_deref() != Some(hash.as_str()) {
                            reused = Some(i);
                            break;
                        }
                        out.push(Inserted::Replayed(job_from_row(&row)?));
                        continue;
                    }
                }
                let (key, hash, expires) = match &job.idempotency {
                    Some((k, h, e)) => (Some(k.as_str()), Some(h.as_str()), Some(*e)),
                    None => (None, None, None),
                };
                let rows = sqlx::query(insert)
                    .bind(&job.id)
                    .bind(job.status().as_str())
                    .bind(job.number as i64)
                    .bind(job.rounds as i64)
                    .bind(job.created_at)
                    .bind(job.run_at)
                    .bind(&job.owner)
                    .bind(key)
                    .bind(hash)
                    .bind(expires)
                    .fetch_all(&mut *tx)
                    .await?;
                let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
                out.push(Inserted::Created(job_from_row(row)?));
            }
            match reused {
                Some(i) => {
                    tx.rollback().await?;
                    Batch::KeyReused(i)
                }
                None => {
                    tx.commit().await?;
                    Batch::Inserted(out)
                }
            }
        })
    }

    /// Every attempt at a job, first to last.
    pub async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError> {
        let sql = "SELECT attempt, started_at, finished_at, error FROM job_attempts \
                   WHERE job_id = $1 ORDER BY started_at";
        Ok(on_pool!(self, get, |p| {
            let mut attempts = Vec::new();
            for row in sqlx::query(sql).bind(id).fetch_all(p).await? {
                attempts.push(Attempt {
                    attempt: row.try_get::<i32, _>("attempt")? as u32,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    error: row.try_get("error")?,
                });
            }
            attempts
        })?)
    }

    /// Put a discarded or failed job `owner` sees back in the queue, its attempts counted
    /// afresh (their history kept).
    pub async fn retry(
        &self,
        id: &str,
        owner: Option<&str>,
        now: i64,
    ) -> Result<Retried, StoreError> {
        let sql = concat!(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, result = NULL, ",
            "digest = NULL, error = NULL, finished_at = NULL ",
            "WHERE id = $1 AND status IN ('discarded', 'failed') AND ($3 IS NULL OR owner = $3) RETURNING ",
            columns!()
        );
        let retried = on_pool!(self, insert, |p| {
            match sqlx::query(sql)
                .bind(id)
                .bind(now)
                .bind(owner)
                .fetch_all(p)
                .await?
                .first()
            {
                Some(row) => Some(job_from_row(row)?),
                None => None,
            }
        })?;
        Ok(match retried {
            Some(job) => {
                self.notify().await;
                Retried::Retried(job)
            }
            None => match self.get(id, owner).await? {
                Some(job) => Retried::NotRetryable(job),
                None => Retried::NotFound,
            },
        })
    }

    /// One job; with `owner`, only when it is that owner's.
    pub async fn get(&self, id: &str, owner: Option<&str>) -> Result<Option<Job>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE id = $1 AND ($2 IS NULL OR owner = $2)"
        );
        Ok(on_pool!(self, get, |p| {
            match sqlx::query(sql)
                .bind(id)
                .bind(owner)
                .fetch_optional(p)
                .await?
            {
                Some(row) => Some(job_from_row(&row)?),
                None => None,
            }
        })?)
    }

    /// Jobs newest first, after `cursor` (`(created_at, id)` of the last one seen); with
    /// `owner`, only that owner's.
    pub async fn list(
        &self,
        owner: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
        cursor: Option<(i64, String)>,
    ) -> Result<Vec<Job>, StoreError> {
        let (after_created, after_id) = cursor.unwrap_or((i64::MAX, String::new()));
        let status = status.map(JobStatus::as_str);
        // Two statements rather than `($5 IS NULL OR owner = $5)`, which a prepared
        // statement's generic plan could not answer from the owner's index.
        macro_rules! list {
            ($owner:literal) => {
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM jobs WHERE ($1 IS NULL OR status = $1) ",
                    $owner,
                    "AND (created_at < $2 OR (created_at = $2 AND ($3 = '' OR id < $3))) ",
                    "ORDER BY created_at DESC, id DESC LIMIT $4"
                )
            };
        }
        let sql = match owner {
            Some(_) => list!("AND owner = $5 "),
            None => list!(""),
        };
        let rows = on_pool!(self, list, |p| {
            let query = sqlx::query(sql)
                .bind(status)
                .bind(after_created)
                .bind(&after_id)
                .bind(i64::from(limit));
            match owner {
                Some(owner) => query.bind(owner),
                None => query,
            }
            .fetch_all(p)
            .await?
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?
        })?;
        Ok(rows)
    }

    /// Cancel a job not yet ended; with `owner`, only when it is that owner's. An attempt in
    /// progress is closed as cancelled.
    pub async fn cancel(
        &self,
        id: &str,
        owner: Option<&str>,
        now: i64,
    ) -> Result<Cancelled, StoreError> {
        let sql = concat!(
            "UPDATE jobs SET status = 'cancelled', finished_at = $2, lease_owner = NULL, lease_until = NULL ",
            "WHERE id = $1 AND status IN ('queued', 'scheduled', 'running') AND ($3 IS NULL OR owner = $3) RETURNING ",
            columns!()
        );
        let close = "UPDATE job_attempts SET finished_at = $2, error = 'cancelled' \
                     WHERE job_id = $1 AND finished_at IS NULL";
        let cancelled = on_pool!(self, cancel, |p| {
            let mut tx = begin_write(&mut *p).await?;
            let rows = sqlx::query(sql)
                .bind(id)
                .bind(now)
                .bind(owner)
                .fetch_all(&mut *tx)
                .await?;
            let cancelled = match rows.first() {
                Some(row) => {
                    sqlx::query(close)
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    Some(job_from_row(row)?)
                }
                None => None,
            };
            tx.commit().await?;
            cancelled
        })?;
        Ok(match cancelled {
            Some(job) => Cancelled::Cancelled(job),
            None => match self.get(id, owner).await? {
                Some(job) => Cancelled::AlreadyFinished(job),
                None => Cancelled::NotFound,
            },
        })
    }
}

fn migration_error(e: sqlx::migrate::MigrateError) -> OpenError {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => OpenError::Config(format!(
            "invalid setting `database.url`: the database's schema has migration {v}, which this \
             binary does not know: it was written by a newer floodgate"
        )),
        other => OpenError::Unavailable(format!("cannot migrate the database: {other}")),
    }
}

/// A job from a row of either backend.
fn job_from_row<R: Row>(row: &R) -> Result<Job, sqlx::Error>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    let status: String = row.try_get("status")?;
    let opt = |name: &str| -> Result<Option<i64>, sqlx::Error> { row.try_get(name) };
    Ok(Job {
        id: row.try_get("id")?,
        status: status
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        number: row.try_get::<i64, _>("number")? as u64,
        rounds: row.try_get::<i64, _>("rounds")? as u64,
        result: opt("result")?.map(|v| v as u64),
        digest: opt("digest")?.map(|v| v as u64),
        error: row.try_get("error")?,
        attempts: row.try_get::<i32, _>("attempts")? as u32,
        created_at: row.try_get("created_at")?,
        run_at: row.try_get("run_at")?,
        started_at: opt("started_at")?,
        finished_at: opt("finished_at")?,
    })
}
