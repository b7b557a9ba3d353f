//! Which Secrets and ConfigMaps a workload is restarted for.
//!
//! A pod template *references* a Secret or ConfigMap through volumes
//! (including projected volumes), `envFrom` and `env[].valueFrom`, in init
//! containers as in containers. A workload opts in with
//! `capstan.dev/restart-on-change: "true"` (every referenced object), or with
//! Reloader's annotations, which keep Reloader's meaning so users can switch
//! without editing workloads:
//!
//! | annotation on the workload | restarted for |
//! | --- | --- |
//! | `reloader.stakater.com/auto: "true"` | every referenced Secret and ConfigMap |
//! | `secret.reloader.stakater.com/auto: "true"` | every referenced Secret |
//! | `configmap.reloader.stakater.com/auto: "true"` | every referenced ConfigMap |
//! | `secret.reloader.stakater.com/reload: "a,b"` | Secrets `a` and `b`, referenced or not |
//! | `configmap.reloader.stakater.com/reload: "x,y"` | ConfigMaps `x` and `y`, referenced or not |
//! | `reloader.stakater.com/search: "true"` | every referenced Secret and ConfigMap annotated `reloader.stakater.com/match: "true"` |
//! | `secrets.exclude.reloader.stakater.com/reload: "a,b"` | not for Secrets `a` and `b`, whatever else says so |
//! | `configmaps.exclude.reloader.stakater.com/reload: "x,y"` | not for ConfigMaps `x` and `y` |
//!
//! As in Reloader (`ShouldReload` in its `pkg/common/common.go`), for each
//! kind the annotations are read from the workload when it carries any of
//! that kind's opt-in annotations (the generic and typed `auto`, the kind's
//! `reload` list, `search`), and otherwise from its pod template; `auto`
//! wins over `search`. A Secret or ConfigMap annotated
//! `reloader.stakater.com/ignore: "true"` rolls nothing, and in search mode
//! only sources annotated `reloader.stakater.com/match: "true"` do: both are
//! [`Marks`] of the source, checked with [`Watched::triggers`]. The
//! exclusion lists are read from the workload and from its pod template.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

/// capstan's opt-in annotation.
pub const RESTART_ON_CHANGE: &str = "capstan.dev/restart-on-change";
/// Reloader: restart for every referenced Secret and ConfigMap.
pub const RELOADER_AUTO: &str = "reloader.stakater.com/auto";
/// Reloader: restart for every referenced Secret.
pub const RELOADER_SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
/// Reloader: restart for every referenced ConfigMap.
pub const RELOADER_CONFIGMAP_AUTO: &str = "configmap.reloader.stakater.com/auto";
/// Reloader: restart for the named Secrets (comma-separated).
pub const RELOADER_SECRET_RELOAD: &str = "secret.reloader.stakater.com/reload";
/// Reloader: restart for the named ConfigMaps (comma-separated).
pub const RELOADER_CONFIGMAP_RELOAD: &str = "configmap.reloader.stakater.com/reload";
/// Reloader, on a workload: restart for referenced sources marked [`RELOADER_MATCH`].
pub const RELOADER_SEARCH: &str = "reloader.stakater.com/search";
/// Reloader, on a Secret or ConfigMap: it triggers workloads in search mode.
pub const RELOADER_MATCH: &str = "reloader.stakater.com/match";
/// Reloader, on a Secret or ConfigMap: its changes never roll anything.
pub const RELOADER_IGNORE: &str = "reloader.stakater.com/ignore";
/// Reloader: Secrets (comma-separated) a workload is never restarted for.
pub const RELOADER_SECRET_EXCLUDE: &str = "secrets.exclude.reloader.stakater.com/reload";
/// Reloader: ConfigMaps (comma-separated) a workload is never restarted for.
pub const RELOADER_CONFIGMAP_EXCLUDE: &str = "configmaps.exclude.reloader.stakater.com/reload";

/// The kind of a source object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// A core/v1 ConfigMap.
    ConfigMap,
    /// A core/v1 Secret.
    Secret,
}

impl SourceKind {
    /// The Kubernetes kind name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigMap => "ConfigMap",
            Self::Secret => "Secret",
        }
    }
}

