//! The serving certificate slot: whatever certificate is in it is what the
//! next TLS handshake gets, so a rotation never drops a connection or fails
//! a scrape; a bad new certificate never replaces a good one.

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::Error;

/// The certificate served now, swapped atomically on rotation.
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertSlot {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Some(Arc::new(key));
    }

    /// The certificate served now, if any.
    #[must_use]
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Builds a servable key pair from a PEM chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), checking that they match.
/// `what` names the source in errors (a file pair, a Secret).
///
/// # Errors
/// No certificate, no or an unreadable key, or a key that does not match
/// the certificate. Messages never contain key material.
pub fn certified_key(
    chain_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
    what: &str,
) -> Result<CertifiedKey, Error> {
    let bad = |problem: String| Error::Tls {
        what: what.to_owned(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the certificate PEM does not parse ({e})")))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE block in the certificate file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| bad("no readable PRIVATE KEY block in the key file".into()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        bad(match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not match the certificate".into()
            }
            other => format!("the key cannot be used for TLS ({other})"),
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use capstan_pki::{CaSpec, KeyAlgorithm, SigningCa, generate_ca};
    use std::time::Duration;
    use time::OffsetDateTime;

    fn pair() -> (String, String) {
        let now = OffsetDateTime::now_utc();
        let ca = generate_ca(
            &CaSpec {
                common_name: "t".into(),
                organization: None,
                algorithm: KeyAlgorithm::EcdsaP256,
                lifetime: Duration::from_secs(3600),
            },
            now,
        )
        .expect("ca");
        let signing = SigningCa::from_pem(
            ca.cert_pem.as_bytes(),
            ca.key.expose().as_bytes(),
            None,
            now,
        )
        .expect("signing");
        let leaf = signing
            .issue_serving(&["localhost".into()], Duration::from_secs(600), now)
            .expect("leaf");
        (leaf.chain_pem, leaf.key.expose().to_owned())
    }

    #[test]
    fn a_matching_pair_loads_and_a_mismatched_one_is_named() {
        let provider = rustls::crypto::ring::default_provider();
        let (cert, key) = pair();
        let (_, other_key) = pair();
        assert!(certified_key(cert.as_bytes(), key.as_bytes(), &provider, "pair").is_ok());
        let e = certified_key(cert.as_bytes(), other_key.as_bytes(), &provider, "pair")
            .expect_err("mismatch")
            .to_string();
        assert!(e.contains("does not match"), "{e}");
        assert!(!e.contains("PRIVATE KEY-----"), "{e}");
        let e = certified_key(b"", key.as_bytes(), &provider, "pair").expect_err("empty");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn the_slot_serves_the_latest_certificate() {
        let provider = rustls::crypto::ring::default_provider();
        let slot = CertSlot::default();
        assert!(slot.current().is_none());
        let (cert, key) = pair();
        slot.set(certified_key(cert.as_bytes(), key.as_bytes(), &provider, "a").expect("a"));
        let first = slot.current().expect("set");
        let (cert, key) = pair();
        slot.set(certified_key(cert.as_bytes(), key.as_bytes(), &provider, "b").expect("b"));
        assert_ne!(first.cert, slot.current().expect("set").cert);
    }
}
