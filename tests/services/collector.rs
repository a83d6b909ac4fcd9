//! Traces checked by a real OpenTelemetry collector (`rotel-agent`), over gRPC and HTTP.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::test_tools::tool;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[derive(Debug, Default, Clone)]
pub struct Span {
    pub trace_id: String,
    pub parent_id: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub attributes: HashMap<String, String>,
}

/// Parse rotel's detailed debug log of spans.
pub fn parse_spans(log: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut current: Option<Span> = None;
    let mut in_attributes = false;
    for line in log.lines() {
        let t = line.trim();
        if t.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(Span::default());
            in_attributes = false;
            continue;
        }
        let Some(span) = current.as_mut() else {
            continue;
        };
        if t.starts_with("ResourceSpans #") || t.starts_with("ScopeSpans #") {
            spans.extend(current.take());
            continue;
        }
        if t == "Attributes:" {
            in_attributes = true;
            continue;
        }
        if in_attributes {
            if let Some(kv) = t.strip_prefix("-> ") {
                if let Some((k, v)) = kv.split_once(": ") {
                    let v = v
                        .trim_start_matches(|c: char| c.is_alphabetic())
                        .trim_start_matches('(')
                        .trim_end_matches(')');
                    span.attributes.insert(k.to_owned(), v.to_owned());
                }
                continue;
            }
            in_attributes = false;
        }
        if let Some((k, v)) = t.split_once(':') {
            let v = v.trim().to_owned();
            match k.trim() {
                "Trace ID" => span.trace_id = v,
                "Parent ID" => span.parent_id = v,
                "ID" => span.id = v,
                "Name" => span.name = v,
                "Kind" => span.kind = v,
                "Status code" => span.status = v,
                _ => {}
            }
        }
    }
    spans.extend(current);
    spans
}

pub struct Collector {
    _child: ChildGuard,
    pub log: std::path::PathBuf,
    pub grpc: u16,
    pub http: u16,
}

/// A real OTLP receiver on two free ports, logging every span it receives in detail.
pub fn start_collector() -> Collector {
    start_collector_logging(&["traces"])
}

/// As [`start_collector`], logging the signals listed (`traces`, `metrics`, `logs`).
pub fn start_collector_logging(signals: &[&str]) -> Collector {
    let mut debug = Vec::new();
    for signal in signals {
        debug.extend(["--debug-log", signal]);
    }
    let (grpc, http) = (free_port(), free_port());
    let log = std::env::temp_dir().join(format!("floodgate-rotel-{grpc}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(tool("rotel-agent"))
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
            "--exporter",
            "blackhole",
            "--debug-log-verbosity",
            "detailed",
        ])
        .args(&debug)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("rotel-agent starts");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "collector did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Collector {
        _child: ChildGuard(child),
        log,
        grpc,
        http,
    }
}

