//! Live metrics (`--out prometheus-rw=URL`, `--out otlp=URL`): while a
//! measured phase runs, every `--out-interval` (1 s), the requests finished
//! and failed so far (counters), the latency percentiles of the last interval
//! and the load's target, labelled by scenario, target and stage, pushed to
//! a Prometheus remote-write receiver or an OpenTelemetry collector, so that
//! the load and the service's own dashboards share one time axis.
//!
//! Series (Prometheus names; OTLP names put a `.` after `floodgate_load`
//! and drop `_total`, the collector's Prometheus exporter puts them back):
//!
//! - `floodgate_load_requests_total{scenario,target,stage}`: requests
//!   finished (responses and transport errors), a counter from 0 at the start
//!   of the phase; its last value is the report's `requests.total`;
//! - `floodgate_load_errors_total{…}`: those without a 2xx answer;
//! - `floodgate_load_latency_seconds{…,quantile="0.5"|"0.9"|"0.99"|"1"}`:
//!   the responses of the last interval;
//! - `floodgate_load_target_rate{scenario,stage}` (open loop, requests/s) or
//!   `floodgate_load_target_connections{scenario,stage}` (closed loop): what
//!   the load is asked for now.
//!
//! `stage` is there only with staged profiles; every stage's counters are
//! pushed from the start (0 before it begins), so `rate()` and `increase()`
//! see each series from zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use serde::Serialize;

use crate::client::{self, BaseUrl};
use crate::net::{Endpoint, TlsTarget};
use crate::run::{Live, LoadModel};
use crate::stages::StageKind;
use crate::tls::{self, TlsClient};

pub use crate::options::{OutputKind, OutputSpec};

/// Parses `prometheus-rw=URL` or `otlp=URL` (`http[s]://host[:port]/path`:
/// Prometheus's `/api/v1/write`, a collector's `/v1/metrics`).
pub fn parse_output(s: &str) -> Result<OutputSpec, String> {
    let (kind, url) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KIND=URL (prometheus-rw=URL or otlp=URL)"))?;
    let kind = match kind.trim() {
        "prometheus-rw" => OutputKind::PrometheusRw,
        "otlp" => OutputKind::Otlp,
        other => {
            return Err(format!(
                "`{other}` is not a live-metrics output (prometheus-rw or otlp)"
            ))
        }
    };
    let url = url.trim().to_owned();
    let parsed = client::parse_base_url(&url)?;
    if parsed.prefix.is_empty() {
        return Err(format!(
            "`{url}` has no path (Prometheus: /api/v1/write; a collector: /v1/metrics)"
        ));
    }
    Ok(OutputSpec { kind, url })
}

/// One output, resolved, and how its pushes went.
struct Sink {
    spec: OutputSpec,
    endpoint: Endpoint,
    host: HeaderValue,
    path: String,
    pushes: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// How the pushes to one output went, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputReport {
    pub kind: OutputKind,
    pub url: String,
    /// Pushes made, and those that failed (no 2xx answer in time).
    pub pushes: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The outputs of a run.
pub struct Outputs {
    sinks: Vec<Arc<Sink>>,
    interval: Duration,
}

impl Outputs {
    /// Resolves every output and pushes an empty batch to each: an output
    /// that does not take it stops the run before any load.
    pub async fn connect(
        specs: &[OutputSpec],
        interval: Duration,
        tls_options: &tls::TlsOptions,
        timeout: Duration,
    ) -> Result<Outputs, String> {
        let mut sinks = Vec::with_capacity(specs.len());
        let mut tls: Option<TlsClient> = None;
        for spec in specs {
            let BaseUrl {
                tls: https,
                host,
                port,
                prefix,
            } = client::parse_base_url(&spec.url)?;
            let addr = client::resolve(&host, port, timeout).await?;
            let tls_target = if https {
                if tls.is_none() {
                    tls = Some(TlsClient::new(tls_options)?);
                }
                Some(TlsTarget {
                    connector: tls.as_ref().expect("made above").connector(false),
                    name: tls::server_name(&host)?,
                })
            } else {
                None
            };
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let sink = Sink {
                spec: spec.clone(),
                endpoint: Endpoint {
                    addr,
                    tls: tls_target,
                },
                host: HeaderValue::from_str(&authority)
                    .map_err(|_| format!("invalid host in {}", spec.url))?,
                path: prefix,
                pushes: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                last_error: Mutex::new(None),
            };
            sink.push(Batch::default(), timeout)
                .await
                .map_err(|e| format!("{} {}: {e}", spec.kind.name(), spec.url))?;
            sinks.push(Arc::new(sink));
        }
        Ok(Outputs { sinks, interval })
    }

