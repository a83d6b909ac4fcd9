//! Live streams: the statistics every interval, and a job's changes, over WebSocket — the
//! job's also as server-sent events for clients that do not upgrade (`curl -N`).
//!
//! Each stream has a bounded queue between what produces its messages and the socket: a
//! reader that falls behind fills it and is closed with 1013 (counted as a slow consumer), so nothing
//! is buffered without bound. WebSocket peers are pinged every `streams.ping_interval` and
//! closed when they do not answer by the next ping; at shutdown every stream gets 1001.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::jobs::{self, JobBody};
use super::metrics::{snapshot_of, StatsBody};
use crate::admission::overload::ClassState;
use crate::domain::job_events::{JobEvent, JobWatch};
use crate::domain::jobs::Scope;
use crate::error::ApiError;
use crate::http::error::StreamErrors;
use crate::observability::metrics as m;
use crate::observability::telemetry;
use crate::state::{AppState, StreamClass};

/// What the socket side sends.
enum Outgoing {
    Text(String),
    Close(u16, &'static str),
}

/// Query of the stats stream.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    /// 100ms–60s; 1s when absent.
    pub interval: Option<String>,
}

/// One message of the stats stream: the `/api/v1/stats` fields, and rates over the interval.
#[derive(Debug, Serialize)]
pub struct StatsMessage {
    #[serde(flatten)]
    pub totals: StatsBody,
    /// The span the rates cover: the interval, or a multiple of it after missed ticks.
    pub interval_ms: u64,
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub rejected_per_second: f64,
    /// Latency percentiles of the requests completed in this interval (0 when none).
    pub interval_latency_p50_us: u64,
    pub interval_latency_p99_us: u64,
    /// Workers running a job now, of `worker_count`.
    pub busy_workers: usize,
    /// Jobs the queue holds at most; `queue_depth` of them are waiting.
    pub queue_capacity: usize,
    /// Durable jobs (API v2), when they are on and their database has been reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<JobsMessage>,
    /// The adaptive limits by class of work (`fast`, `intensive`, `job_execution`); absent
    /// when they are off (`admission.adaptive = false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<std::collections::BTreeMap<&'static str, AdmissionClass>>,
}

/// The durable jobs as the last upkeep round saw them.
#[derive(Debug, Serialize)]
pub struct JobsMessage {
    pub queued: i64,
    pub scheduled: i64,
    pub running: i64,
    /// Jobs this replica recorded as succeeded since it started (a counter: its rate is the
    /// completions per second).
    pub succeeded_total: u64,
    /// How long the job due longest has waited for a runner.
    pub oldest_queued_age_seconds: f64,
    /// The last few jobs discarded after their last attempt, newest first.
    pub recent_discards: Vec<DiscardMessage>,
}

/// A discarded job: its id, when, and why its last attempt failed.
#[derive(Debug, Serialize)]
pub struct DiscardMessage {
    pub id: String,
    pub finished_at: String,
    pub error: Option<String>,
}

fn jobs_message(state: &AppState) -> Option<JobsMessage> {
    let now = state.jobs.get()?.now();
    Some(JobsMessage {
        queued: now.active[0],
        scheduled: now.active[1],
        running: now.active[2],
        succeeded_total: now.succeeded,
        oldest_queued_age_seconds: now.oldest_due_age.as_secs_f64(),
        recent_discards: now
            .recent_discards
            .into_iter()
            .map(|d| DiscardMessage {
                id: d.id,
                finished_at: super::jobs::rfc3339(d.finished_at),
                error: d.error,
            })
            .collect(),
    })
}

/// One class of work in a [`StatsMessage`].
#[derive(Debug, Serialize)]
pub struct AdmissionClass {
    /// The current limit, and the calls admitted and not yet answered.
    pub limit: u32,
    pub in_flight: u32,
    /// Every call of the class is refused now, for a higher class.
    pub shed: bool,
    /// The class's no-load latency, once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_latency_us: Option<u64>,
    /// Refusals per second over the interval: at the class's limit, and while shed for a
    /// higher class.
    pub refused_at_limit_per_second: f64,
    pub refused_for_priority_per_second: f64,
}

