//! The built-in routes and their handlers.

pub mod compute;
pub mod docs;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod profile;
pub mod status;
pub mod streams;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::Method;

use super::table::{RouteSpec, Surface};
use crate::admission::{self, Class};
use crate::error::{ApiError, Missing};

/// Every route the service serves itself.
pub fn builtin() -> Vec<RouteSpec> {
    use Surface::*;
    vec![
        RouteSpec::new(Method::GET, "/health", Probe, health::health)
            .documented::<health::__path_health>(),
        RouteSpec::new(Method::GET, "/health/live", Probe, health::live)
            .documented::<health::__path_live>(),
        RouteSpec::new(Method::GET, "/health/ready", Probe, health::ready)
            .documented::<health::__path_ready>(),
        RouteSpec::new(Method::GET, "/metrics", Scrape, metrics::metrics)
            .documented::<metrics::__path_metrics>(),
        RouteSpec::new(
            Method::GET,
            "/metrics/prometheus",
            Scrape,
            metrics::prometheus,
        )
        .documented::<metrics::__path_prometheus>(),
        RouteSpec::new(Method::GET, "/api/v1/stats", Scrape, metrics::stats)
            .documented::<metrics::__path_stats>(),
        RouteSpec::new(Method::POST, "/api/v1/compute/fast", Api, compute::fast)
            .documented::<compute::__path_fast>()
            .admitted_as(Class::Fast),
        RouteSpec::new(Method::POST, "/api/v1/compute", Api, compute::compute)
            .documented::<compute::__path_compute>()
            .admitted_as(Class::Fast),
        RouteSpec::new(
            Method::POST,
            "/api/v1/compute/intensive",
            Api,
            compute::intensive,
        )
        .documented::<compute::__path_intensive>()
        .admitted_as(Class::Intensive),
        RouteSpec::new(Method::POST, "/api/v2/jobs", Api, jobs::submit)
            .documented::<jobs::__path_submit>(),
        RouteSpec::new(Method::GET, "/api/v2/jobs", Api, jobs::list)
            .documented::<jobs::__path_list>(),
        RouteSpec::new(Method::POST, "/api/v2/jobs:batch", Api, jobs::submit_batch)
            .documented::<jobs::__path_submit_batch>(),
        RouteSpec::new(Method::POST, "/api/v2/jobs/{id}/retry", Api, jobs::retry)
            .documented::<jobs::__path_retry>(),
        RouteSpec::new(Method::GET, "/api/v2/jobs/{id}", Api, jobs::get)
            .documented::<jobs::__path_get>(),
        RouteSpec::new(Method::DELETE, "/api/v2/jobs/{id}", Api, jobs::cancel)
            .documented::<jobs::__path_cancel>(),
        RouteSpec::new(
            Method::GET,
            "/api/v2/jobs/{id}/events",
            Api,
            streams::job_events,
        )
        .documented::<streams::__path_job_events>(),
        RouteSpec::new(Method::GET, "/api/v2/stats/stream", Api, streams::stats)
            .documented::<streams::__path_stats>(),
        RouteSpec::new(Method::GET, "/status", Status, status::page)
            .documented::<status::__path_page>(),
        RouteSpec::new(
            Method::GET,
            "/status/stream",
            Status,
            streams::status_stream,
        )
        .documented::<streams::__path_status_stream>(),
        RouteSpec::new(Method::GET, "/status/{file}", Status, status::asset).labelled("/status"),
        RouteSpec::new(Method::GET, "/openapi.json", Document, docs::openapi_json)
            .documented::<docs::__path_openapi_json>(),
        RouteSpec::new(Method::GET, "/docs", Document, docs::docs)
            .documented::<docs::__path_docs>(),
        RouteSpec::new(Method::GET, "/docs/", Document, docs::docs).labelled("/docs"),
        RouteSpec::new(Method::GET, "/docs/{*file}", Document, docs::asset).labelled("/docs"),
        RouteSpec::new(Method::GET, "/debug/pprof/profile", Admin, profile::profile),
        RouteSpec::new(Method::GET, "/debug/pprof/heap", Admin, profile::heap),
    ]
}

/// 404 for unknown paths. A body that came with the head is taken, so the connection can
/// carry the client's next request.
pub async fn not_found(req: Request) -> Response {
    let err = ApiError::NotFound(Missing::Route(req.uri().path().to_owned()));
    admission::refuse(req, err.into_response()).await
}

/// 405 for known paths with the wrong method; the body as for 404.
pub async fn method_not_allowed(req: Request) -> Response {
    let err = ApiError::MethodNotAllowed(req.method().to_string());
    admission::refuse(req, err.into_response()).await
}
