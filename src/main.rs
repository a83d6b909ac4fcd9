//! `floodgate`: load settings, start telemetry, build the application, serve until signalled.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use floodgate::config::{LoadOptions, Settings};

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
    let mut telemetry = match floodgate::observability::telemetry::init(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
    let result = app.run_until_stopped(shutdown_signal()).await;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
