//! floodgate itself, started in the test process on 127.0.0.1:0, each instance with its own
//! SQLite jobs database in the temporary directory; shared by the load client's test
//! binaries.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate::{Application, Settings};
use tokio::sync::oneshot;

/// A floodgate serving on a loopback port; stops when dropped, and its jobs
/// database is removed.
pub struct Floodgate {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    db: PathBuf,
}

impl Drop for Floodgate {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.db.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A path for a new SQLite database, unique in this run.
pub fn temp_db() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "floodgate-load-test-jobs-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Starts floodgate with the documented defaults (no access log, a rate limit
/// the tests never reach, a 10 s request timeout, the fixed limits only) adjusted
/// by `adjust`. The
/// listener is bound before this returns, so the server is ready at once.
pub async fn spawn_floodgate(adjust: impl FnOnce(&mut Settings)) -> Floodgate {
    let mut settings = Settings::default();
    settings.server.address = "127.0.0.1:0".parse().unwrap();
    settings.server.request_timeout = Duration::from_secs(10);
    settings.rate_limit.requests_per_second = 1_000_000;
    settings.log.access_log = Some(false);
    // These tests check the client's counts, which need every call answered 200: the
    // fixed limits only. With adaptive admission (the default) a few connections on the
    // intensive endpoint of a debug build, milliseconds a call on a busy machine, keep a
    // queue longer than `admission.target_delay`, and part of it is refused by design
    // (docs/overload.md); that is tested in tests/api/overload.rs.
    settings.admission.adaptive = false;
    let db = temp_db();
    settings.database.url = format!("sqlite://{}", db.display());
    adjust(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("floodgate builds");
    let url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Floodgate {
        url,
        stop: Some(stop),
        db,
    }
}

/// The SHA-256 of `key` as hex: the form API keys are configured in.
pub fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}
