//! HTTP/1.1 keep-alive connections, HTTP/2 connections carrying REST requests
//! (`--http2`) or gRPC calls (`--grpc`), over plain TCP or TLS, and request
//! execution.
//!
//! Each worker owns one [`Conn`]. HTTP/1.1 requests are written straight
//! from their [`RequestTemplate`] into the connection's buffer and their
//! answers read by [`crate::h1`]. HTTP/2 goes through hyper's HTTP/2 client:
//! with one stream per connection (gRPC by default) its connection future is
//! polled by the worker's own task together with the request (see [`drive`]),
//! so a request costs no task hop between the worker and a connection task;
//! with several streams per connection (`--streams`, and REST over HTTP/2)
//! the connection runs in a task of its own and its workers share it. The
//! health check, `/metrics` and the live-metrics pushes use hyper's HTTP/1
//! client ([`send`]).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::h1::H1Conn;
use crate::net::{Endpoint, Setup, Stream, TlsSession};
use crate::options::NumberRange;
use crate::stats::TransportError;

type Http2Future = http2::Connection<TokioIo<Stream>, Full<Bytes>, TokioExecutor>;

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// REST over HTTP/1.1 keep-alive.
    #[default]
    Http1,
    /// gRPC calls over HTTP/2 (h2c with prior knowledge, or `h2` by ALPN over TLS).
    Grpc,
    /// REST over HTTP/2 (h2c with prior knowledge, or `h2` by ALPN over TLS).
    Http2,
}

impl Protocol {
    /// Whether it is carried by HTTP/2.
    pub fn is_h2(self) -> bool {
        self != Protocol::Http1
    }
}

/// Largest body kept (an error body to find its JSON `code`, a job to check it).
const MAX_KEPT_BODY: usize = 64 * 1024;

/// A base URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The path prefix, without a trailing slash (empty for none).
    pub prefix: String,
}

/// Parses an `http[s]://host[:port][/prefix]` base URL.
pub fn parse_base_url(url: &str) -> Result<BaseUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "unsupported URL scheme `{other}` in `{url}`: only http and https are supported"
            ))
        }
        None => return Err(format!("URL `{url}` has no scheme; use http://host:port")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("URL `{url}` has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    if uri.query().is_some() {
        return Err(format!("URL `{url}` must not have a query; use --path"));
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(BaseUrl {
        tls,
        host,
        port,
        prefix,
    })
}

/// One server the load goes to, parsed from its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The base URL as given, without a trailing slash.
    pub base: String,
    /// `https`: the connections speak TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (empty for none).
    pub prefix: String,
    /// `host:port`, an IPv6 host in brackets: the `Host` header and the
    /// authority of the URLs in reports.
    pub authority: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let BaseUrl {
            tls,
            host,
            port,
            prefix,
        } = parse_base_url(url)?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        HeaderValue::from_str(&authority).map_err(|_| format!("invalid host in {url}"))?;
        Ok(Target {
            base: url.trim_end_matches('/').to_owned(),
            tls,
            host,
            port,
            prefix,
            authority,
        })
    }

    /// The `Host` header for this target.
    pub fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.authority).expect("checked by Target::parse")
    }

    /// `path` below this target's prefix.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The full URL of `path` below this target's prefix.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}{}{path}",
            self.scheme(),
            self.authority,
            self.prefix
        )
    }
}

/// Parses the `--url` values (each may itself be a comma-separated list, as
/// `FLOODGATE_LOAD_URL` is). Blank entries are skipped; the same server given
/// twice is refused, since its counters would be summed twice.
pub fn parse_targets<S: AsRef<str>>(urls: &[S]) -> Result<Vec<Target>, String> {
    let mut targets: Vec<Target> = Vec::new();
    for url in urls
        .iter()
        .flat_map(|u| u.as_ref().split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        let target = Target::parse(url)?;
        if let Some(same) = targets.iter().find(|t| {
            t.host.eq_ignore_ascii_case(&target.host)
                && t.port == target.port
                && t.prefix == target.prefix
        }) {
            return Err(format!(
                "`{}` and `{}` are the same target; give each server once",
                same.base, target.base
            ));
        }
        targets.push(target);
    }
    if targets.is_empty() {
        return Err("no --url given".into());
    }
    Ok(targets)
}

/// Resolves `host:port` and returns the first address that accepts a TCP
/// connection (so `localhost` works whether the server listens on IPv4 or IPv6).
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_error = format!("{host} resolved to no address");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(addr),
            Ok(Err(e)) => last_error = format!("cannot connect to {addr}: {e}"),
            Err(_) => last_error = format!("cannot connect to {addr}: timed out after {timeout:?}"),
        }
    }
    Err(last_error)
}

/// How each request's body is made.
#[derive(Debug, Clone)]
pub enum BodySpec {
    Empty,
    Fixed(Bytes),
    /// `{"number": n}` with `n` uniform in the range.
    Number(NumberRange),
}

