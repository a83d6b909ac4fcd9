//! A minimal HTTP/1.1 client connection for the load itself (over plain TCP
//! or TLS, see [`crate::net`]): one request at
//! a time on a keep-alive connection, the request written by the caller into
//! the connection's own buffer and sent with one write, the response head
//! parsed with `httparse` from a read buffer that is reused, and the body
//! read by its framing (Content-Length, chunked, or up to the end of the
//! connection) and kept only when asked for.
//!
//! It does what a load generator needs and no more, so a request costs no
//! allocation, no channel between a request handle and a connection task and
//! no header map: about half the user-space CPU of a general client, which
//! matters when the client shares a machine with the server it measures.
//! The control requests (`/health`, `/metrics`) and gRPC still go through
//! hyper.
//!
//! A response with `Connection: close` (or HTTP/1.0 without keep-alive, or
//! a body that ends with the connection) leaves the connection unusable, and
//! the caller opens a new one; interim 1xx responses are skipped.

use std::future::poll_fn;
use std::io::{Error, ErrorKind};
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::Stream;

/// Initial size of the read buffer; it grows for larger heads.
const READ_BUFFER: usize = 16 * 1024;
/// A response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// Headers a response head may have.
const MAX_HEADERS: usize = 64;

/// A response as the load needs it.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The body, up to `max_kept` bytes, when it was to be kept; empty otherwise.
    pub body: Bytes,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Up to the end of the connection.
    Eof,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes of the head, blank line included.
    len: usize,
    framing: Framing,
    /// The connection cannot carry another request.
    close: bool,
}

/// Parses a response head from `buf`: `Ok(None)` when it is not complete yet.
fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("malformed response: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let http10 = response.version == Some(0);
    let (mut length, mut chunked, mut encoded) = (None, false, false);
    let (mut close, mut keep_alive) = (false, false);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| invalid("malformed Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Chunked must be the last coding.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Empty
    } else if encoded {
        // Transfer-Encoding wins over Content-Length; without chunked last,
        // the body ends with the connection.
        if chunked {
            Framing::Chunked
        } else {
            Framing::Eof
        }
    } else {
        length.map_or(Framing::Eof, Framing::Length)
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        close: close || (http10 && !keep_alive) || framing == Framing::Eof,
    }))
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidData, message)
}

fn closed_early() -> Error {
    Error::new(
        ErrorKind::UnexpectedEof,
        "the connection closed before the response was complete",
    )
}

/// A keep-alive HTTP/1.1 connection.
pub struct H1Conn {
    stream: Stream,
    /// The request being sent; the caller writes it.
    out: Vec<u8>,
    /// Received bytes: `buf[start..end]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Can carry another request.
    reusable: bool,
}

impl H1Conn {
    /// Connects over plain TCP (TCP_NODELAY set).
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H1Conn> {
        let (stream, _) = crate::net::open(&crate::net::Endpoint::plain(addr)).await?;
        Ok(H1Conn::new(stream))
    }

    /// A connection over `stream`, already open.
    pub fn new(stream: Stream) -> H1Conn {
        H1Conn {
            stream,
            out: Vec::with_capacity(512),
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            reusable: true,
        }
    }

    /// Whether the connection may carry another request.
    pub fn is_open(&self) -> bool {
        self.reusable
    }

    /// Whether the server closed the connection (or sent something unasked)
    /// while it was idle. Over TCP this costs no system call when nothing
    /// arrived since the last response was read (the runtime knows the socket
    /// is not readable); over TLS the stream is polled once, which also takes
    /// in what the server sends outside of responses (session tickets).
    pub async fn closed_while_idle(&mut self) -> bool {
        if !self.reusable || self.start != self.end {
            return true;
        }
        match &mut self.stream {
            Stream::Tcp(tcp) => {
                let mut probe = [0u8; 1];
                !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
            Stream::Tls(_) => {
                let mut probe = [0u8; 1];
                poll_fn(|cx| {
                    let mut read = ReadBuf::new(&mut probe);
                    match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
                        // Nothing to read: still open (the waker registered is the
                        // worker's own, which it will be polled with again anyway).
                        std::task::Poll::Pending => std::task::Poll::Ready(false),
                        // The end, an error, or bytes nobody asked for.
                        std::task::Poll::Ready(_) => std::task::Poll::Ready(true),
                    }
                })
                .await
            }
        }
    }