/// The adaptive limits now, with refusal rates since `before`.
fn admission_stats(
    now: &[ClassState; 3],
    before: &[ClassState; 3],
    secs: f64,
) -> std::collections::BTreeMap<&'static str, AdmissionClass> {
    now.iter()
        .zip(before)
        .map(|(c, b)| {
            let rate = |i: usize| c.refusals[i].saturating_sub(b.refusals[i]) as f64 / secs;
            (
                c.class.as_str(),
                AdmissionClass {
                    limit: c.limit,
                    in_flight: c.in_flight,
                    shed: c.shed,
                    baseline_latency_us: c.baseline.map(|d| d.as_micros() as u64),
                    refused_at_limit_per_second: rate(0),
                    refused_for_priority_per_second: rate(1),
                },
            )
        })
        .collect()
}

fn interval(q: &StatsQuery) -> Result<Duration, ApiError> {
    let Some(raw) = q.interval.as_deref() else {
        return Ok(Duration::from_secs(1));
    };
    humantime::parse_duration(raw)
        .ok()
        .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(60)).contains(d))
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "interval must be a duration between 100ms and 60s (got `{raw}`)"
            ))
        })
}

/// The subprotocol selected when a client offers it: a browser that passes its credential as
/// a protocol (see [`crate::admission::auth::WEBSOCKET_CREDENTIAL_PREFIX`]) must be answered
/// with one of the protocols it offered, and this one names the message format.
pub const PROTOCOL: &str = "floodgate.v1";

/// Buffers sized for streams: tungstenite's defaults (128 KiB to read, 128 KiB to write,
/// messages up to 64 MiB) cost ~177 KiB per idle stream and let a peer make the service
/// hold 64 MiB; a stream sends a message at a time and reads only control frames.
fn sized(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
}

/// Why a request is not a WebSocket upgrade. One that does not ask to upgrade is told to
/// (426, naming the protocol); one that asks with a malformed handshake, or over HTTP/2,
/// where this server takes no WebSocket, is refused as malformed: upgrading would not help.
fn not_upgraded(rejection: WebSocketUpgradeRejection, what: &'static str) -> ApiError {
    use WebSocketUpgradeRejection as R;
    match rejection {
        R::InvalidConnectionHeader(_) | R::InvalidUpgradeHeader(_) => {
            ApiError::UpgradeRequired(what)
        }
        R::MethodNotConnect(_) | R::InvalidProtocolPseudoheader(_) => ApiError::InvalidRequest(
            "WebSocket streams are served over HTTP/1.1: send the upgrade there".into(),
        ),
        other => ApiError::InvalidRequest(format!(
            "the WebSocket handshake is malformed: {}",
            other.body_text()
        )),
    }
}

/// With CORS origins configured, a browser's upgrade must come from one of them
/// (cross-site WebSocket hijacking).
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let allowed = &state.settings.cors.allowed_origins;
    if allowed.is_empty() || allowed.iter().any(|o| o == "*") {
        return Ok(());
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) if !allowed.iter().any(|a| a == origin) => {
            Err(ApiError::Forbidden(format!("origin {origin}")))
        }
        _ => Ok(()),
    }
}