/// Everything needed to build the requests of one scenario.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub protocol: Protocol,
    pub method: Method,
    pub uri: Uri,
    pub host: HeaderValue,
    pub body: BodySpec,
    /// Sent with every request (`--header`); a name given twice sends the last value.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// HTTP/1.1: what every request starts with (request line, `Host`,
    /// `Content-Type` and the extra headers), made once.
    http1_head: Vec<u8>,
    /// An extra header sets `X-Request-ID` (no fresh one is made).
    own_request_id: bool,
    /// HTTP/2 REST: the absolute URI (`:scheme`, `:authority`, `:path`).
    absolute: Option<Uri>,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
static TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

impl RequestTemplate {
    pub fn new(
        protocol: Protocol,
        method: Method,
        uri: Uri,
        host: HeaderValue,
        body: BodySpec,
        headers: Vec<(http::HeaderName, HeaderValue)>,
    ) -> Self {
        let mut head = Vec::with_capacity(256);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        for part in [method.as_str(), " ", target, " HTTP/1.1\r\n"] {
            head.extend_from_slice(part.as_bytes());
        }
        write_headers(
            &mut head,
            &[(HOST, host.as_bytes()), (CONTENT_TYPE, JSON.as_bytes())],
            &headers,
        );
        let own_request_id = headers.iter().any(|(name, _)| name == X_REQUEST_ID);
        RequestTemplate {
            protocol,
            method,
            uri,
            host,
            body,
            headers,
            http1_head: head,
            own_request_id,
            absolute: None,
        }
    }

    /// For HTTP/2 REST: requests carry `https` (`tls`) or `http` and the
    /// `Host` value as their `:scheme` and `:authority`.
    pub fn with_scheme(mut self, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        self.absolute = format!(
            "{scheme}://{}{}",
            self.host.to_str().unwrap_or_default(),
            self.uri.path_and_query().map_or("/", |p| p.as_str())
        )
        .parse()
        .ok();
        self
    }

    /// The URI of `GET {template path}/{id}`: how a job submitted to the
    /// template's path is polled.
    pub fn poll_uri(&self, id: &str) -> Result<Uri, String> {
        format!("{}/{id}", self.uri.path())
            .parse()
            .map_err(|_| format!("`{id}` cannot be part of a path"))
    }

    /// A request with a fresh `X-Request-ID` and, for [`BodySpec::Number`], a
    /// fresh number.
    pub fn build(&self, rng: &mut fastrand::Rng) -> Request<Full<Bytes>> {
        let body = match &self.body {
            BodySpec::Empty => Bytes::new(),
            BodySpec::Fixed(b) => b.clone(),
            BodySpec::Number(range) => {
                let n = rng.u64(range.lo..=range.hi);
                match self.protocol {
                    Protocol::Http1 | Protocol::Http2 => number_body(n),
                    Protocol::Grpc => grpc_number_message(n),
                }
            }
        };
        self.build_with(rng, body)
    }

    /// The template's request with `body` instead of the template's own.
    pub fn build_with(&self, rng: &mut fastrand::Rng, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        match (self.protocol, &self.absolute) {
            // `:authority` stands for Host.
            (Protocol::Http2, Some(absolute)) => *req.uri_mut() = absolute.clone(),
            _ => {
                *req.uri_mut() = self.uri.clone();
                req.headers_mut().insert(HOST, self.host.clone());
            }
        }
        let headers = req.headers_mut();
        match self.protocol {
            Protocol::Http1 | Protocol::Http2 => {
                headers.insert(CONTENT_TYPE, JSON.clone());
            }
            Protocol::Grpc => {
                headers.insert(CONTENT_TYPE, GRPC.clone());
                headers.insert(http::header::TE, TRAILERS.clone());
            }
        }
        headers.insert("x-request-id", request_id(rng));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        req
    }

    /// `GET {uri}` (see [`RequestTemplate::poll_uri`]) with a fresh
    /// `X-Request-ID` and the extra headers.
    pub fn build_get(&self, rng: &mut fastrand::Rng, uri: &Uri) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        match (self.protocol, &self.absolute) {
            (Protocol::Http2, Some(absolute)) => {
                let mut parts = absolute.clone().into_parts();
                parts.path_and_query = uri.path_and_query().cloned();
                *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| uri.clone());
            }
            _ => {
                *req.uri_mut() = uri.clone();
                req.headers_mut().insert(HOST, self.host.clone());
            }
        }
        let headers = req.headers_mut();
        headers.insert(http::header::ACCEPT, JSON.clone());
        headers.insert("x-request-id", request_id(rng));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        req
    }
}

