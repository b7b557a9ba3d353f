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

/// The sources a workload is restarted for, or `None` when it has not opted
/// in. `annotations` are the workload's own (not its pod template's).
#[must_use]
pub fn watched(
    annotations: &BTreeMap<String, String>,
    template: &PodTemplateSpec,
) -> Option<BTreeSet<SourceRef>> {
    let all = is_true(annotations, RESTART_ON_CHANGE) || is_true(annotations, RELOADER_AUTO);
    let secrets = all || is_true(annotations, RELOADER_SECRET_AUTO);
    let config_maps = all || is_true(annotations, RELOADER_CONFIGMAP_AUTO);
    let mut explicit: BTreeSet<SourceRef> = names(annotations, RELOADER_SECRET_RELOAD)
        .map(SourceRef::secret)
        .chain(names(annotations, RELOADER_CONFIGMAP_RELOAD).map(SourceRef::config_map))
        .collect();
    if !secrets && !config_maps && explicit.is_empty() {
        return None;
    }
    explicit.extend(referenced(template).into_iter().filter(|r| match r.kind {
        SourceKind::Secret => secrets,
        SourceKind::ConfigMap => config_maps,
    }));
    Some(explicit)
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
    }

    #[test]
    fn capstan_and_reloader_auto_watch_everything_referenced() {
        let all = referenced(&prometheus_like());
        for key in [RESTART_ON_CHANGE, RELOADER_AUTO] {
            assert_eq!(
                watched(&annotations(&[(key, "true")]), &prometheus_like()),
                Some(all.clone())
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
        assert!(secrets.iter().all(|r| r.kind == SourceKind::Secret));
        assert_eq!(secrets.len(), 4);
        let cms = watched(
            &annotations(&[(RELOADER_CONFIGMAP_AUTO, "TRUE")]),
            &prometheus_like(),
        )
        .expect("opted in");
        assert!(cms.iter().all(|r| r.kind == SourceKind::ConfigMap));
    }

    #[test]
    fn explicit_reload_lists_are_honoured_even_unreferenced() {
        let set = watched(
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
        assert_eq!(set, expected);
    }
}
