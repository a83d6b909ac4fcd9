//! [`Admission`] as a tower layer over any `http::Request` service, for every transport that
//! speaks HTTP semantics (REST today; gRPC requests are `http::Request`s too). The transport
//! supplies a [`Gate`]: where it keeps the caller's address, which class of work a call is,
//! and how it renders a refusal.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service};

use super::overload::{Class, Slot};
use super::{Admission, Caller, Peer};
use crate::error::ApiError;
use crate::pool::QUEUE_WAIT;

/// The transport's side of admission.
pub trait Gate: Clone + Send + Sync + 'static {
    /// The transport's response body.
    type Body: Send + 'static;
    /// The client address the transport resolved for this request.
    fn client(&self, extensions: &http::Extensions) -> Option<IpAddr>;
    /// The response for a refused request.
    fn refuse(&self, err: ApiError) -> Response<Self::Body>;
    /// A deadline the caller asked for (gRPC's `grpc-timeout`); the configured request
    /// timeout still caps it.
    fn requested_timeout(&self, _headers: &http::HeaderMap) -> Option<std::time::Duration> {
        None
    }
    /// The class of work a call to `uri` is, for the adaptive limits; `None`: not limited.
    fn class(&self, _uri: &http::Uri) -> Option<Class> {
        None
    }
}

/// Applies [`Admitted`].
#[derive(Clone)]
pub struct AdmissionLayer<G> {
    admission: Admission,
    gate: G,
}

impl<G> AdmissionLayer<G> {
    pub fn new(admission: Admission, gate: G) -> Self {
        Self { admission, gate }
    }
}

impl<S, G: Clone> Layer<S> for AdmissionLayer<G> {
    type Service = Admitted<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Admitted {
            inner,
            admission: self.admission.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// See [`AdmissionLayer`]. The caller's [`Identity`](super::Identity), when authenticated,
/// is left in the request's extensions. A call of a class holds its [`Slot`] until its
/// response is ready (or it is dropped), and its latency is recorded then.
#[derive(Clone)]
pub struct Admitted<S, G> {
    inner: S,
    admission: Admission,
    gate: G,
}

type Waiting<B> = BoxFuture<'static, Result<Response<B>, Infallible>>;

/// Left in a refusal's response by [`Admitted`]: whether the refused request's body had all
/// arrived, and was taken, by the time the refusal was answered. Over HTTP/1.1 the connection
/// can carry the next request only then; otherwise the unread rest could not be told apart
/// from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReceived(pub bool);

/// Takes whatever of `body` has already arrived, without waiting for more, and says whether
/// that was all of it. A refusal answers at once: a client that is still sending pays with its
/// connection, not the service with a wait. A request that expects `100 Continue` is left
/// alone, since asking for its body would tell the client to send it.
fn take_arrived<B: Body>(
    mut body: Pin<&mut B>,
    expects_continue: bool,
    cx: &mut Context<'_>,
) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if expects_continue {
        return false;
    }
    // The transport hands over what it has read before the service runs, one chunk at a
    // time; a few polls see the end of any body that came with its head.
    for _ in 0..4 {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(None) => return true,
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => return true,
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
        }
    }
    false
}

pin_project_lite::pin_project! {
    /// A refusal, answered on its first poll. By then the transport has read whatever of the
    /// request came with its head; the refusal takes that much of the body and leaves
    /// [`BodyReceived`] in the response.
    pub struct Refused<B, R> {
        #[pin]
        body: Option<B>,
        expects_continue: bool,
        response: Option<Response<R>>,
    }
}

impl<B, R> Refused<B, R> {
    fn new(req: Request<B>, response: Response<R>) -> Self {
        let expects_continue = req.headers().contains_key(http::header::EXPECT);
        Refused {
            body: Some(req.into_body()),
            expects_continue,
            response: Some(response),
        }
    }
}

impl<B: Body, R> Future for Refused<B, R> {
    type Output = Result<Response<R>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = this.response.take().expect("polled after completion");
        let received = this
            .body
            .as_mut()
            .as_pin_mut()
            .is_none_or(|body| take_arrived(body, *this.expects_continue, cx));
        // The body goes now, with whatever the transport still holds for it.
        this.body.set(None);
        response.extensions_mut().insert(BodyReceived(received));
        Poll::Ready(Ok(response))
    }
}

