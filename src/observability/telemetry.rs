//! Process-wide telemetry: the log subscriber, the OTLP tracer and the W3C propagator.
//!
//! [`init`] installs them once; the returned [`TelemetryGuard`] flushes buffered log lines and
//! spans when dropped, so `main` keeps it alive until the very end.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::log_sink::LogSink;
use crate::config::{
    Environment, LogFormat, OtelSettings, OtlpProtocol, SamplerKind, Settings, SignalExporter,
};

/// The filter every callsite meets first: the most verbose level any layer records, and
/// spans only of sampled traces, only while traces are exported.
///
/// Without export no layer records a span, yet a per-layer filter alone leaves each span
/// callsite "sometimes" interesting, so every request's span would be built in the registry,
/// entered and closed (measured: about 1.5% of a fast request's CPU) for no one. With export,
/// a span is built only while a sampled root is built ([`root_span`], [`child_span`]) or
/// below a span that was: an unsampled request builds none, where building, entering and
/// closing its spans in the registry, the log formatter and the OpenTelemetry layer for an
/// exporter that drops them was measured at about half of a fast request's CPU.
#[derive(Debug, Clone, Copy)]
struct Admit {
    max: LevelFilter,
    spans: bool,
}

impl Admit {
    fn admits(&self, meta: &Metadata<'_>) -> bool {
        self.max >= *meta.level() && (self.spans || !meta.is_span())
    }
}

impl<S> Layer<S> for Admit
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if !self.admits(meta) {
            Interest::never()
        } else if meta.is_span() {
            // Whether a span is built depends on the trace it would join: asked per span.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: tracing_subscriber::layer::Context<'_, S>) -> bool {
        self.admits(meta)
            && (!meta.is_span()
                || BUILDING_SAMPLED.with(Cell::get)
                || cx.lookup_current().is_some())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }
}

