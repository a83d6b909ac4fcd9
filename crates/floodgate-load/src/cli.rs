//! The command line: its options, and the command, [`execute`], which turns
//! them into a run, writes the report and says how the run ended ([`Exit`]).
//! Every option has an environment fallback (`FLOODGATE_LOAD_<NAME>`), so CI
//! can configure a run without flags.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use http::{HeaderName, HeaderValue, Method};
use tokio::sync::watch;

use crate::html;
use crate::options::{parse_number_range, NumberRange, RunOptions, Scenario, SweepOptions};
use crate::output::{self, OutputSpec};
use crate::progress::{note, Mode};
use crate::report::{self, RunReport, ScenarioReport};
use crate::scenarios::{run, Error};
use crate::stages::{self, Profile, Stage, StageKind};
use crate::sweep::{self, parse_compare, parse_sweep, SweepLimits, SweepSpec};
use crate::thresholds::{self, Threshold};
use crate::tls::TlsOptions;

/// Requests in the default "fast" scenario.
pub const FAST_REQUESTS: u64 = 1_000_000;
/// Requests in the default "intensive" scenario.
pub const INTENSIVE_REQUESTS: u64 = 100_000;
/// Jobs in the "jobs" scenario.
pub const JOBS_REQUESTS: u64 = 1_000;

/// How the command ended; [`Exit::code`] is its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run finished and every threshold held (0).
    Ok,
    /// The run could not be made: server unhealthy or unreachable, TLS
    /// handshake refused, live-metrics endpoint unreachable, report not
    /// writable (1).
    Error,
    /// Invalid arguments (2, also clap's own status for usage errors).
    Usage,
    /// A threshold failed (`--threshold`, `--fail-under-success-rate`,
    /// `--fail-over-p99`), or one with `:abort` stopped the run (3).
    Threshold,
    /// `--fail-on-mismatch` is set and the server's counters disagree, or a
    /// job's digest or result is wrong (always) (4).
    Mismatch,
    /// Ctrl-C: the report of what ran is still printed; after a second one,
    /// nothing is (130).
    Interrupted,
}

