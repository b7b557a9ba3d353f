//! `pki::Error`: every way PKI input can be refused, worded for the user who
//! has to fix it. No variant ever carries key material.

use time::OffsetDateTime;

/// Why a PKI operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is larger than [`crate::MAX_INPUT_BYTES`].
    #[error("{what} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid PEM, or no block of the expected kind.
    #[error("{what}: {problem}")]
    Pem {
        /// What was being read (`tls.crt`, `the CSR`, ...).
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A certificate could not be parsed.
    #[error("{what}: not a valid X.509 certificate: {problem}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// Parser message.
        problem: String,
    },
    /// A private key could not be read.
    #[error("{what}: not a usable private key ({problem})")]
    PrivateKey {
        /// Which key.
        what: &'static str,
        /// What is wrong, never the key itself.
        problem: String,
    },
    /// The private key does not belong to the certificate.
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    /// The certificate may not sign certificates.
    #[error("certificate {subject} is not a CA: {problem}")]
    NotCa {
        /// Subject of the certificate.
        subject: String,
        /// Which constraint is missing.
        problem: &'static str,
    },
    /// The CA has expired.
    #[error("CA certificate {subject} expired at {not_after}")]
    CaExpired {
        /// Subject of the CA.
        subject: String,
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The CA is not valid yet.
    #[error("CA certificate {subject} is not valid before {not_before}")]
    CaNotYetValid {
        /// Subject of the CA.
        subject: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// The CSR could not be parsed.
    #[error("the CSR could not be parsed: {0}")]
    Csr(String),
    /// The CSR's self-signature does not verify.
    #[error("the CSR's signature does not verify: it was altered or signed with another key")]
    CsrSignature,
    /// The key is too weak.
    #[error("the {algorithm} key has {bits} bits; at least {minimum} are required")]
    WeakKey {
        /// Key algorithm.
        algorithm: &'static str,
        /// Its size.
        bits: usize,
        /// The minimum.
        minimum: usize,
    },
    /// The key is larger than capstan accepts (huge RSA keys make every
    /// verification and signature slow: a denial of service).
    #[error("the {algorithm} key has {bits} bits; at most {maximum} are accepted")]
    KeyTooLarge {
        /// Key algorithm.
        algorithm: &'static str,
        /// Its size.
        bits: usize,
        /// The maximum.
        maximum: usize,
    },
    /// A duration is not valid: unparsable, not positive, or longer than
    /// the limit.
    #[error("{0}")]
    Duration(String),
    /// The key or signature algorithm is not supported.
    #[error("{0} keys are not supported")]
    UnsupportedAlgorithm(String),
    /// A requested usage is unknown or not allowed.
    #[error("{0}")]
    Usage(String),
    /// A requested name is outside the permitted names.
    #[error("{0}")]
    NameNotPermitted(String),
    /// The request names nothing: no subject and no SANs.
    #[error("the CSR has neither a subject nor any subject alternative name")]
    NoNames,
    /// A certificate field (a trust bundle, `tls.crt`, `ca.crt`) contained a
    /// private key.
    #[error("{0} contains a private key; it must hold certificates only")]
    PrivateKeyInBundle(&'static str),
    /// Generating or signing failed inside the crypto library.
    #[error("{what} failed: {problem}")]
    Crypto {
        /// The operation.
        what: &'static str,
        /// The library's message.
        problem: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
