//! The SQLite database file under the store: opened and migrated one process at a time,
//! and watched, because a file deleted or replaced while open would otherwise go on taking
//! writes into an unlinked inode — every one acknowledged, every one gone at the next start.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::{migration_error, pool_options, OpenError};
use crate::config::DatabaseSettings;

/// `(device, inode)`: which file a path named when it was opened.
type Identity = (u64, u64);

fn identity(path: &Path) -> std::io::Result<Identity> {
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

/// The pool over one SQLite file, replaced when the file at its path is.
pub(super) struct SqliteFile {
    path: PathBuf,
    options: SqliteConnectOptions,
    settings: DatabaseSettings,
    pool: RwLock<SqlitePool>,
    opened: Mutex<Identity>,
    /// Why the file is not usable now; every call is refused meanwhile.
    lost: Mutex<Option<String>>,
    /// This process's writers, one at a time, first come first served.
    pub(super) writers: tokio::sync::Semaphore,
}

impl SqliteFile {
    /// Open and migrate. Replicas that start together on a new file take turns: each holds
    /// an exclusive `flock` on the file while it migrates (SQLite's own locks are `fcntl`
    /// locks, which `flock` does not touch), so no two apply the same migration.
    pub(super) async fn open(
        options: SqliteConnectOptions,
        settings: &DatabaseSettings,
    ) -> Result<SqliteFile, OpenError> {
        let path = options.get_filename().to_path_buf();
        // The file is created here, under the lock; a connection the pool opens later must
        // not make a new empty one where the file was deleted.
        let options = options.create_if_missing(false);
        let (pool, opened) = open_migrated(&path, &options, settings).await?;
        Ok(SqliteFile {
            path,
            options,
            settings: settings.clone(),
            pool: RwLock::new(pool),
            opened: Mutex::new(opened),
            lost: Mutex::default(),
            writers: tokio::sync::Semaphore::new(1),
        })
    }

    /// For a call that `writes`, wait for this process's turn to write; hold it until the
    /// transaction ends. SQLite lets one writer in at a time, and its own wait for the lock
    /// is a poll with sleeps of up to 100 ms that any newer writer overtakes: under load one
    /// writer could lose every round until its busy timeout and be refused while later ones
    /// went through. Queued here (a fair semaphore) they go in the order they came, and
    /// SQLite's busy wait is left to writers of other processes.
    pub(super) async fn writer_turn(
        &self,
        writes: bool,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if !writes {
            return None;
        }
        // Never closed, so never an error.
        self.writers.acquire().await.ok()
    }

    /// The pool now.
    pub(super) fn pool(&self) -> SqlitePool {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why calls are refused, while they are.
    pub(super) fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Compare the file at the path with the one open. Deleted: refuse every call, so nothing
    /// more is acknowledged into a file that no longer has a name. A file at the path again
    /// (restored, replaced, or an empty one put there to start afresh): close the old one
    /// and open that one, as a restart would.
    pub(super) async fn check(&self) {
        let opened = *self.opened.lock().unwrap_or_else(|p| p.into_inner());
        match identity(&self.path) {
            Ok(now) if now == opened => {}
            Ok(_) => {
                // Nothing new starts on the old file; what is in flight finishes, and the
                // last connection's close checkpoints its WAL into the old file and removes
                // it, so the new file does not start with the old one's log.
                self.lose(format!(
                    "the file at {} was replaced; opening the new one",
                    self.path.display()
                ));
                self.pool().close().await;
                match open_migrated(&self.path, &self.options, &self.settings).await {
                    Ok((pool, now)) => {
                        *self.pool.write().unwrap_or_else(|p| p.into_inner()) = pool;
                        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = now;
                        self.lost.lock().unwrap_or_else(|p| p.into_inner()).take();
                        tracing::warn!(path = %self.path.display(), "the jobs database file was replaced; now using the new one");
                    }
                    Err(e) => self.lose(format!(
                        "the file at {} was replaced and cannot be opened: {e}",
                        self.path.display()
                    )),
                }
            }
            Err(e) => {
                let fd = self.open_fd_hint().await;
                self.lose(format!(
                    "{} was deleted while open ({e}); API v2 is refused so nothing more is \
                     written to the unlinked file{fd}; put a database file (a copy, or an \
                     empty file) at the path, or restart, to resume",
                    self.path.display()
                ));
            }
        }
    }

    fn lose(&self, why: String) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.as_deref() != Some(why.as_str()) {
            tracing::error!(error = %why, "jobs database unusable");
        }
        *lost = Some(why);
    }

    /// Where the deleted file can still be read, from a connection that holds it open.
    async fn open_fd_hint(&self) -> String {
        let opened = *self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return String::new();
        };
        for entry in dir.flatten() {
            if let Ok(m) = std::fs::metadata(entry.path()) {
                if (m.dev(), m.ino()) == opened {
                    return format!(
                        "; its contents are still readable at /proc/{}/fd/{}",
                        std::process::id(),
                        entry.file_name().to_string_lossy()
                    );
                }
            }
        }
        String::new()
    }
}

/// Open the pool and apply the migrations under an exclusive `flock` on the file.
async fn open_migrated(
    path: &Path,
    options: &SqliteConnectOptions,
    settings: &DatabaseSettings,
) -> Result<(SqlitePool, Identity), OpenError> {
    let config = |e: String| OpenError::Config(format!("invalid setting `database.url`: {e}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| config(format!("cannot open `{}`: {e}", path.display())))?;
    let locked = tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a descriptor this closure owns; it blocks until the lock is ours.
        let done = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if done == 0 {
            Ok(file)
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .await
    .map_err(|e| config(e.to_string()))?
    .map_err(|e| config(format!("cannot lock `{}`: {e}", path.display())))?;
    let pool = pool_options(settings)
        .connect_with(options.clone())
        .await
        .map_err(|e| config(e.to_string()))?;
    sqlx::migrate!("migrations/sqlite")
        .run(&pool)
        .await
        .map_err(migration_error)?;
    let opened = identity(path).map_err(|e| config(e.to_string()))?;
    // Closing the descriptor releases the lock.
    drop(locked);
    Ok((pool, opened))
}
