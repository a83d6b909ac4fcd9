//! The accept loop: connection limit, header-read and keep-alive timeouts, `TCP_NODELAY`,
//! graceful draining, and optionally TLS. Every connection speaks HTTP/1.1 or HTTP/2: over
//! TLS as ALPN negotiates, in cleartext by the client's first bytes (HTTP/2 with prior
//! knowledge, "h2c", as gRPC clients use it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::Service;

use super::connection::{Builders, Connection, Graceful};
use super::tls::Tls;
use crate::admission::{Peer, ReadPause};

/// What connections report: errors that end a connection before any handler sees a
/// request (a malformed or oversized head, a head not sent in time), by kind.
#[derive(Clone)]
pub struct ConnectionErrors {
    pub malformed: metrics::Counter,
    pub too_large: metrics::Counter,
    pub header_timeout: metrics::Counter,
}

impl Default for ConnectionErrors {
    /// Counters that record nothing.
    fn default() -> Self {
        Self {
            malformed: metrics::Counter::noop(),
            too_large: metrics::Counter::noop(),
            header_timeout: metrics::Counter::noop(),
        }
    }
}

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
}

/// A listener being served; resolves when every connection has closed after `stop`.
pub struct Server {
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    permits: Arc<Semaphore>,
    max: usize,
}

impl Server {
    /// Serve `service` on `listener` until [`Server::shutdown`].
    pub fn start<S>(
        listener: TcpListener,
        service: S,
        limits: ConnectionLimits,
        tls: Option<Tls>,
        errors: ConnectionErrors,
    ) -> Server
    where
        S: Service<axum::extract::Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let task = tokio::spawn(accept_loop(
            listener,
            service,
            limits,
            tls,
            errors,
            Arc::clone(&permits),
            stop_rx,
        ));
        Server {
            stop_tx,
            task,
            permits,
            max: limits.max_connections,
        }
    }

    /// Stop accepting, ask every connection to finish its in-flight request and close, and
    /// wait up to `timeout` for them. Returns whether all closed in time.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
        // Every permit back means every connection closed. The limit is validated to fit.
        let all = u32::try_from(self.max).expect("server.max_connections fits in u32");
        tokio::time::timeout(timeout, self.permits.acquire_many(all))
            .await
            .is_ok()
    }
}

/// At most this many concurrent requests on one HTTP/2 connection.
const MAX_CONCURRENT_STREAMS: u32 = 128;

