//! `issuer::Error`: every way a reconcile can fail, with the class that
//! decides how it is retried and the category used as Event reason and
//! metric label.

use std::time::Duration;

/// How an error is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Expected to clear by itself soon: requeue after this long.
    Pending(Duration),
    /// A failed API call or a conflict: back off and retry.
    Transient,
    /// Retrying cannot help until something changes.
    Permanent,
}

/// Errors of the issuer's controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, e.g. "patching status of CertificateRequest apps/metrics".
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The issuer spec is invalid.
    #[error("invalid issuer spec: {0}")]
    Spec(#[from] crate::policy::SpecError),
    /// The CA Secret holds something other than a usable CA.
    #[error("CA Secret {secret}: {problem}")]
    CaSecret {
        /// `namespace/name` of the Secret.
        secret: String,
        /// What is wrong, for a human.
        problem: String,
    },
    /// Another writer changed the object first; re-read and try again.
    #[error("{0} was changed by another writer; retrying with a fresh read")]
    Conflict(String),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// A failed write of `object` (e.g. "Secret certs/ca"): a 409 is a
    /// [`Error::Conflict`] (re-read and retry), anything else a
    /// [`Error::Kube`] of `action`.
    pub fn write(object: String, action: impl Into<String>, source: kube::Error) -> Self {
        match source {
            kube::Error::Api(s) if s.code == 409 => Self::Conflict(object),
            source => Self::kube(action, source),
        }
    }

    /// The category: Event reason and metric label.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "APIError",
            Self::Spec(_) => "InvalidSpec",
            Self::CaSecret { .. } => "InvalidCASecret",
            Self::Conflict(_) => "Conflict",
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
            Self::Conflict(_) => Retry::Pending(Duration::from_millis(200)),
            Self::Spec(_) | Self::CaSecret { .. } => Retry::Permanent,
        }
    }
}

impl Error {
    /// The requeue for a failed reconcile, by retry class.
    #[must_use]
    pub fn requeue(&self) -> kube::runtime::controller::Action {
        use kube::runtime::controller::Action;
        match self.retry() {
            Retry::Pending(after) => Action::requeue(after),
            Retry::Transient => Action::requeue(Duration::from_secs(5)),
            Retry::Permanent => Action::requeue(Duration::from_secs(300)),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
