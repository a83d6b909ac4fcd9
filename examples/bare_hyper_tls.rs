//! Reference server for `scripts/bench-load-client.sh`'s HTTPS case: bare hyper 1 behind
//! rustls (ring, like floodgate), HTTP/2 or HTTP/1.1 as agreed by ALPN, a fixed 13-byte body
//! on any path: the ceiling for a TLS server on this runtime and this machine, against which
//! floodgate-load `--http2 --streams N` and h2load drive the same connections and streams.
//!
//! Makes its own certificate authority and a certificate for `localhost` and `127.0.0.1`
//! signed by it at start (rcgen), and writes the authority's certificate (PEM) to
//! `TLS_CA_OUT` (default `bare_hyper_tls_ca.pem` in the temporary directory) for the
//! clients' `--cacert`. Listens on `SERVER_PORT` (`host:port`, default `127.0.0.1:18182`;
//! port 0 picks a free one) and prints `listening on <addr>` once bound.
//! `TOKIO_WORKER_THREADS=1` gives it a single worker, as in `bare_hyper`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

const BODY: &[u8; 13] = b"Hello, World!";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A new authority's certificate (PEM) and a server certificate chain and key it signed.
fn certificates() -> Result<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BoxError>
{
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "bare_hyper_tls CA");
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        issuer.pem(),
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let addr = std::env::var("SERVER_PORT").unwrap_or_else(|_| "127.0.0.1:18182".to_owned());
    let ca_out = std::env::var_os("TLS_CA_OUT").map_or_else(
        || std::env::temp_dir().join("bare_hyper_tls_ca.pem"),
        Into::into,
    );
    let (ca_pem, chain, key) = certificates()?;
    std::fs::write(&ca_out, ca_pem)?;
    // *ring*, as floodgate (src/transport/tls.rs says why, and why it is deprecated).
    #[allow(deprecated)]
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

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
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(|req: Request<hyper::body::Incoming>| async {
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            // The protocol ALPN agreed; HTTP/1.1 when none.
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}
