//! Running the scenarios: the health check, then each scenario in turn: its
//! warmup, then its measured phase or its sweep's steps, each measured phase
//! between two reads of the servers' `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::client::{self, BodySpec, Protocol, RequestTemplate, Target};
use crate::net::{Endpoint, TlsSession, TlsTarget};
use crate::options::{RunOptions, Scenario, SweepOptions};
use crate::output::{Outputs, PhaseLabels};
use crate::progress::{note, Mode, Progress};
use crate::report::{
    self, RunReport, ScenarioReport, ServerMetrics, TargetMetrics, TransportReport,
};
use crate::run::{self, JobPlan, LoadModel, PhasePlan, PhaseTarget, StopReason};
use crate::schedule;
use crate::server::{self, ClientCounts, MetricsSource};
use crate::stages::{Profile, StageKind};
use crate::steal::{self, CpuTimes};
use crate::sweep::{self, Next, SweepEnd, SweepReport, SweepStep};
use crate::tls::{self, TlsClient};

/// Why a run could not produce a report.
#[derive(Debug)]
pub enum Error {
    /// Invalid arguments (exit status 2).
    Usage(String),
    /// Server unhealthy or unreachable, I/O failures (exit status 1).
    Runtime(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// How long to wait for the server's counters to settle after a phase.
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the health check and every scenario of `opts`. Progress goes to
/// stderr according to `mode`; `interrupt` turning true stops the run and
/// returns the report of what ran.
pub async fn run(
    opts: &RunOptions,
    mode: Mode,
    interrupt: watch::Receiver<bool>,
) -> Result<RunReport, Error> {
    let control_timeout = opts.timeout.min(Duration::from_secs(10));
    let (targets, addrs) = resolve_targets(opts, control_timeout).await?;
    let servers = connect_tls(opts, &targets, &addrs, control_timeout, mode).await?;
    let outputs = if opts.outputs.is_empty() {
        None
    } else {
        let outputs =
            Outputs::connect(&opts.outputs, opts.out_interval, &opts.tls, control_timeout)
                .await
                .map_err(|e| Error::Runtime(format!("live metrics: cannot push to {e}")))?;
        for o in &opts.outputs {
            note(mode, &format!("Live metrics: {} {}", o.kind.name(), o.url));
        }
        Some(outputs)
    };
    if opts.check_health {
        check_health(&targets, &servers, control_timeout, mode).await?;
    }
    let metrics: Vec<MetricsSource> = targets
        .iter()
        .zip(&servers)
        .map(|(target, server)| MetricsSource {
            base: target.base.clone(),
            endpoint: server.control.clone(),
            host: target.host_header(),
            path: target.path("/metrics"),
        })
        .collect();
    let ctx = Ctx {
        opts,
        mode,
        targets: &targets,
        servers: &servers,
        metrics: &metrics,
        outputs: outputs.as_ref(),
        control_timeout,
        threads: current_threads(),
        interrupt,
    };
    let mut reports = Vec::new();
    let mut sweeps = Vec::new();
    let mut interrupted = false;
    for scenario in &opts.scenarios {
        let ran = run_scenario(&ctx, scenario).await?;
        reports.extend(ran.reports);
        sweeps.extend(ran.sweep);
        if ran.interrupted {
            interrupted = true;
            break;
        }
        if ran.aborted {
            // A threshold stopped the run: the scenarios after it do not run.
            break;
        }
    }
    let live_metrics = outputs.as_ref().map_or_else(Vec::new, Outputs::report);
    Ok(RunReport::new(reports, interrupted)
        .with_sweeps(sweeps)
        .with_live_metrics(live_metrics))
}

/// The servers of `opts.urls` and their addresses, in the order given; a
/// usage error for a bad URL, fewer connections than servers or a server
/// given twice, a runtime error for one that cannot be resolved.
async fn resolve_targets(
    opts: &RunOptions,
    control_timeout: Duration,
) -> Result<(Vec<Target>, Vec<SocketAddr>), Error> {
    let targets = client::parse_targets(&opts.urls).map_err(Error::Usage)?;
    if (opts.concurrency as usize) < targets.len() {
        return Err(Error::Usage(format!(
            "--concurrency {} is less than the {} targets: each target needs a connection",
            opts.concurrency,
            targets.len()
        )));
    }
    let mut addrs = Vec::with_capacity(targets.len());
    for target in &targets {
        let addr = client::resolve(&target.host, target.port, control_timeout)
            .await
            .map_err(|e| {
                Error::Runtime(format!("server at {} is not reachable: {e}", target.base))
            })?;
        // Two names for one server would have its counters summed twice.
        if let Some(same) = targets
            .iter()
            .zip(&addrs)
            .find(|(t, a)| **a == addr && t.prefix == target.prefix)
        {
            return Err(Error::Usage(format!(
                "`{}` and `{}` are the same server ({addr}); give each server once",
                same.0.base, target.base
            )));
        }
        addrs.push(addr);
    }
    Ok((targets, addrs))
}

/// How the client reaches one server: the endpoint of the control requests
/// (`/health`, `/metrics`: HTTP/1.1), that of the load (TLS offering the
/// HTTP version of the load by ALPN), and what its TLS handshake agreed on.
pub struct Server {
    pub control: Endpoint,
    pub load: Endpoint,
    pub session: Option<TlsSession>,
}

/// The TLS client of the run, when a target is `https://`.
fn tls_client(opts: &RunOptions, targets: &[Target]) -> Result<Option<TlsClient>, Error> {
    if !targets.iter().any(|t| t.tls) {
        return Ok(None);
    }
    TlsClient::new(&opts.tls).map(Some).map_err(Error::Usage)
}

/// Each server's endpoints; for an `https://` server, a TLS handshake made
/// before anything else is sent, so that a certificate the client does not
/// trust, or a server that does not agree to HTTP/2, stops the run with a
/// clear error before any load.
async fn connect_tls(
    opts: &RunOptions,
    targets: &[Target],
    addrs: &[SocketAddr],
    control_timeout: Duration,
    mode: Mode,
) -> Result<Vec<Server>, Error> {
    let tls = tls_client(opts, targets)?;
    if tls.as_ref().is_some_and(|t| t.insecure) {
        // Loud whatever the progress mode: the run trusts whoever answers.
        eprintln!(
            "floodgate-load: WARNING: --insecure: the servers' TLS certificates are not checked"
        );
    }
    let h2 = opts.grpc || opts.http2;
    let mut servers = Vec::with_capacity(targets.len());
    for (target, &addr) in targets.iter().zip(addrs) {
        let (control, load) = match &tls {
            None => (Endpoint::plain(addr), Endpoint::plain(addr)),
            Some(tls) => {
                let name = tls::server_name(&target.host).map_err(Error::Usage)?;
                let endpoint = |http2: bool| Endpoint {
                    addr,
                    tls: Some(TlsTarget {
                        connector: tls.connector(http2),
                        name: name.clone(),
                    }),
                };
                (endpoint(false), endpoint(h2))
            }
        };
        let session = if target.tls {
            let session = client::tls_session(&load, control_timeout)
                .await
                .map_err(|e| {
                    Error::Runtime(format!("TLS handshake with {} failed: {e}", target.base))
                })?;
            if let Some(session) = &session {
                if h2 && session.alpn.as_deref() != Some("h2") {
                    return Err(Error::Runtime(format!(
                        "{} did not agree to HTTP/2 by ALPN (it chose {}); leave --http2 out to load it over HTTP/1.1",
                        target.base,
                        session.alpn.as_deref().unwrap_or("nothing")
                    )));
                }
                note(
                    mode,
                    &format!(
                        "TLS: {} {} {}{}",
                        target.base,
                        session.version,
                        session.cipher,
                        session
                            .alpn
                            .as_deref()
                            .map_or_else(String::new, |p| format!(", ALPN {p}"))
                    ),
                );
            }
            session
        } else {
            None
        };
        servers.push(Server {
            control,
            load,
            session,
        });
    }
    Ok(servers)
}

/// `GET /health` on every server, in order; the first that fails is the error.
async fn check_health(
    targets: &[Target],
    servers: &[Server],
    control_timeout: Duration,
    mode: Mode,
) -> Result<(), Error> {
    for (target, server) in targets.iter().zip(servers) {
        server::check_health(
            &server.control,
            &target.host_header(),
            &target.path("/health"),
            control_timeout,
        )
        .await
        .map_err(|e| Error::Runtime(format!("server at {} is not healthy: {e}", target.base)))?;
        note(
            mode,
            &format!("Health check passed: {}/health", target.base),
        );
    }
    Ok(())
}

/// What a run shares with each of its scenarios and measured phases.
struct Ctx<'a> {
    opts: &'a RunOptions,
    mode: Mode,
    /// The servers, and how to reach them, in the same order.
    targets: &'a [Target],
    servers: &'a [Server],
    metrics: &'a [MetricsSource],
    /// Where live metrics go, if anywhere.
    outputs: Option<&'a Outputs>,
    control_timeout: Duration,
    threads: usize,
    interrupt: watch::Receiver<bool>,
}

/// What one scenario gave.
struct ScenarioRun {
    /// Its measured phase's report, or its sweep steps' reports.
    reports: Vec<ScenarioReport>,
    sweep: Option<SweepReport>,
    /// Ctrl-C cut it short: no further scenario runs.
    interrupted: bool,
    /// A `:abort` threshold stopped it: no further scenario runs.
    aborted: bool,
}

/// One scenario: its warmup, then its measured phase or its sweep. The
/// connections the warmup opened carry the measured load.
async fn run_scenario(ctx: &Ctx<'_>, scenario: &Scenario) -> Result<ScenarioRun, Error> {
    let opts = ctx.opts;
    let jobs = scenario.jobs.then_some(JobPlan {
        numbers: opts.number_range,
        rounds: opts.rounds,
        poll_interval: opts.poll_interval,
    });
    let (targets, urls) = phase_targets(ctx, scenario)?;
    let measured = Measured {
        scenario,
        targets: &targets,
        urls: &urls,
    };
    let mut pools = Vec::new();
    if opts.warmup > 0 {
        let (stop, kept) = warm_up(ctx, &measured, jobs).await;
        if stop == StopReason::Interrupted {
            return Ok(ScenarioRun {
                reports: Vec::new(),
                sweep: None,
                interrupted: true,
                aborted: false,
            });
        }
        pools = kept;
    }

    let spread = if ctx.targets.len() > 1 {
        format!(" over {} targets", ctx.targets.len())
    } else {
        String::new()
    };
    if let Some(options) = &opts.sweep {
        let (sweep, steps, stop) = run_sweep(ctx, &measured, options, &spread, pools).await;
        return Ok(ScenarioRun {
            reports: steps,
            sweep: Some(sweep),
            interrupted: stop == StopReason::Interrupted,
            aborted: false,
        });
    }

    let model = match (&opts.stages, opts.rate) {
        (Some(profile), _) if profile.kind == StageKind::Rate => LoadModel::Open {
            rate: profile.peak(),
            concurrency: opts.concurrency,
        },
        (Some(profile), _) => LoadModel::Closed {
            concurrency: profile.peak() as u32,
        },
        (None, Some(rate)) => LoadModel::Open {
            rate,
            concurrency: opts.concurrency,
        },
        (None, None) => LoadModel::Closed {
            concurrency: opts.concurrency,
        },
    };
    let budget = match &opts.stages {
        Some(profile) => describe_profile(profile, scenario),
        None => describe_budget(opts, model, scenario),
    };
    note(
        ctx.mode,
        &format!(
            "Scenario {}: {} {} | {budget} | {}",
            scenario.name,
            scenario.method,
            urls.join(", "),
            describe_load(model, jobs.as_ref(), &spread)
        ),
    );
    let plan = PhasePlan {
        model,
        max_requests: scenario.requests,
        max_duration: opts
            .stages
            .as_ref()
            .map_or(opts.duration, |profile| profile.duration()),
        timeout: opts.timeout,
        threads: ctx.threads,
        record_window: ctx.mode != Mode::Off,
        streams: opts.streams,
        profile: opts.stages.clone(),
        record_out: ctx.outputs.is_some(),
        jobs,
    };
    let (report, stop, _pools) = measure(
        ctx,
        &measured,
        &plan,
        &scenario.name,
        (opts.min_success_rate, opts.max_p99_ms),
        pools,
    )
    .await;
    Ok(ScenarioRun {
        reports: vec![report],
        sweep: None,
        interrupted: stop == StopReason::Interrupted,
        aborted: stop == StopReason::Aborted,
    })
}

/// Where the requests of `scenario` go, with what, on each server; and the
/// URL each loads.
fn phase_targets(
    ctx: &Ctx<'_>,
    scenario: &Scenario,
) -> Result<(Vec<PhaseTarget>, Vec<String>), Error> {
    let opts = ctx.opts;
    let body = request_body(opts, scenario);
    let mut phase_targets = Vec::with_capacity(ctx.targets.len());
    let mut urls = Vec::with_capacity(ctx.targets.len());
    for (target, server) in ctx.targets.iter().zip(ctx.servers) {
        let path = target.path(&scenario.path);
        let uri: Uri = path
            .parse()
            .map_err(|e| Error::Usage(format!("invalid path {path}: {e}")))?;
        phase_targets.push(PhaseTarget {
            endpoint: server.load.clone(),
            template: RequestTemplate::new(
                protocol(opts),
                scenario.method.clone(),
                uri,
                target.host_header(),
                body.clone(),
                opts.headers.clone(),
            )
            .with_scheme(target.tls),
        });
        urls.push(target.url(&scenario.path));
    }
    Ok((phase_targets, urls))
}

/// What the load's connections speak.
fn protocol(opts: &RunOptions) -> Protocol {
    if opts.grpc {
        Protocol::Grpc
    } else if opts.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    }
}

