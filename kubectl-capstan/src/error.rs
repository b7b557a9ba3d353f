//! The plugin's one error type, and the exit code of each kind.

/// Exit code: a command failed (API error, object not found, bad input).
pub const EXIT_ERROR: i32 = 1;
/// Exit code: `check` found targets or workloads out of sync.
pub const EXIT_OUT_OF_SYNC: i32 = 3;
/// Exit code: `rotate` did not see the new CA sign within `--timeout`.
pub const EXIT_TIMEOUT: i32 = 4;

/// Why a command failed; every message is for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read, or names no usable context.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done (`reading ClusterCAIssuer/x`).
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An argument cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The command cannot do what was asked in the object's current state.
    #[error("{0}")]
    Refused(String),
    /// `rotate` gave up waiting.
    #[error("{0}")]
    Timeout(String),
    /// Output could not be written or encoded.
    #[error("writing the output: {0}")]
    Output(String),
}

impl Error {
    /// An API error with what was being done.
    #[must_use]
    pub fn api(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }

    /// The process exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Timeout(_) => EXIT_TIMEOUT,
            _ => EXIT_ERROR,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timeouts_have_their_own_code() {
        assert_eq!(Error::Timeout("t".into()).exit_code(), EXIT_TIMEOUT);
        assert_eq!(Error::NotFound("n".into()).exit_code(), EXIT_ERROR);
        assert_eq!(Error::Refused("r".into()).exit_code(), EXIT_ERROR);
    }
}
