//! Shared application state handed to handlers.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cache::ResultCache;
use crate::config::Settings;
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use crate::pool::WorkerPool;

/// The CPU-bound workload run for intensive requests: `(number, rounds) -> digest`.
pub type Kernel = fn(u64, u32) -> u64;

/// Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What handlers can reach.
pub struct Inner {
    pub settings: Arc<Settings>,
    pub pool: WorkerPool,
    pub metrics: Arc<Metrics>,
    pub health: HealthRegistry,
    pub readiness: Readiness,
    pub kernel: Kernel,
    /// Intensive results, when the cache is on.
    pub cache: Option<ResultCache>,
    /// The serialized OpenAPI document, built on first request (building it at start would
    /// add its code and allocations to every instance's idle footprint).
    pub openapi: std::sync::OnceLock<bytes::Bytes>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl axum::extract::FromRef<AppState> for crate::extract::BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        crate::extract::BodyLimit(state.settings.server.max_body_bytes)
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Flipped to "draining" at the start of shutdown so load balancers stop sending traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn start_draining(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
