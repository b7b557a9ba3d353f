//! Trust bundles: every CA a client must trust, as one PEM text.
//!
//! [`normalize`] parses any number of PEM inputs, refuses private keys,
//! de-duplicates by SHA-256 fingerprint, drops certificates expired at `now`,
//! orders newest first (notBefore descending, then fingerprint) and writes
//! canonical PEM (`\n` line endings, trailing newline), so the same set of
//! certificates always gives the same bytes. Total on any input.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::cert;
use crate::error::Result;

/// A normalized bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bundle {
    /// Canonical PEM.
    pub pem: String,
    /// Fingerprints, in bundle order.
    pub fingerprints: Vec<String>,
}

impl Bundle {
    /// How many certificates it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

/// Builds the bundle of every certificate in `inputs` that is valid at `now`.
///
/// # Errors
/// Invalid PEM, a certificate that does not parse, a private key, or an
/// input over the size limit.
pub fn normalize(inputs: &[&[u8]], now: OffsetDateTime) -> Result<Bundle> {
    let mut by_fingerprint: BTreeMap<String, (OffsetDateTime, Vec<u8>)> = BTreeMap::new();
    for input in inputs {
        for der in cert::certificates_from_pem(input, "the bundle")? {
            let summary = cert::summarize(&der)?;
            if summary.not_after < now {
                continue;
            }
            by_fingerprint
                .entry(summary.fingerprint)
                .or_insert((summary.not_before, der));
        }
    }
    let mut entries: Vec<(String, OffsetDateTime, Vec<u8>)> = by_fingerprint
        .into_iter()
        .map(|(fp, (nb, der))| (fp, nb, der))
        .collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Bundle {
        pem: entries
            .iter()
            .map(|(_, _, der)| cert::to_pem(der))
            .collect(),
        fingerprints: entries.into_iter().map(|(fp, _, _)| fp).collect(),
    })
}

/// `bundle` without the certificates whose fingerprints are listed.
///
/// # Errors
/// As [`normalize`].
pub fn without(bundle: &[u8], fingerprints: &[String], now: OffsetDateTime) -> Result<Bundle> {
    let kept: Vec<Vec<u8>> = cert::certificates_from_pem(bundle, "the bundle")?
        .into_iter()
        .filter(|der| !fingerprints.contains(&cert::fingerprint(der)))
        .collect();
    let pems: Vec<String> = kept.iter().map(|d| cert::to_pem(d)).collect();
    let refs: Vec<&[u8]> = pems.iter().map(String::as_bytes).collect();
    normalize(&refs, now)
}
