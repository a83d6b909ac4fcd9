//! A batching line sink shared by the application log and the access log.
//!
//! Lines are appended to an in-memory buffer under a short lock and written out by a
//! background thread every 100 ms, or sooner once 64 KiB are waiting (a few hundred writes a
//! second at full load, and a small buffer: it is part of the peak RSS). A channel-based writer
//! (such as `tracing-appender`'s) wakes its thread for every line — a futex syscall and a
//! context switch per request — which at tens of thousands of requests per second costs more
//! than formatting the line. The buffer is bounded: past 8 MiB lines are dropped and counted,
//! so a stalled stdout never grows memory or blocks a request; lines whose write fails are
//! counted too.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

const FLUSH_AT: usize = 64 * 1024;
const LIMIT: usize = 8 * 1024 * 1024;
const INTERVAL: Duration = Duration::from_millis(100);

struct Inner {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
    dropped: AtomicU64,
}

static STDOUT: OnceLock<LogSink> = OnceLock::new();

/// A cheap handle to a sink; clones share it.
#[derive(Clone)]
pub struct LogSink(Arc<Inner>);

impl LogSink {
    /// The process-wide standard-output sink (one, so lines from all writers never interleave).
    pub fn stdout() -> LogSink {
        STDOUT
            .get_or_init(|| LogSink::start(Box::new(std::io::stdout()), "floodgate-stdout"))
            .clone()
    }

    /// The standard-output sink, if anything has started it.
    pub fn stdout_if_started() -> Option<LogSink> {
        STDOUT.get().cloned()
    }

    /// A sink appending to `path`.
    pub fn file(path: &Path) -> std::io::Result<LogSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogSink::start(Box::new(file), "floodgate-logfile"))
    }

    fn start(out: Box<dyn Write + Send>, name: &str) -> LogSink {
        let inner = Arc::new(Inner {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            wake: Condvar::new(),
            out: Mutex::new(out),
            dropped: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || flush_loop(weak))
            .expect("spawning the log writer thread");
        LogSink(inner)
    }

    /// Queue one complete line (or several); never blocks on I/O.
    pub fn write_line(&self, line: &[u8]) {
        let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + line.len() > LIMIT {
            drop(pending);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_below = pending.len() < FLUSH_AT;
        pending.extend_from_slice(line);
        if was_below && pending.len() >= FLUSH_AT {
            self.0.wake.notify_one();
        }
    }

    /// Write everything queued so far, now.
    pub fn flush(&self) {
        write_out(&self.0);
    }

    /// Lines lost: dropped because the buffer was full, or in a write that failed.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

fn write_out(inner: &Inner) {
    // Hold the output lock across the swap so concurrent flushes keep lines in order.
    let mut out = inner.out.lock().unwrap_or_else(|p| p.into_inner());
    let batch = {
        let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            return;
        }
        std::mem::replace(&mut *pending, Vec::with_capacity(FLUSH_AT))
    };
    // A failed write (a full disk, a closed pipe) loses the batch: count its lines.
    if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
        let lines = batch.iter().filter(|&&b| b == b'\n').count();
        inner.dropped.fetch_add(lines as u64, Ordering::Relaxed);
    }
}

fn flush_loop(weak: Weak<Inner>) {
    while let Some(inner) = weak.upgrade() {
        {
            let pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() < FLUSH_AT {
                let _ = inner.wake.wait_timeout(pending, INTERVAL);
            }
        }
        write_out(&inner);
    }
}

/// `tracing-subscriber` writes each formatted event with one `write_all`, so every call here
/// is a whole line.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

/// See [`LogSink`]'s `MakeWriter`.
pub struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_line(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_in_order_and_flush_writes_them_now() {
        let path = std::env::temp_dir().join(format!("floodgate-sink-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = LogSink::file(&path).unwrap();
        for i in 0..1000 {
            sink.write_line(format!("line {i}\n").as_bytes());
        }
        sink.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
        // The background thread writes without an explicit flush.
        sink.write_line(b"later\n");
        std::thread::sleep(INTERVAL * 3);
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("later\n"));
        let _ = std::fs::remove_file(&path);
    }
}
