//! OTLP metrics: the Prometheus endpoint's instruments pushed to an OpenTelemetry collector
//! (`OTEL_METRICS_EXPORTER=otlp`), every `OTEL_METRIC_EXPORT_INTERVAL`, over gRPC or
//! HTTP/protobuf.
//!
//! Each export renders the same exposition a scrape gets and converts it, so the two never
//! disagree: the same series, the same values at the moment of the export. Counters become
//! cumulative monotonic sums, gauges gauges, histograms cumulative explicit-bucket histograms
//! with the exposition's buckets; the HTTP and RPC server instruments take their
//! OpenTelemetry names (`http.server.request.duration`, `http.request.method`, …).
//!
//! Hand-written on `opentelemetry-proto`'s wire types rather than the SDK's meter provider:
//! the SDK's metric data cannot be built from outside it (its fields are crate-private) and
//! OpenTelemetry has no asynchronous histogram, so the SDK could only export what was
//! recorded into it a second time, on every request. The export runs on its own task; a
//! failure is logged at most once a minute, counted in
//! `floodgate_otel_metric_exports_failed_total` and retried at the next interval, and no
//! request ever waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::exposition::{self, Family, Kind};
use super::metrics as m;
use crate::config::OtlpProtocol;

/// Metric exports that failed (sent, refused or timed out); read into
/// `floodgate_otel_metric_exports_failed_total`.
static EXPORTS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Metric exports that failed since start.
pub fn exports_failed() -> u64 {
    EXPORTS_FAILED.load(Ordering::Relaxed)
}

/// The instruments OpenTelemetry names, by Prometheus name: (name, unit, monotonic sum).
const SEMCONV: &[(&str, &str, &str)] = &[
    (
        m::HTTP_REQUEST_DURATION,
        "http.server.request.duration",
        "s",
    ),
    (
        m::HTTP_ACTIVE_REQUESTS,
        "http.server.active_requests",
        "{request}",
    ),
    (m::RPC_DURATION, "rpc.server.call.duration", "s"),
];

/// Their attributes, by label.
const SEMCONV_LABELS: &[(&str, &str)] = &[
    ("http_request_method", "http.request.method"),
    ("http_route", "http.route"),
    ("http_response_status_code", "http.response.status_code"),
    ("url_scheme", "url.scheme"),
    ("network_protocol_version", "network.protocol.version"),
    ("error_type", "error.type"),
    ("rpc_system_name", "rpc.system.name"),
    ("rpc_method", "rpc.method"),
    ("rpc_response_status_code", "rpc.response.status_code"),
];

/// Where and how the metrics go.
pub struct Exporter {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub interval: Duration,
    pub timeout: Duration,
    /// The resource's attributes (the traces' resource).
    pub resource: Vec<(String, String)>,
}

/// A running export; [`Running::shutdown`] sends one last export and stops.
pub struct Running {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Export once more (what happened since the last interval) and stop.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

impl Exporter {
    /// Start exporting what `render` returns (a 0.0.4 exposition) on the current runtime.
    pub fn start(self, render: impl Fn() -> String + Send + Sync + 'static) -> Running {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let started = SystemTime::now();
            let client = Client::new(&self);
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let mut last_warning: Option<Instant> = None;
            let timeout = self.timeout;
            let client = &client;
            // One export of the series now; the error, if it failed.
            let export = || {
                let request = request(&render(), &self.resource, started, SystemTime::now());
                async move {
                    match tokio::time::timeout(timeout, client.send(request)).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(_) => Some(format!("no answer within {timeout:?}")),
                    }
                }
            };
            loop {
                // The stop is looked at first: after an export that took longer than the
                // interval the next tick is always due, and a fair choice would export
                // again, with even odds each time, before the last export.
                let mut last = tokio::select! {
                    biased;
                    () = stopped.notified() => true,
                    _ = ticks.tick() => false,
                };
                let mut error = None;
                if !last {
                    tokio::select! {
                        biased;
                        // Stopped while an export was under way: the series are cumulative,
                        // so the last export carries all that one would have, and it is
                        // given up for the last, which has its whole timeout within the
                        // shutdown's.
                        () = stopped.notified() => last = true,
                        failed = export() => error = failed,
                    }
                }
                if last {
                    error = export().await;
                }
                if let Some(error) = error {
                    EXPORTS_FAILED.fetch_add(1, Ordering::Relaxed);
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(%error, endpoint = %self.endpoint, "OTLP metrics export failed");
                    }
                }
                if last {
                    break;
                }
            }
        });
        Running { stop, task }
    }
}

