//! `grpc.health.v1.Health`: serving while the service is ready (not draining, and every
//! check that gates readiness passes), for the whole server (`""`) and for
//! `floodgate.v1.ComputeService`; `NOT_FOUND` for any other service name.
//!
//! A `Watch` is a stream anyone may open (probes carry no credential), so each holds a place
//! of `streams.max_operational_connections`, refused with `UNAVAILABLE` at the limit, and
//! ends when the service shuts down, after telling its watcher `NOT_SERVING`.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::status::status;
use crate::state::{AppState, StreamClass};

/// The service names answered for.
pub const SERVICES: [&str; 2] = ["", "floodgate.v1.ComputeService"];

/// How often a `Watch` looks again; it sends only changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The health service over the application's readiness.
#[derive(Clone)]
pub struct HealthApi {
    state: AppState,
}

impl HealthApi {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn serving(&self) -> ServingStatus {
        if self.state.readiness.is_draining() {
            return ServingStatus::NotServing;
        }
        if self.state.health.run_readiness().await.healthy {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// One `Watch`: what it sent last, and its place among the streams (freed when the stream
/// is dropped, however it ends).
struct Watching {
    api: HealthApi,
    known: bool,
    last: Option<ServingStatus>,
    closing: tokio::sync::watch::Receiver<bool>,
    ending: bool,
    _place: OwnedSemaphorePermit,
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if !SERVICES.contains(&service.as_str()) {
            return Err(Status::not_found(format!("unknown service `{service}`")));
        }
        Ok(Response::new(answer(self.serving().await)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let place = self
            .state
            .streams
            .admit(StreamClass::Operational)
            .map_err(|e| status(&e))?;
        let watching = Watching {
            api: self.clone(),
            known: SERVICES.contains(&request.get_ref().service.as_str()),
            last: None,
            closing: self.state.streams.closing(),
            ending: false,
            _place: place,
        };
        let stream = futures_util::stream::unfold(watching, |mut w| async move {
            loop {
                if w.ending {
                    return None;
                }
                if w.last.is_some() {
                    tokio::select! {
                        () = tokio::time::sleep(WATCH_INTERVAL) => {}
                        _ = w.closing.wait_for(|closing| *closing) => w.ending = true,
                    }
                }
                let now = if w.known {
                    w.api.serving().await
                } else {
                    ServingStatus::ServiceUnknown
                };
                if w.last != Some(now) {
                    w.last = Some(now);
                    return Some((Ok(answer(now)), w));
                }
            }
        });
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}
