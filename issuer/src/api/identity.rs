//! Which issuer an object names: the kind, namespace and name every
//! controller, the signer cache and the metrics key issuers by.

/// Which of capstan's issuer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssuerKind {
    /// A namespaced `CAIssuer`, in the request's namespace.
    CaIssuer,
    /// A cluster-scoped `ClusterCAIssuer`.
    ClusterCaIssuer,
}

impl IssuerKind {
    /// The Kubernetes kind name.
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            Self::CaIssuer => "CAIssuer",
            Self::ClusterCaIssuer => "ClusterCAIssuer",
        }
    }
}

/// An issuer, by kind, namespace (for `CAIssuer`) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuerKey {
    /// `CAIssuer` or `ClusterCAIssuer`.
    pub kind: IssuerKind,
    /// Namespace of a `CAIssuer`; `None` for a `ClusterCAIssuer`.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl IssuerKey {
    /// Metric labels: kind, namespace (empty for cluster issuers), name.
    #[must_use]
    pub fn labels(&self) -> [&str; 3] {
        [
            self.kind.kind(),
            self.namespace.as_deref().unwrap_or(""),
            &self.name,
        ]
    }
}

impl std::fmt::Display for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} -n {ns}", self.kind.kind(), self.name),
            None => write!(f, "{}/{}", self.kind.kind(), self.name),
        }
    }
}
