//! `kubectl capstan status ISSUER`: the issuer's Ready condition, where its
//! CA is in its rotation, every CA of its bundle and its last Events. Pure:
//! built from the issuer as read (the issuer crate's own types, filled by
//! the issuer) and its Events.

use capstan_issuer::api::ca_issuer::{
    BundleCa, BundleRole, CaSummary, IssuerSpec, IssuerStatus, RotationPhase, RotationStatus,
};
use capstan_issuer::api::conditions;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::events::{self, EventView};
use crate::output::{Table, at, relative};
use crate::target::IssuerId;

/// How many Events `status` shows.
pub const EVENTS_SHOWN: usize = 10;

/// The issuer's `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ready {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Reason (`Ready`, `SecretNotFound`...).
    pub reason: String,
    /// Message.
    pub message: String,
}

/// Where the issuer's CA comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// `selfManaged` (generated and rotated by capstan) or `ca` (the user's).
    pub kind: &'static str,
    /// The CA Secret's name.
    pub secret_name: String,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The issuer.
    pub issuer: IssuerId,
    /// How a bare name was resolved, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// Where its CA comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// `Ready`, if the issuer has reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    /// Rotation phase and clock (self-managed CAs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// The CA that signs now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_ca: Option<CaSummary>,
    /// Every CA of the published bundle, newest first.
    pub bundle: Vec<BundleCa>,
    /// When signing last switched CAs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// Whether the status describes the current spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
    /// The last Events on the issuer, oldest first.
    pub events: Vec<EventView>,
}

/// The report for issuer `issuer` with `spec`, `status`, `generation` and
/// `events`.
#[must_use]
pub fn report(
    issuer: IssuerId,
    resolved: Option<String>,
    spec: &IssuerSpec,
    status: Option<&IssuerStatus>,
    generation: Option<i64>,
    events: &[Event],
) -> Report {
    let source = match (&spec.self_managed, &spec.ca) {
        (Some(m), _) => Some(Source {
            kind: "selfManaged",
            secret_name: m.secret_name.clone(),
        }),
        (None, Some(c)) => Some(Source {
            kind: "ca",
            secret_name: c.secret_name.clone(),
        }),
        (None, None) => None,
    };
    let ready = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == conditions::READY))
        .map(|c| Ready {
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        });
    let stale = status
        .and_then(|s| s.observed_generation)
        .zip(generation)
        .map(|(observed, current)| observed < current);
    Report {
        issuer,
        resolved,
        source,
        ready,
        rotation: status.and_then(|s| s.rotation.clone()),
        signing_ca: status.and_then(|s| s.ca.clone()),
        bundle: status.map(|s| s.bundle.clone()).unwrap_or_default(),
        last_rotation_time: status.and_then(|s| s.last_rotation_time.clone()),
        stale,
        events: events::last(events, EVENTS_SHOWN),
    }
}

/// A phase's name.
#[must_use]
pub fn phase_name(phase: RotationPhase) -> &'static str {
    match phase {
        RotationPhase::Stable => "Stable",
        RotationPhase::Publishing => "Publishing",
        RotationPhase::Retiring => "Retiring",
    }
}

fn role_name(role: BundleRole) -> &'static str {
    match role {
        BundleRole::Signing => "Signing",
        BundleRole::Next => "Next",
        BundleRole::Retired => "Retired",
        BundleRole::Trusted => "Trusted",
    }
}

/// What the phase means, with its times.
fn phase_line(rotation: &RotationStatus, now: Timestamp) -> String {
    let name = phase_name(rotation.phase);
    match rotation.phase {
        RotationPhase::Stable => {
            format!("{name} (one CA signs; nothing waits to sign or to leave)")
        }
        RotationPhase::Publishing => match &rotation.switch_time {
            Some(t) => format!(
                "{name} (the next CA is trusted and starts signing {})",
                relative(t.0, now)
            ),
            None => {
                format!("{name} (the next CA is trusted and starts signing after propagationDelay)")
            }
        },
        RotationPhase::Retiring => {
            format!("{name} (the new CA signs; a retired CA stays trusted until its retire time)")
        }
    }
}