/// A JSON log line with the `trace_id` and `span_id` of the span it happened in, when that
/// span is traced (its OpenTelemetry context is the current one while it is entered).
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt;
        let ids = Context::map_current(|cx| {
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match line.trim_end().strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Spans refused because the export buffer was full.
static SPANS_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
/// Spans in batches the exporter failed to deliver.
static SPANS_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// Trace roots the sampler kept and `otel.max_traces_per_second` refused (no span built).
static SPANS_CAPPED: AtomicU64 = AtomicU64::new(0);

/// Spans lost since start by reason; read into `floodgate_otel_spans_dropped_total{reason}`.
pub fn spans_dropped() -> [(&'static str, u64); 3] {
    [
        ("queue_full", SPANS_QUEUE_FULL.load(Ordering::Relaxed)),
        ("export_failed", SPANS_EXPORT_FAILED.load(Ordering::Relaxed)),
        ("rate_limit", SPANS_CAPPED.load(Ordering::Relaxed)),
    ]
}

/// Log records refused because the export buffer was full.
static LOGS_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
/// Log records in batches the exporter failed to deliver.
static LOGS_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);

/// Log records lost since start, `(queue_full, export_failed)`; read into
/// `floodgate_otel_log_records_dropped_total{reason}`.
pub fn log_records_dropped() -> (u64, u64) {
    (
        LOGS_QUEUE_FULL.load(Ordering::Relaxed),
        LOGS_EXPORT_FAILED.load(Ordering::Relaxed),
    )
}

/// The OTLP logger, when logs are exported: the access log emits its records here.
static LOGGER: std::sync::OnceLock<opentelemetry_sdk::logs::SdkLogger> = std::sync::OnceLock::new();

/// Keeps the log writer and the tracer and logger providers alive; flushes them on drop.
pub struct TelemetryGuard {
    log: LogSink,
    provider: Option<SdkTracerProvider>,
    logs: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
}

impl TelemetryGuard {
    /// Flush and stop span and log export now (also done on drop).
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
        if let Some(logs) = self.logs.take() {
            let _ = logs.force_flush();
            let _ = logs.shutdown();
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
        let _ = ROOT_SAMPLER.set(sampler(&settings.otel));
        if let Some(rate) = std::num::NonZeroU32::new(settings.otel.max_traces_per_second) {
            let _ = TRACE_CAP.set(governor::RateLimiter::direct(governor::Quota::per_second(
                rate,
            )));
        }
        Some(tracer_provider(&settings.otel, settings.environment)?)
    } else {
        None
    };
    let logs = if settings.otel.logs_exporter == SignalExporter::Otlp {
        Some(logger_provider(&settings.otel, settings.environment)?)
    } else {
        None
    };
    let writer = LogSink::stdout();
    // The log level filters log output only: traces keep their own filter, so a quiet
    // `LOG_LEVEL=warn` does not switch span export off. Spans never reach the log formatter:
    // formatting a span's fields (and again at each field recorded later) cost a sampled
    // request about as much as the request itself; a JSON line takes the trace and span IDs
    // of the traced request it happened in instead ([`WithTraceIds`]), and the access log
    // carries the rest.
    let exporting = provider.is_some();
    // The most verbose level any layer records, applied globally (see [`Admit`]): per-layer
    // filters alone leave every callsite "sometimes" interesting, and then each of h2's
    // trace spans is created, entered and closed in the registry on every frame of every
    // HTTP/2 connection (measured: a third of a gRPC call's CPU) though no layer wants it.
    let traces = if exporting {
        LevelFilter::INFO
    } else {
        LevelFilter::OFF
    };
    let global = Admit {
        max: filter
            .max_level_hint()
            .unwrap_or(LevelFilter::TRACE)
            .max(traces),
        spans: exporting,
    };
    let filter = filter.and(filter_fn(|meta| !meta.is_span()));
    let fmt_layer = match settings.log.effective_format(settings.environment) {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            ))
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

    // Log records over OTLP: the service's own events at the log level, never the
    // exporters' (which would feed themselves). Inside a request's span they carry its trace.
    let log_filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(settings.log.effective_level()),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let log_layer = logs.as_ref().map(|p| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p).with_filter(
            log_filter.and(filter_fn(|meta| {
                !meta.is_span() && meta.target().starts_with("floodgate")
            })),
        )
    });

    // No OTLP trace layer at all when not exporting (not an empty `Option` layer): a layer
    // that is present says yes to every span, and each request's span would then be built in
    // the registry only for no one to record it. (The logs layer takes events only.)
    let base = tracing_subscriber::registry()
        .with(global)
        .with(fmt_layer)
        .with(log_layer);
    let _ = match otel_layer {
        Some(otel) => base.with(otel).try_init(),
        None => base.try_init(),
    };
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    if let Some(p) = &logs {
        use opentelemetry::logs::LoggerProvider as _;
        let _ = LOGGER.set(p.logger("floodgate"));
    }
    Ok(TelemetryGuard {
        log: LogSink::stdout(),
        provider,
        logs,
    })
}

/// The access-log line as an OTLP log record, with the request's trace, when logs are
/// exported.
pub fn emit_access_record(r: &super::access_log::AccessRecord<'_>) {
    use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let mut record = logger.create_log_record();
    record.set_timestamp(std::time::SystemTime::now());
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.set_target("floodgate::access");
    record.set_event_name("request completed");
    record.set_body(AnyValue::from("request completed"));
    record.add_attribute("request_id", r.request_id.to_owned());
    record.add_attribute("method", r.method.to_owned());
    record.add_attribute("path", r.path.to_owned());
    record.add_attribute("status", i64::from(r.status));
    if let Some(code) = r.grpc_status {
        record.add_attribute("grpc_status", i64::from(code));
    }
    record.add_attribute("latency_ms", r.latency.as_secs_f64() * 1000.0);
    if let Some(ip) = r.client_ip {
        record.add_attribute("client_ip", ip.to_string());
    }
    if let Some((trace, span)) = r.trace {
        if let (Ok(trace), Ok(span)) = (
            opentelemetry::trace::TraceId::from_hex(trace),
            opentelemetry::trace::SpanId::from_hex(span),
        ) {
            record.set_trace_context(trace, span, None);
        }
    }
    logger.emit(record);
}

