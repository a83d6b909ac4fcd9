//! Reports: one per scenario, as text or JSON (the HTML report, made from
//! the same values, is rendered by the `html` module, which builds on this one).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::jobs::{JobStats, Mismatch};
use crate::net::TlsSession;
use crate::run::{JobPlan, LoadModel, PhaseResult, StopReason};
use crate::server::CountCheck;
use crate::stats::{rate_per_second, LatencySummary, PercentilePoint, Stats};
use crate::sweep::{StepFigures, SweepReport};
use crate::timeline::TimelineReport;

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Every measured phase: one per scenario, or one per step of a sweep.
    pub scenarios: Vec<ScenarioReport>,
    /// With `--sweep`: each scenario's sweep (its steps are in `scenarios`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sweeps: Vec<SweepReport>,
    /// With `--out`: how the pushes of live metrics went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live_metrics: Vec<crate::output::OutputReport>,
    /// `true` when every threshold held in every scenario.
    pub thresholds_passed: bool,
    /// `true` when every server count check that ran matched.
    pub counts_consistent: bool,
    /// `true` unless a succeeded job's digest or result was wrong (also when
    /// no jobs ran).
    pub jobs_verified: bool,
    pub interrupted: bool,
}

/// The report of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    /// With `--sweep`: the step of the scenario's sweep this phase was (1, 2, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep_step: Option<usize>,
    pub method: String,
    /// The URL loaded, when there is one target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL loaded on each target, in the order given.
    pub urls: Vec<String>,
    pub load_model: LoadModel,
    pub stop_reason: StopReason,
    /// When the measured phase started, by the wall clock (milliseconds
    /// since 1970): where the timeline starts on the servers' own graphs.
    pub started_at_unix_ms: u64,
    /// With a staged profile (`--stage`): each stage, its targets and what
    /// was sent in it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageReport>,
    pub requests: RequestCounts,
    pub duration_secs: f64,
    pub rps: f64,
    /// Over all HTTP responses (any status); `null` when there were none.
    pub latency_ms: Option<LatencySummary>,
    /// Over the 2xx responses alone (what a served request took); `null` without any.
    pub success_latency_ms: Option<LatencySummary>,
    /// Over the refusals alone (429 and 503: how fast the server said no); `null` without
    /// any.
    pub refused_latency_ms: Option<LatencySummary>,
    /// The latency at many percentiles (0 to 99.9999, up to the first that
    /// reaches the maximum), for an HDR percentile plot; empty without responses.
    pub percentiles: Vec<PercentilePoint>,
    /// Requests completed and their latency percentiles, second by second.
    pub timeline: TimelineReport,
    pub status_codes: BTreeMap<String, u64>,
    pub error_codes: BTreeMap<String, u64>,
    pub server_metrics: ServerMetrics,
    pub thresholds: Vec<ThresholdResult>,
    /// What each target got, in the order of `urls`.
    pub targets: Vec<TargetReport>,
    /// How the load's connections were made: HTTP version, TLS, streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportReport>,
    /// The connections the phase used and how long opening them took, apart
    /// from request latency.
    pub connections: ConnectionsReport,
    /// The jobs scenario only: what became of the jobs. The other fields
    /// count HTTP requests, submissions and polls alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsReport>,
    /// The share of the machine's CPU time its host stole during the phase
    /// (a virtual machine's steal time), percent; `null` where the kernel
    /// does not say. Client and server both pause while it is taken.
    pub stolen_pct: Option<f64>,
}

/// One stage of a staged profile: its targets and the requests sent in it
/// (by the time each was due, in open loop, or sent, in closed loop).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageReport {
    /// 1, 2, … in order.
    pub stage: usize,
    pub name: String,
    /// Start, in seconds from the start of the phase, and length.
    pub start_secs: f64,
    pub duration_secs: f64,
    /// The target it ramps from and to.
    pub from: f64,
    pub to: f64,
    /// `req/s` (open loop) or `connections` (closed loop).
    pub unit: String,
    /// Open loop: the requests the profile scheduled in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<u64>,
    pub requests: u64,
    pub successful: u64,
    pub failed: u64,
    /// `requests` over the stage's length (the part of it the phase ran).
    pub rps: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl StageReport {
    /// The stages of `profile` and what `data` (one per stage) holds of
    /// each, for a phase that lasted `elapsed` seconds.
    pub fn of(
        profile: &crate::stages::Profile,
        data: &[crate::timeline::SlotData],
        elapsed: f64,
    ) -> Vec<StageReport> {
        let open = profile.kind == crate::stages::StageKind::Rate;
        profile
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let (start, from, to) = profile.span(i);
                let duration = stage.duration.as_secs_f64();
                let ran = (elapsed.min(start + duration) - start).max(0.0);
                let d = data.get(i);
                let requests = d.map_or(0, |d| d.requests());
                let successful = d.map_or(0, |d| d.successful());
                let due = |t: f64| (profile.due_by(t) - 1e-6).ceil().max(0.0) as u64;
                StageReport {
                    stage: i + 1,
                    name: stage.name.clone(),
                    start_secs: start,
                    duration_secs: duration,
                    from,
                    to,
                    unit: profile.kind.unit().to_owned(),
                    scheduled: open.then(|| due(start + duration) - due(start)),
                    requests,
                    successful,
                    failed: requests - successful,
                    rps: if ran > 0.0 {
                        requests as f64 / ran
                    } else {
                        0.0
                    },
                    p50_ms: d.and_then(|d| d.latency_ms(0.50)),
                    p90_ms: d.and_then(|d| d.latency_ms(0.90)),
                    p99_ms: d.and_then(|d| d.latency_ms(0.99)),
                    max_ms: d.and_then(|d| d.max_ms()),
                }
            })
            .collect()
    }
}

/// How the load's connections were made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransportReport {
    /// `HTTP/1.1`, `HTTP/2` or `gRPC` (over HTTP/2).
    pub protocol: String,
    /// Requests in flight on each connection at most.
    pub streams_per_connection: u32,
    /// The TLS session agreed with the (first) `https://` target; `null` over plain TCP.
    pub tls: Option<TlsSession>,
    /// `false` with `--insecure`: the server's certificate was not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verified: Option<bool>,
}

/// The connections a phase used: those it opened and those it took over
/// from its warmup (or the sweep step before), each counted once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionsReport {
    pub opened: u64,
    /// TCP connect plus TLS handshake; `null` when no connection was opened.
    pub setup_ms: Option<LatencySummary>,
    pub tcp_connect_ms: Option<LatencySummary>,
    /// `null` over plain TCP.
    pub tls_handshake_ms: Option<LatencySummary>,
}

impl ConnectionsReport {
    pub fn new(c: &crate::run::ConnectionStats) -> Self {
        ConnectionsReport {
            opened: c.opened,
            setup_ms: c.setup.summary(),
            tcp_connect_ms: c.tcp_connect.summary(),
            tls_handshake_ms: c.tls_handshake.summary(),
        }
    }
}

