//! `GET /debug/pprof/profile?seconds=N[&format=flamegraph]`: a CPU profile of the whole
//! process, as pprof protobuf (for `go tool pprof`, Pyroscope, Speedscope) or an SVG flame
//! graph; `GET /debug/pprof/heap`: the live heap as jemalloc's profiler samples it, as
//! gzipped pprof protobuf. Served only on the admin listener and only when
//! `server.profiling` is on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Uri};

use crate::error::ApiError;

/// Longest profile one request may ask for.
pub const MAX_SECONDS: u64 = 300;
/// Samples per second, as Go's profiler takes.
const FREQUENCY: i32 = 99;

/// The profiler is process-wide: one profile at a time.
static RUNNING: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Pprof,
    Flamegraph,
}

/// Take a profile; 400 for bad parameters, 503 `PROFILER_BUSY` while another is running.
pub async fn profile(uri: Uri) -> Result<Response, ApiError> {
    let (seconds, format) = parameters(uri.query().unwrap_or(""))?;
    if RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(ApiError::ProfilerBusy {
            retry_after: Duration::from_secs(seconds),
        });
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }
    let release = Release;
    // Sampling and symbolizing block; keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let _release = release;
        take(Duration::from_secs(seconds), format)
    })
    .await
    .map_err(|_| ApiError::InternalError)?;
    let body = result.map_err(|e| {
        tracing::error!(error = %e, "profiling failed");
        ApiError::InternalError
    })?;
    let content_type = match format {
        Format::Pprof => "application/octet-stream",
        Format::Flamegraph => "image/svg+xml",
    };
    let mut response = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    if format == Format::Pprof {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"profile.pb\""),
        );
    }
    Ok(response)
}

/// Take a heap profile: the allocations live now, sampled by jemalloc (about one every
/// 128 KiB allocated, each with its stack) since profiling was activated at start, in pprof
/// format with symbolized allocation sites. 503 `PROFILER_BUSY` while another is taken.
pub async fn heap() -> Result<Response, ApiError> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        tracing::error!("heap profile asked for, but the allocator is not jemalloc with prof:true");
        return Err(ApiError::InternalError);
    };
    let mut ctl =
        std::sync::Arc::clone(ctl)
            .try_lock_owned()
            .map_err(|_| ApiError::ProfilerBusy {
                retry_after: Duration::from_secs(1),
            })?;
    if !ctl.activated() {
        tracing::error!("heap profile asked for, but jemalloc's profiler is not active");
        return Err(ApiError::InternalError);
    }
    // Dumping writes a file and symbolizing reads the executable: keep both off the async
    // workers (the lock goes along, so two dumps never interleave).
    let body = tokio::task::spawn_blocking(move || ctl.dump_pprof())
        .await
        .map_err(|_| ApiError::InternalError)?
        .map_err(|e| {
            tracing::error!(error = %e, "heap profiling failed");
            ApiError::InternalError
        })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"heap.pb.gz\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Start jemalloc's heap sampling, when the allocator can (the binary's jemalloc is built with
/// profiling and starts with it inactive: sampling costs nothing until this). Called at
/// start when profiling is enabled.
pub async fn activate_heap_profiling() -> Result<(), String> {
    let ctl = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or("the allocator is not jemalloc with prof:true")?;
    ctl.lock().await.activate().map_err(|e| e.to_string())
}

fn parameters(query: &str) -> Result<(u64, Format), ApiError> {
    let mut seconds = 30;
    let mut format = Format::Pprof;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "seconds" => {
                seconds = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=MAX_SECONDS).contains(s))
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "seconds must be an integer between 1 and {MAX_SECONDS}"
                        ))
                    })?;
            }
            "format" => {
                format = match value {
                    "pprof" | "proto" => Format::Pprof,
                    "flamegraph" | "svg" => Format::Flamegraph,
                    _ => {
                        return Err(ApiError::InvalidRequest(
                            "format must be `pprof` or `flamegraph`".into(),
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    Ok((seconds, format))
}

fn take(duration: Duration, format: Format) -> Result<Vec<u8>, String> {
    use pprof::protos::Message;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // Unwinding through these from a signal handler can deadlock.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(|e| e.to_string())?;
    drop(guard);
    let mut out = Vec::new();
    match format {
        Format::Pprof => {
            let profile = report.pprof().map_err(|e| e.to_string())?;
            profile.encode(&mut out).map_err(|e| e.to_string())?;
        }
        Format::Flamegraph => {
            if report.data.is_empty() {
                // An idle process takes no samples; say so instead of an empty body.
                return Ok(format!(
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">no CPU samples in {} s</text></svg>\n",
                    duration.as_secs()
                )
                .into_bytes());
            }
            report.flamegraph(&mut out).map_err(|e| e.to_string())?
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_checked() {
        assert!(parameters("").is_ok_and(|(s, f)| s == 30 && f == Format::Pprof));
        assert!(parameters("seconds=2&format=flamegraph")
            .is_ok_and(|(s, f)| s == 2 && f == Format::Flamegraph));
        for bad in ["seconds=0", "seconds=301", "seconds=x", "format=png"] {
            assert!(parameters(bad).is_err(), "{bad}");
        }
    }
}
