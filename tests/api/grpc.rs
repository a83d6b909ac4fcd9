//! gRPC on the HTTP port, read by a tonic client: every method, every status mapping (with
//! its details), deadlines, the shared admission path, health, and what the calls leave in
//! the metrics and statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::grpc::pb::compute_service_client::ComputeServiceClient;
use floodgate::grpc::pb::{self, ComputeRequest, JobRequest, SubmitJobRequest};
use floodgate::Application;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_types::StatusExt;

use crate::helpers::*;

async fn channel(app: &TestApp) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .expect("h2c connects")
}

async fn compute(app: &TestApp) -> ComputeServiceClient<Channel> {
    ComputeServiceClient::new(channel(app).await)
}

fn number(n: u64) -> ComputeRequest {
    ComputeRequest { number: n }
}

#[tokio::test]
async fn fast_and_intensive_answer_as_the_rest_api_does() {
    let app = spawn_app().await;
    let mut c = compute(&app).await;
    let mut request = Request::new(number(42));
    request
        .metadata_mut()
        .insert("x-request-id", MetadataValue::from_static("grpc-id-1"));
    let response = c.fast(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "grpc-id-1"
    );
    let fast = response.into_inner();
    assert_eq!((fast.result, fast.job_id, fast.digest), (1764, 0, None));
    assert_eq!(fast.request_id, "grpc-id-1");

    let intensive = c.intensive(number(42)).await.unwrap().into_inner();
    let rest: serde_json::Value = app.compute("intensive", 42).await.json().await.unwrap();
    assert_eq!(intensive.result, 1764);
    assert_eq!(Some(intensive.digest.unwrap()), rest["digest"].as_u64());
    assert!(intensive.job_id > 0);
    assert_eq!(
        uuid::Uuid::parse_str(&intensive.request_id)
            .unwrap()
            .get_version_num(),
        4
    );
    // Both count as API traffic.
    assert_eq!(app.stats().await["total_requests"], 3);
}

#[tokio::test]
async fn invalid_input_is_invalid_argument_naming_the_field() {
    let app = spawn_app().await;
    let mut c = compute(&app).await;
    for call in [
        c.fast(number(1_000_001)).await.unwrap_err(),
        c.intensive(number(u64::MAX)).await.unwrap_err(),
    ] {
        assert_eq!(call.code(), Code::InvalidArgument, "{call:?}");
        let bad = call.get_details_bad_request().expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "number");
        let info = call.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_REQUEST");
    }
}

#[tokio::test]
async fn authentication_is_the_rest_apis_from_metadata() {
    let key = "grpc-key";
    let app = spawn_with(|s| {
        s.auth.enabled = true;
        s.auth.api_key_hashes = vec![sha256_hex(key)];
    })
    .await;
    let mut c = compute(&app).await;
    let none = c.fast(number(3)).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let mut wrong = Request::new(number(3));
    wrong
        .metadata_mut()
        .insert("x-api-key", MetadataValue::from_static("nope"));
    assert_eq!(
        c.fast(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    for (name, value) in [
        ("x-api-key", key.to_owned()),
        ("authorization", format!("Bearer {key}")),
    ] {
        let mut ok = Request::new(number(3));
        ok.metadata_mut().insert(name, value.parse().unwrap());
        assert_eq!(c.fast(ok).await.unwrap().into_inner().result, 9);
    }
    // Health stays reachable without a credential, as /health does: a probe carries none.
    let mut health = HealthClient::new(channel(&app).await);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn over_the_rate_limit_is_resource_exhausted_with_retry_info() {
    let app = spawn_with(|s| {
        s.rate_limit.requests_per_second = 1;
        s.rate_limit.burst = 2;
    })
    .await;
    let mut c = compute(&app).await;
    let mut refused = None;
    for _ in 0..5 {
        if let Err(status) = c.fast(number(2)).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the third call is over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.unwrap() > Duration::ZERO);
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "RATE_LIMIT_EXCEEDED"
    );
    // REST shares the bucket: the same client is refused there too.
    assert_eq!(app.compute("fast", 2).await.status(), 429);
    let stats = app.stats().await;
    assert!(
        stats["rate_limited_count"].as_u64().unwrap() >= 2,
        "{stats}"
    );
}

#[tokio::test]
async fn a_full_queue_is_unavailable_with_retry_info_at_once() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    settings.pool.queue_size = 1;
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await);
    let gate = Gate::hold();
    let hold = |app: &Arc<TestApp>| {
        let app = Arc::clone(app);
        let n = gate.number();
        tokio::spawn(async move { compute(&app).await.intensive(number(n)).await })
    };
    // One running, then one queued.
    let mut held = vec![hold(&app)];
    app.wait_for_busy_workers(1).await;
    held.push(hold(&app));
    app.wait_for_stats("one queued", |s| s["queue_depth"] == 1)
        .await;
    let started = Instant::now();
    let status = compute(&app)
        .await
        .intensive(number(gate.number()))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "SERVICE_OVERLOADED"
    );
    drop(gate);
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    assert_eq!(app.stats().await["overloaded_count"], 1);
}

