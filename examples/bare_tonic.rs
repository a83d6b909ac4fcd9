//! Reference server for `scripts/bench.sh`'s gRPC case: bare tonic with floodgate's
//! `ComputeService` and the handler work of `Fast` and `Intensive`, and nothing else.
//!
//! The same generated code and response fields as floodgate; no admission, no request IDs
//! from metadata, no metrics, no logging, no rate limit, no deadline, no worker pool (the
//! intensive digest inline). The gap between this server and floodgate's gRPC API is the
//! cost of everything floodgate adds around the handlers.
//!
//! Listens on `SERVER_PORT` (`host:port`, default `127.0.0.1:18181`) and prints
//! `listening on <addr>` once bound. `INTENSIVE_ROUNDS` (default 10000) as for floodgate.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use floodgate::grpc::pb::compute_service_server::{ComputeService, ComputeServiceServer};
use floodgate::grpc::pb::{ComputeRequest, ComputeResponse, Job, JobRequest, SubmitJobRequest};
use tonic::{Request, Response, Status};

struct Bare {
    rounds: u32,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn respond(start: Instant, result: u64, digest: Option<u64>) -> Response<ComputeResponse> {
    Response::new(ComputeResponse {
        request_id: uuid::Uuid::new_v4().to_string(),
        job_id: 0,
        result,
        latency_us: start.elapsed().as_micros() as u64,
        timestamp: unix_now(),
        digest,
        cached: false,
    })
}

type JobStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Job, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ComputeService for Bare {
    async fn fast(&self, r: Request<ComputeRequest>) -> Result<Response<ComputeResponse>, Status> {
        let start = Instant::now();
        let n = r.into_inner().number;
        Ok(respond(start, n * n, None))
    }

    async fn intensive(
        &self,
        r: Request<ComputeRequest>,
    ) -> Result<Response<ComputeResponse>, Status> {
        let start = Instant::now();
        let n = r.into_inner().number;
        let digest = floodgate::pool::intensive_digest(n, self.rounds);
        Ok(respond(start, n * n, Some(digest)))
    }

    async fn submit_job(&self, _: Request<SubmitJobRequest>) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }

    async fn get_job(&self, _: Request<JobRequest>) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }

    async fn cancel_job(&self, _: Request<JobRequest>) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }

    async fn retry_job(&self, _: Request<JobRequest>) -> Result<Response<Job>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }

    async fn submit_jobs(
        &self,
        _: Request<floodgate::grpc::pb::SubmitJobsRequest>,
    ) -> Result<Response<floodgate::grpc::pb::SubmitJobsResponse>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(&self, _: Request<JobRequest>) -> Result<Response<JobStream>, Status> {
        Err(Status::unimplemented("not in the reference server"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds = std::env::var("INTENSIVE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let addr = std::env::var("SERVER_PORT").unwrap_or_else(|_| "127.0.0.1:18181".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(ComputeServiceServer::new(Bare { rounds }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
