//! Looking inside PEM a user holds: which certificates a Secret or ConfigMap
//! key carries, every name they are valid for, and which CA really signed
//! which certificate (the signature checked with the CA's public key, not
//! names compared). What `kubectl capstan inspect` shows.
//!
//! Private keys are counted, never returned: [`pem_contents`] hands back
//! certificates only.

use std::net::IpAddr;

use x509_parser::prelude::GeneralName;

use crate::cert::{self, parse};
use crate::error::{Error, Result};

/// What a PEM text holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PemContents {
    /// DER certificates, in order.
    pub certificates: Vec<Vec<u8>>,
    /// How many private-key blocks (any label containing `PRIVATE KEY`) it
    /// holds; their content is dropped unread.
    pub private_keys: usize,
    /// Labels of the other blocks (`CERTIFICATE REQUEST`, `PUBLIC KEY`...).
    pub other: Vec<String>,
}

/// Reads every PEM block of `bytes`: certificates, private keys counted,
/// other labels named. Text without any PEM block gives empty contents.
///
/// # Errors
/// When the input is over [`crate::MAX_INPUT_BYTES`] or a block is malformed.
pub fn pem_contents(bytes: &[u8]) -> Result<PemContents> {
    if bytes.len() > crate::MAX_INPUT_BYTES {
        return Err(Error::TooLarge {
            what: "the PEM text",
            size: bytes.len(),
            limit: crate::MAX_INPUT_BYTES,
        });
    }
    let blocks = pem::parse_many(bytes).map_err(|e| Error::Pem {
        what: "the PEM text",
        problem: e.to_string(),
    })?;
    let mut out = PemContents::default();
    for block in blocks {
        if block.tag() == "CERTIFICATE" {
            out.certificates.push(block.into_contents());
        } else if block.tag().contains("PRIVATE KEY") {
            out.private_keys += 1;
        } else {
            out.other.push(block.tag().to_owned());
        }
    }
    Ok(out)
}

/// Every subject alternative name of a DER certificate, as openssl prints
/// them: `DNS:a.example`, `IP:10.0.0.1`, `URI:spiffe://...`, `email:a@b`.
///
/// # Errors
/// When `der` is not a certificate.
pub fn subject_alt_names(der: &[u8]) -> Result<Vec<String>> {
    let cert = parse(der, "certificate")?;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
            GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
            GeneralName::URI(u) => Some(format!("URI:{u}")),
            GeneralName::IPAddress(bytes) => ip(bytes).map(|a| format!("IP:{a}")),
            _ => None,
        })
        .collect())
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether `issuer_der`'s public key verifies the signature of `cert_der`
/// (and `cert_der` names it as its issuer). A self-signed CA is signed by
/// itself. Either input not being a certificate, or a signature algorithm
/// ring cannot check, is `false`.
#[must_use]
pub fn signed_by(cert_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok(cert), Ok(issuer)) = (
        parse(cert_der, "certificate"),
        parse(issuer_der, "issuer certificate"),
    ) else {
        return false;
    };
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// The SHA-256 fingerprint of a DER certificate, as openssl prints it:
/// uppercase hex pairs joined by `:`.
#[must_use]
pub fn colon_fingerprint(der: &[u8]) -> String {
    cert::fingerprint(der)
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaSpec, KeyAlgorithm, LeafPolicy, LeafRequest, generate_ca};
    use std::time::Duration;
    use time::OffsetDateTime;

    fn ca(cn: &str) -> crate::GeneratedCa {
        let spec = CaSpec {
            common_name: cn.to_owned(),
            organization: None,
            algorithm: KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(86_400),
        };
        generate_ca(&spec, OffsetDateTime::now_utc()).expect("CA")
    }

    fn der(pem_text: &str) -> Vec<u8> {
        pem_contents(pem_text.as_bytes())
            .expect("PEM")
            .certificates
            .remove(0)
    }

    #[test]
    fn keys_are_counted_and_never_returned() {
        let root = ca("root");
        let text = format!("{}{}", root.cert_pem, root.key.expose());
        let got = pem_contents(text.as_bytes()).expect("PEM");
        assert_eq!(got.certificates.len(), 1);
        assert_eq!(got.private_keys, 1);
        assert!(got.other.is_empty());
        assert_eq!(
            pem_contents(b"no pem here").expect("empty"),
            PemContents::default()
        );
        assert!(
            pem_contents(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err()
        );
    }

    #[test]
    fn signature_not_names_decides_who_signed() {
        let root = ca("same-name");
        let impostor = ca("same-name");
        let root_der = der(&root.cert_pem);
        assert!(signed_by(&root_der, &root_der), "self-signed");
        assert!(
            !signed_by(&root_der, &der(&impostor.cert_pem)),
            "same subject, other key"
        );
        let signing = crate::SigningCa::from_pem(
            root.cert_pem.as_bytes(),
            root.key.expose().as_bytes(),
            None,
            OffsetDateTime::now_utc(),
        )
        .expect("signing CA");
        let leaf = leaf_of(&signing);
        assert!(signed_by(&leaf, &root_der));
        assert!(!signed_by(&leaf, &der(&impostor.cert_pem)));
        assert!(!signed_by(b"junk", &root_der));
        let sans = subject_alt_names(&leaf).expect("SANs");
        assert_eq!(sans, ["DNS:app.example", "IP:10.0.0.7"]);
        let colons = colon_fingerprint(&leaf);
        assert_eq!(colons.len(), 32 * 3 - 1);
        assert_eq!(
            colons.replace(':', "").to_lowercase(),
            cert::fingerprint(&leaf)
        );
    }

    fn leaf_of(signing: &crate::SigningCa) -> Vec<u8> {
        let csr = test_csr();
        let parsed = crate::parse_csr(csr.as_bytes()).expect("CSR");
        let policy = LeafPolicy {
            default_duration: Duration::from_secs(3600),
            max_duration: Duration::from_secs(3600),
            allowed_usages: Vec::new(),
            permitted_dns_domains: Vec::new(),
            permitted_ip_ranges: Vec::new(),
        };
        let request = LeafRequest {
            duration: Some(Duration::from_secs(3600)),
            ..LeafRequest::default()
        };
        let signed = signing
            .sign(&parsed, &request, &policy, OffsetDateTime::now_utc())
            .expect("signed");
        der(&signed.certificate_pem)
    }

    fn test_csr() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["app.example".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.0.0.7".parse().expect("ip")));
        params
            .serialize_request(&key)
            .expect("CSR")
            .pem()
            .expect("PEM")
    }
}