/// The jobs of a jobs scenario (or of one of its targets).
#[derive(Debug, Clone, Serialize)]
pub struct JobsReport {
    /// `rounds` submitted; `null` when the field was left out (the server's default).
    pub rounds: Option<u64>,
    pub poll_interval_ms: f64,
    /// Submissions answered with 2xx and a job.
    pub submitted: u64,
    /// Submissions that got no job (another status, no answer).
    pub submit_failed: u64,
    /// Jobs seen in a final status: `succeeded + failed + cancelled`.
    pub completed: u64,
    pub succeeded: u64,
    /// Succeeded with the right digest and result.
    pub verified: u64,
    /// Succeeded with a wrong digest or result (or another number or rounds
    /// than submitted).
    pub digest_mismatches: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// The server stopped knowing the job (404 or another 4xx on a poll).
    pub lost: u64,
    /// Still queued or running when the scenario ended.
    pub unfinished: u64,
    /// Completed jobs the server had taken up more than once.
    pub retried: u64,
    pub polls: u64,
    /// Polls that did not show the job (another status, no answer, not a job).
    pub poll_errors: u64,
    pub submitted_per_sec: f64,
    pub completed_per_sec: f64,
    /// From each submission's start (its scheduled time in open loop) to its
    /// 2xx answer.
    pub submit_latency_ms: Option<LatencySummary>,
    /// From the same start to the poll answer that showed the job completed.
    pub time_to_completion_ms: Option<LatencySummary>,
    /// `error` of failed jobs → count.
    pub errors: BTreeMap<String, u64>,
    /// The first wrong answers (at most 10).
    pub mismatches: Vec<Mismatch>,
}

impl JobsReport {
    pub fn new(j: &JobStats, plan: Option<&JobPlan>, elapsed: std::time::Duration) -> Self {
        JobsReport {
            rounds: plan.and_then(|p| p.rounds),
            poll_interval_ms: plan.map_or(0.0, |p| p.poll_interval.as_secs_f64() * 1e3),
            submitted: j.submitted,
            submit_failed: j.submit_failed,
            completed: j.completed(),
            succeeded: j.succeeded,
            verified: j.verified(),
            digest_mismatches: j.mismatched,
            failed: j.failed,
            cancelled: j.cancelled,
            lost: j.lost,
            unfinished: j.unfinished(),
            retried: j.retried,
            polls: j.polls,
            poll_errors: j.poll_errors,
            submitted_per_sec: rate_per_second(j.submitted, elapsed),
            completed_per_sec: rate_per_second(j.completed(), elapsed),
            submit_latency_ms: j.submit_latency.summary(),
            time_to_completion_ms: j.completion.summary(),
            errors: j.errors(),
            mismatches: j.mismatches.clone(),
        }
    }
}

/// One target's share of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub url: String,
    /// Connections assigned to this target.
    pub connections: u32,
    pub requests: TargetRequests,
    /// Over this target's HTTP responses; `null` when there were none.
    pub latency_ms: Option<LatencySummary>,
    pub status_codes: BTreeMap<String, u64>,
    /// The jobs scenario: this target's jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsReport>,
}

/// Request counts of one target (see [`RequestCounts`]).
#[derive(Debug, Clone, Serialize)]
pub struct TargetRequests {
    pub total: u64,
    pub successful: u64,
    pub failed: u64,
    pub success_rate: f64,
    pub responses: u64,
    pub rate_limited: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    pub cancelled: u64,
}

/// Request counts of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RequestCounts {
    /// Requests that finished: responses + timeouts + connection errors.
    pub total: u64,
    /// 2xx responses.
    pub successful: u64,
    /// Everything else, transport errors included.
    pub failed: u64,
    /// `successful / total` in percent.
    pub success_rate: f64,
    /// HTTP responses of any status.
    pub responses: u64,
    /// 429 responses.
    pub rate_limited: u64,
    /// No response within `--timeout`.
    pub timeouts: u64,
    /// Connect failures plus connections that broke mid-request.
    pub connection_errors: u64,
    pub connect_failures: u64,
    pub broken_connections: u64,
    /// In flight when the run was interrupted; not in `total`.
    pub cancelled: u64,
    /// Open loop: due before the deadline but never sent (all connections busy); not in `total`.
    pub unsent: u64,
}

/// The server's `/metrics` before and after, and the count check.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMetrics {
    /// `match` (deltas equal the client's counts), `consistent` (differences
    /// explained by requests the client abandoned), `mismatch`,
    /// `unavailable` or `skipped`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CountCheck>,
    /// Each target's `/metrics` before and after, checked against what the
    /// client got from that target (for diagnosis; `status` and `check` come
    /// from the sums). Empty unless the counters were read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetMetrics>,
}

/// One target's part of the `/metrics` check.
#[derive(Debug, Clone, Serialize)]
pub struct TargetMetrics {
    /// The target's base URL.
    pub url: String,
    pub before: Map<String, Value>,
    pub after: Map<String, Value>,
    pub check: CountCheck,
}

impl ServerMetrics {
    pub fn skipped() -> Self {
        Self::without_check("skipped", None)
    }

    pub fn unavailable(reason: String) -> Self {
        Self::without_check("unavailable", Some(reason))
    }

    fn without_check(status: &str, reason: Option<String>) -> Self {
        Self {
            status: status.to_owned(),
            reason,
            before: None,
            after: None,
            check: None,
            targets: Vec::new(),
        }
    }

    pub fn checked(
        before: Map<String, Value>,
        after: Map<String, Value>,
        check: CountCheck,
    ) -> Self {
        let status = if check.exact {
            "match"
        } else if check.ok {
            "consistent"
        } else {
            "mismatch"
        };
        Self {
            status: status.to_owned(),
            reason: None,
            before: Some(before),
            after: Some(after),
            check: Some(check),
            targets: Vec::new(),
        }
    }

    /// Adds the per-target detail.
    pub fn with_targets(mut self, targets: Vec<TargetMetrics>) -> Self {
        self.targets = targets;
        self
    }

    pub fn is_mismatch(&self) -> bool {
        self.status == "mismatch"
    }
}

pub use crate::thresholds::ThresholdResult;

/// Evaluates the thresholds; a missing p99 (no responses) fails its threshold.
pub fn evaluate_thresholds(
    success_rate: f64,
    p99_ms: Option<f64>,
    min_success_rate: Option<f64>,
    max_p99_ms: Option<f64>,
) -> Vec<ThresholdResult> {
    let gate = |name: &str, limit: f64, actual: Option<f64>, passed: bool| ThresholdResult {
        name: name.into(),
        metric: None,
        op: None,
        unit: None,
        limit: Value::from(limit),
        actual: actual.map(Value::from),
        passed,
        abort: false,
        aborted_at_secs: None,
    };
    let mut out = Vec::new();
    if let Some(limit) = min_success_rate {
        out.push(gate(
            "success_rate",
            limit,
            Some(success_rate),
            success_rate >= limit,
        ));
    }
    if let Some(limit) = max_p99_ms {
        out.push(gate(
            "p99_ms",
            limit,
            p99_ms,
            p99_ms.is_some_and(|p| p <= limit),
        ));
    }
    out
}

/// The share of the CPU time stolen (percent) from which a scenario's text
/// report has a line for it.
const NOTABLE_STEAL_PCT: f64 = 1.0;

