//! The HTML report (`--output html`): one self-contained page, no script,
//! no external resource, so it opens offline and can be attached to a CI run.
//!
//! Every number on the page is formatted from the value the JSON report
//! holds (the page also carries the JSON report itself, under "JSON
//! report"), and every figure shown as a number carries that value in a
//! `data-value` attribute (its element's id is `s{scenario}-{field}`), so the
//! two can be checked against each other. The charts are inline SVG (see
//! [`crate::chart`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::chart::{
    escape, fmt_number, Bar, BarChart, LineChart, Rule, Scale, Series, PALETTE, WIDE,
};
use crate::report::{
    fmt_percent, fmt_rate, fmt_target, thousands, JobsReport, RunReport, ScenarioReport,
    ServerMetrics, StageReport, TransportReport,
};
use crate::run::{LoadModel, StopReason};
use crate::sweep::{Comparison, SweepReport};
use crate::timeline::{TimelinePoint, TimelineReport};

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #ffffff; --panel: #f6f8fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
main { max-width: 1120px; margin: 0 auto; padding: 24px; }
header h1 { font-size: 22px; margin: 0 0 4px; }
header p, p.meta { color: var(--muted); margin: 0 0 12px; }
section { border-top: 1px solid var(--line); padding-top: 16px; margin-top: 24px; }
h2 { font-size: 18px; margin: 0 0 4px; word-break: break-all; }
h3 { font-size: 15px; margin: 18px 0 6px; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 12px 0; }
dl.figures div { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
dl.figures dt { color: var(--muted); font-size: 12px; }
dl.figures dd { margin: 0; font-size: 16px; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 16px; }
.charts.wide { grid-template-columns: 1fr; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
figure h3 { margin: 0 0 4px; }
figure p { margin: 2px 0 0; color: var(--muted); font-size: 12px; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart .grid line { stroke: #e3e7ee; stroke-width: 1; }
svg.chart .frame { fill: none; stroke: #aab2c0; }
svg.chart text { font: 12px system-ui, sans-serif; fill: var(--muted); }
svg.chart .axis-label { font-size: 13px; fill: var(--fg); }
svg.chart .legend text { fill: var(--fg); }
svg.chart .rule { stroke-width: 1.2; stroke-dasharray: 3 3; }
svg.chart .bar-label { fill: var(--fg); }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { color: var(--muted); font-weight: 600; }
.ok { color: #1a7f37; } .bad { color: #c62828; font-weight: 600; }
td.ok, td.bad { text-align: left; }
details { margin-top: 24px; } pre { background: var(--panel); border: 1px solid var(--line); padding: 10px; overflow: auto; max-height: 480px; font-size: 12px; }
"#;

/// The report as one HTML page.
pub fn render(report: &RunReport) -> String {
    let mut out = String::new();
    page_start(&mut out, "floodgate-load report");
    let _ = write!(
        out,
        "<header><h1>floodgate-load report</h1><p>floodgate-load {}, generated {}{}</p></header>",
        env!("CARGO_PKG_VERSION"),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        if report.interrupted {
            " — interrupted by Ctrl-C: the scenarios that did not run are missing"
        } else {
            ""
        }
    );
    for (i, sweep) in report.sweeps.iter().enumerate() {
        write_sweep(&mut out, i, sweep);
    }
    for (i, s) in report.scenarios.iter().enumerate() {
        write_scenario(&mut out, i, s);
    }
    write_json(&mut out, "JSON report", report);
    page_end(&mut out);
    out
}

fn page_start(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(title)
    );
}

fn page_end(out: &mut String) {
    out.push_str("</main></body></html>\n");
}

/// The JSON document the page was made from, for copying and checking.
pub fn write_json(out: &mut String, label: &str, value: &impl Serialize) {
    let json = serde_json::to_string_pretty(value).expect("report serializes");
    let _ = write!(
        out,
        "<details id=\"json\"><summary>{}</summary><pre id=\"report-json\">{}</pre></details>",
        escape(label),
        escape(&json)
    );
}

/// A figure: `<div><dt>label</dt><dd id data-value>shown</dd></div>`.
/// `value` is the JSON value it shows, written as the JSON report writes it.
fn figure(out: &mut String, id: &str, label: &str, value: &impl Serialize, shown: &str) {
    let _ = write!(
        out,
        "<div><dt>{}</dt><dd id=\"{}\" data-value=\"{}\">{}</dd></div>",
        escape(label),
        escape(id),
        escape(&serde_json::to_string(value).expect("a number serializes")),
        escape(shown)
    );
}

/// A latency as the page shows it: `0.512 ms`.
pub fn fmt_ms(ms: f64) -> String {
    format!("{} ms", fmt_number(ms, 3))
}

fn describe_model(model: &LoadModel) -> String {
    match *model {
        LoadModel::Closed { concurrency } => format!(
            "closed loop, {} connections",
            thousands(u64::from(concurrency))
        ),
        LoadModel::Open { rate, concurrency } => format!(
            "open loop, {} req/s scheduled, at most {} in flight (latency from the scheduled send time)",
            fmt_rate(rate),
            thousands(u64::from(concurrency))
        ),
    }
}

/// `HTTP/2, 8 streams per connection, TLSv1.3 (ALPN h2)`.
fn describe_transport(t: &TransportReport) -> String {
    let mut out = t.protocol.clone();
    if t.streams_per_connection > 1 {
        let _ = write!(out, ", {} streams per connection", t.streams_per_connection);
    }
    if let Some(tls) = &t.tls {
        let _ = write!(out, ", {} {}", tls.version, tls.cipher);
        if let Some(alpn) = &tls.alpn {
            let _ = write!(out, " (ALPN {alpn})");
        }
        if t.tls_verified == Some(false) {
            out.push_str(", certificate NOT checked (--insecure)");
        }
    }
    out
}

fn describe_stop(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Requests => "all requests sent",
        StopReason::Duration => "duration limit reached",
        StopReason::Interrupted => "interrupted (Ctrl-C)",
        StopReason::Aborted => "a threshold failed (:abort)",
    }
}

/// One scenario's section: heading, figures, charts, the server check, the
/// targets, thresholds and jobs.
fn write_scenario(out: &mut String, i: usize, s: &ScenarioReport) {
    let _ = write!(
        out,
        "<section class=\"scenario\" id=\"s{i}\" data-name=\"{}\">",
        escape(&s.name)
    );
    write_heading(out, s);
    write_figures(out, i, s);

    out.push_str("<div class=\"charts\">");
    write_percentile_chart(out, i, s);
    write_timeline_charts(out, i, s);
    write_status_chart(out, i, s);
    write_error_chart(out, i, s);
    out.push_str("</div>");
    if s.error_codes.is_empty() && s.requests.failed == 0 {
        out.push_str("<p class=\"meta ok\">No errors.</p>");
    }

    write_stages(out, i, s);
    write_server_metrics(out, i, &s.server_metrics);
    if s.targets.len() > 1 {
        write_targets(out, s);
    }
    write_thresholds(out, i, s);
    if let Some(j) = &s.jobs {
        write_jobs(out, i, j);
    }
    out.push_str("</section>");
}

/// The id of a scenario's element: `s{scenario}-{field}`.
fn field_id(i: usize, field: &str) -> String {
    format!("s{i}-{field}")
}

/// `Scenario fast: POST http://…`, then the load model, why it stopped and
/// how long it ran.
fn write_heading(out: &mut String, s: &ScenarioReport) {
    let target = match &s.url {
        Some(url) => url.clone(),
        None => format!("{} targets", s.targets.len()),
    };
    let step = s
        .sweep_step
        .map_or_else(String::new, |n| format!(" (sweep step {n})"));
    let model = if s.stages.is_empty() {
        describe_model(&s.load_model)
    } else {
        format!(
            "{} loop, {} stages up to {} {}",
            if matches!(s.load_model, LoadModel::Open { .. }) {
                "open"
            } else {
                "closed"
            },
            s.stages.len(),
            fmt_target(s.stages.iter().map(|t| t.to).fold(0.0, f64::max)),
            s.stages[0].unit
        )
    };
    let transport = s
        .transport
        .as_ref()
        .map_or_else(String::new, |t| format!(" · {}", describe_transport(t)));
    let _ = write!(
        out,
        "<h2>Scenario {}{step}: {} {}</h2><p class=\"meta\">{}{} · stopped: {} · {:.3} s</p>",
        escape(&s.name),
        escape(&s.method),
        escape(&target),
        escape(&model),
        escape(&transport),
        describe_stop(s.stop_reason),
        s.duration_secs
    );
}

/// The headline figures: counts, rate, duration, latency percentiles and
/// errors by kind.
fn write_figures(out: &mut String, i: usize, s: &ScenarioReport) {
    let id = |field: &str| field_id(i, field);
    let r = &s.requests;
    out.push_str("<dl class=\"figures\">");
    figure(out, &id("total"), "Requests", &r.total, &thousands(r.total));
    figure(
        out,
        &id("successful"),
        "Successful",
        &r.successful,
        &thousands(r.successful),
    );
    figure(
        out,
        &id("failed"),
        "Failed",
        &r.failed,
        &thousands(r.failed),
    );
    figure(
        out,
        &id("success-rate"),
        "Success rate",
        &r.success_rate,
        &format!("{} %", fmt_percent(r.success_rate)),
    );
    figure(out, &id("rps"), "Requests/s", &s.rps, &fmt_rate(s.rps));
    figure(
        out,
        &id("duration"),
        "Duration",
        &s.duration_secs,
        &format!("{:.3} s", s.duration_secs),
    );
    if let Some(l) = &s.latency_ms {
        for (field, label, v) in [
            ("p50", "p50", l.p50_ms),
            ("p90", "p90", l.p90_ms),
            ("p99", "p99", l.p99_ms),
            ("p99-9", "p99.9", l.p99_9_ms),
            ("max", "max", l.max_ms),
        ] {
            figure(out, &id(field), label, &v, &fmt_ms(v));
        }
    }
    figure(
        out,
        &id("rate-limited"),
        "Rate-limited (429)",
        &r.rate_limited,
        &thousands(r.rate_limited),
    );
    figure(
        out,
        &id("timeouts"),
        "Timeouts",
        &r.timeouts,
        &thousands(r.timeouts),
    );
    figure(
        out,
        &id("connection-errors"),
        "Connection errors",
        &r.connection_errors,
        &thousands(r.connection_errors),
    );
    if r.unsent > 0 {
        figure(
            out,
            &id("unsent"),
            "Unsent",
            &r.unsent,
            &thousands(r.unsent),
        );
    }
    if r.cancelled > 0 {
        figure(
            out,
            &id("cancelled"),
            "Cancelled",
            &r.cancelled,
            &thousands(r.cancelled),
        );
    }
    let c = &s.connections;
    figure(
        out,
        &id("connections"),
        "Connections opened",
        &c.opened,
        &thousands(c.opened),
    );
    if let Some(setup) = &c.setup_ms {
        figure(
            out,
            &id("setup-p99"),
            "Connection set-up p99",
            &setup.p99_ms,
            &fmt_ms(setup.p99_ms),
        );
    }
    if let Some(tls) = &c.tls_handshake_ms {
        figure(
            out,
            &id("tls-p99"),
            "TLS handshake p99",
            &tls.p99_ms,
            &fmt_ms(tls.p99_ms),
        );
    }
    out.push_str("</dl>");
}

/// Latency by percentile, on the HDR axis (none without responses).
fn write_percentile_chart(out: &mut String, i: usize, s: &ScenarioReport) {
    if s.percentiles.is_empty() {
        return;
    }
    let mut chart = LineChart::new(
        &field_id(i, "percentiles"),
        "Latency by percentile",
        "percentile",
        "latency (ms)",
    );
    chart.x_scale = Scale::Percentile;
    chart.series.push(
        Series::new(
            "latency",
            PALETTE[0],
            s.percentiles
                .iter()
                .map(|p| (p.percentile, p.latency_ms))
                .collect(),
        )
        .with_markers(),
    );
    chart_figure(
        out,
        "Latency by percentile",
        &chart.render(),
        "HDR histogram of all responses; the axis spreads the tail: 90 %, 99 %, 99.9 % … evenly.",
    );
}

/// Throughput and latency over time, from the timeline (none when it is empty).
fn write_timeline_charts(out: &mut String, i: usize, s: &ScenarioReport) {
    if s.timeline.points.is_empty() {
        return;
    }
    let mut throughput = throughput_chart(&field_id(i, "throughput"), &s.timeline);
    let mut note = format!(
        "Requests completed per second, by the {} s interval they completed in.",
        s.timeline.interval_secs
    );
    if let Some(target) = target_series(s) {
        throughput.series.push(target.dashed());
        note.push_str(" Dashed: the rate the stages scheduled.");
    }
    throughput.x_rules = stage_rules(&s.stages);
    if !s.stages.is_empty() {
        note.push_str(" Vertical lines: where each stage starts.");
    }
    chart_figure(out, "Throughput over time", &throughput.render(), &note);
    let mut chart = latency_chart(&field_id(i, "latency"), &s.timeline);
    chart.x_rules = stage_rules(&s.stages);
    if chart.points() > 0 {
        chart_figure(
            out,
            "Latency over time",
            &chart.render(),
            "Percentiles of the responses completed in each interval (2 significant digits; max exact).",
        );
    }
}

/// A vertical line where each stage (after the first) starts, named after it.
fn stage_rules(stages: &[StageReport]) -> Vec<Rule> {
    stages
        .iter()
        .filter(|t| t.start_secs > 0.0 && t.duration_secs > 0.0)
        .map(|t| Rule {
            value: t.start_secs,
            label: t.name.clone(),
            color: PALETTE[7].into(),
        })
        .collect()
}

/// Open-loop stages: the rate they scheduled in each interval of the
/// timeline (the mean of the profile's rate over it).
fn target_series(s: &ScenarioReport) -> Option<Series> {
    if s.stages.is_empty() || s.stages[0].unit != "req/s" {
        return None;
    }
    let interval = s.timeline.interval_secs as f64;
    let last = s.timeline.points.len().saturating_sub(1);
    let points = s
        .timeline
        .points
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let a = p.start_secs as f64;
            // The last interval ends with the phase, as the timeline's does.
            let b = if k == last {
                s.duration_secs.max(a + 1e-9)
            } else {
                a + interval
            };
            let mut due = 0.0;
            for t in &s.stages {
                let (lo, hi) = (a.max(t.start_secs), b.min(t.start_secs + t.duration_secs));
                if hi > lo && t.duration_secs > 0.0 {
                    let at =
                        |x: f64| t.from + (t.to - t.from) * (x - t.start_secs) / t.duration_secs;
                    due += (hi - lo) * (at(lo) + at(hi)) / 2.0;
                }
            }
            let span = (b - a).max(f64::EPSILON);
            (a, due / span)
        })
        .collect();
    Some(Series::new("scheduled/s", PALETTE[5], points))
}

/// Requests per second interval by interval, and failed ones when there are any.
fn throughput_chart(id: &str, timeline: &TimelineReport) -> LineChart {
    let points = &timeline.points;
    let secs = |p: &TimelinePoint| p.start_secs as f64;
    let mut chart = LineChart::new(id, "Throughput over time", "seconds", "requests/s");
    chart.series.push(Series::new(
        "requests/s",
        PALETTE[0],
        points.iter().map(|p| (secs(p), p.rps)).collect(),
    ));
    if points.iter().any(|p| p.failed > 0) {
        let interval = timeline.interval_secs as f64;
        chart.series.push(Series::new(
            "failed/s",
            PALETTE[1],
            points
                .iter()
                .map(|p| {
                    let rate = if p.requests > 0 {
                        p.rps * p.failed as f64 / p.requests as f64
                    } else {
                        p.failed as f64 / interval
                    };
                    (secs(p), rate)
                })
                .collect(),
        ));
    }
    chart
}

/// p50, p90, p99 and max interval by interval (those with responses).
fn latency_chart(id: &str, timeline: &TimelineReport) -> LineChart {
    let secs = |p: &TimelinePoint| p.start_secs as f64;
    let mut chart = LineChart::new(id, "Latency over time", "seconds", "latency (ms)");
    for (name, color, pick) in [
        ("p50", PALETTE[2], 0),
        ("p90", PALETTE[0], 1),
        ("p99", PALETTE[3], 2),
        ("max", PALETTE[1], 3),
    ] {
        let values: Vec<(f64, f64)> = timeline
            .points
            .iter()
            .filter_map(|p| {
                let v = [p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms][pick]?;
                Some((secs(p), v))
            })
            .collect();
        if !values.is_empty() {
            let series = Series::new(name, color, values);
            chart.series.push(if name == "max" {
                series.dashed()
            } else {
                series
            });
        }
    }
    chart
}

/// Responses by HTTP status (none without responses).
fn write_status_chart(out: &mut String, i: usize, s: &ScenarioReport) {
    if s.status_codes.is_empty() {
        return;
    }
    let chart = BarChart {
        id: field_id(i, "status"),
        title: "Status codes".into(),
        bars: s
            .status_codes
            .iter()
            .map(|(code, n)| Bar {
                label: code.clone(),
                value: *n,
                color: status_color(code).into(),
            })
            .collect(),
    };
    chart_figure(
        out,
        "Status codes",
        &chart.render(),
        "Responses by HTTP status.",
    );
}

/// Non-2xx responses by error code, and requests that got no response by
/// why (none without errors).
fn write_error_chart(out: &mut String, i: usize, s: &ScenarioReport) {
    let r = &s.requests;
    let transport = [
        ("timeout", r.timeouts),
        ("connect failure", r.connect_failures),
        ("broken connection", r.broken_connections),
    ];
    if s.error_codes.is_empty() && transport.iter().all(|(_, n)| *n == 0) {
        return;
    }
    let mut bars: Vec<Bar> = s
        .error_codes
        .iter()
        .map(|(code, n)| Bar {
            label: code.clone(),
            value: *n,
            color: PALETTE[1].into(),
        })
        .collect();
    bars.extend(
        transport
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| Bar {
                label: format!("({what})"),
                value: *n,
                color: PALETTE[7].into(),
            }),
    );
    let chart = BarChart {
        id: field_id(i, "errors"),
        title: "Errors".into(),
        bars,
    };
    chart_figure(
        out,
        "Errors",
        &chart.render(),
        "Non-2xx responses by the JSON code of their body, and requests that got no response.",
    );
}

/// Each threshold, its limit, the actual value and the verdict (and when one
/// stopped the run).
fn write_thresholds(out: &mut String, i: usize, s: &ScenarioReport) {
    if s.thresholds.is_empty() {
        return;
    }
    out.push_str("<h3>Thresholds</h3><table><tr><th>threshold</th><th>limit</th><th>actual</th><th></th><th></th></tr>");
    for (k, t) in s.thresholds.iter().enumerate() {
        let value = |v: &serde_json::Value| match v {
            serde_json::Value::Number(n) => n
                .as_f64()
                .map_or_else(|| n.to_string(), |f| fmt_number(f, 3)),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let unit = t
            .unit
            .as_deref()
            .filter(|u| !u.is_empty())
            .map_or_else(String::new, |u| format!(" {u}"));
        let limit = match (&t.op, &t.limit) {
            (Some(op), serde_json::Value::String(w)) => format!("{op} {w}"),
            (Some(op), l) => format!("{op} {}{unit}", value(l)),
            (None, l) if t.name == "success_rate" => format!(">= {}", value(l)),
            (None, l) => format!("<= {}", value(l)),
        };
        let actual = t.actual.as_ref().map_or_else(
            || "n/a".to_owned(),
            |a| format!("{}{}", value(a), if a.is_string() { "" } else { &unit }),
        );
        let note = match (t.aborted_at_secs, t.abort) {
            (Some(at), _) => format!("stopped the run at {at:.1} s"),
            (None, true) => "checked while running".to_owned(),
            (None, false) => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\" id=\"{}\" data-value=\"{}\">{}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&limit),
            escape(&actual),
            if t.passed { "ok" } else { "bad" },
            escape(&field_id(i, &format!("threshold{}", k + 1))),
            t.passed,
            if t.passed { "PASS" } else { "FAIL" },
            escape(&note),
        );
    }
    out.push_str("</table>");
}

/// Each stage of a staged profile: its targets, what was sent, the rate and
/// latency (each number carrying its JSON value).
fn write_stages(out: &mut String, i: usize, s: &ScenarioReport) {
    if s.stages.is_empty() {
        return;
    }
    out.push_str("<h3>Stages</h3><table><tr><th>stage</th><th>start</th><th>target</th><th>scheduled</th><th>requests</th><th>req/s</th><th>failed</th><th>p50</th><th>p99</th></tr>");
    let cell = |out: &mut String, id: String, value: &dyn erased::Value, shown: String| {
        let _ = write!(
            out,
            "<td id=\"{}\" data-value=\"{}\">{}</td>",
            escape(&id),
            escape(&value.json()),
            escape(&shown)
        );
    };
    for t in &s.stages {
        let id = |field: &str| field_id(i, &format!("stage{}-{field}", t.stage));
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.1} s</td><td>{} → {} {}</td><td>{}</td>",
            escape(&t.name),
            t.start_secs,
            fmt_target(t.from),
            fmt_target(t.to),
            escape(&t.unit),
            t.scheduled.map_or_else(|| "–".to_owned(), thousands),
        );
        cell(out, id("requests"), &t.requests, thousands(t.requests));
        cell(out, id("rps"), &t.rps, fmt_rate(t.rps));
        cell(out, id("failed"), &t.failed, thousands(t.failed));
        let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_ms);
        cell(out, id("p50"), &t.p50_ms, ms(t.p50_ms));
        cell(out, id("p99"), &t.p99_ms, ms(t.p99_ms));
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

/// Serializing a cell's value without naming its type.
mod erased {
    pub trait Value {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Value for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("a number serializes")
        }
    }
}

