//! The status an issuer should show, computed from what the reconcile found:
//! its Ready condition, the signing CA, and for a self-managed CA where its
//! rotation stands and what each CA of the published bundle is there for.
//!
//! Every time in it is whole seconds, as the API round-trips it, so a
//! status read back compares equal to the one written and an unchanged
//! issuer is never rewritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::ca_issuer::{
    BundleCa, BundleRole, CaSummary, IssuerStatus, RotationPhase, RotationStatus,
};
use crate::api::conditions;
use crate::ca::rotation::{self, RotationState, RotationTiming};

/// What the reconcile found out about an issuer's CA.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Ready to sign.
    Ready {
        /// The signing CA.
        ca: CaSummary,
        /// The CAs of the published bundle, each with its role.
        bundle: Vec<BundleCa>,
        /// When signing last switched CAs (self-managed only).
        last_rotation_time: Option<Time>,
        /// Where the rotation stands (self-managed only).
        rotation: Option<RotationStatus>,
    },
    /// Not ready: a reason from [`conditions::issuer`] and a message.
    NotReady {
        /// Machine-readable reason.
        reason: &'static str,
        /// What the user should know or fix.
        message: String,
    },
}

/// `t` truncated to whole seconds: what a `metav1.Time` keeps.
#[must_use]
pub fn seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// The rotation phase and clock of a self-managed CA whose Secret records
/// `state`, rotated with `timing`.
///
/// * `Publishing` while a next CA waits in the bundle: `switchTime` is when
///   it starts signing; no `nextRotationTime` (the next CA is chosen).
/// * `Retiring` while retired CAs are still in the bundle, and `Stable`
///   otherwise: `nextRotationTime` is the signing CA's rotation point.
#[must_use]
pub fn rotation_status(state: &RotationState, timing: &RotationTiming) -> RotationStatus {
    if let Some((_, published_at)) = &state.next {
        return RotationStatus {
            phase: RotationPhase::Publishing,
            next_rotation_time: None,
            switch_time: Some(seconds(rotation::switch_point(*published_at, timing))),
        };
    }
    RotationStatus {
        phase: if state.retired.is_empty() {
            RotationPhase::Stable
        } else {
            RotationPhase::Retiring
        },
        next_rotation_time: Some(seconds(rotation::rotation_point(&state.signing, timing))),
        switch_time: None,
    }
}

/// Each CA of the published bundle `cas` with its role: `signing` (a
/// fingerprint) signs; for a self-managed CA, `state` says which CA is the
/// next one and which are retired, and until when; every other CA (a
/// user's root above an intermediate, say) is `Trusted`.
///
/// Newest first by notBefore; CAs made in the same second (a drill right
/// after a root was made) in the order Next, Signing, Retired, Trusted.
#[must_use]
pub fn bundle(cas: &[CaSummary], signing: &str, state: Option<&RotationState>) -> Vec<BundleCa> {
    let rank = |role: BundleRole| match role {
        BundleRole::Next => 0,
        BundleRole::Signing => 1,
        BundleRole::Retired => 2,
        BundleRole::Trusted => 3,
    };
    let mut bundle: Vec<BundleCa> = cas
        .iter()
        .map(|ca| {
            let next = state
                .and_then(|s| s.next.as_ref())
                .is_some_and(|(next, _)| next.fingerprint == ca.fingerprint);
            let retired =
                state.and_then(|s| s.retired.iter().find(|r| r.fingerprint == ca.fingerprint));
            let (role, retire_time) = if ca.fingerprint == signing {
                (BundleRole::Signing, None)
            } else if next {
                (BundleRole::Next, None)
            } else if let Some(r) = retired {
                (BundleRole::Retired, Some(seconds(r.drop_after)))
            } else {
                (BundleRole::Trusted, None)
            };
            BundleCa {
                fingerprint: ca.fingerprint.clone(),
                subject: ca.subject.clone(),
                not_before: ca.not_before.clone(),
                not_after: ca.not_after.clone(),
                role,
                retire_time,
            }
        })
        .collect();
    bundle.sort_by(|a, b| {
        (b.not_before.0)
            .cmp(&a.not_before.0)
            .then_with(|| rank(a.role).cmp(&rank(b.role)))
    });
    bundle
}