/// A refusal answered where admission does not run (the router's fallbacks), the way
/// admission answers its own: whatever of the body came with the head is taken, and
/// [`BodyReceived`] says whether that was all of it, so a request that came whole keeps its
/// connection.
pub async fn refuse<B: Body, R>(req: Request<B>, response: Response<R>) -> Response<R> {
    match Refused::new(req, response).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// What the slot of a call becomes: none needed, a slot to hold, or a refusal — which also
/// pauses the call's connection when the refusal says to and the transport named it
/// ([`Peer`]).
fn take_slot(
    admission: &Admission,
    class: Option<Class>,
    extensions: &http::Extensions,
) -> Result<Option<Slot>, ApiError> {
    match admission.slot(class) {
        None => Ok(None),
        Some(Ok(slot)) => Ok(Some(slot)),
        Some(Err(shed)) => {
            if let Some(peer) = extensions.get::<Peer>() {
                peer.pause.pause(shed.pause);
            }
            Err(shed.into())
        }
    }
}

impl<S, G, B> Service<Request<B>> for Admitted<S, G>
where
    G: Gate,
    S: Service<Request<B>, Response = Response<G::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<G::Body>;
    type Error = Infallible;
    type Future = Either<Held<S::Future>, Either<Refused<B, G::Body>, Waiting<G::Body>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let caller = Caller {
            headers: req.headers(),
            client: self.gate.client(req.extensions()),
        };
        let class = self.gate.class(req.uri());
        match self.admission.admit(&caller).now() {
            Ok(Ok(permit)) => {
                // After authentication and the rate limit: a call refused by those holds no
                // place meanwhile.
                let slot = match take_slot(&self.admission, class, req.extensions()) {
                    Ok(slot) => slot,
                    Err(err) => {
                        return Either::Right(Either::Left(Refused::new(
                            req,
                            self.gate.refuse(err),
                        )))
                    }
                };
                if let Some(identity) = permit.identity {
                    req.extensions_mut().insert(identity);
                }
                Either::Left(Held::new(self.inner.call(req), slot))
            }
            Ok(Err(refusal)) => Either::Right(Either::Left(Refused::new(
                req,
                self.gate.refuse(refusal.into()),
            ))),
            Err(pending) => {
                // The service that was made ready goes with the request; this one is a clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let gate = self.gate.clone();
                let admission = self.admission.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    match pending.await {
                        Ok(permit) => {
                            // Taken once the wait is over: no place is held while waiting.
                            let slot = match take_slot(&admission, class, req.extensions()) {
                                Ok(slot) => slot,
                                Err(err) => return Refused::new(req, gate.refuse(err)).await,
                            };
                            if let Some(identity) = permit.identity {
                                req.extensions_mut().insert(identity);
                            }
                            Held::new(inner.call(req), slot).await
                        }
                        Err(refusal) => Refused::new(req, gate.refuse(refusal.into())).await,
                    }
                })))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// An admitted call's future, holding its class's [`Slot`] (when it has one) until the
    /// response is ready, then recording its latency; dropped before that, the slot is
    /// given back with nothing recorded. The time the call's pool jobs waited for a worker
    /// is collected through [`QUEUE_WAIT`] and left out of its no-load latency.
    pub struct Held<F> {
        #[pin]
        inner: F,
        slot: Option<Slot>,
        queued: Option<Arc<AtomicU64>>,
    }
}

impl<F> Held<F> {
    fn new(inner: F, slot: Option<Slot>) -> Self {
        // Only classes whose work goes to the pool can have queued for it.
        let queued = slot
            .as_ref()
            .filter(|s| s.class() != Class::Fast)
            .map(|_| Arc::new(AtomicU64::new(0)));
        Held {
            inner,
            slot,
            queued,
        }
    }
}