/// A Secret or ConfigMap, by kind and name, in the workload's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRef {
    /// Secret or ConfigMap.
    pub kind: SourceKind,
    /// Object name.
    pub name: String,
}

impl SourceRef {
    /// A Secret reference.
    #[must_use]
    pub fn secret(name: impl Into<String>) -> Self {
        Self {
            kind: SourceKind::Secret,
            name: name.into(),
        }
    }

    /// A ConfigMap reference.
    #[must_use]
    pub fn config_map(name: impl Into<String>) -> Self {
        Self {
            kind: SourceKind::ConfigMap,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// Every Secret and ConfigMap the pod template references, sorted.
#[must_use]
pub fn referenced(template: &PodTemplateSpec) -> BTreeSet<SourceRef> {
    let mut refs = BTreeSet::new();
    let Some(spec) = &template.spec else {
        return refs;
    };
    volumes(spec, &mut refs);
    for container in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        env(container, &mut refs);
    }
    refs
}

fn volumes(spec: &PodSpec, refs: &mut BTreeSet<SourceRef>) {
    for volume in spec.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            refs.insert(SourceRef::secret(name));
        }
        if let Some(cm) = &volume.config_map {
            refs.insert(SourceRef::config_map(cm.name.clone()));
        }
        let projections = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten());
        for projection in projections {
            if let Some(s) = &projection.secret {
                refs.insert(SourceRef::secret(s.name.clone()));
            }
            if let Some(cm) = &projection.config_map {
                refs.insert(SourceRef::config_map(cm.name.clone()));
            }
        }
    }
}

fn env(container: &Container, refs: &mut BTreeSet<SourceRef>) {
    for from in container.env_from.iter().flatten() {
        if let Some(s) = &from.secret_ref {
            refs.insert(SourceRef::secret(s.name.clone()));
        }
        if let Some(cm) = &from.config_map_ref {
            refs.insert(SourceRef::config_map(cm.name.clone()));
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(s) = &from.secret_key_ref {
            refs.insert(SourceRef::secret(s.name.clone()));
        }
        if let Some(cm) = &from.config_map_key_ref {
            refs.insert(SourceRef::config_map(cm.name.clone()));
        }
    }
}

fn is_true(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations
        .get(key)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Reloader reads `auto` values with Go's `strconv.ParseBool`: `1`, `t`,
/// `T`, `TRUE`, `true` and `True` are true.
fn go_true(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations
        .get(key)
        .is_some_and(|v| ["1", "t", "T", "TRUE", "true", "True"].contains(&v.trim()))
}

fn names(annotations: &BTreeMap<String, String>, key: &str) -> impl Iterator<Item = String> {
    annotations
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
}

impl SourceKind {
    /// Reloader's typed `auto` annotation of this kind.
    #[must_use]
    pub fn typed_auto(self) -> &'static str {
        match self {
            Self::ConfigMap => RELOADER_CONFIGMAP_AUTO,
            Self::Secret => RELOADER_SECRET_AUTO,
        }
    }

    /// Reloader's `reload` list of this kind.
    #[must_use]
    pub fn reload_list(self) -> &'static str {
        match self {
            Self::ConfigMap => RELOADER_CONFIGMAP_RELOAD,
            Self::Secret => RELOADER_SECRET_RELOAD,
        }
    }

    /// Reloader's exclusion list of this kind.
    #[must_use]
    pub fn exclude_list(self) -> &'static str {
        match self {
            Self::ConfigMap => RELOADER_CONFIGMAP_EXCLUDE,
            Self::Secret => RELOADER_SECRET_EXCLUDE,
        }
    }

    fn source(self, name: String) -> SourceRef {
        SourceRef { kind: self, name }
    }
}

/// What a Secret's or ConfigMap's own annotations say about restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Marks {
    /// `reloader.stakater.com/ignore: "true"`: its changes roll nothing.
    pub ignore: bool,
    /// `reloader.stakater.com/match: "true"`: it triggers workloads in search mode.
    pub matched: bool,
}

