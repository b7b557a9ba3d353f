//! A `CABundle`'s status from what a reconcile found. Pure.
//!
//! `Ready` is `True` when every selected namespace holds the current bundle;
//! `False` with the source problem's reason while a source cannot be used
//! (the targets keep the last good bundle, and the status keeps describing
//! it); `False`, `TargetsNotInSync`, while some targets could not be written;
//! `False`, `TargetConflict`, while it leaves namespaces to another writer
//! of the same key (see [`super::conflict`]).
//! `lastTransitionTime` moves only when the condition's status does, and a
//! status that differs from the stored one only in timestamps is not written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::source::Problem;
use crate::api::ca_bundle::CABundleStatus;
use crate::reasons::{SYNCED, TARGET_CONFLICT, TARGETS_NOT_IN_SYNC};

/// The condition type.
pub const READY: &str = "Ready";

/// What a reconcile found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bundle was built and the targets planned (and written).
    Built {
        /// SHA-256 of the bundle, hex.
        hash: String,
        /// Certificates in it.
        certificates: usize,
        /// Namespaces selected.
        targets: usize,
        /// Selected namespaces holding it now.
        in_sync: usize,
        /// Why namespaces were left to another writer, if any were.
        conflict: Option<String>,
    },
    /// A source or the spec cannot be used; nothing was written.
    Failed(Problem),
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status to store after `outcome`, given the stored one.
#[must_use]
pub fn desired(
    previous: Option<&CABundleStatus>,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) -> CABundleStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let (state, reason, message) = match outcome {
        Outcome::Built {
            hash,
            certificates,
            targets,
            in_sync,
            conflict,
        } => {
            status.bundle_hash = Some(hash.clone());
            status.certificates = Some(count(*certificates));
            status.targets = Some(count(*targets));
            status.targets_in_sync = Some(count(*in_sync));
            if let Some(message) = conflict {
                ("False", TARGET_CONFLICT, message.clone())
            } else if in_sync >= targets {
                let message = match targets {
                    0 => "No namespace is selected".to_owned(),
                    1 => "The selected namespace holds the current bundle".to_owned(),
                    n => format!("All {n} selected namespaces hold the current bundle"),
                };
                ("True", SYNCED, message)
            } else {
                (
                    "False",
                    TARGETS_NOT_IN_SYNC,
                    format!("{in_sync} of {targets} selected namespaces hold the current bundle"),
                )
            }
        }
        Outcome::Failed(problem) => ("False", problem.reason(), problem.message().to_owned()),
    };
    let previous_ready = status.conditions.iter().find(|c| c.type_ == READY);
    let last_transition_time = match previous_ready {
        Some(c) if c.status == state => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: state.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.insert(0, ready);
    status.observed_generation = generation;
    status
}

/// Whether `desired` says something `stored` does not (timestamps aside).
#[must_use]
pub fn changed(stored: Option<&CABundleStatus>, desired: &CABundleStatus) -> bool {
    let strip = |s: &CABundleStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    stored.is_none_or(|s| strip(s) != strip(desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + secs).expect("valid"))
    }

    fn built(targets: usize, in_sync: usize) -> Outcome {
        Outcome::Built {
            hash: "ab".into(),
            certificates: 2,
            targets,
            in_sync,
            conflict: None,
        }
    }

    fn ready(s: &CABundleStatus) -> &Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .expect("Ready")
    }

    #[test]
    fn all_targets_in_sync_is_ready() {
        let s = desired(None, &built(3, 3), Some(4), &at(0));
        assert_eq!(s.bundle_hash.as_deref(), Some("ab"));
        assert_eq!(
            (s.certificates, s.targets, s.targets_in_sync),
            (Some(2), Some(3), Some(3))
        );
        assert_eq!(s.observed_generation, Some(4));
        let c = ready(&s);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", SYNCED));
        assert_eq!(
            c.message,
            "All 3 selected namespaces hold the current bundle"
        );
        assert!(changed(None, &s));
    }

    #[test]
    fn a_bad_source_keeps_the_last_bundle_and_says_why() {
        let good = desired(None, &built(2, 2), Some(1), &at(0));
        let problem = Problem::PrivateKey("Secret/s -n ns key ca.crt holds a private key".into());
        let bad = desired(Some(&good), &Outcome::Failed(problem), Some(2), &at(10));
        assert_eq!(bad.bundle_hash, good.bundle_hash);
        assert_eq!(bad.targets_in_sync, Some(2));
        let c = ready(&bad);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PrivateKeyRefused")
        );
        assert!(c.message.contains("private key"));
        assert_eq!(c.last_transition_time, at(10));
        assert_eq!(c.observed_generation, Some(2));
    }

    #[test]
    fn a_conflict_is_not_ready_and_says_who_writes() {
        let outcome = Outcome::Built {
            hash: "ab".into(),
            certificates: 1,
            targets: 1,
            in_sync: 1,
            conflict: Some("Not writing key k of ConfigMap/t in 1 namespace(s)".into()),
        };
        let s = desired(None, &outcome, Some(1), &at(0));
        let c = ready(&s);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", TARGET_CONFLICT)
        );
        assert!(c.message.starts_with("Not writing key k"));
    }

    #[test]
    fn transition_time_moves_only_on_transitions_and_unchanged_is_not_written() {
        let first = desired(None, &built(2, 1), Some(1), &at(0));
        assert_eq!(ready(&first).reason, TARGETS_NOT_IN_SYNC);
        assert_eq!(
            ready(&first).message,
            "1 of 2 selected namespaces hold the current bundle"
        );
        let again = desired(Some(&first), &built(2, 1), Some(1), &at(30));
        assert_eq!(again, first);
        assert!(!changed(Some(&first), &again));
        let synced = desired(Some(&first), &built(2, 2), Some(1), &at(60));
        assert_eq!(ready(&synced).last_transition_time, at(60));
        assert!(changed(Some(&first), &synced));
        let none = desired(None, &built(0, 0), None, &at(0));
        assert_eq!(ready(&none).message, "No namespace is selected");
        assert_eq!(ready(&none).status, "True");
    }
}