pub async fn wait_for_spans(log: &std::path::Path, want: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let started = Instant::now();
    loop {
        let spans = parse_spans(&std::fs::read_to_string(log).unwrap_or_default());
        if want(&spans) {
            return spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "spans never arrived: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The trace IDs of the request spans (`POST …`) in the collector's log, once every trace
/// in `traced` is among them.
async fn wait_for_request_traces(
    log: &std::path::Path,
    traced: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let requests = |spans: &[Span]| -> std::collections::BTreeSet<String> {
        spans
            .iter()
            .filter(|s| s.name.starts_with("POST "))
            .map(|s| s.trace_id.clone())
            .collect()
    };
    requests(&wait_for_spans(log, |spans| traced.is_subset(&requests(spans))).await)
}

async fn traced_request_reaches_the_collector(protocol: &str) {
    let collector = start_collector();
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{}", collector.grpc),
        _ => format!("http://127.0.0.1:{}", collector.http),
    };
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_SERVICE_NAME", "floodgate-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=platform"),
        ("ENVIRONMENT", "production"),
        ("LOG_LEVEL", "info"),
    ])
    .await;
    let c = client();
    let r = c
        .post(format!("{}/api/v1/compute/intensive", app.base))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "trace-me-1")
        .body(r#"{"number": 42}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-")),
        "{traceparent}"
    );
    let server_span_id = traceparent.split('-').nth(2).unwrap().to_owned();

    let spans = wait_for_spans(&collector.log, |s| {
        s.iter().filter(|s| s.trace_id == TRACE_ID).count() >= 3
    })
    .await;
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let server = in_trace
        .iter()
        .find(|s| s.name == "POST /api/v1/compute/intensive")
        .unwrap_or_else(|| panic!("server span: {in_trace:#?}"));
    assert_eq!(server.kind, "SPAN_KIND_SERVER");
    assert_eq!(server.parent_id, PARENT_ID, "continues the caller's trace");
    assert_eq!(
        server.id, server_span_id,
        "the traceparent response header names the server span"
    );
    let a = &server.attributes;
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["http.route"], "/api/v1/compute/intensive");
    assert_eq!(a["url.path"], "/api/v1/compute/intensive");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["server.port"], app.port.to_string());
    assert_eq!(a["request_id"], "trace-me-1");
    for child in ["job.queue_wait", "job.execute"] {
        let s = in_trace
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("{child}: {in_trace:#?}"));
        assert_eq!(
            s.parent_id, server.id,
            "{child} is a child of the server span"
        );
    }
    let exec = in_trace.iter().find(|s| s.name == "job.execute").unwrap();
    assert!(
        exec.attributes["thread.name"].starts_with("floodgate-worker"),
        "ran on a worker thread"
    );

    // The access-log line is joined to the trace.
    let started = Instant::now();
    let line = loop {
        let found = app
            .output()
            .into_iter()
            .find(|l| l.contains("\"request_id\":\"trace-me-1\""));
        if let Some(line) = found {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no access log line: {:?}",
            app.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"], server.id.as_str());

    let log = std::fs::read_to_string(&collector.log).unwrap();
    assert!(
        log.contains("service.name: Str(floodgate-test)"),
        "resource"
    );
    assert!(log.contains("deployment.environment: Str(production)"));
    assert!(log.contains("team: Str(platform)"));
    assert!(log.contains(&format!("service.version: Str({})", floodgate::VERSION)));
}

#[tokio::test]
async fn traces_are_exported_over_grpc() {
    traced_request_reaches_the_collector("grpc").await;
}

#[tokio::test]
async fn traces_are_exported_over_http_protobuf() {
    traced_request_reaches_the_collector("http/protobuf").await;
}

#[tokio::test]
async fn server_errors_mark_the_span_as_error() {
    // No protocol set: the specification's default, http/protobuf, is what is spoken.
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("WORKER_COUNT", "1"),
        ("QUEUE_SIZE", "1"),
        ("INTENSIVE_ROUNDS", "20000000"),
    ])
    .await;
    let c = client();
    let sends: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let url = format!("{}/api/v1/compute/intensive", app.base);
            tokio::spawn(async move {
                c.post(url)
                    .header("content-type", "application/json")
                    .body(r#"{"number":1}"#)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        statuses.push(s.await.unwrap());
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    let spans = wait_for_spans(&collector.log, |s| {
        s.iter().any(|s| {
            s.attributes
                .get("http.response.status_code")
                .is_some_and(|c| c == "503")
        })
    })
    .await;
    let failed = spans
        .iter()
        .find(|s| {
            s.attributes
                .get("http.response.status_code")
                .is_some_and(|c| c == "503")
        })
        .unwrap();
    assert_eq!(failed.status, "STATUS_CODE_ERROR");
}

#[tokio::test]
async fn the_sampler_variables_apply() {
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "always_off"),
    ])
    .await;
    let c = client();
    for _ in 0..20 {
        let r = app
            .compute_fast(&c, 1, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")))
            .await;
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = parse_spans(&std::fs::read_to_string(&collector.log).unwrap_or_default());
    assert!(spans.is_empty(), "always_off exports nothing: {spans:#?}");
}

/// The ratio sampler decides once, at the root, on the trace ID the trace then has: half the
/// requests are traced (not a quarter, as two independent decisions would give), each traced
/// one's ID passes the ratio test, and an untraced request costs no span and says no
/// `traceparent`.
#[tokio::test]
async fn the_ratio_sampler_decides_once_on_the_traces_own_id() {
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ])
    .await;
    let c = client();
    let mut traced = std::collections::BTreeSet::new();
    const REQUESTS: usize = 200;
    for _ in 0..REQUESTS {
        let r = app.compute_fast(&c, 1, None).await;
        assert_eq!(r.status(), 200);
        if let Some(tp) = r.headers().get("traceparent") {
            let tp = tp.to_str().unwrap();
            assert!(tp.ends_with("-01"), "a traced response is sampled: {tp}");
            traced.insert(tp.split('-').nth(1).unwrap().to_owned());
        }
    }
    // Binomial(200, 0.5) lies within 60..=140 with certainty for any test run (p < 1e-8).
    assert!(
        (60..=140).contains(&traced.len()),
        "{} of {REQUESTS} requests traced at ratio 0.5",
        traced.len()
    );
    for trace_id in &wait_for_request_traces(&collector.log, &traced).await {
        assert!(
            traced.contains(trace_id),
            "every exported request said its trace: {trace_id}"
        );
        // OpenTelemetry's TraceIdRatioBased: the low 63 bits of the ID under ratio * 2^63.
        let low = u64::from_str_radix(&trace_id[16..], 16).unwrap() >> 1;
        assert!(
            low < (0.5 * (1u64 << 63) as f64) as u64,
            "trace {trace_id} is one the ratio sampler takes"
        );
    }
}