/// The resource every signal carries: the service's name and version, the environment and
/// `OTEL_RESOURCE_ATTRIBUTES`.
pub fn resource_attributes(otel: &OtelSettings, env: Environment) -> Vec<(String, String)> {
    let mut attributes = vec![
        ("service.name".to_owned(), otel.service_name.clone()),
        ("service.version".to_owned(), crate::VERSION.to_owned()),
        ("deployment.environment".to_owned(), env.as_str().to_owned()),
    ];
    if let Some(raw) = &otel.resource_attributes {
        for pair in raw.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                attributes.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    attributes
}

fn resource(otel: &OtelSettings, env: Environment) -> Resource {
    let mut attributes = resource_attributes(otel, env);
    let name = attributes.remove(0).1;
    Resource::builder_empty()
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .with_service_name(name)
        .build()
}

fn logger_provider(
    otel: &OtelSettings,
    env: Environment,
) -> Result<opentelemetry_sdk::logs::SdkLoggerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let (endpoint, protocol) = otel.signal_endpoint("logs");
    let exporter = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build(),
    }
    .map_err(|e| format!("cannot build the OTLP log exporter: {e}"))?;
    let mut batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
        .with_max_queue_size(otel.max_queue_size);
    if std::env::var_os("OTEL_BLRP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(Duration::from_secs(1));
    }
    let room = Room::new(otel.max_queue_size);
    let processor = BoundedLogs {
        inner: opentelemetry_sdk::logs::BatchLogProcessor::builder(CountingLogExporter {
            inner: exporter,
            room: room.clone(),
        })
        .with_batch_config(batch.build())
        .build(),
        room,
    };
    Ok(opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .with_resource(resource(otel, env))
        .build())
}

/// As [`Bounded`] for spans: holds the batch processor to `capacity` log records, counting
/// what does not fit instead of blocking or dropping silently.
#[derive(Debug)]
struct BoundedLogs {
    inner: opentelemetry_sdk::logs::BatchLogProcessor,
    room: Room,
}

impl opentelemetry_sdk::logs::LogProcessor for BoundedLogs {
    fn emit(
        &self,
        record: &mut opentelemetry_sdk::logs::SdkLogRecord,
        scope: &opentelemetry::InstrumentationScope,
    ) {
        if self.room.take(&LOGS_QUEUE_FULL) {
            self.inner.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts log records in batches that failed to export, and releases their room.
#[derive(Debug)]
struct CountingLogExporter<E> {
    inner: E,
    room: Room,
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter
    for CountingLogExporter<E>
{
    async fn export(&self, batch: opentelemetry_sdk::logs::LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count();
        let _release = self.room.release(n);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            LOGS_EXPORT_FAILED.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn tracer_provider(otel: &OtelSettings, env: Environment) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let (endpoint, protocol) = otel.signal_endpoint("traces");
    let exporter = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build(),
    }
    .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;

    // `BatchConfigBuilder::default()` reads the standard OTEL_BSP_* variables; the delay
    // default is shortened from 5 s so traces show up promptly.
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(otel.max_queue_size);
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(Duration::from_secs(1));
    }
    let room = Room::new(otel.max_queue_size);
    let processor = Bounded {
        inner: BatchSpanProcessor::builder(CountingExporter {
            inner: Arc::new(exporter),
            room: room.clone(),
        })
        .with_batch_config(batch.build())
        .build(),
        room,
    };

    let resource = resource(otel, env);
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(otel))
        .with_id_generator(RootIds::default())
        .with_resource(resource)
        .build())
}

fn sampler(otel: &OtelSettings) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(otel.sampler_arg);
    match otel.sampler {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => ratio,
        SamplerKind::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentbasedTraceIdRatio => Sampler::ParentBased(Box::new(ratio)),
    }
}

