//! PKCS#10 certificate signing requests: parse (PEM or DER), verify the
//! self-signature, refuse weak or unsupported keys, expose what was asked.
//!
//! Total on any input: every malformed request is an [`Error`], never a
//! panic. Go's crypto/x509 requests — what cert-manager sends, with SAN,
//! KeyUsage, ExtKeyUsage and BasicConstraints requested as extensions — parse.

use std::net::IpAddr;

use rcgen::{CertificateSigningRequestParams, PublicKeyData, SanType, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{self as oids, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::error::{Error, Result};

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (and the largest ring verifies): bigger
/// keys cost seconds of CPU per signature check, a denial of service.
pub const MAX_RSA_BITS: usize = 8192;

/// The requester's public key with the algorithm its SPKI names.
///
/// rcgen would type the key by the CSR's *signature* algorithm, which writes
/// a broken P-256 SPKI around a P-384 key in a request signed with
/// ecdsa-with-SHA256 (openssl's default). The curve in the SPKI is the truth.
#[derive(Debug, Clone)]
pub(crate) struct LeafKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for LeafKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// A verified request.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    pub(crate) params: CertificateSigningRequestParams,
    /// The requester's key, typed by its own SPKI algorithm.
    pub(crate) public_key: LeafKey,
    /// The subject, RFC 4514 (empty when the request has none).
    pub subject: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// The key, e.g. `ECDSA P-256`, `RSA 2048`, `Ed25519`.
    pub key_algorithm: String,
}

impl ParsedCsr {
    /// Whether the subject is empty.
    #[must_use]
    pub fn subject_is_empty(&self) -> bool {
        self.params
            .params
            .distinguished_name
            .iter()
            .next()
            .is_none()
    }
}

fn pem_or_der(input: &[u8]) -> Result<Vec<u8>> {
    if input.len() > crate::MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            what: "the CSR",
            size: input.len(),
            limit: crate::MAX_INPUT_BYTES,
        });
    }
    let text = input.trim_ascii_start();
    if text.starts_with(b"-----") {
        let blocks = pem::parse_many(text).map_err(|e| Error::Csr(format!("invalid PEM: {e}")))?;
        let block = blocks
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE REQUEST" || b.tag() == "NEW CERTIFICATE REQUEST")
            .ok_or_else(|| Error::Csr("no CERTIFICATE REQUEST PEM block".into()))?;
        Ok(block.into_contents())
    } else {
        Ok(input.to_vec())
    }
}

/// Names the key, picks the rcgen algorithm that encodes its SPKI, and
/// refuses what capstan cannot or will not sign for. (All RSA algorithms
/// encode the key alike, as rsaEncryption.)
fn check_key(csr: &X509CertificationRequest<'_>) -> Result<(String, &'static SignatureAlgorithm)> {
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_PKCS1_RSASSAPSS {
        return Err(Error::UnsupportedAlgorithm("RSA-PSS".into()));
    }
    let parsed = spki
        .parsed()
        .map_err(|e| Error::Csr(format!("unreadable public key: {e}")))?;
    let name = match parsed {
        PublicKey::RSA(rsa) => {
            // Counted from the modulus itself: x509-parser's `key_size`
            // rounds to whole bytes and miscounts moduli without a leading
            // zero byte.
            let bits = crate::keys::modulus_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                return Err(Error::WeakKey {
                    algorithm: "RSA",
                    bits,
                    minimum: MIN_RSA_BITS,
                });
            }
            if bits > MAX_RSA_BITS {
                return Err(Error::KeyTooLarge {
                    algorithm: "RSA",
                    bits,
                    maximum: MAX_RSA_BITS,
                });
            }
            (format!("RSA {bits}"), &rcgen::PKCS_RSA_SHA256)
        }
        PublicKey::EC(_) => {
            let curve: Option<Oid<'_>> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == oids::OID_EC_P256 => {
                    ("ECDSA P-256".to_owned(), &rcgen::PKCS_ECDSA_P256_SHA256)
                }
                Some(c) if c == oids::OID_NIST_EC_P384 => {
                    ("ECDSA P-384".to_owned(), &rcgen::PKCS_ECDSA_P384_SHA384)
                }
                Some(c) if c == oids::OID_NIST_EC_P521 => {
                    return Err(Error::UnsupportedAlgorithm("ECDSA P-521".into()));
                }
                other => {
                    let curve =
                        other.map_or_else(|| "an unnamed curve".to_owned(), |c| c.to_id_string());
                    return Err(Error::UnsupportedAlgorithm(format!("ECDSA on {curve}")));
                }
            }
        }
        _ if *alg == oids::OID_SIG_ED25519 => ("Ed25519".to_owned(), &rcgen::PKCS_ED25519),
        _ => {
            return Err(Error::UnsupportedAlgorithm(format!(
                "public key algorithm {}",
                alg.to_id_string()
            )));
        }
    };
    let sig = &csr.signature_algorithm.algorithm;
    if *sig == oids::OID_PKCS1_RSASSAPSS {
        return Err(Error::UnsupportedAlgorithm("RSA-PSS signed CSR".into()));
    }
    Ok(name)
}