#[tokio::test]
async fn past_the_trace_cap_nothing_is_exported_for_untraced_requests() {
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("FLOODGATE__OTEL__MAX_TRACES_PER_SECOND", "3"),
    ])
    .await;
    let c = client();
    let mut traced = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    const REQUESTS: u64 = 60;
    for n in 0..REQUESTS {
        // Every other request continues a sampled trace of the caller's.
        let caller = format!("00-{:032x}-{:016x}-01", n + 1, n + 1);
        let r = app
            .compute_fast(&c, n, (n % 2 == 0).then_some(caller.as_str()))
            .await;
        assert_eq!(r.status(), 200);
        if let Some(tp) = r.headers().get("traceparent") {
            traced.insert(tp.to_str().unwrap().split('-').nth(1).unwrap().to_owned());
        }
    }
    let most = 3 + (3.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        (3..=most).contains(&traced.len()),
        "{} of {REQUESTS} traced, at most {most} allowed",
        traced.len()
    );
    let exported = wait_for_request_traces(&collector.log, &traced).await;
    assert_eq!(
        exported, traced,
        "the collector has the traced requests and no other"
    );
    let text = get_text(&format!("{}/metrics/prometheus", app.base)).await;
    let capped = sum_series(&text, "floodgate_otel_spans_dropped_total", |l| {
        l.contains("reason=\"rate_limit\"")
    });
    assert_eq!(capped, (REQUESTS as usize - traced.len()) as f64);
}

#[tokio::test]
async fn buffered_spans_are_flushed_at_shutdown() {
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    // A long batch delay: only the shutdown flush can deliver the span in time.
    let mut app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
    ])
    .await;
    let r = app
        .compute_fast(&client(), 1, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01")))
        .await;
    assert_eq!(r.status(), 200);
    app.child.signal("-TERM");
    assert_eq!(app.child.0.wait().unwrap().code(), Some(0));
    wait_for_spans(&collector.log, |s| {
        s.iter()
            .any(|s| s.trace_id == TRACE_ID && s.kind == "SPAN_KIND_SERVER")
    })
    .await;
}

