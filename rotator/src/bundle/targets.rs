//! Which target ConfigMaps a `CABundle` must create, update or delete.
//!
//! Rules, from trust-manager's and service-ca's lessons:
//! * a target whose bytes would not change is never written;
//! * in a ConfigMap capstan did not create, only the bundle key is written;
//! * a ConfigMap capstan created (labelled [`BUNDLE_LABEL`]) is deleted when
//!   its namespace is no longer selected; one capstan did not create is left.

use std::collections::{BTreeMap, BTreeSet};

/// Label on ConfigMaps a `CABundle` created; its value is the bundle's name.
pub const BUNDLE_LABEL: &str = "capstan.dev/bundle";

/// What exists in one namespace under the target name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The value of the bundle key, if the key exists.
    pub value: Option<String>,
    /// Whether this bundle created the ConfigMap (carries [`BUNDLE_LABEL`]).
    pub created_by_bundle: bool,
}

/// A write to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the ConfigMap, labelled and owned by the bundle.
    Create {
        /// Namespace.
        namespace: String,
    },
    /// Set the bundle key of an existing ConfigMap.
    Update {
        /// Namespace.
        namespace: String,
    },
    /// Delete a ConfigMap the bundle created in a namespace no longer selected.
    Delete {
        /// Namespace.
        namespace: String,
    },
}

/// The plan for one bundle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Writes to make, by namespace order.
    pub actions: Vec<Action>,
    /// Namespaces selected.
    pub targets: usize,
    /// Selected namespaces already holding `desired`.
    pub in_sync: usize,
}

/// Plans the writes that make every selected namespace hold `desired`.
/// `observed` maps namespaces to what exists there under the target name.
#[must_use]
pub fn plan(
    selected: &BTreeSet<String>,
    observed: &BTreeMap<String, Observed>,
    desired: &str,
) -> Plan {
    let mut plan = Plan {
        targets: selected.len(),
        ..Plan::default()
    };
    let namespaces: BTreeSet<&String> = selected.iter().chain(observed.keys()).collect();
    for namespace in namespaces {
        let wanted = selected.contains(namespace);
        match (wanted, observed.get(namespace)) {
            (true, None) => plan.actions.push(Action::Create {
                namespace: namespace.clone(),
            }),
            (true, Some(seen)) if seen.value.as_deref() == Some(desired) => plan.in_sync += 1,
            (true, Some(_)) => plan.actions.push(Action::Update {
                namespace: namespace.clone(),
            }),
            (false, Some(seen)) if seen.created_by_bundle => {
                plan.actions.push(Action::Delete {
                    namespace: namespace.clone(),
                });
            }
            (false, _) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(value: Option<&str>, ours: bool) -> Observed {
        Observed {
            value: value.map(str::to_owned),
            created_by_bundle: ours,
        }
    }

    #[test]
    fn creates_updates_and_skips_in_sync_targets() {
        let selected: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let observed = BTreeMap::from([
            ("a".to_owned(), seen(Some("PEM"), true)),
            ("b".to_owned(), seen(Some("OLD"), false)),
        ]);
        let p = plan(&selected, &observed, "PEM");
        assert_eq!(
            p.actions,
            vec![
                Action::Update {
                    namespace: "b".into()
                },
                Action::Create {
                    namespace: "c".into()
                }
            ]
        );
        assert_eq!((p.targets, p.in_sync), (3, 1));
    }

    #[test]
    fn deletes_only_what_it_created() {
        let selected = BTreeSet::new();
        let observed = BTreeMap::from([
            ("ours".to_owned(), seen(Some("PEM"), true)),
            ("users".to_owned(), seen(Some("PEM"), false)),
        ]);
        let p = plan(&selected, &observed, "PEM");
        assert_eq!(
            p.actions,
            vec![Action::Delete {
                namespace: "ours".into()
            }]
        );
        assert_eq!((p.targets, p.in_sync), (0, 0));
    }

    #[test]
    fn a_missing_key_is_written() {
        let selected: BTreeSet<String> = ["a".to_owned()].into();
        let observed = BTreeMap::from([("a".to_owned(), seen(None, false))]);
        assert_eq!(
            plan(&selected, &observed, "PEM").actions,
            vec![Action::Update {
                namespace: "a".into()
            }]
        );
    }
}
