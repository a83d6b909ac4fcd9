//! Test support for cancel safety: drive a future to its k-th suspension and drop it there.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `future` until it has suspended `suspensions` times, then drops it at that await
/// (`None`), unless it finished first (`Some`).
pub async fn drop_at_suspension<F: Future>(future: F, suspensions: usize) -> Option<F::Output> {
    struct DropAt<F> {
        future: Pin<Box<F>>,
        left: usize,
    }
    impl<F: Future> Future for DropAt<F> {
        type Output = Option<F::Output>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            match self.future.as_mut().poll(cx) {
                Poll::Ready(v) => Poll::Ready(Some(v)),
                Poll::Pending => {
                    self.left -= 1;
                    if self.left == 0 {
                        // Woken at once, so the drop happens here, not at the next event.
                        cx.waker().wake_by_ref();
                    }
                    Poll::Pending
                }
            }
        }
    }
    DropAt {
        future: Box::pin(future),
        left: suspensions,
    }
    .await
}

/// Runs `make()` once per await it suspends at, dropping it there, and calls `after(k)` after
/// each drop; stops when a run finishes without being dropped. Returns how many awaits were
/// covered (at least one, or the future never suspended and nothing was dropped).
pub async fn drop_at_every_await<F, Fut, A, AFut>(mut make: F, mut after: A) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future,
    A: FnMut(usize) -> AFut,
    AFut: Future<Output = ()>,
{
    for k in 1.. {
        if drop_at_suspension(make(), k).await.is_some() {
            return k - 1;
        }
        after(k).await;
    }
    unreachable!()
}
