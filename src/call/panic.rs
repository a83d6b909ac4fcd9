//! The guard around a call's handler: a handler that panics fails its own call, answered as
//! the transport's internal error and logged with the call's ID, not the connection that
//! carries other calls, nor the process.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::future::{CatchUnwind, FutureExt};

use crate::error::panic_message;

/// A handler's future under [`guard`].
pub type Guarded<F> = CatchUnwind<AssertUnwindSafe<F>>;

/// Catch the panic of `handler` (see [`answer`]).
pub fn guard<F: Future>(handler: F) -> Guarded<F> {
    AssertUnwindSafe(handler).catch_unwind()
}

/// What a guarded handler answered; when it panicked, `failed()` answers instead, and the
/// panic is logged as "`what` panicked" with the call's `request_id`.
pub fn answer<R>(
    outcome: Result<Result<R, Infallible>, Box<dyn Any + Send>>,
    request_id: &str,
    what: &str,
    failed: impl FnOnce() -> R,
) -> R {
    match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(never)) => match never {},
        Err(panic) => {
            tracing::error!(
                request_id,
                panic = %panic_message(&panic),
                "{what} panicked"
            );
            failed()
        }
    }
}