/// The jobs scenario's figures: what became of the jobs.
fn write_jobs(out: &mut String, i: usize, j: &JobsReport) {
    let id = |field: &str| field_id(i, field);
    out.push_str("<h3>Jobs</h3><dl class=\"figures\">");
    for (field, label, v) in [
        ("jobs-submitted", "Submitted", j.submitted),
        ("jobs-completed", "Completed", j.completed),
        ("jobs-verified", "Verified", j.verified),
        ("jobs-wrong", "Wrong digest", j.digest_mismatches),
        ("jobs-failed", "Failed", j.failed),
        ("jobs-lost", "Lost", j.lost),
        ("jobs-unfinished", "Unfinished", j.unfinished),
    ] {
        figure(out, &id(field), label, &v, &thousands(v));
    }
    if let Some(l) = &j.time_to_completion_ms {
        figure(
            out,
            &id("jobs-ttc-p99"),
            "Time to completion p99",
            &l.p99_ms,
            &fmt_ms(l.p99_ms),
        );
    }
    out.push_str("</dl>");
}

/// The latency-versus-throughput chart of `curves` (name, sweep, colour):
/// p99 (with markers) and p50 (dashed) of each step against its achieved
/// rate, on a logarithmic latency axis, the knee of each as a vertical line
/// and the p99 limit as a horizontal one.
fn curve_chart(id: &str, curves: &[(&str, &SweepReport, &str)]) -> LineChart {
    let mut chart = LineChart::new(
        id,
        "Latency versus throughput",
        "requests/s achieved",
        "latency (ms)",
    );
    chart.y_scale = Scale::Log;
    chart.size = WIDE;
    let named = |name: &str, what: &str| {
        if curves.len() > 1 {
            format!("{name} {what}")
        } else {
            what.to_owned()
        }
    };
    for (name, sweep, color) in curves {
        let steps = sweep.curve();
        let p99: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| Some((s.achieved_rate, s.p99_ms?)))
            .collect();
        let p50: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| Some((s.achieved_rate, s.p50_ms?)))
            .collect();
        if !p99.is_empty() {
            chart
                .series
                .push(Series::new(named(name, "p99"), color, p99).with_markers());
        }
        if !p50.is_empty() {
            chart
                .series
                .push(Series::new(named(name, "p50"), color, p50).dashed());
        }
        if let Some(knee) = &sweep.knee {
            chart.x_rules.push(Rule {
                value: knee.achieved_rate,
                label: named(name, "knee"),
                color: (*color).to_owned(),
            });
        }
    }
    let mut limits: Vec<f64> = curves.iter().map(|c| c.1.limits.max_p99_ms).collect();
    limits.sort_by(f64::total_cmp);
    limits.dedup();
    for limit in limits {
        chart.y_rules.push(Rule {
            value: limit,
            label: format!("p99 limit {limit} ms"),
            color: "#5b6475".into(),
        });
    }
    chart
}

