//! Which namespaces a `CABundle` selects, and what exists there. Pure: the
//! inputs are the cached Namespace metadata and the listed ConfigMaps.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt};

use super::source::Problem;
use super::targets::{BUNDLE_LABEL, Observed};
use crate::api::ca_bundle::{CABundle, CABundleSpec, ObjectKeySource};
use crate::api::injection::{DEFAULT_KEY, is_config_map_key};
use crate::api::rules;

/// The namespace selector of a spec; absent selects every namespace.
///
/// # Errors
/// [`Problem::Invalid`] when an expression has an unknown operator or lacks
/// values.
pub fn selector(spec: Option<&LabelSelector>) -> Result<Selector, Problem> {
    spec.map_or_else(
        || Ok(Selector::default()),
        |s| {
            Selector::try_from(s.clone())
                .map_err(|e| Problem::Invalid(format!("spec.namespaceSelector: {e}")))
        },
    )
}

/// The names of the namespaces `selector` matches, leaving out those being
/// deleted (nothing can be created there).
#[must_use]
pub fn namespaces<'a>(
    namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
    selector: &Selector,
) -> BTreeSet<String> {
    let none = BTreeMap::new();
    namespaces
        .into_iter()
        .filter(|m| m.deletion_timestamp.is_none())
        .filter(|m| selector.matches(m.labels.as_ref().unwrap_or(&none)))
        .filter_map(|m| m.name.clone())
        .collect()
}

/// Checks that a bundle's name can be the value of [`BUNDLE_LABEL`] on the
/// ConfigMaps it creates (label values have at most 63 characters).
///
/// # Errors
/// [`Problem::Invalid`] saying so.
pub fn labelable(bundle: &str) -> Result<(), Problem> {
    if bundle.len() > 63 {
        return Err(Problem::Invalid(rules::name_too_long(bundle)));
    }
    Ok(())
}

/// The target's ConfigMap name and key, checked.
///
/// # Errors
/// [`Problem::Invalid`] naming the field.
pub fn target(spec: &CABundleSpec) -> Result<(String, String), Problem> {
    let name = spec.target.config_map.trim();
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_name {
        return Err(Problem::Invalid(rules::value_message(
            "spec.target.configMap",
            name,
            rules::NOT_A_CONFIG_MAP_NAME,
        )));
    }
    let key = spec.target.key.as_deref().unwrap_or(DEFAULT_KEY);
    if !is_config_map_key(key) {
        return Err(Problem::Invalid(rules::value_message(
            "spec.target.key",
            key,
            rules::NOT_A_CONFIG_MAP_KEY,
        )));
    }
    Ok((name.to_owned(), key.to_owned()))
}

/// A ConfigMap found under the target name or carrying the bundle's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Value of the target key, if present.
    pub value: Option<String>,
    /// Value of [`BUNDLE_LABEL`], if present.
    pub bundle_label: Option<String>,
    /// UID, the precondition of a delete.
    pub uid: Option<String>,
    /// resourceVersion, the precondition of an update.
    pub resource_version: Option<String>,
    /// Whether its annotations ask for injection into the target key.
    pub injected: bool,
}

/// What exists: per namespace, the target ConfigMap (for
/// [`super::targets::plan`]), and the ConfigMaps this bundle created under
/// a previous target name, which are to be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Existing {
    /// The target in each namespace where one exists.
    pub observed: BTreeMap<String, Observed>,
    /// Preconditions of writes to the targets, by namespace.
    pub found: BTreeMap<String, Found>,
    /// ConfigMaps this bundle created under another name.
    pub stale: Vec<Found>,
}

/// Sorts `found` into targets and leftovers of bundle `bundle`.
#[must_use]
pub fn existing(bundle: &str, target_name: &str, found: Vec<Found>) -> Existing {
    let mut out = Existing::default();
    for f in found {
        let ours = f.bundle_label.as_deref() == Some(bundle);
        if f.name == target_name {
            out.observed.insert(
                f.namespace.clone(),
                Observed {
                    value: f.value.clone(),
                    created_by_bundle: ours,
                },
            );
            out.found.insert(f.namespace.clone(), f);
        } else if ours && !out.stale.contains(&f) {
            out.stale.push(f);
        }
    }
    out
}

/// How many distinct Secrets and ConfigMaps `bundles` read.
#[must_use]
pub fn object_sources<'a>(bundles: impl IntoIterator<Item = &'a CABundle>) -> usize {
    let mut seen = BTreeSet::new();
    for b in bundles {
        for s in &b.spec.sources {
            if let Some(r) = &s.secret {
                seen.insert(("Secret", r.namespace.as_str(), r.name.as_str()));
            }
            if let Some(r) = &s.config_map {
                seen.insert(("ConfigMap", r.namespace.as_str(), r.name.as_str()));
            }
        }
    }
    seen.len()
}

/// The kind of a changed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Secret.
    Secret,
    /// A ConfigMap.
    ConfigMap,
}

