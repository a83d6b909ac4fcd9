//! `grpc.health.v1.Health`: serving while the service is ready (not draining, and every
//! check that gates readiness passes), for the whole server (`""`) and for
//! `floodgate.v1.ComputeService`; `NOT_FOUND` for any other service name.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::state::AppState;

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
        let known = SERVICES.contains(&request.get_ref().service.as_str());
        let api = self.clone();
        let stream = futures_util::stream::unfold(
            (api, None::<ServingStatus>),
            move |(api, last)| async move {
                loop {
                    if last.is_some() {
                        tokio::time::sleep(WATCH_INTERVAL).await;
                    }
                    let now = if known {
                        api.serving().await
                    } else {
                        ServingStatus::ServiceUnknown
                    };
                    if last != Some(now) {
                        return Some((Ok(answer(now)), (api, Some(now))));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}