impl Exit {
    /// The exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Threshold => 3,
            Exit::Mismatch => 4,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

const EXIT_CODES_HELP: &str = "\
Exit status:
  0    run finished, all thresholds held
  1    the run could not be made: server unhealthy or unreachable, TLS
       handshake refused, live-metrics endpoint unreachable, report file
       not writable
  2    invalid arguments
  3    a threshold failed (--threshold, --fail-under-success-rate,
       --fail-over-p99), or one with :abort stopped the run
  4    the server's answers disagree with the client's: a job's digest or
       result is wrong, or (with --fail-on-mismatch) its counters
  130  interrupted by Ctrl-C (the report of what ran is still printed)";

/// Load-testing client for floodgate: closed-loop (fixed concurrency) or
/// open-loop (fixed rate, coordinated-omission corrected) HTTP/1.1 load, HDR
/// latency percentiles, and a check of the server's own request counters.
///
/// Without arguments it runs the standard test plan against
/// http://localhost:8080: health check, warmup, scenario "fast" (1,000,000
/// requests) and scenario "intensive" (100,000 requests), 500 connections each.
#[derive(Debug, Clone, Parser)]
#[command(name = "floodgate-load", version, after_help = EXIT_CODES_HELP)]
pub struct Opts {
    /// Base URL of the server (http:// or https://). Repeat it, or give a
    /// comma-separated list, to load several servers: the connections are
    /// assigned to them round robin and their /metrics counters are summed.
    #[arg(
        long = "url",
        value_name = "URL",
        env = "FLOODGATE_LOAD_URL",
        value_delimiter = ',',
        default_value = "http://localhost:8080"
    )]
    pub urls: Vec<String>,

    /// Requests per scenario [default: 1000000 for fast and custom paths,
    /// 100000 for intensive, 1000 jobs for jobs].
    #[arg(short = 'n', long, env = "FLOODGATE_LOAD_REQUESTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Connections, i.e. the maximum number of requests in flight (closed and open loop).
    #[arg(short = 'c', long, env = "FLOODGATE_LOAD_CONCURRENCY", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Open loop: send this many requests per second on a fixed schedule and
    /// measure latency from each request's scheduled time. Without it the
    /// load is closed loop (each connection sends as fast as answers come).
    #[arg(short = 'r', long, env = "FLOODGATE_LOAD_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Sweep: open-loop steps at rising rates, START, START+STEP … END
    /// requests/s (without STEP, ten evenly spaced rates), or `auto` (start
    /// at 1000/s, double, then bisect to the knee), each lasting
    /// --sweep-step-duration; stops at the first step over --sweep-max-p99 or
    /// --sweep-max-errors and reports the latency-versus-throughput curve and
    /// its knee (the highest rate within both).
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP", value_name = "START..END[:STEP]|auto", value_parser = parse_sweep,
          conflicts_with_all = ["rate", "fail_over_p99", "fail_under_success_rate"])]
    pub sweep: Option<SweepSpec>,

    /// Sweep: duration of each step [default: --duration].
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP_STEP_DURATION", value_parser = parse_positive_duration)]
    pub sweep_step_duration: Option<Duration>,

    /// Sweep: a step whose p99 latency (milliseconds) is above this ends the sweep.
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP_MAX_P99", value_name = "MS", default_value_t = 100.0, value_parser = parse_positive)]
    pub sweep_max_p99: f64,

    /// Sweep: a step whose requests without a 2xx answer (and unsent ones)
    /// are above this percent of those due ends the sweep.
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP_MAX_ERRORS", value_name = "PCT", default_value_t = 1.0, value_parser = parse_percent)]
    pub sweep_max_errors: f64,

    /// Sweep: run a step that went over the limits again at the same rate, up
    /// to N times, its last run deciding, so one transient within one step
    /// does not set the knee (0 to 5).
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP_RETRIES", value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=5))]
    pub sweep_retries: u32,

    /// Sweep: a step over the limits while the machine's host took more than
    /// this percent of its CPU time (steal time, Linux) is not judged: it runs
    /// again once a second passes under this, up to 3 times in a row (100
    /// judges every step as it is).
    #[arg(long, env = "FLOODGATE_LOAD_SWEEP_MAX_STEAL", value_name = "PCT", default_value_t = crate::sweep::DEFAULT_MAX_STEAL, value_parser = parse_percent)]
    pub sweep_max_steal: f64,

    /// Send no load: draw the sweeps of earlier JSON reports (written with
    /// --sweep --output json) as curves on one chart, each under NAME;
    /// repeatable. Best with --output html.
    #[arg(long = "compare", value_name = "NAME=FILE", env = "FLOODGATE_LOAD_COMPARE", value_delimiter = ',',
          value_parser = parse_compare, conflicts_with = "sweep")]
    pub compare: Vec<(String, PathBuf)>,

    /// Per-request timeout (e.g. 30s, 500ms).
    #[arg(long, env = "FLOODGATE_LOAD_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// Maximum duration of each scenario; it stops at whichever of
    /// --requests and --duration comes first.
    #[arg(short = 'd', long, env = "FLOODGATE_LOAD_DURATION", default_value = "5m", value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Requests sent before each scenario and not counted (0 to skip).
    #[arg(long, env = "FLOODGATE_LOAD_WARMUP", default_value_t = 1000)]
    pub warmup: u64,

    /// Interval between progress lines when stderr is not a terminal.
    #[arg(long, env = "FLOODGATE_LOAD_REPORT_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub report_interval: Duration,

    /// Which scenario(s) of the test plan to run.
    #[arg(short = 's', long, env = "FLOODGATE_LOAD_SCENARIO", value_enum, default_value_t = ScenarioArg::All)]
    pub scenario: ScenarioArg,

    /// Jobs scenario: the `rounds` of each job [default: the server's
    /// default; the field is left out].
    #[arg(long, env = "FLOODGATE_LOAD_ROUNDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: Option<u64>,

    /// Jobs scenario: time between two polls of a job (GET /api/v2/jobs/{id}).
    #[arg(long, env = "FLOODGATE_LOAD_POLL_INTERVAL", default_value = "50ms", value_parser = parse_positive_duration)]
    pub poll_interval: Duration,

    /// Custom target path (replaces the scenarios with one custom scenario).
    #[arg(long, env = "FLOODGATE_LOAD_PATH", conflicts_with = "scenario", value_parser = parse_path)]
    pub path: Option<String>,

    /// HTTP method.
    #[arg(short = 'm', long, env = "FLOODGATE_LOAD_METHOD", default_value = "POST", value_parser = parse_method)]
    pub method: Method,

    /// Extra header sent with every request, as `NAME: VALUE`; repeatable
    /// (e.g. `-H "X-API-Key: $KEY"` against a server with authentication on).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,

    /// Literal request body, sent as-is with every request. Without it,
    /// POST/PUT/PATCH requests send {"number": n} with n from --number-range
    /// and other methods send no body.
    #[arg(long, env = "FLOODGATE_LOAD_BODY", conflicts_with = "number_range")]
    pub body: Option<String>,

    /// Inclusive range the `number` of each request body is drawn from
    /// uniformly, as LO..=HI or LO-HI; must lie within 0..=1000000.
    #[arg(long, env = "FLOODGATE_LOAD_NUMBER_RANGE", default_value = "0..=1000000", value_parser = parse_number_range)]
    pub number_range: NumberRange,

    /// Runtime worker threads [default: number of CPUs]; 1 runs everything on
    /// the main thread (useful with taskset).
    #[arg(short = 't', long, env = "FLOODGATE_LOAD_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Report format: text, JSON, or one self-contained HTML page with
    /// charts (no script, no external resource).
    #[arg(short = 'o', long, env = "FLOODGATE_LOAD_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Write the report to this file instead of stdout.
    #[arg(long, env = "FLOODGATE_LOAD_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,

    /// No progress output on stderr.
    #[arg(long, env = "FLOODGATE_LOAD_QUIET")]
    pub quiet: bool,

    /// Exit with status 3 when any scenario's success rate (percent) is below this.
    #[arg(long, env = "FLOODGATE_LOAD_FAIL_UNDER_SUCCESS_RATE", value_name = "PCT", value_parser = parse_percent)]
    pub fail_under_success_rate: Option<f64>,

    /// Exit with status 3 when any scenario's p99 latency (milliseconds) is above this.
    #[arg(long, env = "FLOODGATE_LOAD_FAIL_OVER_P99", value_name = "MS", value_parser = parse_non_negative)]
    pub fail_over_p99: Option<f64>,

    /// Exit with status 4 when the server's /metrics counters disagree with
    /// the client's counts (only meaningful when nothing else calls the server).
    #[arg(long, env = "FLOODGATE_LOAD_FAIL_ON_MISMATCH")]
    pub fail_on_mismatch: bool,

    /// Call the gRPC API (floodgate.v1.ComputeService/Fast and /Intensive) over
    /// HTTP/2 cleartext instead of the REST API; one call at a time per connection.
    /// Statuses are reported as the REST API's equivalents, errors by gRPC code name.
    #[arg(long, env = "FLOODGATE_LOAD_GRPC")]
    pub grpc: bool,

    /// Skip the initial GET /health check.
    #[arg(long, env = "FLOODGATE_LOAD_NO_HEALTH_CHECK")]
    pub no_health_check: bool,

    /// Do not read the server's /metrics before and after each scenario.
    #[arg(long, env = "FLOODGATE_LOAD_NO_SERVER_METRICS")]
    pub no_server_metrics: bool,

    /// Load the REST API over HTTP/2: h2c with prior knowledge on http://
    /// URLs, `h2` agreed by ALPN on https:// ones (a server that does not
    /// agree stops the run before any load).
    #[arg(long, env = "FLOODGATE_LOAD_HTTP2", conflicts_with = "grpc")]
    pub http2: bool,

    /// HTTP/2 streams per connection (--http2, --grpc): each connection
    /// carries this many requests at once, so at most --concurrency x N are
    /// in flight.
    #[arg(long, env = "FLOODGATE_LOAD_STREAMS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub streams: u32,

    /// https:// URLs: trust only the CA certificates of this PEM file (instead
    /// of the system's).
    #[arg(
        long,
        env = "FLOODGATE_LOAD_CACERT",
        value_name = "FILE",
        conflicts_with = "insecure"
    )]
    pub cacert: Option<PathBuf>,

    /// https:// URLs: do not check the server's certificate (it is said
    /// loudly on stderr, and in the report).
    #[arg(long, env = "FLOODGATE_LOAD_INSECURE")]
    pub insecure: bool,

    /// https:// URLs: the client certificate (PEM chain) for mutual TLS; with --key.
    #[arg(
        long,
        env = "FLOODGATE_LOAD_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,

    /// https:// URLs: the private key (PEM) of --cert.
    #[arg(
        long,
        env = "FLOODGATE_LOAD_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// A stage of a load profile: ramp linearly to TARGET over DURATION,
    /// from where the stage before ended (the first from 0). TARGET is a
    /// rate, `1000/s` (open loop; --concurrency caps requests in flight), or
    /// connections, `64` (closed loop); every stage gives the same kind.
    /// Repeatable, in order; `NAME=` names it in the reports and the live
    /// metrics. The stages replace --rate and --duration.
    #[arg(long = "stage", value_name = "[NAME=]DURATION:TARGET", value_parser = stages::parse_stage,
          conflicts_with_all = ["rate", "sweep", "duration"])]
    pub stages: Vec<(StageKind, Stage)>,

    /// The stages of a load profile from a TOML file: `[[stage]]` tables with
    /// `duration`, `rate` or `concurrency`, and an optional `name`.
    #[arg(long = "stages", value_name = "FILE", env = "FLOODGATE_LOAD_STAGES",
          conflicts_with_all = ["stages", "rate", "sweep", "duration"])]
    pub stage_file: Option<PathBuf>,

    /// A condition every scenario must meet, as METRIC OP VALUE[UNIT], e.g.
    /// `p99<10ms`, `error_rate<0.1`, `5xx<1%`, `rps>=5000`,
    /// `server_check==match`; repeatable. Metrics: p50 … p99.99, min, mean,
    /// max (ms, or us, s); setup_p50/p99/max (connection set-up); rps;
    /// requests, errors, successful, timeouts, connection_errors, unsent,
    /// 2xx … 5xx, a status such as 429 (counts, or with % a share of the
    /// requests); error_rate, success_rate (percent); server_check. With
    /// `:abort` (e.g. `p99<10ms:abort`) it is also checked every 200 ms while
    /// the scenario runs, and the run stops as soon as it fails. A failed
    /// threshold exits with status 3.
    #[arg(long = "threshold", value_name = "EXPR[:abort]", value_parser = thresholds::parse_threshold,
          conflicts_with = "sweep")]
    pub thresholds: Vec<Threshold>,

    /// Push live metrics while the measured phases run: requests and errors
    /// (counters), latency percentiles of each interval and the load's
    /// target, labelled by scenario, target and stage. KIND is
    /// `prometheus-rw` (Prometheus remote write, e.g.
    /// http://prometheus:9090/api/v1/write, with --web.enable-remote-write-receiver)
    /// or `otlp` (OTLP/HTTP, e.g. http://collector:4318/v1/metrics);
    /// repeatable. An output that does not take the first push stops the
    /// run before any load (status 1); later failures are counted.
    #[arg(long = "out", value_name = "KIND=URL", env = "FLOODGATE_LOAD_OUT", value_delimiter = ',',
          value_parser = output::parse_output)]
    pub outputs: Vec<OutputSpec>,

    /// Between two pushes of live metrics (--out).
    #[arg(long, env = "FLOODGATE_LOAD_OUT_INTERVAL", default_value = "1s", value_parser = parse_out_interval)]
    pub out_interval: Duration,
}

