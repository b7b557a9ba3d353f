//! The three workload kinds behind one type.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use super::rollout::{self, RolloutState};
use super::schedule::WorkloadKey;

/// The annotation carrying the content hash, on the pod template (which rolls
/// the workload when it changes) and on the workload itself (the baseline
/// recorded when the rotator first sees it, which rolls nothing).
pub const CONFIG_HASH: &str = "capstan.dev/config-hash";

/// A Deployment, StatefulSet or DaemonSet.
#[derive(Debug, Clone)]
pub enum Workload {
    /// apps/v1 Deployment.
    Deployment(Deployment),
    /// apps/v1 StatefulSet.
    StatefulSet(StatefulSet),
    /// apps/v1 DaemonSet.
    DaemonSet(DaemonSet),
}

impl Workload {
    /// Kind, namespace and name.
    #[must_use]
    pub fn key(&self) -> WorkloadKey {
        let (kind, namespace, name) = match self {
            Self::Deployment(d) => ("Deployment", d.namespace(), d.name_any()),
            Self::StatefulSet(s) => ("StatefulSet", s.namespace(), s.name_any()),
            Self::DaemonSet(d) => ("DaemonSet", d.namespace(), d.name_any()),
        };
        WorkloadKey {
            kind,
            namespace: namespace.unwrap_or_default(),
            name,
        }
    }

    /// The workload's own annotations.
    #[must_use]
    pub fn annotations(&self) -> BTreeMap<String, String> {
        match self {
            Self::Deployment(d) => d.annotations().clone(),
            Self::StatefulSet(s) => s.annotations().clone(),
            Self::DaemonSet(d) => d.annotations().clone(),
        }
    }

    /// The pod template.
    #[must_use]
    pub fn template(&self) -> PodTemplateSpec {
        match self {
            Self::Deployment(d) => d.spec.as_ref().map(|s| s.template.clone()),
            Self::StatefulSet(s) => s.spec.as_ref().map(|s| s.template.clone()),
            Self::DaemonSet(d) => d.spec.as_ref().map(|s| s.template.clone()),
        }
        .unwrap_or_default()
    }

    /// The hash the running pods were started with: the template's
    /// annotation, else the baseline on the workload.
    #[must_use]
    pub fn applied_hash(&self) -> Option<String> {
        let template = self.template();
        template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(CONFIG_HASH).cloned())
            .or_else(|| self.annotations().get(CONFIG_HASH).cloned())
    }

    /// How its rollout stands.
    #[must_use]
    pub fn rollout(&self) -> RolloutState {
        match self {
            Self::Deployment(d) => rollout::deployment(d),
            Self::StatefulSet(s) => rollout::stateful_set(s),
            Self::DaemonSet(d) => rollout::daemon_set(d),
        }
    }
}

/// The merge patch that records `hash`: on the workload always, and on the
/// pod template (rolling it) when `roll` is set.
#[must_use]
pub fn hash_patch(hash: &str, roll: bool) -> serde_json::Value {
    let mut patch = serde_json::json!({ "metadata": { "annotations": { CONFIG_HASH: hash } } });
    if roll {
        patch["spec"] = serde_json::json!({ "template": { "metadata": { "annotations": { CONFIG_HASH: hash } } } });
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_hash_prefers_the_template() {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "m", "annotations": {CONFIG_HASH: "base"}},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {CONFIG_HASH: "rolled"}}}}
        }))
        .expect("valid");
        assert_eq!(
            Workload::Deployment(d.clone()).applied_hash().as_deref(),
            Some("rolled")
        );
        let mut base_only = d;
        base_only.spec.as_mut().expect("spec").template.metadata = None;
        assert_eq!(
            Workload::Deployment(base_only).applied_hash().as_deref(),
            Some("base")
        );
    }

    #[test]
    fn baseline_patch_does_not_touch_the_template() {
        assert!(hash_patch("h", false).get("spec").is_none());
        assert_eq!(
            hash_patch("h", true)["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH],
            "h"
        );
    }
}