    /// Starts pushing the live figures of a phase: at once (the counters at
    /// 0), then every interval until [`Pusher::finish`] (or until the
    /// [`Pusher`] is dropped), then once more with the final values.
    pub fn start(&self, live: Arc<Live>, labels: PhaseLabels) -> Pusher {
        let state = Arc::new(PushState {
            sinks: self.sinks.clone(),
            live,
            labels,
            last_ms: AtomicU64::new(0),
            timeout: self.interval.max(Duration::from_secs(1)),
            warned: std::sync::atomic::AtomicBool::new(false),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(push_until_stopped(self.interval, stopped, move || {
            let state = Arc::clone(&state);
            async move { state.push_now().await }
        }));
        Pusher { stop, task }
    }

    /// How the pushes went.
    pub fn report(&self) -> Vec<OutputReport> {
        self.sinks
            .iter()
            .map(|s| OutputReport {
                kind: s.spec.kind,
                url: s.spec.url.clone(),
                pushes: s.pushes.load(Ordering::Relaxed),
                failed: s.failed.load(Ordering::Relaxed),
                last_error: s.last_error.lock().expect("sink lock").clone(),
            })
            .collect()
    }
}

/// Pushes at once, then every `interval` until `stopped`, then once more. A
/// push under way is finished (within its timeout) before the stop is seen:
/// no sample is cut off half-sent. The stop is looked at first: after a push
/// that took longer than the interval the next tick is always due, and a fair
/// choice between the two would push again, with even odds each time, before
/// the last.
async fn push_until_stopped<F, P>(
    interval: Duration,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    push: F,
) where
    F: Fn() -> P,
    P: std::future::Future<Output = ()>,
{
    push().await;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = tick.tick() => push().await,
        }
    }
    push().await;
}

/// The labels of one phase's series.
#[derive(Debug, Clone)]
pub struct PhaseLabels {
    pub scenario: String,
    /// Each target's base URL, in the phase's order.
    pub targets: Vec<String>,
    pub model: LoadModel,
}

/// A phase's pushes, until [`Pusher::finish`].
pub struct Pusher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    /// Stops the periodic pushes and waits for the last one: the counters'
    /// final values, those of the report. Takes at most two push timeouts
    /// (one under way, the last), whatever the outputs do.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct PushState {
    sinks: Vec<Arc<Sink>>,
    live: Arc<Live>,
    labels: PhaseLabels,
    /// The last sample's time: each push's is later.
    last_ms: AtomicU64,
    timeout: Duration,
    /// A failed push was reported on stderr.
    warned: std::sync::atomic::AtomicBool,
}

