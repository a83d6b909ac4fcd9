//! Thresholds (`--threshold EXPR`): a condition on one of the report's
//! figures that a scenario must meet, checked at its end; with `:abort`,
//! also while it runs, stopping the run as soon as it fails.
//!
//! `EXPR` is `METRIC OP VALUE[UNIT][:abort]`, e.g. `p99<10ms`,
//! `error_rate<0.1`, `5xx<1%`, `rps>=5000`, `server_check==match`:
//!
//! - latency of the responses: `p50 p90 p95 p99 p99.9 p99.99 min mean max`
//!   (`p(99)` too), in `ms` unless `us` or `s` is given;
//! - connection set-up (TCP and TLS): `setup_p50 setup_p99 setup_max`, ms;
//! - `rps`, the requests finished per second;
//! - counts: `requests errors successful timeouts connection_errors unsent`,
//!   a status class `2xx`…`5xx` or a status `429`: a number of requests, or
//!   with `%` a share of the requests finished (`unsent`: of those due);
//! - `error_rate`, `success_rate`: percent of the requests finished;
//! - `server_check`: the `/metrics` cross-check, `match`, `consistent`,
//!   `mismatch`, `unavailable` or `skipped` (only `==` and `!=`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::stats::LatencySummary;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds<T: PartialOrd>(self, actual: T, limit: T) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
            Op::Ne => actual != limit,
        }
    }
}

/// A latency figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    P50,
    P90,
    P95,
    P99,
    P999,
    P9999,
    Min,
    Mean,
    Max,
}

impl Pick {
    fn of(self, l: &LatencySummary) -> f64 {
        match self {
            Pick::P50 => l.p50_ms,
            Pick::P90 => l.p90_ms,
            Pick::P95 => l.p95_ms,
            Pick::P99 => l.p99_ms,
            Pick::P999 => l.p99_9_ms,
            Pick::P9999 => l.p99_99_ms,
            Pick::Min => l.min_ms,
            Pick::Mean => l.mean_ms,
            Pick::Max => l.max_ms,
        }
    }

    fn parse(s: &str) -> Option<Pick> {
        let s = s
            .strip_prefix("p(")
            .and_then(|r| r.strip_suffix(')'))
            .map_or_else(|| s.to_owned(), |q| format!("p{q}"));
        Some(match s.as_str() {
            "p50" | "median" => Pick::P50,
            "p90" => Pick::P90,
            "p95" => Pick::P95,
            "p99" => Pick::P99,
            "p99.9" => Pick::P999,
            "p99.99" => Pick::P9999,
            "min" => Pick::Min,
            "mean" | "avg" => Pick::Mean,
            "max" => Pick::Max,
            _ => return None,
        })
    }
}

/// A count of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Requests,
    Errors,
    Successful,
    Timeouts,
    ConnectionErrors,
    Unsent,
    /// Responses with a status of this class (2 for 2xx …).
    Class(u16),
    /// Responses with this status.
    Status(u16),
}

/// What a threshold is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Latency(Pick),
    Setup(Pick),
    Rps,
    /// A count, or with `percent` its share of the requests finished.
    Count {
        count: Count,
        percent: bool,
    },
    ErrorRate,
    SuccessRate,
    ServerCheck,
}

/// The values `server_check` takes.
const CHECK_STATUSES: [&str; 5] = ["match", "consistent", "mismatch", "unavailable", "skipped"];

/// A `--threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// As given.
    pub expression: String,
    pub metric: Metric,
    pub op: Op,
    /// In the metric's unit (ms, req/s, requests or percent).
    pub limit: f64,
    /// `server_check`'s expected status.
    pub word: Option<String>,
    /// Checked while the run goes; stops it when it fails.
    pub abort: bool,
}

