//! Sweeps (`--sweep`): open-loop steps at rising rates until the latency or
//! the errors pass their limits, giving the latency-versus-throughput curve
//! and its knee, the highest offered rate that met the limits.
//!
//! `START..END[:STEP]` runs START, START+STEP … up to END (without STEP, ten
//! evenly spaced rates) and stops at the first step over the limits. `auto`
//! searches: it starts at [`AUTO_START`] requests/s and doubles the rate while
//! steps meet the limits (halves it while they do not, if the first one did
//! not), then bisects between the highest rate that met them and the lowest
//! that did not until the two are within [`AUTO_PRECISION`] of each other.
//! It stays within [`AUTO_MIN`]..=[`AUTO_MAX`] requests/s and
//! [`AUTO_MAX_STEPS`] steps.
//!
//! A step meets the limits when its p99 latency is at most `--sweep-max-p99`
//! and its error rate at most `--sweep-max-errors`, the error rate counting
//! every request without a 2xx answer and every request the schedule could
//! not send (`unsent`: all connections were busy) among all requests due.
//! With `--sweep-retries N`, a step over the limits is run again at the same
//! rate, up to N times, and the rate's verdict is its last run: one transient
//! (a noisy neighbour, a stall of the machine) within one step then does not
//! set the knee, while a rate the server cannot sustain fails every time.
//!
//! A step over the limits while the machine's host took more than
//! `--sweep-max-steal` percent of its CPU time (steal time, see
//! [`crate::steal`]) is not judged at all: on a virtual machine whose host is
//! busy elsewhere the server and the client both pause for milliseconds at a
//! time, for seconds on end, and a step then fails at any rate. The sweep waits
//! until a second passes under the limit (at most [`CALM_WAIT`]) and runs the
//! rate again, up to [`STOLEN_RERUNS`] times in a row; after that the step is
//! judged as it is.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::stats::{percentage, LatencySummary};

/// First rate of `auto`, requests/s.
pub const AUTO_START: f64 = 1_000.0;
/// `auto` never goes above this rate…
pub const AUTO_MAX: f64 = 10_000_000.0;
/// …nor below this one.
pub const AUTO_MIN: f64 = 1.0;
/// `auto` stops bisecting once the rate that failed is within this fraction
/// above the rate that passed.
pub const AUTO_PRECISION: f64 = 0.05;
/// Steps `auto` runs at most.
pub const AUTO_MAX_STEPS: usize = 40;
/// The share of the CPU time stolen (percent) above which a step over the
/// limits is not judged (`--sweep-max-steal`). Measured on a two-core virtual
/// machine: 0–1.1 % during 188 steps at every rate, the server saturated
/// included, and 2.5 % in a step of a spell of the host's (p99 42 ms at a
/// fifteenth of the knee), whose seconds had up to 10 % stolen.
pub const DEFAULT_MAX_STEAL: f64 = 2.0;
/// Runs at one rate left unjudged in a row, at most: then the step counts.
pub const STOLEN_RERUNS: u32 = 3;
/// The longest wait for a calm second before a step left unjudged runs again.
pub const CALM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Steps a range may have.
pub const MAX_RANGE_STEPS: u64 = 1_000;
/// Steps of a range given without STEP.
pub const DEFAULT_RANGE_STEPS: u64 = 10;

/// The rates of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SweepSpec {
    /// `START..END[:STEP]`.
    Range { start: f64, end: f64, step: f64 },
    /// Search for the knee.
    Auto,
}

impl fmt::Display for SweepSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepSpec::Range { start, end, step } => write!(f, "{start}..{end}:{step}"),
            SweepSpec::Auto => f.write_str("auto"),
        }
    }
}

impl SweepSpec {
    /// Rates of a range, in order (empty for `auto`).
    pub fn rates(&self) -> Vec<f64> {
        match *self {
            SweepSpec::Range { start, end, step } => (0..)
                .map(|i| start + i as f64 * step)
                // Float steps (0.1) must not lose the last rate to rounding.
                .take_while(|r| *r <= end + step * 1e-9)
                .map(|r| r.min(end))
                .collect(),
            SweepSpec::Auto => Vec::new(),
        }
    }
}