impl PushState {
    /// Samples the phase now and pushes the batch to every output at once.
    async fn push_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let at = now.max(self.last_ms.load(Ordering::Relaxed) + 1);
        self.last_ms.store(at, Ordering::Relaxed);
        let batch = self.sample(at);
        let pushes = self.sinks.iter().map(|sink| {
            let batch = batch.clone();
            async move {
                if let Err(e) = sink.push(batch, self.timeout).await {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "floodgate-load: live metrics: a push to {} {} failed: {e} (the run goes on; the report counts the failures)",
                            sink.spec.kind.name(),
                            sink.spec.url
                        );
                    }
                }
            }
        });
        futures_util::future::join_all(pushes).await;
    }

    /// The series of the phase at `at` (ms since 1970).
    fn sample(&self, at: u64) -> Batch {
        let live = &self.live;
        let labels = &self.labels;
        let stages: Vec<String> = live.profile.as_ref().map_or_else(Vec::new, |p| {
            p.stages.iter().map(|s| s.name.clone()).collect()
        });
        let elapsed = live.started_at.elapsed().as_secs_f64();
        let current = live.profile.as_ref().map(|p| p.stage_at(elapsed));
        let mut series = Vec::new();
        for (t, sample) in live.drain_targets().into_iter().enumerate() {
            let target = labels.targets.get(t).cloned().unwrap_or_default();
            let base = |stage: Option<&str>| {
                let mut l = vec![
                    ("scenario", labels.scenario.clone()),
                    ("target", target.clone()),
                ];
                if let Some(stage) = stage {
                    l.push(("stage", stage.to_owned()));
                }
                l
            };
            if stages.is_empty() {
                series.push(Series::counter("requests", base(None), sample.requests));
                series.push(Series::counter("errors", base(None), sample.failed));
            } else {
                for (name, (requests, failed)) in stages.iter().zip(&sample.stages) {
                    series.push(Series::counter("requests", base(Some(name)), *requests));
                    series.push(Series::counter("errors", base(Some(name)), *failed));
                }
            }
            let stage = current.map(|i| stages[i].as_str());
            for (q, v) in [
                ("0.5", sample.window.latency_ms(0.5)),
                ("0.9", sample.window.latency_ms(0.9)),
                ("0.99", sample.window.latency_ms(0.99)),
                ("1", sample.window.max_ms()),
            ] {
                if let Some(ms) = v {
                    let mut l = base(stage);
                    l.push(("quantile", q.to_owned()));
                    series.push(Series::gauge("latency_seconds", l, ms / 1e3));
                }
            }
        }
        let (what, now) = match (&live.profile, labels.model) {
            (Some(p), _) => (
                match p.kind {
                    StageKind::Rate => "target_rate",
                    StageKind::Concurrency => "target_connections",
                },
                p.target_at(elapsed),
            ),
            (None, LoadModel::Open { rate, .. }) => ("target_rate", rate),
            (None, LoadModel::Closed { concurrency }) => {
                ("target_connections", f64::from(concurrency))
            }
        };
        let mut l = vec![("scenario", labels.scenario.clone())];
        if let Some(i) = current {
            l.push(("stage", stages[i].clone()));
        }
        series.push(Series::gauge(what, l, now));
        Batch {
            at_ms: at,
            start_ms: live
                .started_at_wall
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            series,
        }
    }
}

/// The series of one push, all sampled at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub at_ms: u64,
    /// When the counters started (the phase).
    pub start_ms: u64,
    pub series: Vec<Series>,
}

/// One series' sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Without the `floodgate_load_` prefix or `_total`: `requests`, `latency_seconds`.
    pub name: &'static str,
    pub counter: bool,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Series {
    fn counter(name: &'static str, labels: Vec<(&'static str, String)>, n: u64) -> Series {
        Series {
            name,
            counter: true,
            labels,
            value: n as f64,
        }
    }

    fn gauge(name: &'static str, labels: Vec<(&'static str, String)>, v: f64) -> Series {
        Series {
            name,
            counter: false,
            labels,
            value: v,
        }
    }

    /// Its Prometheus name: `floodgate_load_requests_total`.
    pub fn prometheus_name(&self) -> String {
        if self.counter {
            format!("floodgate_load_{}_total", self.name)
        } else {
            format!("floodgate_load_{}", self.name)
        }
    }
}