impl ScenarioReport {
    /// Builds the report of a measured phase; `urls` are the targets' URLs,
    /// in the order of `result.targets`.
    pub fn new(
        name: &str,
        method: &str,
        urls: &[String],
        model: LoadModel,
        result: &PhaseResult,
        server_metrics: ServerMetrics,
        thresholds: (Option<f64>, Option<f64>),
    ) -> Self {
        let s = &result.stats;
        let latency = s.latency();
        let requests = RequestCounts {
            total: s.total(),
            successful: s.successful(),
            failed: s.failed(),
            success_rate: s.success_rate(),
            responses: s.responses(),
            rate_limited: s.status_count(429),
            timeouts: s.timeouts(),
            connection_errors: s.connect_errors() + s.io_errors(),
            connect_failures: s.connect_errors(),
            broken_connections: s.io_errors(),
            cancelled: result.cancelled,
            unsent: result.unsent,
        };
        let thresholds = evaluate_thresholds(
            requests.success_rate,
            latency.map(|l| l.p99_ms),
            thresholds.0,
            thresholds.1,
        );
        let targets = urls
            .iter()
            .zip(&result.targets)
            .map(|(url, t)| TargetReport {
                url: url.clone(),
                connections: t.connections,
                requests: TargetRequests::new(&t.stats, t.cancelled),
                latency_ms: t.stats.latency(),
                status_codes: status_codes(&t.stats),
                jobs: t
                    .jobs
                    .as_ref()
                    .map(|j| JobsReport::new(j, result.job_plan.as_ref(), result.elapsed)),
            })
            .collect();
        ScenarioReport {
            name: name.to_owned(),
            sweep_step: None,
            method: method.to_owned(),
            url: match urls {
                [one] => Some(one.clone()),
                _ => None,
            },
            urls: urls.to_vec(),
            load_model: model,
            stop_reason: result.stop_reason,
            started_at_unix_ms: result.started_at_unix_ms,
            stages: Vec::new(),
            requests,
            duration_secs: result.elapsed.as_secs_f64(),
            rps: rate_per_second(s.total(), result.elapsed),
            latency_ms: latency,
            success_latency_ms: s.success_latency(),
            refused_latency_ms: s.refused_latency(),
            percentiles: s.spectrum(),
            timeline: result.timeline.clone(),
            status_codes: status_codes(s),
            error_codes: s.error_codes(),
            server_metrics,
            thresholds,
            targets,
            transport: None,
            connections: ConnectionsReport::new(&result.connections),
            jobs: result
                .jobs
                .as_ref()
                .map(|j| JobsReport::new(j, result.job_plan.as_ref(), result.elapsed)),
            stolen_pct: result.stolen_pct,
        }
    }

    /// Adds the stages of the profile the phase followed, from what `result`
    /// recorded of each.
    pub fn with_stages(mut self, profile: &crate::stages::Profile, result: &PhaseResult) -> Self {
        // A phase that ran its course ran every stage to its end, though its
        // last request may have been due a little before.
        let ran = match result.stop_reason {
            StopReason::Duration => profile.duration().as_secs_f64(),
            _ => result.elapsed.as_secs_f64(),
        };
        self.stages = StageReport::of(profile, &result.stages, ran);
        self
    }

    /// Adds the outcomes of `thresholds` on this scenario's figures; the one
    /// that stopped the run while it went (`aborted`: its expression and
    /// when) fails whatever the figures at the end say.
    pub fn with_thresholds(
        mut self,
        thresholds: &[crate::thresholds::Threshold],
        aborted: Option<&(String, f64)>,
    ) -> Self {
        let figures = self.figures();
        for t in thresholds {
            let mut result = t.evaluate(&figures);
            if let Some((expression, at)) = aborted {
                if *expression == t.expression {
                    result.passed = false;
                    result.aborted_at_secs = Some(*at);
                }
            }
            self.thresholds.push(result);
        }
        self
    }

    /// The figures thresholds are judged on.
    pub fn figures(&self) -> crate::thresholds::Figures {
        let r = &self.requests;
        crate::thresholds::Figures {
            requests: r.total,
            successful: r.successful,
            failed: r.failed,
            timeouts: r.timeouts,
            connection_errors: r.connection_errors,
            unsent: r.unsent,
            statuses: self
                .status_codes
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, *v)))
                .collect(),
            rps: self.rps,
            latency: self.latency_ms,
            setup: self.connections.setup_ms,
            server_check: Some(self.server_metrics.status.clone()),
        }
    }

    /// Adds how the connections were made.
    pub fn with_transport(mut self, transport: TransportReport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Succeeded jobs with a wrong answer.
    pub fn digest_mismatches(&self) -> u64 {
        self.jobs.as_ref().map_or(0, |j| j.digest_mismatches)
    }

    /// The figures a sweep shows and judges this phase by, as one of its steps.
    pub fn step_figures(&self) -> StepFigures {
        let r = &self.requests;
        StepFigures {
            rps: self.rps,
            duration_secs: self.duration_secs,
            requests: r.total,
            successful: r.successful,
            failed: r.failed,
            unsent: r.unsent,
            latency_ms: self.latency_ms,
            server_metrics: self.server_metrics.status.clone(),
            stolen_pct: self.stolen_pct,
        }
    }
}

impl TargetRequests {
    fn new(s: &Stats, cancelled: u64) -> Self {
        TargetRequests {
            total: s.total(),
            successful: s.successful(),
            failed: s.failed(),
            success_rate: s.success_rate(),
            responses: s.responses(),
            rate_limited: s.status_count(429),
            timeouts: s.timeouts(),
            connection_errors: s.connect_errors() + s.io_errors(),
            cancelled,
        }
    }
}

fn status_codes(s: &Stats) -> BTreeMap<String, u64> {
    s.status_codes()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl RunReport {
    pub fn new(scenarios: Vec<ScenarioReport>, interrupted: bool) -> Self {
        let thresholds_passed = scenarios
            .iter()
            .flat_map(|s| &s.thresholds)
            .all(|t| t.passed);
        let counts_consistent = !scenarios.iter().any(|s| s.server_metrics.is_mismatch());
        let jobs_verified = scenarios.iter().all(|s| s.digest_mismatches() == 0);
        RunReport {
            scenarios,
            sweeps: Vec::new(),
            live_metrics: Vec::new(),
            thresholds_passed,
            counts_consistent,
            jobs_verified,
            interrupted,
        }
    }

    /// Adds the sweeps whose steps are among the scenarios.
    pub fn with_sweeps(mut self, sweeps: Vec<SweepReport>) -> Self {
        self.sweeps = sweeps;
        self
    }

    /// Adds how the pushes of live metrics went.
    pub fn with_live_metrics(mut self, outputs: Vec<crate::output::OutputReport>) -> Self {
        self.live_metrics = outputs;
        self
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.scenarios.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            write_scenario(&mut out, s);
        }
        for sweep in &self.sweeps {
            out.push('\n');
            write_sweep(&mut out, sweep);
        }
        for o in &self.live_metrics {
            let _ = writeln!(
                out,
                "\nLive metrics: {} {}: {} pushes, {} failed{}",
                o.kind.name(),
                o.url,
                thousands(o.pushes),
                thousands(o.failed),
                o.last_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" (last: {e})"))
            );
        }
        if self.interrupted {
            out.push_str(
                "\nInterrupted: the run was stopped by Ctrl-C; remaining scenarios were skipped.\n",
            );
        }
        if let Some(t) = self
            .scenarios
            .iter()
            .flat_map(|s| &s.thresholds)
            .find(|t| t.aborted_at_secs.is_some())
        {
            let _ = writeln!(
                out,
                "\nAborted: threshold {} failed while the run went; remaining scenarios were skipped.",
                t.name
            );
        }
        out
    }
}

