//! Reading the Kubernetes API's answers the same way in every capstan
//! controller, and naming the object an API error concerns
//! ([`ObjectName`]).

/// Whether the API server refused a write with 409 Conflict: the object
/// changed since it was read (a stale `resourceVersion`), or another writer
/// created it first. The writer re-reads and decides again; it is never an
/// error to report as such.
#[must_use]
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The object an error concerns: its kind, namespace (none for
/// cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectName {
    /// The Kubernetes kind, e.g. `Secret`.
    pub kind: &'static str,
    /// The namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

impl ObjectName {
    /// A namespaced object.
    #[must_use]
    pub fn namespaced(kind: &'static str, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// A cluster-scoped object.
    #[must_use]
    pub fn cluster(kind: &'static str, name: &str) -> Self {
        Self {
            kind,
            namespace: None,
            name: name.to_owned(),
        }
    }

    /// `Kind/name -n namespace`, or `Kind/name`: how library-go's Events and
    /// the rotator's logs name an object ([`crate::events::object_phrase`]).
    #[must_use]
    pub fn phrase(&self) -> String {
        crate::events::object_phrase(self.kind, self.namespace.as_deref(), &self.name)
    }

    /// `namespace/name`, or `name` for a cluster-scoped object.
    #[must_use]
    pub fn path(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// `Kind namespace/name`, or `Kind name`.
impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("refused", "Refused").with_code(code),
        ))
    }

    #[test]
    fn only_a_409_answer_is_a_conflict() {
        assert!(is_conflict(&api(409)));
        for code in [400, 403, 404, 410, 422, 429, 500] {
            assert!(!is_conflict(&api(code)), "{code}");
        }
        let io = kube::Error::Service(Box::new(std::io::Error::other("connection reset")));
        assert!(!is_conflict(&io));
    }
}
