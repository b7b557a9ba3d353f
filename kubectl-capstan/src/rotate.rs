//! `kubectl capstan rotate ISSUER`: start a rotation of a self-managed CA
//! the way the docs say (a new value of the issuer's `capstan.dev/rotate`
//! annotation) and follow it until the new CA signs. Pure: whether a
//! rotation may start, the annotation patch, and what changed between two
//! reads of the issuer and its Events.

use std::collections::BTreeSet;

use capstan_issuer::api::ca_issuer::{IssuerSpec, IssuerStatus, RotationPhase};
use capstan_issuer::ca::layout::ROTATE_TRIGGER;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::EventView;
use crate::status::phase_name;
use crate::target::IssuerId;

/// Checks that `issuer` can start a rotation now; returns the fingerprint
/// of the CA that signs before it.
///
/// # Errors
/// [`Error::Refused`] when the CA is the user's (capstan does not rotate
/// it), none is loaded yet, or a rotation is already publishing (a new
/// trigger would start a second one right after it).
pub fn can_start(
    issuer: &IssuerId,
    spec: &IssuerSpec,
    status: Option<&IssuerStatus>,
) -> Result<String> {
    if spec.self_managed.is_none() {
        let secret = spec.ca.as_ref().map_or("?", |c| c.secret_name.as_str());
        return Err(Error::Refused(format!(
            "{issuer} signs with a CA you provide (Secret {secret}); capstan rotates only self-managed CAs: put the new CA into that Secret instead"
        )));
    }
    let Some(ca) = status.and_then(|s| s.ca.as_ref()) else {
        return Err(Error::Refused(format!(
            "{issuer} has no CA loaded yet; see `kubectl capstan status {}`",
            arg(issuer)
        )));
    };
    if let Some(rotation) = status.and_then(|s| s.rotation.as_ref())
        && rotation.phase == RotationPhase::Publishing
    {
        let when = rotation.switch_time.as_ref().map_or_else(String::new, |t| {
            format!(" at {}", crate::output::seconds(t.0))
        });
        return Err(Error::Refused(format!(
            "a rotation of {issuer} is already under way: the next CA starts signing{when}; wait for it (another trigger now would rotate again right after)"
        )));
    }
    Ok(ca.fingerprint.clone())
}

/// The `ISSUER` argument that names `issuer`.
#[must_use]
pub fn arg(issuer: &IssuerId) -> String {
    match &issuer.namespace {
        Some(ns) => format!("caissuer/{} -n {ns}", issuer.name),
        None => format!("clustercaissuer/{}", issuer.name),
    }
}

/// A trigger value never used before: the time, to the nanosecond, and
/// different from the `current` one.
#[must_use]
pub fn trigger_value(now: Timestamp, current: Option<&str>) -> String {
    let value = format!("kubectl-capstan-{now}");
    if current == Some(value.as_str()) {
        format!("{value}-again")
    } else {
        value
    }
}

/// The merge patch that sets the trigger.
#[must_use]
pub fn trigger_patch(value: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {ROTATE_TRIGGER: value}}})
}

/// Something that happened while waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// A new Event (or a repeat of one) on the issuer.
    Event(EventView),
    /// `status.rotation.phase` changed.
    #[serde(rename_all = "camelCase")]
    Phase {
        /// Before (`None`: not reported).
        from: Option<String>,
        /// After.
        to: Option<String>,
    },
    /// The new CA signs.
    #[serde(rename_all = "camelCase")]
    Signing {
        /// Its fingerprint.
        fingerprint: String,
        /// Its subject.
        subject: String,
    },
}

impl Step {
    /// The step as one line of text.
    #[must_use]
    pub fn line(&self) -> String {
        match self {
            Self::Event(e) => format!("Event {} {}: {}", e.type_, e.reason, e.message),
            Self::Phase { from, to } => format!(
                "Phase {} -> {}",
                from.as_deref().unwrap_or("-"),
                to.as_deref().unwrap_or("-")
            ),
            Self::Signing {
                fingerprint,
                subject,
            } => format!("Signing with the new CA {fingerprint} {subject}"),
        }
    }
}

/// What has been seen so far of a rotation.
#[derive(Debug, Clone)]
pub struct Progress {
    before: String,
    seen: BTreeSet<(String, i32)>,
    phase: Option<RotationPhase>,
    done: bool,
}

fn phase_of(status: Option<&IssuerStatus>) -> Option<RotationPhase> {
    status.and_then(|s| s.rotation.as_ref()).map(|r| r.phase)
}

impl Progress {
    /// Starts following from the signing CA `before` and what was read
    /// before the trigger was set (those Events are not new).
    #[must_use]
    pub fn new(before: String, status: Option<&IssuerStatus>, events: &[Event]) -> Self {
        Self {
            before,
            seen: events.iter().map(key).collect(),
            phase: phase_of(status),
            done: false,
        }
    }

    /// Whether the new CA signs.
    #[must_use]
    pub fn done(&self) -> bool {
        self.done
    }

