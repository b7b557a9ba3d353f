//! Certificate summaries and fingerprints, and reading certificates from PEM.

use ring::digest::{SHA256, digest};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::{Error, Result};

/// What a user checks about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Subject, RFC 4514.
    pub subject: String,
    /// The subject's (first) common name, if it has one.
    pub common_name: Option<String>,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub fingerprint: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Whether basic constraints say CA:TRUE.
    pub is_ca: bool,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex.
#[must_use]
pub fn fingerprint(der: &[u8]) -> String {
    hex(digest(&SHA256, der).as_ref())
}

/// Parses one DER certificate.
pub(crate) fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| Error::Certificate {
            what,
            problem: e.to_string(),
        })
}

/// Summarizes a DER certificate.
///
/// # Errors
/// When `der` is not a certificate.
pub fn summarize(der: &[u8]) -> Result<Summary> {
    let cert = parse(der, "certificate")?;
    Ok(summary_of(&cert, der))
}

pub(crate) fn summary_of(cert: &X509Certificate<'_>, der: &[u8]) -> Summary {
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Summary {
        subject: cert.subject().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        issuer: cert.issuer().to_string(),
        serial: hex(cert.raw_serial()),
        fingerprint: fingerprint(der),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        is_ca: cert.is_ca(),
        dns_names,
    }
}

/// The DER certificates in a PEM text, in order. A private key anywhere in
/// it is an error: certificate fields must never carry keys.
pub(crate) fn certificates_from_pem(pem_bytes: &[u8], what: &'static str) -> Result<Vec<Vec<u8>>> {
    if pem_bytes.len() > crate::MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            what,
            size: pem_bytes.len(),
            limit: crate::MAX_INPUT_BYTES,
        });
    }
    let blocks = pem::parse_many(pem_bytes).map_err(|e| Error::Pem {
        what,
        problem: e.to_string(),
    })?;
    if blocks.iter().any(|b| b.tag().contains("PRIVATE KEY")) {
        return Err(Error::PrivateKeyInBundle(what));
    }
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect())
}

/// PEM of one DER certificate, with `\n` line endings.
pub(crate) fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
