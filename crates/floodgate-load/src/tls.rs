//! TLS for `https://` targets: rustls with the *ring* provider (as floodgate's
//! server uses), the system's trusted CAs or `--cacert`, SNI from the URL's
//! host, ALPN offering the HTTP version asked for, and a client certificate
//! for mutual TLS (`--cert`, `--key`). `--insecure` skips the server
//! certificate check (but not the handshake's signatures).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore,
    SignatureScheme,
};
use tokio_rustls::TlsConnector;

/// The cryptography: *ring*, as the server's (see floodgate's `transport::tls`).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// What the command line says about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust only the CA certificates of this PEM file (instead of the system's).
    pub cacert: Option<PathBuf>,
    /// Do not check the server's certificate.
    pub insecure: bool,
    /// Client certificate chain (PEM) and its key, for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// ALPN protocol names.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The client configurations of a run: one offering HTTP/1.1, one HTTP/2.
#[derive(Clone)]
pub struct TlsClient {
    http1: TlsConnector,
    http2: TlsConnector,
    /// The server's certificate is not checked.
    pub insecure: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Loads the CA and client certificate files; an error names the file
    /// and what is wrong with it.
    pub fn new(options: &TlsOptions) -> Result<TlsClient, String> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(provider)))
        } else {
            builder.with_root_certificates(roots(options.cacert.as_ref())?)
        };
        let config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                let chain = pem_certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--cert and --key do not make a client identity: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together".into()),
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = config.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(c))
        };
        Ok(TlsClient {
            http1: with_alpn(ALPN_HTTP1),
            http2: with_alpn(ALPN_H2),
            insecure: options.insecure,
        })
    }

    /// The connector offering `h2` (`http2`) or `http/1.1` by ALPN.
    pub fn connector(&self, http2: bool) -> TlsConnector {
        if http2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        }
    }
}

/// The certificates of a PEM file (at least one).
fn pem_certificates(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The CAs to trust: those of `cacert`, or the system's.
fn roots(cacert: Option<&PathBuf>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match cacert {
        Some(path) => {
            for cert in pem_certificates(path).map_err(|e| format!("--cacert {e}"))? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted CA certificate found on this system{}; give one with --cacert FILE",
                    found
                        .errors
                        .first()
                        .map_or_else(String::new, |e| format!(" ({e})"))
                ));
            }
        }
    }
    Ok(roots)
}

/// The name the server's certificate must carry, sent as SNI (an IP address
/// is checked against the certificate's IP addresses and sends no SNI).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|_| format!("`{host}` is not a TLS server name"))
}

/// A TLS handshake error as a sentence with what to do about it.
pub fn describe_error(e: &std::io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "{e}: the server's certificate is not signed by a CA this client trusts (give its CA with --cacert FILE, or skip the check with --insecure)"
        ),
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!("{e}: the server's certificate is not for the URL's host name"),
        Some(TlsError::InvalidCertificate(_)) => {
            format!("{e} (--insecure skips the certificate check)")
        }
        Some(TlsError::NoApplicationProtocol) => {
            format!("{e}: the server did not agree to the HTTP version asked for (ALPN)")
        }
        Some(TlsError::AlertReceived(alert)) => format!(
            "{e}: the server refused the handshake ({alert:?}); if it requires a client certificate, give one with --cert and --key"
        ),
        _ => e.to_string(),
    }
}

/// `--insecure`: any certificate is accepted; the handshake's signatures are
/// still checked, so the session is encrypted to whoever holds the key.
/// rustls has no such verifier of its own, on purpose; it is written here
/// for the load tests of deployments with self-signed certificates.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("floodgate-load-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn files_that_do_not_load_are_named() {
        let empty = temp("empty.pem", "");
        let e = TlsClient::new(&TlsOptions {
            cacert: Some(empty.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(
            e.contains("--cacert") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = TlsClient::new(&TlsOptions {
            cacert: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let e = TlsClient::new(&TlsOptions {
            insecure: true,
            cert: Some(empty.clone()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(e.contains("together"), "{e}");
        let _ = std::fs::remove_file(empty);
    }

    #[test]
    fn server_names() {
        assert!(server_name("floodgate.test").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(server_name("bad name").is_err());
    }
}