/// One scenario: what ran and the counts, the jobs, latency, statuses and
/// errors, the targets, the server check and the thresholds.
fn write_scenario(out: &mut String, s: &ScenarioReport) {
    write_heading(out, s);
    write_counts(out, s);
    if let Some(j) = &s.jobs {
        write_jobs(out, j);
    }
    write_scenario_latency(out, s);
    write_stages(out, s);
    write_statuses_and_errors(out, s);
    write_connections(out, s);
    if s.targets.len() > 1 {
        write_targets(out, s);
    }
    write_server_metrics(out, &s.server_metrics);
    write_thresholds(out, s);
}

/// `Scenario fast: POST http://…`, the load model and why it stopped.
fn write_heading(out: &mut String, s: &ScenarioReport) {
    let step = s
        .sweep_step
        .map_or_else(String::new, |n| format!(" (sweep step {n})"));
    match &s.url {
        Some(url) => {
            let _ = writeln!(out, "Scenario {}{step}: {} {url}", s.name, s.method);
        }
        None => {
            let _ = writeln!(
                out,
                "Scenario {}{step}: {} on {} targets",
                s.name,
                s.method,
                s.targets.len()
            );
        }
    }
    let model = match s.load_model {
        _ if !s.stages.is_empty() => format!(
            "{} loop, {} stages up to {} {}{}",
            if matches!(s.load_model, LoadModel::Open { .. }) { "open" } else { "closed" },
            s.stages.len(),
            fmt_target(s.stages.iter().map(|t| t.to).fold(0.0, f64::max)),
            s.stages[0].unit,
            if matches!(s.load_model, LoadModel::Open { .. }) {
                " (latency from scheduled send time)"
            } else {
                ""
            }
        ),
        LoadModel::Closed { concurrency } => format!("closed loop, {} connections", thousands(u64::from(concurrency))),
        LoadModel::Open { rate, concurrency } => format!(
            "open loop, {} req/s scheduled, at most {} in flight (latency from scheduled send time)",
            fmt_rate(rate),
            thousands(u64::from(concurrency))
        ),
    };
    let _ = writeln!(out, "  Load model:         {model}");
    let stopped = match s.stop_reason {
        StopReason::Requests => "all requests sent",
        StopReason::Duration => "duration limit reached",
        StopReason::Interrupted => "interrupted (Ctrl-C)",
        StopReason::Aborted => "a threshold failed (:abort)",
    };
    let _ = writeln!(out, "  Stopped:            {stopped}");
}

/// Requests, their outcome, duration and rate, and those not counted.
fn write_counts(out: &mut String, s: &ScenarioReport) {
    let r = &s.requests;
    let _ = writeln!(out, "  Total requests:     {}", thousands(r.total));
    let _ = writeln!(
        out,
        "  Successful:         {} ({}%)",
        thousands(r.successful),
        fmt_percent(r.success_rate)
    );
    let _ = writeln!(out, "  Failed:             {}", thousands(r.failed));
    let _ = writeln!(out, "  Duration:           {:.3}s", s.duration_secs);
    let _ = writeln!(out, "  Requests/sec:       {}", fmt_rate(s.rps));
    // Under a share that shows, steal is the host's usual noise and not worth a line.
    if let Some(stolen) = s.stolen_pct.filter(|p| *p >= NOTABLE_STEAL_PCT) {
        let _ = writeln!(
            out,
            "  CPU stolen:         {stolen:.1} % of the machine's CPU time, by its host (client and server paused meanwhile)"
        );
    }
    if r.cancelled > 0 {
        let _ = writeln!(
            out,
            "  Cancelled:          {} (in flight at Ctrl-C, not counted)",
            thousands(r.cancelled)
        );
    }
    if r.unsent > 0 {
        let _ = writeln!(
            out,
            "  Unsent:             {} (due before the deadline but every connection was busy: the server fell behind the rate)",
            thousands(r.unsent)
        );
    }
}

/// The latency of the scenario's responses, and what it leaves out.
fn write_scenario_latency(out: &mut String, s: &ScenarioReport) {
    let r = &s.requests;
    match &s.latency_ms {
        Some(l) => {
            let what = if s.jobs.is_some() {
                "responses, submissions and polls"
            } else {
                "responses"
            };
            let _ = writeln!(out, "  Latency ({} {what}):", thousands(r.responses));
            write_latency(out, "    ", l);
            // Under overload the refusals and the served requests tell different stories.
            if let Some(refused) = &s.refused_latency_ms {
                let served = s
                    .success_latency_ms
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |l| fmt_latency(l.p99_ms));
                let _ = writeln!(
                    out,
                    "    p99 of the 2xx alone {served}, of the refusals (429, 503) alone {}",
                    fmt_latency(refused.p99_ms)
                );
            }
            if r.timeouts > 0 {
                let _ = writeln!(
                    out,
                    "    ({} timed-out requests are not in these figures; each took longer than the timeout)",
                    thousands(r.timeouts)
                );
            }
        }
        None => {
            let _ = writeln!(out, "  Latency:            no responses");
        }
    }
}

/// Responses by status, non-2xx ones by error code, and the failures
/// without a response.
fn write_statuses_and_errors(out: &mut String, s: &ScenarioReport) {
    let r = &s.requests;
    let _ = writeln!(out, "  Status codes:");
    if s.status_codes.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for (code, n) in &s.status_codes {
        let _ = writeln!(out, "    {code:<28}{}", thousands(*n));
    }
    if !s.error_codes.is_empty() {
        let _ = writeln!(out, "  Error codes:");
        for (code, n) in &s.error_codes {
            let _ = writeln!(out, "    {code:<28}{}", thousands(*n));
        }
    }
    let _ = writeln!(out, "  Rate-limit hits:    {}", thousands(r.rate_limited));
    let _ = writeln!(out, "  Timeouts:           {}", thousands(r.timeouts));
    let _ = writeln!(
        out,
        "  Connection errors:  {} ({} connect, {} broken)",
        thousands(r.connection_errors),
        thousands(r.connect_failures),
        thousands(r.broken_connections)
    );
}

/// Each stage of a staged profile: its targets, what was sent, the rate and
/// latency.
fn write_stages(out: &mut String, s: &ScenarioReport) {
    if s.stages.is_empty() {
        return;
    }
    let _ = writeln!(out, "  Stages:");
    let width = s
        .stages
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = writeln!(
        out,
        "    {:<width$}  {:>8}  {:>24}  {:>10}  {:>10}  {:>8}  {:>10}  {:>10}",
        "stage", "start", "target", "requests", "req/s", "failed", "p50", "p99"
    );
    for t in &s.stages {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), fmt_latency_short);
        let _ = writeln!(
            out,
            "    {:<width$}  {:>7.1}s  {:>24}  {:>10}  {:>10}  {:>8}  {:>10}  {:>10}",
            t.name,
            t.start_secs,
            format!("{} → {} {}", fmt_target(t.from), fmt_target(t.to), t.unit),
            thousands(t.requests),
            fmt_rate(t.rps),
            thousands(t.failed),
            ms(t.p50_ms),
            ms(t.p99_ms),
        );
    }
}

