//! Serving certificates a process signs for itself with a CA it holds
//! (the metrics endpoint's dynamic TLS): a fresh P-256 key and a
//! `server auth` leaf for a set of DNS names.

use std::time::Duration;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use crate::ca::{SigningCa, random_serial};
use crate::cert::{self, Summary};
use crate::error::{Error, Result};
use crate::secret_key::SecretKeyPem;

/// A serving certificate and its private key.
pub struct ServingCert {
    /// The leaf followed by the chain up to (not including) the root, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key: SecretKeyPem,
    /// The leaf's summary.
    pub summary: Summary,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl SigningCa {
    /// Signs a `server auth` certificate for `dns_names` with a new P-256
    /// key, valid from `now` for `lifetime` (never past the CA's notAfter).
    ///
    /// # Errors
    /// When `dns_names` is empty or holds a name that is not a DNS name, or
    /// signing fails.
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<ServingCert> {
        let first = dns_names.first().ok_or(Error::NoNames)?;
        let mut params = CertificateParams::new(dns_names.to_vec())
            .map_err(|e| Error::NameNotPermitted(format!("{dns_names:?}: {e}")))?;
        params.distinguished_name.push(DnType::CommonName, first);
        params.not_before = now;
        let end = now
            .checked_add(time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX))
            .unwrap_or(self.summary.not_after);
        params.not_after = end.min(self.summary.not_after);
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let crypto = |what: &'static str| {
            move |e: rcgen::Error| Error::Crypto {
                what,
                problem: e.to_string(),
            }
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(crypto("generating the serving key"))?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(crypto("signing the serving certificate"))?;
        let summary = cert::summarize(leaf.der())?;
        Ok(ServingCert {
            chain_pem: format!("{}{}", cert::to_pem(leaf.der()), self.chain_pem),
            key: SecretKeyPem::new(key.serialize_pem()),
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::{CaSpec, KeyAlgorithm, generate_ca};

    fn ca(now: OffsetDateTime, lifetime: Duration) -> SigningCa {
        let generated = generate_ca(
            &CaSpec {
                common_name: "metrics-ca".into(),
                organization: None,
                algorithm: KeyAlgorithm::EcdsaP256,
                lifetime,
            },
            now,
        )
        .expect("ca");
        SigningCa::from_pem(
            generated.cert_pem.as_bytes(),
            generated.key.expose().as_bytes(),
            None,
            now,
        )
        .expect("signing ca")
    }

    #[test]
    fn serving_leaf_names_the_dns_names_and_ends_with_the_ca() {
        let now = OffsetDateTime::now_utc();
        let ca = ca(now, Duration::from_secs(3600));
        let names = vec!["metrics.capstan.svc".to_owned(), "localhost".to_owned()];
        let leaf = ca
            .issue_serving(&names, Duration::from_secs(7 * 24 * 3600), now)
            .expect("leaf");
        assert_eq!(leaf.summary.dns_names, names);
        assert!(!leaf.summary.is_ca);
        assert_eq!(leaf.summary.not_after, ca.summary().not_after);
        assert!(leaf.key.expose().contains("PRIVATE KEY"));
        assert!(!format!("{leaf:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn serving_leaf_needs_a_name() {
        let now = OffsetDateTime::now_utc();
        let ca = ca(now, Duration::from_secs(3600));
        assert!(matches!(
            ca.issue_serving(&[], Duration::from_secs(60), now),
            Err(Error::NoNames)
        ));
    }
}