/// The message of a Ready issuer.
pub const READY_MESSAGE: &str = "Signing CA is loaded and valid";

/// The status for `health`, keeping `lastTransitionTime` when the condition's
/// status does not change.
#[must_use]
pub fn desired(
    previous: Option<&IssuerStatus>,
    health: &Health,
    generation: Option<i64>,
    now: &Time,
) -> IssuerStatus {
    let (status, reason, message) = match health {
        Health::Ready { .. } => (
            conditions::TRUE,
            conditions::issuer::READY,
            READY_MESSAGE.to_owned(),
        ),
        Health::NotReady { reason, message } => (conditions::FALSE, *reason, message.clone()),
    };
    let old = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == conditions::READY));
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let ready = Condition {
        type_: conditions::READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    match health {
        Health::Ready {
            ca,
            bundle,
            last_rotation_time,
            rotation,
        } => IssuerStatus {
            conditions: vec![ready],
            ca: Some(ca.clone()),
            bundle_size: Some(i32::try_from(bundle.len()).unwrap_or(i32::MAX)),
            last_rotation_time: last_rotation_time.clone(),
            observed_generation: generation,
            rotation: rotation.clone(),
            bundle: bundle.clone(),
        },
        Health::NotReady { .. } => IssuerStatus {
            conditions: vec![ready],
            // Keep showing the last known CA and rotation: useful while a
            // Secret is being fixed, and not misleading beside Ready=False.
            ca: previous.and_then(|p| p.ca.clone()),
            bundle_size: previous.and_then(|p| p.bundle_size),
            last_rotation_time: previous.and_then(|p| p.last_rotation_time.clone()),
            observed_generation: generation,
            rotation: previous.and_then(|p| p.rotation.clone()),
            bundle: previous.map(|p| p.bundle.clone()).unwrap_or_default(),
        },
    }
}

/// Whether writing `desired` would change anything.
#[must_use]
pub fn differs(previous: Option<&IssuerStatus>, desired: &IssuerStatus) -> bool {
    previous != Some(desired)
}

/// The JSON merge patch (RFC 7386) of `status` that turns `previous` into
/// `desired`: all of `desired`, and `null` for every field `previous` has
/// that `desired` lacks (a merge patch keeps what it does not mention, so
/// `switchTime` would otherwise outlive the `Publishing` phase). Lists are
/// replaced whole, as merge patches do.
#[must_use]
pub fn merge_patch(previous: Option<&IssuerStatus>, desired: &IssuerStatus) -> serde_json::Value {
    let desired = serde_json::to_value(desired).unwrap_or_default();
    let previous = previous
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or_default();
    serde_json::json!({ "status": with_removals(&previous, desired) })
}

/// `desired` with `null` for the object keys only `previous` has, at any depth.
fn with_removals(previous: &serde_json::Value, desired: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (previous, desired) {
        (Value::Object(old), Value::Object(mut new)) => {
            for (key, old_value) in old {
                match new.remove(key) {
                    None => {
                        new.insert(key.clone(), Value::Null);
                    }
                    Some(value) => {
                        new.insert(key.clone(), with_removals(old_value, value));
                    }
                }
            }
            Value::Object(new)
        }
        (_, desired) => desired,
    }
}