/// Parses `START..END[:STEP]` (also `START..=END`) or `auto`.
pub fn parse_sweep(s: &str) -> Result<SweepSpec, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("auto") {
        return Ok(SweepSpec::Auto);
    }
    let usage = || format!("`{s}` is not START..END[:STEP] (e.g. 1000..20000:1000) or auto");
    let (range, step) = match s.split_once(':') {
        Some((range, step)) => (range, Some(step)),
        None => (s, None),
    };
    let (start, end) = range
        .split_once("..=")
        .or_else(|| range.split_once(".."))
        .ok_or_else(usage)?;
    let num = |v: &str| -> Result<f64, String> {
        let v = v.trim().replace('_', "");
        let n: f64 = v.parse().map_err(|_| usage())?;
        if n.is_finite() && n > 0.0 {
            Ok(n)
        } else {
            Err(format!(
                "`{v}`: rates must be positive numbers of requests per second"
            ))
        }
    };
    let (start, end) = (num(start)?, num(end)?);
    if end < start {
        return Err(format!("empty sweep: {start} > {end}"));
    }
    let step = match step {
        Some(step) => num(step)?,
        None if end == start => 1.0,
        None => (end - start) / (DEFAULT_RANGE_STEPS - 1) as f64,
    };
    let steps = ((end - start) / step + 1e-9).floor() + 1.0;
    if steps > MAX_RANGE_STEPS as f64 {
        return Err(format!(
            "{steps} steps; a sweep has at most {MAX_RANGE_STEPS} (use a larger STEP)"
        ));
    }
    Ok(SweepSpec::Range { start, end, step })
}

/// Why a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepEnd {
    /// A step of the range passed the limits.
    Threshold,
    /// Every rate of the range met the limits.
    RangeEnd,
    /// `auto` found the knee within [`AUTO_PRECISION`].
    Converged,
    /// `auto` reached [`AUTO_MIN`], [`AUTO_MAX`] or [`AUTO_MAX_STEPS`].
    Limit,
    /// Ctrl-C.
    Interrupted,
}

impl SweepEnd {
    pub fn describe(self) -> &'static str {
        match self {
            SweepEnd::Threshold => "a step went over the limits",
            SweepEnd::RangeEnd => "every rate of the range met the limits",
            SweepEnd::Converged => "the knee was found within 5 %",
            SweepEnd::Limit => "auto reached its bounds (1 to 10,000,000 req/s, 40 steps)",
            SweepEnd::Interrupted => "interrupted (Ctrl-C)",
        }
    }
}

/// What to do after the steps `done` (rate, met the limits), in the order run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Run(f64),
    Done(SweepEnd),
}

/// The rate to run again: the last step's, when it went over the limits and
/// has been run at that rate at most `retries` times in a row.
fn retry(done: &[(f64, bool)], retries: u32) -> Option<f64> {
    let &(rate, passed) = done.last()?;
    let runs = done.iter().rev().take_while(|d| d.0 == rate).count();
    (!passed && runs <= retries as usize).then_some(rate)
}

/// Each rate run, in order, with its verdict: the last of its runs in a row.
fn verdicts(done: &[(f64, bool)]) -> Vec<(f64, bool)> {
    let mut rates: Vec<(f64, bool)> = Vec::with_capacity(done.len());
    for &(rate, passed) in done {
        match rates.last_mut() {
            Some(last) if last.0 == rate => last.1 = passed,
            _ => rates.push((rate, passed)),
        }
    }
    rates
}

