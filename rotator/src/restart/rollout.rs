//! Whether a workload's rollout has finished, with the rules of
//! `kubectl rollout status` (kubectl `polymorphichelpers/rollout_status.go`).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutState {
    /// Still rolling; the message says what it waits for.
    InProgress(String),
    /// Every replica runs the current template.
    Complete,
    /// The Deployment controller gave up (`ProgressDeadlineExceeded`).
    Failed(String),
}

/// A Deployment's rollout state.
#[must_use]
pub fn deployment(d: &Deployment) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return RolloutState::InProgress("waiting for the deployment controller".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::InProgress("waiting for the new spec to be observed".into());
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return RolloutState::Failed("progress deadline exceeded".into());
    }
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        RolloutState::InProgress(format!(
            "{updated} of {wanted} new replicas have been updated"
        ))
    } else if total > updated {
        RolloutState::InProgress(format!(
            "{} old replicas are pending termination",
            total - updated
        ))
    } else if available < updated {
        RolloutState::InProgress(format!(
            "{available} of {updated} updated replicas are available"
        ))
    } else {
        RolloutState::Complete
    }
}

/// A StatefulSet's rollout state (RollingUpdate strategy).
#[must_use]
pub fn stateful_set(s: &StatefulSet) -> RolloutState {
    let generation = s.metadata.generation.unwrap_or(0);
    let Some(status) = &s.status else {
        return RolloutState::InProgress("waiting for the statefulset controller".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::InProgress("waiting for the new spec to be observed".into());
    }
    let wanted = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < wanted {
        return RolloutState::InProgress(format!("{ready} of {wanted} pods are ready"));
    }
    match (&status.update_revision, &status.current_revision) {
        (Some(update), Some(current)) if update != current => RolloutState::InProgress(format!(
            "{} of {wanted} pods run revision {update}",
            status.updated_replicas.unwrap_or(0)
        )),
        _ => RolloutState::Complete,
    }
}

/// A DaemonSet's rollout state (RollingUpdate strategy).
#[must_use]
pub fn daemon_set(d: &DaemonSet) -> RolloutState {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return RolloutState::InProgress("waiting for the daemonset controller".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return RolloutState::InProgress("waiting for the new spec to be observed".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    let available = status.number_available.unwrap_or(0);
    if updated < desired {
        RolloutState::InProgress(format!("{updated} of {desired} updated pods are scheduled"))
    } else if available < desired {
        RolloutState::InProgress(format!(
            "{available} of {desired} updated pods are available"
        ))
    } else {
        RolloutState::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    #[test]
    fn deployment_states() {
        let d: Deployment = from(
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2}}),
        );
        assert!(matches!(deployment(&d), RolloutState::InProgress(m) if m.contains("observed")));
        let d: Deployment = from(
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        assert!(
            matches!(deployment(&d), RolloutState::InProgress(m) if m.contains("pending termination"))
        );
        let d: Deployment = from(
            json!({"metadata": {"generation": 3}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        assert_eq!(deployment(&d), RolloutState::Complete);
        let d: Deployment = from(
            json!({"metadata": {"generation": 3}, "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 3, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}}),
        );
        assert!(matches!(deployment(&d), RolloutState::Failed(_)));
    }

    #[test]
    fn statefulset_waits_for_the_update_revision() {
        let s: StatefulSet = from(
            json!({"metadata": {"generation": 2}, "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "x"},
            "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}}),
        );
        assert!(matches!(stateful_set(&s), RolloutState::InProgress(_)));
        let s: StatefulSet = from(
            json!({"metadata": {"generation": 2}, "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "x"},
            "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": 1, "currentRevision": "b", "updateRevision": "b"}}),
        );
        assert_eq!(stateful_set(&s), RolloutState::Complete);
    }

    #[test]
    fn daemonset_waits_for_every_node() {
        let d: DaemonSet = from(
            json!({"metadata": {"generation": 5}, "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 5, "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3,
                       "updatedNumberScheduled": 2, "numberAvailable": 3}}),
        );
        assert!(matches!(daemon_set(&d), RolloutState::InProgress(_)));
        let d: DaemonSet = from(
            json!({"metadata": {"generation": 5}, "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 5, "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0, "numberReady": 3,
                       "updatedNumberScheduled": 3, "numberAvailable": 3}}),
        );
        assert_eq!(daemon_set(&d), RolloutState::Complete);
    }
}