enum Client {
    Grpc(
        Option<MetricsServiceClient<tonic::transport::Channel>>,
        String,
    ),
    Http(reqwest::Client, String),
}

impl Client {
    fn new(exporter: &Exporter) -> Self {
        match exporter.protocol {
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(exporter.endpoint.clone())
                    .ok()
                    .map(|e| MetricsServiceClient::new(e.timeout(exporter.timeout).connect_lazy()));
                Client::Grpc(channel, exporter.endpoint.clone())
            }
            OtlpProtocol::HttpProtobuf => Client::Http(
                reqwest::Client::builder()
                    .timeout(exporter.timeout)
                    .build()
                    .unwrap_or_default(),
                exporter.endpoint.clone(),
            ),
        }
    }

    async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Client::Grpc(Some(client), _) => client
                .clone()
                .export(request)
                .await
                .map(drop)
                .map_err(|s| format!("{}: {}", s.code(), s.message())),
            Client::Grpc(None, endpoint) => Err(format!("invalid endpoint {endpoint}")),
            Client::Http(client, url) => {
                let r = client
                    .post(url)
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", r.status()))
                }
            }
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// One export: every family of `text`, at `now`, cumulative since `start`.
pub fn request(
    text: &str,
    resource: &[(String, String)],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let families = exposition::parse(text).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read the exposition for OTLP");
        Vec::new()
    });
    let (start, now) = (nanos(start), nanos(now));
    let metrics = families
        .iter()
        .filter_map(|f| metric(f, start, now))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "floodgate".to_owned(),
                    version: crate::VERSION.to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The attribute of label `key`: OpenTelemetry's name for the semantic-convention
/// instruments (the status code as an integer, as the conventions type it).
fn attribute(semconv: bool, key: &str, value: &str) -> KeyValue {
    if !semconv {
        return string(key, value);
    }
    let name = SEMCONV_LABELS
        .iter()
        .find(|(label, _)| *label == key)
        .map_or(key, |(_, name)| name);
    match (name, value.parse::<i64>()) {
        ("http.response.status_code", Ok(code)) => KeyValue {
            key: name.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(code)),
            }),
            ..Default::default()
        },
        _ => string(name, value),
    }
}