/// The next step of a sweep, a step over the limits being run again up to
/// `retries` times before it counts.
pub fn next_step(spec: &SweepSpec, done: &[(f64, bool)], retries: u32) -> Next {
    let runs = done.len();
    if matches!(spec, SweepSpec::Auto) && runs >= AUTO_MAX_STEPS {
        return Next::Done(SweepEnd::Limit);
    }
    if let Some(rate) = retry(done, retries) {
        return Next::Run(rate);
    }
    let done = verdicts(done);
    match spec {
        SweepSpec::Range { .. } => {
            if done.last().is_some_and(|(_, passed)| !passed) {
                return Next::Done(SweepEnd::Threshold);
            }
            match spec.rates().get(done.len()) {
                Some(&rate) => Next::Run(rate),
                None => Next::Done(SweepEnd::RangeEnd),
            }
        }
        SweepSpec::Auto => {
            let passed = done.iter().filter(|d| d.1).map(|d| d.0);
            let failed = done.iter().filter(|d| !d.1).map(|d| d.0);
            let lo = passed.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
            let hi = failed.fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))));
            match (lo, hi) {
                (None, None) => Next::Run(AUTO_START),
                (Some(lo), None) if lo * 2.0 <= AUTO_MAX => Next::Run(lo * 2.0),
                (None, Some(hi)) if hi / 2.0 >= AUTO_MIN => Next::Run(hi / 2.0),
                (Some(_), None) | (None, Some(_)) => Next::Done(SweepEnd::Limit),
                (Some(lo), Some(hi)) => {
                    if hi - lo <= lo * AUTO_PRECISION {
                        return Next::Done(SweepEnd::Converged);
                    }
                    let mid = (lo + hi) / 2.0;
                    let mid = if mid >= 10.0 { mid.round() } else { mid };
                    if mid <= lo || mid >= hi {
                        Next::Done(SweepEnd::Converged)
                    } else {
                        Next::Run(mid)
                    }
                }
            }
        }
    }
}

/// A sweep's course: the rates run with their verdicts, and the runs of the
/// current rate left unjudged for stolen time.
#[derive(Debug, Default)]
pub struct Course {
    done: Vec<(f64, bool)>,
    stolen_reruns: u32,
}

impl Course {
    /// The next step (see [`next_step`]).
    pub fn next(&self, spec: &SweepSpec, retries: u32) -> Next {
        next_step(spec, &self.done, retries)
    }

    /// Records `step`. False when it was left unjudged (see
    /// [`SweepStep::judge_steal`]): the next step is then its rate again. An
    /// interrupted step is judged.
    pub fn record(
        &mut self,
        step: &mut SweepStep,
        limits: &SweepLimits,
        interrupted: bool,
    ) -> bool {
        if !interrupted && step.judge_steal(limits, self.stolen_reruns) {
            self.stolen_reruns += 1;
            return false;
        }
        self.stolen_reruns = 0;
        self.done.push((step.offered_rate, step.passed));
        true
    }
}

/// How the limits' retries read in a report: nothing without any.
pub fn describe_retries(retries: u32) -> String {
    match retries {
        0 => String::new(),
        1 => ", a step over them run once more".to_owned(),
        n => format!(", a step over them run up to {n} more times"),
    }
}

/// How the limit on stolen time reads in a report.
pub fn describe_steal(max_steal_pct: f64) -> String {
    if max_steal_pct >= 100.0 {
        String::new()
    } else {
        format!(
            ", a step over them with more than {max_steal_pct} % of the CPU time stolen not judged (up to {STOLEN_RERUNS} times in a row)"
        )
    }
}

/// When a step meets the limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepLimits {
    /// p99 latency at most this (`--sweep-max-p99`).
    pub max_p99_ms: f64,
    /// Requests without a 2xx answer, and unsent ones, at most this percent
    /// of the requests due (`--sweep-max-errors`).
    pub max_error_rate: f64,
    /// A step over the limits is run again at its rate up to this many times,
    /// its last run deciding (`--sweep-retries`).
    #[serde(default)]
    pub retries: u32,
    /// A step over the limits while more than this percent of the machine's
    /// CPU time was stolen is not judged (`--sweep-max-steal`).
    #[serde(default = "default_max_steal")]
    pub max_steal_pct: f64,
}

fn default_max_steal() -> f64 {
    DEFAULT_MAX_STEAL
}

/// One step of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepStep {
    /// 1, 2, … in the order run.
    pub step: usize,
    /// The open-loop rate, requests/s.
    pub offered_rate: f64,
    /// Requests finished per second of the step (its `rps`).
    pub achieved_rate: f64,
    pub duration_secs: f64,
    pub requests: u64,
    pub successful: u64,
    pub failed: u64,
    pub unsent: u64,
    /// `(failed + unsent) / (requests + unsent)`, percent.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The step's `/metrics` check: `match`, `consistent`, `mismatch`,
    /// `unavailable` or `skipped`.
    pub server_metrics: String,
    /// Met the limits.
    pub passed: bool,
    /// Why not, when it did not.
    pub reason: Option<String>,
    /// The share of the machine's CPU time stolen by its host during the
    /// step, percent; `None` where the kernel does not say.
    #[serde(default)]
    pub stolen_pct: Option<f64>,
    /// Over the limits with more than `max_steal_pct` stolen: not judged, the
    /// rate was run again. Not on the curve.
    #[serde(default)]
    pub not_judged: bool,
}

