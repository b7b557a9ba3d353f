//! Reloader annotations capstan does not honour, so that a workload moved
//! from Reloader says what will not happen instead of silently ignoring it.
//!
//! Every annotation under Reloader's domains (`reloader.stakater.com` and
//! its subdomains such as `deployment.reloader.stakater.com`) on a workload
//! or its pod template is either honoured (see [`super::sources`]), written
//! by Reloader itself as bookkeeping, or reported here with why capstan
//! does not honour it. The controller records one Warning Event
//! ([`crate::reasons::UNSUPPORTED_ANNOTATION`], from the restart index) per workload and set of such annotations:
//! [`Warned`] remembers what was said.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::sources::{
    RELOADER_AUTO, RELOADER_CONFIGMAP_AUTO, RELOADER_CONFIGMAP_EXCLUDE, RELOADER_CONFIGMAP_RELOAD,
    RELOADER_IGNORE, RELOADER_MATCH, RELOADER_SEARCH, RELOADER_SECRET_AUTO,
    RELOADER_SECRET_EXCLUDE, RELOADER_SECRET_RELOAD,
};

/// Reloader's own domain; its subdomains are Reloader's too.
const RELOADER_DOMAIN: &str = "reloader.stakater.com";

/// Written by Reloader's `annotations` reload strategy on pod templates: a
/// record of its last reload, nothing to honour.
const LAST_RELOADED_FROM: &str = "reloader.stakater.com/last-reloaded-from";

/// Honoured on a workload or its pod template.
const HONOURED: &[&str] = &[
    RELOADER_AUTO,
    RELOADER_SECRET_AUTO,
    RELOADER_CONFIGMAP_AUTO,
    RELOADER_SECRET_RELOAD,
    RELOADER_CONFIGMAP_RELOAD,
    RELOADER_SEARCH,
    RELOADER_SECRET_EXCLUDE,
    RELOADER_CONFIGMAP_EXCLUDE,
];

/// Whether `key` is under one of Reloader's domains.
#[must_use]
pub fn is_reloader(key: &str) -> bool {
    key.split_once('/').is_some_and(|(domain, _)| {
        domain == RELOADER_DOMAIN
            || domain
                .strip_suffix(RELOADER_DOMAIN)
                .is_some_and(|sub| sub.ends_with('.'))
    })
}

/// Why capstan does not honour `key` (a Reloader annotation that is not
/// honoured), in words a user acts on.
fn why(key: &str) -> &'static str {
    match key {
        "reloader.stakater.com/rollout-strategy" => {
            "capstan always rolls a workload by setting capstan.dev/config-hash on its pod template, and never deletes pods"
        }
        "deployment.reloader.stakater.com/pause-period" => {
            "capstan folds changes into one rollout with --restart-debounce and never pauses a Deployment"
        }
        "deployment.reloader.stakater.com/paused-at" => {
            "Reloader paused this Deployment at that time; capstan never pauses or resumes one, so check spec.paused"
        }
        RELOADER_IGNORE | RELOADER_MATCH => {
            "it belongs on a Secret or ConfigMap, not on a workload"
        }
        k if k.starts_with("secretproviderclass.") => {
            "capstan does not watch Secrets Store CSI SecretProviderClasses"
        }
        _ => "capstan does not know it",
    }
}

/// Whether a `reload` list entry is a plain object name: Reloader reads each
/// entry as a regular expression, capstan as a name.
fn is_name(entry: &str) -> bool {
    !entry.is_empty()
        && entry
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The Reloader annotations among `workload`'s and `template`'s that capstan
/// does not honour, each with why, sorted by key. `reload` lists holding
/// regular expressions are among them: capstan matches names exactly.
#[must_use]
pub fn unsupported(
    workload: &BTreeMap<String, String>,
    template: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in workload.iter().chain(template) {
        if !is_reloader(key) || key == LAST_RELOADED_FROM {
            continue;
        }
        if [RELOADER_SECRET_RELOAD, RELOADER_CONFIGMAP_RELOAD].contains(&key.as_str()) {
            let patterns: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty() && !is_name(e))
                .collect();
            if !patterns.is_empty() {
                out.insert(
                    key.clone(),
                    format!(
                        "capstan reads each entry as an exact name, not as a regular expression as Reloader does ({})",
                        patterns.join(", ")
                    ),
                );
            }
            continue;
        }
        if HONOURED.contains(&key.as_str()) {
            continue;
        }
        out.insert(key.clone(), why(key).to_owned());
    }
    out
}