/// The protocol, TLS, and how long opening the connections took.
fn write_connections(out: &mut String, s: &ScenarioReport) {
    if let Some(t) = &s.transport {
        let mut line = t.protocol.clone();
        if t.streams_per_connection > 1 {
            let _ = write!(
                line,
                ", {} streams per connection",
                t.streams_per_connection
            );
        }
        match &t.tls {
            Some(tls) => {
                let _ = write!(line, ", {} {}", tls.version, tls.cipher);
                if let Some(alpn) = &tls.alpn {
                    let _ = write!(line, ", ALPN {alpn}");
                }
                if t.tls_verified == Some(false) {
                    line.push_str(", CERTIFICATE NOT CHECKED (--insecure)");
                }
            }
            None => line.push_str(", no TLS"),
        }
        let _ = writeln!(out, "  Protocol:           {line}");
    }
    let c = &s.connections;
    match &c.setup_ms {
        Some(setup) => {
            let mut line = format!(
                "{} opened, set-up p50 {} p99 {} max {}",
                thousands(c.opened),
                fmt_latency_short(setup.p50_ms),
                fmt_latency_short(setup.p99_ms),
                fmt_latency_short(setup.max_ms)
            );
            if let Some(tls) = &c.tls_handshake_ms {
                let _ = write!(
                    line,
                    " (TLS handshake p50 {} p99 {})",
                    fmt_latency_short(tls.p50_ms),
                    fmt_latency_short(tls.p99_ms)
                );
            }
            let _ = writeln!(out, "  Connections:        {line}");
        }
        None => {
            let _ = writeln!(out, "  Connections:        none opened");
        }
    }
}

/// One line per target: its connections, counts, p99 and jobs.
fn write_targets(out: &mut String, s: &ScenarioReport) {
    let _ = writeln!(out, "  Targets:");
    let width = s.targets.iter().map(|t| t.url.len()).max().unwrap_or(0);
    for t in &s.targets {
        let r = &t.requests;
        let p99 = t.latency_ms.map_or_else(
            || "no responses".to_owned(),
            |l| format!("p99 {:.3} ms", l.p99_ms),
        );
        let jobs = t.jobs.as_ref().map_or_else(String::new, |j| {
            format!(
                "  jobs: {} completed  {} verified  {} wrong",
                thousands(j.completed),
                thousands(j.verified),
                thousands(j.digest_mismatches)
            )
        });
        let _ = writeln!(
            out,
            "    {:<width$}  {} conn  {} requests  {} successful  {} failed  {p99}{jobs}",
            t.url,
            thousands(u64::from(t.connections)),
            thousands(r.total),
            thousands(r.successful),
            thousands(r.failed),
        );
    }
}

/// Each threshold, the actual value and the verdict.
fn write_thresholds(out: &mut String, s: &ScenarioReport) {
    for t in &s.thresholds {
        let _ = writeln!(out, "  Threshold {}: {}", t.name, t.describe());
    }
}

/// The curves of `--compare` as text: each sweep as the sweep's own report shows it.
pub fn comparison_text(comparison: &crate::sweep::Comparison) -> String {
    let mut out = String::new();
    for (i, c) in comparison.curves.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "Curve {} ({})", c.name, c.file.display());
        write_sweep(&mut out, &c.sweep);
    }
    out
}

/// The sweep: its steps as a table, the knee and why it ended.
fn write_sweep(out: &mut String, sw: &SweepReport) {
    let target = match &sw.urls[..] {
        [one] => one.clone(),
        urls => format!("{} targets", urls.len()),
    };
    let _ = writeln!(out, "Sweep {}: {} {target}", sw.scenario, sw.method);
    let _ = writeln!(
        out,
        "  Steps:              open loop, rates {}, {:.3}s each, at most {} in flight (latency from scheduled send time)",
        sw.rates,
        sw.step_duration_secs,
        thousands(u64::from(sw.concurrency))
    );
    let _ = writeln!(
        out,
        "  Limits:             p99 <= {} ms, errors <= {} %{}{}",
        sw.limits.max_p99_ms,
        sw.limits.max_error_rate,
        crate::sweep::describe_retries(sw.limits.retries),
        crate::sweep::describe_steal(sw.limits.max_steal_pct)
    );
    let _ = writeln!(
        out,
        "  {:>4} {:>12} {:>12} {:>12} {:>13} {:>13} {:>9} {:>8}  {:<11} verdict",
        "step", "offered/s", "achieved/s", "requests", "p50", "p99", "errors", "stolen", "/metrics"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
    for st in &sw.steps {
        let verdict = match &st.reason {
            None => "ok".to_owned(),
            Some(reason) if st.not_judged => format!("NOT JUDGED: {reason}"),
            Some(reason) => format!("OVER: {reason}"),
        };
        let stolen = st
            .stolen_pct
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}%"));
        let _ = writeln!(
            out,
            "  {:>4} {:>12} {:>12} {:>12} {:>13} {:>13} {:>8.3}% {stolen:>8}  {:<11} {verdict}",
            st.step,
            fmt_rate(st.offered_rate),
            fmt_rate(st.achieved_rate),
            thousands(st.requests),
            ms(st.p50_ms),
            ms(st.p99_ms),
            st.error_rate,
            st.server_metrics,
        );
    }
    match &sw.knee {
        Some(k) => {
            let _ = writeln!(
                out,
                "  Knee:               {} req/s offered (step {}): {} achieved, p50 {}, p99 {}",
                fmt_rate(k.offered_rate),
                k.step,
                fmt_rate(k.achieved_rate),
                ms(k.p50_ms),
                ms(k.p99_ms)
            );
        }
        None => {
            let _ = writeln!(out, "  Knee:               none: no step met the limits");
        }
    }
    let _ = writeln!(out, "  Stopped:            {}", sw.stopped.describe());
}

/// min/mean/max, then one line per percentile.
fn write_latency(out: &mut String, indent: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "{indent}min {}   mean {}   max {}",
        fmt_latency(l.min_ms),
        fmt_latency(l.mean_ms),
        fmt_latency(l.max_ms)
    );
    for (label, v) in [
        ("p50", l.p50_ms),
        ("p90", l.p90_ms),
        ("p95", l.p95_ms),
        ("p99", l.p99_ms),
        ("p99.9", l.p99_9_ms),
        ("p99.99", l.p99_99_ms),
    ] {
        let _ = writeln!(out, "{indent}{label:<8}{}", fmt_latency(v));
    }
}