/// The names of the bundles to re-run when a Secret or ConfigMap changes:
/// those reading it and, for a ConfigMap, those it is a target of (by name,
/// or by the label of the bundle that created it).
#[must_use]
pub fn affected<'a>(
    bundles: impl IntoIterator<Item = &'a CABundle>,
    kind: Kind,
    meta: &ObjectMeta,
) -> Vec<String> {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let label = meta.labels.as_ref().and_then(|l| l.get(BUNDLE_LABEL));
    let is = |r: &Option<ObjectKeySource>| {
        r.as_ref()
            .is_some_and(|r| r.namespace == namespace && r.name == name)
    };
    bundles
        .into_iter()
        .filter(|b| {
            let reads = b.spec.sources.iter().any(|s| match kind {
                Kind::Secret => is(&s.secret),
                Kind::ConfigMap => is(&s.config_map),
            });
            let writes = kind == Kind::ConfigMap
                && (b.spec.target.config_map == name
                    || label.is_some_and(|l| Some(l.as_str()) == b.metadata.name.as_deref()));
            reads || writes
        })
        .filter_map(|b| b.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};

    use super::*;
    use crate::api::ca_bundle::BundleTarget;

    fn ns(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn no_selector_selects_every_live_namespace() {
        let mut gone = ns("gone", &[]);
        gone.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let all = [ns("a", &[]), ns("b", &[("x", "y")]), gone];
        let s = selector(None).expect("valid");
        assert_eq!(namespaces(&all, &s), ["a", "b"].map(String::from).into());
    }

    #[test]
    fn labels_and_expressions_select() {
        let all = [
            ns("a", &[("trust", "yes")]),
            ns("b", &[("trust", "no")]),
            ns("c", &[("trust", "yes"), ("legacy", "")]),
        ];
        let spec = LabelSelector {
            match_labels: Some([("trust".to_owned(), "yes".to_owned())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "legacy".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        let s = selector(Some(&spec)).expect("valid");
        assert_eq!(namespaces(&all, &s), ["a".to_owned()].into());
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        let err = selector(Some(&bad)).expect_err("unknown operator");
        assert!(
            err.message().starts_with("spec.namespaceSelector"),
            "{err:?}"
        );
    }

    #[test]
    fn long_bundle_names_cannot_label_their_config_maps() {
        assert!(labelable(&"a".repeat(63)).is_ok());
        assert!(labelable(&"a".repeat(64)).is_err());
    }

    #[test]
    fn target_name_and_key_are_checked() {
        let mut spec = CABundleSpec {
            target: BundleTarget {
                config_map: "trust".into(),
                key: None,
            },
            ..CABundleSpec::default()
        };
        assert_eq!(target(&spec), Ok(("trust".into(), DEFAULT_KEY.into())));
        spec.target.key = Some("../x".into());
        assert!(target(&spec).is_err());
        spec.target.key = None;
        spec.target.config_map = "Not_Valid".into();
        assert!(target(&spec).is_err());
    }

    fn found(ns: &str, name: &str, label: Option<&str>) -> Found {
        Found {
            namespace: ns.into(),
            name: name.into(),
            value: Some("PEM".into()),
            bundle_label: label.map(str::to_owned),
            uid: Some(format!("{ns}-{name}")),
            resource_version: Some("1".into()),
            injected: false,
        }
    }

    #[test]
    fn targets_and_leftovers_under_an_old_name() {
        let e = existing(
            "corp",
            "trust",
            vec![
                found("a", "trust", Some("corp")),
                found("b", "trust", None),
                found("c", "old-trust", Some("corp")),
                found("c", "old-trust", Some("corp")),
                found("d", "other", Some("someone-else")),
            ],
        );
        assert_eq!(
            e.observed,
            BTreeMap::from([
                (
                    "a".to_owned(),
                    Observed {
                        value: Some("PEM".into()),
                        created_by_bundle: true
                    }
                ),
                (
                    "b".to_owned(),
                    Observed {
                        value: Some("PEM".into()),
                        created_by_bundle: false
                    }
                ),
            ])
        );
        assert_eq!(e.stale, vec![found("c", "old-trust", Some("corp"))]);
        assert_eq!(e.found["a"].uid.as_deref(), Some("a-trust"));
    }

    #[test]
    fn changes_map_to_the_bundles_that_read_or_write_the_object() {
        use crate::api::ca_bundle::BundleSource;
        let source = |ns: &str, name: &str| {
            Some(ObjectKeySource {
                namespace: ns.into(),
                name: name.into(),
                key: None,
            })
        };
        let reads_secret = CABundle::new(
            "a",
            CABundleSpec {
                sources: vec![BundleSource {
                    secret: source("certs", "root"),
                    ..BundleSource::default()
                }],
                target: BundleTarget {
                    config_map: "trust".into(),
                    key: None,
                },
                namespace_selector: None,
            },
        );
        let reads_cm = CABundle::new(
            "b",
            CABundleSpec {
                sources: vec![BundleSource {
                    config_map: source("certs", "root"),
                    ..BundleSource::default()
                }],
                target: BundleTarget {
                    config_map: "other".into(),
                    key: None,
                },
                namespace_selector: None,
            },
        );
        let all = [reads_secret, reads_cm];
        let meta = |ns: &str, name: &str, label: Option<&str>| ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: label.map(|l| [(BUNDLE_LABEL.to_owned(), l.to_owned())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(
            affected(&all, Kind::Secret, &meta("certs", "root", None)),
            ["a"]
        );
        assert_eq!(
            affected(&all, Kind::ConfigMap, &meta("certs", "root", None)),
            ["b"]
        );
        assert_eq!(
            affected(&all, Kind::ConfigMap, &meta("apps", "trust", None)),
            ["a"]
        );
        assert_eq!(
            affected(&all, Kind::ConfigMap, &meta("apps", "old", Some("b"))),
            ["b"]
        );
        assert!(affected(&all, Kind::Secret, &meta("apps", "trust", None)).is_empty());
    }
}