/// A sweep: its knee, its curve and its steps.
fn write_sweep(out: &mut String, i: usize, sw: &SweepReport) {
    let id = |field: &str| format!("sweep{i}-{field}");
    let target = match &sw.urls[..] {
        [one] => one.clone(),
        urls => format!("{} targets", urls.len()),
    };
    let _ = write!(
        out,
        "<section class=\"sweep\" id=\"sweep{i}\" data-name=\"{}\"><h2>Sweep {}: {} {}</h2><p class=\"meta\">open loop, rates {}, {:.3} s per step, at most {} in flight · limits: p99 ≤ {} ms, errors ≤ {} % · stopped: {}</p>",
        escape(&sw.scenario),
        escape(&sw.scenario),
        escape(&sw.method),
        escape(&target),
        escape(&sw.rates),
        sw.step_duration_secs,
        thousands(u64::from(sw.concurrency)),
        sw.limits.max_p99_ms,
        sw.limits.max_error_rate,
        sw.stopped.describe()
    );
    out.push_str("<dl class=\"figures\">");
    figure(
        out,
        &id("steps"),
        "Steps",
        &sw.steps.len(),
        &sw.steps.len().to_string(),
    );
    match &sw.knee {
        Some(k) => {
            figure(
                out,
                &id("knee-offered"),
                "Knee: offered req/s",
                &k.offered_rate,
                &fmt_rate(k.offered_rate),
            );
            figure(
                out,
                &id("knee-achieved"),
                "Knee: achieved req/s",
                &k.achieved_rate,
                &fmt_rate(k.achieved_rate),
            );
            if let Some(p99) = k.p99_ms {
                figure(out, &id("knee-p99"), "Knee: p99", &p99, &fmt_ms(p99));
            }
        }
        None => {
            let _ = write!(
                out,
                "<div><dt>Knee</dt><dd id=\"{}\" data-value=\"null\">none: no step met the limits</dd></div>",
                id("knee-offered")
            );
        }
    }
    out.push_str("</dl>");
    let chart = curve_chart(&id("curve"), &[(&sw.scenario, sw, PALETTE[0])]);
    if chart.points() > 0 {
        out.push_str("<div class=\"charts wide\">");
        chart_figure(
            out,
            "Latency versus throughput",
            &chart.render(),
            "p99 and p50 of each step against the rate it achieved; the knee is the highest offered rate within the limits.",
        );
        out.push_str("</div>");
    }
    out.push_str("<h3>Steps</h3>");
    write_steps_table(out, &id("step"), sw);
    out.push_str("</section>");
}

