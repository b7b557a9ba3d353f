//! Static TLS from a certificate and key file pair, reloaded when the
//! files change.
//!
//! A mounted Secret changes by an atomic symlink swap (`..data` points to a
//! new directory), so the files are re-read by path on a short poll rather
//! than watched by inode. A pair that does not load (for example a key
//! written before its certificate) is skipped, and the previous pair keeps
//! being served until a good one appears: no scrape ever fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::digest::{SHA256, digest};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::certs::{CertSlot, certified_key};
use crate::error::Error;

/// How often the files are re-read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A certificate file (leaf first, then its chain) and its private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePair {
    /// `--metrics-tls-cert-file`.
    pub cert: PathBuf,
    /// `--metrics-tls-private-key-file`.
    pub key: PathBuf,
}

impl FilePair {
    fn what(&self) -> String {
        format!("TLS pair {} / {}", self.cert.display(), self.key.display())
    }

    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let read = |path: &Path| {
            let path = path.to_owned();
            async move {
                tokio::fs::read(&path)
                    .await
                    .map_err(|source| Error::Read { path, source })
            }
        };
        Ok((read(&self.cert).await?, read(&self.key).await?))
    }

    /// Loads the pair now.
    ///
    /// # Errors
    /// A file cannot be read, or the pair cannot be served.
    pub async fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
        let (cert, key) = self.read().await?;
        certified_key(&cert, &key, provider, &self.what())
    }
}

fn content_hash(cert: &[u8], key: &[u8]) -> Vec<u8> {
    let mut both = Vec::with_capacity(cert.len() + key.len() + 8);
    both.extend_from_slice(&(cert.len() as u64).to_be_bytes());
    both.extend_from_slice(cert);
    both.extend_from_slice(key);
    digest(&SHA256, &both).as_ref().to_vec()
}

/// Logs what is now served.
pub(crate) fn log_served(key: &CertifiedKey, source: &str) {
    match key.end_entity_cert().map(|der| capstan_pki::summarize(der)) {
        Ok(Ok(summary)) => tracing::info!(
            source,
            serial = %summary.serial,
            dns_names = ?summary.dns_names,
            not_after = %summary.not_after,
            "Updated serving TLS certificate"
        ),
        _ => tracing::info!(source, "Updated serving TLS certificate"),
    }
}

/// Keeps `slot` serving the pair's latest loadable content until
/// `shutdown`. The first content must already be in the slot.
pub async fn watch(
    pair: FilePair,
    slot: Arc<CertSlot>,
    provider: Arc<CryptoProvider>,
    shutdown: CancellationToken,
) {
    let mut served: Option<Vec<u8>> = None;
    let mut refused: Option<Vec<u8>> = None;
    if let Ok((cert, key)) = pair.read().await {
        served = Some(content_hash(&cert, &key));
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let Ok((cert, key)) = pair.read().await else {
            continue;
        };
        let hash = content_hash(&cert, &key);
        if served.as_ref() == Some(&hash) || refused.as_ref() == Some(&hash) {
            continue;
        }
        match certified_key(&cert, &key, &provider, &pair.what()) {
            Ok(loaded) => {
                log_served(&loaded, &pair.what());
                slot.set(loaded);
                served = Some(hash);
                refused = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "new TLS files not served; keeping the previous certificate");
                refused = Some(hash);
            }
        }
    }
}
