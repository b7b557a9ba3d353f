//! The issuer's only door to the PKI crate: load a CA for an issuer, sign
//! requests with it, generate and describe self-managed CAs, build bundles.
//! Times cross here from Kubernetes' `jiff` to the PKI's `time`.

use capstan_pki::{self as pki, LeafPolicy, LeafRequest, SecretKeyPem, SigningCa};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use time::OffsetDateTime;

use crate::api::ca_issuer::{CaSummary, KeyAlgorithm};
use crate::api::cert_manager::CertificateRequestSpec;
use crate::api::conditions::issuer as reason;
use crate::ca::rotation::CaRecord;
use crate::policy::{self, IssuerPolicy, SelfManagedPolicy};

/// `jiff` → `time`.
#[must_use]
pub fn to_offset(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `time` → `jiff`.
#[must_use]
pub fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A CA Secret's signing material.
#[derive(Clone)]
pub struct CaMaterial {
    /// `tls.crt`.
    pub cert_pem: Vec<u8>,
    /// `tls.key`.
    pub key_pem: Vec<u8>,
    /// `ca.crt`, if any.
    pub chain_pem: Option<Vec<u8>>,
}

/// Why a CA cannot be used: an issuer condition reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaProblem {
    /// `InvalidKeyPair` or `CAExpired`.
    pub reason: &'static str,
    /// What the user must fix.
    pub message: String,
}

/// A signed certificate, as the request statuses want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf and intermediates, PEM.
    pub chain_pem: String,
    /// The root, PEM.
    pub ca_pem: String,
    /// A note for the Event, e.g. that the duration was shortened.
    pub note: Option<String>,
}

/// A CA that is loaded and allowed to sign under an issuer's policy.
pub struct ReadyCa {
    ca: SigningCa,
    leaf_policy: LeafPolicy,
}

impl PartialEq for ReadyCa {
    fn eq(&self, other: &Self) -> bool {
        self.ca.summary() == other.ca.summary() && self.leaf_policy == other.leaf_policy
    }
}

fn leaf_policy(policy: &IssuerPolicy) -> LeafPolicy {
    LeafPolicy {
        default_duration: policy.default_duration,
        max_duration: policy.max_duration,
        allowed_usages: policy.allowed_usages.clone(),
        permitted_dns_domains: policy.permitted_dns_domains.clone(),
        permitted_ip_ranges: policy.permitted_ip_ranges.clone(),
    }
}

impl ReadyCa {
    /// Loads and checks the CA.
    ///
    /// # Errors
    /// `CAExpired` for a CA outside its validity, `InvalidKeyPair` otherwise.
    pub fn load(
        material: &CaMaterial,
        policy: &IssuerPolicy,
        now: Timestamp,
    ) -> Result<Self, CaProblem> {
        let ca = SigningCa::from_pem(
            &material.cert_pem,
            &material.key_pem,
            material.chain_pem.as_deref(),
            to_offset(now),
        )
        .map_err(|e| CaProblem {
            reason: match e {
                pki::Error::CaExpired { .. } | pki::Error::CaNotYetValid { .. } => {
                    reason::CA_EXPIRED
                }
                _ => reason::INVALID_KEY_PAIR,
            },
            message: e.to_string(),
        })?;
        Ok(Self {
            ca,
            leaf_policy: leaf_policy(policy),
        })
    }

    /// The CA's identity and validity for the issuer's status.
    #[must_use]
    pub fn summary(&self) -> CaSummary {
        let s = self.ca.summary();
        CaSummary {
            fingerprint: s.fingerprint.clone(),
            subject: s.subject.clone(),
            not_before: Time(to_timestamp(s.not_before)),
            not_after: Time(to_timestamp(s.not_after)),
        }
    }

    /// When the CA expires.
    #[must_use]
    pub fn not_after(&self) -> Timestamp {
        to_timestamp(self.ca.summary().not_after)
    }

    /// Signs the PEM-encoded PKCS#10 request `csr_pem` as `request` asks,
    /// within the issuer's leaf policy.
    ///
    /// # Errors
    /// A message for the `Failed` condition.
    pub fn sign(
        &self,
        csr_pem: &[u8],
        request: &LeafRequest,
        now: Timestamp,
    ) -> Result<Issued, String> {
        let csr = pki::parse_csr(csr_pem).map_err(|e| format!("Failed to sign: {e}"))?;
        let leaf = self
            .ca
            .sign(&csr, request, &self.leaf_policy, to_offset(now))
            .map_err(|e| format!("Failed to sign: {e}"))?;
        Ok(Issued {
            chain_pem: leaf.chain_pem,
            ca_pem: leaf.ca_pem,
            note: leaf.truncated.map(|t| t.to_string()),
        })
    }