/// The gRPC methods of the fast and intensive scenarios.
pub const GRPC_FAST: &str = "/floodgate.v1.ComputeService/Fast";
pub const GRPC_INTENSIVE: &str = "/floodgate.v1.ComputeService/Intensive";

/// The scenarios of the test plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScenarioArg {
    /// POST /api/v1/compute/fast, 1,000,000 requests.
    Fast,
    /// POST /api/v1/compute/intensive, 100,000 requests.
    Intensive,
    /// Fast, then intensive.
    All,
    /// POST /api/v2/jobs, 1,000 jobs, each polled until it finishes and its
    /// digest checked (not part of `all`).
    Jobs,
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    /// One self-contained page with charts (give it --output-file).
    Html,
}

impl Opts {
    /// The scenarios this invocation runs, in order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let make = |name: &str, path: &str, default_requests: u64| Scenario {
            name: name.to_owned(),
            method: self.method.clone(),
            path: path.to_owned(),
            requests: self.requests.unwrap_or(default_requests),
            jobs: false,
        };
        if let Some(path) = &self.path {
            return vec![make("custom", path, FAST_REQUESTS)];
        }
        let (fast_path, intensive_path) = if self.grpc {
            (GRPC_FAST, GRPC_INTENSIVE)
        } else {
            ("/api/v1/compute/fast", "/api/v1/compute/intensive")
        };
        let fast = || make("fast", fast_path, FAST_REQUESTS);
        let intensive = || make("intensive", intensive_path, INTENSIVE_REQUESTS);
        match self.scenario {
            ScenarioArg::Fast => vec![fast()],
            ScenarioArg::Intensive => vec![intensive()],
            ScenarioArg::All => vec![fast(), intensive()],
            ScenarioArg::Jobs => vec![Scenario {
                jobs: true,
                ..make("jobs", "/api/v2/jobs", JOBS_REQUESTS)
            }],
        }
    }

    /// Whether this invocation runs the jobs scenario.
    pub fn runs_jobs(&self) -> bool {
        self.path.is_none() && self.scenario == ScenarioArg::Jobs
    }

    /// Checks the combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.grpc {
            if self.runs_jobs() {
                return Err(
                    "--grpc runs the fast and intensive scenarios; --scenario jobs is REST only"
                        .into(),
                );
            }
            if self.path.is_some() || self.body.is_some() || self.method != Method::POST {
                return Err("--grpc calls ComputeService/Fast and /Intensive with generated numbers; --path, --body and --method do not apply".into());
            }
        }
        if self.streams > 1 && !(self.http2 || self.grpc) {
            return Err("--streams applies to HTTP/2 (--http2 or --grpc)".into());
        }
        if self.sweep.is_some() && self.runs_jobs() {
            return Err("--sweep loads requests; --scenario jobs cannot be swept".into());
        }
        if self.sweep_step_duration.is_some() && self.sweep.is_none() {
            return Err("--sweep-step-duration applies to --sweep only".into());
        }
        if self.sweep_retries > 0 && self.sweep.is_none() {
            return Err("--sweep-retries applies to --sweep only".into());
        }
        if self.runs_jobs() {
            if self.body.is_some() {
                return Err("--body does not apply to --scenario jobs: each job is {\"number\": n, \"rounds\": r}, n from --number-range".into());
            }
            if self.method != Method::POST {
                return Err("--scenario jobs submits with POST; --method does not apply".into());
            }
        } else if self.rounds.is_some() {
            return Err("--rounds applies to --scenario jobs only".into());
        }
        Ok(())
    }
}

