//! Process-wide telemetry: the log subscriber, the OTLP tracer and the W3C propagator.
//!
//! [`init`] installs them once; the returned [`TelemetryGuard`] flushes buffered log lines and
//! spans when dropped, so `main` keeps it alive until the very end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Environment, LogFormat, OtelSettings, OtlpProtocol, Settings};
use crate::log_sink::LogSink;

/// Spans lost because export failed; read into `floodgate_otel_spans_dropped_total`.
static SPANS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped by the exporter since start.
pub fn spans_dropped() -> u64 {
    SPANS_DROPPED.load(Ordering::Relaxed)
}

/// Keeps the log writer and tracer provider alive; flushes both on drop.
pub struct TelemetryGuard {
    log: LogSink,
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flush and stop span export now (also done on drop).
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
        self.log.flush();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Whether a request-scoped OpenTelemetry context is being recorded.
pub fn otel_active() -> bool {
    OTEL_ON.load(Ordering::Relaxed) != 0
}
static OTEL_ON: AtomicU64 = AtomicU64::new(0);

/// Install the global subscriber and, when configured, the OTLP exporter.
///
/// Must run inside a tokio runtime when gRPC export is on. Installing twice is harmless
/// (the second subscriber is ignored), which lets tests call it freely.
pub fn init(settings: &Settings) -> Result<TelemetryGuard, String> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(settings.log.effective_level()),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;

    let provider = if settings.otel.exporting() {
        Some(tracer_provider(&settings.otel, settings.environment)?)
    } else {
        None
    };
    let writer = LogSink::stdout();
    // The log level filters log output only: traces keep their own filter, so a quiet
    // `LOG_LEVEL=warn` does not switch span export off. Without export, spans (the request's,
    // the job's) are kept out of the log formatter: formatting their fields for every request
    // would cost more than the request, and the access log already carries them.
    let exporting = provider.is_some();
    let filter = filter.and(filter_fn(move |meta| exporting || !meta.is_span()));
    let fmt_layer = match settings.log.effective_format(settings.environment) {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer.clone())
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(filter)
            .boxed(),
    };

    let otel_layer = provider.as_ref().map(|p| {
        OTEL_ON.store(1, Ordering::Relaxed);
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("floodgate"))
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("floodgate", tracing::Level::INFO),
            )
    });

    let _ = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard {
        log: LogSink::stdout(),
        provider,
    })
}

fn tracer_provider(otel: &OtelSettings, env: Environment) -> Result<SdkTracerProvider, String> {
    let exporter = match otel.protocol {
        OtlpProtocol::Grpc => {
            use opentelemetry_otlp::WithExportConfig;
            let endpoint = otel
                .traces_endpoint
                .clone()
                .or_else(|| otel.endpoint.clone())
                .unwrap_or_else(|| "http://localhost:4317".to_owned());
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
        }
        OtlpProtocol::HttpProtobuf => {
            use opentelemetry_otlp::WithExportConfig;
            let endpoint = otel.traces_endpoint.clone().unwrap_or_else(|| {
                let base = otel
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "http://localhost:4318".to_owned());
                format!("{}/v1/traces", base.trim_end_matches('/'))
            });
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(5))
                .build()
        }
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;

    // `BatchConfigBuilder::default()` reads the standard OTEL_BSP_* variables; the delay
    // default is shortened from 5 s so traces show up promptly.
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(otel.max_queue_size);
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(Duration::from_secs(1));
    }
    let processor = BatchSpanProcessor::builder(CountingExporter(Arc::new(exporter)))
        .with_batch_config(batch.build())
        .build();

    let mut attributes = vec![
        KeyValue::new("service.version", crate::VERSION),
        KeyValue::new("deployment.environment", env.as_str()),
    ];
    if let Some(raw) = &otel.resource_attributes {
        for pair in raw.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                attributes.push(KeyValue::new(k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    let resource = Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(otel.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(otel))
        .with_resource(resource)
        .build())
}

fn sampler(otel: &OtelSettings) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(otel.sampler_arg);
    match otel.sampler.as_str() {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => ratio,
        "parentbased_always_on" => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        _ => Sampler::ParentBased(Box::new(ratio)),
    }
}

/// Counts spans in batches that failed to export.
#[derive(Debug)]
struct CountingExporter<E>(Arc<E>);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            SPANS_DROPPED.fetch_add(n, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.set_resource(resource);
        }
    }
}