/// How the load's connections are made, for the report.
fn transport(ctx: &Ctx<'_>) -> TransportReport {
    let opts = ctx.opts;
    let tls = ctx.servers.iter().find_map(|s| s.session.clone());
    TransportReport {
        protocol: match protocol(opts) {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Grpc => "gRPC",
        }
        .to_owned(),
        streams_per_connection: opts.streams.max(1),
        tls_verified: tls.as_ref().map(|_| !opts.tls.insecure),
        tls,
    }
}

/// The body of each request of `scenario`: `--body`, or a fresh number for
/// POST, PUT and PATCH, or none.
fn request_body(opts: &RunOptions, scenario: &Scenario) -> BodySpec {
    match (&opts.body, &scenario.method) {
        // Each job's body is made when it is submitted.
        _ if scenario.jobs => BodySpec::Empty,
        (Some(b), _) => BodySpec::Fixed(Bytes::from(b.clone())),
        (None, m) if *m == Method::POST || *m == Method::PUT || *m == Method::PATCH => {
            BodySpec::Number(opts.number_range)
        }
        (None, _) => BodySpec::Empty,
    }
}

/// The warmup of a scenario: `--warmup` requests (jobs), closed loop, not
/// counted. Returns how it stopped and the connections it leaves open.
async fn warm_up(
    ctx: &Ctx<'_>,
    m: &Measured<'_>,
    jobs: Option<JobPlan>,
) -> (StopReason, Vec<run::Pool>) {
    let opts = ctx.opts;
    note(
        ctx.mode,
        &format!(
            "Warmup {}: {} {} (not counted)",
            m.scenario.name,
            report::thousands(opts.warmup),
            m.scenario.unit()
        ),
    );
    let plan = PhasePlan {
        model: LoadModel::Closed {
            concurrency: opts
                .concurrency
                .min(opts.warmup.min(u64::from(u32::MAX)) as u32),
        },
        max_requests: opts.warmup,
        max_duration: opts.duration,
        timeout: opts.timeout,
        threads: ctx.threads,
        record_window: false,
        streams: opts.streams,
        profile: None,
        record_out: false,
        jobs,
    };
    let (warm, pools) =
        run::run_phase(m.targets, &plan, Vec::new(), |_| {}, ctx.interrupt.clone()).await;
    if warm.stop_reason != StopReason::Interrupted && warm.stats.failed() > 0 {
        note(
            ctx.mode,
            &format!(
                "Warmup {}: {} of {} requests failed",
                m.scenario.name,
                report::thousands(warm.stats.failed()),
                report::thousands(warm.stats.total())
            ),
        );
    }
    (warm.stop_reason, pools)
}