/// What a step's measured phase gave: the figures of its report that the
/// sweep shows and judges.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    /// Requests finished per second of the step.
    pub rps: f64,
    pub duration_secs: f64,
    /// Requests finished: `successful + failed`.
    pub requests: u64,
    pub successful: u64,
    pub failed: u64,
    /// Due before the deadline but never sent.
    pub unsent: u64,
    /// Over the step's responses; `None` when there were none.
    pub latency_ms: Option<LatencySummary>,
    /// The step's `/metrics` check status.
    pub server_metrics: String,
    /// The share of the CPU time stolen during the step, percent.
    pub stolen_pct: Option<f64>,
}

impl SweepStep {
    /// The step from what it measured; an `interrupted` step is not judged.
    pub fn new(
        step: usize,
        offered_rate: f64,
        m: StepFigures,
        limits: &SweepLimits,
        interrupted: bool,
    ) -> Self {
        let due = m.requests + m.unsent;
        let error_rate = percentage(m.failed + m.unsent, due);
        let p99 = m.latency_ms.map(|l| l.p99_ms);
        let mut reasons = Vec::new();
        if interrupted {
            reasons.push("interrupted".to_owned());
        } else if due == 0 || p99.is_none() {
            reasons.push("no responses".to_owned());
        } else {
            if let Some(p99) = p99.filter(|p| *p > limits.max_p99_ms) {
                reasons.push(format!("p99 {p99:.3} ms over {} ms", limits.max_p99_ms));
            }
            if error_rate > limits.max_error_rate {
                reasons.push(format!(
                    "errors {error_rate:.3} % over {} %",
                    limits.max_error_rate
                ));
            }
        }
        SweepStep {
            step,
            offered_rate,
            achieved_rate: m.rps,
            duration_secs: m.duration_secs,
            requests: m.requests,
            successful: m.successful,
            failed: m.failed,
            unsent: m.unsent,
            error_rate,
            p50_ms: m.latency_ms.map(|l| l.p50_ms),
            p90_ms: m.latency_ms.map(|l| l.p90_ms),
            p99_ms: p99,
            max_ms: m.latency_ms.map(|l| l.max_ms),
            server_metrics: m.server_metrics,
            passed: reasons.is_empty(),
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            stolen_pct: m.stolen_pct,
            not_judged: false,
        }
    }

    /// When the step went over the limits with more than
    /// `limits.max_steal_pct` of the CPU time stolen and fewer than
    /// [`STOLEN_RERUNS`] runs at its rate were left unjudged before it
    /// (`reruns`), leaves it unjudged too. True when it did.
    pub fn judge_steal(&mut self, limits: &SweepLimits, reruns: u32) -> bool {
        let Some(stolen) = self.stolen_pct.filter(|s| *s > limits.max_steal_pct) else {
            return false;
        };
        if self.passed || reruns >= STOLEN_RERUNS {
            return false;
        }
        self.not_judged = true;
        self.reason = Some(format!(
            "{}; not judged: {stolen:.1} % of the CPU time stolen, run again",
            self.reason.as_deref().unwrap_or_default()
        ));
        true
    }
}

/// A scenario's sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The scenario swept.
    pub scenario: String,
    pub method: String,
    pub urls: Vec<String>,
    /// `START..END:STEP` or `auto`.
    pub rates: String,
    pub step_duration_secs: f64,
    /// Requests in flight at most (`--concurrency`).
    pub concurrency: u32,
    pub limits: SweepLimits,
    /// In the order run (by rising rate, except for `auto`'s bisection).
    pub steps: Vec<SweepStep>,
    /// The step with the highest offered rate that met the limits.
    pub knee: Option<SweepStep>,
    pub stopped: SweepEnd,
}

