//! The one error type of `capstan-common`, worded for the person reading
//! the log line or the start-up failure.

use std::path::PathBuf;

/// What can go wrong in process plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, environment variable or config-file key has a bad value.
    #[error("{0}")]
    Config(String),

    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// Certificates or keys that cannot be served.
    #[error("{what}: {problem}")]
    Tls {
        /// What was being loaded.
        what: String,
        /// Why it cannot be used.
        problem: String,
    },

    /// A listen address could not be bound.
    #[error("listening on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },

    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },

    /// A PKI operation failed.
    #[error(transparent)]
    Pki(#[from] capstan_pki::Error),
}

impl Error {
    /// A Kubernetes API error while doing `action`.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }
}
