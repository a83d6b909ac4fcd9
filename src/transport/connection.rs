//! One accepted connection, served over HTTP/1.1 or HTTP/2 as its first bytes say: a client
//! speaking HTTP/2 (with prior knowledge in cleartext, "h2c", or after ALPN chose `h2`)
//! opens with the connection preface.
//!
//! hyper-util's `auto` builder does the same, but hands the bytes it read to choose back to
//! hyper as a read of their own. hyper then finds an incomplete head in its buffer and grows
//! the buffer to 16 KiB on the next read, so every connection paid twice hyper's 8 KiB.
//! Here the chosen-by bytes and whatever else the socket holds arrive in one read, and a
//! head that came in one segment is parsed where it landed (`scripts/connection-memory.py`:
//! 9.0 KiB resident per connection served, with the state boxed once, against 24.2 with
//! `auto`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How connections are served, per protocol.
pub(super) struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// What the connection loop needs of a connection.
pub(super) trait Graceful: Future<Output = Result<(), BoxError>> {
    /// Finish the requests in progress, take no more, then resolve.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// The bytes read to choose the protocol, handed on before anything else is read.
#[derive(Clone, Copy)]
struct Head {
    bytes: [u8; PREFACE.len()],
    len: u8,
    taken: u8,
}

impl Head {
    fn rest(&self) -> &[u8] {
        &self.bytes[usize::from(self.taken)..usize::from(self.len)]
    }
}

pin_project_lite::pin_project! {
    /// A connection, first reading enough to know its protocol, then served by hyper.
    pub(super) struct Connection<I, S>
    where
        S: HttpService<Incoming>,
    {
        #[pin]
        state: State<I, S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<I, S>
    where
        S: HttpService<Incoming>,
    {
        Choosing {
            io: Option<I>,
            service: Option<S>,
            builders: Arc<Builders>,
            head: Head,
            // Asked to shut down after some bytes came: serve what they begin, then close.
            draining: bool,
        },
        Http1 {
            #[pin]
            conn: http1::UpgradeableConnection<TokioIo<Prefixed<I>>, S>,
        },
        // Boxed: inline, its 1.6 KiB would size every HTTP/1 connection's state.
        Http2 {
            conn: Pin<Box<http2::Connection<TokioIo<Prefixed<I>>, S, TokioExecutor>>>,
        },
        Closed,
    }
}

impl<I, S> Connection<I, S>
where
    S: HttpService<Incoming>,
{
    /// Serve `service` on `io` with the protocol its client opens with.
    pub(super) fn new(io: I, service: S, builders: Arc<Builders>) -> Self {
        Self {
            state: State::Choosing {
                io: Some(io),
                service: Some(service),
                builders,
                head: Head {
                    bytes: [0; PREFACE.len()],
                    len: 0,
                    taken: 0,
                },
                draining: false,
            },
        }
    }
}

impl<I, S, B> Future for Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut state = self.as_mut().project().state;
            let (next, draining) = match state.as_mut().project() {
                StateProj::Choosing {
                    io,
                    service,
                    builders,
                    head,
                    draining,
                } => {
                    let reader = io.as_mut().expect("held until the protocol is chosen");
                    while usize::from(head.len) < PREFACE.len() {
                        let from = usize::from(head.len);
                        let mut buf = ReadBuf::new(&mut head.bytes[from..]);
                        ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
                        let n = buf.filled().len();
                        // `n` is at most the 24 bytes asked for.
                        head.len += n as u8;
                        // At the end of input, or off the preface: HTTP/1.
                        if n == 0 || head.bytes[from..from + n] != PREFACE[from..from + n] {
                            break;
                        }
                    }
                    let io = TokioIo::new(Prefixed {
                        inner: io.take().expect("held until the protocol is chosen"),
                        head: *head,
                    });
                    let service = service.take().expect("held until the protocol is chosen");
                    let next = if head.rest() == PREFACE.as_slice() {
                        State::Http2 {
                            conn: Box::pin(builders.http2.serve_connection(io, service)),
                        }
                    } else {
                        State::Http1 {
                            conn: builders.http1.serve_connection(io, service).with_upgrades(),
                        }
                    };
                    (next, *draining)
                }
                StateProj::Http1 { conn } => return conn.poll(cx).map_err(Into::into),
                StateProj::Http2 { conn } => return conn.as_mut().poll(cx).map_err(Into::into),
                StateProj::Closed => return Poll::Ready(Ok(())),
            };
            state.set(next);
            if draining {
                self.as_mut().graceful_shutdown();
            }
        }
    }
}

impl<I, S, B> Graceful for Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let mut state = self.project().state;
        match state.as_mut().project() {
            // Nothing said yet: no request to finish.
            StateProj::Choosing { head, .. } if head.len == 0 => state.set(State::Closed),
            StateProj::Choosing { draining, .. } => *draining = true,
            StateProj::Http1 { conn } => conn.graceful_shutdown(),
            StateProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
            StateProj::Closed => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's I/O, with the bytes read to choose its protocol put back in front.
    pub(super) struct Prefixed<I> {
        #[pin]
        inner: I,
        head: Head,
    }
}

impl<I: AsyncRead> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let rest = this.head.rest();
        if rest.is_empty() {
            return this.inner.poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.head.taken += n as u8;
        // Whatever else has come goes into the same read: a read that leaves hyper an
        // incomplete head makes it grow the connection's buffer.
        if this.head.rest().is_empty() && buf.remaining() > 0 {
            if let Poll::Ready(Err(e)) = this.inner.poll_read(cx, buf) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n";

    fn head_of(bytes: &[u8]) -> Head {
        let mut head = Head {
            bytes: [0; PREFACE.len()],
            len: bytes.len() as u8,
            taken: 0,
        };
        head.bytes[..bytes.len()].copy_from_slice(bytes);
        head
    }

    #[tokio::test]
    async fn the_chosen_by_bytes_and_what_followed_arrive_in_one_read() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(&REQUEST[24..]).await.unwrap();
        let mut io = Prefixed {
            inner: server,
            head: head_of(&REQUEST[..24]),
        };
        let mut buf = vec![0; 8192];
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], REQUEST, "one read holds the whole head");
        client.write_all(b"next").await.unwrap();
        let n = io.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"next");
    }

    #[tokio::test]
    async fn a_small_read_takes_the_head_in_parts() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut io = Prefixed {
            inner: server,
            head: head_of(&REQUEST[..24]),
        };
        let mut buf = [0; 10];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, &REQUEST[..10]);
        let mut rest = [0; 14];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, &REQUEST[10..24]);
    }
}
