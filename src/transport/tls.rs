//! HTTPS for the public listener: rustls (ring provider, no OpenSSL), HTTP/2 and HTTP/1.1 by
//! ALPN, and a certificate that can be reloaded from disk without dropping connections.
//!
//! The server configuration asks [`ReloadableCert`] for the certificate on every handshake, so
//! a reload affects only new connections; established ones keep the session they negotiated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// The cryptography TLS uses: *ring*, which builds from Rust and a little C with no other
/// toolchain. rustls 0.23.48 deprecates it for lacking post-quantum key exchange (its
/// aws-lc-rs provider has ML-KEM, at the cost of a CMake-free but much longer C build);
/// classical key exchange is what this service's clients negotiate today.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    tokio_rustls::rustls::crypto::ring::default_provider()
}

/// The certificate and key files, and the pair loaded from them last.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, String> {
        let certs = CertificateDer::pem_file_iter(cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert_path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate found", cert_path.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| format!("{}: {e}", key_path.display()))?;
        CertifiedKey::from_der(certs, key, &provider())
            .map(Arc::new)
            .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))
    }

    /// Read both files again. On error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = Self::load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// What the accept loop needs to speak TLS, and the handle to reload its certificate.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub cert: Arc<ReloadableCert>,
}

impl Tls {
    /// Load the certificate; `None` when TLS is off.
    pub fn from_settings(s: &TlsSettings) -> Result<Option<Tls>, String> {
        let (Some(cert_path), Some(key_path)) = (&s.cert_path, &s.key_path) else {
            return Ok(None);
        };
        let cert = Arc::new(ReloadableCert {
            current: RwLock::new(ReloadableCert::load(cert_path, key_path)?),
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert,
        }))
    }
}

/// Reload the certificate when either file changes (checked every `interval`), so rotations
/// by cert-manager or a Secret update take effect without a signal or a restart. The files
/// as they are when this is called are the baseline: any later change is seen.
pub fn reload_when_changed(
    cert: Arc<ReloadableCert>,
    interval: Duration,
) -> impl std::future::Future<Output = ()> {
    let stamp = |cert: &ReloadableCert| {
        [&cert.cert_path, &cert.key_path].map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        })
    };
    let seen = stamp(&cert);
    async move { watch(cert, interval, seen, stamp).await }
}

async fn watch<T: PartialEq>(
    cert: Arc<ReloadableCert>,
    interval: Duration,
    mut seen: T,
    stamp: impl Fn(&ReloadableCert) -> T,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamp(&cert);
        if now == seen {
            continue;
        }
        seen = now;
        match cert.reload() {
            Ok(()) => tracing::info!("TLS certificate files changed; reloaded"),
            // Often a half-written pair: the next change completes it.
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load yet")
            }
        }
    }
}