impl Opts {
    /// The staged load profile of `--stage` or `--stages`, if any.
    pub fn profile(&self) -> Result<Option<Profile>, String> {
        let (kind, stages) = match &self.stage_file {
            Some(path) => stages::parse_stage_file(path)?,
            None if self.stages.is_empty() => return Ok(None),
            None => {
                let kind = self.stages[0].0;
                if self.stages.iter().any(|(k, _)| *k != kind) {
                    return Err("--stage: every stage gives a rate (R/s) or every stage connections (N), not both".into());
                }
                (kind, self.stages.iter().map(|(_, s)| s.clone()).collect())
            }
        };
        Profile::new(kind, stages).map(Some)
    }

    /// The run these options ask for; an error (a usage error) for the
    /// combinations clap cannot reject.
    pub fn run_options(&self) -> Result<RunOptions, String> {
        self.validate()?;
        let profile = self.profile()?;
        let mut scenarios = self.scenarios();
        if profile.is_some() && self.requests.is_none() {
            // The profile alone says how much is sent.
            for s in &mut scenarios {
                s.requests = u64::MAX;
            }
        }
        Ok(RunOptions {
            urls: self.urls.clone(),
            scenarios,
            concurrency: self.concurrency,
            rate: self.rate,
            sweep: self.sweep.map(|spec| SweepOptions {
                spec,
                step_duration: self.sweep_step_duration.unwrap_or(self.duration),
                // Steps last their duration unless --requests is given.
                step_requests: self.requests.unwrap_or(u64::MAX),
                limits: SweepLimits {
                    max_p99_ms: self.sweep_max_p99,
                    max_error_rate: self.sweep_max_errors,
                    retries: self.sweep_retries,
                    max_steal_pct: self.sweep_max_steal,
                },
            }),
            timeout: self.timeout,
            duration: self.duration,
            warmup: self.warmup,
            report_interval: self.report_interval,
            number_range: self.number_range,
            rounds: self.rounds,
            poll_interval: self.poll_interval,
            body: self.body.clone(),
            headers: self.headers.clone(),
            grpc: self.grpc,
            check_health: !self.no_health_check,
            read_server_metrics: !self.no_server_metrics,
            min_success_rate: self.fail_under_success_rate,
            max_p99_ms: self.fail_over_p99,
            tls: TlsOptions {
                cacert: self.cacert.clone(),
                insecure: self.insecure,
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
            http2: self.http2,
            streams: self.streams,
            stages: profile.map(std::sync::Arc::new),
            thresholds: self.thresholds.clone(),
            outputs: self.outputs.clone(),
            out_interval: self.out_interval,
        })
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 500ms, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_out_interval(s: &str) -> Result<Duration, String> {
    let d = parse_positive_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(r.is_finite() && r > 0.0) {
        return Err("must be a positive number of requests per second".into());
    }
    Ok(r)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=100.0).contains(&p) {
        return Err("must be between 0 and 100".into());
    }
    Ok(p)
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("must be a positive number".into());
    }
    Ok(v)
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err("must be a non-negative number".into());
    }
    Ok(v)
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{s}` is not an HTTP method"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not `NAME: VALUE`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
    Ok((name, value))
}

fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("must start with `/`".into());
    }
    http::uri::PathAndQuery::try_from(s).map_err(|e| format!("invalid path: {e}"))?;
    Ok(s.to_owned())
}

/// Builds the runtime `--threads` asks for.
pub fn build_runtime(threads: Option<u32>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        |t| t as usize,
    );
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// How a finished run ends.
pub fn exit_status(report: &RunReport, opts: &Opts) -> Exit {
    if report.interrupted {
        Exit::Interrupted
    } else if !report.jobs_verified {
        // A wrong answer outranks a missed threshold.
        Exit::Mismatch
    } else if !report.thresholds_passed {
        Exit::Threshold
    } else if opts.fail_on_mismatch && !report.counts_consistent {
        Exit::Mismatch
    } else {
        Exit::Ok
    }
}

/// Writes `rendered` to `--output-file` or stdout; `false` (after saying
/// why) when it could not.
fn write_output(opts: &Opts, mode: Mode, rendered: &str) -> bool {
    match &opts.output_file {
        Some(path) => {
            if let Err(e) = std::fs::write(path, rendered) {
                eprintln!(
                    "floodgate-load: cannot write the report to {}: {e}",
                    path.display()
                );
                return false;
            }
            note(mode, &format!("Report written to {}", path.display()));
            true
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())
                .and_then(|()| out.flush())
                .is_ok()
        }
    }
}

/// `--compare`: the sweeps of earlier JSON reports on one chart; no load.
fn compare(opts: &Opts, mode: Mode) -> Exit {
    let comparison = match sweep::load_curves(&opts.compare) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("floodgate-load: {e}");
            return Exit::Error;
        }
    };
    let rendered = match opts.output {
        OutputFormat::Text => report::comparison_text(&comparison),
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&comparison).expect("curves serialize");
            s.push('\n');
            s
        }
        OutputFormat::Html => html::render_compare(&comparison),
    };
    if write_output(opts, mode, &rendered) {
        Exit::Ok
    } else {
        Exit::Error
    }
}

/// Stops the run (through `stop`) at the first Ctrl-C and resolves at the
/// second; never resolves when Ctrl-C cannot be listened for.
async fn interrupted_twice(stop: watch::Sender<bool>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("\nInterrupted: stopping and reporting (press Ctrl-C again to quit at once)");
        let _ = stop.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// The whole command: runs, writes the report, says how it ended.
pub fn execute(opts: Opts) -> Exit {
    let mode = Mode::detect(opts.quiet);
    if !opts.compare.is_empty() {
        return compare(&opts, mode);
    }
    let run_options = match opts.run_options() {
        Ok(o) => o,
        Err(m) => {
            eprintln!("floodgate-load: {m}");
            return Exit::Usage;
        }
    };
    let runtime = match build_runtime(opts.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floodgate-load: cannot start the runtime: {e}");
            return Exit::Error;
        }
    };
    // `None`: a second Ctrl-C quit the run at once, with no report.
    let result = runtime.block_on(async {
        let (tx, rx) = watch::channel(false);
        tokio::select! {
            result = run(&run_options, mode, rx) => Some(result),
            () = interrupted_twice(tx) => None,
        }
    });
    // Workers still parked on the runtime are not waited for.
    runtime.shutdown_background();
    let report = match result {
        None => return Exit::Interrupted,
        Some(Ok(report)) => report,
        Some(Err(Error::Usage(m))) => {
            eprintln!("floodgate-load: {m}");
            return Exit::Usage;
        }
        Some(Err(Error::Runtime(m))) => {
            eprintln!("floodgate-load: {m}");
            return Exit::Error;
        }
    };
    let rendered = match opts.output {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => report.to_json(),
        OutputFormat::Html => html::render(&report),
    };
    if !write_output(&opts, mode, &rendered) {
        return Exit::Error;
    }
    if !report.counts_consistent {
        eprintln!("floodgate-load: MISMATCH between the server's /metrics counters and the client's counts");
    }
    let wrong: u64 = report
        .scenarios
        .iter()
        .map(ScenarioReport::digest_mismatches)
        .sum();
    if wrong > 0 {
        eprintln!(
            "floodgate-load: DIGEST MISMATCH: {} succeeded jobs came back with a wrong digest or result",
            report::thousands(wrong)
        );
    }
    exit_status(&report, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Opts, clap::Error> {
        Opts::try_parse_from(std::iter::once("floodgate-load").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn defaults_reproduce_the_test_plan() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.urls, ["http://localhost:8080"]);
        assert_eq!(o.concurrency, 500);
        assert_eq!(o.duration, Duration::from_secs(300));
        assert_eq!(o.timeout, Duration::from_secs(30));
        assert_eq!(o.warmup, 1000);
        assert_eq!(o.report_interval, Duration::from_secs(5));
        assert_eq!(o.method, Method::POST);
        assert_eq!(
            o.number_range,
            NumberRange {
                lo: 0,
                hi: 1_000_000
            }
        );
        assert!(o.rate.is_none());
        assert_eq!(o.output, OutputFormat::Text);
        let s = o.scenarios();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].path.as_str(), s[0].requests),
            ("fast", "/api/v1/compute/fast", 1_000_000)
        );
        assert_eq!(
            (s[1].name.as_str(), s[1].path.as_str(), s[1].requests),
            ("intensive", "/api/v1/compute/intensive", 100_000)
        );
    }

    #[test]
    fn urls_repeat_or_come_as_a_list() {
        let o = parse(&["--url", "http://a:1", "--url", "http://b:2,http://c:3"]).unwrap();
        assert_eq!(o.urls, ["http://a:1", "http://b:2", "http://c:3"]);
    }

    #[test]
    fn durations_accept_human_forms() {
        let o = parse(&[
            "--timeout",
            "500ms",
            "--duration",
            "1m",
            "--report-interval",
            "30s",
        ])
        .unwrap();
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert_eq!(o.duration, Duration::from_secs(60));
        assert_eq!(o.report_interval, Duration::from_secs(30));
        assert!(parse(&["--timeout", "0s"]).is_err());
        assert!(parse(&["--duration", "soon"]).is_err());
    }

    #[test]
    fn requests_apply_to_every_scenario() {
        let o = parse(&["-n", "10", "-s", "all"]).unwrap();
        assert!(o.scenarios().iter().all(|s| s.requests == 10));
        let o = parse(&["--scenario", "intensive"]).unwrap();
        assert_eq!(o.scenarios().len(), 1);
        assert_eq!(o.scenarios()[0].name, "intensive");
        assert!(parse(&["-n", "0"]).is_err());
    }

    #[test]
    fn custom_target() {
        let o = parse(&["--method", "get", "--path", "/"]).unwrap();
        let s = o.scenarios();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].name.as_str(), s[0].path.as_str()), ("custom", "/"));
        assert_eq!(s[0].method, Method::GET);
        assert!(parse(&["--path", "no-slash"]).is_err());
        let e = parse(&["--path", "/x", "--scenario", "fast"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn jobs_scenario() {
        let o = parse(&[
            "--scenario",
            "jobs",
            "--rounds",
            "1000",
            "--poll-interval",
            "20ms",
        ])
        .unwrap();
        assert!(o.runs_jobs());
        assert_eq!(o.validate(), Ok(()));
        let s = o.scenarios();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (
                s[0].name.as_str(),
                s[0].path.as_str(),
                s[0].requests,
                s[0].jobs
            ),
            ("jobs", "/api/v2/jobs", 1000, true)
        );
        assert_eq!(s[0].method, Method::POST);
        assert_eq!(o.rounds, Some(1000));
        assert_eq!(o.poll_interval, Duration::from_millis(20));
        let o = parse(&["-s", "jobs", "-n", "200"]).unwrap();
        assert_eq!(o.scenarios()[0].requests, 200);
        assert_eq!(o.rounds, None, "the server's default");
        assert_eq!(o.poll_interval, Duration::from_millis(50));
        assert!(parse(&["-s", "jobs", "--rounds", "0"]).is_err());
        assert!(parse(&["-s", "jobs", "--poll-interval", "0s"]).is_err());
        assert!(parse(&["--rounds", "10"]).unwrap().validate().is_err());
        assert!(parse(&["-s", "jobs", "--body", "{}"])
            .unwrap()
            .validate()
            .is_err());
        assert!(parse(&["-s", "jobs", "-m", "PUT"])
            .unwrap()
            .validate()
            .is_err());
        assert!(parse(&["-s", "fast"]).unwrap().validate().is_ok());
        assert!(parse(&[]).unwrap().scenarios().iter().all(|s| !s.jobs));
    }

    #[test]
    fn number_range_is_checked_and_excludes_a_body() {
        assert_eq!(
            parse(&["--number-range", "1-2"]).unwrap().number_range,
            NumberRange { lo: 1, hi: 2 }
        );
        assert!(parse(&["--number-range", "0..=1000001"]).is_err());
        let e = parse(&["--body", "{}", "--number-range", "1-2"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn open_loop_and_thresholds() {
        let o = parse(&[
            "--rate",
            "200",
            "--fail-under-success-rate",
            "99.5",
            "--fail-over-p99",
            "50",
        ])
        .unwrap();
        assert_eq!(o.rate, Some(200.0));
        assert_eq!(o.fail_under_success_rate, Some(99.5));
        assert_eq!(o.fail_over_p99, Some(50.0));
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "-3"]).is_err());
        assert!(parse(&["--fail-under-success-rate", "101"]).is_err());
        assert!(parse(&["-c", "0"]).is_err());
    }

    #[test]
    fn output_options() {
        let o = parse(&[
            "-o",
            "json",
            "--output-file",
            "/tmp/r.json",
            "--quiet",
            "-t",
            "1",
        ])
        .unwrap();
        assert_eq!(o.output, OutputFormat::Json);
        assert_eq!(o.output_file, Some(PathBuf::from("/tmp/r.json")));
        assert!(o.quiet);
        assert_eq!(o.threads, Some(1));
        assert!(parse(&["-o", "xml"]).is_err());
        assert_eq!(parse(&["-o", "html"]).unwrap().output, OutputFormat::Html);
    }

    #[test]
    fn live_metrics_options() {
        let o = parse(&[
            "--out",
            "prometheus-rw=http://127.0.0.1:9090/api/v1/write",
            "--out",
            "otlp=http://127.0.0.1:4318/v1/metrics",
            "--out-interval",
            "250ms",
        ])
        .unwrap();
        let kinds: Vec<_> = o.outputs.iter().map(|o| o.kind.name()).collect();
        assert_eq!(kinds, ["prometheus-rw", "otlp"]);
        assert_eq!(o.out_interval, Duration::from_millis(250));
        assert_eq!(parse(&[]).unwrap().out_interval, Duration::from_secs(1));
        assert!(parse(&["--out-interval", "50ms"]).is_err());
        assert!(parse(&["--out", "influxdb=http://h/write"]).is_err());
    }

    #[test]
    fn exit_statuses_are_the_documented_ones() {
        let all = [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::Threshold,
            Exit::Mismatch,
            Exit::Interrupted,
        ];
        assert_eq!(all.map(Exit::code), [0, 1, 2, 3, 4, 130]);
        for exit in all {
            let line = format!("\n  {:<5}", exit.code());
            assert!(EXIT_CODES_HELP.contains(&line), "--help lacks {exit:?}");
        }
    }

    #[test]
    fn a_finished_run_ends_with_its_worst_outcome() {
        let run = |thresholds_passed, counts_consistent, jobs_verified, interrupted| RunReport {
            scenarios: Vec::new(),
            sweeps: Vec::new(),
            live_metrics: Vec::new(),
            thresholds_passed,
            counts_consistent,
            jobs_verified,
            interrupted,
        };
        let (plain, strict) = (parse(&[]).unwrap(), parse(&["--fail-on-mismatch"]).unwrap());
        assert_eq!(
            exit_status(&run(true, true, true, false), &strict),
            Exit::Ok
        );
        assert_eq!(
            exit_status(&run(true, false, true, false), &plain),
            Exit::Ok
        );
        assert_eq!(
            exit_status(&run(true, false, true, false), &strict),
            Exit::Mismatch
        );
        assert_eq!(
            exit_status(&run(false, false, true, false), &strict),
            Exit::Threshold
        );
        assert_eq!(
            exit_status(&run(false, true, false, false), &plain),
            Exit::Mismatch
        );
        assert_eq!(
            exit_status(&run(false, false, false, true), &strict),
            Exit::Interrupted
        );
    }

    #[test]
    fn the_run_options_follow_the_flags() {
        let o = parse(&[]).unwrap().run_options().unwrap();
        assert_eq!(o.urls, ["http://localhost:8080"]);
        assert_eq!(o.scenarios, parse(&[]).unwrap().scenarios());
        assert!(o.check_health && o.read_server_metrics && !o.grpc);
        assert!(o.sweep.is_none() && o.rate.is_none());
        assert_eq!((o.min_success_rate, o.max_p99_ms), (None, None));
        let o = parse(&[
            "--no-health-check",
            "--no-server-metrics",
            "--fail-under-success-rate",
            "99",
            "--fail-over-p99",
            "20",
            "-H",
            "X-API-Key: k",
        ])
        .unwrap()
        .run_options()
        .unwrap();
        assert!(!o.check_health && !o.read_server_metrics);
        assert_eq!((o.min_success_rate, o.max_p99_ms), (Some(99.0), Some(20.0)));
        assert_eq!(o.headers.len(), 1);
        let o = parse(&["--sweep", "auto", "-d", "7s"])
            .unwrap()
            .run_options()
            .unwrap();
        let sweep = o.sweep.unwrap();
        assert_eq!(sweep.spec, SweepSpec::Auto);
        assert_eq!(sweep.step_duration, Duration::from_secs(7));
        assert_eq!(sweep.step_requests, u64::MAX, "steps last their duration");
        assert_eq!(
            (sweep.limits.max_p99_ms, sweep.limits.max_error_rate),
            (100.0, 1.0)
        );
        let o = parse(&["--sweep", "auto", "--sweep-step-duration", "2s", "-n", "50"])
            .unwrap()
            .run_options()
            .unwrap();
        let sweep = o.sweep.unwrap();
        assert_eq!(
            (sweep.step_duration, sweep.step_requests),
            (Duration::from_secs(2), 50)
        );
        assert!(parse(&["--rounds", "10"]).unwrap().run_options().is_err());
    }

    #[test]
    fn sweep_options() {
        let o = parse(&[
            "--sweep",
            "1000..20000:1000",
            "--sweep-step-duration",
            "5s",
            "--sweep-max-p99",
            "25",
            "--sweep-max-errors",
            "0.5",
        ])
        .unwrap();
        assert_eq!(
            o.sweep,
            Some(SweepSpec::Range {
                start: 1000.0,
                end: 20000.0,
                step: 1000.0
            })
        );
        assert_eq!(o.sweep_step_duration, Some(Duration::from_secs(5)));
        assert_eq!((o.sweep_max_p99, o.sweep_max_errors), (25.0, 0.5));
        assert!(o.validate().is_ok());
        let o = parse(&["--sweep", "auto"]).unwrap();
        assert_eq!(o.sweep, Some(SweepSpec::Auto));
        assert_eq!((o.sweep_max_p99, o.sweep_max_errors), (100.0, 1.0));
        for conflict in [
            &["--sweep", "auto", "--rate", "10"][..],
            &["--sweep", "auto", "--fail-over-p99", "10"],
            &["--sweep", "auto", "--fail-under-success-rate", "99"],
            &["--sweep", "auto", "--compare", "a=b.json"],
        ] {
            let e = parse(conflict).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{conflict:?}");
        }
        assert!(parse(&["--sweep", "10..1"]).is_err());
        assert!(parse(&["--sweep-max-p99", "0"]).is_err());
        assert!(parse(&["--sweep", "auto", "-s", "jobs"])
            .unwrap()
            .validate()
            .is_err());
        assert!(parse(&["--sweep-step-duration", "1s"])
            .unwrap()
            .validate()
            .is_err());
        assert_eq!(parse(&["--sweep", "auto"]).unwrap().sweep_retries, 0);
        let o = parse(&["--sweep", "auto", "--sweep-retries", "2"]).unwrap();
        assert!(o.validate().is_ok());
        assert_eq!(o.run_options().unwrap().sweep.unwrap().limits.retries, 2);
        assert!(parse(&["--sweep", "auto", "--sweep-retries", "6"]).is_err());
        assert!(parse(&["--sweep-retries", "1"])
            .unwrap()
            .validate()
            .is_err());
        let o = parse(&[
            "--compare",
            "fg=a.json",
            "--compare",
            "axum=b.json,x=c.json",
        ])
        .unwrap();
        assert_eq!(o.compare.len(), 3);
        assert_eq!(o.compare[1], ("axum".into(), PathBuf::from("b.json")));
    }
}