/// The Event message naming every annotation of `unsupported`.
#[must_use]
pub fn message(workload: &str, unsupported: &BTreeMap<String, String>) -> String {
    let each: Vec<String> = unsupported
        .iter()
        .map(|(key, why)| format!("{key} is a Reloader annotation capstan does not honour: {why}"))
        .collect();
    format!("{workload}: {}", each.join("; "))
}

/// What was said about each workload, so each set of unsupported
/// annotations is reported once, not on every event or resync.
#[derive(Debug, Clone)]
pub struct Warned<K> {
    said: HashMap<K, BTreeMap<String, String>>,
}

impl<K> Default for Warned<K> {
    fn default() -> Self {
        Self {
            said: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Warned<K> {
    /// Whether `unsupported` is news for `key` (not empty, and not what was
    /// said last). Remembers it either way; an empty set forgets `key`, so
    /// annotations removed and added back are reported again.
    pub fn is_news(&mut self, key: &K, unsupported: &BTreeMap<String, String>) -> bool {
        if unsupported.is_empty() {
            self.said.remove(key);
            return false;
        }
        if self.said.get(key) == Some(unsupported) {
            return false;
        }
        self.said.insert(key.clone(), unsupported.clone());
        true
    }

    /// Forgets `key` (the workload was deleted).
    pub fn forget(&mut self, key: &K) {
        self.said.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn knows_reloader_domains() {
        assert!(is_reloader("reloader.stakater.com/auto"));
        assert!(is_reloader("deployment.reloader.stakater.com/pause-period"));
        assert!(!is_reloader("notreloader.stakater.com/x"));
        assert!(!is_reloader("capstan.dev/restart-on-change"));
        assert!(!is_reloader("reloader.stakater.com"));
    }

    #[test]
    fn honoured_and_bookkeeping_annotations_are_not_reported() {
        let workload = map(&[
            (RELOADER_AUTO, "true"),
            (RELOADER_SECRET_EXCLUDE, "a"),
            (RELOADER_SECRET_RELOAD, "db-credentials,tls.v2"),
            ("app.kubernetes.io/name", "x"),
        ]);
        let template = map(&[(LAST_RELOADED_FROM, "{...}"), (RELOADER_SEARCH, "true")]);
        assert!(unsupported(&workload, &template).is_empty());
    }

    #[test]
    fn names_each_annotation_not_honoured_with_why() {
        let workload = map(&[
            (RELOADER_AUTO, "true"),
            ("reloader.stakater.com/rollout-strategy", "restart"),
            ("deployment.reloader.stakater.com/pause-period", "5m"),
            (RELOADER_MATCH, "true"),
        ]);
        let template = map(&[
            ("secretproviderclass.reloader.stakater.com/auto", "true"),
            ("reloader.stakater.com/something-new", "x"),
        ]);
        let found = unsupported(&workload, &template);
        assert_eq!(
            found.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "deployment.reloader.stakater.com/pause-period",
                "reloader.stakater.com/match",
                "reloader.stakater.com/rollout-strategy",
                "reloader.stakater.com/something-new",
                "secretproviderclass.reloader.stakater.com/auto",
            ]
        );
        assert!(
            found["deployment.reloader.stakater.com/pause-period"].contains("--restart-debounce")
        );
        let text = message("Deployment/web -n shop", &found);
        assert!(text.starts_with("Deployment/web -n shop: "));
        assert!(text.contains(
            "reloader.stakater.com/rollout-strategy is a Reloader annotation capstan does not honour: capstan always rolls"
        ));
    }

    #[test]
    fn regular_expressions_in_reload_lists_are_reported() {
        let found = unsupported(
            &map(&[(RELOADER_CONFIGMAP_RELOAD, "app-config, db-.*")]),
            &map(&[]),
        );
        assert!(found[RELOADER_CONFIGMAP_RELOAD].contains("(db-.*)"));
    }

    #[test]
    fn warns_once_per_workload_and_set() {
        let mut warned = Warned::default();
        let a = map(&[("reloader.stakater.com/rollout-strategy", "why")]);
        assert!(warned.is_news(&"w", &a));
        assert!(!warned.is_news(&"w", &a), "a resync says nothing new");
        let mut b = a.clone();
        b.insert(
            "deployment.reloader.stakater.com/pause-period".into(),
            "why".into(),
        );
        assert!(warned.is_news(&"w", &b), "a new annotation is news");
        assert!(warned.is_news(&"other", &a));
        assert!(!warned.is_news(&"w", &BTreeMap::new()));
        assert!(warned.is_news(&"w", &b), "removed and added back");
        warned.forget(&"w");
        assert!(warned.is_news(&"w", &b));
    }
}