/// One server span per RPC, continuing the caller's W3C context from metadata, with the
/// job's spans as its children, and the call's access-log line joined to it.
#[tokio::test]
async fn rpc_spans_continue_the_callers_trace() {
    use floodgate::grpc::pb::{compute_service_client::ComputeServiceClient, ComputeRequest};
    let collector = start_collector();
    let endpoint = format!("http://127.0.0.1:{}", collector.grpc);
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("ENVIRONMENT", "production"),
        ("LOG_LEVEL", "info"),
    ])
    .await;
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(ComputeRequest { number: 42 });
    let metadata = request.metadata_mut();
    metadata.insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_ID}-01").parse().unwrap(),
    );
    metadata.insert("x-request-id", "rpc-trace-1".parse().unwrap());
    let answer = ComputeServiceClient::new(channel)
        .intensive(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.result, 1764);

    let spans = wait_for_spans(&collector.log, |s| {
        s.iter().filter(|s| s.trace_id == TRACE_ID).count() >= 3
    })
    .await;
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let server = in_trace
        .iter()
        .find(|s| s.name == "floodgate.v1.ComputeService/Intensive")
        .unwrap_or_else(|| panic!("server span: {in_trace:#?}"));
    assert_eq!(server.kind, "SPAN_KIND_SERVER");
    assert_eq!(server.parent_id, PARENT_ID, "continues the caller's trace");
    let a = &server.attributes;
    assert_eq!(a["rpc.system"], "grpc");
    assert_eq!(a["rpc.service"], "floodgate.v1.ComputeService");
    assert_eq!(a["rpc.method"], "Intensive");
    assert_eq!(a["rpc.grpc.status_code"], "0");
    assert_eq!(a["request_id"], "rpc-trace-1");
    for child in ["job.queue_wait", "job.execute"] {
        let s = in_trace
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("{child}: {in_trace:#?}"));
        assert_eq!(s.parent_id, server.id, "{child} is a child of the RPC span");
    }
    let started = Instant::now();
    let line = loop {
        let found = app
            .output()
            .into_iter()
            .find(|l| l.contains("\"request_id\":\"rpc-trace-1\""));
        if let Some(line) = found {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no access log line: {:?}",
            app.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["path"], "/floodgate.v1.ComputeService/Intensive");
    assert_eq!(line["grpc_status"], 0);
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span_id"], server.id.as_str());
}

/// A metric point as rotel's detailed log shows it.
#[derive(Debug, Default, Clone)]
struct Point {
    metric: String,
    kind: String,
    attributes: Vec<(String, String)>,
    value: String,
    count: String,
    sum: String,
    bounds: Vec<String>,
    buckets: Vec<u64>,
}