/// Holds the batch processor to `capacity` spans between a span's end and its export, so a
/// span that would not fit is refused here and counted: the batch processor itself drops
/// spans from a full queue without saying how many.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet through the exporter.
    room: Room,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.room.take(&SPANS_QUEUE_FULL) {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts spans in batches that failed to export, and releases their room in [`Bounded`].
#[derive(Debug)]
struct CountingExporter<E> {
    inner: Arc<E>,
    room: Room,
}

/// Room for `capacity` items (spans, log records) between their end and their export: a
/// bounding processor takes a place per item, its counting exporter gives a batch's back.
#[derive(Debug, Clone)]
struct Room {
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
}

impl Room {
    fn new(capacity: usize) -> Self {
        Room {
            in_flight: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Take a place for one item; without one, count the item in `full` and refuse it.
    fn take(&self, full: &AtomicU64) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The places of a batch of `n`, given back when the guard drops.
    fn release(&self, n: usize) -> Release<'_> {
        Release(&self.in_flight, n)
    }
}

struct Release<'a>(&'a AtomicUsize, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        // Released however the export ends, even if its future is dropped half-way.
        let _release = self.room.release(n);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            SPANS_EXPORT_FAILED.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Reads W3C trace context (and baggage) from request headers or gRPC metadata.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into response headers.
pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Build a trace root (a request's server span) with `build`, continuing the caller's W3C
/// trace context carried in `headers` (HTTP headers or gRPC metadata).
///
/// The sampler is asked here, before any span exists, on the trace ID the trace will have:
/// an unsampled request gets [`Span::none`], and no span below it is built either (see
/// [`Admit`]). So does a sampled one past `otel.max_traces_per_second` ([`TRACE_CAP`]). A sampled root records its trace and span IDs, so every log line inside
/// carries them. Nothing is built unless traces are exported.
///
/// [`Span::none`]: tracing::Span::none
pub fn root_span(
    headers: &http::HeaderMap,
    name: &str,
    build: impl FnOnce(TraceIds) -> tracing::Span,
) -> tracing::Span {
    use opentelemetry::trace::{SpanKind, TraceContextExt};
    use opentelemetry_sdk::trace::{IdGenerator, SamplingDecision, ShouldSample};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(sampler) = ROOT_SAMPLER.get() else {
        return tracing::Span::none();
    };
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let remote = parent.span().span_context().clone();
    let trace_id = if remote.is_valid() {
        remote.trace_id()
    } else {
        opentelemetry_sdk::trace::RandomIdGenerator::default().new_trace_id()
    };
    let decision = sampler
        .should_sample(Some(&parent), trace_id, name, &SpanKind::Server, &[], &[])
        .decision;
    if decision == SamplingDecision::Drop {
        return tracing::Span::none();
    }
    // Asked only for the traces the sampler keeps, so the ratio still chooses which ones.
    if TRACE_CAP.get().is_some_and(|cap| cap.check().is_err()) {
        SPANS_CAPPED.fetch_add(1, Ordering::Relaxed);
        return tracing::Span::none();
    }
    // The IDs are chosen here and handed to the provider's ID generator, so the span carries
    // them as fields from its start rather than recording them once it has started.
    let ids = TraceIds {
        trace_id,
        span_id: opentelemetry_sdk::trace::RandomIdGenerator::default().new_span_id(),
    };
    let span = in_sampled_trace(|| build(ids));
    if span.is_disabled() {
        return span;
    }
    if remote.is_valid() {
        let _ = span.set_parent(parent);
    }
    // The span starts here, taking the preset IDs; the provider's sampler decides again, on
    // the same trace ID, so the two decisions never disagree.
    PRESET_IDS.with(|c| c.set(Some(ids)));
    let _ = span.context();
    PRESET_IDS.with(|c| c.set(None));
    span
}

/// The IDs of a trace root being built, for its `trace_id` and `span_id` fields.
#[derive(Debug, Clone, Copy)]
pub struct TraceIds {
    /// The trace's ID (the caller's, when it continues one).
    pub trace_id: opentelemetry::trace::TraceId,
    /// The root span's own ID.
    pub span_id: opentelemetry::trace::SpanId,
}

/// A span built by `build` away from its parent's task (a pool worker's, under the request
/// that queued the job): recorded when `parent` is, that is when its trace is sampled.
pub fn child_span(parent: &tracing::Span, build: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if parent.is_disabled() {
        return tracing::Span::none();
    }
    in_sampled_trace(build)
}

fn in_sampled_trace(build: impl FnOnce() -> tracing::Span) -> tracing::Span {
    /// Clears the flag however `build` ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BUILDING_SAMPLED.with(|b| b.set(false));
        }
    }
    BUILDING_SAMPLED.with(|b| b.set(true));
    let _reset = Reset;
    build()
}

thread_local! {
    /// Set while a span of a sampled trace is built outside that trace's spans (its root, or
    /// a child on another thread): [`Admit`] lets it be built.
    static BUILDING_SAMPLED: Cell<bool> = const { Cell::new(false) };
    /// The IDs [`root_span`] chose, for the provider's ID generator to use while it starts
    /// that one span (set and cleared around the start).
    static PRESET_IDS: Cell<Option<TraceIds>> = const { Cell::new(None) };
}

/// The sampler configured for the tracer provider, asked by [`root_span`] once per trace root.
static ROOT_SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// `otel.max_traces_per_second`, when set: bursts of one second's worth. A sampled span costs
/// the server tens of microseconds to build and export, so at a fixed ratio tracing would
/// take a share of the CPU that grows with the load, overload included.
static TRACE_CAP: OnceLock<governor::DefaultDirectRateLimiter> = OnceLock::new();

/// The provider's IDs: those [`root_span`] chose when it starts a root, random otherwise.
#[derive(Debug, Default)]
struct RootIds(opentelemetry_sdk::trace::RandomIdGenerator);

impl opentelemetry_sdk::trace::IdGenerator for RootIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        PRESET_IDS
            .with(Cell::get)
            .map_or_else(|| self.0.new_trace_id(), |ids| ids.trace_id)
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        PRESET_IDS
            .with(Cell::get)
            .map_or_else(|| self.0.new_span_id(), |ids| ids.span_id)
    }
}