static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Writes `defaults` (those no extra header replaces), then `extra` (the
/// last of each name), as `name: value` lines.
fn write_headers(
    out: &mut Vec<u8>,
    defaults: &[(http::HeaderName, &[u8])],
    extra: &[(http::HeaderName, HeaderValue)],
) {
    let line = |out: &mut Vec<u8>, name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in defaults {
        if !extra.iter().any(|(n, _)| n == name) {
            line(out, name.as_str(), value);
        }
    }
    for (i, (name, value)) in extra.iter().enumerate() {
        if !extra[i + 1..].iter().any(|(n, _)| n == name) {
            line(out, name.as_str(), value.as_bytes());
        }
    }
}

/// One request of the load, made for its connection when it is sent.
#[derive(Debug, Clone, Copy)]
pub enum Req<'a> {
    /// The template's request: a fresh `X-Request-ID` and, for
    /// [`BodySpec::Number`], a fresh number.
    Template(&'a RequestTemplate),
    /// The template's request with this body.
    Body(&'a RequestTemplate, &'a Bytes),
    /// `GET` of this URI with the template's host and extra headers,
    /// accepting JSON (a job's poll).
    Get(&'a RequestTemplate, &'a Uri),
}

impl Req<'_> {
    /// As a request for hyper.
    fn to_http(self, rng: &mut fastrand::Rng) -> Request<Full<Bytes>> {
        match self {
            Req::Template(t) => t.build(rng),
            Req::Body(t, body) => t.build_with(rng, body.clone()),
            Req::Get(t, uri) => t.build_get(rng, uri),
        }
    }

    /// The protocol of its template.
    pub fn protocol(self) -> Protocol {
        match self {
            Req::Template(t) | Req::Body(t, _) | Req::Get(t, _) => t.protocol,
        }
    }

    /// Whether no body comes back (a HEAD request).
    fn is_head(self) -> bool {
        matches!(self, Req::Template(t) | Req::Body(t, _) if t.method == Method::HEAD)
    }

    /// Writes the request as HTTP/1.1 into `out`: what hyper would send for
    /// [`Req::to_http`]'s request, with the same headers.
    pub fn encode_http1(self, rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
        let (t, method) = match self {
            Req::Template(t) | Req::Body(t, _) => {
                out.extend_from_slice(&t.http1_head);
                (t, &t.method)
            }
            Req::Get(t, uri) => {
                let target = uri.path_and_query().map_or("/", |p| p.as_str());
                for part in ["GET ", target, " HTTP/1.1\r\n"] {
                    out.extend_from_slice(part.as_bytes());
                }
                write_headers(
                    out,
                    &[
                        (HOST, t.host.as_bytes()),
                        (http::header::ACCEPT, JSON.as_bytes()),
                    ],
                    &t.headers,
                );
                (t, &Method::GET)
            }
        };
        if !t.own_request_id {
            out.extend_from_slice(b"x-request-id: ");
            let id = uuid::Builder::from_random_bytes(rng.u128(..).to_ne_bytes()).into_uuid();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let body: &[u8] = match self {
            Req::Get(..) => b"",
            Req::Body(_, body) => body,
            Req::Template(t) => match &t.body {
                BodySpec::Empty => b"",
                BodySpec::Fixed(body) => body,
                BodySpec::Number(range) => {
                    // `{"number": n}`, written in place.
                    let mut digits = itoa::Buffer::new();
                    let digits = digits.format(rng.u64(range.lo..=range.hi));
                    content_length(out, 12 + digits.len());
                    out.extend_from_slice(b"\r\n{\"number\": ");
                    out.extend_from_slice(digits.as_bytes());
                    out.push(b'}');
                    return;
                }
            },
        };
        if !body.is_empty()
            || *method == Method::POST
            || *method == Method::PUT
            || *method == Method::PATCH
        {
            content_length(out, body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
}

fn content_length(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `{"number": n}`.
pub fn number_body(n: u64) -> Bytes {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    let mut body = BytesMut::with_capacity(12 + digits.len());
    body.extend_from_slice(b"{\"number\": ");
    body.extend_from_slice(digits.as_bytes());
    body.extend_from_slice(b"}");
    body.freeze()
}

/// `floodgate.v1.ComputeRequest { number: n }` in a gRPC frame (uncompressed, 4-byte
/// length): field 1 as a varint. Written by hand: one integer field does not warrant a
/// protobuf code generator in the load client.
pub fn grpc_number_message(n: u64) -> Bytes {
    let mut message = Vec::with_capacity(11);
    if n != 0 {
        message.push(0x08); // field 1, wire type 0 (varint)
        let mut v = n;
        while v >= 0x80 {
            message.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        message.push(v as u8);
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame.freeze()
}

/// The gRPC status code's name (`RESOURCE_EXHAUSTED`), reported as the error code.
pub fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The HTTP status the REST API answers for the same case, so a gRPC run's status table
/// reads like a REST run's (the gRPC code itself is the error code).
pub fn grpc_http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        3 | 11 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        6 | 9 | 10 => 409,
        4 => 408,
        8 => 429,
        12 => 501,
        14 => 503,
        1 => 499,
        _ => 500,
    }
}

/// A random UUIDv4 as a header value.
pub fn request_id(rng: &mut fastrand::Rng) -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rng.u128(..).to_ne_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let s = id.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("a UUID is a valid header value")
}

/// One keep-alive connection.
pub struct Conn {
    kind: ConnKind,
    /// How long opening it took: taken, once, by the phase that first uses it.
    setup: Option<Setup>,
}

enum ConnKind {
    Http1(H1Conn),
    /// HTTP/2 with one stream at a time, its connection future polled by
    /// the worker's own task.
    H2Driven {
        sender: http2::SendRequest<Full<Bytes>>,
        /// The connection future; `None` once it has finished.
        io: Option<Pin<Box<Http2Future>>>,
    },
    /// HTTP/2 whose connection runs in a task of its own; the workers of its
    /// streams each hold a copy ([`Conn::share`]).
    H2Shared {
        sender: http2::SendRequest<Full<Bytes>>,
    },
}

impl Conn {
    /// Opens a connection to `endpoint` (TCP_NODELAY set; TLS when the
    /// endpoint says so), with the HTTP/2 handshake for HTTP/2. With `shared`
    /// an HTTP/2 connection runs in a task of its own, so that several
    /// workers can share it.
    pub async fn connect(
        endpoint: &Endpoint,
        protocol: Protocol,
        shared: bool,
    ) -> std::io::Result<Conn> {
        let (stream, setup) = crate::net::open(endpoint).await?;
        let kind = if protocol.is_h2() {
            if endpoint.tls.is_some() && !stream.is_h2() {
                return Err(std::io::Error::other(
                    "the server did not agree to HTTP/2 by ALPN",
                ));
            }
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
            if shared {
                tokio::spawn(conn);
                ConnKind::H2Shared { sender }
            } else {
                ConnKind::H2Driven {
                    sender,
                    io: Some(Box::pin(conn)),
                }
            }
        } else {
            ConnKind::Http1(H1Conn::new(stream))
        };
        Ok(Conn {
            kind,
            setup: Some(setup),
        })
    }

    /// A copy of a shared HTTP/2 connection, for another worker; `None` for
    /// the other kinds.
    pub fn share(&self) -> Option<Conn> {
        match &self.kind {
            ConnKind::H2Shared { sender } => Some(Conn {
                kind: ConnKind::H2Shared {
                    sender: sender.clone(),
                },
                setup: None,
            }),
            _ => None,
        }
    }

    /// How long opening it took, the first time it is asked.
    pub fn take_setup(&mut self) -> Option<Setup> {
        self.setup.take()
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        match &self.kind {
            ConnKind::Http1(c) => c.is_open(),
            ConnKind::H2Driven { sender, io } => io.is_some() && !sender.is_closed(),
            ConnKind::H2Shared { sender } => !sender.is_closed(),
        }
    }

    /// Waits until the connection can take a request; `false` if it closed
    /// meanwhile (the server ended the keep-alive connection).
    pub async fn ready(&mut self) -> bool {
        match &mut self.kind {
            ConnKind::Http1(c) => !c.closed_while_idle().await,
            ConnKind::H2Driven { sender, io } => {
                if io.is_none() || sender.is_closed() {
                    return false;
                }
                if sender.is_ready() {
                    return true;
                }
                drive(io, sender.ready()).await.is_ok() && io.is_some()
            }
            ConnKind::H2Shared { sender } => !sender.is_closed(),
        }
    }

    /// Sends `req` and reads the whole response. The body is kept for non-2xx
    /// responses (to find the error code), and for 2xx ones if `keep_success`.
    pub async fn exchange(
        &mut self,
        req: Req<'_>,
        rng: &mut fastrand::Rng,
        keep_success: bool,
    ) -> Result<Answer, TransportError> {
        let mut not_driven: Option<Pin<Box<Http2Future>>> = None;
        let (sender, io) = match &mut self.kind {
            ConnKind::Http1(c) => {
                req.encode_http1(rng, c.request());
                let keep = |status: u16| keep_success || !(200..300).contains(&status);
                let response = c
                    .exchange(req.is_head(), keep, MAX_KEPT_BODY)
                    .await
                    .map_err(|_| TransportError::Io)?;
                return Ok(Answer {
                    status: response.status,
                    body: response.body,
                    grpc: None,
                });
            }
            ConnKind::H2Driven { sender, io } => (sender, io),
            ConnKind::H2Shared { sender } => (sender, &mut not_driven),
        };
        let failed = |e: hyper::Error| {
            if e.is_timeout() {
                TransportError::Timeout
            } else {
                TransportError::Io
            }
        };
        let response = drive(io, sender.send_request(req.to_http(rng)))
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        if req.protocol() != Protocol::Grpc {
            let keep = keep_success || !(200..300).contains(&status);
            let (body, _) = drive(io, read_body(response.into_body(), keep))
                .await
                .map_err(failed)?;
            return Ok(Answer {
                status,
                body,
                grpc: None,
            });
        }
        // A trailers-only answer (an error before any message) has its status in the
        // headers; otherwise it is in the trailers.
        let in_headers = grpc_status(response.headers());
        let (body, in_trailers) = drive(io, read_body(response.into_body(), keep_success))
            .await
            .map_err(failed)?;
        let code = in_headers.or(in_trailers);
        Ok(Answer {
            status: match code {
                Some(code) if status == 200 => grpc_http_status(code),
                _ if status == 200 => 500, // no status at all: a broken answer
                _ => status,
            },
            body,
            grpc: code,
        })
    }
}

/// One HTTP/2 connection whose streams several workers share: when it
/// fails, the first of them to notice opens its replacement and the others
/// take copies of that one.
pub struct SharedConn {
    endpoint: Endpoint,
    protocol: Protocol,
    /// The connection and its generation (how many times it was replaced).
    current: tokio::sync::Mutex<(u64, Option<Conn>)>,
}

impl SharedConn {
    pub fn new(endpoint: Endpoint, protocol: Protocol, conn: Option<Conn>) -> SharedConn {
        SharedConn {
            endpoint,
            protocol,
            current: tokio::sync::Mutex::new((0, conn)),
        }
    }

    /// A copy of the connection for a worker, before the phase starts; the
    /// first copy carries its set-up time.
    pub fn copy_now(&self) -> Option<Conn> {
        let mut current = self.current.try_lock().ok()?;
        let master = current.1.as_mut()?;
        let mut copy = master.share()?;
        copy.setup = master.take_setup();
        Some(copy)
    }

    /// A copy of a working connection, for a worker whose copy of generation
    /// `seen` failed: the current one if it is newer and open, else a new one.
    async fn renew(&self, seen: u64) -> std::io::Result<(u64, Conn)> {
        let mut current = self.current.lock().await;
        let usable = current.1.as_ref().is_some_and(Conn::is_open);
        if current.0 != seen && usable {
            let copy = current.1.as_ref().and_then(Conn::share);
            if let Some(copy) = copy {
                return Ok((current.0, copy));
            }
        }
        let mut conn = Conn::connect(&self.endpoint, self.protocol, true).await?;
        let mut copy = conn.share().expect("a shared HTTP/2 connection");
        copy.setup = conn.take_setup();
        *current = (current.0 + 1, Some(conn));
        Ok((current.0, copy))
    }

    /// The connection, to keep for the next phase.
    pub fn take(&self) -> Option<Conn> {
        self.current.try_lock().ok()?.1.take()
    }
}

/// Polls the connection future alongside `fut` until `fut` completes.
async fn drive<C, F>(io: &mut Option<C>, fut: F) -> F::Output
where
    C: Future<Output = Result<(), hyper::Error>> + Unpin,
    F: Future,
{
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Some(conn) = io.as_mut() {
            if Pin::new(conn).poll(cx).is_ready() {
                // Dropping the connection fails any request still queued on it,
                // so `fut` resolves with an error instead of hanging.
                *io = None;
            }
        }
        fut.as_mut().poll(cx)
    })
    .await
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The body (kept when asked for, up to [`MAX_KEPT_BODY`]) and the gRPC
/// status from the trailers, if any.
async fn read_body(mut body: Incoming, keep: bool) -> Result<(Bytes, Option<u32>), hyper::Error> {
    let mut kept = BytesMut::new();
    let mut code = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(trailers) = frame.trailers_ref() {
            code = grpc_status(trailers);
        } else if let Ok(data) = frame.into_data() {
            if keep && kept.len() < MAX_KEPT_BODY {
                let room = MAX_KEPT_BODY - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    }
    Ok((kept.freeze(), code))
}

/// An HTTP response: status and, for non-2xx (or when asked for), the
/// (truncated) body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// The gRPC status code of a gRPC call.
    pub grpc: Option<u32>,
}

impl Answer {
    /// The error code to count for a non-2xx answer: the gRPC code's name, or the JSON
    /// envelope's `code`.
    pub fn error_code(&self) -> Option<String> {
        match self.grpc {
            Some(code) => Some(grpc_code_name(code).to_owned()),
            None => error_code(&self.body),
        }
    }
}

/// The JSON `code` of an error body, if any.
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        code: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Envelope>(body).ok()?.code? {
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Outcome of one request.
pub enum Outcome {
    Answer(Answer),
    Failed(TransportError),
}

/// A worker's connection slot: connects lazily and reconnects after errors.
pub struct Slot {
    endpoint: Endpoint,
    protocol: Protocol,
    conn: Option<Conn>,
    /// The HTTP/2 connection this worker shares with others, and the
    /// generation its copy in `conn` is of.
    shared: Option<(std::sync::Arc<SharedConn>, u64)>,
}

impl Slot {
    pub fn new(endpoint: Endpoint, protocol: Protocol, conn: Option<Conn>) -> Self {
        Self {
            endpoint,
            protocol,
            conn,
            shared: None,
        }
    }

    /// A slot for one of the streams of `shared`.
    pub fn sharing(shared: std::sync::Arc<SharedConn>) -> Self {
        let conn = shared.copy_now();
        Self {
            endpoint: shared.endpoint.clone(),
            protocol: shared.protocol,
            conn,
            shared: Some((shared, 0)),
        }
    }

    /// The connection to keep for the next phase; `None` for a shared one
    /// (its [`SharedConn`] keeps it).
    pub fn into_conn(self) -> Option<Conn> {
        match self.shared {
            Some(_) => None,
            None => self.conn,
        }
    }

    /// How long opening its connection took, when it was opened since this
    /// was last asked (and the connection is this slot's to report).
    pub fn take_setup(&mut self) -> Option<Setup> {
        self.conn.as_mut()?.take_setup()
    }

    /// Executes one request within `deadline` (connecting first if needed);
    /// `keep_success` keeps the body of a 2xx answer too.
    pub async fn execute(
        &mut self,
        req: Req<'_>,
        rng: &mut fastrand::Rng,
        timeout: Pin<&mut tokio::time::Sleep>,
        keep_success: bool,
    ) -> Outcome {
        let attempt = async {
            // A connection the server closed while idle is replaced without
            // counting an error: no request was sent on it.
            if let Some(conn) = self.conn.as_mut() {
                if !conn.ready().await {
                    self.conn = None;
                }
            }
            if self.conn.is_none() {
                let connected = match &mut self.shared {
                    Some((shared, generation)) => {
                        shared.renew(*generation).await.map(|(renewed, conn)| {
                            *generation = renewed;
                            conn
                        })
                    }
                    None => Conn::connect(&self.endpoint, self.protocol, false).await,
                };
                match connected {
                    Ok(c) => self.conn = Some(c),
                    Err(_) => return Outcome::Failed(TransportError::Connect),
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            match conn.exchange(req, rng, keep_success).await {
                Ok(answer) => Outcome::Answer(answer),
                Err(kind) => {
                    // An HTTP/2 stream can fail while its connection carries on.
                    if !conn.is_open() {
                        self.conn = None;
                    }
                    Outcome::Failed(kind)
                }
            }
        };
        let result = {
            let attempt = pin!(attempt);
            WithDeadline {
                fut: attempt,
                deadline: timeout,
                armed: false,
            }
            .await
        };
        match result {
            Some(outcome) => outcome,
            None => {
                // An HTTP/1.1 connection is mid-request: it cannot be reused.
                // An HTTP/2 stream dropped is reset; its connection carries on.
                if !self.protocol.is_h2() {
                    self.conn = None;
                }
                Outcome::Failed(TransportError::Timeout)
            }
        }
    }
}

/// Runs `fut` until it completes (`Some`) or `deadline` passes (`None`).
///
/// Unlike `tokio::time::timeout`, the timer is polled once per request (to
/// register the task's waker) and afterwards only checked with
/// `is_elapsed`: a request's future is polled several times, and polling the
/// timer each time costs a waker clone and atomic operations per poll. All
/// polls of a task carry the same task waker, so one registration suffices.
struct WithDeadline<'a, F> {
    fut: Pin<&'a mut F>,
    deadline: Pin<&'a mut tokio::time::Sleep>,
    armed: bool,
}

impl<F: Future> Future for WithDeadline<'_, F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        if let std::task::Poll::Ready(out) = this.fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(out));
        }
        let elapsed = if this.armed {
            this.deadline.is_elapsed()
        } else {
            this.armed = true;
            this.deadline.as_mut().poll(cx).is_ready()
        };
        if elapsed {
            std::task::Poll::Ready(None)
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A one-off request on a connection of its own, over HTTP/1.1 (TLS for a
/// TLS endpoint): the health check, `/metrics`, a live-metrics push.
pub async fn send(
    endpoint: &Endpoint,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, String> {
    let what = format!("{} {}", req.method(), req.uri().path());
    let attempt = async {
        let (stream, _) = crate::net::open(endpoint)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", endpoint.addr))?;
        let (mut sender, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", endpoint.addr))?;
        // The connection runs apart, so that when it fails (a TLS alert: the
        // server refused the handshake) its error can be told.
        let mut conn = tokio::spawn(conn);
        let answer = async {
            let response = sender.send_request(req).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Answer {
                status,
                body,
                grpc: None,
            })
        }
        .await;
        match answer {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let cause = match tokio::time::timeout(Duration::from_secs(1), &mut conn).await {
                    Ok(Ok(Err(conn_error))) => describe_hyper_error(&conn_error),
                    _ => describe_hyper_error(&e),
                };
                conn.abort();
                Err(format!("{what}: {cause}"))
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no answer within {timeout:?}")))
}

/// A hyper error, with the TLS reason (and what to do about it) when an I/O
/// error of TLS is its cause.
fn describe_hyper_error(e: &hyper::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{e}: {}", crate::tls::describe_error(io));
        }
        source = cause.source();
    }
    e.to_string()
}

/// `GET path` accepting JSON, for the health check and /metrics.
pub async fn get(
    endpoint: &Endpoint,
    host: &HeaderValue,
    path: &str,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = path
        .parse()
        .map_err(|e| format!("invalid path {path}: {e}"))?;
    req.headers_mut().insert(HOST, host.clone());
    req.headers_mut().insert(http::header::ACCEPT, JSON.clone());
    send(endpoint, req, timeout).await
}

/// What a TLS handshake with `endpoint` agrees on: made before any load, so
/// that a certificate the client does not trust (or a server that does not
/// speak the HTTP version asked for) stops the run with a clear error.
pub async fn tls_session(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Option<TlsSession>, String> {
    let (stream, _) = tokio::time::timeout(timeout, crate::net::open(endpoint))
        .await
        .map_err(|_| format!("no TLS handshake within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(stream.session())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let url = |tls, host: &str, port, prefix: &str| {
            Ok(BaseUrl {
                tls,
                host: host.into(),
                port,
                prefix: prefix.into(),
            })
        };
        assert_eq!(
            parse_base_url("http://localhost:8080"),
            url(false, "localhost", 8080, "")
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1"),
            url(false, "127.0.0.1", 80, "")
        );
        assert_eq!(
            parse_base_url("http://h:1/base/"),
            url(false, "h", 1, "/base")
        );
        assert_eq!(parse_base_url("http://[::1]:9"), url(false, "::1", 9, ""));
        assert_eq!(parse_base_url("https://h"), url(true, "h", 443, ""));
        assert_eq!(
            parse_base_url("https://h:8443/p"),
            url(true, "h", 8443, "/p")
        );
        assert!(parse_base_url("ftp://h")
            .unwrap_err()
            .contains("only http and https"));
        assert!(parse_base_url("localhost:8080").is_err());
        assert!(parse_base_url("http://h/?q=1").is_err());
        let t = Target::parse("https://h:8443/p").unwrap();
        assert_eq!(t.url("/x"), "https://h:8443/p/x");
    }

    #[test]
    fn targets_from_several_urls() {
        let t = parse_targets(&["http://a:1/", "http://b:2/base, http://[::1]:3"]).unwrap();
        let bases: Vec<&str> = t.iter().map(|t| t.base.as_str()).collect();
        assert_eq!(bases, ["http://a:1", "http://b:2/base", "http://[::1]:3"]);
        assert_eq!(t[1].url("/x"), "http://b:2/base/x");
        assert_eq!(t[1].path("/metrics"), "/base/metrics");
        assert_eq!(t[2].authority, "[::1]:3");
        assert_eq!(t[2].host_header(), "[::1]:3");
        assert_eq!(parse_targets(&["http://a:1,,"]).unwrap().len(), 1);
        assert!(parse_targets(&["http://a:1", "http://A:1/"])
            .unwrap_err()
            .contains("same target"));
        assert_eq!(
            parse_targets(&["http://a:1", "http://a:1/other"])
                .unwrap()
                .len(),
            2
        );
        assert!(parse_targets(&[" , "]).is_err());
        assert!(parse_targets(&["http://a:1", "ftp://b"])
            .unwrap_err()
            .contains("only http and https"));
    }

    #[test]
    fn bodies_and_ids() {
        assert_eq!(&number_body(0)[..], b"{\"number\": 0}");
        assert_eq!(&number_body(1_000_000)[..], b"{\"number\": 1000000}");
        let mut rng = fastrand::Rng::with_seed(7);
        let a = request_id(&mut rng);
        let b = request_id(&mut rng);
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'4', "version 4: {s}");
    }

    #[test]
    fn grpc_messages_are_framed_protobuf() {
        // Checked against prost's encoding of floodgate.v1.ComputeRequest.
        assert_eq!(&grpc_number_message(0)[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&grpc_number_message(1)[..], &[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(
            &grpc_number_message(300)[..],
            &[0, 0, 0, 0, 3, 0x08, 0xac, 0x02]
        );
        assert_eq!(grpc_number_message(1_000_000).len(), 5 + 4);
        assert_eq!(grpc_code_name(8), "RESOURCE_EXHAUSTED");
        assert_eq!(grpc_http_status(8), 429);
        assert_eq!(grpc_http_status(14), 503);
    }

    #[test]
    fn requests_carry_json_type_id_and_a_valid_number() {
        let t = RequestTemplate::new(
            Protocol::Http1,
            Method::POST,
            Uri::from_static("/api/v1/compute/fast"),
            HeaderValue::from_static("localhost:8080"),
            BodySpec::Number(NumberRange { lo: 5, hi: 9 }),
            vec![(
                http::HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("k"),
            )],
        );
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let req = t.build(&mut rng);
            assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
            assert_eq!(req.headers()[HOST], "localhost:8080");
            assert!(req.headers().contains_key("x-request-id"));
            assert_eq!(req.headers()["x-api-key"], "k");
            let body = futures_body(req.into_body());
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let n = v["number"].as_u64().unwrap();
            assert!((5..=9).contains(&n));
        }
    }

    /// Parses an HTTP/1.1 request: method, target, headers (lower-case names), body.
    fn parse_request(raw: &[u8]) -> (String, String, Vec<(String, String)>, Vec<u8>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(raw).unwrap() else {
            panic!("incomplete request")
        };
        let headers = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (
            req.method.unwrap().to_owned(),
            req.path.unwrap().to_owned(),
            headers,
            raw[len..].to_vec(),
        )
    }

    #[test]
    fn http1_requests_carry_what_hypers_would() {
        let extra = |name: &'static str, value: &'static str| {
            (
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        };
        let t = RequestTemplate::new(
            Protocol::Http1,
            Method::POST,
            Uri::from_static("/api/v2/jobs"),
            HeaderValue::from_static("h:1"),
            BodySpec::Number(NumberRange { lo: 7, hi: 7 }),
            vec![extra("x-api-key", "a"), extra("x-api-key", "b")],
        );
        let mut rng = fastrand::Rng::with_seed(3);
        let mut out = Vec::new();
        Req::Template(&t).encode_http1(&mut rng, &mut out);
        let (method, path, headers, body) = parse_request(&out);
        assert_eq!((method.as_str(), path.as_str()), ("POST", "/api/v2/jobs"));
        assert_eq!(body, b"{\"number\": 7}");
        let names: Vec<&str> = headers.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "content-type",
                "x-api-key",
                "x-request-id",
                "content-length"
            ]
        );
        assert_eq!(headers[0].1, "h:1");
        assert_eq!(headers[1].1, "application/json");
        assert_eq!(headers[2].1, "b", "the last value of a name given twice");
        assert_eq!(headers[3].1.len(), 36);
        assert_eq!(headers[4].1, "13");
        // hyper's request for the same template has the same headers.
        let req = t.build(&mut rng);
        for (name, value) in &headers {
            if name != "x-request-id" && name != "content-length" {
                assert_eq!(req.headers()[name.as_str()], value.as_str(), "{name}");
            }
        }
        assert_eq!(req.headers().len() + 1, headers.len());

        // A job's body and a poll; an extra header may replace a default one.
        let t = RequestTemplate::new(
            Protocol::Http1,
            Method::POST,
            Uri::from_static("/base/api/v2/jobs"),
            HeaderValue::from_static("h:1"),
            BodySpec::Empty,
            vec![extra("host", "other"), extra("x-request-id", "mine")],
        );
        out.clear();
        Req::Body(&t, &Bytes::from_static(b"{}")).encode_http1(&mut rng, &mut out);
        let (_, _, headers, body) = parse_request(&out);
        assert_eq!(body, b"{}");
        assert_eq!(
            headers,
            [
                ("content-type".into(), "application/json".into()),
                ("host".into(), "other".into()),
                ("x-request-id".into(), "mine".into()),
                ("content-length".into(), "2".into()),
            ]
        );
        let uri = t.poll_uri("0197-ab").unwrap();
        assert!(t.poll_uri("a b").is_err());
        out.clear();
        Req::Get(&t, &uri).encode_http1(&mut rng, &mut out);
        let (method, path, headers, body) = parse_request(&out);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("GET", "/base/api/v2/jobs/0197-ab")
        );
        assert!(body.is_empty());
        let names: Vec<&str> = headers.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(names, ["accept", "host", "x-request-id"]);
        // GET and DELETE without a body send no Content-Length; POST sends 0.
        for (method, length) in [(Method::GET, None), (Method::POST, Some("0"))] {
            let t = RequestTemplate::new(
                Protocol::Http1,
                method,
                Uri::from_static("/"),
                HeaderValue::from_static("h"),
                BodySpec::Empty,
                Vec::new(),
            );
            out.clear();
            Req::Template(&t).encode_http1(&mut rng, &mut out);
            let (_, _, headers, _) = parse_request(&out);
            let found = headers.iter().find(|h| h.0 == "content-length");
            assert_eq!(found.map(|h| h.1.as_str()), length);
        }
    }

    fn futures_body(body: Full<Bytes>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(body.collect()).unwrap().to_bytes()
    }

    #[test]
    fn error_codes_from_bodies() {
        let body =
            br#"{"request_id":"x","error":"slow down","code":"RATE_LIMIT_EXCEEDED","timestamp":1}"#;
        assert_eq!(error_code(body).as_deref(), Some("RATE_LIMIT_EXCEEDED"));
        assert_eq!(error_code(br#"{"code":429}"#).as_deref(), Some("429"));
        assert_eq!(error_code(b"<html>oops</html>"), None);
        assert_eq!(error_code(br#"{"error":"no code"}"#), None);
        assert_eq!(error_code(b""), None);
    }
}