impl Marks {
    /// The marks in a source's annotations.
    #[must_use]
    pub fn of(annotations: &BTreeMap<String, String>) -> Self {
        Self {
            ignore: is_true(annotations, RELOADER_IGNORE),
            matched: is_true(annotations, RELOADER_MATCH),
        }
    }
}

/// When a watched source triggers a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Whenever its content changes (unless it is ignored).
    Always,
    /// Only while it is marked `reloader.stakater.com/match: "true"`.
    IfMatched,
}

/// The sources a workload watches, and when each one triggers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Watched {
    sources: BTreeMap<SourceRef, Trigger>,
}

impl Watched {
    /// Every watched source, sorted: the ones whose content the rotator
    /// follows for this workload.
    pub fn sources(&self) -> impl Iterator<Item = &SourceRef> {
        self.sources.keys()
    }

    /// How many sources are watched.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether nothing is watched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether a change of `source`, marked `marks`, restarts the workload:
    /// it is watched, not ignored, and matched if in search mode. Only such
    /// sources count in the workload's content hash.
    #[must_use]
    pub fn triggers(&self, source: &SourceRef, marks: Marks) -> bool {
        !marks.ignore
            && match self.sources.get(source) {
                Some(Trigger::Always) => true,
                Some(Trigger::IfMatched) => marks.matched,
                None => false,
            }
    }
}

#[cfg(test)]
impl Watched {
    /// Watches `always` on every change and `if_matched` in search mode.
    pub(crate) fn test(always: &[SourceRef], if_matched: &[SourceRef]) -> Self {
        let always = always.iter().map(|s| (s.clone(), Trigger::Always));
        let matched = if_matched.iter().map(|s| (s.clone(), Trigger::IfMatched));
        Self {
            sources: always.chain(matched).collect(),
        }
    }
}

/// The annotations Reloader reads for sources of `kind`: the workload's if
/// it carries any opt-in annotation for that kind, else the pod template's.
fn for_kind<'a>(
    kind: SourceKind,
    workload: &'a BTreeMap<String, String>,
    template: &'a BTreeMap<String, String>,
) -> &'a BTreeMap<String, String> {
    let opt_ins = [
        RESTART_ON_CHANGE,
        RELOADER_AUTO,
        kind.typed_auto(),
        kind.reload_list(),
        RELOADER_SEARCH,
    ];
    if opt_ins.iter().any(|key| workload.contains_key(*key)) {
        workload
    } else {
        template
    }
}

