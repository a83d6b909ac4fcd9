//! Reference server for `scripts/bench.sh` and `scripts/bench-load-client.sh`: bare hyper 1,
//! a fixed 13-byte body on any path.
//!
//! No routing, no middleware, no logging, no JSON: the ceiling for an HTTP/1.1 server on this
//! runtime and this machine. Multi-threaded tokio runtime and `TCP_NODELAY`, like floodgate;
//! `TOKIO_WORKER_THREADS=1` gives it a single worker (bench-load-client.sh, where the server
//! has one core to itself and must not be the bottleneck).
//!
//! Listens on `SERVER_PORT` (`host:port`, default `127.0.0.1:18181`; port 0 picks a free one)
//! and prints `listening on <addr>` once bound.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8; 13] = b"Hello, World!";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("SERVER_PORT").unwrap_or_else(|_| "127.0.0.1:18181".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async {
                // Read the request body (the POST cases send one) so the connection stays reusable.
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
