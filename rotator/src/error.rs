//! `rotator::Error`: what a rotator reconcile can fail on.

/// Errors of the rotator's controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A source cannot be used (a private key in a bundle source, bad PEM...).
    #[error("{0}")]
    Source(String),
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Whether the API answered 404 Not Found.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube { source: kube::Error::Api(status), .. } if status.code == 404)
    }

    /// The category: Event reason and metric label.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } => crate::reasons::API_ERROR,
            Self::Source(_) => crate::reasons::INVALID_SOURCE,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