async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    errors: ConnectionErrors,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<axum::extract::Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        // Answers are small: one flattened write costs less than a vectored one.
        .writev(false)
        // `drive` enforces the header-read deadline: hyper's own allocates, registers and
        // cancels a timer for every request (about 2% of a small request's CPU).
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builders = Arc::new(Builders { http1, http2 });
    loop {
        // At the connection limit, stop accepting: new clients wait in the kernel backlog
        // instead of taking memory and file descriptors from the ones being served.
        let permit = tokio::select! {
            biased;
            _ = stop.changed() => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        limit_unsent(&stream);
        let service = service.clone();
        let stop = stop.clone();
        let activity = Arc::new(Activity::new());
        let io = ActivityIo {
            inner: stream,
            activity: Arc::clone(&activity),
            paused: None,
        };
        let counted = Arc::clone(&activity);
        let hyper_service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(Peer {
                addr: peer,
                pause: counted.pause.clone(),
            });
            counted.dispatched.fetch_add(1, Ordering::Relaxed);
            if req.version() == http::Version::HTTP_2 {
                counted.multiplexed.store(true, Ordering::Relaxed);
            }
            Answered {
                inner: service.clone().call(req),
                activity: Arc::clone(&counted),
            }
        });
        let errors = errors.clone();
        match &tls {
            None => {
                let builders = Arc::clone(&builders);
                tokio::spawn(async move {
                    let conn = Box::pin(Connection::new(io, hyper_service, builders));
                    drive(conn, peer, activity, limits, stop, errors).await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor.clone();
                let builders = Arc::clone(&builders);
                tokio::spawn(async move {
                    // The handshake counts against the header-read deadline: a client that
                    // opens a socket and says nothing is cut off either way.
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn = Box::pin(Connection::new(stream, hyper_service, builders));
                            drive(conn, peer, activity, limits, stop, errors).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
}

/// How long a draining connection with no request in progress may stay quiet before it is
/// closed: a head half-sent when the drain began would otherwise hold the shutdown until the
/// header-read timeout.
const DRAIN_IDLE: Duration = Duration::from_millis(100);

/// Run a connection to completion: closed when it has moved no bytes for the keep-alive
/// timeout, or, over HTTP/1, when it has been waiting for a complete request head for the
/// header-read timeout (a client dribbling a head, or saying nothing; a response still
/// streaming is not waiting); asked to finish its in-flight requests and close when `stop`
/// fires.
///
/// Both are checked on one timer per connection, ticking at a quarter of the header-read
/// timeout (or the keep-alive timeout, if shorter), rather than on a timer armed for each
/// request: a deadline is met within one tick of its time. The check reads counters the
/// connection's I/O and service keep, not the clock.
///
/// The connection comes boxed: moved into this future and pinned here, it would be held
/// twice in every connection's task.
async fn drive<C>(
    mut conn: std::pin::Pin<Box<C>>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    errors: ConnectionErrors,
) where
    C: Graceful,
{
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let tick = limits
        .keep_alive_timeout
        .min(limits.header_read_timeout / 4)
        .max(Duration::from_millis(1));
    let check = tokio::time::sleep(tick);
    tokio::pin!(check);
    let mut seen = activity.io();
    let mut seen_dispatched = activity.dispatched();
    // How long, to within a tick, the connection has moved no bytes, and has had no new
    // request head while none was in progress.
    let (mut quiet, mut waiting) = (Duration::ZERO, Duration::ZERO);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    report(e, peer, &errors);
                }
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
                seen = activity.io();
                check.as_mut().reset(tokio::time::Instant::now() + DRAIN_IDLE);
            }
            _ = &mut check => {
                let now = activity.io();
                if draining {
                    // Nothing in progress and nothing moving: no request will come of it.
                    if now == seen && activity.idle() {
                        break;
                    }
                    seen = now;
                    check.as_mut().reset(tokio::time::Instant::now() + DRAIN_IDLE);
                    continue;
                }
                let dispatched = activity.dispatched();
                // A connection admission paused is quiet by the service's choice, not the
                // client's: neither clock runs while it waits (its next request may already
                // be in the socket).
                let paused = activity.pause.until().is_some();
                quiet = if now == seen && !paused {
                    quiet + tick
                } else {
                    Duration::ZERO
                };
                waiting = if dispatched == seen_dispatched
                    && activity.idle()
                    && !activity.multiplexed.load(Ordering::Relaxed)
                    && !paused
                {
                    waiting + tick
                } else {
                    Duration::ZERO
                };
                (seen, seen_dispatched) = (now, dispatched);
                if quiet >= limits.keep_alive_timeout {
                    // Finishes a request in progress, then closes.
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                    check.as_mut().reset(tokio::time::Instant::now() + DRAIN_IDLE);
                } else if waiting >= limits.header_read_timeout {
                    // No request is in progress, so closing loses nothing.
                    errors.header_timeout.increment(1);
                    tracing::debug!(%peer, "request head not received in time; closed");
                    break;
                } else {
                    check.as_mut().reset(tokio::time::Instant::now() + tick);
                }
            }
        }
    }
}

/// Count and log what ended a connection before a handler could answer: hyper answers a
/// malformed head with a bare 400 and an oversized one with 431, without our envelope.
fn report(
    e: Box<dyn std::error::Error + Send + Sync>,
    peer: SocketAddr,
    errors: &ConnectionErrors,
) {
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
        return;
    };
    if e.is_parse_too_large() {
        errors.too_large.increment(1);
        tracing::warn!(error = %e, %peer, "request head too large; answered 431");
    } else if e.is_parse() {
        errors.malformed.increment(1);
        tracing::warn!(error = %e, %peer, "malformed request; answered 400");
    } else {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// What a connection has done: I/O calls that moved bytes (the idle check compares counts
/// rather than reading the clock on every call), requests handed to the service, and
/// requests answered (their whole body sent, or dropped).
struct Activity {
    io: AtomicU64,
    dispatched: AtomicU64,
    answered: AtomicU64,
    /// An HTTP/2 connection: it has no request head to wait for between streams, and its
    /// client may keep it open with pings, as gRPC clients do.
    multiplexed: AtomicBool,
    /// Set by admission when it refuses a call of this connection past the refusal budget:
    /// reads wait until it ends.
    pause: ReadPause,
}

impl Activity {
    fn new() -> Self {
        Self {
            io: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            pause: ReadPause::default(),
        }
    }
    fn touch(&self) {
        self.io.fetch_add(1, Ordering::Relaxed);
    }
    fn io(&self) -> u64 {
        self.io.load(Ordering::Relaxed)
    }
    fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Relaxed)
    }
    /// No request is being handled, and no answer is still streaming (however quiet).
    fn idle(&self) -> bool {
        self.dispatched.load(Ordering::Relaxed) == self.answered.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A response future that counts its request as answered once its body is out.
    struct Answered<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
    }
}