    /// The buffer to write the next request into, emptied.
    pub fn request(&mut self) -> &mut Vec<u8> {
        self.out.clear();
        &mut self.out
    }

    /// Sends the request written into [`H1Conn::request`] and reads the
    /// response; its body is kept (up to `max_kept` bytes) if `keep` says so
    /// for its status. `head_request`: the request was a HEAD (no body comes).
    /// After an error the connection must not be used again.
    pub async fn exchange(
        &mut self,
        head_request: bool,
        keep: impl Fn(u16) -> bool,
        max_kept: usize,
    ) -> std::io::Result<Response> {
        self.reusable = false;
        let mut written = 0;
        while written < self.out.len() {
            let n = poll_fn(|cx| Pin::new(&mut self.stream).poll_write(cx, &self.out[written..]))
                .await?;
            if n == 0 {
                return Err(Error::new(ErrorKind::WriteZero, "the connection closed"));
            }
            written += n;
        }
        // TLS may hold the last record back until flushed; TCP flushes at once.
        poll_fn(|cx| Pin::new(&mut self.stream).poll_flush(cx)).await?;
        let head = loop {
            match parse_head(&self.buf[self.start..self.end], head_request)? {
                Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    // An interim response (100 Continue, 103 Early Hints).
                    self.start += head.len;
                }
                Some(head) => break head,
                None => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(invalid("response head too large".into()));
                    }
                    if self.fill().await? == 0 {
                        return Err(closed_early());
                    }
                }
            }
        };
        if head.status == 101 {
            return Err(invalid("unexpected 101 Switching Protocols".into()));
        }
        self.start += head.len;
        let mut kept = keep(head.status).then(Vec::new);
        match head.framing {
            Framing::Empty => {}
            Framing::Length(n) => self.body(n, &mut kept, max_kept).await?,
            Framing::Chunked => loop {
                let line = self.line().await?;
                let size = parse_chunk_size(&self.buf[line])?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.body(size, &mut kept, max_kept).await?;
                if !self.line().await?.is_empty() {
                    return Err(invalid("malformed chunk".into()));
                }
            },
            Framing::Eof => loop {
                self.take(usize::MAX, &mut kept, max_kept);
                if self.fill().await? == 0 {
                    break;
                }
            },
        }
        self.reusable = !head.close;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        Ok(Response {
            status: head.status,
            body: kept.map_or_else(Bytes::new, Bytes::from),
        })
    }

    /// Reads more bytes into the buffer, making room first; 0 at the end of
    /// the connection.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut self.buf[self.end..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
                std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(read.filled().len())),
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await?;
        self.end += n;
        Ok(n)
    }

    /// Consumes up to `n` buffered bytes, keeping them if asked; returns how many.
    fn take(&mut self, n: usize, kept: &mut Option<Vec<u8>>, max_kept: usize) -> usize {
        let take = n.min(self.end - self.start);
        if let Some(kept) = kept {
            let room = max_kept.saturating_sub(kept.len()).min(take);
            kept.extend_from_slice(&self.buf[self.start..self.start + room]);
        }
        self.start += take;
        take
    }

    /// Consumes `n` body bytes.
    async fn body(
        &mut self,
        n: u64,
        kept: &mut Option<Vec<u8>>,
        max_kept: usize,
    ) -> std::io::Result<()> {
        let mut rest = n;
        loop {
            rest -= self.take(usize::try_from(rest).unwrap_or(usize::MAX), kept, max_kept) as u64;
            if rest == 0 {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return Err(closed_early());
            }
        }
    }

    /// Consumes one line; returns where it is in the buffer (without its CRLF).
    async fn line(&mut self) -> std::io::Result<std::ops::Range<usize>> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                let line = self.start..self.start + i;
                self.start += i + 2;
                return Ok(line);
            }
            if pending.len() >= MAX_HEAD {
                return Err(invalid("line too long".into()));
            }
            if self.fill().await? == 0 {
                return Err(closed_early());
            }
        }
    }
}

