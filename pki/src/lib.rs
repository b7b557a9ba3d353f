//! Pure PKI for capstan: no Kubernetes, no async, no IO.
//!
//! * [`ca`] — generate a self-signed root CA ([`KeyAlgorithm`]), load a CA
//!   key pair from PEM and check it can sign ([`SigningCa`]);
//! * [`csr`] — parse a PKCS#10 request, verify its self-signature, refuse
//!   weak or unsupported keys ([`ParsedCsr`]);
//! * [`duration`] — durations in Go's syntax, as cert-manager writes them,
//!   refusing zero, negative and absurd values;
//! * [`sign`] — the leaf policy (durations, usages, name constraints) and
//!   signing a leaf from a request ([`SigningCa::sign`]);
//! * [`bundle`] — trust bundles: parse, de-duplicate, drop expired, order
//!   newest first, serialize deterministically;
//! * [`cert`] — certificate summaries and fingerprints;
//! * [`inspect`] — what PEM a user holds carries: certificates (private keys
//!   counted, never returned), every SAN, which CA's signature verifies;
//! * [`serving`] — a serving certificate signed locally for the metrics
//!   endpoint's dynamic TLS;
//! * [`secret_key`] — a private-key wrapper that never prints its contents.
//!
//! Certificates follow RFC 5280: 128-bit random positive serials, subject and
//! authority key identifiers, critical basic constraints, and a critical
//! subjectAltName when the subject is empty (§4.2.1.6), as Go's crypto/x509
//! writes them. ring is the only crypto provider.
//!
//! Key handling: private keys live in [`SecretKeyPem`] (zeroed on drop, no
//! `Debug`/`Display`), and no error message ever contains key material.

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod csr;
pub mod duration;
mod error;
pub mod inspect;
mod keys;
pub mod secret_key;
pub mod serving;
pub mod sign;

pub use bundle::{Bundle, normalize as normalize_bundle};
pub use ca::{CaSpec, GeneratedCa, KeyAlgorithm, SigningCa, generate_ca};
pub use cert::{Summary, fingerprint, summarize};
pub use csr::{ParsedCsr, parse_csr};
pub use duration::{MAX_DURATION, parse_duration};
pub use error::{Error, Result};
pub use secret_key::SecretKeyPem;
pub use serving::ServingCert;
pub use sign::{LeafPolicy, LeafRequest, SignedLeaf, Truncation, is_known_usage, parse_cidr};

/// Largest PEM or DER input accepted anywhere (CSRs, certificates, bundles,
/// private keys).
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