impl Sink {
    /// Pushes `batch`; an error says why it was not taken.
    async fn push(&self, batch: Batch, timeout: Duration) -> Result<(), String> {
        let (body, content_type, encoding) = match self.spec.kind {
            OutputKind::PrometheusRw => (
                remote_write::encode(&batch),
                "application/x-protobuf",
                Some("snappy"),
            ),
            OutputKind::Otlp => (otlp::encode(&batch), "application/x-protobuf", None),
        };
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self
            .path
            .parse()
            .map_err(|e| format!("invalid path {}: {e}", self.path))?;
        let headers = req.headers_mut();
        headers.insert(http::header::HOST, self.host.clone());
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("floodgate-load/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(encoding) = encoding {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding),
            );
            headers.insert(
                "x-prometheus-remote-write-version",
                HeaderValue::from_static("0.1.0"),
            );
        }
        self.pushes.fetch_add(1, Ordering::Relaxed);
        let result = match client::send(&self.endpoint, req, timeout).await {
            Ok(a) if (200..300).contains(&a.status) => Ok(()),
            Ok(a) => {
                let body = String::from_utf8_lossy(&a.body);
                Err(format!(
                    "answered {}{}{}",
                    a.status,
                    if body.trim().is_empty() { "" } else { ": " },
                    body.trim().chars().take(200).collect::<String>()
                ))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().expect("sink lock") = Some(e.clone());
        }
        result
    }
}

/// Prometheus remote write 1.0: a `prometheus.WriteRequest` (protobuf),
/// block-compressed with snappy. The four messages it needs are declared
/// here with prost's derive rather than generated from Prometheus's
/// `.proto` files (whose build pulls gogoproto's): their field numbers are
/// those of `prompb/types.proto` and `prompb/remote.proto`, and the test
/// against a real Prometheus checks them.
pub mod remote_write {
    use super::Batch;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// The batch as a `WriteRequest`: labels sorted by name, `__name__`
    /// first; compressed.
    pub fn encode(batch: &Batch) -> Vec<u8> {
        let timeseries = batch
            .series
            .iter()
            .map(|s| {
                let mut labels: Vec<Label> = s
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: (*name).to_owned(),
                        value: value.clone(),
                    })
                    .collect();
                labels.push(Label {
                    name: "__name__".into(),
                    value: s.prometheus_name(),
                });
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                TimeSeries {
                    labels,
                    samples: vec![Sample {
                        value: s.value,
                        timestamp: batch.at_ms as i64,
                    }],
                }
            })
            .collect();
        let raw = prost::Message::encode_to_vec(&WriteRequest { timeseries });
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("snappy compresses any input")
    }
}