/// What a measured phase of `scenario` sends at most: `1,000 requests, at
/// most 5m`, or in open loop `1,000 requests scheduled over 5m`.
fn describe_budget(opts: &RunOptions, model: LoadModel, scenario: &Scenario) -> String {
    let unit = scenario.unit();
    match model {
        LoadModel::Closed { .. } => format!(
            "{} {unit}, at most {}",
            report::thousands(scenario.requests),
            humantime::format_duration(opts.duration)
        ),
        LoadModel::Open { rate, .. } => format!(
            "{} {unit} scheduled over {}",
            report::thousands(schedule::planned_requests(
                rate,
                opts.duration,
                scenario.requests
            )),
            humantime::format_duration(opts.duration)
        ),
    }
}

/// A staged phase's plan: `3 stages over 15s, up to 1,000 req/s (2,500
/// requests … )`.
fn describe_profile(profile: &Profile, scenario: &Scenario) -> String {
    let stages: Vec<String> = profile
        .stages
        .iter()
        .map(|s| {
            format!(
                "{} {}→{} {}",
                humantime::format_duration(s.duration),
                s.name,
                report::fmt_target(s.target),
                profile.kind.unit()
            )
        })
        .collect();
    let cap = if scenario.requests == u64::MAX {
        String::new()
    } else {
        format!(
            ", at most {} {}",
            report::thousands(scenario.requests),
            scenario.unit()
        )
    };
    format!(
        "{} stages over {}{cap}: {}",
        profile.stages.len(),
        humantime::format_duration(profile.duration()),
        stages.join(", ")
    )
}

