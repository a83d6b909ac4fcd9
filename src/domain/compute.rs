//! The compute operations: `number²` inline, and `number²` plus the CPU-bound digest on the
//! worker pool (or from the result cache).

use std::time::Duration;

use super::cache::Cache;
use crate::error::ApiError;
use crate::pool::{JobError, SubmitError, WorkerPool};

/// The CPU-bound workload run for intensive requests: `(number, rounds) -> digest`.
pub type Kernel = fn(u64, u32) -> u64;

/// Largest accepted `number`.
pub const MAX_NUMBER: u64 = 1_000_000;

/// How long a client refused for overload or shutdown is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A validated compute request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeInput {
    pub number: u64,
}

/// What a compute call produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Computed {
    /// The pool job that computed it; 0 when no job ran (fast path, cache hit).
    pub job_id: u64,
    pub result: u64,
    /// The intensive workload's output.
    pub digest: Option<u64>,
    /// The result came from the result cache.
    pub cached: bool,
}

/// The compute operations over one worker pool and cache.
#[derive(Clone)]
pub struct Compute {
    pool: WorkerPool,
    cache: Option<Cache>,
    kernel: Kernel,
    rounds: u32,
}

impl Compute {
    pub fn new(pool: WorkerPool, cache: Option<Cache>, kernel: Kernel, rounds: u32) -> Self {
        Self {
            pool,
            cache,
            kernel,
            rounds,
        }
    }

    /// `number²`, computed inline.
    pub fn fast(&self, input: ComputeInput) -> Computed {
        Computed {
            job_id: 0,
            result: input.number * input.number,
            digest: None,
            cached: false,
        }
    }

    /// `number²` and the digest, from the cache or a pool job. Dropping the future before
    /// the job starts skips the job.
    pub async fn intensive(&self, input: ComputeInput) -> Result<Computed, ApiError> {
        let n = input.number;
        let rounds = self.rounds;
        let cached = match &self.cache {
            Some(cache) => cache.get(n, rounds).await,
            None => None,
        };
        if let Some((result, digest)) = cached {
            return Ok(Computed {
                job_id: 0,
                result,
                digest: Some(digest),
                cached: true,
            });
        }
        let kernel = self.kernel;
        let job = self
            .pool
            .submit(move || (n * n, kernel(n, rounds)))
            .map_err(|e| match e {
                SubmitError::Full => ApiError::ServiceOverloaded {
                    retry_after: RETRY_AFTER,
                },
                SubmitError::ShuttingDown => ApiError::ShuttingDown {
                    retry_after: RETRY_AFTER,
                },
            })?;
        let job_id = job.id();
        let (result, digest) = job.await.map_err(|e| match e {
            JobError::Failed(msg) => {
                // Inside the caller's span, so traced requests tie this line to their ID.
                tracing::error!(job_id, error = %msg, "intensive job failed");
                ApiError::ProcessingError(format!("job {job_id} failed while processing"))
            }
            JobError::Stopped => ApiError::ShuttingDown {
                retry_after: RETRY_AFTER,
            },
        })?;
        if let Some(cache) = &self.cache {
            cache.insert(n, rounds, (result, digest)).await;
        }
        Ok(Computed {
            job_id,
            result,
            digest: Some(digest),
            cached: false,
        })
    }
}
