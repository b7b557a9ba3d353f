//! `issuer::Error`: every way a reconcile can fail, with the class that
//! decides how it is retried and the category used as Event reason and
//! metric label; and the two refusals it is built from, each keeping the
//! PKI's own error as its source: why a CA Secret cannot be used
//! ([`CaSecretProblem`]) and why a request cannot be signed ([`SignError`]).

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::api::conditions::category;
use crate::api::identity::IssuerKey;
use crate::ca::layout::RecordError;
use crate::policy::SpecError;

/// How an error is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Expected to clear by itself soon: requeue after this long.
    Pending(Duration),
    /// A failed API call: back off (per object) and retry.
    Transient,
    /// Retrying cannot help until something changes.
    Permanent,
}

/// Requeue of an error that retrying cannot help, in case what it depends
/// on changed without a watch event telling.
const PERMANENT_RECHECK: Duration = Duration::from_secs(300);
/// Requeue after a conflict: re-read at once, almost.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

pub use capstan_common::api::ObjectName;

impl From<&IssuerKey> for ObjectName {
    fn from(key: &IssuerKey) -> Self {
        Self {
            kind: key.kind.kind(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

/// What was being done when an API call failed, as the log says it.
pub mod verb {
    /// A get.
    pub const READ: &str = "reading";
    /// A create.
    pub const CREATE: &str = "creating";
    /// A replace.
    pub const UPDATE: &str = "updating";
    /// A patch of `/status`.
    pub const WRITE_STATUS: &str = "writing the status of";
    /// Building (not yet sending) a patch of `/status`.
    pub const BUILD_STATUS_PATCH: &str = "building the status patch of";
}

/// Errors of the issuer's controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call about `object` failed.
    #[error("{verb} {object}: {source}")]
    Kube {
        /// What was being done, from [`verb`].
        verb: &'static str,
        /// The object it was done to.
        object: ObjectName,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The CA Secret holds something other than a usable CA.
    #[error("CA {secret}: {problem}")]
    CaSecret {
        /// The Secret.
        secret: ObjectName,
        /// What is wrong, for a human.
        #[source]
        problem: CaSecretProblem,
    },
    /// Another writer changed the object first; re-read and try again.
    #[error("{object} was changed by another writer; retrying with a fresh read")]
    Conflict {
        /// The object written.
        object: ObjectName,
    },
}

/// Why a CA Secret cannot be used or changed; the message is what the
/// issuer's `Ready` condition says after `CA Secret namespace/name: `.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretProblem {
    /// A key the Secret must have is absent or empty.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A rotation was published, but the next CA is not all there.
    #[error("next.crt or next.key is missing mid-rotation")]
    RotationIncomplete,
    /// A certificate key holds PEM without a certificate.
    #[error("no CERTIFICATE block")]
    NoCertificate,
    /// A certificate key is not PEM.
    #[error(transparent)]
    Pem(#[from] pem::PemError),
    /// The PKI refused a certificate, bundle or key.
    #[error(transparent)]
    Pki(#[from] capstan_pki::Error),
    /// The rotation record in the Secret's annotations is corrupt.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A publish step was to be written without the CA it publishes.
    #[error("no CA was generated for the publish step")]
    NotGenerated,
    /// Generating a CA on the blocking pool did not finish (the task
    /// panicked or the runtime is shutting down).
    #[error("CA generation did not finish: {0}")]
    Generation(#[source] tokio::task::JoinError),
}

/// Why a request can never be signed; the message is the `Failed`
/// condition's and the Event's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The PKI refused the CSR or what it asks for.
    #[error("Failed to sign: {0}")]
    Pki(#[from] capstan_pki::Error),
    /// The requested duration is not a duration.
    #[error("Failed to sign: {0}")]
    Duration(#[from] SpecError),
    /// A CSR's `spec.expirationSeconds` is below what Kubernetes allows.
    #[error("Failed to sign: spec.expirationSeconds must be at least {minimum}")]
    ExpirationTooShort {
        /// The shortest lifetime allowed, in seconds.
        minimum: i32,
    },
}

impl Error {
    /// A failed API call: `verb` of `object`.
    #[must_use]
    pub fn kube(verb: &'static str, object: ObjectName, source: kube::Error) -> Self {
        Self::Kube {
            verb,
            object,
            source,
        }
    }

    /// A failed write (`verb`) of `object`: a 409 is a [`Error::Conflict`]
    /// (re-read and retry), anything else an [`Error::Kube`].
    #[must_use]
    pub fn write(verb: &'static str, object: ObjectName, source: kube::Error) -> Self {
        if capstan_common::api::is_conflict(&source) {
            Self::Conflict { object }
        } else {
            Self::kube(verb, object, source)
        }
    }

    /// The category: Event reason and metric label.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => category::API_ERROR,
            Self::CaSecret { .. } => category::INVALID_CA_SECRET,
            Self::Conflict { .. } => category::CONFLICT,
        }
    }

    /// How to retry.
    #[must_use]
    pub fn retry(&self) -> Retry {
        match self {
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
                    Retry::Permanent
                }
                _ => Retry::Transient,
            },
            Self::Conflict { .. } => Retry::Pending(CONFLICT_RETRY),
            Self::CaSecret { .. } => Retry::Permanent,
        }
    }

    /// The requeue for a failed reconcile, by retry class; `backoff` is the
    /// object's next delay under the workspace's reconcile backoff
    /// ([`capstan_common::backoff::Retries`]), taken for transient errors.
    #[must_use]
    pub fn requeue(&self, backoff: impl FnOnce() -> Duration) -> Action {
        match self.retry() {
            Retry::Pending(after) => Action::requeue(after),
            Retry::Transient => Action::requeue(backoff()),
            Retry::Permanent => Action::requeue(PERMANENT_RECHECK),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("refused", "Refused").with_code(code),
        ))
    }

    fn secret() -> ObjectName {
        ObjectName::namespaced("Secret", "certs", "ca")
    }

    #[test]
    fn a_409_on_a_write_is_a_conflict_on_the_object_written() {
        let e = Error::write(verb::UPDATE, secret(), api(409));
        assert!(matches!(&e, Error::Conflict { object } if *object == secret()));
        assert_eq!(
            e.to_string(),
            "Secret certs/ca was changed by another writer; retrying with a fresh read"
        );
        assert_eq!(e.retry(), Retry::Pending(CONFLICT_RETRY));
        let e = Error::write(verb::UPDATE, secret(), api(500));
        assert!(matches!(&e, Error::Kube { object, .. } if *object == secret()));
        assert!(
            e.to_string().starts_with("updating Secret certs/ca: "),
            "{e}"
        );
    }

    #[test]
    fn transient_errors_back_off_and_permanent_ones_wait() {
        let failed = Error::kube(verb::READ, secret(), api(503));
        assert_eq!(
            failed.requeue(|| Duration::from_secs(8)),
            Action::requeue(Duration::from_secs(8))
        );
        let forbidden = Error::kube(verb::READ, secret(), api(403));
        let unused = || -> Duration { panic!("no backoff for a permanent error") };
        assert_eq!(
            forbidden.requeue(unused),
            Action::requeue(PERMANENT_RECHECK)
        );
    }

    #[test]
    fn messages_name_the_object_as_users_read_it() {
        let e = Error::CaSecret {
            secret: secret(),
            problem: CaSecretProblem::Missing("tls.crt"),
        };
        assert_eq!(e.to_string(), "CA Secret certs/ca: tls.crt is missing");
        assert_eq!(e.category(), "InvalidCASecret");
        assert_eq!(
            ObjectName::cluster("CertificateSigningRequest", "csr-1").to_string(),
            "CertificateSigningRequest csr-1"
        );
        let short = SignError::ExpirationTooShort { minimum: 600 };
        assert_eq!(
            short.to_string(),
            "Failed to sign: spec.expirationSeconds must be at least 600"
        );
    }
}