/// How the load is paced: `closed loop, 500 connections over 2 targets`, and
/// how jobs are followed in the jobs scenario.
fn describe_load(model: LoadModel, jobs: Option<&JobPlan>, spread: &str) -> String {
    match (model, jobs) {
        (LoadModel::Closed { concurrency }, None) => {
            format!("closed loop, {concurrency} connections{spread}")
        }
        (LoadModel::Open { rate, concurrency }, None) => {
            format!("open loop, {rate} req/s, at most {concurrency} in flight{spread}")
        }
        (LoadModel::Closed { concurrency }, Some(plan)) => format!(
            "closed loop, {concurrency} connections{spread}, each following one job at a time | {}",
            describe_jobs(plan)
        ),
        (LoadModel::Open { rate, concurrency }, Some(plan)) => format!(
            "open loop, {rate} jobs/s, at most {concurrency} followed at once{spread} | {}",
            describe_jobs(plan)
        ),
    }
}

/// The scenario being measured and where its requests go.
struct Measured<'a> {
    scenario: &'a Scenario,
    targets: &'a [PhaseTarget],
    urls: &'a [String],
}

/// One measured phase: the server's counters before, the load, the counters
/// after (and their check), and the phase's report; also returns how the
/// phase stopped and the connections to keep.
async fn measure(
    ctx: &Ctx<'_>,
    m: &Measured<'_>,
    plan: &PhasePlan,
    label: &str,
    thresholds: (Option<f64>, Option<f64>),
    pools: Vec<run::Pool>,
) -> (ScenarioReport, StopReason, Vec<run::Pool>) {
    let opts = ctx.opts;
    let before = if opts.read_server_metrics {
        Some(server::snapshot_all(ctx.metrics, ctx.control_timeout).await)
    } else {
        None
    };
    let mut progress = Progress::none();
    let watch = AbortWatch::new(ctx);
    let mut watcher = None;
    let mut pusher = None;
    let (mut result, pools) = run::run_phase(
        m.targets,
        plan,
        pools,
        |live| {
            watcher = watch.start(&live);
            pusher = ctx.outputs.map(|o| {
                o.start(
                    live.clone(),
                    PhaseLabels {
                        scenario: m.scenario.name.clone(),
                        targets: ctx.targets.iter().map(|t| t.base.clone()).collect(),
                        model: plan.model,
                    },
                )
            });
            progress = Progress::start(ctx.mode, live, opts.report_interval, label);
        },
        watch.stop.clone(),
    )
    .await;
    progress.finish();
    if let Some(pusher) = pusher {
        pusher.finish().await;
    }
    let aborted = watch.finish(watcher);
    if let Some((expression, at)) = &aborted {
        result.stop_reason = StopReason::Aborted;
        note(
            ctx.mode,
            &format!("Threshold {expression} failed {at:.1} s into the phase: the run stopped"),
        );
    }

    let server_metrics = match before {
        None => ServerMetrics::skipped(),
        Some(Err(reason)) => ServerMetrics::unavailable(reason),
        Some(Ok(before)) => {
            let client = ClientCounts::from_stats(&result.stats, result.cancelled);
            let settle = if client.abandoned > 0 {
                SETTLE.max(opts.timeout.min(Duration::from_secs(10)))
            } else {
                SETTLE
            };
            match server::settled_snapshot(
                ctx.metrics,
                ctx.control_timeout,
                &before,
                client,
                settle,
            )
            .await
            {
                Ok((after, check)) => checked_metrics(ctx.metrics, &result, before, after, check),
                Err(reason) => ServerMetrics::unavailable(format!("after the run: {reason}")),
            }
        }
    };
    let report = ScenarioReport::new(
        &m.scenario.name,
        m.scenario.method.as_str(),
        m.urls,
        plan.model,
        &result,
        server_metrics,
        thresholds,
    )
    .with_transport(transport(ctx))
    .with_thresholds(&opts.thresholds, aborted.as_ref());
    let report = match &plan.profile {
        Some(profile) => report.with_stages(profile, &result),
        None => report,
    };
    (report, result.stop_reason, pools)
}