fn write_jobs(out: &mut String, j: &JobsReport) {
    let rounds = j
        .rounds
        .map_or_else(|| "the server's default".to_owned(), thousands);
    let _ = writeln!(
        out,
        "  Jobs:               rounds {rounds}, polled every {}",
        fmt_latency_short(j.poll_interval_ms)
    );
    let _ = writeln!(
        out,
        "    Submitted:        {} ({}/s), {} refused or unanswered",
        thousands(j.submitted),
        fmt_rate(j.submitted_per_sec),
        thousands(j.submit_failed)
    );
    let _ = writeln!(
        out,
        "    Completed:        {} ({}/s)",
        thousands(j.completed),
        fmt_rate(j.completed_per_sec)
    );
    let wrong = if j.digest_mismatches > 0 {
        format!("{} DIGEST MISMATCH", thousands(j.digest_mismatches))
    } else {
        "0 wrong".to_owned()
    };
    let _ = writeln!(
        out,
        "      succeeded       {} ({} verified, {wrong})",
        thousands(j.succeeded),
        thousands(j.verified)
    );
    let _ = writeln!(out, "      failed          {}", thousands(j.failed));
    let _ = writeln!(out, "      cancelled       {}", thousands(j.cancelled));
    if j.retried > 0 {
        let _ = writeln!(
            out,
            "      retried         {} (taken up more than once)",
            thousands(j.retried)
        );
    }
    let _ = writeln!(
        out,
        "    Lost:             {} (the server stopped knowing them)",
        thousands(j.lost)
    );
    let _ = writeln!(
        out,
        "    Unfinished:       {} (queued or running when the scenario ended)",
        thousands(j.unfinished)
    );
    let _ = writeln!(
        out,
        "    Polls:            {} ({} failed)",
        thousands(j.polls),
        thousands(j.poll_errors)
    );
    for (label, latency) in [
        ("Submit latency", &j.submit_latency_ms),
        ("Time to completion", &j.time_to_completion_ms),
    ] {
        match latency {
            Some(l) => {
                let _ = writeln!(out, "    {label}:");
                write_latency(out, "      ", l);
            }
            None => {
                let _ = writeln!(out, "    {label}: none");
            }
        }
    }
    if !j.errors.is_empty() {
        let _ = writeln!(out, "    Errors of failed jobs:");
        for (error, n) in &j.errors {
            let _ = writeln!(out, "      {error:<40}{}", thousands(*n));
        }
    }
    for m in &j.mismatches {
        let reported = if (m.reported_number, m.reported_rounds) == (m.number, m.rounds) {
            String::new()
        } else {
            format!(
                "; the server reports number {} rounds {}",
                m.reported_number, m.reported_rounds
            )
        };
        let shown = |v: Option<u64>| v.map_or_else(|| "none".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "  DIGEST MISMATCH: job {} (number {}, rounds {}): digest {} (expected {}), result {} (expected {}){reported}",
            m.id,
            m.number,
            m.rounds,
            shown(m.digest),
            m.expected_digest,
            shown(m.result),
            m.expected_result
        );
    }
    let more = j
        .digest_mismatches
        .saturating_sub(j.mismatches.len() as u64);
    if more > 0 {
        let _ = writeln!(out, "  DIGEST MISMATCH: {} more jobs", thousands(more));
    }
}

fn write_server_metrics(out: &mut String, m: &ServerMetrics) {
    match (&m.check, m.status.as_str()) {
        (Some(check), status) => {
            let verdict = match status {
                "match" => "counts match".to_owned(),
                "consistent" => {
                    "counts consistent (the server also counted requests the client abandoned)"
                        .to_owned()
                }
                _ => "MISMATCH".to_owned(),
            };
            if m.targets.len() > 1 {
                let _ = writeln!(
                    out,
                    "  Server /metrics:    {verdict} (summed over {} targets)",
                    m.targets.len()
                );
            } else {
                let _ = writeln!(out, "  Server /metrics:    {verdict}");
            }
            let _ = writeln!(
                out,
                "    {:<16}{:>14}{:>14}{:>12}{:>12}",
                "counter", "before", "after", "delta", "client"
            );
            for c in &check.counters {
                let _ = writeln!(
                    out,
                    "    {:<16}{:>14}{:>14}{:>12}{:>12}{}",
                    c.counter,
                    c.before,
                    c.after,
                    c.delta,
                    c.client,
                    if c.ok { "" } else { "  MISMATCH" }
                );
            }
            if m.targets.len() > 1 {
                let _ = writeln!(out, "    per target (server delta / client):");
                let width = m.targets.iter().map(|t| t.url.len()).max().unwrap_or(0);
                for t in &m.targets {
                    let _ = writeln!(
                        out,
                        "      {:<width$}  {}{}",
                        t.url,
                        t.check.summary(),
                        if t.check.ok { "" } else { "  MISMATCH" }
                    );
                }
            }
            if status == "mismatch" {
                for c in check.counters.iter().filter(|c| !c.ok) {
                    let _ = writeln!(
                        out,
                        "  MISMATCH: server {} grew by {}, client received {} (accepted up to {} with abandoned requests)",
                        c.counter, c.delta, c.client, c.accepted_max
                    );
                }
                if check.counters.is_empty() {
                    let _ = writeln!(
                        out,
                        "  MISMATCH: /metrics has none of the compared counters"
                    );
                }
            }
        }
        (None, "skipped") => {
            let _ = writeln!(out, "  Server /metrics:    not read (--no-server-metrics)");
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "  Server /metrics:    unavailable ({})",
                m.reason.as_deref().unwrap_or("unknown reason")
            );
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Requests per second as the reports show them: `45,234.3` (`0.500` below 1).
pub fn fmt_rate(r: f64) -> String {
    if r >= 1.0 {
        let tenths = (r * 10.0).round() as u64;
        format!("{}.{}", thousands(tenths / 10), tenths % 10)
    } else {
        format!("{r:.3}")
    }
}

/// A stage's target as the reports show it: `1,000`, `12.5`.
pub fn fmt_target(v: f64) -> String {
    if v.fract() == 0.0 && v >= 0.0 {
        thousands(v as u64)
    } else {
        format!("{v}")
    }
}

/// A percentage as the reports show it: `90.000`, `100`.
pub fn fmt_percent(p: f64) -> String {
    if p == 100.0 || p == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.3}")
    }
}

/// Latency in milliseconds for the report table (`0.213 ms`).
pub fn fmt_latency(ms: f64) -> String {
    format!("{ms:>10.3} ms")
}