/// The report as text: a header in `kubectl describe`'s manner, the bundle
/// as a table, then the Events as a table.
#[must_use]
pub fn render(r: &Report, now: Timestamp) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    field("Issuer", r.issuer.to_string());
    if let Some(how) = &r.resolved {
        field("Resolved", how.clone());
    }
    if let Some(s) = &r.source {
        let what = if s.kind == "selfManaged" {
            "self-managed CA"
        } else {
            "CA provided"
        };
        field("CA Secret", format!("{} ({what})", s.secret_name));
    }
    match &r.ready {
        Some(ready) => field(
            "Ready",
            format!("{} ({}) {}", ready.status, ready.reason, ready.message)
                .trim_end()
                .to_owned(),
        ),
        None => field(
            "Ready",
            "Unknown (the issuer has not reported yet)".to_owned(),
        ),
    }
    if r.stale == Some(true) {
        field(
            "Note",
            "the status describes an older spec; the issuer has not caught up yet".to_owned(),
        );
    }
    match &r.rotation {
        Some(rotation) => {
            field("Phase", phase_line(rotation, now));
            if let Some(t) = &rotation.next_rotation_time {
                field("Next rotation", at(t.0, now));
            }
            if let Some(t) = &rotation.switch_time {
                field("Switch", at(t.0, now));
            }
        }
        None => field(
            "Phase",
            "- (not rotated by capstan: the CA is the user's, or the issuer reports no rotation)"
                .to_owned(),
        ),
    }
    if let Some(t) = &r.last_rotation_time {
        field("Last rotation", at(t.0, now));
    }
    match &r.signing_ca {
        Some(ca) => {
            field("Signing CA", format!("{} {}", ca.fingerprint, ca.subject));
            field("  Expires", at(ca.not_after.0, now));
        }
        None => field("Signing CA", "- (no CA loaded)".to_owned()),
    }
    for retired in r.bundle.iter().filter(|c| c.role == BundleRole::Retired) {
        if let Some(t) = &retired.retire_time {
            field(
                "Retired leaves",
                format!("{} {}", short(&retired.fingerprint), at(t.0, now)),
            );
        }
    }
    out.push('\n');
    if r.bundle.is_empty() {
        out.push_str("Bundle: not reported by the issuer\n");
    } else {
        out.push_str("Bundle:\n");
        let mut t = Table::new(&[
            "role",
            "fingerprint",
            "subject",
            "not before",
            "not after",
            "leaves bundle",
        ]);
        for ca in &r.bundle {
            t.row(vec![
                role_name(ca.role).to_owned(),
                ca.fingerprint.clone(),
                ca.subject.clone(),
                crate::output::seconds(ca.not_before.0),
                format!(
                    "{} ({})",
                    crate::output::seconds(ca.not_after.0),
                    relative(ca.not_after.0, now)
                ),
                ca.retire_time
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |t| relative(t.0, now)),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    if r.events.is_empty() {
        out.push_str("Events: <none>\n");
    } else {
        out.push_str("Events:\n");
        out.push_str(&events_table(&r.events, now).render());
    }
    out
}

/// Events as `kubectl get events` prints them.
#[must_use]
pub fn events_table(events: &[EventView], now: Timestamp) -> Table {
    let mut t = Table::new(&["last seen", "type", "reason", "count", "message"]);
    for e in events {
        t.row(vec![
            e.last_timestamp.map_or_else(
                || "-".to_owned(),
                |ts| crate::output::human(now.duration_since(ts)),
            ),
            e.type_.clone(),
            e.reason.clone(),
            e.count.to_string(),
            e.message.clone(),
        ]);
    }
    t
}

/// The first 16 hex digits of a fingerprint.
#[must_use]
pub fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Kind;
    use capstan_issuer::api::ca_issuer::SelfManagedCa;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).expect("time"))
    }

    const NOW: i64 = 1_800_000_000;

    fn ca(fp: &str, role: BundleRole, retire: Option<i64>) -> BundleCa {
        BundleCa {
            fingerprint: fp.repeat(64 / fp.len()),
            subject: format!("CN={fp}"),
            not_before: t(NOW - 100),
            not_after: t(NOW + 86_400),
            role,
            retire_time: retire.map(t),
        }
    }

    fn status() -> IssuerStatus {
        IssuerStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Ready".into(),
                message: "Signing with CA aa".into(),
                last_transition_time: t(NOW - 50),
                observed_generation: Some(2),
            }],
            ca: Some(CaSummary {
                fingerprint: "b".repeat(64),
                subject: "CN=b".into(),
                not_before: t(NOW - 100),
                not_after: t(NOW + 86_400),
            }),
            bundle: vec![
                ca("b", BundleRole::Signing, None),
                ca("a", BundleRole::Retired, Some(NOW + 600)),
            ],
            rotation: Some(RotationStatus {
                phase: RotationPhase::Retiring,
                next_rotation_time: Some(t(NOW + 3600)),
                switch_time: None,
            }),
            observed_generation: Some(2),
            ..IssuerStatus::default()
        }
    }

    fn spec() -> IssuerSpec {
        IssuerSpec {
            self_managed: Some(SelfManagedCa {
                secret_name: "root".into(),
                ..SelfManagedCa::default()
            }),
            ..IssuerSpec::default()
        }
    }

    #[test]
    fn reports_ready_phase_cas_and_events() {
        let id = IssuerId::new(Kind::ClusterCAIssuer, "", "monitoring-ca");
        let events = [crate::events::tests_support::event(
            "e1",
            "CARotated",
            NOW - 10,
            1,
        )];
        let r = report(
            id,
            Some("found ClusterCAIssuer".into()),
            &spec(),
            Some(&status()),
            Some(2),
            &events,
        );
        assert_eq!(r.ready.as_ref().map(|c| c.reason.as_str()), Some("Ready"));
        assert_eq!(r.stale, Some(false));
        assert_eq!(r.source.as_ref().map(|s| s.kind), Some("selfManaged"));
        let text = render(&r, Timestamp::from_second(NOW).expect("time"));
        for want in [
            "Issuer:           ClusterCAIssuer/monitoring-ca",
            "Resolved:         found ClusterCAIssuer",
            "Ready:            True (Ready) Signing with CA aa",
            "Phase:            Retiring",
            "Next rotation:    2027-01-15T09:00:00Z (in 60m)",
            "Retired leaves:   aaaaaaaaaaaaaaaa 2027-01-15T08:10:00Z (in 10m)",
            "ROLE      FINGERPRINT",
            "Signing   bbbb",
            "Retired   aaaa",
            "in 10m",
            "CARotated",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["rotation"]["phase"], "Retiring");
        assert_eq!(json["bundle"][1]["role"], "Retired");
        assert_eq!(json["issuer"]["kind"], "ClusterCAIssuer");
    }

    #[test]
    fn an_issuer_without_status_says_so() {
        let id = IssuerId::new(Kind::CAIssuer, "apps", "local");
        let r = report(id, None, &IssuerSpec::default(), None, Some(1), &[]);
        let text = render(&r, Timestamp::from_second(NOW).expect("time"));
        assert!(text.contains("Ready:            Unknown"), "{text}");
        assert!(
            text.contains("Signing CA:       - (no CA loaded)"),
            "{text}"
        );
        assert!(text.contains("Bundle: not reported"), "{text}");
        assert!(text.contains("Events: <none>"), "{text}");
    }

    #[test]
    fn a_status_behind_the_spec_is_flagged() {
        let id = IssuerId::new(Kind::CAIssuer, "apps", "local");
        let r = report(id, None, &spec(), Some(&status()), Some(3), &[]);
        assert_eq!(r.stale, Some(true));
        assert!(render(&r, Timestamp::from_second(NOW).expect("time")).contains("older spec"));
    }
}