fn write_steps_table(out: &mut String, id: &str, sw: &SweepReport) {
    out.push_str("<table><tr><th>step</th><th>offered req/s</th><th>achieved req/s</th><th>requests</th><th>p50</th><th>p99</th><th>errors</th><th>CPU stolen</th><th>/metrics</th><th></th></tr>");
    let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), fmt_ms);
    let pct = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1} %"));
    for st in &sw.steps {
        let knee = sw.knee.as_ref().is_some_and(|k| k.step == st.step);
        let _ = write!(
            out,
            "<tr id=\"{id}{n}\" data-offered=\"{}\" data-passed=\"{}\"><td>{n}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3} %</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            st.offered_rate,
            st.passed,
            if knee { " (knee)" } else { "" },
            fmt_rate(st.offered_rate),
            fmt_rate(st.achieved_rate),
            thousands(st.requests),
            ms(st.p50_ms),
            ms(st.p99_ms),
            st.error_rate,
            pct(st.stolen_pct),
            escape(&st.server_metrics),
            if st.passed { "ok" } else { "bad" },
            escape(st.reason.as_deref().unwrap_or("within the limits")),
            n = st.step,
        );
    }
    out.push_str("</table>");
}

/// The page of `--compare`: the curves of several sweeps on one chart.
pub fn render_compare(comparison: &Comparison) -> String {
    let mut out = String::new();
    page_start(&mut out, "floodgate-load: latency versus throughput");
    let _ = write!(
        out,
        "<header><h1>Latency versus throughput</h1><p>floodgate-load {}, generated {}; open-loop sweeps, latency from each request's scheduled send time</p></header>",
        env!("CARGO_PKG_VERSION"),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
    );
    let curves: Vec<(&str, &SweepReport, &str)> = comparison
        .curves
        .iter()
        .zip(PALETTE.iter().cycle())
        .map(|(c, color)| (c.name.as_str(), &c.sweep, *color))
        .collect();
    out.push_str("<section id=\"compare\">");
    let chart = curve_chart("compare-curve", &curves);
    if chart.points() > 0 {
        out.push_str("<div class=\"charts wide\">");
        chart_figure(
            &mut out,
            "Latency versus throughput",
            &chart.render(),
            "p99 (markers) and p50 (dashed) of each step against the rate it achieved; vertical lines mark each knee.",
        );
        out.push_str("</div>");
    }
    out.push_str("<h3>Knees</h3><table><tr><th>curve</th><th>scenario</th><th>knee: offered req/s</th><th>achieved req/s</th><th>p99</th><th>limits</th><th>steps</th><th>stopped</th></tr>");
    for (i, c) in comparison.curves.iter().enumerate() {
        let sw = &c.sweep;
        let (offered, achieved, p99) = match &sw.knee {
            Some(k) => (
                format!(
                    "<span id=\"curve{i}-knee-offered\" data-value=\"{}\">{}</span>",
                    k.offered_rate,
                    fmt_rate(k.offered_rate)
                ),
                fmt_rate(k.achieved_rate),
                k.p99_ms.map_or_else(|| "–".to_owned(), fmt_ms),
            ),
            None => ("none".to_owned(), "–".to_owned(), "–".to_owned()),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{offered}</td><td>{achieved}</td><td>{p99}</td><td>p99 ≤ {} ms, errors ≤ {} %</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&sw.scenario),
            sw.limits.max_p99_ms,
            sw.limits.max_error_rate,
            sw.steps.len(),
            sw.stopped.describe()
        );
    }
    out.push_str("</table>");
    for (i, c) in comparison.curves.iter().enumerate() {
        let _ = write!(
            out,
            "<h3>{} ({}: {} {})</h3>",
            escape(&c.name),
            escape(&c.file.display().to_string()),
            escape(&c.sweep.method),
            escape(&c.sweep.urls.join(", "))
        );
        write_steps_table(&mut out, &format!("curve{i}-step"), &c.sweep);
    }
    out.push_str("</section>");
    write_json(&mut out, "JSON", comparison);
    page_end(&mut out);
    out
}