/// The size of a chunk from its line (`1a;ext=1` → 26).
fn parse_chunk_size(line: &[u8]) -> std::io::Result<u64> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 15)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or_else(|| invalid("malformed chunk size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn heads_and_their_framing() {
        let head = |raw: &str| parse_head(raw.as_bytes(), false).unwrap().unwrap();
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"result\":1}");
        assert_eq!(
            (h.status, h.framing, h.close),
            (200, Framing::Length(12), false)
        );
        assert_eq!(h.len, 39);
        let h = head("HTTP/1.1 429 Too Many\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Eof, true));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Eof, true));
        let h = head("HTTP/1.1 204 No Content\r\nConnection: keep-alive, Close\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Empty, true));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.close);
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false).unwrap(),
            None
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;name=value").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"FF ").unwrap(), 255);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"xyz").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }

    /// A server that answers each request (read up to its blank line; the
    /// requests carry no body) with the next of `answers`, written in pieces
    /// of `piece` bytes, and records what it received.
    async fn serve(
        answers: Vec<&'static str>,
        piece: usize,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut pending = Vec::new();
            for answer in answers {
                while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return seen;
                    }
                    pending.extend_from_slice(&chunk[..n]);
                }
                let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                seen.push(String::from_utf8(pending.drain(..end).collect()).unwrap());
                for part in answer.as_bytes().chunks(piece) {
                    socket.write_all(part).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            seen
        });
        (addr, task)
    }

    async fn get(conn: &mut H1Conn, keep: bool) -> std::io::Result<Response> {
        conn.request()
            .extend_from_slice(b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n");
        conn.exchange(false, |status| keep || status >= 300, 8)
            .await
    }

    #[tokio::test]
    async fn keep_alive_exchanges_of_every_framing() {
        let answers = vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"result\":1}",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many Requests\r\ncontent-length: 11\r\n\r\n{\"code\":42}",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n6\r\nefghij\r\n0\r\ntrailer: 1\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 503 Unavailable\r\nconnection: close\r\n\r\nbye",
        ];
        for piece in [usize::MAX, 3] {
            let (addr, server) = serve(answers.clone(), piece).await;
            let mut conn = H1Conn::connect(addr).await.unwrap();
            let r = get(&mut conn, false).await.unwrap();
            assert_eq!(
                (r.status, &r.body[..]),
                (200, &b""[..]),
                "2xx bodies are not kept"
            );
            assert!(conn.is_open() && !conn.closed_while_idle().await);
            let r = get(&mut conn, false).await.unwrap();
            assert_eq!(
                (r.status, &r.body[..]),
                (429, &b"{\"code\":"[..]),
                "kept, up to 8 bytes"
            );
            let r = get(&mut conn, true).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"abcdefgh"[..]));
            let r = get(&mut conn, true).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (204, &b""[..]));
            assert!(conn.is_open());
            let r = get(&mut conn, true).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (503, &b"bye"[..]));
            assert!(!conn.is_open(), "connection: close");
            let seen = server.await.unwrap();
            assert_eq!(seen.len(), 5);
            assert!(seen
                .iter()
                .all(|r| r == "GET /x HTTP/1.1\r\nhost: test\r\n\r\n"));
        }
    }

    #[tokio::test]
    async fn a_response_cut_short_is_an_error() {
        let (addr, _server) = serve(
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"],
            usize::MAX,
        )
        .await;
        let mut conn = H1Conn::connect(addr).await.unwrap();
        let e = get(&mut conn, true).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        assert!(!conn.is_open());
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_noticed() {
        let (addr, server) = serve(
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
            usize::MAX,
        )
        .await;
        let mut conn = H1Conn::connect(addr).await.unwrap();
        assert_eq!(get(&mut conn, false).await.unwrap().status, 200);
        // The server's task ends: it closes the connection.
        server.await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !conn.closed_while_idle().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close was not noticed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