/// The `:abort` thresholds of a measured phase, checked every
/// [`ABORT_CHECK`] while it runs: the first that fails stops the phase
/// (through the phase's own stop signal, which Ctrl-C also sets).
struct AbortWatch {
    thresholds: Vec<crate::thresholds::Threshold>,
    /// The phase's stop signal.
    stop: watch::Receiver<bool>,
    sender: Option<std::sync::Arc<watch::Sender<bool>>>,
    /// Passes Ctrl-C on to the stop signal.
    forward: Option<tokio::task::JoinHandle<()>>,
    /// The threshold that failed, and when (seconds into the phase).
    fired: std::sync::Arc<std::sync::Mutex<Option<(String, f64)>>>,
}

/// How often the `:abort` thresholds are checked.
const ABORT_CHECK: Duration = Duration::from_millis(200);

impl AbortWatch {
    fn new(ctx: &Ctx<'_>) -> AbortWatch {
        let thresholds: Vec<_> = ctx
            .opts
            .thresholds
            .iter()
            .filter(|t| t.abort)
            .cloned()
            .collect();
        let fired = std::sync::Arc::default();
        if thresholds.is_empty() {
            return AbortWatch {
                thresholds,
                stop: ctx.interrupt.clone(),
                sender: None,
                forward: None,
                fired,
            };
        }
        let (tx, rx) = watch::channel(false);
        let tx = std::sync::Arc::new(tx);
        let mut interrupt = ctx.interrupt.clone();
        let forwarded = tx.clone();
        let forward = tokio::spawn(async move {
            run::wait_for_interrupt(&mut interrupt).await;
            let _ = forwarded.send(true);
        });
        AbortWatch {
            thresholds,
            stop: rx,
            sender: Some(tx),
            forward: Some(forward),
            fired,
        }
    }