/// `GET /api/v2/stats/stream?interval=1s`: WebSocket.
///
/// The request must be an HTTP/1.1 WebSocket upgrade (RFC 6455: `Connection: Upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`): a plain `GET`
/// is answered 426 Upgrade Required.
#[utoipa::path(get, path = "/api/v2/stats/stream", tag = "streams", operation_id = "stats_stream",
    params(("interval" = Option<String>, Query, pattern = "^(?:(?:[1-9][0-9]{2,3}|[1-5][0-9]{4}|60000)ms|(?:[1-9]|[1-5][0-9]|60)s|1m)$", description = "How often a message is sent: a whole number of milliseconds (`100ms`–`60000ms`) or seconds (`1s`–`60s`), or `1m`; `1s` when absent.")),
    responses(
        (status = 101, description = "A WebSocket (RFC 6455): one JSON text message per interval, on the wall clock's multiples of it, with the `/api/v1/stats` totals plus `interval_ms` (the span the rates cover: the interval, or a multiple when a tick was missed), `requests_per_second`, `errors_per_second`, `rejected_per_second`, `interval_latency_p50_us`, `interval_latency_p99_us`, `busy_workers`, `queue_capacity` and, while the adaptive limits are on, `admission`: per class of work (`fast`, `intensive`, `job_execution`) its `limit`, `in_flight`, `shed`, `baseline_latency_us`, `refused_at_limit_per_second` and `refused_for_priority_per_second`. Pinged every `streams.ping_interval`; closed with 1001 when the service shuts down, 1013 when the reader falls `streams.send_queue` messages behind."),
        StreamErrors,
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn stats(
    state: State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    open_stats(StreamClass::Api, state, headers, query, upgrade)
}

/// `GET /status/stream?interval=1s`: the statistics stream for the status page, with the
/// operational routes (the admin listener, when separate), which are not authenticated:
/// it carries what `/api/v1/stats` already shows there. Being open to anyone, it counts
/// against `streams.max_operational_connections`, not the API's limit.
///
/// The request must be an HTTP/1.1 WebSocket upgrade (RFC 6455: `Connection: Upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`): a plain `GET`
/// is answered 426 Upgrade Required.
#[utoipa::path(get, path = "/status/stream", tag = "streams", operation_id = "status_stream",
    params(("interval" = Option<String>, Query, pattern = "^(?:(?:[1-9][0-9]{2,3}|[1-5][0-9]{4}|60000)ms|(?:[1-9]|[1-5][0-9]|60)s|1m)$", description = "How often a message is sent: a whole number of milliseconds (`100ms`–`60000ms`) or seconds (`1s`–`60s`), or `1m`; `1s` when absent.")),
    responses(
        (status = 101, description = "The same WebSocket as `/api/v2/stats/stream`, beside the status page; at most `streams.max_operational_connections` open at once, apart from the API's streams."),
        StreamErrors,
    ),
)]
pub async fn status_stream(
    state: State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    open_stats(StreamClass::Operational, state, headers, query, upgrade)
}

fn open_stats(
    class: StreamClass,
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::InvalidRequest(format!("the query string is malformed: {e}")))?;
    let every = interval(&q)?;
    let upgrade = upgrade
        .map_err(|r| not_upgraded(r, "this is a WebSocket endpoint: send an upgrade request"))?;
    check_origin(&state, &headers)?;
    let permit = state.streams.admit(class)?;
    Ok(sized(upgrade).on_upgrade(move |socket| async move {
        let (tx, rx) = mpsc::channel(state.settings.streams.send_queue);
        let producer = produce_stats(state.clone(), every, tx);
        run("stats", socket, rx, producer, &state).await;
        drop(permit);
    }))
}

