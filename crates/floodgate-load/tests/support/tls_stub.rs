//! A TLS server that requires a client certificate (mutual TLS), as a gateway in front of a
//! service may: it answers `GET /health` and any other request with 200 and counts the
//! requests, each on a connection whose client certificate it verified. floodgate itself does
//! not ask for client certificates, so mutual TLS is tested against this. Shared by the load
//! client's test binaries.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::pki::{Ca, Leaf};

/// Requests answered, and handshakes refused.
#[derive(Default)]
pub struct MtlsCounts {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
}

#[allow(deprecated)]
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// Starts the server on 127.0.0.1:0 with the certificate `server`, trusting client
/// certificates signed by `client_ca`; returns its `https://127.0.0.1:PORT` URL.
pub async fn spawn_mtls_stub(server: &Leaf, client_ca: &Ca) -> (String, Arc<MtlsCounts>) {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&client_ca.pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&server.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&server.key).unwrap();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let counts = Arc::new(MtlsCounts::default());
    let counting = counts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counts) = (acceptor.clone(), counting.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(_) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                assert!(
                    tls.get_ref().1.peer_certificates().is_some(),
                    "a verified client certificate"
                );
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counts = counts.clone();
                    async move {
                        let health = req.uri().path() == "/health";
                        let _ = req.into_body().collect().await;
                        if !health {
                            counts.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, counts)
}
