//! Bad input that would make writers fight or bundles feed on themselves.
//! Pure: the controller passes what it has cached and listed.
//!
//! * **Two writers on one key.** Two `CABundle`s whose targets are the same
//!   ConfigMap name and key and which select the same namespace would
//!   overwrite each other for ever. The older bundle (creation time, then
//!   name) keeps writing there; the other leaves that namespace alone and
//!   says so ([`lost_to_bundles`]). A target ConfigMap that is also annotated
//!   for injection (`capstan.dev/inject-ca-from*`) into the same key belongs
//!   to its annotation: the bundle leaves it alone too.
//! * **A source that is a target.** A `CABundle` reading a ConfigMap that a
//!   bundle writes (its own target, another bundle's, one a bundle created,
//!   or an injection target) would keep a removed CA alive through its own
//!   output; such a source is refused ([`source_is_target`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::select;
use super::targets::BUNDLE_LABEL;
use crate::api::ca_bundle::CABundle;
use crate::api::injection::{self, DEFAULT_KEY};

/// The target name and key of `bundle`, as written.
fn target_of(bundle: &CABundle) -> (&str, &str) {
    (
        bundle.spec.target.config_map.trim(),
        bundle.spec.target.key.as_deref().unwrap_or(DEFAULT_KEY),
    )
}

/// The namespaces `bundle` selects among `namespaces` (none when its
/// selector is invalid: such a bundle writes nothing).
fn selected<'a>(
    bundle: &CABundle,
    namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
) -> BTreeSet<String> {
    select::selector(bundle.spec.namespace_selector.as_ref())
        .map(|s| select::namespaces(namespaces, &s))
        .unwrap_or_default()
}

/// Whether `a` was there first: older creation time, then smaller name;
/// a bundle without a creation time counts as newest.
fn precedes(a: &CABundle, b: &CABundle) -> bool {
    let key = |x: &CABundle| {
        (
            x.metadata.creation_timestamp.is_none(),
            x.metadata.creation_timestamp.as_ref().map(|t| t.0),
            x.metadata.name.clone(),
        )
    };
    key(a) < key(b)
}

/// The namespaces among `mine` (what `me` selects) where an older bundle
/// writes the same ConfigMap name and key, each with that bundle's name.
#[must_use]
pub fn lost_to_bundles<'a>(
    me: &CABundle,
    others: impl IntoIterator<Item = &'a CABundle>,
    namespaces: &[&ObjectMeta],
    mine: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let my_target = target_of(me);
    let mut lost: BTreeMap<String, String> = BTreeMap::new();
    for other in others {
        if other.metadata.name == me.metadata.name
            || target_of(other) != my_target
            || !precedes(other, me)
        {
            continue;
        }
        let name = other.metadata.name.clone().unwrap_or_default();
        for ns in selected(other, namespaces.iter().copied()).intersection(mine) {
            // The oldest writer is named when several precede this one.
            lost.entry(ns.clone()).or_insert_with(|| name.clone());
        }
    }
    lost
}

/// Whether a ConfigMap's annotations ask for injection into `key`.
#[must_use]
pub fn injects_into(annotations: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    annotations
        .and_then(|a| injection::parse(a).ok().flatten())
        .is_some_and(|i| i.key == key)
}

/// Why ConfigMap `namespace/name` (with metadata `meta`) cannot be a
/// source: it is some bundle's output. `None` when it can.
#[must_use]
pub fn source_is_target<'a>(
    bundles: impl IntoIterator<Item = &'a CABundle>,
    namespaces: &[&ObjectMeta],
    meta: &ObjectMeta,
) -> Option<String> {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    let phrase = format!("ConfigMap/{name} -n {namespace}");
    if let Some(owner) = meta.labels.as_ref().and_then(|l| l.get(BUNDLE_LABEL)) {
        return Some(format!("{phrase} was created by CABundle/{owner}"));
    }
    if meta
        .annotations
        .as_ref()
        .and_then(|a| injection::parse(a).ok().flatten())
        .is_some()
    {
        return Some(format!(
            "{phrase} is annotated for CA injection, so the rotator writes it"
        ));
    }
    bundles
        .into_iter()
        .filter(|b| target_of(b).0 == name)
        .find(|b| selected(b, namespaces.iter().copied()).contains(namespace))
        .map(|b| {
            format!(
                "{phrase} is a target of CABundle/{}",
                b.metadata.name.as_deref().unwrap_or_default()
            )
        })
}