/// Messages are sent on a grid of the interval aligned to the Unix epoch, so every stream of
/// an interval (and of its multiples) reads the counters at the same instants and shares the
/// readings ([`crate::observability::metrics::Readings`]). The first message comes one
/// full interval after the first grid instant, so every message's rates cover whole
/// intervals.
async fn produce_stats(state: AppState, every: Duration, tx: mpsc::Sender<Outgoing>) {
    let every_ms = (every.as_millis() as u64).max(1);
    let mut grid = Grid::new(every_ms);
    let started = std::time::Instant::now();
    let admission = |state: &AppState| state.overload.as_ref().map(|o| o.state());
    let mut previous = None;
    loop {
        let (at, span_ms) = match grid.tick(unix_ms(), started.elapsed().as_millis() as u64) {
            Tick::Wait(wait) => {
                tokio::time::sleep(wait).await;
                continue;
            }
            Tick::Read { at, span_ms } => (at, span_ms),
        };
        // Readings of one instant are shared while that instant is current.
        let now = state.streams.readings.at(at, every / 2, &state.metrics);
        let admission_now = admission(&state);
        let Some((before_reading, admission_before)) =
            previous.replace((Arc::clone(&now), admission_now))
        else {
            continue;
        };
        // No span across a step of the wall clock: nothing to measure rates over.
        let Some(span_ms) = span_ms else { continue };
        let secs = span_ms as f64 / 1e3;
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        let (p50, p99) = state
            .streams
            .readings
            .percentiles_between(&before_reading, &now);
        let (stats, before) = (now.stats, before_reading.stats);
        let pool = state.pool.status();
        let message = StatsMessage {
            totals: snapshot_of(&state, stats),
            interval_ms: span_ms,
            requests_per_second: rate(stats.total_requests, before.total_requests),
            errors_per_second: rate(stats.error_count, before.error_count),
            rejected_per_second: rate(
                stats.rate_limited_count + stats.overloaded_count,
                before.rate_limited_count + before.overloaded_count,
            ),
            interval_latency_p50_us: p50,
            interval_latency_p99_us: p99,
            busy_workers: pool.busy,
            queue_capacity: pool.queue_capacity,
            jobs: jobs_message(&state),
            admission: admission_now
                .as_ref()
                .zip(admission_before.as_ref())
                .map(|(now, before)| admission_stats(now, before, secs)),
        };
        let text = serde_json::to_string(&message).unwrap_or_default();
        if tx.try_send(Outgoing::Text(text)).is_err() {
            return; // the reader fell behind, or left
        }
    }
}

/// A stream's place on its grid of the wall clock (instants in ms since the Unix epoch,
/// multiples of the interval).
///
/// Each wait is measured anew from the wall clock. A timer keeps the monotonic clock, and
/// the wall clock can run at another rate (NTP slews it by up to 0.05 %; on some virtual
/// machines it gains 5 ms a second): ticks of a timer would walk off the grid until two of
/// them stood for the same instant, a message with no requests and then one with two
/// intervals' requests at one interval's rate. The monotonic clock checks each span: one
/// across a step of the wall clock is not reported.
struct Grid {
    every_ms: u64,
    /// The instant waited for.
    next: Option<u64>,
    /// The instant last read, and what the wall and the monotonic clocks said then (ms).
    last: Option<(u64, u64, u64)>,
}

/// What a stream does next.
#[derive(Debug, PartialEq)]
enum Tick {
    /// Wait this long (by the monotonic clock), then ask again.
    Wait(Duration),
    /// Read the counters for instant `at`; its rates cover `span_ms` since the last
    /// reading: the interval, or a multiple when ticks were missed. `None` for the first
    /// reading, and when the wall clock was set since the last one.
    Read { at: u64, span_ms: Option<u64> },
}

impl Grid {
    fn new(every_ms: u64) -> Self {
        Grid {
            every_ms,
            next: None,
            last: None,
        }
    }