/// OTLP/HTTP metrics: an `ExportMetricsServiceRequest` (protobuf) of the
/// protocol's own types: counters as cumulative monotonic sums from the
/// phase's start, the rest as gauges.
pub mod otlp {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        any_value, AnyValue, InstrumentationScope, KeyValue,
    };
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::Batch;

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    /// The batch as an `ExportMetricsServiceRequest`, one metric per name.
    pub fn encode(batch: &Batch) -> Vec<u8> {
        let (start, at) = (batch.start_ms * 1_000_000, batch.at_ms * 1_000_000);
        let mut metrics: Vec<Metric> = Vec::new();
        for s in &batch.series {
            let name = format!("floodgate_load.{}", s.name);
            let point = NumberDataPoint {
                attributes: s.labels.iter().map(|(k, v)| attribute(k, v)).collect(),
                start_time_unix_nano: if s.counter { start } else { 0 },
                time_unix_nano: at,
                value: Some(if s.counter {
                    number_data_point::Value::AsInt(s.value as i64)
                } else {
                    number_data_point::Value::AsDouble(s.value)
                }),
                ..Default::default()
            };
            if let Some(existing) = metrics.iter_mut().find(|m| m.name == name) {
                match &mut existing.data {
                    Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
                    Some(metric::Data::Gauge(gauge)) => gauge.data_points.push(point),
                    _ => {}
                }
                continue;
            }
            let (unit, description) = match s.name {
                "requests" => (
                    "{request}",
                    "Requests finished: responses and transport errors.",
                ),
                "errors" => ("{request}", "Requests finished without a 2xx answer."),
                "latency_seconds" => (
                    "s",
                    "Latency of the responses of the last interval, by quantile.",
                ),
                "target_rate" => ("{request}/s", "The request rate the load is asked for."),
                _ => ("{connection}", "The connections the load is asked for."),
            };
            metrics.push(Metric {
                name,
                description: description.to_owned(),
                unit: unit.to_owned(),
                data: Some(if s.counter {
                    metric::Data::Sum(Sum {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })
                } else {
                    metric::Data::Gauge(Gauge {
                        data_points: vec![point],
                    })
                }),
                ..Default::default()
            });
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attribute("service.name", "floodgate-load")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "floodgate-load".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        prost::Message::encode_to_vec(&request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch {
            at_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            series: vec![
                Series::counter(
                    "requests",
                    vec![("scenario", "fast".into()), ("target", "http://a:1".into())],
                    42,
                ),
                Series::counter(
                    "requests",
                    vec![("scenario", "fast".into()), ("target", "http://b:2".into())],
                    7,
                ),
                Series::gauge(
                    "latency_seconds",
                    vec![("scenario", "fast".into()), ("quantile", "0.99".into())],
                    0.012,
                ),
            ],
        }
    }

    /// Pushes that outlast the interval (an output that hangs until the
    /// timeout): a stop seen during one is followed by the last push only.
    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_slow_push_leaves_only_the_last_push() {
        for _ in 0..50 {
            let pushes = Arc::new(AtomicU64::new(0));
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let counted = Arc::clone(&pushes);
            let task = tokio::spawn(push_until_stopped(
                Duration::from_millis(500),
                stopped,
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1))
                },
            ));
            // Pushes at 0 and 1.5 s (the first tick is due an interval after
            // the first push); stopped during the second.
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            let before = pushes.load(Ordering::SeqCst);
            assert_eq!(before, 2);
            let _ = stop.send(());
            let started = tokio::time::Instant::now();
            task.await.unwrap();
            assert_eq!(pushes.load(Ordering::SeqCst), before + 1, "only the last");
            assert_eq!(started.elapsed(), Duration::from_millis(1_500));
        }
    }

    #[test]
    fn outputs_from_the_command_line() {
        assert_eq!(
            parse_output("prometheus-rw=http://127.0.0.1:9090/api/v1/write").unwrap(),
            OutputSpec {
                kind: OutputKind::PrometheusRw,
                url: "http://127.0.0.1:9090/api/v1/write".into()
            }
        );
        assert_eq!(
            parse_output("otlp=https://collector:4318/v1/metrics")
                .unwrap()
                .kind,
            OutputKind::Otlp
        );
        for bad in [
            "prometheus=http://h/api/v1/write",
            "otlp",
            "otlp=http://h:4318",
            "otlp=ftp://h/v1/metrics",
        ] {
            assert!(parse_output(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_write_is_snappy_protobuf_with_sorted_labels() {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&remote_write::encode(&batch()))
            .unwrap();
        let req: remote_write::WriteRequest = prost::Message::decode(&raw[..]).unwrap();
        assert_eq!(req.timeseries.len(), 3);
        let first = &req.timeseries[0];
        let names: Vec<&str> = first.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "scenario", "target"]);
        assert_eq!(first.labels[0].value, "floodgate_load_requests_total");
        assert_eq!(
            (first.samples[0].value, first.samples[0].timestamp),
            (42.0, 1_700_000_000_123)
        );
        assert_eq!(
            req.timeseries[2].labels[0].value,
            "floodgate_load_latency_seconds"
        );
        // Field numbers of prompb: the bytes of `Sample{value: 1.0, timestamp: 2}`.
        let sample = prost::Message::encode_to_vec(&remote_write::Sample {
            value: 1.0,
            timestamp: 2,
        });
        assert_eq!(sample, [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x02]);
    }

    #[test]
    fn otlp_has_cumulative_sums_and_gauges() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let req: ExportMetricsServiceRequest =
            prost::Message::decode(&otlp::encode(&batch())[..]).unwrap();
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2, "one metric per name");
        assert_eq!(metrics[0].name, "floodgate_load.requests");
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            panic!("a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2, "cumulative");
        assert_eq!(sum.data_points.len(), 2);
        assert_eq!(
            sum.data_points[0].start_time_unix_nano,
            1_700_000_000_000_000_000
        );
        assert_eq!(sum.data_points[1].time_unix_nano, 1_700_000_000_123_000_000);
        assert!(matches!(metrics[1].data, Some(Data::Gauge(_))));
    }
}
