//! The workload rollout simulator: after a Deployment, StatefulSet or
//! DaemonSet changes generation, it reports a finished rollout in `status`
//! (as the controllers and kubelets of a healthy cluster would), so
//! `kubectl rollout status` and controllers waiting for rollouts complete.

use std::sync::Arc;

use serde_json::{Value, json};

use super::patch;
use super::resources::{Builtin, ResourceType};
use super::server::{ServerState, obj_key};
use super::status;
use super::store::{Write, now_rfc3339};

/// The revision hash of a pod template (stable, 10 hex digits).
pub fn template_hash(obj: &Value) -> String {
    let t = obj
        .pointer("/spec/template")
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// The status of a finished rollout of `obj`.
pub fn finished_status(kind: Builtin, obj: &Value, now: &str) -> Value {
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let hash = template_hash(obj);
    match kind {
        Builtin::Deployment => {
            let old_conds = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let since = |t: &str| {
                old_conds
                    .iter()
                    .find(|c| c["type"] == t && c["status"] == "True")
                    .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
                    .unwrap_or_else(|| now.to_string())
            };
            json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "lastUpdateTime": now, "lastTransitionTime": since("Available"),
                     "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "True", "lastUpdateTime": now, "lastTransitionTime": since("Progressing"),
                     "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-{hash}\" has successfully progressed.")},
                ],
            })
        }
        Builtin::StatefulSet => json!({
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": replicas,
            "currentReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "currentRevision": format!("{name}-{hash}"),
            "updateRevision": format!("{name}-{hash}"),
            "collisionCount": 0,
        }),
        _ => json!({
            "observedGeneration": generation,
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1,
            "numberReady": 1,
            "numberAvailable": 1,
            "numberMisscheduled": 0,
        }),
    }
}

/// Schedules the report of a finished rollout when the workload's current
/// generation has not been observed yet.
pub fn schedule(state: &Arc<ServerState>, rt: &ResourceType, obj: &Value) {
    let Some(kind) = rt.builtin else { return };
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if observed >= generation {
        return;
    }
    let st = state.clone();
    let rt = rt.clone();
    let key = obj_key(obj);
    state.tasks.spawn(async move {
        tokio::select! {
            _ = st.shutdown.cancelled() => return,
            _ = tokio::time::sleep(st.rollout_delay) => {}
        }
        let gr = (rt.storage_group.clone(), rt.storage_resource.clone());
        let schema = rt.structural_schema();
        let _ = st.store.write(&gr, &key, false, |cur| {
            let cur = cur.ok_or_else(|| status::not_found(&rt.group, &rt.plural, &key.1))?;
            if cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                != generation
            {
                return Err(status::conflict_modified(&rt.group, &rt.plural, &key.1));
            }
            let now = now_rfc3339();
            let mut new = (**cur).clone();
            new["status"] = finished_status(kind, cur, &now);
            let new = patch::record_update(
                Some(cur),
                new,
                "kube-controller-manager",
                Some("status"),
                &now,
                schema.as_deref(),
            );
            Ok(Write::Put(new))
        });
        if kind == Builtin::Deployment
            && let Some(cur) = st.store.get(&gr, &key)
        {
            record_scaling_event(&st, &cur);
        }
    });
}

/// Records the Event the deployment controller writes when it creates a
/// Deployment's new ReplicaSet: `ScalingReplicaSet`, "Scaled up replica set
/// <name>-<hash> from 0 to <replicas>", so `kubectl get events` tells a
/// rollout's story as on a cluster.
fn record_scaling_event(state: &Arc<ServerState>, deployment: &Value) {
    let reg = state.registry();
    let Some(rt) = reg.find("", "v1", "events") else {
        return;
    };
    let meta = &deployment["metadata"];
    let (ns, name) = (
        meta["namespace"].as_str().unwrap_or_default(),
        meta["name"].as_str().unwrap_or_default(),
    );
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let now = now_rfc3339();
    let event_name = format!("{name}.{:016x}", super::store::random_u64());
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "namespace": ns,
            "name": name,
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "reason": "ScalingReplicaSet",
        "message": format!("Scaled up replica set {name}-{} from 0 to {replicas}", template_hash(deployment)),
        "source": {"component": "deployment-controller"},
        "reportingComponent": "deployment-controller",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": "Normal",
    });
    let Ok((event, _)) = super::admission::prepare(
        &rt,
        super::admission::Op::Create,
        None,
        None,
        event,
        super::admission::FieldValidation::Ignore,
        Some("kube-controller-manager"),
    ) else {
        return;
    };
    let gr = (rt.storage_group.clone(), rt.storage_resource.clone());
    let _ = state
        .store
        .write(&gr, &(ns.to_owned(), event_name), false, |_| {
            Ok(Write::Put(event))
        });
}

/// Schedules rollouts for workloads loaded from a data dir.
pub fn resume(state: &Arc<ServerState>) {
    let reg = state.registry();
    for rt in reg.all() {
        if matches!(
            rt.builtin,
            Some(Builtin::Deployment | Builtin::StatefulSet | Builtin::DaemonSet)
        ) {
            for o in state.store.all(
                &(rt.storage_group.clone(), rt.storage_resource.clone()),
                None,
            ) {
                schedule(state, rt, &o);
            }
        }
    }
}