/// The trace and span IDs of `span`, hex, when it is traced.
pub fn trace_ids(span: &tracing::Span) -> Option<(String, String)> {
    span_context(span).map(|sc| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The OpenTelemetry context of `span`, when traces are exported and it has a valid one.
pub fn span_context(span: &tracing::Span) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !otel_active() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The exemplar reference of a sampled span: an unsampled one is never exported, so an
/// exemplar pointing at it would lead nowhere.
pub fn sampled(sc: &opentelemetry::trace::SpanContext) -> Option<super::exemplars::TraceRef> {
    (sc.is_valid() && sc.is_sampled()).then(|| super::exemplars::TraceRef {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use tracing::metadata::Kind;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn spans_are_built_only_when_exported() {
        let admit = |spans| Admit {
            max: LevelFilter::INFO,
            spans,
        };
        let quiet = tracing_subscriber::registry().with(admit(false));
        tracing::subscriber::with_default(quiet, || {
            assert!(tracing::info_span!("request").is_disabled());
            assert!(tracing::enabled!(kind: Kind::EVENT, Level::INFO));
            assert!(!tracing::enabled!(kind: Kind::EVENT, Level::DEBUG));
        });
        let exporting = tracing_subscriber::registry().with(admit(true));
        tracing::subscriber::with_default(exporting, || {
            assert!(!in_sampled_trace(|| tracing::info_span!("request")).is_disabled());
            assert!(in_sampled_trace(|| tracing::debug_span!("detail")).is_disabled());
        });
    }

    /// A layer that counts the spans it is given.
    #[derive(Clone, Default)]
    struct Seen(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn only_the_spans_of_sampled_traces_are_built() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(Admit {
                max: LevelFilter::INFO,
                spans: true,
            })
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            // An unsampled request: no span at all, nor below it.
            let unsampled = tracing::info_span!("request");
            assert!(unsampled.is_disabled());
            unsampled.in_scope(|| assert!(tracing::info_span!("db").is_disabled()));
            assert!(child_span(&unsampled, || tracing::info_span!("job")).is_disabled());
            // A sampled one: its root, what runs inside it, and a child built outside it.
            let sampled = in_sampled_trace(|| tracing::info_span!("request"));
            assert!(!sampled.is_disabled());
            assert!(!BUILDING_SAMPLED.with(Cell::get), "the flag is cleared");
            sampled.in_scope(|| assert!(!tracing::info_span!("db").is_disabled()));
            // (Outside the sampled span, as on a pool worker.)
            let job = child_span(
                &sampled,
                || tracing::info_span!(parent: &sampled, "job.execute"),
            );
            assert!(!job.is_disabled());
            // Outside any sampled trace again.
            assert!(tracing::info_span!("db").is_disabled());
        });
        assert_eq!(seen.0.load(Ordering::Relaxed), 3);
    }

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_carries_the_ids_of_the_traced_span_it_happened_in() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(Admit {
                max: LevelFilter::INFO,
                spans: true,
            })
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(WithTraceIds(
                        tracing_subscriber::fmt::format().json().flatten_event(true),
                    ))
                    .with_writer(move || out.clone())
                    .with_filter(filter_fn(|meta| !meta.is_span())),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(n = 1, "outside");
            let span = in_sampled_trace(|| tracing::info_span!("request"));
            let sc = span.context().span().span_context().clone();
            span.in_scope(|| tracing::info!(n = 2, "inside \"quoted\""));
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["n"], 1);
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["n"], 2);
        assert_eq!(lines[1]["message"], "inside \"quoted\"");
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
    }
}
