//! A reader of the Prometheus text exposition (format 0.0.4) as `metrics-exporter-prometheus`
//! renders it, into metric families: what the OpenMetrics exposition and the OTLP metrics
//! export are built from, so both carry exactly the series and values of the text one.
//!
//! Hand-written because the exporter offers its snapshot only as text (its protobuf
//! rendering needs `protoc` at build time), and the format is small and regular: `# HELP`,
//! `# TYPE` and sample lines `name{label="value",…} value`.

use std::borrow::Cow;

/// A metric family's type, as `# TYPE` states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The sample's name: the family's, or with `_bucket`, `_sum`, `_count`.
    pub name: &'a str,
    /// Label names and unescaped values, in their order.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
    /// The line as written.
    pub line: &'a str,
}

impl Sample<'_> {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }
}

/// One metric family: its samples under one `# TYPE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: Kind,
    /// Unescaped.
    pub help: Option<Cow<'a, str>>,
    pub samples: Vec<Sample<'a>>,
}

/// Read an exposition; a line that is not one of the format's is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Family<'_>>, String> {
    let mut families: Vec<Family<'_>> = Vec::new();
    let mut help: Option<(&str, Cow<'_, str>)> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, unescape(doc, false)));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("malformed TYPE line: {line}"))?;
            let kind = match kind.trim() {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                "histogram" => Kind::Histogram,
                "summary" => Kind::Summary,
                "untyped" => Kind::Untyped,
                other => return Err(format!("unknown type {other}: {line}")),
            };
            let help = help.take().filter(|(n, _)| *n == name).map(|(_, doc)| doc);
            families.push(Family {
                name,
                kind,
                help,
                samples: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let sample = sample(line)?;
        match families.last_mut() {
            Some(family) if belongs(family, sample.name) => family.samples.push(sample),
            _ => families.push(Family {
                name: sample.name,
                kind: Kind::Untyped,
                help: None,
                samples: vec![sample],
            }),
        }
    }
    Ok(families)
}

fn belongs(family: &Family<'_>, sample: &str) -> bool {
    let Some(suffix) = sample.strip_prefix(family.name) else {
        return false;
    };
    match family.kind {
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
        Kind::Summary => matches!(suffix, "" | "_sum" | "_count"),
        _ => suffix.is_empty(),
    }
}

fn sample(line: &str) -> Result<Sample<'_>, String> {
    let bad = || format!("malformed sample line: {line}");
    let name_end = line.find(['{', ' ']).ok_or_else(bad)?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut s = inner;
        loop {
            s = s.trim_start_matches([',', ' ']);
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = s.find('=').ok_or_else(bad)?;
            let key = s[..eq].trim();
            let value = s[eq + 1..].strip_prefix('"').ok_or_else(bad)?;
            // The closing quote is the first one not escaped.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in value.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(bad)?;
            labels.push((key, unescape(&value[..end], true)));
            s = &value[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().ok_or_else(bad)?;
    let value = value.parse::<f64>().map_err(|_| bad())?;
    Ok(Sample {
        name,
        labels,
        value,
        line,
    })
}

/// Undo the format's escapes: `\\` and `\n`, and `\"` in label values.
fn unescape(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP requests_total Requests, "all" of them \\ counted.
# TYPE requests_total counter
requests_total{route="/a",status="200"} 3
requests_total{route="/b\"q\\",status="500"} 1

# TYPE up gauge
up 1
# HELP d_seconds Durations.
# TYPE d_seconds histogram
d_seconds_bucket{m="GET",le="0.1"} 2
d_seconds_bucket{m="GET",le="+Inf"} 3
d_seconds_sum{m="GET"} 0.5
d_seconds_count{m="GET"} 3
stray 7
"#;

    #[test]
    fn families_samples_and_labels_are_read() {
        let f = parse(TEXT).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].name, "requests_total");
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(
            f[0].help.as_deref(),
            Some(r#"Requests, "all" of them \ counted."#)
        );
        assert_eq!(f[0].samples[1].label("route"), Some(r#"/b"q\"#));
        assert_eq!(f[0].samples[1].value, 1.0);
        assert_eq!(f[1].help, None);
        assert_eq!(f[2].kind, Kind::Histogram);
        assert_eq!(f[2].samples.len(), 4);
        assert_eq!(f[2].samples[1].value, f64::INFINITY.min(3.0));
        assert_eq!(f[2].samples[1].label("le"), Some("+Inf"));
        assert_eq!(f[3].kind, Kind::Untyped);
        assert_eq!(f[3].samples[0].value, 7.0);
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        for bad in ["x{a=\"1} 2", "x{a=1} 2", "x", "x abc", "# TYPE x sometype"] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.contains(bad.trim_start_matches("# TYPE ")),
                "{bad}: {err}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_label_value_survives_escaping(value in "\\PC{0,20}") {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let text = format!("m{{k=\"{escaped}\",j=\"x\"}} 1\n");
            let f = parse(&text).unwrap();
            proptest::prop_assert_eq!(f[0].samples[0].label("k"), Some(value.as_str()));
            proptest::prop_assert_eq!(f[0].samples[0].label("j"), Some("x"));
        }
    }
}
