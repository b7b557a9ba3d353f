//! Annotation-driven CA injection into ConfigMaps, as cert-manager's
//! cainjector and OpenShift's service-ca users know it.
//!
//! | annotation on a ConfigMap | meaning |
//! | --- | --- |
//! | `capstan.dev/inject-ca-from: <namespace>/<secret>` | the CAs of that Secret |
//! | `capstan.dev/inject-ca-from-issuer: <namespace>/<name>` | the bundle of that `CAIssuer` |
//! | `capstan.dev/inject-ca-from-issuer: <name>` | the bundle of that `ClusterCAIssuer` |
//! | `capstan.dev/inject-ca-key: <key>` | write this key instead of `ca-bundle.crt` |

use std::collections::BTreeMap;

/// Inject the CAs of a Secret: `<namespace>/<name>`.
pub const INJECT_CA_FROM: &str = "capstan.dev/inject-ca-from";
/// Inject the bundle of an issuer: `<namespace>/<name>` or `<name>`.
pub const INJECT_CA_FROM_ISSUER: &str = "capstan.dev/inject-ca-from-issuer";
/// The ConfigMap key to write (default [`DEFAULT_KEY`]).
pub const INJECT_CA_KEY: &str = "capstan.dev/inject-ca-key";
/// The key written by default, and read first from source Secrets.
pub const DEFAULT_KEY: &str = "ca-bundle.crt";
/// The key read from a source Secret without `ca-bundle.crt`.
pub const CA_CRT: &str = "ca.crt";

/// Where an annotated ConfigMap's CAs come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InjectSource {
    /// A Secret.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A namespaced `CAIssuer`.
    Issuer {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A `ClusterCAIssuer`.
    ClusterIssuer {
        /// Its name.
        name: String,
    },
}

/// What an annotated ConfigMap asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// Where the CAs come from.
    pub source: InjectSource,
    /// The ConfigMap key to write.
    pub key: String,
}

/// An annotation the rotator cannot act on; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AnnotationError(pub String);

fn split_ref(annotation: &str, value: &str) -> Result<(Option<String>, String), AnnotationError> {
    let value = value.trim();
    let parts: Vec<&str> = value.split('/').collect();
    let valid = |s: &str| !s.is_empty() && s.len() <= 253;
    match parts.as_slice() {
        [name] if valid(name) => Ok((None, (*name).to_owned())),
        [ns, name] if valid(ns) && valid(name) => Ok((Some((*ns).to_owned()), (*name).to_owned())),
        _ => Err(AnnotationError(format!(
            "annotation {annotation}: {value:?} is not of the form <namespace>/<name>"
        ))),
    }
}

/// Reads a ConfigMap's annotations: `Ok(None)` when it asks for no
/// injection.
///
/// # Errors
/// When both source annotations are set, or a value is malformed.
pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Option<Injection>, AnnotationError> {
    let from_secret = annotations.get(INJECT_CA_FROM);
    let from_issuer = annotations.get(INJECT_CA_FROM_ISSUER);
    let source = match (from_secret, from_issuer) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(AnnotationError(format!(
                "set only one of {INJECT_CA_FROM} and {INJECT_CA_FROM_ISSUER}"
            )));
        }
        (Some(value), None) => match split_ref(INJECT_CA_FROM, value)? {
            (Some(namespace), name) => InjectSource::Secret { namespace, name },
            (None, _) => {
                return Err(AnnotationError(format!(
                    "annotation {INJECT_CA_FROM}: {value:?} must name the Secret as <namespace>/<name>"
                )));
            }
        },
        (None, Some(value)) => match split_ref(INJECT_CA_FROM_ISSUER, value)? {
            (Some(namespace), name) => InjectSource::Issuer { namespace, name },
            (None, name) => InjectSource::ClusterIssuer { name },
        },
    };
    let key = annotations
        .get(INJECT_CA_KEY)
        .map_or(DEFAULT_KEY, |k| k.trim())
        .to_owned();
    if !is_config_map_key(&key) {
        return Err(AnnotationError(format!(
            "annotation {INJECT_CA_KEY}: {key:?} is not a valid ConfigMap key (letters, digits, '-', '_', '.')"
        )));
    }
    Ok(Some(Injection { source, key }))
}

/// Whether `key` is a valid ConfigMap data key (Kubernetes'
/// `IsConfigMapKey`: at most 253 of `[-._a-zA-Z0-9]`, not `.` or `..`).
#[must_use]
pub fn is_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_annotation_no_injection() {
        assert_eq!(parse(&ann(&[("other", "x")])), Ok(None));
    }

    #[test]
    fn secret_source_needs_a_namespace() {
        let got = parse(&ann(&[(INJECT_CA_FROM, "cert-manager/ca-secret")])).expect("valid");
        assert_eq!(
            got,
            Some(Injection {
                source: InjectSource::Secret {
                    namespace: "cert-manager".into(),
                    name: "ca-secret".into()
                },
                key: DEFAULT_KEY.into()
            })
        );
        let err = parse(&ann(&[(INJECT_CA_FROM, "ca-secret")])).expect_err("no namespace");
        assert!(err.0.contains("<namespace>/<name>"), "{err}");
    }

    #[test]
    fn issuer_source_is_namespaced_or_cluster() {
        let ns = parse(&ann(&[(INJECT_CA_FROM_ISSUER, "monitoring/local-ca")]))
            .expect("valid")
            .expect("some");
        assert_eq!(
            ns.source,
            InjectSource::Issuer {
                namespace: "monitoring".into(),
                name: "local-ca".into()
            }
        );
        let cluster = parse(&ann(&[
            (INJECT_CA_FROM_ISSUER, "monitoring-ca"),
            (INJECT_CA_KEY, "ca.crt"),
        ]))
        .expect("valid")
        .expect("some");
        assert_eq!(
            cluster.source,
            InjectSource::ClusterIssuer {
                name: "monitoring-ca".into()
            }
        );
        assert_eq!(cluster.key, "ca.crt");
    }

    #[test]
    fn malformed_values_are_named() {
        for bad in ["", "a/b/c", "/x", "x/"] {
            assert!(
                parse(&ann(&[(INJECT_CA_FROM_ISSUER, bad)])).is_err(),
                "{bad:?}"
            );
        }
        let both = parse(&ann(&[
            (INJECT_CA_FROM, "a/b"),
            (INJECT_CA_FROM_ISSUER, "c"),
        ]));
        assert!(both.expect_err("both").0.contains("only one"));
        let key = parse(&ann(&[(INJECT_CA_FROM, "a/b"), (INJECT_CA_KEY, "../etc")]));
        assert!(key.expect_err("bad key").0.contains(INJECT_CA_KEY));
    }
}
