//! What the service computes, independent of the transport that asked: the compute
//! operations, the result cache and the hand-off to the worker pool. No axum, no tonic.

pub mod cache;
pub mod compute;
pub mod execution;
pub mod job_events;
pub mod jobs;

pub use compute::{Compute, ComputeInput, Computed, Kernel, MAX_NUMBER};
