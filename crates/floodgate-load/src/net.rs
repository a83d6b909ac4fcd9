//! Where connections go and how they are opened: plain TCP, or TLS over it,
//! with the time each step took (reported apart from request latency).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::tls;

/// TLS to one server: the client configuration (with its ALPN) and the name
/// the certificate must carry (and SNI sends).
#[derive(Clone)]
pub struct TlsTarget {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Where a connection goes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `None`: plain TCP.
    pub tls: Option<TlsTarget>,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint { addr, tls: None }
    }
}

/// How long opening a connection took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// The TCP connect.
    pub tcp: Duration,
    /// The TLS handshake, after it.
    pub tls: Option<Duration>,
}

impl Setup {
    /// TCP connect and TLS handshake together.
    pub fn total(&self) -> Duration {
        self.tcp + self.tls.unwrap_or_default()
    }
}

/// What a TLS handshake agreed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsSession {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    pub cipher: String,
    /// The protocol agreed by ALPN (`h2`, `http/1.1`), `null` when the server chose none.
    pub alpn: Option<String>,
}

/// A connection: plain TCP or TLS over it.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TLS session, for a TLS connection.
    pub fn session(&self) -> Option<TlsSession> {
        let Stream::Tls(tls) = self else {
            return None;
        };
        let conn = tls.get_ref().1;
        Some(TlsSession {
            version: conn.protocol_version().map_or_else(
                || "?".to_owned(),
                |v| match v.as_str() {
                    Some(s) => s.replace('_', "."),
                    None => format!("{v:?}"),
                },
            ),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or_else(|| "?".to_owned(), |c| format!("{:?}", c.suite())),
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
        })
    }

    /// Whether ALPN agreed on HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, Stream::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2))
    }
}

/// Connects to `endpoint` (TCP_NODELAY set), with the TLS handshake when it
/// is a TLS endpoint. A handshake error says what went wrong and what to do.
pub async fn open(endpoint: &Endpoint) -> io::Result<(Stream, Setup)> {
    let start = Instant::now();
    let tcp = TcpStream::connect(endpoint.addr).await?;
    tcp.set_nodelay(true)?;
    let connected = Instant::now();
    let Some(tls) = &endpoint.tls else {
        return Ok((
            Stream::Tcp(tcp),
            Setup {
                tcp: connected - start,
                tls: None,
            },
        ));
    };
    let stream = tls
        .connector
        .connect(tls.name.clone(), tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), tls::describe_error(&e)))?;
    Ok((
        Stream::Tls(Box::new(stream)),
        Setup {
            tcp: connected - start,
            tls: Some(connected.elapsed()),
        },
    ))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