/// The points of the last metrics export in rotel's log.
fn last_export(log: &str) -> Vec<Point> {
    let Some(start) = log.rfind("ResourceMetrics #") else {
        return Vec::new();
    };
    let mut points: Vec<Point> = Vec::new();
    let (mut metric, mut kind) = (String::new(), String::new());
    let mut in_attributes = false;
    for line in log[start..].lines() {
        let t = line.trim();
        if t.starts_with("ResourceLog") || t.starts_with("ResourceSpans") {
            break;
        }
        if let Some(v) = t.strip_prefix("-> Name: ") {
            metric = v.to_owned();
            in_attributes = false;
        } else if let Some(v) = t.strip_prefix("-> DataType: ") {
            kind = v.to_owned();
        } else if t.starts_with("HistogramDataPoints #") || t.starts_with("NumberDataPoints #") {
            points.push(Point {
                metric: metric.clone(),
                kind: kind.clone(),
                ..Point::default()
            });
        } else if t == "Data point attributes:" {
            in_attributes = true;
        } else if let (true, Some(kv)) = (in_attributes, t.strip_prefix("-> ")) {
            if let (Some(p), Some((k, v))) = (points.last_mut(), kv.split_once(": ")) {
                let v = v
                    .split_once('(')
                    .map_or(v, |(_, v)| v.trim_end_matches(')'));
                p.attributes.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(p) = points.last_mut() {
            in_attributes = false;
            if let Some(v) = t.strip_prefix("Value: ") {
                p.value = v.to_owned();
            } else if let Some(v) = t.strip_prefix("Count: ") {
                p.count = v.to_owned();
            } else if let Some(v) = t.strip_prefix("Sum: ") {
                p.sum = v.to_owned();
            } else if let Some((_, v)) = t
                .strip_prefix("ExplicitBounds #")
                .and_then(|r| r.split_once(": "))
            {
                p.bounds.push(v.to_owned());
            } else if let Some((_, v)) = t
                .strip_prefix("Buckets #")
                .and_then(|r| r.split_once("Count: "))
            {
                p.buckets.push(v.parse().unwrap());
            }
        }
    }
    points
}

/// A log record as rotel's detailed log shows it.
#[derive(Debug, Default, Clone)]
struct Record {
    resource: Vec<String>,
    attributes: HashMap<String, String>,
    trace_id: String,
    span_id: String,
}

fn log_records(log: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut resource = Vec::new();
    let mut section = "";
    for line in log.lines() {
        let t = line.trim();
        if t.starts_with("ResourceLog #") {
            resource.clear();
            section = "log-resource";
        } else if t.starts_with("ResourceSpans #") || t.starts_with("ResourceMetrics #") {
            section = "";
        } else if t == "Resource attributes:" && section == "log-resource" {
            section = "log-resource-attributes";
        } else if t.starts_with("LogRecord #") {
            records.push(Record {
                resource: resource.clone(),
                ..Record::default()
            });
            section = "record";
        } else if let Some(kv) = t.strip_prefix("-> ") {
            match section {
                "log-resource-attributes" => resource.push(kv.to_owned()),
                "record" => {
                    if let (Some(r), Some((k, v))) = (records.last_mut(), kv.split_once(": ")) {
                        let v = v
                            .split_once('(')
                            .map_or(v, |(_, v)| v.trim_end_matches(')'));
                        r.attributes.insert(k.to_owned(), v.to_owned());
                    }
                }
                _ => {}
            }
        } else if section == "record" {
            if let Some((k, v)) = t.split_once(':') {
                match k.trim() {
                    "Trace ID" => records.last_mut().unwrap().trace_id = v.trim().to_owned(),
                    "Span ID" => records.last_mut().unwrap().span_id = v.trim().to_owned(),
                    _ => {}
                }
            }
        } else if section == "log-resource-attributes" {
            section = "";
        }
    }
    records
}

/// The resource attributes of the exported spans.
fn span_resource(log: &str) -> Vec<String> {
    let Some(start) = log.find("ResourceSpans #") else {
        return Vec::new();
    };
    log[start..]
        .lines()
        .skip_while(|l| l.trim() != "Resource attributes:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("-> ").map(str::to_owned))
        .collect()
}

/// OTLP metrics and logs next to the Prometheus endpoint: with `OTEL_METRICS_EXPORTER` and
/// `OTEL_LOGS_EXPORTER` set to `otlp`, the real receiver gets the same instruments with the
/// same values the scrape shows (counters and histograms exactly, once traffic stops), and a
/// log record for every request carrying the request's trace and the traces' resource.
async fn metrics_and_logs_reach_the_collector(protocol: &str) {
    use floodgate::grpc::pb::{compute_service_client::ComputeServiceClient, ComputeRequest};
    let collector = start_collector_logging(&["traces", "metrics", "logs"]);
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{}", collector.grpc),
        _ => format!("http://127.0.0.1:{}", collector.http),
    };
    let app = spawn_binary(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_SERVICE_NAME", "floodgate-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=platform"),
        ("ENVIRONMENT", "production"),
        ("LOG_LEVEL", "info"),
    ])
    .await;
    let c = client();
    let mut traces = Vec::new();
    for n in 0..17u64 {
        let trace = format!("{:032x}", 0xabc000 + n);
        let r = app
            .compute_fast(&c, n, Some(&format!("00-{trace}-{PARENT_ID}-01")))
            .await;
        assert_eq!(r.status(), 200);
        traces.push(trace);
    }
    for _ in 0..3 {
        let r = c
            .post(format!("{}/api/v1/compute/fast", app.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let channel = tonic::transport::Endpoint::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = ComputeServiceClient::new(channel);
    for n in 0..4 {
        grpc.fast(ComputeRequest { number: n }).await.unwrap();
    }

    // Traffic has stopped: wait for an export that has all of it.
    let count = |points: &[Point], metric: &str| -> u64 {
        points
            .iter()
            .filter(|p| p.metric == metric)
            .map(|p| p.count.parse::<u64>().unwrap_or(0))
            .sum()
    };
    let started = Instant::now();
    loop {
        let points = last_export(&std::fs::read_to_string(&collector.log).unwrap_or_default());
        if count(&points, "http.server.request.duration") >= 20
            && count(&points, "rpc.server.call.duration") >= 4
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics never arrived: {points:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The scrape and the next export, at the same moment as far as traffic goes.
    let text = c
        .get(format!("{}/metrics/prometheus", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = std::fs::read_to_string(&collector.log).unwrap();
    let points = last_export(&log);
    assert_eq!(count(&points, "http.server.request.duration"), 20);
    assert_eq!(count(&points, "rpc.server.call.duration"), 4);
    let labels = |p: &Point| -> String {
        p.attributes
            .iter()
            .map(|(k, v)| format!("{}=\"{v}\"", k.replace('.', "_")))
            .collect::<Vec<_>>()
            .join(",")
    };
    let has = |line: String| {
        assert!(
            text.lines().any(|l| l == line),
            "the scrape lacks `{line}` the export has:\n{text}"
        )
    };
    let mut compared = 0;
    for p in &points {
        let prom = match p.metric.as_str() {
            "http.server.request.duration" => "http_server_request_duration_seconds",
            "rpc.server.call.duration" => "rpc_server_call_duration_seconds",
            name if p.kind == "Sum"
                && !name.starts_with("process_")
                && name != "http.server.active_requests" =>
            {
                has(format!("{name}_total{{{}}} {}", labels(p), p.value).replace("{}", ""));
                compared += 1;
                continue;
            }
            _ => continue,
        };
        let l = labels(p);
        has(format!("{prom}_count{{{l}}} {}", p.count));
        has(format!("{prom}_sum{{{l}}} {}", p.sum));
        let mut cumulative = 0;
        for (i, n) in p.buckets.iter().enumerate() {
            cumulative += n;
            let le = p.bounds.get(i).map_or("+Inf", String::as_str);
            has(format!("{prom}_bucket{{{l},le=\"{le}\"}} {cumulative}"));
        }
        compared += 1;
    }
    assert!(compared >= 10, "{points:#?}");

    // Every request's access-log record carries its trace, and the traces' resource. Spans
    // and log records are exported in batches of their own, so each is waited for.
    let started = Instant::now();
    let (records, mut resource) = loop {
        let log = std::fs::read_to_string(&collector.log).unwrap();
        let records = log_records(&log);
        let resource = span_resource(&log);
        if !resource.is_empty()
            && traces
                .iter()
                .all(|t| records.iter().any(|r| &r.trace_id == t))
        {
            break (records, resource);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "log records or spans never arrived: {records:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    resource.sort();
    assert!(
        resource.contains(&"team: Str(platform)".to_owned()),
        "{resource:?}"
    );
    let of_requests: Vec<_> = records
        .iter()
        .filter(|r| r.attributes.contains_key("request_id"))
        .collect();
    assert!(of_requests.len() >= 24, "{of_requests:#?}");
    for r in &of_requests {
        assert_eq!(
            r.trace_id.len(),
            32,
            "a request's record without its trace: {r:#?}"
        );
        assert_eq!(r.span_id.len(), 16, "{r:#?}");
        let mut theirs = r.resource.clone();
        theirs.sort();
        assert_eq!(theirs, resource, "the traces' resource");
    }
    for t in &traces {
        let r = of_requests.iter().find(|r| &r.trace_id == t).unwrap();
        assert_eq!(r.attributes["path"], "/api/v1/compute/fast");
        assert_eq!(r.attributes["status"], "200");
    }
}

#[tokio::test]
async fn metrics_and_logs_are_exported_over_http_protobuf() {
    metrics_and_logs_reach_the_collector("http/protobuf").await;
}

#[tokio::test]
async fn metrics_and_logs_are_exported_over_grpc() {
    metrics_and_logs_reach_the_collector("grpc").await;
}

/// A receiver that is not there: every export fails and is counted, and requests are
/// answered as fast as ever.
#[tokio::test]
async fn failed_metric_exports_are_counted_and_never_touch_requests() {
    let port = free_port();
    let app = spawn_binary(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        ),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ("OTEL_METRIC_EXPORT_TIMEOUT", "200"),
    ])
    .await;
    let c = client();
    let started = Instant::now();
    loop {
        let text = c
            .get(format!("{}/metrics/prometheus", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let failed = sum_series(&text, "floodgate_otel_metric_exports_failed_total", |_| {
            true
        });
        if failed >= 3.0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..50 {
        let sent = Instant::now();
        assert_eq!(app.compute_fast(&c, n, None).await.status(), 200);
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "a request waited on the exporter"
        );
    }
}