    /// Starts checking the phase whose live figures are `live`.
    fn start(&self, live: &std::sync::Arc<run::Live>) -> Option<tokio::task::JoinHandle<()>> {
        let sender = self.sender.clone()?;
        let (live, thresholds, fired) = (live.clone(), self.thresholds.clone(), self.fired.clone());
        let latency = thresholds
            .iter()
            .any(crate::thresholds::Threshold::needs_latency);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(ABORT_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let secs = live.started_at.elapsed().as_secs_f64();
                let figures = live.figures(latency);
                if let Some(t) = thresholds
                    .iter()
                    .find(|t| t.lost_while_running(&figures, secs))
                {
                    *fired.lock().expect("abort lock") = Some((t.expression.clone(), secs));
                    let _ = sender.send(true);
                    return;
                }
            }
        }))
    }

    /// Stops checking; the threshold that stopped the phase, if one did.
    fn finish(&self, watcher: Option<tokio::task::JoinHandle<()>>) -> Option<(String, f64)> {
        if let Some(w) = watcher {
            w.abort();
        }
        if let Some(f) = &self.forward {
            f.abort();
        }
        self.fired.lock().expect("abort lock").clone()
    }
}

/// A scenario's sweep (see [`sweep`]): open-loop steps, each a measured
/// phase with its own `/metrics` check, on the connections the warmup (and
/// each step) left open. Returns the sweep, the steps' reports and how the
/// last step stopped.
async fn run_sweep(
    ctx: &Ctx<'_>,
    m: &Measured<'_>,
    options: &SweepOptions,
    spread: &str,
    mut pools: Vec<run::Pool>,
) -> (SweepReport, Vec<ScenarioReport>, StopReason) {
    let opts = ctx.opts;
    let SweepOptions {
        spec,
        step_duration,
        step_requests: max_requests,
        limits,
    } = *options;
    note(
        ctx.mode,
        &format!(
            "Sweep {}: {} {} | rates {spec}, {} per step, at most {} in flight{spread} | limits: p99 <= {} ms, errors <= {} %{}{}",
            m.scenario.name,
            m.scenario.method,
            m.urls.join(", "),
            humantime::format_duration(step_duration),
            opts.concurrency,
            limits.max_p99_ms,
            limits.max_error_rate,
            sweep::describe_retries(limits.retries),
            sweep::describe_steal(limits.max_steal_pct),
        ),
    );
    let mut course = sweep::Course::default();
    let mut steps = Vec::new();
    let mut reports = Vec::new();
    let mut stop = StopReason::Duration;
    let stopped = loop {
        let rate = match course.next(&spec, limits.retries) {
            Next::Run(rate) => rate,
            Next::Done(end) => break end,
        };
        let n = steps.len() + 1;
        let plan = PhasePlan {
            model: LoadModel::Open {
                rate,
                concurrency: opts.concurrency,
            },
            max_requests,
            max_duration: step_duration,
            timeout: opts.timeout,
            threads: ctx.threads,
            record_window: ctx.mode != Mode::Off,
            streams: opts.streams,
            profile: None,
            record_out: ctx.outputs.is_some(),
            jobs: None,
        };
        let label = format!("{} {}/s", m.scenario.name, report::fmt_rate(rate));
        let (mut report, step_stop, kept) =
            measure(ctx, m, &plan, &label, (None, None), pools).await;
        pools = kept;
        stop = step_stop;
        report.sweep_step = Some(n);
        let interrupted = step_stop == StopReason::Interrupted;
        let mut step = SweepStep::new(n, rate, report.step_figures(), &limits, interrupted);
        let unjudged = !course.record(&mut step, &limits, interrupted);
        note(ctx.mode, &describe_step(&m.scenario.name, &step));
        steps.push(step);
        reports.push(report);
        if interrupted {
            break SweepEnd::Interrupted;
        }
        if unjudged && !wait_for_calm(ctx, limits.max_steal_pct).await {
            stop = StopReason::Interrupted;
            break SweepEnd::Interrupted;
        }
    };
    let sweep = SweepReport::new(
        &m.scenario.name,
        m.scenario.method.as_str(),
        m.urls,
        &spec,
        step_duration,
        opts.concurrency,
        limits,
        steps,
        stopped,
    );
    note(ctx.mode, &describe_sweep_end(&sweep));
    (sweep, reports, stop)
}