    /// Signs a cert-manager `CertificateRequest`.
    ///
    /// # Errors
    /// A message for the `Failed` condition.
    pub fn sign_request(
        &self,
        spec: &CertificateRequestSpec,
        now: Timestamp,
    ) -> Result<Issued, String> {
        let duration = spec
            .duration
            .as_deref()
            .map(|d| policy::parse_duration("spec.duration", d))
            .transpose()
            .map_err(|e| format!("Failed to sign: {e}"))?;
        let request = LeafRequest {
            duration,
            is_ca: spec.is_ca.unwrap_or(false),
            usages: spec.usages.clone().unwrap_or_default(),
        };
        self.sign(&spec.request.0, &request, now)
    }
}

/// A generated CA for a self-managed issuer.
pub struct Generated {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key: SecretKeyPem,
    /// SHA-256 fingerprint.
    pub fingerprint: String,
}

fn pki_algorithm(a: KeyAlgorithm) -> pki::KeyAlgorithm {
    match a {
        KeyAlgorithm::EcdsaP256 => pki::KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384 => pki::KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519 => pki::KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048 => pki::KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072 => pki::KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096 => pki::KeyAlgorithm::Rsa4096,
    }
}

/// Generates a root CA for a self-managed issuer.
///
/// # Errors
/// When key generation or signing fails.
pub fn generate(managed: &SelfManagedPolicy, now: Timestamp) -> Result<Generated, String> {
    let ca = pki::generate_ca(
        &pki::CaSpec {
            common_name: managed.common_name.clone(),
            organization: Some("capstan".to_owned()),
            algorithm: pki_algorithm(managed.key_algorithm),
            lifetime: managed.ca_duration,
        },
        to_offset(now),
    )
    .map_err(|e| e.to_string())?;
    Ok(Generated {
        fingerprint: ca.summary.fingerprint.clone(),
        cert_pem: ca.cert_pem,
        key: ca.key,
    })
}

/// [`generate`] on the blocking pool: an RSA 4096 key takes seconds to
/// find, which must not stall the controllers sharing the async runtime.
///
/// # Errors
/// As [`generate`].
pub async fn generate_off_runtime(
    managed: &SelfManagedPolicy,
    now: Timestamp,
) -> Result<Generated, String> {
    let managed = managed.clone();
    tokio::task::spawn_blocking(move || generate(&managed, now))
        .await
        .map_err(|e| format!("CA generation did not finish: {e}"))?
}

/// Identity and validity of a CA certificate (the first in `pem`).
///
/// # Errors
/// When `pem` holds no parsable certificate.
pub fn record(pem: &[u8]) -> Result<CaRecord, String> {
    let block = pem::parse_many(pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| "no CERTIFICATE block".to_owned())?;
    let s = pki::summarize(block.contents()).map_err(|e| e.to_string())?;
    Ok(CaRecord {
        fingerprint: s.fingerprint,
        not_before: to_timestamp(s.not_before),
        not_after: to_timestamp(s.not_after),
    })
}

/// A normalized bundle.
pub struct BundleInfo {
    /// Canonical PEM.
    pub pem: String,
    /// Certificates in it.
    pub count: usize,
}

/// Normalizes several PEM inputs into one bundle.
///
/// # Errors
/// Invalid PEM or a private key in the input.
pub fn bundle(pems: &[&[u8]], now: Timestamp) -> Result<BundleInfo, String> {
    let b = pki::normalize_bundle(pems, to_offset(now)).map_err(|e| e.to_string())?;
    Ok(BundleInfo {
        count: b.len(),
        pem: b.pem,
    })
}

/// `bundle` without the listed fingerprints.
///
/// # Errors
/// As [`bundle`].
pub fn bundle_without(
    bundle: &[u8],
    fingerprints: &[String],
    now: Timestamp,
) -> Result<BundleInfo, String> {
    let b =
        pki::bundle::without(bundle, fingerprints, to_offset(now)).map_err(|e| e.to_string())?;
    Ok(BundleInfo {
        count: b.len(),
        pem: b.pem,
    })
}

/// The CAs of the bundle [`bundle`] builds from `pems`, in bundle order
/// (newest first), each with its identity and validity.
///
/// # Errors
/// As [`bundle`].
pub fn bundle_cas(pems: &[&[u8]], now: Timestamp) -> Result<Vec<CaSummary>, String> {
    let b = pki::normalize_bundle(pems, to_offset(now)).map_err(|e| e.to_string())?;
    pem::parse_many(b.pem.as_bytes())
        .map_err(|e| e.to_string())?
        .iter()
        .map(|block| {
            let s = pki::summarize(block.contents()).map_err(|e| e.to_string())?;
            Ok(CaSummary {
                fingerprint: s.fingerprint,
                subject: s.subject,
                not_before: Time(to_timestamp(s.not_before)),
                not_after: Time(to_timestamp(s.not_after)),
            })
        })
        .collect()
}
