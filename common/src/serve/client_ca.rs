//! The client CA of mTLS scrapes, reloaded when its file changes, like the
//! serving certificate: a CA mounted from a ConfigMap or Secret changes by
//! an atomic symlink swap, so the file is re-read by path on a short poll.
//! A file that does not load is skipped and the previous CAs keep being
//! trusted, so a half-written update never locks Prometheus out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::digest::{SHA256, digest};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_util::sync::CancellationToken;

use super::files::POLL_INTERVAL;
use crate::error::Error;

type Verifier = Arc<dyn ClientCertVerifier>;

/// A verifier for client certificates that chain to the CAs in `pem`
/// (from `path`, for messages). With `optional`, a client may also present
/// none (token review decides then).
///
/// # Errors
/// The PEM does not parse, holds no certificate, or one cannot be a trust
/// anchor.
pub fn verifier(
    pem: &[u8],
    path: &Path,
    optional: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Verifier, Error> {
    let bad = |problem: String| Error::Tls {
        what: format!("client CA file {}", path.display()),
        problem,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(format!("the PEM does not parse ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate cannot be a trust anchor ({e})")))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| bad(e.to_string()))
}

/// A client certificate verifier whose CAs can be replaced while serving.
///
/// It sends no CA names in its certificate request (rustls would need them
/// borrowed for the connection's whole handshake): clients then offer their
/// configured certificate, as Go's crypto/tls, OpenSSL and Prometheus do.
#[derive(Debug)]
pub struct ReloadingVerifier {
    current: RwLock<Verifier>,
}

impl ReloadingVerifier {
    /// Starts with `first`.
    #[must_use]
    pub fn new(first: Verifier) -> Self {
        Self {
            current: RwLock::new(first),
        }
    }

    fn current(&self) -> Verifier {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Trusts the CAs of `next` from now on (new handshakes).
    pub fn set(&self, next: Verifier) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    }
}

impl ClientCertVerifier for ReloadingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Loads the client CA file now.
///
/// # Errors
/// The file cannot be read or does not load (see [`verifier`]).
pub fn load(
    path: &Path,
    optional: bool,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<(Verifier, Vec<u8>), Error> {
    let pem = std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let loaded = verifier(&pem, path, optional, provider)?;
    Ok((loaded, digest(&SHA256, &pem).as_ref().to_vec()))
}

/// Keeps `reloading` trusting the latest loadable content of `path` until
/// `shutdown`; `loaded` is the hash of the content it starts with.
pub async fn watch(
    path: PathBuf,
    optional: bool,
    reloading: Arc<ReloadingVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    mut loaded: Vec<u8>,
    shutdown: CancellationToken,
) {
    let mut refused: Option<Vec<u8>> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let Ok(pem) = tokio::fs::read(&path).await else {
            continue;
        };
        let hash = digest(&SHA256, &pem).as_ref().to_vec();
        if hash == loaded || refused.as_ref() == Some(&hash) {
            continue;
        }
        match verifier(&pem, &path, optional, &provider) {
            Ok(next) => {
                reloading.set(next);
                tracing::info!(file = %path.display(), "Updated metrics client CA");
                loaded = hash;
                refused = None;
            }
            Err(error) => {
                tracing::warn!(%error, "new client CA file not used; keeping the previous CAs");
                refused = Some(hash);
            }
        }
    }
}