    /// What is new in this read: Events oldest first, then a phase change,
    /// then the switch to the new CA.
    pub fn observe(&mut self, status: Option<&IssuerStatus>, events: &[Event]) -> Vec<Step> {
        let mut fresh: Vec<EventView> = events
            .iter()
            .filter(|e| self.seen.insert(key(e)))
            .map(EventView::of)
            .collect();
        fresh.sort_by_key(|e| e.last_timestamp);
        let mut steps: Vec<Step> = fresh.into_iter().map(Step::Event).collect();
        let phase = phase_of(status);
        if phase != self.phase {
            steps.push(Step::Phase {
                from: self.phase.map(|p| phase_name(p).to_owned()),
                to: phase.map(|p| phase_name(p).to_owned()),
            });
            self.phase = phase;
        }
        if let Some(ca) = status.and_then(|s| s.ca.as_ref())
            && !self.done
            && ca.fingerprint != self.before
        {
            self.done = true;
            steps.push(Step::Signing {
                fingerprint: ca.fingerprint.clone(),
                subject: ca.subject.clone(),
            });
        }
        steps
    }
}

fn key(e: &Event) -> (String, i32) {
    (
        e.metadata.name.clone().unwrap_or_default(),
        e.count.unwrap_or(1),
    )
}

/// What `rotate -o json|yaml` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The issuer.
    pub issuer: IssuerId,
    /// The value set on `capstan.dev/rotate`.
    pub trigger: String,
    /// The CA that signed before.
    pub previous_ca: String,
    /// The CA that signs at the end (the previous one if not switched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_ca: Option<String>,
    /// Whether the new CA signs (`false` with `--no-wait`).
    pub completed: bool,
    /// What was seen, in order.
    pub steps: Vec<Step>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests_support::event;
    use crate::target::Kind;
    use capstan_issuer::api::ca_issuer::{
        CaSecretSource, CaSummary, RotationStatus, SelfManagedCa,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn id() -> IssuerId {
        IssuerId::new(Kind::ClusterCAIssuer, "", "ca")
    }

    fn managed() -> IssuerSpec {
        IssuerSpec {
            self_managed: Some(SelfManagedCa {
                secret_name: "root".into(),
                ..SelfManagedCa::default()
            }),
            ..IssuerSpec::default()
        }
    }

    fn status(fp: &str, phase: RotationPhase) -> IssuerStatus {
        let t = Time(Timestamp::from_second(1_800_000_000).expect("time"));
        IssuerStatus {
            ca: Some(CaSummary {
                fingerprint: fp.into(),
                subject: format!("CN={fp}"),
                not_before: t.clone(),
                not_after: t.clone(),
            }),
            rotation: Some(RotationStatus {
                phase,
                next_rotation_time: None,
                switch_time: Some(t),
            }),
            ..IssuerStatus::default()
        }
    }

    #[test]
    fn only_a_loaded_self_managed_ca_not_already_publishing_rotates() {
        let stable = status("old", RotationPhase::Stable);
        assert_eq!(
            can_start(&id(), &managed(), Some(&stable)).expect("ok"),
            "old"
        );
        let retiring = status("old", RotationPhase::Retiring);
        assert!(can_start(&id(), &managed(), Some(&retiring)).is_ok());
        let publishing = status("old", RotationPhase::Publishing);
        let err = can_start(&id(), &managed(), Some(&publishing)).expect_err("under way");
        assert!(err.to_string().contains("already under way"), "{err}");
        let users = IssuerSpec {
            ca: Some(CaSecretSource {
                secret_name: "mine".into(),
            }),
            ..IssuerSpec::default()
        };
        let err = can_start(&id(), &users, Some(&stable)).expect_err("user's CA");
        assert!(err.to_string().contains("Secret mine"), "{err}");
        let err = can_start(&id(), &managed(), None).expect_err("no CA");
        assert!(err.to_string().contains("no CA loaded"), "{err}");
    }

    #[test]
    fn the_trigger_is_new_and_set_by_a_merge_patch() {
        let now = Timestamp::new(1_800_000_000, 123).expect("time");
        let v = trigger_value(now, None);
        assert_eq!(v, "kubectl-capstan-2027-01-15T08:00:00.000000123Z");
        assert_ne!(trigger_value(now, Some(&v)), v);
        assert_eq!(
            trigger_patch("x")["metadata"]["annotations"]["capstan.dev/rotate"],
            "x"
        );
    }

    #[test]
    fn progress_reports_new_events_phases_and_the_switch_once() {
        let old_event = event("e0", "CAGenerated", 100, 1);
        let before = status("old", RotationPhase::Stable);
        let mut p = Progress::new(
            "old".into(),
            Some(&before),
            std::slice::from_ref(&old_event),
        );
        assert!(
            p.observe(Some(&before), std::slice::from_ref(&old_event))
                .is_empty()
        );

        let publishing = status("old", RotationPhase::Publishing);
        let started = event("e1", "CARotationStarted", 200, 1);
        let steps = p.observe(Some(&publishing), &[old_event.clone(), started.clone()]);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(
            steps[0]
                .line()
                .starts_with("Event Normal CARotationStarted")
        );
        assert_eq!(steps[1].line(), "Phase Stable -> Publishing");
        assert!(!p.done());

        let switched = status("new", RotationPhase::Retiring);
        let rotated = event("e2", "CARotated", 300, 1);
        let steps = p.observe(Some(&switched), &[started, rotated]);
        assert_eq!(
            steps.iter().map(Step::line).collect::<Vec<_>>(),
            [
                "Event Normal CARotated: CARotated happened",
                "Phase Publishing -> Retiring",
                "Signing with the new CA new CN=new",
            ]
        );
        assert!(p.done());
        assert!(p.observe(Some(&switched), &[]).is_empty());
        // A repeat of an Event (its count bumped) is news.
        let again = event("e0", "CAGenerated", 400, 2);
        assert_eq!(p.observe(Some(&switched), &[again]).len(), 1);
    }
}