/// Short latency for progress lines (`850µs`, `3.1ms`, `250ms`, `1.25s`).
pub fn fmt_latency_short(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run::TargetResult;
    use crate::server::{compare, sum_counters, ClientCounts};
    use crate::stats::{Stats, TransportError};
    use crate::timeline::TimelinePoint;
    use std::time::Duration;

    pub(crate) fn phase() -> PhaseResult {
        let mut stats = Stats::new();
        for i in 0..90 {
            stats.record_response(200, Duration::from_micros(100 + i), None);
        }
        for _ in 0..5 {
            stats.record_response(429, Duration::from_micros(50), Some("RATE_LIMIT_EXCEEDED"));
        }
        for _ in 0..3 {
            stats.record_response(500, Duration::from_micros(70), Some("INTERNAL_ERROR"));
        }
        stats.record_transport_error(TransportError::Timeout);
        stats.record_transport_error(TransportError::Connect);
        PhaseResult {
            targets: vec![TargetResult {
                connections: 4,
                stats: stats.clone(),
                cancelled: 0,
                jobs: None,
            }],
            stats,
            elapsed: Duration::from_secs(2),
            stop_reason: StopReason::Requests,
            cancelled: 0,
            unsent: 0,
            jobs: None,
            job_plan: None,
            timeline: timeline(2),
            connections: Default::default(),
            stages: Vec::new(),
            started_at_unix_ms: 0,
            stolen_pct: Some(0.4),
        }
    }

    /// A timeline of `secs` one-second intervals, 50 requests in each.
    fn timeline(secs: u64) -> TimelineReport {
        TimelineReport {
            interval_secs: 1,
            points: (0..secs)
                .map(|i| TimelinePoint {
                    start_secs: i,
                    requests: 50,
                    successful: 45,
                    failed: 5,
                    rps: 50.0,
                    p50_ms: Some(0.1),
                    p90_ms: Some(0.15),
                    p99_ms: Some(0.19),
                    max_ms: Some(0.2),
                    success_p99_ms: Some(0.19),
                })
                .collect(),
        }
    }

    pub(crate) fn report(
        metrics: ServerMetrics,
        thresholds: (Option<f64>, Option<f64>),
    ) -> ScenarioReport {
        ScenarioReport::new(
            "fast",
            "POST",
            &["http://127.0.0.1:1/api/v1/compute/fast".to_owned()],
            LoadModel::Closed { concurrency: 4 },
            &phase(),
            metrics,
            thresholds,
        )
    }

    #[test]
    fn a_phase_judged_as_a_sweep_step() {
        use crate::sweep::{SweepLimits, SweepStep};
        let s = report(ServerMetrics::skipped(), (None, None));
        let figures = s.step_figures();
        assert_eq!(
            (figures.requests, figures.successful, figures.failed),
            (100, 90, 10)
        );
        assert_eq!(figures.server_metrics, "skipped");
        let limits = |max_p99_ms, max_error_rate| SweepLimits {
            max_p99_ms,
            max_error_rate,
            retries: 0,
            max_steal_pct: 2.0,
        };
        let step = SweepStep::new(3, 60.0, s.step_figures(), &limits(100.0, 10.0), false);
        assert_eq!(
            (step.step, step.offered_rate, step.achieved_rate),
            (3, 60.0, 50.0)
        );
        assert_eq!(step.error_rate, 10.0);
        assert!(step.passed, "{:?}", step.reason);
        let step = SweepStep::new(3, 60.0, s.step_figures(), &limits(0.01, 5.0), false);
        let reason = step.reason.unwrap();
        assert!(!step.passed);
        assert!(
            reason.starts_with("p99 ") && reason.ends_with("errors 10.000 % over 5 %"),
            "{reason}"
        );
        let step = SweepStep::new(3, 60.0, s.step_figures(), &limits(100.0, 10.0), true);
        assert_eq!(step.reason.as_deref(), Some("interrupted"));

        // Over the limits with more than 2 % of the CPU time stolen: not judged, until the
        // rate was so three times in a row.
        let over = |stolen| {
            let mut step = SweepStep::new(3, 60.0, s.step_figures(), &limits(0.01, 5.0), false);
            step.stolen_pct = stolen;
            step
        };
        assert_eq!(over(None).stolen_pct, None);
        assert_eq!(
            SweepStep::new(3, 60.0, s.step_figures(), &limits(0.01, 5.0), false).stolen_pct,
            Some(0.4),
            "the phase's share"
        );
        let mut step = over(Some(5.0));
        assert!(step.judge_steal(&limits(0.01, 5.0), 2));
        assert!(step.not_judged && !step.passed);
        assert!(
            step.reason.as_deref().unwrap().ends_with(
                "errors 10.000 % over 5 %; not judged: 5.0 % of the CPU time stolen, run again"
            ),
            "{:?}",
            step.reason
        );
        for (stolen, reruns) in [(Some(5.0), 3), (Some(2.0), 0), (None, 0)] {
            let mut step = over(stolen);
            assert!(!step.judge_steal(&limits(0.01, 5.0), reruns));
            assert!(!step.not_judged && !step.passed);
            assert_eq!(step.stolen_pct, stolen);
        }
        let mut within = SweepStep::new(3, 60.0, s.step_figures(), &limits(100.0, 10.0), false);
        within.stolen_pct = Some(50.0);
        assert!(!within.judge_steal(&limits(100.0, 10.0), 0));
        assert!(within.passed && within.reason.is_none(), "a pass stands");
    }

    #[test]
    fn json_report_shape_and_counts() {
        let run = RunReport::new(vec![report(ServerMetrics::skipped(), (None, None))], false);
        let v: Value = serde_json::from_str(&run.to_json()).unwrap();
        let s = &v["scenarios"][0];
        assert_eq!(s["name"], "fast");
        assert_eq!(s["load_model"]["type"], "closed");
        assert_eq!(s["load_model"]["concurrency"], 4);
        assert_eq!(s["stop_reason"], "requests");
        let r = &s["requests"];
        assert_eq!(r["total"], 100);
        assert_eq!(r["successful"], 90);
        assert_eq!(r["failed"], 10);
        assert_eq!(r["responses"], 98);
        assert_eq!(r["rate_limited"], 5);
        assert_eq!(r["timeouts"], 1);
        assert_eq!(r["connection_errors"], 1);
        assert_eq!(r["success_rate"], 90.0);
        assert_eq!(s["rps"], 50.0);
        assert_eq!(s["status_codes"]["200"], 90);
        assert_eq!(s["status_codes"]["429"], 5);
        assert_eq!(s["error_codes"]["RATE_LIMIT_EXCEEDED"], 5);
        assert_eq!(s["error_codes"]["INTERNAL_ERROR"], 3);
        for key in [
            "min_ms",
            "mean_ms",
            "max_ms",
            "p50_ms",
            "p90_ms",
            "p95_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
        ] {
            assert!(s["latency_ms"][key].as_f64().unwrap() > 0.0, "{key}");
        }
        assert_eq!(s["server_metrics"]["status"], "skipped");
        let percentiles = s["percentiles"].as_array().unwrap();
        let p99 = percentiles
            .iter()
            .find(|p| p["percentile"] == 99.0)
            .unwrap();
        assert_eq!(p99["latency_ms"], s["latency_ms"]["p99_ms"]);
        assert_eq!(s["timeline"]["interval_secs"], 1);
        assert_eq!(s["timeline"]["points"][1]["start_secs"], 1);
        assert_eq!(s["timeline"]["points"][1]["requests"], 50);
        assert_eq!(s["timeline"]["points"][1]["p99_ms"], 0.19);
        assert_eq!(s["url"], "http://127.0.0.1:1/api/v1/compute/fast");
        assert_eq!(
            s["urls"],
            serde_json::json!(["http://127.0.0.1:1/api/v1/compute/fast"])
        );
        assert_eq!(s["targets"][0]["connections"], 4);
        assert_eq!(s["targets"][0]["requests"]["total"], 100);
        assert_eq!(v["thresholds_passed"], true);
        assert_eq!(v["counts_consistent"], true);
        assert_eq!(v["interrupted"], false);
    }

    #[test]
    fn open_loop_model_serializes_its_rate() {
        let v = serde_json::to_value(LoadModel::Open {
            rate: 200.0,
            concurrency: 8,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "open", "rate": 200.0, "concurrency": 8})
        );
    }

    #[test]
    fn thresholds() {
        let t = evaluate_thresholds(99.0, Some(12.0), Some(99.5), Some(10.0));
        assert_eq!(t.len(), 2);
        assert!(!t[0].passed && !t[1].passed);
        let t = evaluate_thresholds(99.5, Some(10.0), Some(99.5), Some(10.0));
        assert!(t.iter().all(|t| t.passed));
        let t = evaluate_thresholds(100.0, None, None, Some(10.0));
        assert!(!t[0].passed, "no responses cannot pass a latency threshold");
        assert!(evaluate_thresholds(0.0, None, None, None).is_empty());
        let run = RunReport::new(
            vec![report(ServerMetrics::skipped(), (Some(95.0), None))],
            false,
        );
        assert!(!run.thresholds_passed);
        assert!(run
            .to_text()
            .contains("Threshold success_rate: 90.000 (required >= 95) FAIL"));
    }

    #[test]
    fn mismatch_is_reported() {
        let before = serde_json::json!({"total_requests": 0, "success_count": 0, "error_count": 0});
        let after =
            serde_json::json!({"total_requests": 97, "success_count": 89, "error_count": 8});
        let (Value::Object(before), Value::Object(after)) = (before, after) else {
            unreachable!()
        };
        let client = ClientCounts {
            responses: 98,
            successes: 90,
            errors: 8,
            abandoned: 1,
        };
        let check = compare(&before, &after, client);
        let run = RunReport::new(
            vec![report(
                ServerMetrics::checked(before, after, check),
                (None, None),
            )],
            false,
        );
        assert!(!run.counts_consistent);
        let text = run.to_text();
        assert!(
            text.contains("MISMATCH: server total_requests grew by 97, client received 98"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&run.to_json()).unwrap();
        assert_eq!(v["scenarios"][0]["server_metrics"]["status"], "mismatch");
    }

    #[test]
    fn text_report_has_the_key_lines() {
        let text = RunReport::new(
            vec![report(
                ServerMetrics::unavailable("404".into()),
                (None, None),
            )],
            true,
        )
        .to_text();
        for needle in [
            "Scenario fast: POST http://127.0.0.1:1/api/v1/compute/fast",
            "Total requests:     100",
            "Successful:         90 (90.000%)",
            "Requests/sec:       50.0",
            "p99.99",
            "RATE_LIMIT_EXCEEDED",
            "Rate-limit hits:    5",
            "Timeouts:           1",
            "Connection errors:  1 (1 connect, 0 broken)",
            "Server /metrics:    unavailable (404)",
            "Interrupted",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        // 0.4 % stolen is the host's usual noise; 3.25 % is worth a line.
        assert!(!text.contains("CPU stolen"), "{text}");
        let mut stolen = report(ServerMetrics::skipped(), (None, None));
        stolen.stolen_pct = Some(3.25);
        let text = RunReport::new(vec![stolen], false).to_text();
        assert!(
            text.contains("CPU stolen:         3.2 % of the machine's CPU time, by its host"),
            "{text}"
        );
        let v: Value = serde_json::from_str(
            &RunReport::new(vec![report(ServerMetrics::skipped(), (None, None))], false).to_json(),
        )
        .unwrap();
        assert_eq!(v["scenarios"][0]["stolen_pct"], 0.4);
    }

    /// 2 targets: 60 + 40 requests, all 200.
    fn two_target_phase() -> PhaseResult {
        let target = |n: u64| {
            let mut stats = Stats::new();
            for _ in 0..n {
                stats.record_response(200, Duration::from_micros(100), None);
            }
            TargetResult {
                connections: 2,
                stats,
                cancelled: 0,
                jobs: None,
            }
        };
        let targets = vec![target(60), target(40)];
        let mut stats = Stats::new();
        for t in &targets {
            stats.merge(&t.stats);
        }
        PhaseResult {
            stats,
            elapsed: Duration::from_secs(1),
            stop_reason: StopReason::Requests,
            cancelled: 0,
            unsent: 0,
            targets,
            jobs: None,
            job_plan: None,
            timeline: timeline(1),
            connections: Default::default(),
            stages: Vec::new(),
            started_at_unix_ms: 0,
            stolen_pct: None,
        }
    }

    #[test]
    fn several_targets_are_listed_and_summed() {
        let counters = |total: u64| match serde_json::json!({"total_requests": total, "success_count": total, "error_count": 0})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = |n: u64| ClientCounts {
            responses: n,
            successes: n,
            errors: 0,
            abandoned: 0,
        };
        let urls = ["http://a:1/ok".to_owned(), "http://b:2/ok".to_owned()];
        // Server b counted one request too few.
        let (before, after) = (
            vec![counters(0), counters(0)],
            vec![counters(60), counters(39)],
        );
        let per_target = urls
            .iter()
            .zip(before.iter().zip(&after))
            .zip([60, 40])
            .map(|((url, (b, a)), n)| TargetMetrics {
                url: url.clone(),
                before: b.clone(),
                after: a.clone(),
                check: compare(b, a, client(n)),
            })
            .collect();
        let (before, after) = (sum_counters(&before), sum_counters(&after));
        let check = compare(&before, &after, client(100));
        let metrics = ServerMetrics::checked(before, after, check).with_targets(per_target);
        let run = RunReport::new(
            vec![ScenarioReport::new(
                "custom",
                "POST",
                &urls,
                LoadModel::Closed { concurrency: 4 },
                &two_target_phase(),
                metrics,
                (None, None),
            )],
            false,
        );
        assert!(!run.counts_consistent);
        let text = run.to_text();
        for needle in [
            "Scenario custom: POST on 2 targets",
            "  Targets:",
            "http://a:1/ok  2 conn  60 requests  60 successful  0 failed  p99 ",
            "http://b:2/ok  2 conn  40 requests  40 successful  0 failed  p99 ",
            "Server /metrics:    MISMATCH (summed over 2 targets)",
            "MISMATCH: server total_requests grew by 99, client received 100",
            "http://b:2/ok  total_requests 39/40  success_count 39/40  error_count 0/0  MISMATCH",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let v: Value = serde_json::from_str(&run.to_json()).unwrap();
        let s = &v["scenarios"][0];
        assert!(s.get("url").is_none(), "no single url with several targets");
        assert_eq!(s["urls"], serde_json::json!(urls));
        assert_eq!(s["targets"][1]["requests"]["total"], 40);
        assert_eq!(s["targets"][1]["status_codes"]["200"], 40);
        let m = &s["server_metrics"];
        assert_eq!(m["status"], "mismatch");
        assert_eq!(m["after"]["total_requests"], 99);
        assert_eq!(m["targets"][0]["check"]["ok"], true);
        assert_eq!(m["targets"][1]["check"]["ok"], false);
        assert_eq!(m["targets"][1]["url"], "http://b:2/ok");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_rate(45_234.26), "45,234.3");
        assert_eq!(fmt_rate(0.5), "0.500");
        assert_eq!(fmt_latency_short(0.85), "850µs");
        assert_eq!(fmt_latency_short(3.12), "3.1ms");
        assert_eq!(fmt_latency_short(250.0), "250ms");
        assert_eq!(fmt_latency_short(1250.0), "1.25s");
    }
}