impl<F> std::future::Future for Answered<F>
where
    F: std::future::Future<Output = Result<Response, Infallible>>,
{
    type Output = F::Output;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        use http_body::Body as _;
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        // A body of known length goes out with the head; one that streams (server-sent
        // events) keeps the request in progress until it ends, which the connection's
        // deadlines must see. Only those are wrapped.
        if response.body().size_hint().exact().is_some() {
            this.activity.answered.fetch_add(1, Ordering::Relaxed);
            return std::task::Poll::Ready(Ok(response));
        }
        let activity = Arc::clone(this.activity);
        std::task::Poll::Ready(Ok(
            response.map(|inner| axum::body::Body::new(Streaming { inner, activity }))
        ))
    }
}

/// A response body being streamed; its request counts as answered when it is dropped (sent
/// to its end, or the connection closed).
struct Streaming {
    inner: axum::body::Body,
    activity: Arc<Activity>,
}

impl http_body::Body for Streaming {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.activity.answered.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The socket, counting the bytes moved and holding reads back while the connection is
    /// paused.
    struct ActivityIo {
        #[pin]
        inner: TcpStream,
        activity: Arc<Activity>,
        // The timer of a pause in progress; allocated only by a pause.
        paused: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl tokio::io::AsyncRead for ActivityIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        if let Some(until) = this.activity.pause.until() {
            let until = tokio::time::Instant::from_std(until);
            let sleep = this
                .paused
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if sleep.deadline() != until {
                sleep.as_mut().reset(until);
            }
            std::task::ready!(std::future::Future::poll(sleep.as_mut(), cx));
        }
        *this.paused = None;
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl tokio::io::AsyncWrite for ActivityIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Unsent bytes the kernel may hold for one connection before writes wait. Unbounded, a
/// client that stops reading pins the whole autotuned send buffer (4 MiB here) per
/// connection in kernel memory, and a stream never learns that its reader fell behind.
/// Responses are small; this costs a bulk download a few more wake-ups, nothing else.
const UNSENT_BYTES: libc::c_int = 32 * 1024;

fn limit_unsent(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let value = UNSENT_BYTES;
    // SAFETY: the descriptor is open for the call, and the option is a c_int of that size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_NOTSENT_LOWAT not set");
    }
}
