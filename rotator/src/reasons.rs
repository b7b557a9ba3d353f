//! Every Event and condition reason the rotator records, in one place.
//!
//! Reasons are part of the rotator's interface: users filter Events by them
//! (`kubectl get events --field-selector reason=RolloutTriggered`), alerts
//! and the docs name them, and the `CABundle` `Ready` condition carries
//! them. So each is a constant here, never assembled at run time (linkerd's
//! `reasons::…`, OpenShift's CMO Event reasons).

/// Event: a workload's pod template got a new `capstan.dev/config-hash`.
pub const ROLLOUT_TRIGGERED: &str = "RolloutTriggered";
/// Event: a rollout the rotator started finished.
pub const ROLLOUT_COMPLETED: &str = "RolloutCompleted";
/// Event (warning): the workload's controller gave up on a rollout.
pub const ROLLOUT_FAILED: &str = "RolloutFailed";
/// Event (warning): a rollout did not finish within `--rollout-timeout`.
pub const ROLLOUT_TIMED_OUT: &str = "RolloutTimedOut";
/// Event: dry run; a restart that would have been made.
pub const ROLLOUT_SKIPPED_DRY_RUN: &str = "RolloutSkippedDryRun";
/// Event (warning): a workload carries Reloader annotations capstan does not
/// honour (see `restart::compat`).
pub const UNSUPPORTED_ANNOTATION: &str = "UnsupportedAnnotation";

/// Event: a `CABundle` created a target ConfigMap.
pub const CONFIG_MAP_CREATED: &str = "ConfigMapCreated";
/// Event: a target or injected ConfigMap got a new bundle.
pub const CONFIG_MAP_UPDATED: &str = "ConfigMapUpdated";
/// Event: a `CABundle` deleted a target ConfigMap it no longer selects.
pub const CONFIG_MAP_DELETED: &str = "ConfigMapDeleted";
/// Event: dry run; a target ConfigMap that would have been created.
pub const CONFIG_MAP_CREATE_SKIPPED_DRY_RUN: &str = "ConfigMapCreateSkippedDryRun";
/// Event: dry run; a ConfigMap that would have been updated.
pub const CONFIG_MAP_UPDATE_SKIPPED_DRY_RUN: &str = "ConfigMapUpdateSkippedDryRun";
/// Event: dry run; a target ConfigMap that would have been deleted.
pub const CONFIG_MAP_DELETE_SKIPPED_DRY_RUN: &str = "ConfigMapDeleteSkippedDryRun";

/// Condition and Event: a source object, or its key, does not exist.
pub const SOURCE_MISSING: &str = "SourceMissing";
/// Condition and Event: a source holds a private key.
pub const PRIVATE_KEY_REFUSED: &str = "PrivateKeyRefused";
/// Condition and Event: a source, spec or annotation cannot be used.
pub const INVALID_SOURCE: &str = "InvalidSource";
/// Condition and Event: another writer owns a target's key.
pub const TARGET_CONFLICT: &str = "TargetConflict";
/// Condition and Event: a source is a ConfigMap some bundle writes.
pub const SOURCE_IS_TARGET: &str = "SourceIsTarget";

/// Condition: every selected namespace holds the bundle.
pub const SYNCED: &str = "Synced";
/// Condition: some selected namespaces do not hold the bundle yet.
pub const TARGETS_NOT_IN_SYNC: &str = "TargetsNotInSync";

/// Error category (metric label): a Kubernetes API call failed.
pub const API_ERROR: &str = "APIError";

#[cfg(test)]
mod tests {
    use super::*;

    /// Users read the reasons in docs/concepts.md: each must be there.
    #[test]
    fn every_event_and_condition_reason_is_documented() {
        let docs = include_str!("../../docs/concepts.md");
        let documented = [
            ROLLOUT_TRIGGERED,
            ROLLOUT_COMPLETED,
            ROLLOUT_FAILED,
            ROLLOUT_TIMED_OUT,
            ROLLOUT_SKIPPED_DRY_RUN,
            UNSUPPORTED_ANNOTATION,
            CONFIG_MAP_CREATED,
            CONFIG_MAP_UPDATED,
            CONFIG_MAP_DELETED,
            CONFIG_MAP_CREATE_SKIPPED_DRY_RUN,
            CONFIG_MAP_UPDATE_SKIPPED_DRY_RUN,
            CONFIG_MAP_DELETE_SKIPPED_DRY_RUN,
            SOURCE_MISSING,
            PRIVATE_KEY_REFUSED,
            INVALID_SOURCE,
            TARGET_CONFLICT,
            SOURCE_IS_TARGET,
            SYNCED,
            TARGETS_NOT_IN_SYNC,
        ];
        for reason in documented {
            assert!(
                docs.contains(&format!("`{reason}`")),
                "{reason} is not in docs/concepts.md"
            );
        }
    }
}