    /// The next step when the wall clock reads `wall_ms` and the monotonic clock `mono_ms`.
    fn tick(&mut self, wall_ms: u64, mono_ms: u64) -> Tick {
        let every = self.every_ms;
        // Set back by more than what was left to wait: wait from where the clock is now.
        if self.next.is_some_and(|next| next > wall_ms + every) {
            self.next = None;
        }
        let next = *self.next.get_or_insert((wall_ms / every + 1) * every);
        if wall_ms < next {
            return Tick::Wait(Duration::from_millis(next - wall_ms));
        }
        // The latest instant reached: `next`, or a later one when woken late.
        let at = wall_ms / every * every;
        let span_ms = self.last.and_then(|(last, wall_then, mono_then)| {
            // Both clocks agree on the time since the last reading to within 5 % (and
            // the milliseconds they are read in), unless the wall clock was set.
            let walked = wall_ms.checked_sub(wall_then)?;
            (walked.abs_diff(mono_ms.saturating_sub(mono_then)) <= every / 20 + 2)
                .then_some(at - last)
        });
        (self.next, self.last) = (Some(at + every), Some((at, wall_ms, mono_ms)));
        Tick::Read { at, span_ms }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /api/v2/jobs/{id}/events`: the job at once and at every status change, then a
/// normal close (1000) after its final status.
///
/// The request must be an HTTP/1.1 WebSocket upgrade (RFC 6455: `Connection: Upgrade`,
/// `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`), or accept
/// `text/event-stream` for server-sent events; any other `GET` is answered 426 Upgrade
/// Required.
#[utoipa::path(get, path = "/api/v2/jobs/{id}/events", tag = "streams", operation_id = "job_events",
    params(("id" = String, Path, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", description = "The job's id (a UUID).")),
    responses(
        (status = 101, description = "A WebSocket (RFC 6455): the job as a JSON text message at once and at every status change, then a normal close (1000) after its final status."),
        (status = 200, description = "Server-sent events, when the request accepts `text/event-stream` and does not upgrade: one `job` event per status, ending after the final one.", content_type = "text/event-stream", body = String),
        StreamErrors,
    ),
    security((), ("bearer" = []), ("api_key" = [])),
)]
pub async fn job_events(
    State(state): State<AppState>,
    scope: Scope,
    Path(id): Path<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let jobs = jobs::jobs(&state)?.clone();
    let id = jobs.find(&scope, &id).await?.id;
    let wants_sse = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    match upgrade {
        Ok(upgrade) => {
            check_origin(&state, &headers)?;
            let permit = state.streams.admit(StreamClass::Api)?;
            Ok(sized(upgrade).on_upgrade(move |socket| async move {
                let (tx, rx) = mpsc::channel(state.settings.streams.send_queue);
                let producer = produce_job(jobs.watch(&id), tx);
                run("job", socket, rx, producer, &state).await;
                drop(permit);
            }))
        }
        Err(_) if wants_sse => {
            let permit = state.streams.admit(StreamClass::Api)?;
            Ok(sse_job(&state, jobs.watch(&id), permit).into_response())
        }
        Err(rejection) => Err(not_upgraded(
            rejection,
            "send a WebSocket upgrade, or accept text/event-stream",
        )),
    }
}

/// The job's changes, from the replica's one watcher of it, as messages; a close after the
/// final status.
async fn produce_job(mut watch: JobWatch, tx: mpsc::Sender<Outgoing>) {
    while let Some(event) = watch.next().await {
        let JobEvent::Changed(job) = event else {
            let _ = tx.send(Outgoing::Close(1000, "the job is gone")).await;
            return;
        };
        let finished = job.status.is_final();
        let text = serde_json::to_string(&JobBody::from(job)).unwrap_or_default();
        if tx.try_send(Outgoing::Text(text)).is_err() {
            return;
        }
        if finished {
            let _ = tx.send(Outgoing::Close(1000, "the job has finished")).await;
            return;
        }
    }
}

/// The job's changes as server-sent events. The subscription is part of the body: when
/// the client leaves and the body is dropped, so is the subscription (and with the job's
/// last one, its watcher), and nothing keeps running for a stream that has gone. A reader
/// slower than the changes is sent the latest status, not a queue of them.
fn sse_job(
    state: &AppState,
    watch: JobWatch,
    permit: OwnedSemaphorePermit,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let opened = open_gauge(state, "job");
    let messages = state
        .metrics
        .counter(m::STREAM_MESSAGES, &[("kind", "job")]);
    let stream = futures_util::stream::unfold(
        (watch, permit, opened, messages),
        |(mut watch, permit, opened, messages)| async move {
            let JobEvent::Changed(job) = watch.next().await? else {
                return None;
            };
            messages.increment(1);
            let text = serde_json::to_string(&JobBody::from(job)).unwrap_or_default();
            Some((
                Ok(Event::default().event("job").data(text)),
                (watch, permit, opened, messages),
            ))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Counts an open stream of `kind` for as long as it lives.
struct OpenStream(metrics::Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn open_gauge(state: &AppState, kind: &'static str) -> OpenStream {
    let gauge = state
        .metrics
        .labelled_gauge(m::STREAMS_OPEN, &[("kind", kind)]);
    gauge.increment(1.0);
    OpenStream(gauge)
}

/// Aborts the producer task when the stream ends, however it ends.
struct Producer(tokio::task::JoinHandle<()>);

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drive one WebSocket: send what `producer` queues, ping, notice a gone or silent peer,
/// close with 1001 at shutdown. A producer that stops with its queue full was refused room:
/// the reader fell behind, and its connection is closed with 1013 and counted.
async fn run(
    kind: &'static str,
    socket: WebSocket,
    mut queue: mpsc::Receiver<Outgoing>,
    producer: impl std::future::Future<Output = ()> + Send + 'static,
    state: &AppState,
) {
    let _open = open_gauge(state, kind);
    // A stream outlives its upgrade request: its own trace root.
    let span = telemetry::root_span(&HeaderMap::new(), "stream", |ids| {
        tracing::info_span!(
            "stream",
            kind,
            otel.kind = "server",
            trace_id = %ids.trace_id,
            span_id = %ids.span_id
        )
    });
    let messages = state.metrics.counter(m::STREAM_MESSAGES, &[("kind", kind)]);
    let slow = state
        .metrics
        .counter(m::STREAM_SLOW_CONSUMERS, &[("kind", kind)]);
    let (mut sink, mut incoming) = socket.split();
    let ping_every = state.settings.streams.ping_interval;
    let mut ping = tokio::time::interval(ping_every);
    // After a pause of the process (SIGSTOP, a virtual machine's), one tick, not every
    // missed one at once: the second would find the ping the first just sent unanswered.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut awaiting_pong = false;
    let mut watch = Watch {
        producer: Producer(tokio::spawn(tracing::Instrument::instrument(
            producer, span,
        ))),
        producing: true,
        closing: state.streams.closing(),
    };
    loop {
        // In this order: the shutdown first; what the client sent before the ping timer,
        // so that an answer that arrived while the process was paused is read before the
        // tick that follows the pause judges it missing.
        tokio::select! {
            biased;
            // The value, not a change: a stream opened once closing had begun closes too.
            _ = async { let _ = watch.closing.wait_for(|closing| *closing).await; } => {
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    close(&mut sink, 1001, "the service is shutting down"),
                )
                .await;
                return;
            }
            _ = &mut watch.producer.0, if watch.producing => {
                watch.producing = false;
                if full(&queue) {
                    return cut_off(sink, &slow);
                }
            }
            out = queue.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    match watch.deliver(&mut sink, Message::Text(text.into()), &queue).await {
                        Sent::Yes => messages.increment(1),
                        Sent::Gone => return,
                        Sent::Behind => return cut_off(sink, &slow),
                    }
                }
                Some(Outgoing::Close(code, why)) => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, close(&mut sink, code, why)).await;
                    return;
                }
                None => return,
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            due = ping.tick() => {
                // A tick late by half an interval follows a pause of the process (SIGSTOP, a
                // virtual machine's) or of this task: an answer that arrived meanwhile may
                // not have been seen yet (after SIGCONT the runtime's wait for I/O returns
                // with nothing, and the timers go first). The answer gets one more interval.
                if awaiting_pong {
                    if due.elapsed() > ping_every / 2 {
                        continue;
                    }
                    let _ = tokio::time::timeout(
                        CLOSE_GRACE,
                        close(&mut sink, 1011, "no answer to ping"),
                    )
                    .await;
                    return;
                }
                match watch.deliver(&mut sink, Message::Ping(Vec::new().into()), &queue).await {
                    Sent::Yes => awaiting_pong = true,
                    Sent::Gone => return,
                    Sent::Behind => return cut_off(sink, &slow),
                }
            }
        }
    }
}

/// Whether the producer was refused room: its queue is full.
fn full(queue: &mpsc::Receiver<Outgoing>) -> bool {
    queue.len() >= queue.max_capacity()
}

/// What may end a stream while one of its frames is being sent.
struct Watch {
    producer: Producer,
    producing: bool,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Watch {
    /// Send one frame, message or ping, while watching for the producer to stop with its
    /// queue full (the reader fell behind) and for the service to close every stream: a
    /// socket that will not take the frame must not hold the stream open past either.
    async fn deliver(
        &mut self,
        sink: &mut SplitSink<WebSocket, Message>,
        frame: Message,
        queue: &mpsc::Receiver<Outgoing>,
    ) -> Sent {
        let send = sink.send(frame);
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => return if sent.is_ok() { Sent::Yes } else { Sent::Gone },
                _ = &mut self.producer.0, if self.producing => {
                    self.producing = false;
                    if full(queue) {
                        return Sent::Behind;
                    }
                }
                _ = self.closing.changed() => return Sent::Gone,
            }
        }
    }
}

/// How a message's send ended.
enum Sent {
    Yes,
    /// The peer left, or the service is closing every stream.
    Gone,
    /// The producer found the queue full while the socket would not take this message.
    Behind,
}

/// Count a reader that fell behind and close it with 1013 (try again later). The close
/// frame waits behind what the reader has not taken yet, so it is left to a task of its own
/// for a bounded time: the stream's place and its queue are freed now, and nothing more is
/// buffered for the reader.
fn cut_off(mut sink: SplitSink<WebSocket, Message>, slow: &metrics::Counter) {
    slow.increment(1);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            CLOSE_GRACE,
            close(&mut sink, 1013, "the reader fell behind"),
        )
        .await;
    });
}

/// How long a peer has to take a close frame (behind what it has not read yet) before the
/// connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn close(
    sink: &mut SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    })))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes;
    use crate::http::table::RouteTable;

    /// A wall clock that gains `gain` on the monotonic one (0.005: 5 ms a second).
    struct Clocks {
        wall: f64,
        mono: f64,
        gain: f64,
    }

    impl Clocks {
        fn new(gain: f64) -> Self {
            Clocks {
                wall: 1_795_736_830_123.0,
                mono: 0.0,
                gain,
            }
        }

        fn pass(&mut self, ms: f64) {
            self.mono += ms;
            self.wall += ms * (1.0 + self.gain);
        }
    }

    /// A stream's readings, `(at, span_ms, wall clock when read)`, until there are `n`;
    /// `after(k, clocks)` runs after the k-th (from 1). Every wait is woken 0.3 ms late, and
    /// none is longer than the interval.
    fn readings(
        every: u64,
        clocks: &mut Clocks,
        n: usize,
        mut after: impl FnMut(usize, &mut Clocks),
    ) -> Vec<(u64, Option<u64>, f64)> {
        let mut grid = Grid::new(every);
        let mut out = Vec::new();
        let mut waits = 0;
        while out.len() < n {
            match grid.tick(clocks.wall as u64, clocks.mono as u64) {
                Tick::Wait(d) => {
                    assert!(d <= Duration::from_millis(every), "{d:?}");
                    waits += 1;
                    assert!(waits <= 3 * n, "waits without reading");
                    clocks.pass(d.as_millis() as f64 + 0.3);
                }
                Tick::Read { at, span_ms } => {
                    out.push((at, span_ms, clocks.wall));
                    after(out.len(), clocks);
                }
            }
        }
        out
    }

    #[test]
    fn a_stream_keeps_to_the_wall_clocks_grid_however_it_runs_against_the_monotonic_one() {
        for gain in [0.0, 0.005, -0.005, 0.0005] {
            let mut clocks = Clocks::new(gain);
            let read = readings(1_000, &mut clocks, 1_000, |_, _| {});
            assert_eq!(read[0].1, None, "the first reading has no span");
            for pair in read.windows(2) {
                let ((a, _, _), (b, span, wall)) = (pair[0], pair[1]);
                assert_eq!((b - a, span), (1_000, Some(1_000)), "gain {gain}");
                assert!(
                    b % 1_000 == 0 && wall - (b as f64) < 10.0,
                    "gain {gain}: {pair:?}"
                );
            }
        }
    }

    #[test]
    fn a_late_wake_spans_the_intervals_it_missed() {
        let mut clocks = Clocks::new(0.0);
        let read = readings(200, &mut clocks, 8, |k, c| {
            if k == 4 {
                c.pass(450.0); // the stream's task did not run for 450 ms
            }
        });
        let spans: Vec<_> = read.iter().map(|r| r.1).collect();
        let two = Some(200);
        assert_eq!(spans, [None, two, two, two, Some(400), two, two, two]);
        assert!(read.windows(2).all(|w| w[1].0 - w[0].0 == w[1].1.unwrap()));
    }

    #[test]
    fn a_wall_clock_set_back_or_forward_drops_one_span_and_the_grid_goes_on() {
        for step in [-10_000.0, -300.0, 10_000.0, 300.0] {
            let mut clocks = Clocks::new(0.0);
            let read = readings(1_000, &mut clocks, 8, |k, c| {
                if k == 4 {
                    c.wall += step;
                }
            });
            let spans: Vec<_> = read.iter().map(|r| r.1).collect();
            let one = Some(1_000);
            assert_eq!(spans, [None, one, one, one, None, one, one, one], "{step}");
            for (at, _, wall) in &read {
                assert!(
                    at % 1_000 == 0 && wall - (*at as f64) < 10.0,
                    "{step}: {read:?}"
                );
            }
        }
    }

    fn accepted(raw: &str) -> bool {
        interval(&StatsQuery {
            interval: Some(raw.to_owned()),
        })
        .is_ok()
    }

    /// The `interval` pattern in the document admits nothing the server refuses, and every
    /// whole number of `ms`, `s` or `m` the server accepts.
    #[test]
    fn the_documented_interval_pattern_is_what_the_server_accepts() {
        let doc =
            crate::http::openapi::document(RouteTable::new(&routes::builtin()).paths(), false);
        let doc = serde_json::to_value(doc).unwrap();
        let pattern = |path: &str| {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let interval = params.iter().find(|p| p["name"] == "interval").unwrap();
            interval["schema"]["pattern"].as_str().unwrap().to_owned()
        };
        let documented = pattern("/api/v2/stats/stream");
        assert_eq!(pattern("/status/stream"), documented);
        let re = regex::Regex::new(&documented).unwrap();
        let mut admitted = 0;
        for unit in ["ms", "s", "m", "us", "h", "sec"] {
            for n in 0..=70_000 {
                let plain = format!("{n}{unit}");
                if ["ms", "s", "m"].contains(&unit) {
                    assert_eq!(re.is_match(&plain), accepted(&plain), "{plain}");
                }
                for raw in [plain.clone(), format!("0{plain}"), format!("{plain} 1ms")] {
                    if re.is_match(&raw) {
                        assert!(accepted(&raw), "the pattern admits {raw}");
                        admitted += 1;
                    }
                }
            }
        }
        assert_eq!(admitted, 59_901 + 60 + 1);
        for raw in ["", " 1s", "1s ", "1.5s", "-1s", "1 s", "1S"] {
            assert!(!re.is_match(raw), "the pattern admits {raw:?}");
        }
    }

    #[test]
    fn only_a_request_that_does_not_ask_to_upgrade_is_told_to() {
        use axum::extract::FromRequestParts;
        let rejection = |request: http::Request<()>| {
            let (mut parts, ()) = request.into_parts();
            let extracted = WebSocketUpgrade::from_request_parts(&mut parts, &());
            futures_util::FutureExt::now_or_never(extracted)
                .unwrap()
                .err()
                .unwrap()
        };
        let plain = http::Request::get("/").body(()).unwrap();
        assert_eq!(
            not_upgraded(rejection(plain), "upgrade").code(),
            "UPGRADE_REQUIRED"
        );
        let keyless = http::Request::get("/")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        assert_eq!(
            not_upgraded(rejection(keyless), "upgrade").code(),
            "INVALID_REQUEST"
        );
        let over_http2 = http::Request::get("/")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(
            not_upgraded(rejection(over_http2), "upgrade").code(),
            "INVALID_REQUEST"
        );
    }
}
