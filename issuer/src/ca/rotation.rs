//! Self-managed CA rotation as a pure function of what the CA Secret records.
//!
//! A rotation moves through three steps, one per reconcile, each written to
//! the CA Secret before the next is taken, so a crash at any point resumes
//! where it stopped and never loses a key:
//!
//! ```text
//!   Stable ──(rotation point or manual trigger)──► Publish: new CA generated,
//!     ▲                                            added to ca-bundle.crt,
//!     │                                            old CA still signs
//!     │                                                   │ propagationDelay
//!     │                                                   ▼
//!     └──────────────(overlap passed)── Drop ◄──── Switch: new CA signs,
//!                                                  old CA retired but
//!                                                  still in the bundle
//! ```
//!
//! Invariants: no leaf is signed by a CA that has not been in the published
//! bundle for at least `propagationDelay`; a retired CA stays in the bundle
//! until every leaf it signed has expired (`overlap` overrides that), which
//! holds because leaves are never longer than `maxDuration` nor outlive their
//! CA (`retire_until`).

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The identity and validity of one CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

/// A CA that no longer signs but is still trusted until `drop_after`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retired {
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// When it may leave the bundle.
    pub drop_after: Timestamp,
}

/// What the CA Secret records about the rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationState {
    /// The CA that signs now.
    pub signing: CaRecord,
    /// A new CA already published in the bundle, and since when.
    pub next: Option<(CaRecord, Timestamp)>,
    /// Retired CAs still in the bundle.
    pub retired: Vec<Retired>,
    /// The last value of the issuer's `capstan.dev/rotate` annotation acted on.
    pub handled_trigger: Option<String>,
}

/// The timing knobs of a rotation (resolved from `spec.selfManaged`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationTiming {
    /// Start rotating when this much of the signing CA's life is left.
    pub rotate_before: Duration,
    /// Time a published CA waits before it signs.
    pub propagation_delay: Duration,
    /// How long a retired CA stays trusted; `None`: until its leaves expire.
    pub overlap: Option<Duration>,
    /// The longest leaf the issuer signs (`maxDuration`).
    pub max_leaf: Duration,
}

/// Why a new CA is being published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishReason {
    /// The signing CA reached its rotation point.
    Scheduled,
    /// The user set `capstan.dev/rotate` to this new value.
    Triggered(String),
}

/// The one step to take now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change.
    Idle,
    /// Generate a new CA and publish it in the bundle; keep signing with the old.
    Publish(PublishReason),
    /// Sign with the published CA from now on; retire the old one.
    Switch(Retired),
    /// Remove these retired CAs from the bundle.
    Drop(Vec<String>),
}