/// The sources a workload is restarted for, or `None` when it has not opted
/// in. `annotations` are the workload's own; the pod template's are read
/// from `template`.
#[must_use]
pub fn watched(
    annotations: &BTreeMap<String, String>,
    template: &PodTemplateSpec,
) -> Option<Watched> {
    let empty = BTreeMap::new();
    let template_annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .unwrap_or(&empty);
    let referenced = referenced(template);
    let mut opted_in = false;
    let mut sources = BTreeMap::new();
    for kind in [SourceKind::ConfigMap, SourceKind::Secret] {
        let own = for_kind(kind, annotations, template_annotations);
        let all = is_true(own, RESTART_ON_CHANGE)
            || go_true(own, RELOADER_AUTO)
            || go_true(own, kind.typed_auto());
        let search = !all && is_true(own, RELOADER_SEARCH);
        let explicit: Vec<SourceRef> = names(own, kind.reload_list())
            .map(|n| kind.source(n))
            .collect();
        opted_in |= all || search || !explicit.is_empty();
        if all || search {
            let trigger = if all {
                Trigger::Always
            } else {
                Trigger::IfMatched
            };
            for source in referenced.iter().filter(|r| r.kind == kind) {
                sources.insert(source.clone(), trigger);
            }
        }
        for source in explicit {
            sources.insert(source, Trigger::Always);
        }
        for excluded in names(annotations, kind.exclude_list())
            .chain(names(template_annotations, kind.exclude_list()))
        {
            sources.remove(&kind.source(excluded));
        }
    }
    opted_in.then_some(Watched { sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(json: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json).expect("valid pod template")
    }

    fn prometheus_like() -> PodTemplateSpec {
        template(serde_json::json!({
            "spec": {
                "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-env"}}]}],
                "containers": [{
                    "name": "app",
                    "env": [
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "t"}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "m"}}},
                        {"name": "PLAIN", "value": "x"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "envFrom": [{"secretRef": {"name": "env-secret"}}]
                }],
                "volumes": [
                    {"name": "tls", "secret": {"secretName": "metrics-tls"}},
                    {"name": "ca", "configMap": {"name": "ca-bundle"}},
                    {"name": "both", "projected": {"sources": [
                        {"secret": {"name": "projected-secret"}},
                        {"configMap": {"name": "projected-cm"}},
                        {"serviceAccountToken": {"path": "token"}}
                    ]}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        }))
    }

    #[test]
    fn finds_every_kind_of_reference() {
        let names: Vec<String> = referenced(&prometheus_like())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "ConfigMap/ca-bundle",
                "ConfigMap/init-env",
                "ConfigMap/projected-cm",
                "ConfigMap/settings",
                "Secret/env-secret",
                "Secret/metrics-tls",
                "Secret/projected-secret",
                "Secret/token",
            ]
        );
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn set(w: &Watched) -> BTreeSet<SourceRef> {
        w.sources().cloned().collect()
    }

    fn with_template_annotations(pairs: &[(&str, &str)]) -> PodTemplateSpec {
        let mut t = prometheus_like();
        t.metadata.get_or_insert_with(Default::default).annotations = Some(annotations(pairs));
        t
    }

    #[test]
    fn not_opted_in_means_none() {
        assert_eq!(watched(&annotations(&[]), &prometheus_like()), None);
        assert_eq!(
            watched(
                &annotations(&[(RESTART_ON_CHANGE, "false")]),
                &prometheus_like()
            ),
            None
        );
        assert_eq!(
            watched(
                &annotations(&[(RELOADER_SEARCH, "false")]),
                &prometheus_like()
            ),
            None
        );
    }

    #[test]
    fn capstan_and_reloader_auto_watch_everything_referenced() {
        let all = referenced(&prometheus_like());
        for key in [RESTART_ON_CHANGE, RELOADER_AUTO] {
            let w = watched(&annotations(&[(key, "true")]), &prometheus_like()).expect("opted in");
            assert_eq!(set(&w), all);
            assert!(all.iter().all(|s| w.triggers(s, Marks::default())));
        }
    }

    #[test]
    fn auto_values_read_as_go_reads_booleans() {
        for yes in ["1", "t", "T", "TRUE", "True", "true"] {
            assert!(
                watched(&annotations(&[(RELOADER_AUTO, yes)]), &prometheus_like()).is_some(),
                "{yes}"
            );
        }
        for no in ["0", "yes", "tRuE", ""] {
            assert_eq!(
                watched(&annotations(&[(RELOADER_AUTO, no)]), &prometheus_like()),
                None,
                "{no}"
            );
        }
    }

    #[test]
    fn typed_auto_watches_one_kind() {
        let secrets = watched(
            &annotations(&[(RELOADER_SECRET_AUTO, "true")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert!(secrets.sources().all(|r| r.kind == SourceKind::Secret));
        assert_eq!(secrets.len(), 4);
        let cms = watched(
            &annotations(&[(RELOADER_CONFIGMAP_AUTO, "TRUE")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert!(cms.sources().all(|r| r.kind == SourceKind::ConfigMap));
    }

    #[test]
    fn explicit_reload_lists_are_honoured_even_unreferenced() {
        let w = watched(
            &annotations(&[
                (RELOADER_SECRET_RELOAD, "metrics-tls, other ,"),
                (RELOADER_CONFIGMAP_RELOAD, "ca-bundle"),
            ]),
            &prometheus_like(),
        )
        .expect("opted in");
        let expected: BTreeSet<SourceRef> = [
            SourceRef::secret("metrics-tls"),
            SourceRef::secret("other"),
            SourceRef::config_map("ca-bundle"),
        ]
        .into();
        assert_eq!(set(&w), expected);
    }

    #[test]
    fn annotations_on_the_pod_template_count_when_the_workload_has_none() {
        let all = referenced(&prometheus_like());
        let w = watched(
            &annotations(&[]),
            &with_template_annotations(&[(RELOADER_AUTO, "true")]),
        )
        .expect("opted in by the template");
        assert_eq!(set(&w), all);
        let w = watched(
            &annotations(&[]),
            &with_template_annotations(&[(RELOADER_SECRET_RELOAD, "token")]),
        )
        .expect("opted in by the template");
        assert_eq!(set(&w), [SourceRef::secret("token")].into());
    }

    #[test]
    fn the_workload_wins_per_kind_over_the_template() {
        // The workload speaks for Secrets (its reload list), so the
        // template's auto is not read for Secrets; nothing on the workload
        // speaks for ConfigMaps, so the template's auto is read for them.
        let w = watched(
            &annotations(&[(RELOADER_SECRET_RELOAD, "token")]),
            &with_template_annotations(&[(RELOADER_AUTO, "true")]),
        )
        .expect("opted in");
        let secrets: Vec<_> = w
            .sources()
            .filter(|s| s.kind == SourceKind::Secret)
            .cloned()
            .collect();
        assert_eq!(secrets, [SourceRef::secret("token")]);
        assert_eq!(
            w.sources()
                .filter(|s| s.kind == SourceKind::ConfigMap)
                .count(),
            4
        );
        // A workload's explicit "false" is its word: the template is not read.
        assert_eq!(
            watched(
                &annotations(&[(RELOADER_AUTO, "false")]),
                &with_template_annotations(&[(RELOADER_AUTO, "true")]),
            ),
            None
        );
    }

    #[test]
    fn search_mode_triggers_only_on_matched_sources() {
        let w = watched(
            &annotations(&[(RELOADER_SEARCH, "true")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert_eq!(set(&w), referenced(&prometheus_like()));
        let token = SourceRef::secret("token");
        assert!(!w.triggers(&token, Marks::default()));
        let matched = Marks {
            matched: true,
            ignore: false,
        };
        assert!(w.triggers(&token, matched));
        assert!(
            !w.triggers(&SourceRef::secret("unreferenced"), matched),
            "search mode reads only referenced sources"
        );
    }

    #[test]
    fn auto_wins_over_search_and_reload_lists_are_not_searched() {
        let w = watched(
            &annotations(&[(RELOADER_AUTO, "true"), (RELOADER_SEARCH, "true")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert!(w.triggers(&SourceRef::secret("token"), Marks::default()));
        let w = watched(
            &annotations(&[(RELOADER_SEARCH, "true"), (RELOADER_SECRET_RELOAD, "token")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert!(w.triggers(&SourceRef::secret("token"), Marks::default()));
        assert!(!w.triggers(&SourceRef::secret("metrics-tls"), Marks::default()));
    }

    #[test]
    fn ignored_sources_never_trigger() {
        let w = watched(
            &annotations(&[(RESTART_ON_CHANGE, "true")]),
            &prometheus_like(),
        )
        .expect("opted in");
        let ignored = Marks::of(&annotations(&[
            (RELOADER_IGNORE, "true"),
            (RELOADER_MATCH, "true"),
        ]));
        assert!(ignored.ignore && ignored.matched);
        assert!(!w.triggers(&SourceRef::secret("token"), ignored));
        assert_eq!(
            Marks::of(&annotations(&[(RELOADER_IGNORE, "no")])),
            Marks::default()
        );
    }

    #[test]
    fn exclusion_lists_win_over_everything() {
        let w = watched(
            &annotations(&[
                (RELOADER_AUTO, "true"),
                (RELOADER_SECRET_RELOAD, "token,other"),
                (RELOADER_SECRET_EXCLUDE, "token, metrics-tls"),
                (RELOADER_CONFIGMAP_EXCLUDE, "settings"),
            ]),
            &with_template_annotations(&[(RELOADER_CONFIGMAP_EXCLUDE, "ca-bundle")]),
        )
        .expect("opted in");
        let names: Vec<String> = w.sources().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/init-env",
                "ConfigMap/projected-cm",
                "Secret/env-secret",
                "Secret/other",
                "Secret/projected-secret",
            ]
        );
    }
}
