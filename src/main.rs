//! `floodgate`: load settings, start telemetry, build the application, serve until signalled.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use floodgate::config::{LoadOptions, Settings};

/// jemalloc, with background threads returning freed pages to the system within a second:
/// glibc's allocator kept tens of megabytes after every burst of connections (see "Memory" in
/// docs/performance.md). Its frees go through [`floodgate::allocator`].
#[global_allocator]
static ALLOCATOR: floodgate::allocator::Allocator = floodgate::allocator::Allocator;

/// Read by jemalloc at start: purge unused dirty and muzzy pages after 1 s, from its own
/// background threads rather than on request threads; heap profiling compiled in but
/// inactive (no sampling) until `server.profiling` turns it on, sampling then about one
/// allocation per 128 KiB (2^17 bytes) allocated: this service's live heap is a few MiB, and
/// jemalloc's default of 512 KiB leaves a profile of it with a handful of samples, or none.
/// Each thread's cache is trimmed once per MiB allocated rather than per 64 KiB: a request
/// allocates an 8 KiB read buffer, so the default trimmed every few requests (1 % of a fast
/// call's instructions); the cache's size is bounded per size class either way.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000,prof:true,prof_active:false,lg_prof_sample:17,tcache_gc_incr_bytes:1048576\0";

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

/// An HTTP compute service with a bounded worker pool.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// An extra configuration file, applied over config/default.toml and config/<environment>.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory holding default.toml and <environment>.toml.
    #[arg(long, value_name = "DIR", env = "FLOODGATE_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&LoadOptions {
        config_dir: cli.config_dir,
        config_file: cli.config,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.print_config {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floodgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> ExitCode {
    // Before any port is bound: a SIGTERM that arrives while starting up then stops the
    // service cleanly, instead of killing it with connections in its backlog.
    let stop = match shutdown_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("floodgate: cannot install the signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut telemetry = match floodgate::observability::telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Heap profiles are served where CPU profiles are: the admin listener, with profiling on.
    if settings.server.profiling && settings.server.admin_address.is_some() {
        if let Err(e) = floodgate::http::routes::profile::activate_heap_profiling().await {
            tracing::warn!(error = %e, "heap profiling unavailable");
        }
    }
    let app = match floodgate::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("floodgate: {e}");
            return if e.kind() == std::io::ErrorKind::InvalidInput {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let result = app.run_until_stopped(stop).await;
    telemetry.shutdown();
    match result {
        Ok(summary) if summary.drained => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("floodgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at SIGTERM or SIGINT; the handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