impl<F: Future> Future for Held<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = match this.queued {
            Some(queued) => {
                let inner = this.inner;
                std::task::ready!(QUEUE_WAIT.sync_scope(Arc::clone(queued), || inner.poll(cx)))
            }
            None => std::task::ready!(this.inner.poll(cx)),
        };
        if let Some(slot) = this.slot.take() {
            let queued = this
                .queued
                .as_ref()
                .map_or(0, |q| q.load(Ordering::Relaxed));
            slot.finish(Duration::from_nanos(queued));
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::Empty;

    use super::*;
    use crate::admission::overload::{OverloadConfig, Tuning};
    use crate::admission::{Overload, ReadPause};
    use crate::pool::{PoolMetrics, WorkerPool};
    use crate::testing::drop_at_every_await;

    /// Every call is intensive; a refusal is a bare 503.
    #[derive(Clone)]
    struct TestGate;

    impl Gate for TestGate {
        type Body = ();
        fn client(&self, _: &http::Extensions) -> Option<IpAddr> {
            None
        }
        fn refuse(&self, _: ApiError) -> Response<()> {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        fn class(&self, _: &http::Uri) -> Option<Class> {
            Some(Class::Intensive)
        }
    }

    /// Adaptive limits with the floor at 1 and these ceilings (by [`Class::ALL`]).
    fn overload(ceilings: [u32; 3]) -> Arc<Overload> {
        Overload::new(OverloadConfig {
            tuning: Tuning::default(),
            floor: 1,
            ceilings,
            metrics: Default::default(),
            runtime_delay: metrics::Gauge::noop(),
        })
    }

    /// A caller that goes away at any await — while its job waits for the worker, while it
    /// runs, or between — gives its place in the class back; one that finishes does too.
    #[tokio::test]
    async fn a_call_dropped_at_any_await_gives_its_place_back() {
        let overload = overload([4, 4, 1]);
        let admission = Admission::default().with_overload(Arc::clone(&overload));
        let pool = WorkerPool::start(1, 8, 0, PoolMetrics::default());
        let inner = tower::service_fn(move |_: Request<Empty<Bytes>>| {
            let pool = pool.clone();
            async move {
                let job = pool
                    .submit(|| std::thread::sleep(Duration::from_millis(2)))
                    .unwrap();
                tokio::task::yield_now().await;
                job.await.unwrap();
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(Response::new(()))
            }
        });
        let svc = AdmissionLayer::new(admission, TestGate).layer(inner);
        let in_flight = || overload.state()[1].in_flight;
        let covered = drop_at_every_await(
            || svc.clone().call(Request::new(Empty::new())),
            |k| {
                let left = in_flight();
                async move { assert_eq!(left, 0, "dropped at await {k}") }
            },
        )
        .await;
        assert!(covered >= 3, "{covered} awaits");
        assert_eq!(in_flight(), 0, "the call that finished gave its place back");
        // Full, a call is refused without reaching the service.
        let held: Vec<_> = (0..4)
            .map(|_| overload.admit(Class::Intensive).unwrap())
            .collect();
        let refused = svc.clone().call(Request::new(Empty::new())).await.unwrap();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        assert_eq!(in_flight(), 0);
    }

    /// A refusal past the refusal budget pauses the connection the call came on, through
    /// the [`ReadPause`] the transport put in its extensions; one within it does not.
    #[tokio::test]
    async fn a_refusal_past_the_budget_pauses_the_calls_connection() {
        let overload = overload([1, 1, 1]);
        overload.set_refusal_spacing(Class::Intensive, Duration::from_millis(500));
        let admission = Admission::default().with_overload(Arc::clone(&overload));
        let inner = tower::service_fn(|_: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(()))
        });
        let svc = AdmissionLayer::new(admission, TestGate).layer(inner);
        let _held = overload.admit(Class::Intensive).unwrap();
        let call = |pause: &ReadPause| {
            let mut req = Request::new(Empty::new());
            req.extensions_mut().insert(Peer {
                addr: ([127, 0, 0, 1], 1).into(),
                pause: pause.clone(),
            });
            svc.clone().call(req)
        };
        let (first, second) = (ReadPause::default(), ReadPause::default());
        let r = call(&first).await.unwrap();
        assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            first.until(),
            None,
            "the first refusal is within the budget"
        );
        let r = call(&second).await.unwrap();
        assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        let until = second.until().expect("the second waits for its place");
        assert!(until > std::time::Instant::now() + Duration::from_millis(400));
    }

    /// A request body of which `arrived` is there and, when `more`, the rest still on its way;
    /// it counts how often it is asked for a frame.
    struct Arriving {
        arrived: Option<Bytes>,
        more: bool,
        polls: Arc<AtomicUsize>,
    }

    impl Body for Arriving {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            match self.arrived.take() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.more => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    /// A refusal takes a body that came with its request and says so, so HTTP/1.1 can keep
    /// the connection; a body still on its way it does not wait for, and one whose client
    /// waits for `100 Continue` it does not ask for. An admitted call's body is its handler's.
    #[tokio::test]
    async fn a_refusal_takes_only_the_body_that_has_arrived() {
        let overload = overload([1, 1, 1]);
        let admission = Admission::default().with_overload(Arc::clone(&overload));
        let inner = tower::service_fn(|_: Request<Arriving>| async {
            Ok::<_, Infallible>(Response::new(()))
        });
        let svc = AdmissionLayer::new(admission, TestGate).layer(inner);
        let call = |more: bool, expect: bool| {
            let polls = Arc::new(AtomicUsize::new(0));
            let mut req = Request::new(Arriving {
                arrived: Some(Bytes::from_static(b"{\"number\":7}")),
                more,
                polls: Arc::clone(&polls),
            });
            if expect {
                req.headers_mut().insert(
                    http::header::EXPECT,
                    http::HeaderValue::from_static("100-continue"),
                );
            }
            let response = svc.clone().call(req);
            async move {
                let response = response.await.unwrap();
                let received = response.extensions().get::<BodyReceived>().copied();
                (response.status(), received, polls.load(Ordering::Relaxed))
            }
        };
        let held = overload.admit(Class::Intensive).unwrap();
        // A refusal whose caller is gone before it is polled takes nothing and holds nothing.
        let polls = Arc::new(AtomicUsize::new(0));
        drop(svc.clone().call(Request::new(Arriving {
            arrived: Some(Bytes::from_static(b"{}")),
            more: false,
            polls: Arc::clone(&polls),
        })));
        assert_eq!(polls.load(Ordering::Relaxed), 0);
        assert_eq!(
            overload.state()[1].in_flight,
            1,
            "only the place held above"
        );
        let refused = http::StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            call(false, false).await,
            (refused, Some(BodyReceived(true)), 2)
        );
        assert_eq!(
            call(true, false).await,
            (refused, Some(BodyReceived(false)), 2)
        );
        assert_eq!(
            call(false, true).await,
            (refused, Some(BodyReceived(false)), 0)
        );
        drop(held);
        assert_eq!(call(false, false).await, (http::StatusCode::OK, None, 0));
    }
}
