//! The OpenMetrics 1.0 exposition, with exemplars: what Prometheus asks for when it stores
//! exemplars (`Accept: application/openmetrics-text`).
//!
//! Built from the text exposition (read by [`super::exposition`]), so both carry the same
//! series and values; what differs is what OpenMetrics requires — a counter family is named
//! without `_total`, help text escapes quotes, no blank lines, `# EOF` at the end — and the
//! exemplars on the buckets of the request-duration histograms, which the text format cannot
//! carry. Hand-written: `metrics-exporter-prometheus` renders no OpenMetrics (metrics-rs
//! issue 175), and `prometheus-client`, which does, would mean a second registry recorded on
//! every request (see docs/observability.md).

use std::collections::HashSet;
use std::fmt::Write;

use super::exemplars::ExemplarIndex;
use super::exposition::{self, Kind};

/// Content type of the OpenMetrics exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `text` (a 0.0.4 exposition) as OpenMetrics, with the exemplars `index` holds.
pub fn from_text(text: &str, index: &ExemplarIndex) -> String {
    let families = match exposition::parse(text) {
        Ok(families) => families,
        Err(e) => {
            // The exporter wrote something this reader does not know: say so in the
            // exposition rather than serve half of it.
            tracing::error!(error = %e, "cannot convert the exposition to OpenMetrics");
            return format!("# {}\n# EOF\n", e.replace('\n', " "));
        }
    };
    let names: HashSet<&str> = families.iter().map(|f| f.name).collect();
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for family in &families {
        // A counter's family is named without `_total` unless that name is another
        // family's (floodgate_jobs and floodgate_jobs_total): then it stays `unknown`.
        let (name, kind) = match family.kind {
            Kind::Counter => match family.name.strip_suffix("_total") {
                Some(base) if !names.contains(base) => (base, "counter"),
                _ => (family.name, "unknown"),
            },
            Kind::Gauge => (family.name, "gauge"),
            Kind::Histogram => (family.name, "histogram"),
            Kind::Summary => (family.name, "summary"),
            Kind::Untyped => (family.name, "unknown"),
        };
        if let Some(help) = &family.help {
            let _ = writeln!(out, "# HELP {name} {}", escape(help));
        }
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let with_exemplars = family.kind == Kind::Histogram;
        for sample in &family.samples {
            out.push_str(sample.line);
            if with_exemplars && sample.name.ends_with("_bucket") {
                if let Some(line) = exemplar(index, family.name, sample) {
                    out.push_str(&line);
                }
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// ` # {trace_id="…",span_id="…"} value timestamp` for a bucket line that has an exemplar.
fn exemplar(
    index: &ExemplarIndex,
    family: &str,
    sample: &exposition::Sample<'_>,
) -> Option<String> {
    let le = sample.label("le")?;
    let le = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    let labels = sample
        .labels
        .iter()
        .filter(|(k, _)| *k != "le")
        .map(|(k, v)| (*k, v.as_ref()));
    let e = index.find(family, labels)?.get(le)?;
    Some(format!(
        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
        hex::encode(e.trace.trace_id),
        hex::encode(e.trace.span_id),
        e.value,
        e.at_ms / 1000,
        e.at_ms % 1000
    ))
}

/// OpenMetrics escapes backslash, newline and double quote in help text.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use metrics::Label;

    use super::*;
    use crate::observability::exemplars::TraceRef;

    const BOUNDS: &[f64] = &[0.1, 1.0];

    #[test]
    fn counters_lose_total_in_their_family_name_and_buckets_carry_exemplars() {
        let text = "# HELP a_total The \"a\" count.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\n# TYPE jobs gauge\njobs 1\n# TYPE jobs_total counter\njobs_total 2\n# TYPE d histogram\nd_bucket{m=\"GET\",le=\"0.1\"} 0\nd_bucket{m=\"GET\",le=\"1\"} 1\nd_bucket{m=\"GET\",le=\"+Inf\"} 1\nd_sum{m=\"GET\"} 0.5\nd_count{m=\"GET\"} 1\n";
        let index = ExemplarIndex::default();
        let exemplars = index.register("d", &[Label::new("m", "GET")], BOUNDS);
        exemplars.offer(
            0.5,
            TraceRef {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
            },
        );
        let om = from_text(text, &index);
        let lines: Vec<&str> = om.lines().collect();
        assert_eq!(lines[0], "# HELP a The \\\"a\\\" count.");
        assert_eq!(lines[1], "# TYPE a counter");
        assert_eq!(lines[2], "a_total{x=\"1\"} 3");
        assert!(lines.contains(&"# TYPE jobs_total unknown"), "{om}");
        let bucket = lines
            .iter()
            .find(|l| l.starts_with("d_bucket{m=\"GET\",le=\"1\"}"))
            .unwrap();
        let want = format!(
            "d_bucket{{m=\"GET\",le=\"1\"}} 1 # {{trace_id=\"{}\",span_id=\"{}\"}} 0.5 ",
            "ab".repeat(16),
            "cd".repeat(8)
        );
        assert!(bucket.starts_with(&want), "{bucket}");
        assert!(
            !om.contains("le=\"0.1\"} 0 #"),
            "no exemplar on an empty bucket"
        );
        assert!(!om.contains("\n\n"));
        assert!(om.ends_with("# EOF\n"));
    }
}