impl SweepReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &str,
        method: &str,
        urls: &[String],
        spec: &SweepSpec,
        step_duration: std::time::Duration,
        concurrency: u32,
        limits: SweepLimits,
        steps: Vec<SweepStep>,
        stopped: SweepEnd,
    ) -> Self {
        let knee = steps
            .iter()
            .filter(|s| s.passed)
            .max_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate))
            .cloned();
        SweepReport {
            scenario: scenario.to_owned(),
            method: method.to_owned(),
            urls: urls.to_vec(),
            rates: spec.to_string(),
            step_duration_secs: step_duration.as_secs_f64(),
            concurrency,
            limits,
            steps,
            knee,
            stopped,
        }
    }

    /// The steps judged, by rising offered rate: the curve.
    pub fn curve(&self) -> Vec<&SweepStep> {
        let mut steps: Vec<&SweepStep> = self.steps.iter().filter(|s| !s.not_judged).collect();
        steps.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
        steps
    }
}

/// One curve of `--compare`: a sweep of a JSON report, under a name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Curve {
    pub name: String,
    pub file: PathBuf,
    pub sweep: SweepReport,
}

/// What `--compare` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub curves: Vec<Curve>,
}

/// Parses `NAME=FILE`.
pub fn parse_compare(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.trim().is_empty() && !file.trim().is_empty() => {
            Ok((name.trim().to_owned(), PathBuf::from(file.trim())))
        }
        _ => Err(format!(
            "`{s}` is not NAME=FILE (a name for the curve, and a JSON report with a sweep)"
        )),
    }
}