fn chart_figure(out: &mut String, title: &str, svg: &str, note: &str) {
    let _ = write!(
        out,
        "<figure><h3>{}</h3>{svg}<p>{}</p></figure>",
        escape(title),
        escape(note)
    );
}

fn status_color(code: &str) -> &'static str {
    match code.as_bytes().first() {
        Some(b'2') => "#2e9d4f",
        Some(b'3') => "#1f77b4",
        Some(b'4') => "#ef8a17",
        _ => "#d62728",
    }
}

fn write_server_metrics(out: &mut String, i: usize, m: &ServerMetrics) {
    let verdict = match m.status.as_str() {
        "match" => ("ok", "counts match".to_owned()),
        "consistent" => (
            "ok",
            "counts consistent (the server also counted requests the client abandoned)".to_owned(),
        ),
        "mismatch" => ("bad", "MISMATCH".to_owned()),
        "skipped" => ("", "not read (--no-server-metrics)".to_owned()),
        _ => (
            "bad",
            format!(
                "unavailable ({})",
                m.reason.as_deref().unwrap_or("unknown reason")
            ),
        ),
    };
    let summed = if m.targets.len() > 1 {
        format!(" (summed over {} targets)", m.targets.len())
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<h3>Server cross-check</h3><p id=\"s{i}-server-status\" data-value=\"{}\" class=\"{}\">Server /metrics: {}{summed}</p>",
        escape(&m.status),
        verdict.0,
        escape(&verdict.1)
    );
    if let Some(check) = &m.check {
        out.push_str("<table><tr><th>counter</th><th>before</th><th>after</th><th>delta</th><th>client</th><th>accepted up to</th><th></th></tr>");
        for c in &check.counters {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td id=\"s{i}-server-{}-delta\" data-value=\"{}\">{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                escape(&c.counter),
                thousands(c.before),
                thousands(c.after),
                escape(&c.counter),
                c.delta,
                fmt_number(c.delta as f64, 0),
                thousands(c.client),
                thousands(c.accepted_max),
                if c.ok { "ok" } else { "bad" },
                if c.ok { "ok" } else { "MISMATCH" }
            );
        }
        out.push_str("</table>");
        if m.targets.len() > 1 {
            out.push_str("<table><tr><th>target</th><th>server delta / client</th><th></th></tr>");
            for t in &m.targets {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                    escape(&t.url),
                    escape(&t.check.summary()),
                    if t.check.ok { "ok" } else { "bad" },
                    if t.check.ok { "ok" } else { "MISMATCH" }
                );
            }
            out.push_str("</table>");
        }
    }
}