/// Extensions a request may carry (the ones cert-manager sends).
fn check_extensions(csr: &X509CertificationRequest<'_>) -> Result<()> {
    let Some(extensions) = csr.requested_extensions() else {
        return Ok(());
    };
    for ext in extensions {
        use x509_parser::extensions::ParsedExtension as P;
        match ext {
            P::SubjectAlternativeName(_)
            | P::KeyUsage(_)
            | P::ExtendedKeyUsage(_)
            | P::BasicConstraints(_) => {}
            P::UnsupportedExtension { oid } => {
                return Err(Error::Csr(format!(
                    "it requests extension {} which capstan does not sign",
                    oid.to_id_string()
                )));
            }
            P::ParseError { error } => {
                return Err(Error::Csr(format!(
                    "a requested extension is malformed: {error}"
                )));
            }
            other => {
                return Err(Error::Csr(format!(
                    "it requests an extension capstan does not sign ({other:?})"
                )));
            }
        }
    }
    Ok(())
}

/// Parses and verifies a request.
///
/// # Errors
/// Malformed input, a bad signature, a weak or unsupported key, an
/// unsupported extension.
pub fn parse_csr(input: &[u8]) -> Result<ParsedCsr> {
    let der = pem_or_der(input)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|e| {
        let was_pem = input.trim_ascii_start().starts_with(b"-----");
        if der.first() != Some(&0x30) && !was_pem {
            Error::Csr(
                "it is neither a PEM CERTIFICATE REQUEST block nor DER-encoded PKCS#10".into(),
            )
        } else if der.first() != Some(&0x30) {
            Error::Csr("its CERTIFICATE REQUEST block does not hold a PKCS#10 request".into())
        } else {
            Error::Csr(format!("malformed PKCS#10 DER ({e})"))
        }
    })?;
    if !rest.is_empty() {
        return Err(Error::Csr("trailing data after the request".into()));
    }
    let (key_algorithm, key_alg) = check_key(&csr)?;
    let public_key = LeafKey {
        raw: csr
            .certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec(),
        alg: key_alg,
    };
    check_extensions(&csr)?;
    let params =
        CertificateSigningRequestParams::from_der(&der.as_slice().into()).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => Error::CsrSignature,
            rcgen::Error::UnsupportedSignatureAlgorithm => Error::UnsupportedAlgorithm(format!(
                "signature algorithm {}",
                csr.signature_algorithm.algorithm.to_id_string()
            )),
            other => Error::Csr(other.to_string()),
        })?;
    let mut parsed = ParsedCsr {
        public_key,
        subject: csr.certification_request_info.subject.to_string(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        key_algorithm,
        params,
    };
    for san in &parsed.params.params.subject_alt_names {
        match san {
            SanType::DnsName(d) => parsed.dns_names.push(d.to_string()),
            SanType::IpAddress(ip) => parsed.ip_addresses.push(*ip),
            SanType::URI(u) => parsed.uris.push(u.to_string()),
            SanType::Rfc822Name(e) => parsed.emails.push(e.to_string()),
            SanType::OtherName(_) => {
                return Err(Error::Csr("otherName SANs are not supported".into()));
            }
            _ => return Err(Error::Csr("unsupported SAN type".into())),
        }
    }
    Ok(parsed)
}