/// Waits for a second in which at most `max_steal_pct` of the CPU time was
/// stolen, [`sweep::CALM_WAIT`] at most; false when Ctrl-C came first.
async fn wait_for_calm(ctx: &Ctx<'_>, max_steal_pct: f64) -> bool {
    note(
        ctx.mode,
        &format!(
            "Sweep: waiting for a second with at most {max_steal_pct} % of the CPU time stolen (at most {})",
            humantime::format_duration(sweep::CALM_WAIT)
        ),
    );
    let mut interrupt = ctx.interrupt.clone();
    steal::wait_for_calm(
        CpuTimes::now,
        max_steal_pct,
        sweep::CALM_WAIT,
        &mut interrupt,
    )
    .await
}

/// A step as it finishes: `Sweep fast step 3: 4,000.0 req/s offered,
/// 3,998.2 achieved, p99 3.1ms, errors 0.000 % | within the limits`.
fn describe_step(scenario: &str, step: &SweepStep) -> String {
    format!(
        "Sweep {scenario} step {}: {} req/s offered, {} achieved, p99 {}, errors {:.3} % | {}",
        step.step,
        report::fmt_rate(step.offered_rate),
        report::fmt_rate(step.achieved_rate),
        step.p99_ms
            .map_or_else(|| "-".to_owned(), report::fmt_latency_short),
        step.error_rate,
        step.reason.as_deref().unwrap_or("within the limits")
    )
}

