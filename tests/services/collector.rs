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
    start_collector_logging("traces")
}

/// As [`start_collector`], logging the signals listed (`traces`, `metrics`, `logs`).
pub fn start_collector_logging(signals: &str) -> Collector {
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
            "--debug-log",
            signals,
            "--debug-log-verbosity",
            "detailed",
        ])
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
    let pid = app.child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
