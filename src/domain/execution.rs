//! The question the job runner asks before it starts a job: "may I start one now?". Under
//! overload, job execution is the first work to yield (submissions stay cheap and durable;
//! a job that waits loses nothing), so the answer comes from admission, which knows how
//! loaded the service is; the domain only asks.
//!
//! The runner holds the [`StartSlot`] it was given while the job runs and drops it when the
//! job ends, however it ends: the slot counts the job as in flight until then.

use std::sync::Arc;
use std::time::Duration;

/// A place to run one job, held while it runs.
#[must_use = "the job counts as running only while its slot is held"]
pub struct StartSlot(#[allow(dead_code)] Option<Box<dyn Send + Sync>>);

impl StartSlot {
    /// A slot that stands for nothing (an open gate hands these out).
    pub fn free() -> StartSlot {
        StartSlot(None)
    }

    /// A slot released when `held` is dropped.
    pub fn holding(held: impl Send + Sync + 'static) -> StartSlot {
        StartSlot(Some(Box::new(held)))
    }
}

type Ask = dyn Fn() -> Result<StartSlot, Duration> + Send + Sync;

/// Asked before each job starts: a [`StartSlot`], or how long to wait before asking again.
#[derive(Clone)]
pub struct StartGate(Option<Arc<Ask>>);

impl StartGate {
    /// Every job may start (adaptive admission off).
    pub fn open() -> StartGate {
        StartGate(None)
    }

    /// A gate that asks `ask`.
    pub fn new(ask: impl Fn() -> Result<StartSlot, Duration> + Send + Sync + 'static) -> Self {
        StartGate(Some(Arc::new(ask)))
    }

    /// May a job start now? `Ok` with the slot to hold while it runs, or `Err` with how long
    /// to wait before asking again (the job stays claimed meanwhile, or is not claimed yet).
    pub fn may_start(&self) -> Result<StartSlot, Duration> {
        match &self.0 {
            Some(ask) => ask(),
            None => Ok(StartSlot::free()),
        }
    }
}

impl Default for StartGate {
    fn default() -> Self {
        StartGate::open()
    }
}

impl std::fmt::Debug for StartGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "StartGate(adaptive)"
        } else {
            "StartGate(open)"
        })
    }
}