/// A gRPC call as bytes, over h2c by prior knowledge, with no client-side timer: what the
/// server alone does with `grpc-timeout`.
async fn raw_call(
    app: &TestApp,
    method: &str,
    message: impl prost::Message,
    metadata: &[(&str, &str)],
) -> reqwest::Response {
    let body = grpc_frame(&message.encode_to_vec());
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut request = client
        .post(format!(
            "http://{}/floodgate.v1.ComputeService/{method}",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn grpc_timeout_is_honoured_and_the_job_is_skipped() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    let app =
        Arc::new(spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await);
    let gate = Gate::hold();
    // One job holds the only worker; the call's job waits behind it past its deadline.
    let holder = {
        let app = Arc::clone(&app);
        let n = gate.number();
        tokio::spawn(async move { app.compute("intensive", n).await.status() })
    };
    app.wait_for_busy_workers(1).await;
    let started = Instant::now();
    let response = raw_call(
        &app,
        "Intensive",
        number(gate.number()),
        &[("grpc-timeout", "200m")],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        response.headers()["grpc-status"],
        "4",
        "{:?}",
        response.headers()
    );
    drop(gate);
    assert_eq!(holder.await.unwrap(), 200);
    let jobs = |text: &str, outcome: &str| {
        sum_series(text, "floodgate_jobs_total", |l| {
            l.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    let text = app
        .wait_for_exposition("both jobs leaving the pool", |text| {
            jobs(text, "completed") + jobs(text, "cancelled") >= 2.0
        })
        .await;
    assert_eq!(
        jobs(&text, "cancelled"),
        1.0,
        "the timed-out call's job ran: {text}"
    );
    // Malformed deadlines are ignored (the configured timeout applies), as the protocol says.
    let response = raw_call(&app, "Fast", number(3), &[("grpc-timeout", "soon")]).await;
    assert_eq!(response.headers().get("grpc-status"), None);
    assert_eq!(response.status(), 200);
    // A tonic client's own deadline reaches the server too.
    let mut request = Request::new(number(7));
    request.set_timeout(Duration::from_secs(30));
    assert_eq!(
        compute(&app)
            .await
            .intensive(request)
            .await
            .unwrap()
            .into_inner()
            .result,
        49
    );
}

/// A call whose deadline has already passed (`grpc-timeout` of zero, in any unit) ends with
/// DEADLINE_EXCEEDED without its handler running: no work reaches the pool.
#[tokio::test]
async fn a_deadline_already_passed_is_exceeded_without_running_the_call() {
    let app = spawn_app().await;
    for timeout in ["0n", "0m", "00S"] {
        for method in ["Fast", "Intensive"] {
            let response = raw_call(&app, method, number(3), &[("grpc-timeout", timeout)]).await;
            assert_eq!(
                response.headers().get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"4"[..]),
                "{method} with grpc-timeout {timeout}: {:?}",
                response.headers()
            );
        }
    }
    assert_eq!(
        compute(&app)
            .await
            .intensive(number(5))
            .await
            .unwrap()
            .into_inner()
            .result,
        25
    );
    let jobs = |text: &str| {
        sum_series(text, "floodgate_jobs_total", |l| {
            l.contains("outcome=\"completed\"") || l.contains("outcome=\"cancelled\"")
        })
    };
    let text = app
        .wait_for_exposition("the one call's job", |t| jobs(t) >= 1.0)
        .await;
    assert_eq!(
        jobs(&text),
        1.0,
        "only the live call reached the pool: {text}"
    );
}

#[tokio::test]
async fn jobs_submit_get_watch_and_cancel_mirror_api_v2() {
    let app = spawn_app().await;
    let mut c = compute(&app).await;
    let job = c
        .submit_job(SubmitJobRequest {
            number: 12,
            rounds: Some(1000),
            idempotency_key: Some("grpc-key-1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.number, 12);
    assert!(!job.replayed);
    // The REST API sees the same job.
    let rest: serde_json::Value = app
        .get(&format!("/api/v2/jobs/{}", job.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["number"], 12);

    let mut watch = c
        .watch_job(JobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(update) = watch.message().await.unwrap() {
        seen.push(update.status);
        if update.status == pb::JobStatus::Succeeded as i32 {
            assert_eq!(update.result, Some(144));
        }
    }
    assert_eq!(
        seen.last(),
        Some(&(pb::JobStatus::Succeeded as i32)),
        "{seen:?}"
    );

    let replay = c
        .submit_job(SubmitJobRequest {
            number: 12,
            rounds: Some(1000),
            idempotency_key: Some("grpc-key-1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed);
    assert_eq!(replay.id, job.id);
    let reused = c
        .submit_job(SubmitJobRequest {
            number: 13,
            rounds: Some(1000),
            idempotency_key: Some("grpc-key-1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);

    let got = c.get_job(JobRequest { id: job.id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().status, pb::JobStatus::Succeeded as i32);
    let finished = c
        .cancel_job(JobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(finished.code(), Code::FailedPrecondition);
    let unknown = uuid::Uuid::now_v7().to_string();
    for status in [
        c.get_job(JobRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err(),
        c.cancel_job(JobRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err(),
        c.watch_job(JobRequest {
            id: unknown.clone(),
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), format!("job {unknown} not found"));
        assert_eq!(status.get_details_error_info().unwrap().reason, "NOT_FOUND");
    }
    let bad = c
        .get_job(JobRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let rounds = c
        .submit_job(SubmitJobRequest {
            number: 1,
            rounds: Some(0),
            idempotency_key: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        rounds.get_details_bad_request().unwrap().field_violations[0].field,
        "rounds"
    );
}

#[tokio::test]
async fn health_follows_readiness_and_knows_its_services() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(&app).await);
    for service in ["", "floodgate.v1.ComputeService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "other.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    app.state.readiness.start_draining();
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, ServingStatus::NotServing as i32);
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
}

/// Health `Watch` streams need no credential: each holds a place of
/// `streams.max_operational_connections`, those past it are refused at once, so the tasks they
/// cost stay bounded, and the open ones end when the service shuts down.
#[tokio::test]
async fn health_watches_are_bounded_and_end_at_shutdown() {
    const PLACES: usize = 4;
    const PAST: usize = 40;
    let app = spawn_with(|s| s.streams.max_operational_connections = PLACES).await;
    let mut health = HealthClient::new(channel(&app).await);
    let all = || HealthCheckRequest {
        service: String::new(),
    };
    health.check(all()).await.unwrap();
    let before = floodgate::observability::metrics::live_tasks();
    let mut open = Vec::new();
    for _ in 0..PLACES {
        let mut watch = health.watch(all()).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);
        open.push(watch);
    }
    let refused = futures_util::future::join_all((0..PAST).map(|_| {
        let mut health = health.clone();
        async move { health.watch(all()).await }
    }))
    .await;
    for outcome in refused {
        let status = outcome.expect_err("refused past the limit");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "SERVICE_OVERLOADED"
        );
        assert!(status.get_details_retry_info().is_some());
    }
    let started = Instant::now();
    loop {
        let live = floodgate::observability::metrics::live_tasks();
        if live <= before + PLACES {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{live} tasks live with {PLACES} watches open, {before} before them"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(app.stop());
    for watch in &mut open {
        let ending = async {
            let mut last = None;
            while let Some(m) = watch.message().await.unwrap() {
                last = Some(m.status);
            }
            last
        };
        let last = tokio::time::timeout(Duration::from_secs(5), ending)
            .await
            .expect("the watch ends at shutdown");
        assert_eq!(last, Some(ServingStatus::NotServing as i32));
    }
    assert!(stopping.await.unwrap().drained);
}

/// `WatchJob` is an API stream like the REST job stream: it holds a place of
/// `streams.max_connections`, and is refused with `UNAVAILABLE` past it.
#[tokio::test]
async fn watch_job_streams_count_against_the_api_stream_limit() {
    let mut settings = test_settings();
    settings.streams.max_connections = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let mut c = compute(&app).await;
    let id = c
        .submit_job(SubmitJobRequest {
            number: gate.number(),
            rounds: None,
            idempotency_key: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let mut watch = c
        .watch_job(JobRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    let refused = c
        .watch_job(JobRequest { id: id.clone() })
        .await
        .expect_err("refused past the limit");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "SERVICE_OVERLOADED"
    );
    // The REST streams share the limit.
    let r = app
        .client
        .get(app.url(&format!("/api/v2/jobs/{id}/events")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_envelope(r, 503, "SERVICE_OVERLOADED").await;
    drop(gate);
    let mut last = None;
    while let Some(update) = watch.message().await.unwrap() {
        last = Some(update.status);
    }
    assert_eq!(last, Some(pb::JobStatus::Succeeded as i32));
    // Its place is freed once it has ended.
    let started = Instant::now();
    let mut again = loop {
        match c.watch_job(JobRequest { id: id.clone() }).await {
            Ok(again) => break again.into_inner(),
            Err(refused) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "still refused 5 s after the first stream ended: {refused:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let job = again.message().await.unwrap().unwrap();
    assert_eq!(job.status, pb::JobStatus::Succeeded as i32);
}

#[tokio::test]
async fn calls_are_measured_by_service_method_and_code() {
    let app = spawn_app().await;
    let mut c = compute(&app).await;
    c.fast(number(1)).await.unwrap();
    c.fast(number(2)).await.unwrap();
    let _ = c.fast(number(u64::MAX)).await.unwrap_err();
    let text = app
        .wait_for_exposition("the RPC histogram", |t| {
            t.contains("rpc_server_call_duration_seconds_count")
        })
        .await;
    let count = |code: &str| {
        sum_series(&text, "rpc_server_call_duration_seconds_count", |l| {
            l.contains("rpc_method=\"floodgate.v1.ComputeService/Fast\"")
                && l.contains(&format!("rpc_response_status_code=\"{code}\""))
                && l.contains("rpc_system_name=\"grpc\"")
        })
    };
    assert_eq!(
        (count("OK"), count("INVALID_ARGUMENT")),
        (2.0, 1.0),
        "{text}"
    );
    let stats = app.stats().await;
    assert_eq!(
        (
            stats["total_requests"].as_u64(),
            stats["error_count"].as_u64()
        ),
        (Some(3), Some(1))
    );
    // Not counted as HTTP requests.
    assert!(!text.contains("ComputeService/Fast\",status="), "{text}");
}

/// Only `application/grpc` and `application/grpc+<codec>` are gRPC: gRPC-Web (not served)
/// and look-alikes such as `application/grpcx` reach the HTTP API and get its envelope.
#[tokio::test]
async fn only_grpc_content_types_reach_the_grpc_service() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let call = |content_type: &'static str, path: &'static str| {
        client
            .post(format!("http://{}{path}", app.addr))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(grpc_frame(&prost::Message::encode_to_vec(&number(3))))
            .send()
    };
    const FAST: &str = "/floodgate.v1.ComputeService/Fast";
    for content_type in [
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web-text",
        "application/grpcx",
        "application/grpc+",
    ] {
        let r = call(content_type, FAST).await.unwrap();
        assert_eq!(r.headers().get("grpc-status"), None, "{content_type}");
        let env = assert_envelope(r, 404, "NOT_FOUND").await;
        assert_eq!(
            env["error"],
            format!("no route for {FAST}"),
            "{content_type}"
        );
        let r = call(content_type, "/api/v1/compute/fast").await.unwrap();
        assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    }
    for content_type in ["application/grpc", "application/grpc+proto"] {
        let r = call(content_type, FAST).await.unwrap();
        assert_eq!(r.status(), 200, "{content_type}");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }
}

#[tokio::test]
async fn rest_requests_are_untouched_by_the_grpc_route() {
    let app = spawn_with(|s| s.grpc.enabled = false).await;
    let status = compute(&app).await.fast(number(2)).await.unwrap_err();
    // Without gRPC the call reaches the REST API, which has no such route.
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(app.compute("fast", 2).await.status(), 200);
}

/// Server reflection answers in both versions (many clients still ask only for v1alpha), and
/// can be turned off.
#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let app = spawn_app().await;
    let ch = channel(&app).await;

    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"floodgate.v1.ComputeService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "floodgate.v1.ComputeService".into(),
            ),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a file descriptor");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let off = spawn_with(|s| s.grpc.reflection = false).await;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(&off).await);
    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = client
        .server_reflection_info(futures_util::stream::iter([ask]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// A job that fails on its worker is ABORTED, as REST answers PROCESSING_ERROR.
#[tokio::test]
async fn a_failed_job_is_aborted() {
    fn failing(n: u64, rounds: u32) -> u64 {
        if n == 666 {
            panic!("the kernel failed on purpose");
        }
        floodgate::pool::intensive_digest(n, rounds)
    }
    let app = spawn_builder(Application::builder(test_settings()).with_kernel(failing)).await;
    let mut c = compute(&app).await;
    let status = c.intensive(number(666)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "PROCESSING_ERROR"
    );
    assert_eq!(c.intensive(number(3)).await.unwrap().into_inner().result, 9);
}

/// A call the client abandons (no deadline sent: it just drops the call, which resets the
/// stream) is recorded as CANCELLED and leaves nothing in flight.
#[tokio::test]
async fn a_cancelled_call_is_recorded_and_not_left_in_flight() {
    let mut settings = test_settings();
    settings.pool.workers = 1;
    let app = spawn_builder(Application::builder(settings).with_kernel(gated_kernel)).await;
    let gate = Gate::hold();
    let mut client = compute(&app).await;
    let call = client.intensive(number(gate.number()));
    assert!(tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .is_err());
    app.wait_for_stats("the call no longer in flight", |s| {
        s["active_requests"] == 0
    })
    .await;
    let text = app
        .wait_for_exposition("the cancelled call", |t| {
            t.contains("rpc_response_status_code=\"CANCELLED\"")
        })
        .await;
    assert!(
        text.contains("rpc_method=\"floodgate.v1.ComputeService/Intensive\""),
        "{text}"
    );
    drop(gate);
}

/// A request message over the 4 MiB decode limit is RESOURCE_EXHAUSTED (`PAYLOAD_TOO_LARGE`),
/// as gRPC's own servers answer it, not the codec's OUT_OF_RANGE; it is not retryable (no
/// `RetryInfo`), not counted as rate limited, and never reaches the handler.
#[tokio::test]
async fn an_oversized_message_is_resource_exhausted() {
    let app = spawn_app().await;
    let mut c = compute(&app).await;
    let status = c
        .submit_job(SubmitJobRequest {
            number: 1,
            rounds: Some(1),
            idempotency_key: Some("k".repeat(4 * 1024 * 1024)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "PAYLOAD_TOO_LARGE"
    );
    assert!(status.get_details_retry_info().is_none());
    let list: serde_json::Value = app.get("/api/v2/jobs").await.json().await.unwrap();
    assert_eq!(list["jobs"], serde_json::json!([]), "no job was queued");
    // One byte under the limit is decoded (and then refused for its key, by the handler).
    let under = c
        .submit_job(SubmitJobRequest {
            number: 1,
            rounds: Some(1),
            idempotency_key: Some("k".repeat(4 * 1024 * 1024 - 16)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(under.code(), Code::InvalidArgument, "{under:?}");
    assert_eq!(app.stats().await["rate_limited_count"], 0);
}