/// The Warning Event to record when an issuer becomes not ready, or not
/// ready for another reason: (reason, message). `None` when it is ready or
/// was already not ready for the same reason, so a broken issuer that is
/// re-checked every minute does not repeat itself.
#[must_use]
pub fn not_ready_event<'a>(
    previous: Option<&IssuerStatus>,
    health: &'a Health,
) -> Option<(&'static str, &'a str)> {
    let Health::NotReady { reason, message } = health else {
        return None;
    };
    let old = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == conditions::READY));
    let same = old.is_some_and(|c| c.status == conditions::FALSE && c.reason == *reason);
    (!same).then_some((*reason, message.as_str()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::ca::rotation::{CaRecord, Retired};
    use crate::fixtures::at;

    fn summary() -> CaSummary {
        CaSummary {
            fingerprint: "ab".into(),
            subject: "CN=ca".into(),
            not_before: at(0),
            not_after: at(3600),
        }
    }

    fn ready() -> Health {
        Health::Ready {
            ca: summary(),
            bundle: bundle(&[summary()], "ab", None),
            last_rotation_time: None,
            rotation: None,
        }
    }

    fn record(fingerprint: &str, from: i64, to: i64) -> CaRecord {
        CaRecord {
            fingerprint: fingerprint.into(),
            not_before: at(from).0,
            not_after: at(to).0,
        }
    }

    fn ca(fingerprint: &str, from: i64, to: i64) -> CaSummary {
        CaSummary {
            fingerprint: fingerprint.into(),
            subject: format!("CN={fingerprint}"),
            not_before: at(from),
            not_after: at(to),
        }
    }

    /// A 60-minute CA rotated with 20 minutes left, 5 minutes of propagation.
    fn timing() -> RotationTiming {
        RotationTiming {
            rotate_before: Duration::from_secs(20 * 60),
            propagation_delay: Duration::from_secs(5 * 60),
            overlap: None,
            max_leaf: Duration::from_secs(10 * 60),
        }
    }

    fn stable() -> RotationState {
        RotationState {
            signing: record("a", 0, 3600),
            next: None,
            retired: vec![],
            handled_trigger: None,
        }
    }

    /// `t` plus some nanoseconds, as `Timestamp::now()` gives them.
    fn with_nanos(t: &Time) -> Timestamp {
        t.0.checked_add(SignedDuration::from_nanos(123_456_789))
            .expect("in range")
    }

    #[test]
    fn each_phase_shows_its_clock() {
        assert_eq!(
            rotation_status(&stable(), &timing()),
            RotationStatus {
                phase: RotationPhase::Stable,
                next_rotation_time: Some(at(2400)),
                switch_time: None,
            }
        );
        let publishing = RotationState {
            next: Some((record("b", 2400, 6000), with_nanos(&at(2400)))),
            ..stable()
        };
        assert_eq!(
            rotation_status(&publishing, &timing()),
            RotationStatus {
                phase: RotationPhase::Publishing,
                next_rotation_time: None,
                switch_time: Some(at(2700)),
            },
            "switch time in whole seconds"
        );
        let retiring = RotationState {
            signing: record("b", 2400, 6000),
            retired: vec![Retired {
                fingerprint: "a".into(),
                drop_after: at(3300).0,
            }],
            ..stable()
        };
        assert_eq!(
            rotation_status(&retiring, &timing()),
            RotationStatus {
                phase: RotationPhase::Retiring,
                next_rotation_time: Some(at(4800)),
                switch_time: None,
            }
        );
    }

    #[test]
    fn every_ca_of_the_bundle_has_its_role() {
        let state = RotationState {
            signing: record("b", 1200, 4800),
            next: Some((record("c", 2400, 6000), at(2400).0)),
            retired: vec![Retired {
                fingerprint: "a".into(),
                drop_after: with_nanos(&at(1800)),
            }],
            handled_trigger: None,
        };
        let cas = [
            ca("c", 2400, 6000),
            ca("b", 1200, 4800),
            ca("a", 0, 3600),
            ca("x", -10, 9000),
        ];
        let roles: Vec<(String, BundleRole, Option<Time>)> = bundle(&cas, "b", Some(&state))
            .into_iter()
            .map(|b| (b.fingerprint, b.role, b.retire_time))
            .collect();
        assert_eq!(
            roles,
            vec![
                ("c".into(), BundleRole::Next, None),
                ("b".into(), BundleRole::Signing, None),
                ("a".into(), BundleRole::Retired, Some(at(1800))),
                ("x".into(), BundleRole::Trusted, None),
            ]
        );
        let first = &bundle(&cas, "b", Some(&state))[0];
        assert_eq!(
            (first.subject.as_str(), &first.not_before, &first.not_after),
            ("CN=c", &at(2400), &at(6000))
        );
        // Made in the same second: the next CA still comes first.
        let same_second = [ca("a", 0, 3600), ca("b", 0, 3600)];
        let next_of_a = RotationState {
            next: Some((record("b", 0, 3600), at(5).0)),
            ..stable()
        };
        let roles: Vec<BundleRole> = bundle(&same_second, "a", Some(&next_of_a))
            .into_iter()
            .map(|b| b.role)
            .collect();
        assert_eq!(roles, vec![BundleRole::Next, BundleRole::Signing]);
        // A user-provided CA: no rotation state, its chain's root is trusted.
        let user: Vec<BundleRole> =
            bundle(&[ca("root", 0, 9000), ca("int", 10, 5000)], "int", None)
                .into_iter()
                .map(|b| b.role)
                .collect();
        assert_eq!(user, vec![BundleRole::Signing, BundleRole::Trusted]);
    }

    #[test]
    fn a_status_read_back_from_the_api_is_not_rewritten() {
        let publishing = RotationState {
            next: Some((record("b", 2400, 6000), with_nanos(&at(2400)))),
            retired: vec![Retired {
                fingerprint: "old".into(),
                drop_after: with_nanos(&at(600)),
            }],
            ..stable()
        };
        let health = Health::Ready {
            ca: ca("a", 0, 3600),
            bundle: bundle(
                &[
                    ca("b", 2400, 6000),
                    ca("a", 0, 3600),
                    ca("old", -3600, 3000),
                ],
                "a",
                Some(&publishing),
            ),
            last_rotation_time: Some(seconds(with_nanos(&at(30)))),
            rotation: Some(rotation_status(&publishing, &timing())),
        };
        let written = desired(None, &health, Some(3), &seconds(with_nanos(&at(2401))));
        let json = serde_json::to_value(&written).expect("serializes");
        assert_eq!(json["rotation"]["phase"], "Publishing");
        assert_eq!(json["rotation"]["switchTime"], "2026-01-01T00:45:00Z");
        assert_eq!(json["bundle"][0]["role"], "Next");
        assert_eq!(json["bundle"][2]["retireTime"], "2026-01-01T00:10:00Z");
        assert_eq!(json["bundleSize"], 3);
        let read_back: IssuerStatus = serde_json::from_value(json).expect("deserializes");
        assert_eq!(read_back, written, "whole seconds survive the round trip");
        let again = desired(Some(&read_back), &health, Some(3), &at(2460));
        assert!(!differs(Some(&read_back), &again), "nothing changed");
    }

    #[test]
    fn the_patch_removes_what_the_new_phase_lacks() {
        let publishing = RotationState {
            next: Some((record("b", 2400, 6000), at(2400).0)),
            ..stable()
        };
        let health = |state: &RotationState| Health::Ready {
            ca: ca("a", 0, 3600),
            bundle: bundle(&[ca("a", 0, 3600)], "a", Some(state)),
            last_rotation_time: None,
            rotation: Some(rotation_status(state, &timing())),
        };
        let first = desired(None, &health(&publishing), Some(1), &at(10));
        let second = desired(Some(&first), &health(&stable()), Some(1), &at(20));
        let patch = merge_patch(Some(&first), &second);
        assert_eq!(
            patch["status"]["rotation"],
            serde_json::json!({
                "phase": "Stable",
                "nextRotationTime": "2026-01-01T00:40:00Z",
                "switchTime": null,
            })
        );
        assert_eq!(patch["status"]["bundleSize"], 1);
        let mut applied = serde_json::to_value(&first).expect("serializes");
        json_merge(&mut applied, &patch["status"]);
        assert_eq!(
            serde_json::from_value::<IssuerStatus>(applied).expect("deserializes"),
            second,
            "applying the patch gives the desired status"
        );
        let broken = Health::NotReady {
            reason: "InvalidKeyPair",
            message: "mismatch".into(),
        };
        let fresh = desired(None, &broken, None, &at(30));
        assert_eq!(
            merge_patch(None, &fresh)["status"],
            serde_json::to_value(&fresh).expect("serializes")
        );
    }

    /// RFC 7386, as the API server applies a merge patch.
    fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        use serde_json::Value;
        let Value::Object(patch) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        let Value::Object(object) = target else {
            return;
        };
        for (key, value) in patch {
            if value.is_null() {
                object.remove(key);
            } else {
                json_merge(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }

    #[test]
    fn a_phase_change_is_written() {
        let stable_health = Health::Ready {
            ca: ca("a", 0, 3600),
            bundle: bundle(&[ca("a", 0, 3600)], "a", Some(&stable())),
            last_rotation_time: None,
            rotation: Some(rotation_status(&stable(), &timing())),
        };
        let first = desired(None, &stable_health, Some(1), &at(10));
        let publishing = RotationState {
            next: Some((record("b", 2400, 6000), at(2400).0)),
            ..stable()
        };
        let next = Health::Ready {
            ca: ca("a", 0, 3600),
            bundle: bundle(
                &[ca("b", 2400, 6000), ca("a", 0, 3600)],
                "a",
                Some(&publishing),
            ),
            last_rotation_time: None,
            rotation: Some(rotation_status(&publishing, &timing())),
        };
        let second = desired(Some(&first), &next, Some(1), &at(2400));
        assert!(differs(Some(&first), &second));
        assert_eq!(
            second.conditions[0].last_transition_time,
            at(10),
            "still Ready"
        );
        // Not ready keeps showing the last rotation and bundle.
        let broken = Health::NotReady {
            reason: "InvalidKeyPair",
            message: "mismatch".into(),
        };
        let third = desired(Some(&second), &broken, Some(1), &at(2500));
        assert_eq!(third.rotation, second.rotation);
        assert_eq!(third.bundle, second.bundle);
    }

    #[test]
    fn ready_then_unchanged_writes_nothing() {
        let first = desired(None, &ready(), Some(1), &at(10));
        assert_eq!(first.conditions[0].status, "True");
        assert_eq!(first.conditions[0].last_transition_time, at(10));
        let again = desired(Some(&first), &ready(), Some(1), &at(20));
        assert!(!differs(Some(&first), &again), "only time passed");
    }

    #[test]
    fn transitions_move_the_time_and_keep_the_last_ca() {
        let first = desired(None, &ready(), Some(1), &at(10));
        let broken = Health::NotReady {
            reason: "SecretNotFound",
            message: "secret x not found".into(),
        };
        let second = desired(Some(&first), &broken, Some(1), &at(20));
        assert_eq!(second.conditions[0].last_transition_time, at(20));
        assert_eq!(second.conditions[0].reason, "SecretNotFound");
        assert_eq!(second.ca, Some(summary()));
        let other = Health::NotReady {
            reason: "InvalidKeyPair",
            message: "mismatch".into(),
        };
        let third = desired(Some(&second), &other, Some(2), &at(30));
        assert_eq!(
            third.conditions[0].last_transition_time,
            at(20),
            "False stays False"
        );
        assert!(differs(Some(&second), &third));
    }

    #[test]
    fn a_not_ready_event_once_per_reason() {
        let broken = Health::NotReady {
            reason: "SecretNotFound",
            message: "secret x not found".into(),
        };
        assert_eq!(not_ready_event(None, &ready()), None);
        assert_eq!(
            not_ready_event(None, &broken),
            Some(("SecretNotFound", "secret x not found"))
        );
        let ok = desired(None, &ready(), Some(1), &at(10));
        assert!(not_ready_event(Some(&ok), &broken).is_some(), "Ready → not");
        let already = desired(Some(&ok), &broken, Some(1), &at(20));
        assert_eq!(not_ready_event(Some(&already), &broken), None, "no repeat");
        let other = Health::NotReady {
            reason: "InvalidKeyPair",
            message: "mismatch".into(),
        };
        assert_eq!(
            not_ready_event(Some(&already), &other),
            Some(("InvalidKeyPair", "mismatch"))
        );
    }
}
