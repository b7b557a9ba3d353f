//! From the data of a source object to a bundle, or to the reason there is
//! none. Pure: the controllers fetch, this decides.
//!
//! * Which key is read: the one a `CABundle` names, else `ca-bundle.crt`,
//!   else `ca.crt` (else `tls.crt` for an issuer's CA Secret, which a user
//!   may have provided without `ca.crt`).
//! * A key holding a private key — any PEM block whose label contains
//!   `PRIVATE KEY` — is refused whole, so a mistyped key name never copies
//!   key material into a ConfigMap anyone can read.
//! * The bundle is [`capstan_pki::normalize_bundle`]'s: de-duplicated,
//!   expired certificates dropped, newest first, the same bytes for the same
//!   set, so an unchanged set never causes a write.

use std::collections::BTreeMap;

use capstan_pki::Bundle;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use time::OffsetDateTime;

use crate::api::injection::{CA_CRT, DEFAULT_KEY};
use crate::reasons::{INVALID_SOURCE, PRIVATE_KEY_REFUSED, SOURCE_IS_TARGET, SOURCE_MISSING};

/// Keys read from a Secret or ConfigMap when none is named.
pub const DEFAULT_KEYS: &[&str] = &[DEFAULT_KEY, CA_CRT];
/// Keys read from an issuer's CA Secret: as [`DEFAULT_KEYS`], then the
/// signing certificate of a user-provided CA Secret without `ca.crt`.
pub const ISSUER_KEYS: &[&str] = &[DEFAULT_KEY, CA_CRT, "tls.crt"];

/// Why a source gives no certificates; the message names the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The object or key does not exist (yet).
    Missing(String),
    /// The key holds a private key; nothing is copied.
    PrivateKey(String),
    /// The data cannot be used (bad PEM, no valid certificate, bad spec).
    Invalid(String),
    /// The source is a ConfigMap a bundle writes; reading it would keep a
    /// removed CA alive through the bundle's own output.
    SourceIsTarget(String),
}

impl Problem {
    /// The reason, for Events and conditions.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => SOURCE_MISSING,
            Self::PrivateKey(_) => PRIVATE_KEY_REFUSED,
            Self::Invalid(_) => INVALID_SOURCE,
            Self::SourceIsTarget(_) => SOURCE_IS_TARGET,
        }
    }

    /// The human-readable message.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Missing(m) | Self::PrivateKey(m) | Self::Invalid(m) | Self::SourceIsTarget(m) => {
                m
            }
        }
    }
}

/// A Secret's keys and values, as bundle sources read them.
#[must_use]
pub fn secret_bytes(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// A ConfigMap's keys and values, `binaryData` and `data` together (a key
/// in both reads as its `data`), as bundle sources read them.
#[must_use]
pub fn config_map_bytes(config_map: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = config_map
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.extend(
        config_map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    data
}

/// Picks the key to read from `data`: `named` if given, else the first of
/// `defaults` present. `None` when that key is absent.
#[must_use]
pub fn pick_key<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    named: Option<&str>,
    defaults: &[&str],
) -> Option<(&'a str, &'a [u8])> {
    let found = |k: &str| {
        data.get_key_value(k)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    };
    match named {
        Some(key) => found(key),
        None => defaults.iter().find_map(|k| found(k)),
    }
}

/// Whether `bytes` hold a PEM private key of any kind (`PRIVATE KEY`,
/// `RSA PRIVATE KEY`, `EC PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`...).
#[must_use]
pub fn has_private_key(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).lines().any(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .is_some_and(|label| label.contains("PRIVATE KEY"))
    })
}

/// The certificates of one source key, or why they cannot be used.
/// `object` names the source in messages (`Secret/ca -n certs`).
///
/// # Errors
/// [`Problem::Missing`] when no key is found, [`Problem::PrivateKey`] when it
/// holds a private key.
pub fn read_key<'a>(
    object: &str,
    data: &'a BTreeMap<String, Vec<u8>>,
    named: Option<&str>,
    defaults: &[&str],
) -> Result<&'a [u8], Problem> {
    let Some((key, bytes)) = pick_key(data, named, defaults) else {
        let wanted = named.map_or_else(|| defaults.join(" or "), str::to_owned);
        return Err(Problem::Missing(format!("{object} has no key {wanted}")));
    };
    if has_private_key(bytes) {
        return Err(Problem::PrivateKey(format!(
            "{object} key {key} holds a private key; refusing to copy it into a ConfigMap"
        )));
    }
    Ok(bytes)
}

