//! Condition types, condition reasons and Event reasons written by the
//! issuer: the one place they are spelled. Metrics label outcomes and
//! errors with the same constants.
//!
//! The request reasons are cert-manager's own
//! (`pkg/apis/certmanager/v1/types_certificaterequest.go`), so that
//! cert-manager's controllers and `kubectl` users read them as they read the
//! built-in issuers'.

/// The `Ready` condition type, on issuers and on requests.
pub const READY: &str = "Ready";
/// The `Approved` condition type cert-manager's approver sets on requests.
pub const APPROVED: &str = "Approved";
/// The `Denied` condition type an approver sets on requests.
pub const DENIED: &str = "Denied";
/// The `InvalidRequest` condition type: the request can never be signed.
pub const INVALID_REQUEST: &str = "InvalidRequest";
/// The `Failed` condition type of a `CertificateSigningRequest`.
pub const FAILED: &str = "Failed";

/// Condition status `True`.
pub const TRUE: &str = "True";
/// Condition status `False`.
pub const FALSE: &str = "False";

/// Request reasons (cert-manager's `CertificateRequestReason*`): of the
/// `Ready` condition and the Events on `CertificateRequest`s, and of the
/// `Failed` condition and the Events on `CertificateSigningRequest`s.
pub mod request {
    /// The request is waiting: for approval, for its issuer, or for a retry.
    pub const PENDING: &str = "Pending";
    /// The request failed for good; `failureTime` is set.
    pub const FAILED: &str = "Failed";
    /// The certificate was issued.
    pub const ISSUED: &str = "Issued";
    /// An approver denied the request; it is never signed.
    pub const DENIED: &str = "Denied";
}

/// Issuer reasons.
pub mod issuer {
    /// The CA is loaded and valid; requests are being signed.
    pub const READY: &str = "Ready";
    /// The spec names no CA source, or both, or has invalid values.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The CA Secret named by the spec does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The CA Secret's certificate and key are not a usable CA key pair.
    pub const INVALID_KEY_PAIR: &str = "InvalidKeyPair";
    /// The CA certificate has expired (or is not valid yet).
    pub const CA_EXPIRED: &str = "CAExpired";

    /// Event: a self-managed issuer generated a root CA.
    pub const CA_GENERATED: &str = "CAGenerated";
    /// Event: the CA Secret was created (library-go's reason).
    pub const SECRET_CREATED: &str = "SecretCreated";
    /// Event: the CA Secret was updated (library-go's reason).
    pub const SECRET_UPDATED: &str = "SecretUpdated";
    /// Event: a new CA was published in the bundle.
    pub const CA_ROTATION_STARTED: &str = "CARotationStarted";
    /// Event: the new CA signs; the old one is retired.
    pub const CA_ROTATED: &str = "CARotated";
    /// Event: a retired CA left the bundle.
    pub const CA_RETIRED: &str = "CARetired";
}

/// Error categories: the `category` label of
/// `capstan_issuer_reconcile_errors_total`.
pub mod category {
    /// A Kubernetes API call failed.
    pub const API_ERROR: &str = "APIError";
    /// The CA Secret cannot be used.
    pub const INVALID_CA_SECRET: &str = "InvalidCASecret";
    /// Another writer changed the object first.
    pub const CONFLICT: &str = "Conflict";
}