/// The sweeps of the JSON reports `files` (name, path): one curve per sweep,
/// named `NAME`, or `NAME scenario` when a report holds several.
pub fn load_curves(files: &[(String, PathBuf)]) -> Result<Comparison, String> {
    #[derive(Deserialize)]
    struct Report {
        #[serde(default)]
        sweeps: Vec<SweepReport>,
    }
    let mut curves = Vec::new();
    for (name, path) in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let report: Report = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a floodgate-load JSON report: {e}",
                path.display()
            )
        })?;
        if report.sweeps.is_empty() {
            return Err(format!(
                "{} holds no sweep (run floodgate-load --sweep … --output json)",
                path.display()
            ));
        }
        let several = report.sweeps.len() > 1;
        for sweep in report.sweeps {
            curves.push(Curve {
                name: if several {
                    format!("{name} {}", sweep.scenario)
                } else {
                    name.clone()
                },
                file: Path::new(path).to_owned(),
                sweep,
            });
        }
    }
    Ok(Comparison { curves })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: f64, end: f64, step: f64) -> SweepSpec {
        SweepSpec::Range { start, end, step }
    }

    /// The next step without retries.
    fn next(spec: &SweepSpec, done: &[(f64, bool)]) -> Next {
        next_step(spec, done, 0)
    }

    #[test]
    fn parses_ranges_and_auto() {
        assert_eq!(
            parse_sweep("1000..20000:1000"),
            Ok(range(1000.0, 20000.0, 1000.0))
        );
        assert_eq!(
            parse_sweep("1_000..=3_000:500"),
            Ok(range(1000.0, 3000.0, 500.0))
        );
        assert_eq!(parse_sweep("AUTO"), Ok(SweepSpec::Auto));
        assert_eq!(parse_sweep("100..1000"), Ok(range(100.0, 1000.0, 100.0)));
        assert_eq!(parse_sweep("50..50"), Ok(range(50.0, 50.0, 1.0)));
        for bad in [
            "",
            "1000",
            "0..10",
            "10..5",
            "1..2:0",
            "a..b",
            "1..1000000:1",
            "1..2:-1",
        ] {
            assert!(parse_sweep(bad).is_err(), "{bad}");
        }
        assert_eq!(
            range(1000.0, 20000.0, 1000.0).to_string(),
            "1000..20000:1000"
        );
    }

    #[test]
    fn ranges_keep_their_last_rate() {
        assert_eq!(range(1.0, 2.0, 0.5).rates(), [1.0, 1.5, 2.0]);
        assert_eq!(range(0.1, 0.3, 0.1).rates().len(), 3);
        assert_eq!(range(100.0, 250.0, 100.0).rates(), [100.0, 200.0]);
        assert_eq!(parse_sweep("100..1000").unwrap().rates().len(), 10);
    }

    #[test]
    fn a_range_stops_at_its_first_failure_or_its_end() {
        let spec = range(100.0, 300.0, 100.0);
        assert_eq!(next(&spec, &[]), Next::Run(100.0));
        assert_eq!(next(&spec, &[(100.0, true)]), Next::Run(200.0));
        assert_eq!(
            next(&spec, &[(100.0, true), (200.0, false)]),
            Next::Done(SweepEnd::Threshold)
        );
        assert_eq!(
            next(&spec, &[(100.0, true), (200.0, true), (300.0, true)]),
            Next::Done(SweepEnd::RangeEnd)
        );
    }

    /// Runs `auto` against a server that meets the limits up to `capacity`.
    fn auto_against(capacity: f64) -> (Vec<(f64, bool)>, SweepEnd) {
        auto_with(0, |rate, _| rate <= capacity)
    }

    /// Runs `auto` with `retries` against a server whose `n`th step (from 0)
    /// at `rate` meets the limits when `meets(rate, n)`.
    fn auto_with(
        retries: u32,
        mut meets: impl FnMut(f64, usize) -> bool,
    ) -> (Vec<(f64, bool)>, SweepEnd) {
        let mut done = Vec::new();
        loop {
            match next_step(&SweepSpec::Auto, &done, retries) {
                Next::Run(rate) => {
                    let passed = meets(rate, done.len());
                    done.push((rate, passed));
                }
                Next::Done(end) => return (done, end),
            }
        }
    }

    /// The highest rate whose verdict (its last run) met the limits.
    fn knee(done: &[(f64, bool)]) -> f64 {
        verdicts(done)
            .iter()
            .filter(|d| d.1)
            .map(|d| d.0)
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_range_runs_a_failed_step_again_before_it_stops() {
        let spec = range(100.0, 300.0, 100.0);
        let next = |done: &[(f64, bool)]| next_step(&spec, done, 1);
        assert_eq!(next(&[(100.0, true), (200.0, false)]), Next::Run(200.0));
        // A transient: the second run meets the limits, and the range goes on.
        assert_eq!(
            next(&[(100.0, true), (200.0, false), (200.0, true)]),
            Next::Run(300.0)
        );
        assert_eq!(
            next(&[(100.0, true), (200.0, false), (200.0, false)]),
            Next::Done(SweepEnd::Threshold)
        );
        assert_eq!(
            next(&[(100.0, true), (200.0, false), (200.0, true), (300.0, true)]),
            Next::Done(SweepEnd::RangeEnd)
        );
    }

    #[test]
    fn auto_with_retries_is_not_stopped_by_one_transient() {
        // Capacity 23,456/s, and the 16,000/s step's first run (the fifth
        // step) fails by chance: without retries the knee stays below 16,000.
        let capacity = 23_456.0;
        let transient = |rate: f64, n: usize| rate <= capacity && n != 4;
        let (done, _) = auto_with(0, transient);
        assert!(knee(&done) < 16_000.0, "{done:?}");
        let (done, end) = auto_with(1, transient);
        assert_eq!(end, SweepEnd::Converged);
        assert_eq!(done[4..6], [(16_000.0, false), (16_000.0, true)]);
        let k = knee(&done);
        assert!(
            (capacity / (1.0 + AUTO_PRECISION)..=capacity).contains(&k),
            "knee {k} in {done:?}"
        );
        // A rate over capacity fails every run: the same knee, each failed
        // rate run twice.
        let (steady, _) = auto_with(1, |rate, _| rate <= capacity);
        assert_eq!(knee(&steady), knee(&auto_against(capacity).0));
        for (rate, _) in verdicts(&steady).iter().filter(|d| !d.1) {
            let runs = steady.iter().filter(|d| d.0 == *rate).count();
            assert_eq!(runs, 2, "{rate} in {steady:?}");
        }
        // Retries count toward the step bound.
        let (never, end) = auto_with(3, |_, _| false);
        assert_eq!(end, SweepEnd::Limit);
        assert!(never.len() <= AUTO_MAX_STEPS, "{never:?}");
    }

    #[test]
    fn auto_doubles_then_bisects_to_the_knee() {
        let (done, end) = auto_against(23_456.0);
        assert_eq!(end, SweepEnd::Converged);
        let rates: Vec<f64> = done.iter().map(|d| d.0).collect();
        assert_eq!(
            &rates[..6],
            [1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0, 32_000.0]
        );
        let knee = knee(&done);
        assert!(
            (23_456.0 / (1.0 + AUTO_PRECISION)..=23_456.0).contains(&knee),
            "knee {knee} in {rates:?}"
        );
        assert!(done.len() <= 12, "{rates:?}");
    }

    #[test]
    fn auto_halves_when_the_start_is_too_fast() {
        let (done, end) = auto_against(150.0);
        assert_eq!(end, SweepEnd::Converged);
        assert_eq!(
            done[..4],
            [
                (1_000.0, false),
                (500.0, false),
                (250.0, false),
                (125.0, true)
            ]
        );
        let knee = knee(&done);
        assert!((143.0..=150.0).contains(&knee), "{done:?}");
    }

    #[test]
    fn auto_stays_within_its_bounds() {
        let (done, end) = auto_against(f64::INFINITY);
        assert_eq!(end, SweepEnd::Limit);
        assert_eq!(done.last().unwrap().0, 8_192_000.0);
        let (done, end) = auto_against(0.0);
        assert_eq!(end, SweepEnd::Limit);
        assert!(done.iter().all(|d| !d.1 && d.0 >= AUTO_MIN));
        assert!(done.len() <= AUTO_MAX_STEPS);
    }

    /// A step at `rate` with the verdict `passed` (its figures do not matter here).
    fn step_at(n: usize, rate: f64, passed: bool, stolen_pct: f64) -> SweepStep {
        let figures = StepFigures {
            rps: rate,
            duration_secs: 1.0,
            requests: 100,
            successful: 100,
            failed: 0,
            unsent: 0,
            latency_ms: None,
            server_metrics: "skipped".to_owned(),
            stolen_pct: Some(stolen_pct),
        };
        let mut step = SweepStep::new(n, rate, figures, &LIMITS, false);
        step.passed = passed;
        step.reason = (!passed).then(|| "p99 over".to_owned());
        step
    }

    const LIMITS: SweepLimits = SweepLimits {
        max_p99_ms: 10.0,
        max_error_rate: 1.0,
        retries: 1,
        max_steal_pct: 2.0,
    };

    /// Runs `auto` (one retry) through a [`Course`] against a server whose
    /// `n`th run (from 1) at `rate` meets the limits when `meets(rate, n)`,
    /// with 10 % of the CPU time stolen during the runs `stolen(n)` and 0.1 %
    /// during the others. The steps run and the knee.
    fn course_with(
        meets: impl Fn(f64, usize) -> bool,
        stolen: impl Fn(usize) -> bool,
    ) -> (Vec<SweepStep>, f64) {
        let (mut course, mut steps) = (Course::default(), Vec::<SweepStep>::new());
        while let Next::Run(rate) = course.next(&SweepSpec::Auto, LIMITS.retries) {
            let n = steps.len() + 1;
            let share = if stolen(n) { 10.0 } else { 0.1 };
            let mut step = step_at(n, rate, meets(rate, n), share);
            let judged = course.record(&mut step, &LIMITS, false);
            assert_eq!(judged, !step.not_judged);
            assert_eq!(step.stolen_pct, Some(share));
            steps.push(step);
        }
        let knee = steps
            .iter()
            .filter(|s| s.passed)
            .map(|s| s.offered_rate)
            .fold(0.0, f64::max);
        (steps, knee)
    }

    #[test]
    fn steps_over_the_limits_while_the_host_took_the_cpus_are_run_again_unjudged() {
        let capacity = 23_456.0;
        let (calm, calm_knee) = course_with(|rate, _| rate <= capacity, |_| false);
        assert!(calm.iter().all(|s| !s.not_judged));
        // Runs 2 to 4 (2,000/s) fail while the host takes the CPUs: none counts, and the
        // search goes on from the fifth as if they had not been.
        let (steps, knee) = course_with(
            |rate, n| rate <= capacity && !(2..=4).contains(&n),
            |n| (2..=4).contains(&n),
        );
        let unjudged: Vec<(f64, bool)> = steps[..5]
            .iter()
            .map(|s| (s.offered_rate, s.not_judged))
            .collect();
        assert_eq!(
            unjudged,
            [
                (1_000.0, false),
                (2_000.0, true),
                (2_000.0, true),
                (2_000.0, true),
                (2_000.0, false)
            ]
        );
        assert_eq!(knee, calm_knee);
        let judged = |steps: &[SweepStep]| -> Vec<(f64, bool)> {
            steps
                .iter()
                .filter(|s| !s.not_judged)
                .map(|s| (s.offered_rate, s.passed))
                .collect()
        };
        assert_eq!(judged(&steps), judged(&calm));
        // With the host busy every other run, a pass then stands, and a rate over the
        // capacity failing then is run again and fails calm: the same knee.
        let (steps, knee) = course_with(|rate, _| rate <= capacity, |n| n % 2 == 0);
        assert!(steps.iter().any(|s| s.passed && s.step % 2 == 0));
        assert!(steps.iter().all(|s| !(s.passed && s.not_judged)));
        assert!(steps.iter().any(|s| s.not_judged), "{steps:?}");
        assert_eq!(knee, calm_knee);
    }

    #[test]
    fn a_step_left_unjudged_three_times_in_a_row_counts_the_fourth() {
        // 2,000/s fails under steal in runs 2 to 5: the fourth of them counts as a failure,
        // its retry (run 6, calm) passes, and the knee is where it would have been.
        let capacity = 23_456.0;
        let (steps, knee) = course_with(
            |rate, n| rate <= capacity && !(2..=5).contains(&n),
            |n| (2..=5).contains(&n),
        );
        let runs: Vec<(f64, bool, bool)> = steps[..6]
            .iter()
            .map(|s| (s.offered_rate, s.not_judged, s.passed))
            .collect();
        assert_eq!(
            runs,
            [
                (1_000.0, false, true),
                (2_000.0, true, false),
                (2_000.0, true, false),
                (2_000.0, true, false),
                (2_000.0, false, false),
                (2_000.0, false, true),
            ]
        );
        assert_eq!(knee, course_with(|rate, _| rate <= capacity, |_| false).1);
    }

    #[test]
    fn the_curve_leaves_out_the_steps_not_judged() {
        let mut unjudged = step_at(2, 2_000.0, false, 10.0);
        assert!(unjudged.judge_steal(&LIMITS, 0));
        let steps = vec![
            step_at(1, 1_000.0, true, 0.0),
            unjudged,
            step_at(3, 2_000.0, true, 0.0),
        ];
        let report = SweepReport::new(
            "fast",
            "POST",
            &[],
            &SweepSpec::Auto,
            std::time::Duration::from_secs(1),
            1,
            LIMITS,
            steps,
            SweepEnd::Converged,
        );
        let curve: Vec<usize> = report.curve().iter().map(|s| s.step).collect();
        assert_eq!(curve, [1, 3]);
        assert_eq!(report.knee.as_ref().unwrap().step, 3);
        // A report from before steal time was recorded reads as judged steps.
        let mut old = serde_json::to_value(&report).unwrap();
        for step in old["steps"].as_array_mut().unwrap() {
            let step = step.as_object_mut().unwrap();
            step.remove("stolen_pct");
            step.remove("not_judged");
        }
        old["limits"]
            .as_object_mut()
            .unwrap()
            .remove("max_steal_pct");
        let old: SweepReport = serde_json::from_value(old).unwrap();
        assert_eq!(old.curve().len(), 3);
        assert_eq!(old.limits.max_steal_pct, DEFAULT_MAX_STEAL);
    }

    #[test]
    fn compare_arguments() {
        assert_eq!(
            parse_compare("floodgate=target/a.json"),
            Ok(("floodgate".into(), PathBuf::from("target/a.json")))
        );
        assert!(parse_compare("a.json").is_err());
        assert!(parse_compare("=a.json").is_err());
    }
}