/// A step and when to look again if nothing else changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to do now.
    pub step: Step,
    /// The next instant at which the plan may change by the clock alone.
    pub recheck_at: Option<Timestamp>,
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn before(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

/// When the signing CA reaches its rotation point.
#[must_use]
pub fn rotation_point(signing: &CaRecord, timing: &RotationTiming) -> Timestamp {
    before(signing.not_after, timing.rotate_before)
}

/// When a CA published at `published_at` starts signing.
#[must_use]
pub fn switch_point(published_at: Timestamp, timing: &RotationTiming) -> Timestamp {
    after(published_at, timing.propagation_delay)
}

/// When a CA retired at `now` may leave the bundle: after `overlap` if set,
/// else when the longest leaf it could have signed expires (never later than
/// the CA itself, since no leaf outlives its CA).
#[must_use]
pub fn retire_until(retiring: &CaRecord, timing: &RotationTiming, now: Timestamp) -> Timestamp {
    match timing.overlap {
        Some(overlap) => after(now, overlap),
        None => after(now, timing.max_leaf).min(retiring.not_after),
    }
}

/// Decides the next rotation step. `trigger` is the current value of the
/// issuer's `capstan.dev/rotate` annotation.
#[must_use]
pub fn plan(
    state: &RotationState,
    timing: &RotationTiming,
    trigger: Option<&str>,
    now: Timestamp,
) -> Plan {
    let mut checks: Vec<Timestamp> = state.retired.iter().map(|r| r.drop_after).collect();

    let step = if let Some((_, published_at)) = &state.next {
        let switch_at = switch_point(*published_at, timing);
        if now >= switch_at {
            Step::Switch(Retired {
                fingerprint: state.signing.fingerprint.clone(),
                drop_after: retire_until(&state.signing, timing, now),
            })
        } else {
            checks.push(switch_at);
            Step::Idle
        }
    } else {
        let due = rotation_point(&state.signing, timing);
        let triggered =
            trigger.filter(|t| !t.is_empty() && Some(*t) != state.handled_trigger.as_deref());
        if let Some(value) = triggered {
            Step::Publish(PublishReason::Triggered(value.to_owned()))
        } else if now >= due {
            Step::Publish(PublishReason::Scheduled)
        } else {
            checks.push(due);
            Step::Idle
        }
    };

    let step = match step {
        Step::Idle => {
            let expired: Vec<String> = state
                .retired
                .iter()
                .filter(|r| r.drop_after <= now)
                .map(|r| r.fingerprint.clone())
                .collect();
            if expired.is_empty() {
                Step::Idle
            } else {
                Step::Drop(expired)
            }
        }
        other => other,
    };
    let recheck_at = checks.into_iter().filter(|t| *t > now).min();
    Plan { step, recheck_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).expect("valid")
    }

    fn ca(name: &str, from: i64, to: i64) -> CaRecord {
        CaRecord {
            fingerprint: name.into(),
            not_before: t(from),
            not_after: t(to),
        }
    }

    /// A CA living 60 minutes, rotated with 20 minutes left, 5 minutes of
    /// propagation, leaves of at most 10 minutes.
    fn timing() -> RotationTiming {
        RotationTiming {
            rotate_before: Duration::from_secs(20 * MIN),
            propagation_delay: Duration::from_secs(5 * MIN),
            overlap: None,
            max_leaf: Duration::from_secs(10 * MIN),
        }
    }

    fn stable(signing: CaRecord) -> RotationState {
        RotationState {
            signing,
            next: None,
            retired: vec![],
            handled_trigger: None,
        }
    }

    #[test]
    fn idle_until_the_rotation_point() {
        let state = stable(ca("a", 0, 3600));
        let p = plan(&state, &timing(), None, t(100));
        assert_eq!(p.step, Step::Idle);
        assert_eq!(p.recheck_at, Some(t(2400)));
        assert_eq!(
            plan(&state, &timing(), None, t(2400)).step,
            Step::Publish(PublishReason::Scheduled)
        );
    }

    #[test]
    fn switch_waits_for_propagation() {
        let state = RotationState {
            next: Some((ca("b", 2400, 6000), t(2400))),
            ..stable(ca("a", 0, 3600))
        };
        let waiting = plan(&state, &timing(), None, t(2400 + 299));
        assert_eq!(waiting.step, Step::Idle);
        assert_eq!(waiting.recheck_at, Some(t(2700)));
        let switched = plan(&state, &timing(), None, t(2700));
        // Leaves of the old CA live at most 10 minutes past the switch.
        assert_eq!(
            switched.step,
            Step::Switch(Retired {
                fingerprint: "a".into(),
                drop_after: t(3300)
            })
        );
    }

    #[test]
    fn retired_ca_never_outlives_itself_and_overlap_overrides() {
        let late = plan(
            &RotationState {
                next: Some((ca("b", 0, 9000), t(3000))),
                ..stable(ca("a", 0, 3600))
            },
            &timing(),
            None,
            t(3500),
        );
        assert_eq!(
            late.step,
            Step::Switch(Retired {
                fingerprint: "a".into(),
                drop_after: t(3600)
            })
        );
        let with_overlap = RotationTiming {
            overlap: Some(Duration::from_secs(30)),
            ..timing()
        };
        assert_eq!(
            retire_until(&ca("a", 0, 3600), &with_overlap, t(2700)),
            t(2730)
        );
    }

    #[test]
    fn drops_retired_cas_after_their_overlap() {
        let state = RotationState {
            retired: vec![
                Retired {
                    fingerprint: "old".into(),
                    drop_after: t(500),
                },
                Retired {
                    fingerprint: "older".into(),
                    drop_after: t(100),
                },
                Retired {
                    fingerprint: "recent".into(),
                    drop_after: t(900),
                },
            ],
            ..stable(ca("a", 0, 3600))
        };
        let p = plan(&state, &timing(), None, t(500));
        assert_eq!(p.step, Step::Drop(vec!["old".into(), "older".into()]));
        assert_eq!(p.recheck_at, Some(t(900)));
    }

    #[test]
    fn manual_trigger_rotates_once_per_value() {
        let state = stable(ca("a", 0, 3600));
        assert_eq!(
            plan(&state, &timing(), Some("drill-1"), t(10)).step,
            Step::Publish(PublishReason::Triggered("drill-1".into()))
        );
        let handled = RotationState {
            handled_trigger: Some("drill-1".into()),
            ..state
        };
        assert_eq!(
            plan(&handled, &timing(), Some("drill-1"), t(10)).step,
            Step::Idle
        );
        assert_eq!(plan(&handled, &timing(), Some(""), t(10)).step, Step::Idle);
    }

    #[test]
    fn trigger_during_propagation_waits_for_the_switch() {
        let state = RotationState {
            next: Some((ca("b", 100, 3700), t(100))),
            handled_trigger: Some("drill-1".into()),
            ..stable(ca("a", 0, 3600))
        };
        assert_eq!(
            plan(&state, &timing(), Some("drill-2"), t(200)).step,
            Step::Idle
        );
    }

    /// Walks a CA through several lifetimes minute by minute and checks the
    /// invariants: the signer was published at least propagationDelay
    /// before it signs, and no retired CA leaves before its leaves expire.
    #[test]
    fn simulated_lifetimes_keep_the_invariants() {
        let timing = timing();
        let mut state = stable(ca("ca0", 0, 3600));
        let mut published: std::collections::HashMap<String, Timestamp> =
            [("ca0".to_string(), t(0))].into();
        let mut last_leaf_expiry: std::collections::HashMap<String, Timestamp> = Default::default();
        let mut bundle: Vec<String> = vec!["ca0".into()];
        let mut generation = 0;
        for minute in 0..(5 * 60) {
            let now = t(minute * 60);
            match plan(&state, &timing, None, now).step {
                Step::Idle => {}
                Step::Publish(_) => {
                    generation += 1;
                    let name = format!("ca{generation}");
                    let next = ca(&name, minute * 60, minute * 60 + 3600);
                    bundle.insert(0, name.clone());
                    published.insert(name, now);
                    state.next = Some((next, now));
                }
                Step::Switch(retired) => {
                    let (next, _) = state.next.take().expect("switch needs a next CA");
                    state.retired.push(retired);
                    state.signing = next;
                }
                Step::Drop(gone) => {
                    for fp in &gone {
                        let expiry = last_leaf_expiry.get(fp).copied().unwrap_or(t(0));
                        assert!(
                            now >= expiry,
                            "{fp} dropped at {now} before its leaf expiring {expiry}"
                        );
                    }
                    state.retired.retain(|r| !gone.contains(&r.fingerprint));
                    bundle.retain(|b| !gone.contains(b));
                }
            }
            // Sign a maximal leaf every minute with the current signer.
            let signer = &state.signing;
            assert!(bundle.contains(&signer.fingerprint));
            let since = published[&signer.fingerprint];
            assert!(
                signer.fingerprint == "ca0" || now >= after(since, timing.propagation_delay),
                "{} signs at {now}, published at {since}",
                signer.fingerprint
            );
            let leaf_expiry = after(now, timing.max_leaf).min(signer.not_after);
            last_leaf_expiry.insert(signer.fingerprint.clone(), leaf_expiry);
            assert!(now < signer.not_after, "signing CA expired at {now}");
        }
        assert!(
            generation >= 6,
            "expected several rotations, got {generation}"
        );
    }
}