/// The message saying which namespaces a bundle leaves to other writers.
#[must_use]
pub fn conflict_message(target: &str, key: &str, lost: &BTreeMap<String, String>) -> String {
    let owners: Vec<String> = lost
        .iter()
        .map(|(ns, owner)| format!("{ns} (written by {owner})"))
        .collect();
    format!(
        "Not writing key {key} of ConfigMap/{target} in {} namespace(s) where another writer owns it: {}",
        lost.len(),
        owners.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    use super::*;
    use crate::api::ca_bundle::{BundleSource, BundleTarget, CABundleSpec, ObjectKeySource};

    fn ns(name: &str, team: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            labels: team.then(|| [("team".to_owned(), "yes".to_owned())].into()),
            ..ObjectMeta::default()
        }
    }

    fn bundle(name: &str, created: i64, target: &str, team_only: bool) -> CABundle {
        let mut b = CABundle::new(
            name,
            CABundleSpec {
                sources: vec![BundleSource {
                    config_map: Some(ObjectKeySource {
                        namespace: "certs".into(),
                        name: "upstream".into(),
                        key: None,
                    }),
                    ..BundleSource::default()
                }],
                target: BundleTarget {
                    config_map: target.into(),
                    key: None,
                },
                namespace_selector: team_only.then(|| LabelSelector {
                    match_labels: Some([("team".to_owned(), "yes".to_owned())].into()),
                    ..LabelSelector::default()
                }),
            },
        );
        b.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + created).expect("valid"),
        ));
        b
    }

    #[test]
    fn the_older_bundle_keeps_a_contested_namespace() {
        let all = [ns("a", true), ns("b", true), ns("c", false)];
        let metas: Vec<&ObjectMeta> = all.iter().collect();
        let old = bundle("old", 0, "trust", true);
        let new = bundle("new", 10, "trust", false);
        let other_target = bundle("elsewhere", 0, "other", false);
        let bundles = [old.clone(), new.clone(), other_target];
        let mine = selected(&new, metas.iter().copied());
        let lost = lost_to_bundles(&new, &bundles, &metas, &mine);
        assert_eq!(
            lost,
            BTreeMap::from([
                ("a".to_owned(), "old".to_owned()),
                ("b".to_owned(), "old".to_owned())
            ])
        );
        let theirs = selected(&old, metas.iter().copied());
        assert!(lost_to_bundles(&old, &bundles, &metas, &theirs).is_empty());
        // Same creation time: the name decides, so exactly one writer wins.
        let twin = bundle("aaa", 10, "trust", false);
        let pair = [twin.clone(), new.clone()];
        assert_eq!(lost_to_bundles(&new, &pair, &metas, &mine).len(), 3);
        assert!(lost_to_bundles(&twin, &pair, &metas, &mine).is_empty());
        assert!(conflict_message("trust", "ca-bundle.crt", &lost).contains("a (written by old)"));
    }

    #[test]
    fn another_key_of_the_same_config_map_is_no_conflict() {
        let all = [ns("a", true)];
        let metas: Vec<&ObjectMeta> = all.iter().collect();
        let old = bundle("old", 0, "trust", false);
        let mut new = bundle("new", 10, "trust", false);
        new.spec.target.key = Some("other.crt".into());
        let mine = selected(&new, metas.iter().copied());
        assert!(lost_to_bundles(&new, &[old, new.clone()], &metas, &mine).is_empty());
    }

    #[test]
    fn outputs_cannot_be_sources() {
        let all = [ns("a", true), ns("b", false)];
        let metas: Vec<&ObjectMeta> = all.iter().collect();
        let bundles = [bundle("trust", 0, "trust", true)];
        let cm = |namespace: &str, name: &str| ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        };
        let why = source_is_target(&bundles, &metas, &cm("a", "trust")).expect("a target");
        assert_eq!(why, "ConfigMap/trust -n a is a target of CABundle/trust");
        assert_eq!(source_is_target(&bundles, &metas, &cm("b", "trust")), None);
        let mut labelled = cm("b", "old-name");
        labelled.labels = Some([(BUNDLE_LABEL.to_owned(), "x".to_owned())].into());
        assert!(source_is_target(&bundles, &metas, &labelled).is_some());
        let mut injected = cm("b", "ca");
        injected.annotations = Some(
            [(
                injection::INJECT_CA_FROM.to_owned(),
                "certs/root".to_owned(),
            )]
            .into(),
        );
        assert!(source_is_target(&bundles, &metas, &injected).is_some());
        assert!(injects_into(injected.annotations.as_ref(), DEFAULT_KEY));
        assert!(!injects_into(injected.annotations.as_ref(), "other"));
    }
}