/// The bundle of every certificate in `inputs` valid at `now`.
///
/// # Errors
/// When the PEM is invalid, holds a private key, or leaves no certificate.
pub fn build(inputs: &[&[u8]], now: OffsetDateTime) -> Result<Bundle, Problem> {
    let bundle = capstan_pki::normalize_bundle(inputs, now).map_err(|e| match e {
        capstan_pki::Error::PrivateKeyInBundle(_) => Problem::PrivateKey(format!(
            "a source holds a private key; refusing to copy it into a ConfigMap ({e})"
        )),
        other => Problem::Invalid(format!("the sources are not PEM certificates: {other}")),
    })?;
    if bundle.is_empty() {
        return Err(Problem::Invalid(
            "the sources hold no certificate valid now".to_owned(),
        ));
    }
    Ok(bundle)
}

/// SHA-256 of the bundle's bytes, lowercase hex: `status.bundleHash`.
#[must_use]
pub fn bundle_hash(pem: &str) -> String {
    use std::fmt::Write as _;
    ring::digest::digest(&ring::digest::SHA256, pem.as_bytes())
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed CA certificate, PEM, valid from `not_before` for `days`.
    pub(crate) fn ca_pem(cn: &str, not_before: OffsetDateTime, days: i64) -> String {
        let spec = capstan_pki::CaSpec {
            common_name: cn.to_owned(),
            organization: None,
            algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
            lifetime: std::time::Duration::from_secs(
                u64::try_from(days).expect("positive") * 86_400,
            ),
        };
        capstan_pki::generate_ca(&spec, not_before)
            .expect("CA")
            .cert_pem
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600).expect("valid")
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn ca_bundle_is_read_before_ca_crt() {
        let d = data(&[("ca.crt", "one"), ("ca-bundle.crt", "both")]);
        assert_eq!(
            pick_key(&d, None, DEFAULT_KEYS),
            Some(("ca-bundle.crt", &b"both"[..]))
        );
        let d = data(&[("ca.crt", "one"), ("tls.crt", "leaf")]);
        assert_eq!(
            pick_key(&d, None, DEFAULT_KEYS),
            Some(("ca.crt", &b"one"[..]))
        );
        let d = data(&[("tls.crt", "signing")]);
        assert_eq!(pick_key(&d, None, DEFAULT_KEYS), None);
        assert_eq!(
            pick_key(&d, None, ISSUER_KEYS),
            Some(("tls.crt", &b"signing"[..]))
        );
        assert_eq!(pick_key(&d, Some("ca.crt"), ISSUER_KEYS), None);
    }

    #[test]
    fn any_private_key_block_is_refused_whatever_the_key_name() {
        for label in [
            "PRIVATE KEY",
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
        ] {
            let text = format!(
                "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n-----BEGIN {label}-----\nAA==\n-----END {label}-----\n"
            );
            let d = data(&[("ca-bundle.crt", &text)]);
            let err = read_key("Secret/s -n ns", &d, None, DEFAULT_KEYS).expect_err(label);
            assert_eq!(err.reason(), PRIVATE_KEY_REFUSED);
            assert!(
                err.message().contains("Secret/s -n ns key ca-bundle.crt"),
                "{err:?}"
            );
        }
        assert!(!has_private_key(b"-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn a_missing_key_names_what_was_looked_for() {
        let err = read_key("Secret/s -n ns", &data(&[]), None, DEFAULT_KEYS).expect_err("none");
        assert_eq!(
            err,
            Problem::Missing("Secret/s -n ns has no key ca-bundle.crt or ca.crt".into())
        );
        let err = read_key(
            "ConfigMap/c -n ns",
            &data(&[]),
            Some("roots.pem"),
            DEFAULT_KEYS,
        )
        .expect_err("none");
        assert!(err.message().ends_with("no key roots.pem"), "{err:?}");
    }

    #[test]
    fn bundles_are_deduplicated_and_stable_and_drop_expired_cas() {
        let old = ca_pem("old", now() - time::Duration::days(10), 30);
        let new = ca_pem("new", now() - time::Duration::days(1), 30);
        let expired = ca_pem("expired", now() - time::Duration::days(40), 30);
        let a =
            build(&[old.as_bytes(), new.as_bytes(), expired.as_bytes()], now()).expect("bundle");
        let b = build(&[new.as_bytes(), old.as_bytes(), old.as_bytes()], now()).expect("bundle");
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        let newest = build(&[new.as_bytes()], now()).expect("bundle");
        assert_eq!(a.fingerprints[0], newest.fingerprints[0], "newest first");
        assert_eq!(bundle_hash(&a.pem), bundle_hash(&b.pem));
        assert_eq!(bundle_hash(&a.pem).len(), 64);
    }

    #[test]
    fn no_valid_certificate_is_a_problem_not_an_empty_bundle() {
        let expired = ca_pem("expired", now() - time::Duration::days(40), 30);
        let err = build(&[expired.as_bytes()], now()).expect_err("empty");
        assert_eq!(err.reason(), INVALID_SOURCE);
        let err = build(&[b"not pem at all -----BEGIN"], now());
        assert!(err.is_err());
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            bundle_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
