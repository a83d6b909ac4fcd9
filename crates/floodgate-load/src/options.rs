//! What a run is given: the servers, the scenarios it loads, how it loads
//! them and what it checks. The command line builds these; everything else
//! reads them.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;

use crate::sweep::{SweepLimits, SweepSpec};
use crate::tls::TlsOptions;

/// Smallest and largest `number` the floodgate compute endpoints accept.
pub const NUMBER_MIN: u64 = 0;
pub const NUMBER_MAX: u64 = 1_000_000;

/// Inclusive range of body numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    pub lo: u64,
    pub hi: u64,
}

/// One scenario to run, resolved from the options.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub method: Method,
    pub path: String,
    /// Requests, or jobs in the jobs scenario.
    pub requests: u64,
    /// The jobs scenario: each request submits a job that is then followed.
    pub jobs: bool,
}

impl Scenario {
    /// What it loads: requests, or jobs followed until they finish.
    pub fn unit(&self) -> &'static str {
        if self.jobs {
            "jobs"
        } else {
            "requests"
        }
    }
}

/// A run: what is loaded, how, and what is checked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Base URLs of the servers, as given (`http://host[:port][/prefix]`).
    pub urls: Vec<String>,
    /// The scenarios, in the order they run.
    pub scenarios: Vec<Scenario>,
    /// Connections over all servers: the most requests in flight.
    pub concurrency: u32,
    /// Open loop at this many requests per second; closed loop without it.
    pub rate: Option<f64>,
    /// Each scenario swept instead of measured once.
    pub sweep: Option<SweepOptions>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest a scenario (and its warmup) runs.
    pub duration: Duration,
    /// Requests (jobs) sent before each scenario and not counted.
    pub warmup: u64,
    /// Between two progress lines when stderr is not a terminal.
    pub report_interval: Duration,
    /// Each generated `number` (of a request body or a job) is drawn from this range.
    pub number_range: NumberRange,
    /// The jobs scenario: each job's `rounds`; `None` leaves the field out.
    pub rounds: Option<u64>,
    /// The jobs scenario: time between two polls of a job.
    pub poll_interval: Duration,
    /// Sent as-is with every request; without it POST, PUT and PATCH send
    /// `{"number": n}` and other methods no body.
    pub body: Option<String>,
    /// Extra headers sent with every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Call the gRPC API instead of the REST API.
    pub grpc: bool,
    /// `GET /health` every server before the first scenario.
    pub check_health: bool,
    /// Read every server's `/metrics` before and after each measured phase.
    pub read_server_metrics: bool,
    /// A scenario whose success rate (percent) is below this fails its threshold.
    pub min_success_rate: Option<f64>,
    /// A scenario whose p99 latency (milliseconds) is above this fails its threshold.
    pub max_p99_ms: Option<f64>,
    /// TLS for `https://` targets.
    pub tls: TlsOptions,
    /// The REST API over HTTP/2 (h2c with prior knowledge, `h2` by ALPN over TLS).
    pub http2: bool,
    /// HTTP/2 streams per connection: requests in flight on each (1 otherwise).
    pub streams: u32,
    /// A staged load profile instead of one rate or concurrency; it sets the
    /// measured phase's duration.
    pub stages: Option<std::sync::Arc<crate::stages::Profile>>,
    /// `--threshold`s: every scenario must meet them; those with `:abort`
    /// are also checked while it runs, and stop the run when they fail.
    pub thresholds: Vec<crate::thresholds::Threshold>,
    /// Where live metrics are pushed while the measured phases run.
    pub outputs: Vec<OutputSpec>,
    /// Between two pushes of live metrics.
    pub out_interval: Duration,
}

/// How each scenario is swept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepOptions {
    /// The rates.
    pub spec: SweepSpec,
    /// How long each step lasts.
    pub step_duration: Duration,
    /// Requests a step sends at most (`u64::MAX`: it lasts its duration).
    pub step_requests: u64,
    /// When a step meets the limits.
    pub limits: SweepLimits,
}

/// Parses `LO..=HI` or `LO-HI` (both inclusive) within 0..=1000000.
pub fn parse_number_range(s: &str) -> Result<NumberRange, String> {
    let (lo, hi) = s
        .split_once("..=")
        .or_else(|| s.split_once('-'))
        .ok_or_else(|| format!("`{s}` is not a range; use LO..=HI or LO-HI"))?;
    let num = |v: &str| {
        v.trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|_| format!("`{}` is not a non-negative integer", v.trim()))
    };
    let (lo, hi) = (num(lo)?, num(hi)?);
    if lo > hi {
        return Err(format!("empty range: {lo} > {hi}"));
    }
    if hi > NUMBER_MAX {
        return Err(format!(
            "the server only accepts numbers in {NUMBER_MIN}..={NUMBER_MAX}; use --body to send other payloads"
        ));
    }
    Ok(NumberRange { lo, hi })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_range_forms_and_limits() {
        assert_eq!(
            parse_number_range("1..=10"),
            Ok(NumberRange { lo: 1, hi: 10 })
        );
        assert_eq!(parse_number_range("5-5"), Ok(NumberRange { lo: 5, hi: 5 }));
        assert_eq!(
            parse_number_range("0..=1_000_000"),
            Ok(NumberRange {
                lo: 0,
                hi: 1_000_000
            })
        );
        assert!(parse_number_range("10..=1").is_err());
        assert!(parse_number_range("0..=1000001").is_err());
        assert!(parse_number_range("-1..=5").is_err());
        assert!(parse_number_range("7").is_err());
    }
}

/// Where live metrics go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// Prometheus remote write 1.0: snappy-compressed protobuf `WriteRequest`s.
    PrometheusRw,
    /// OTLP/HTTP metrics: protobuf `ExportMetricsServiceRequest`s.
    Otlp,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::PrometheusRw => "prometheus-rw",
            OutputKind::Otlp => "otlp",
        }
    }
}

/// An `--out KIND=URL` (parsed by `output::parse_output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub url: String,
}
