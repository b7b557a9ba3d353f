//! Which issuer an `ISSUER` argument names. Pure.
//!
//! | argument | means |
//! | --- | --- |
//! | `clustercaissuer/NAME` (also `clustercaissuers`, `ccai`, `ClusterCAIssuer`) | that `ClusterCAIssuer` |
//! | `caissuer/NAME` (also `caissuers`, `cai`, `CAIssuer`) | that `CAIssuer` in the namespace (`-n`) |
//! | `NAME` | the `ClusterCAIssuer` if there is one, else the `CAIssuer` in the namespace |

use std::fmt;

use serde::Serialize;

use crate::error::{Error, Result};

/// The two issuer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Cluster-scoped `ClusterCAIssuer`.
    ClusterCAIssuer,
    /// Namespaced `CAIssuer`.
    CAIssuer,
}

impl Kind {
    /// The kind's name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterCAIssuer => "ClusterCAIssuer",
            Self::CAIssuer => "CAIssuer",
        }
    }
}

/// What the argument asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// One kind, by name.
    Exactly(Kind, String),
    /// A bare name: the `ClusterCAIssuer` first, then the `CAIssuer`.
    Either(String),
}

/// One issuer: kind, namespace (for a `CAIssuer`) and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerId {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace; `None` for a `ClusterCAIssuer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl IssuerId {
    /// The issuer of `kind` named `name`; the namespace is kept only for a
    /// `CAIssuer`.
    #[must_use]
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: (kind == Kind::CAIssuer).then(|| namespace.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for IssuerId {
    /// `ClusterCAIssuer/x`, `CAIssuer/x -n ns`: as capstan's Events name objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} -n {ns}", self.kind.as_str(), self.name),
            None => write!(f, "{}/{}", self.kind.as_str(), self.name),
        }
    }
}

fn kind_of(word: &str) -> Option<Kind> {
    let lower = word.to_ascii_lowercase();
    let lower = lower.strip_suffix(".capstan.dev").unwrap_or(&lower);
    match lower {
        "clustercaissuer" | "clustercaissuers" | "ccai" => Some(Kind::ClusterCAIssuer),
        "caissuer" | "caissuers" | "cai" => Some(Kind::CAIssuer),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Reads an `ISSUER` argument.
///
/// # Errors
/// An unknown kind or an invalid name, said plainly.
pub fn parse(arg: &str) -> Result<Wanted> {
    let (kind, name) = match arg.split_once('/') {
        Some((kind, name)) => {
            let kind = kind_of(kind).ok_or_else(|| {
                Error::Usage(format!(
                    "{arg:?}: {kind:?} is not an issuer kind (use clustercaissuer/NAME or caissuer/NAME)"
                ))
            })?;
            (Some(kind), name)
        }
        None => (None, arg),
    };
    if !valid_name(name) {
        return Err(Error::Usage(format!(
            "{arg:?}: {name:?} is not a valid object name (lower-case letters, digits, '-' and '.')"
        )));
    }
    Ok(match kind {
        Some(kind) => Wanted::Exactly(kind, name.to_owned()),
        None => Wanted::Either(name.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_any_of_their_names() {
        for arg in [
            "clustercaissuer/ca",
            "ClusterCAIssuer/ca",
            "clustercaissuers.capstan.dev/ca",
            "ccai/ca",
        ] {
            assert_eq!(
                parse(arg).expect(arg),
                Wanted::Exactly(Kind::ClusterCAIssuer, "ca".into())
            );
        }
        assert_eq!(
            parse("cai/local").expect("cai"),
            Wanted::Exactly(Kind::CAIssuer, "local".into())
        );
        assert_eq!(
            parse("monitoring-ca").expect("bare"),
            Wanted::Either("monitoring-ca".into())
        );
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = parse("issuer/ca").expect_err("cert-manager's kind");
        assert!(err.to_string().contains("not an issuer kind"), "{err}");
        for bad in ["", "caissuer/", "Upper", "a/b/c"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_print_as_events_name_objects() {
        let cluster = IssuerId::new(Kind::ClusterCAIssuer, "ignored", "ca");
        assert_eq!(cluster.to_string(), "ClusterCAIssuer/ca");
        assert_eq!(cluster.namespace, None);
        let ns = IssuerId::new(Kind::CAIssuer, "apps", "ca");
        assert_eq!(ns.to_string(), "CAIssuer/ca -n apps");
    }
}
