//! Root CAs: generate one, or load a CA key pair from a Secret's PEM and
//! check that it may sign.

use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use crate::cert::{self, Summary};
use crate::error::{Error, Result};
use crate::keys;
use crate::secret_key::SecretKeyPem;

pub use crate::keys::{KeyAlgorithm, MAX_CA_RSA_BITS, MIN_CA_RSA_BITS};

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::UnsupportedAlgorithm(format!("key algorithm {s:?} (expected one of ECDSAP256, ECDSAP384, Ed25519, RSA2048, RSA3072, RSA4096);")))
    }
}

/// What a generated CA looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSpec {
    /// Subject common name.
    pub common_name: String,
    /// Optional subject organization.
    pub organization: Option<String>,
    /// Key algorithm.
    pub algorithm: KeyAlgorithm,
    /// Lifetime from `now`.
    pub lifetime: Duration,
}

/// A freshly generated root CA.
#[derive(Debug, Clone)]
pub struct GeneratedCa {
    /// The self-signed certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key: SecretKeyPem,
    /// Its summary.
    pub summary: Summary,
}

/// A 128-bit random serial number, positive in DER (top bit clear) and never
/// zero, as RFC 5280 §4.1.2.2 asks.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Crypto {
            what: "serial number generation",
            problem: "no randomness".into(),
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Longest lifetime of a generated CA: 100 years. A longer one is a typo
/// (or a unit mistake), and near year 9999 X.509 times run out.
pub const MAX_CA_LIFETIME: Duration = Duration::from_secs(36_525 * 86_400);

/// Generates a self-signed root CA: CA:TRUE (critical), keyCertSign +
/// cRLSign + digitalSignature (critical), a subject key identifier and a
/// random serial. Valid from one minute before `now` (clock skew) for
/// `spec.lifetime`.
///
/// # Errors
/// A lifetime of zero or over [`MAX_CA_LIFETIME`]; key generation or
/// signing failing.
pub fn generate_ca(spec: &CaSpec, now: OffsetDateTime) -> Result<GeneratedCa> {
    let lifetime =
        crate::duration::check_lifetime("the CA lifetime", spec.lifetime, MAX_CA_LIFETIME)?;
    let not_after = time::Duration::try_from(lifetime)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or_else(|| {
            Error::Duration(format!(
                "the CA lifetime of {}h from {now} ends after the year 9999",
                lifetime.as_secs() / 3600
            ))
        })?;
    let key = keys::generate(spec.algorithm)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.as_str());
    if let Some(org) = &spec.organization {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(|e| Error::Crypto {
        what: "CA self-signing",
        problem: e.to_string(),
    })?;
    let summary = cert::summarize(cert.der())?;
    Ok(GeneratedCa {
        cert_pem: cert.pem(),
        key: SecretKeyPem::new(key.serialize_pem()),
        summary,
    })
}

/// A CA key pair that is allowed to sign, ready to sign many leaves.
pub struct SigningCa {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    pub(crate) summary: Summary,
    /// PEM of the certificates between a leaf and the root (the signing CA
    /// itself when it is an intermediate), appended to every leaf.
    pub(crate) chain_pem: String,
    /// PEM of the root the chain ends in.
    pub(crate) root_pem: String,
    pub(crate) cert_pem: String,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCa")
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl SigningCa {
    /// Loads `tls.crt` (the CA, optionally followed by its chain), `tls.key`
    /// (PKCS#8, PKCS#1 or SEC1) and optional `ca.crt`, and checks that the
    /// key matches, that the certificate is a CA allowed to sign
    /// certificates, and that it is valid at `now`.
    ///
    /// # Errors
    /// One distinct error per problem, worded for the user.
    pub fn from_pem(
        tls_crt: &[u8],
        tls_key: &[u8],
        ca_crt: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let certs = cert::certificates_from_pem(tls_crt, "tls.crt")?;
        let first = certs.first().ok_or_else(|| Error::Pem {
            what: "tls.crt",
            problem: "no CERTIFICATE block".into(),
        })?;
        let ca = cert::parse(first, "tls.crt")?;
        let key = keys::key_pair_from_pem(tls_key, "tls.key")?;
        if key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch);
        }
        let subject = ca.subject().to_string();
        match ca.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(Some(_)) => {
                return Err(Error::NotCa {
                    subject,
                    problem: "basicConstraints says CA:FALSE",
                });
            }
            Ok(None) => {
                return Err(Error::NotCa {
                    subject,
                    problem: "it has no basicConstraints extension",
                });
            }
            Err(_) => {
                return Err(Error::NotCa {
                    subject,
                    problem: "its basicConstraints extension is malformed",
                });
            }
        }
        if let Ok(Some(ku)) = ca.key_usage()
            && !ku.value.key_cert_sign()
        {
            return Err(Error::NotCa {
                subject,
                problem: "its keyUsage lacks keyCertSign",
            });
        }
        let summary = cert::summary_of(&ca, first);
        if now < summary.not_before {
            return Err(Error::CaNotYetValid {
                subject,
                not_before: summary.not_before,
            });
        }
        if now > summary.not_after {
            return Err(Error::CaExpired {
                subject,
                not_after: summary.not_after,
            });
        }
        let extra = match ca_crt {
            Some(pem) => cert::certificates_from_pem(pem, "ca.crt")?,
            None => Vec::new(),
        };
        let (chain_pem, root_pem) = chain_and_root(&certs, &extra);
        let cert_pem = cert::to_pem(first);
        let issuer = Issuer::from_ca_cert_der(&first.clone().into(), key).map_err(|e| {
            Error::Certificate {
                what: "tls.crt",
                problem: e.to_string(),
            }
        })?;
        Ok(Self {
            issuer,
            summary,
            chain_pem,
            root_pem,
            cert_pem,
        })
    }

    /// The signing CA's summary.
    #[must_use]
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The signing CA's certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root every leaf chains to, PEM (`status.ca`).
    #[must_use]
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }
}

/// Splits the CA's certificates into the chain appended to leaves (the
/// signing CA and its parents, without the self-signed root) and the root.
fn chain_and_root(tls_chain: &[Vec<u8>], ca_crt: &[Vec<u8>]) -> (String, String) {
    let self_signed =
        |der: &Vec<u8>| cert::parse(der, "certificate").is_ok_and(|c| c.subject() == c.issuer());
    let signing = &tls_chain[0];
    if self_signed(signing) {
        return (String::new(), cert::to_pem(signing));
    }
    let chain: String = tls_chain
        .iter()
        .filter(|c| !self_signed(c))
        .map(|c| cert::to_pem(c))
        .collect();
    let root = tls_chain
        .iter()
        .chain(ca_crt)
        .find(|c| self_signed(c))
        .or_else(|| ca_crt.last())
        .or_else(|| tls_chain.last())
        .map(|c| cert::to_pem(c))
        .unwrap_or_default();
    (chain, root)
}