fn write_targets(out: &mut String, s: &ScenarioReport) {
    out.push_str("<h3>Targets</h3><table><tr><th>target</th><th>connections</th><th>requests</th><th>successful</th><th>failed</th><th>p99</th></tr>");
    for t in &s.targets {
        let r = &t.requests;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.url),
            thousands(u64::from(t.connections)),
            thousands(r.total),
            thousands(r.successful),
            thousands(r.failed),
            t.latency_ms
                .map_or_else(|| "no responses".to_owned(), |l| fmt_ms(l.p99_ms))
        );
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report;
    use crate::server::compare;
    use serde_json::{json, Value};

    fn page() -> (String, Value) {
        let (Value::Object(before), Value::Object(after)) = (
            json!({"total_requests": 0, "success_count": 0, "error_count": 0}),
            json!({"total_requests": 98, "success_count": 90, "error_count": 8}),
        ) else {
            unreachable!()
        };
        let check = compare(
            &before,
            &after,
            crate::server::ClientCounts {
                responses: 98,
                successes: 90,
                errors: 8,
                abandoned: 1,
            },
        );
        let mut scenario = report(ServerMetrics::checked(before, after, check), (None, None));
        scenario
            .error_codes
            .insert("<img src=x onerror=alert(1)>".into(), 1);
        let run = RunReport::new(vec![scenario], false);
        let json: Value = serde_json::from_str(&run.to_json()).unwrap();
        (render(&run), json)
    }

    /// The `data-value` and text of the element with `id`.
    fn shown(html: &str, id: &str) -> (String, String) {
        let start = html
            .find(&format!("id=\"{id}\" data-value=\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let rest = &html[start..];
        let value = rest.split('"').nth(3).unwrap().to_owned();
        let text = rest[rest.find('>').unwrap() + 1..rest.find('<').unwrap()].to_owned();
        (value, text)
    }

    #[test]
    fn is_one_self_contained_page() {
        let (html, _) = page();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        for banned in ["<script", "<link", "src=\"", "href=\"", "@import", "url("] {
            assert!(!html.contains(banned), "{banned} in the page");
        }
        // A server's error code is text, never markup.
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn figures_carry_the_json_values() {
        let (html, json) = page();
        let s = &json["scenarios"][0];
        assert_eq!(shown(&html, "s0-total"), ("100".into(), "100".into()));
        assert_eq!(
            shown(&html, "s0-rps"),
            (s["rps"].to_string(), "50.0".into())
        );
        let (value, text) = shown(&html, "s0-p99");
        assert_eq!(value, s["latency_ms"]["p99_ms"].to_string());
        assert_eq!(
            text,
            format!("{:.3} ms", s["latency_ms"]["p99_ms"].as_f64().unwrap())
        );
        assert_eq!(
            shown(&html, "s0-success-rate"),
            ("90.0".into(), "90.000 %".into())
        );
        assert_eq!(
            shown(&html, "s0-server-status"),
            ("match".into(), "Server /metrics: counts match".into())
        );
        // The JSON report itself is on the page.
        let start = html.find("<pre id=\"report-json\">").unwrap() + 22;
        let end = start + html[start..].find("</pre>").unwrap();
        let embedded = html[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        assert_eq!(serde_json::from_str::<Value>(&embedded).unwrap(), json);
    }

    #[test]
    fn every_chart_has_data() {
        let (html, json) = page();
        let s = &json["scenarios"][0];
        for chart in ["percentiles", "throughput", "latency", "status", "errors"] {
            let at = html
                .find(&format!("<svg class=\"chart\" id=\"s0-{chart}\""))
                .unwrap_or_else(|| panic!("no {chart} chart"));
            let points: usize = html[at..]
                .split("data-points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(points > 0, "{chart}");
        }
        // The throughput series is the timeline's rps.
        let rps: Vec<String> = s["timeline"]["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{}.0,{}", p["start_secs"], p["rps"]))
            .collect();
        assert!(
            html.contains(&format!(
                "data-name=\"requests/s\" data-points=\"2\" data-values=\"{}\"",
                rps.join(" ")
            )),
            "{rps:?}"
        );
    }
}
