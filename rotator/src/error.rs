//! `rotator::Error`: what a rotator reconcile can fail on.

pub use capstan_common::api::ObjectName;

/// What was being done when an API call failed, as the log says it.
pub mod verb {
    /// A get.
    pub const READ: &str = "reading";
    /// A create.
    pub const CREATE: &str = "creating";
    /// A replace.
    pub const UPDATE: &str = "updating";
    /// A delete.
    pub const DELETE: &str = "deleting";
    /// A patch.
    pub const PATCH: &str = "patching";
    /// A patch of `/status`.
    pub const WRITE_STATUS: &str = "writing the status of";
    /// The lists of the ConfigMaps a `CABundle` writes.
    pub const LIST_TARGETS: &str = "listing the targets of";
}

/// Errors of the rotator's controllers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call about `object` failed.
    #[error("{verb} {}: {source}", object.phrase())]
    Kube {
        /// What was being done, from [`verb`].
        verb: &'static str,
        /// The object it was done to.
        object: ObjectName,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Listing the objects of one kind in a namespace failed.
    #[error("listing {kind}s -n {namespace}: {source}")]
    List {
        /// The kind listed, e.g. `Deployment`.
        kind: &'static str,
        /// The namespace.
        namespace: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A watch-fed cache the reconcile reads from stopped (the process is
    /// shutting down).
    #[error("the {kind} cache stopped")]
    CacheStopped {
        /// The kind it caches, e.g. `Namespace`.
        kind: &'static str,
    },
}

impl Error {
    /// Wraps a client error with what was being done and to which object.
    pub fn kube(verb: &'static str, object: ObjectName, source: kube::Error) -> Self {
        Self::Kube {
            verb,
            object,
            source,
        }
    }

    /// Whether the API answered 404 Not Found.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::Kube { source: kube::Error::Api(status), .. } | Self::List { source: kube::Error::Api(status), .. }
                if status.code == 404
        )
    }

    /// The category: Event reason and metric label.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { .. } | Self::List { .. } | Self::CacheStopped { .. } => {
                crate::reasons::API_ERROR
            }
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn not_found() -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("secrets \"tls\" not found", "NotFound").with_code(404),
        ))
    }

    /// The log names the object as the rotator's Events do, and keeps the
    /// client error as the source.
    #[test]
    fn api_errors_name_their_object() {
        let e = Error::kube(
            verb::READ,
            ObjectName::namespaced("Secret", "apps", "tls"),
            not_found(),
        );
        assert!(
            e.to_string().starts_with("reading Secret/tls -n apps: "),
            "{e}"
        );
        assert!(e.is_not_found());
        assert!(std::error::Error::source(&e).is_some());
        let listed = Error::List {
            kind: "Deployment",
            namespace: "apps".to_owned(),
            source: not_found(),
        };
        assert!(
            listed
                .to_string()
                .starts_with("listing Deployments -n apps: "),
            "{listed}"
        );
        let cluster = Error::kube(
            verb::WRITE_STATUS,
            ObjectName::cluster("CABundle", "corp"),
            not_found(),
        );
        assert!(
            cluster
                .to_string()
                .starts_with("writing the status of CABundle/corp: "),
            "{cluster}"
        );
        assert_eq!(cluster.category(), crate::reasons::API_ERROR);
    }
}