fn metric(family: &Family<'_>, start: u64, now: u64) -> Option<Metric> {
    let semconv = SEMCONV.iter().find(|(prom, ..)| *prom == family.name);
    let (name, unit) = match semconv {
        Some((_, name, unit)) => ((*name).to_owned(), (*unit).to_owned()),
        None => {
            let name = match family.kind {
                Kind::Counter => family.name.strip_suffix("_total").unwrap_or(family.name),
                _ => family.name,
            };
            let unit = if name.ends_with("_seconds") {
                "s"
            } else if name.ends_with("_bytes") {
                "By"
            } else {
                ""
            };
            (name.to_owned(), unit.to_owned())
        }
    };
    let attributes = |s: &exposition::Sample<'_>| -> Vec<KeyValue> {
        s.labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| attribute(semconv.is_some(), k, v))
            .collect()
    };
    let points = || {
        family
            .samples
            .iter()
            .map(|s| NumberDataPoint {
                attributes: attributes(s),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(s.value)),
                ..Default::default()
            })
            .collect()
    };
    let data = match family.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: points(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        // `http.server.active_requests` is an up-down counter.
        Kind::Gauge if semconv.is_some() => metric::Data::Sum(Sum {
            data_points: points(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: false,
        }),
        Kind::Gauge | Kind::Untyped => metric::Data::Gauge(Gauge {
            data_points: points(),
        }),
        Kind::Histogram => metric::Data::Histogram(Histogram {
            data_points: histogram_points(family, &attributes, start, now),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        Kind::Summary => return None,
    };
    Some(Metric {
        name,
        description: family.help.as_deref().unwrap_or_default().to_owned(),
        unit,
        data: Some(data),
        ..Default::default()
    })
}

/// One point per label set: the exposition's cumulative buckets made per-bucket counts.
fn histogram_points(
    family: &Family<'_>,
    attributes: &dyn Fn(&exposition::Sample<'_>) -> Vec<KeyValue>,
    start: u64,
    now: u64,
) -> Vec<HistogramDataPoint> {
    let mut points: Vec<(Vec<KeyValue>, HistogramDataPoint, f64)> = Vec::new();
    for sample in &family.samples {
        let attrs = attributes(sample);
        let index = match points.iter().position(|(a, ..)| *a == attrs) {
            Some(i) => i,
            None => {
                points.push((
                    attrs.clone(),
                    HistogramDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        ..Default::default()
                    },
                    0.0,
                ));
                points.len() - 1
            }
        };
        let (_, point, cumulative) = &mut points[index];
        let suffix = &sample.name[family.name.len()..];
        match suffix {
            "_bucket" => {
                let count = (sample.value - *cumulative).max(0.0);
                *cumulative = sample.value;
                point.bucket_counts.push(count as u64);
                match sample.label("le").map(str::parse::<f64>) {
                    Some(Ok(le)) if le.is_finite() => point.explicit_bounds.push(le),
                    _ => {}
                }
            }
            "_sum" => point.sum = Some(sample.value),
            "_count" => point.count = sample.value as u64,
            _ => {}
        }
    }
    points.into_iter().map(|(_, p, _)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",le=\"0.1\"} 2
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",le=\"1\"} 5
http_server_request_duration_seconds_bucket{http_request_method=\"POST\",http_response_status_code=\"200\",le=\"+Inf\"} 6
http_server_request_duration_seconds_sum{http_request_method=\"POST\",http_response_status_code=\"200\"} 4.5
http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\"} 6
# TYPE floodgate_jobs_total counter
floodgate_jobs_total{outcome=\"completed\"} 11
# TYPE floodgate_job_queue_depth gauge
floodgate_job_queue_depth 3
";

    /// A collector that takes the connection and never answers: every export lasts its
    /// timeout, longer than the interval. A shutdown during one gives it up and exports once
    /// more, the last (the series are cumulative), with its whole timeout, and never another
    /// regular export first.
    #[tokio::test(start_paused = true)]
    async fn a_shutdown_during_a_slow_export_gives_it_up_for_the_last() {
        use std::sync::atomic::AtomicU64;
        let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/v1/metrics", hung.local_addr().unwrap());
        for _ in 0..50 {
            let renders = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&renders);
            let running = Exporter {
                endpoint: endpoint.clone(),
                protocol: OtlpProtocol::HttpProtobuf,
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(1),
                resource: Vec::new(),
            }
            .start(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                String::new()
            });
            // Exports at 0.5 s and 1.5 s, each its 1 s timeout; shut down during the second.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let before = renders.load(Ordering::SeqCst);
            assert_eq!(before, 2);
            let at = tokio::time::Instant::now();
            running.shutdown().await;
            assert_eq!(renders.load(Ordering::SeqCst), before + 1, "only the last");
            assert_eq!(
                at.elapsed(),
                Duration::from_secs(1),
                "the last export's timeout"
            );
        }
    }

    #[test]
    fn the_exposition_becomes_otlp_with_opentelemetry_names_for_the_server_instruments() {
        let t = UNIX_EPOCH + Duration::from_secs(100);
        let req = request(TEXT, &[("service.name".into(), "x".into())], t, t);
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes[0],
            string("service.name", "x")
        );
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3);
        let h = &metrics[0];
        assert_eq!(
            (h.name.as_str(), h.unit.as_str()),
            ("http.server.request.duration", "s")
        );
        let Some(metric::Data::Histogram(h)) = &h.data else {
            panic!("{h:?}")
        };
        let p = &h.data_points[0];
        assert_eq!(p.bucket_counts, [2, 3, 1]);
        assert_eq!(p.explicit_bounds, [0.1, 1.0]);
        assert_eq!((p.count, p.sum), (6, Some(4.5)));
        assert_eq!(p.attributes[0], string("http.request.method", "POST"));
        assert_eq!(
            p.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(200))
        );
        assert_eq!(metrics[1].name, "floodgate_jobs");
        let Some(metric::Data::Sum(s)) = &metrics[1].data else {
            panic!()
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(11.0))
        );
        assert!(matches!(metrics[2].data, Some(metric::Data::Gauge(_))));
    }
}