/// The sweep's knee (or that no step met the limits), and why it ended.
fn describe_sweep_end(sweep: &SweepReport) -> String {
    match &sweep.knee {
        Some(knee) => format!(
            "Sweep {}: knee at {} req/s offered ({} achieved, p99 {}); {}",
            sweep.scenario,
            report::fmt_rate(knee.offered_rate),
            report::fmt_rate(knee.achieved_rate),
            knee.p99_ms
                .map_or_else(|| "-".to_owned(), report::fmt_latency_short),
            sweep.stopped.describe()
        ),
        None => format!(
            "Sweep {}: no step met the limits; {}",
            sweep.scenario,
            sweep.stopped.describe()
        ),
    }
}

/// `rounds 1000, polled every 50ms`.
fn describe_jobs(plan: &JobPlan) -> String {
    let rounds = plan
        .rounds
        .map_or_else(|| "the server's default".to_owned(), report::thousands);
    format!(
        "rounds {rounds}, polled every {}",
        humantime::format_duration(plan.poll_interval)
    )
}

/// The `/metrics` part of a scenario report: with one target its snapshots as
/// served, with several the sums of the compared counters; each target's
/// snapshots and its own check against what the client got from it.
fn checked_metrics(
    sources: &[MetricsSource],
    result: &run::PhaseResult,
    before: Vec<Map<String, Value>>,
    after: Vec<Map<String, Value>>,
    check: server::CountCheck,
) -> ServerMetrics {
    let per_target = sources
        .iter()
        .zip(before.iter().zip(&after))
        .zip(&result.targets)
        .map(|((source, (b, a)), t)| TargetMetrics {
            url: source.base.clone(),
            before: b.clone(),
            after: a.clone(),
            check: server::compare(b, a, ClientCounts::from_stats(&t.stats, t.cancelled)),
        })
        .collect();
    let (before, after) = match (&before[..], &after[..]) {
        ([before], [after]) => (before.clone(), after.clone()),
        _ => (server::sum_counters(&before), server::sum_counters(&after)),
    };
    ServerMetrics::checked(before, after, check).with_targets(per_target)
}

fn current_threads() -> usize {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => 1,
        _ => tokio::runtime::Handle::current().metrics().num_workers(),
    }
}
