//! The status an issuer should show, computed from what the reconcile found.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::ca_issuer::{CaSummary, IssuerStatus};
use crate::api::conditions;

/// What the reconcile found out about an issuer's CA.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Ready to sign.
    Ready {
        /// The signing CA.
        ca: CaSummary,
        /// CAs in the published bundle.
        bundle_size: i32,
        /// When signing last switched CAs (self-managed only).
        last_rotation_time: Option<Time>,
    },
    /// Not ready: a reason from [`conditions::issuer`] and a message.
    NotReady {
        /// Machine-readable reason.
        reason: &'static str,
        /// What the user should know or fix.
        message: String,
    },
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
            bundle_size,
            last_rotation_time,
        } => IssuerStatus {
            conditions: vec![ready],
            ca: Some(ca.clone()),
            bundle_size: Some(*bundle_size),
            last_rotation_time: last_rotation_time.clone(),
            observed_generation: generation,
            rotation: None,
            bundle: Vec::new(),
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
    use super::*;
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
            bundle_size: 1,
            last_rotation_time: None,
        }
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
