//! Reference server for docs/performance.md: [`bare_axum`](bare_axum.rs)'s routes and
//! handlers with the least of what floodgate's production configuration does per request, in
//! one hand-written layer: the caller's `X-Request-ID` or a UUID, `X-Content-Type-Options`
//! and `Cache-Control` headers, an in-flight gauge and one duration histogram (with a
//! Prometheus recorder installed), a rate-limit check (`governor`), a timeout, and an
//! access-log line through floodgate's own `AccessLog`. No routing classes, admission,
//! tracing, framing checks, client-address rules or connection timeouts.
//!
//! The gap between bare axum and this server is what those features cost at their cheapest;
//! the gap between this server and floodgate is the rest of what floodgate does.
//!
//! Listens on `SERVER_PORT` (`host:port`, default `127.0.0.1:18181`), writes its access log
//! to `ACCESS_LOG_PATH` (default: the system's temporary directory) and prints `listening on
//! <addr>` once bound. `INTENSIVE_ROUNDS` (default 10000) as for floodgate.

use axum::ServiceExt;

#[path = "common/axum_reference.rs"]
mod reference;

mod lean {
    use std::convert::Infallible;
    use std::future::Future;
    use std::net::{IpAddr, SocketAddr};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{ready, Context, Poll};
    use std::time::{Duration, Instant};

    use axum::extract::{ConnectInfo, Request};
    use axum::response::{IntoResponse, Response};
    use floodgate::call::{request_id, X_REQUEST_ID};
    use floodgate::observability::access_log::{AccessLog, AccessRecord};
    use http::{header, HeaderValue, Method, StatusCode, Uri};
    use tower::Service;

    /// What every request shares.
    pub struct Shared {
        pub log: AccessLog,
        pub duration: metrics::Histogram,
        pub in_flight: metrics::Gauge,
        pub limiter: governor::DefaultDirectRateLimiter,
        pub timeout: Duration,
    }

    /// The one layer.
    #[derive(Clone)]
    pub struct Lean<S> {
        pub inner: S,
        pub shared: Arc<Shared>,
    }

    impl<S> Service<Request> for Lean<S>
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        type Response = Response;
        type Error = Infallible;
        type Future = LeanFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request) -> Self::Future {
            let start = Instant::now();
            // floodgate's own rule: the caller's ID when it is a sane one, else a UUID.
            let id = request_id(req.headers());
            let client = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            self.shared.in_flight.increment(1.0);
            let done = Some(Done {
                start,
                id,
                client,
                method: req.method().clone(),
                uri: req.uri().clone(),
                shared: Arc::clone(&self.shared),
            });
            let state = if self.shared.limiter.check().is_ok() {
                State::Running {
                    inner: tokio::time::timeout(self.shared.timeout, self.inner.call(req)),
                }
            } else {
                State::Limited
            };
            LeanFuture { state, done }
        }
    }

    /// What the answer needs; dropped, answered or not, it takes the call off the gauge.
    struct Done {
        start: Instant,
        id: HeaderValue,
        client: Option<IpAddr>,
        method: Method,
        uri: Uri,
        shared: Arc<Shared>,
    }

    impl Drop for Done {
        fn drop(&mut self) {
            self.shared.in_flight.decrement(1.0);
        }
    }

    pin_project_lite::pin_project! {
        #[project = StateProj]
        enum State<F> {
            Running { #[pin] inner: tokio::time::Timeout<F> },
            Limited,
        }
    }

    pin_project_lite::pin_project! {
        /// The response future of [`Lean`].
        pub struct LeanFuture<F> {
            #[pin]
            state: State<F>,
            done: Option<Done>,
        }
    }

    impl<F> Future for LeanFuture<F>
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        type Output = Result<Response, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let mut response = match this.state.project() {
                StateProj::Running { inner } => match ready!(inner.poll(cx)) {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_elapsed) => StatusCode::REQUEST_TIMEOUT.into_response(),
                },
                StateProj::Limited => StatusCode::TOO_MANY_REQUESTS.into_response(),
            };
            let done = this.done.take().expect("polled after completion");
            let headers = response.headers_mut();
            headers.insert(X_REQUEST_ID.clone(), done.id.clone());
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            let elapsed = done.start.elapsed();
            done.shared.duration.record(elapsed.as_secs_f64());
            done.shared.log.write(&AccessRecord {
                request_id: done.id.to_str().unwrap_or_default(),
                method: done.method.as_str(),
                path: done.uri.path(),
                status: response.status().as_u16(),
                grpc_status: None,
                latency: elapsed,
                client_ip: done.client,
                trace: None,
            });
            Poll::Ready(Ok(response))
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(std::io::Error::other)?;
    // The recorder keeps histogram samples until an upkeep; floodgate runs one every 5 s too.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            recorder.run_upkeep();
        }
    });
    let log_path = std::env::var("ACCESS_LOG_PATH").map_or_else(
        |_| std::env::temp_dir().join("lean-axum-access.log"),
        std::path::PathBuf::from,
    );
    let shared = std::sync::Arc::new(lean::Shared {
        log: floodgate::observability::access_log::AccessLog::open(
            Some(&log_path),
            floodgate::config::LogFormat::Json,
        )?,
        duration: metrics::histogram!(
            "http_server_request_duration_seconds",
            "http_route" => "/api/v1/compute/fast",
            "http_request_method" => "POST",
            "http_response_status_code" => "200"
        ),
        in_flight: metrics::gauge!("http_server_active_requests"),
        limiter: governor::RateLimiter::direct(governor::Quota::per_second(
            std::num::NonZeroU32::new(10_000_000).expect("not zero"),
        )),
        timeout: std::time::Duration::from_secs(30),
    });

    // Around the router as a whole, so no route boxes its service a second time.
    let app = lean::Lean {
        inner: reference::routes(),
        shared,
    };
    let app = ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(app);
    axum::serve(reference::listen().await?, app).await
}