/// Parses `METRIC OP VALUE[UNIT][:abort]`.
pub fn parse_threshold(s: &str) -> Result<Threshold, String> {
    let expression = s.trim();
    let (body, abort) = match expression.rsplit_once(':') {
        Some((body, "abort")) => (body.trim(), true),
        Some((_, other)) => {
            return Err(format!(
                "`{s}`: `:{other}` is not a flag (the only one is `:abort`)"
            ))
        }
        None => (expression, false),
    };
    let at = body
        .find(['<', '>', '=', '!'])
        .ok_or_else(|| format!("`{s}` is not METRIC OP VALUE (e.g. p99<10ms, error_rate<0.1)"))?;
    let (name, rest) = (body[..at].trim(), &body[at..]);
    let (op, value) = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(text, op)| rest.strip_prefix(text).map(|v| (*op, v.trim())))
    .ok_or_else(|| format!("`{s}`: no comparison (<, <=, >, >=, ==, !=)"))?;
    let unknown = || {
        format!(
            "`{s}`: unknown metric `{name}` (p50 … p99.99, min, mean, max, setup_p99, rps, requests, errors, successful, timeouts, connection_errors, unsent, 2xx … 5xx, a status such as 429, error_rate, success_rate, server_check)"
        )
    };
    let metric = if let Some(pick) = Pick::parse(name) {
        Metric::Latency(pick)
    } else if let Some(pick) = name.strip_prefix("setup_").and_then(Pick::parse) {
        Metric::Setup(pick)
    } else {
        let count = |count| Metric::Count {
            count,
            percent: false,
        };
        match name {
            "rps" => Metric::Rps,
            "error_rate" => Metric::ErrorRate,
            "success_rate" => Metric::SuccessRate,
            "server_check" => Metric::ServerCheck,
            "requests" => count(Count::Requests),
            "errors" | "failed" => count(Count::Errors),
            "successful" => count(Count::Successful),
            "timeouts" => count(Count::Timeouts),
            "connection_errors" => count(Count::ConnectionErrors),
            "unsent" => count(Count::Unsent),
            "rate_limited" => count(Count::Status(429)),
            _ => match name.as_bytes() {
                [c @ b'1'..=b'5', b'x', b'x'] => count(Count::Class(u16::from(c - b'0'))),
                [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                    count(Count::Status(name.parse().expect("three digits")))
                }
                _ => return Err(unknown()),
            },
        }
    };
    if metric == Metric::ServerCheck {
        if !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!("`{s}`: server_check takes == or !="));
        }
        if !CHECK_STATUSES.contains(&value) {
            return Err(format!(
                "`{s}`: server_check is one of {}",
                CHECK_STATUSES.join(", ")
            ));
        }
        if abort {
            return Err(format!(
                "`{s}`: the server check is made after the run; it cannot abort it"
            ));
        }
        return Ok(Threshold {
            expression: expression.to_owned(),
            metric,
            op,
            limit: 0.0,
            word: Some(value.to_owned()),
            abort,
        });
    }
    let (number, unit) = split_unit(value);
    let mut limit: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}`: `{value}` is not a number"))?;
    if !limit.is_finite() {
        return Err(format!("`{s}`: `{value}` is not a number"));
    }
    let metric = match (metric, unit) {
        (Metric::Latency(_) | Metric::Setup(_), "" | "ms") => metric,
        (Metric::Latency(_) | Metric::Setup(_), "s") => {
            limit *= 1e3;
            metric
        }
        (Metric::Latency(_) | Metric::Setup(_), "us" | "µs") => {
            limit /= 1e3;
            metric
        }
        (Metric::Rps, "" | "/s") => metric,
        (Metric::ErrorRate | Metric::SuccessRate, "" | "%") => metric,
        (Metric::Count { count, .. }, "") => Metric::Count {
            count,
            percent: false,
        },
        (Metric::Count { count, .. }, "%") => Metric::Count {
            count,
            percent: true,
        },
        _ => return Err(format!("`{s}`: `{unit}` is not a unit of `{name}`")),
    };
    if matches!(
        metric,
        Metric::Count {
            count: Count::Unsent,
            ..
        }
    ) && abort
    {
        return Err(format!("`{s}`: unsent requests are known at the end only"));
    }
    Ok(Threshold {
        expression: expression.to_owned(),
        metric,
        op,
        limit,
        word: None,
        abort,
    })
}

/// `10ms` → (`10`, `ms`).
fn split_unit(value: &str) -> (&str, &str) {
    let at = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(at);
    (number.trim(), unit.trim())
}

/// The figures a threshold can be about: those of a scenario's report, or
/// of a phase while it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Requests finished: responses and transport errors.
    pub requests: u64,
    pub successful: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    /// Open loop: due but never sent (known at the end only).
    pub unsent: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub rps: f64,
    pub latency: Option<LatencySummary>,
    pub setup: Option<LatencySummary>,
    /// The server check's status (after the run only).
    pub server_check: Option<String>,
}

/// A threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// `success_rate` or `p99_ms` (`--fail-under-success-rate`,
    /// `--fail-over-p99`), or the `--threshold` expression as given.
    pub name: String,
    /// `--threshold`: the metric, the comparison and the unit of `limit`
    /// and `actual` (`ms`, `req/s`, `requests`, `%`, or none for the check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A number, or the server check's expected status.
    pub limit: Value,
    /// `null` when there was nothing to judge (no responses for a latency).
    pub actual: Option<Value>,
    pub passed: bool,
    /// `:abort`: checked while the run went.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub abort: bool,
    /// It failed while the run went, and stopped it this many seconds into
    /// the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_at_secs: Option<f64>,
}

impl ThresholdResult {
    /// The verdict line of the text report: `p99<10ms: 12.300 ms FAIL`.
    pub fn describe(&self) -> String {
        let actual = match &self.actual {
            None => "n/a".to_owned(),
            Some(Value::Number(n)) => format!("{:.3}", n.as_f64().unwrap_or(f64::NAN)),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let unit = self
            .unit
            .as_deref()
            .filter(|u| !u.is_empty())
            .map_or_else(String::new, |u| format!(" {u}"));
        // Limits as given: `10`, not `10.0`.
        let limit = match &self.limit {
            Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |v| v.to_string()),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let mut line = match &self.op {
            Some(op) if self.limit.is_string() => format!("{actual} (required {op} {limit})"),
            Some(op) => format!("{actual}{unit} (required {op} {limit}{unit})"),
            None => {
                let rel = if self.name == "success_rate" {
                    ">="
                } else {
                    "<="
                };
                format!("{actual} (required {rel} {limit})")
            }
        };
        line.push_str(if self.passed { " PASS" } else { " FAIL" });
        if let Some(at) = self.aborted_at_secs {
            let _ = write!(line, ", stopped the run at {at:.1} s");
        }
        line
    }
}

impl Threshold {
    /// The name of its metric and the unit of its limit.
    fn metric_unit(&self) -> (String, &'static str) {
        let (name, _) = self
            .expression
            .split_once(['<', '>', '=', '!'])
            .unwrap_or((&self.expression, ""));
        let unit = match self.metric {
            Metric::Latency(_) | Metric::Setup(_) => "ms",
            Metric::Rps => "req/s",
            Metric::Count { percent: true, .. } | Metric::ErrorRate | Metric::SuccessRate => "%",
            Metric::Count { .. } => "requests",
            Metric::ServerCheck => "",
        };
        (name.trim().to_owned(), unit)
    }

    /// Its metric's value in `f`: `None` when there is nothing to judge.
    pub fn actual(&self, f: &Figures) -> Option<Value> {
        let share = |n: u64, of: u64| (of > 0).then(|| n as f64 * 100.0 / of as f64);
        let number = match self.metric {
            Metric::Latency(pick) => f.latency.as_ref().map(|l| pick.of(l)),
            Metric::Setup(pick) => f.setup.as_ref().map(|l| pick.of(l)),
            Metric::Rps => Some(f.rps),
            Metric::ErrorRate => share(f.failed, f.requests),
            Metric::SuccessRate => share(f.successful, f.requests),
            Metric::ServerCheck => return f.server_check.clone().map(Value::from),
            Metric::Count { count, percent } => {
                let n = match count {
                    Count::Requests => f.requests,
                    Count::Errors => f.failed,
                    Count::Successful => f.successful,
                    Count::Timeouts => f.timeouts,
                    Count::ConnectionErrors => f.connection_errors,
                    Count::Unsent => f.unsent,
                    Count::Class(c) => f
                        .statuses
                        .range(c * 100..(c + 1) * 100)
                        .map(|(_, n)| n)
                        .sum(),
                    Count::Status(s) => f.statuses.get(&s).copied().unwrap_or(0),
                };
                if !percent {
                    Some(n as f64)
                } else if count == Count::Unsent {
                    share(n, f.requests + f.unsent)
                } else {
                    share(n, f.requests)
                }
            }
        };
        number.map(Value::from)
    }

    /// Whether `f` meets it; `None` when there is nothing to judge.
    pub fn holds(&self, f: &Figures) -> Option<bool> {
        match (self.actual(f)?, &self.word) {
            (Value::String(actual), Some(word)) => Some(self.op.holds(actual.as_str(), word)),
            (Value::Number(n), None) => Some(self.op.holds(n.as_f64()?, self.limit)),
            _ => None,
        }
    }

    /// Whether the figures so far of a running phase show it failed: only
    /// for `:abort` thresholds, and only once there is something to judge
    /// (a response for a latency, a request for a share; a second of it for
    /// a rate).
    pub fn lost_while_running(&self, f: &Figures, elapsed_secs: f64) -> bool {
        if !self.abort || (self.metric == Metric::Rps && elapsed_secs < 1.0) {
            return false;
        }
        self.holds(f) == Some(false)
    }

    /// Its outcome on a scenario's figures.
    pub fn evaluate(&self, f: &Figures) -> ThresholdResult {
        let (metric, unit) = self.metric_unit();
        ThresholdResult {
            name: self.expression.clone(),
            metric: Some(metric),
            op: Some(self.op.as_str().to_owned()),
            unit: Some(unit.to_owned()),
            limit: match &self.word {
                Some(word) => Value::from(word.clone()),
                None => Value::from(self.limit),
            },
            actual: self.actual(f),
            // Nothing to judge fails: no responses cannot meet a latency bound.
            passed: self.holds(f).unwrap_or(false),
            abort: self.abort,
            aborted_at_secs: None,
        }
    }

    /// Whether checking it while the run goes needs the latency histograms.
    pub fn needs_latency(&self) -> bool {
        matches!(self.metric, Metric::Latency(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> Figures {
        Figures {
            requests: 1000,
            successful: 990,
            failed: 10,
            timeouts: 2,
            connection_errors: 1,
            unsent: 0,
            statuses: BTreeMap::from([(200, 990), (429, 5), (503, 2)]),
            rps: 5012.5,
            latency: Some(LatencySummary {
                min_ms: 0.1,
                mean_ms: 1.0,
                max_ms: 30.0,
                p50_ms: 0.8,
                p90_ms: 2.0,
                p95_ms: 3.0,
                p99_ms: 9.5,
                p99_9_ms: 20.0,
                p99_99_ms: 29.0,
            }),
            setup: None,
            server_check: Some("match".into()),
        }
    }

    fn check(expr: &str) -> Option<bool> {
        parse_threshold(expr).unwrap().holds(&figures())
    }

    #[test]
    fn the_forms_people_gate_on() {
        assert_eq!(check("p99<10ms"), Some(true));
        assert_eq!(check("p99 < 10"), Some(true));
        assert_eq!(check("p(99)<9ms"), Some(false));
        assert_eq!(check("p99.9<=0.02s"), Some(true));
        assert_eq!(check("max<30000us"), Some(false));
        assert_eq!(check("error_rate<1"), Some(false), "exactly 1 %");
        assert_eq!(check("error_rate<=1%"), Some(true));
        assert_eq!(check("errors<0.1%"), Some(false));
        assert_eq!(check("errors<=10"), Some(true));
        assert_eq!(check("success_rate>=99"), Some(true));
        assert_eq!(check("rps>5000"), Some(true));
        assert_eq!(check("rps>5000/s"), Some(true));
        assert_eq!(check("5xx<0.1%"), Some(false));
        assert_eq!(check("4xx<=5"), Some(true));
        assert_eq!(check("2xx>=99%"), Some(true));
        assert_eq!(check("429==5"), Some(true));
        assert_eq!(check("rate_limited<1"), Some(false));
        assert_eq!(check("timeouts==0"), Some(false));
        assert_eq!(check("connection_errors<2"), Some(true));
        assert_eq!(check("server_check==match"), Some(true));
        assert_eq!(check("server_check!=mismatch"), Some(true));
        assert_eq!(check("setup_p99<5ms"), None, "nothing to judge");
        let t = parse_threshold("p99<10ms:abort").unwrap();
        assert!(t.abort && t.needs_latency());
        assert_eq!((t.limit, t.op), (10.0, Op::Lt));
    }

    #[test]
    fn what_is_not_a_threshold() {
        for bad in [
            "p99",
            "p98<10",
            "p99<10kg",
            "p99<fast",
            "rps>5%",
            "errors~1",
            "server_check<match",
            "server_check==fine",
            "server_check==match:abort",
            "unsent<1:abort",
            "p99<10ms:later",
            "600<1",
        ] {
            assert!(parse_threshold(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outcomes_carry_the_metric_the_limit_and_the_value() {
        let r = parse_threshold("p99<5ms").unwrap().evaluate(&figures());
        assert_eq!(r.name, "p99<5ms");
        assert_eq!(
            (r.metric.as_deref(), r.op.as_deref(), r.unit.as_deref()),
            (Some("p99"), Some("<"), Some("ms"))
        );
        assert_eq!(
            (r.limit.clone(), r.actual.clone()),
            (Value::from(5.0), Some(Value::from(9.5)))
        );
        assert!(!r.passed);
        assert_eq!(r.describe(), "9.500 ms (required < 5 ms) FAIL");
        let r = parse_threshold("server_check==match")
            .unwrap()
            .evaluate(&figures());
        assert!(r.passed);
        assert_eq!(r.describe(), "match (required == match) PASS");
        let mut none = figures();
        none.latency = None;
        let r = parse_threshold("p99<5ms").unwrap().evaluate(&none);
        assert!(!r.passed, "no responses fail a latency bound");
        assert_eq!(r.actual, None);
    }

    #[test]
    fn while_running_only_abort_thresholds_with_something_to_judge_count() {
        let f = figures();
        assert!(!parse_threshold("p99<5ms")
            .unwrap()
            .lost_while_running(&f, 5.0));
        assert!(parse_threshold("p99<5ms:abort")
            .unwrap()
            .lost_while_running(&f, 5.0));
        assert!(!parse_threshold("rps>9000:abort")
            .unwrap()
            .lost_while_running(&f, 0.5));
        assert!(parse_threshold("rps>9000:abort")
            .unwrap()
            .lost_while_running(&f, 1.5));
        let empty = Figures::default();
        assert!(!parse_threshold("error_rate<1:abort")
            .unwrap()
            .lost_while_running(&empty, 3.0));
        assert!(!parse_threshold("p99<5ms:abort")
            .unwrap()
            .lost_while_running(&empty, 3.0));
    }
}
