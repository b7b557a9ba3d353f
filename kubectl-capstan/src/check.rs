//! `kubectl capstan check`: is every injection target and every
//! restart-annotated workload in sync, and if not, why. Pure: the verdicts
//! compare what is stored with what the rotator's own functions
//! (`capstan_rotator::bundle::source`, `capstan_rotator::restart::hash`)
//! compute from the sources now.

use std::collections::BTreeMap;

use capstan_pki::Bundle;
use capstan_rotator::bundle::source::Problem;
use capstan_rotator::restart::sources::SourceRef;
use serde::Serialize;
use time::OffsetDateTime;

use crate::output::Table;
use crate::status::short;

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum State {
    /// Holds what the rotator would write now.
    InSync,
    /// Differs from what the rotator would write now.
    OutOfSync,
    /// Cannot be judged: its source or annotation cannot be used.
    Error,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "InSync",
            Self::OutOfSync => "OutOfSync",
            Self::Error => "Error",
        }
    }
}

/// One injection target or workload, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// `ConfigMap`, `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What makes it a target: the annotation, `CABundle/x`, or the
    /// restart annotations.
    pub via: String,
    /// The verdict.
    pub state: State,
    /// Why.
    pub reason: String,
}

/// The verdict on a bundle key holding `current` when the source gives
/// `desired` (a bundle, or the problem the rotator would report).
#[must_use]
pub fn bundle(
    current: Option<&str>,
    key: &str,
    desired: &Result<Bundle, Problem>,
    now: OffsetDateTime,
) -> (State, String) {
    let desired = match desired {
        Ok(b) => b,
        Err(problem) => {
            return (
                State::Error,
                format!("{}: {}", problem.reason(), problem.message()),
            );
        }
    };
    let Some(current) = current else {
        return (State::OutOfSync, format!("key {key} is missing"));
    };
    if current == desired.pem {
        return (
            State::InSync,
            format!("key {key} holds the source's {} CA(s)", desired.len()),
        );
    }
    let held = capstan_pki::normalize_bundle(&[current.as_bytes()], now)
        .map(|b| b.fingerprints)
        .unwrap_or_default();
    let missing: Vec<&str> = desired
        .fingerprints
        .iter()
        .filter(|f| !held.contains(f))
        .map(|f| short(f))
        .collect();
    let extra: Vec<&str> = held
        .iter()
        .filter(|f| !desired.fingerprints.contains(f))
        .map(|f| short(f))
        .collect();
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("lacks {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        why.push(format!("still holds {}", extra.join(", ")));
    }
    if why.is_empty() {
        why.push("the same CAs in other bytes (order, expired or duplicate entries)".to_owned());
    }
    (
        State::OutOfSync,
        format!(
            "key {key} differs from the source's current {} CA(s): {}",
            desired.len(),
            why.join("; ")
        ),
    )
}

/// The verdict on a workload whose running pods carry `applied` (the
/// template's `capstan.dev/config-hash`, else the workload's baseline) when
/// its sources hash to `current` now; `sources` are the digests (`None`:
/// the source does not exist).
#[must_use]
pub fn workload(
    applied: Option<&str>,
    current: &str,
    sources: &BTreeMap<SourceRef, Option<String>>,
) -> (State, String) {
    let names: Vec<String> = sources.keys().map(ToString::to_string).collect();
    let absent: Vec<String> = sources
        .iter()
        .filter(|(_, d)| d.is_none())
        .map(|(s, _)| s.to_string())
        .collect();
    let of = if names.is_empty() {
        "no Secret or ConfigMap".to_owned()
    } else {
        names.join(", ")
    };
    let absent = if absent.is_empty() {
        String::new()
    } else {
        format!(" ({} missing)", absent.join(", "))
    };
    match applied {
        None => (
            State::OutOfSync,
            format!("no capstan.dev/config-hash yet: the rotator has not recorded {of}{absent}"),
        ),
        Some(a) if a == current => (State::InSync, format!("config-hash matches {of}{absent}")),
        Some(a) => (
            State::OutOfSync,
            format!(
                "config-hash {} differs from {} of {of}{absent} now: a change has not been rolled out yet",
                short(a),
                short(current)
            ),
        ),
    }
}

/// Whether every item is in sync.
#[must_use]
pub fn all_in_sync(items: &[Item]) -> bool {
    items.iter().all(|i| i.state == State::InSync)
}

/// The items as a table, or a line saying there are none.
#[must_use]
pub fn render(items: &[Item]) -> String {
    if items.is_empty() {
        return "No injection targets or restart-annotated workloads found.\n".to_owned();
    }
    let mut t = Table::new(&["namespace", "kind", "name", "via", "state", "reason"]);
    for i in items {
        t.row(vec![
            i.namespace.clone(),
            i.kind.clone(),
            i.name.clone(),
            i.via.clone(),
            i.state.as_str().to_owned(),
            i.reason.clone(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ca_pem(cn: &str) -> String {
        capstan_pki::generate_ca(
            &capstan_pki::CaSpec {
                common_name: cn.to_owned(),
                organization: None,
                algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
                lifetime: Duration::from_secs(86_400),
            },
            OffsetDateTime::now_utc(),
        )
        .expect("CA")
        .cert_pem
    }

    #[test]
    fn bundles_compare_bytes_and_explain_by_fingerprint() {
        let now = OffsetDateTime::now_utc();
        let (a, b) = (ca_pem("a"), ca_pem("b"));
        let both = capstan_rotator::bundle::source::build(&[a.as_bytes(), b.as_bytes()], now);
        let only_a = capstan_rotator::bundle::source::build(&[a.as_bytes()], now).expect("a");
        let want = both.clone().expect("both");
        assert_eq!(
            bundle(Some(&want.pem), "ca-bundle.crt", &both, now).0,
            State::InSync
        );
        let (state, why) = bundle(Some(&only_a.pem), "ca-bundle.crt", &both, now);
        assert_eq!(state, State::OutOfSync);
        let b_fp = want
            .fingerprints
            .iter()
            .find(|f| !only_a.fingerprints.contains(f))
            .expect("b");
        assert!(why.contains(&format!("lacks {}", short(b_fp))), "{why}");
        let (_, why) = bundle(Some(&want.pem), "k", &Ok(only_a.clone()), now);
        assert!(why.contains("still holds"), "{why}");
        let mut parts: Vec<&str> = want
            .pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .collect();
        parts.reverse();
        let reordered = parts.concat();
        assert_ne!(reordered, want.pem);
        let (state, _) = bundle(Some(&reordered), "k", &both, now);
        assert_eq!(
            state,
            State::OutOfSync,
            "the rotator writes canonical bytes"
        );
        assert_eq!(bundle(None, "k", &both, now).0, State::OutOfSync);
        let problem = Err(Problem::Missing("Secret/s -n ns not found".into()));
        let (state, why) = bundle(Some("x"), "k", &problem, now);
        assert_eq!(state, State::Error);
        assert_eq!(why, "SourceMissing: Secret/s -n ns not found");
    }

    #[test]
    fn workloads_compare_the_rotators_hash() {
        let sources = BTreeMap::from([
            (SourceRef::secret("tls"), Some("d".to_owned())),
            (SourceRef::config_map("gone"), None),
        ]);
        let now = capstan_rotator::restart::hash::config_hash(&sources);
        let (state, why) = workload(Some(&now), &now, &sources);
        assert_eq!(state, State::InSync);
        assert!(why.contains("ConfigMap/gone missing"), "{why}");
        let (state, why) = workload(Some("0123456789abcdef0000"), &now, &sources);
        assert_eq!(state, State::OutOfSync);
        assert!(
            why.contains("config-hash 0123456789abcdef differs"),
            "{why}"
        );
        assert_eq!(workload(None, &now, &sources).0, State::OutOfSync);
    }

    #[test]
    fn the_table_and_the_exit_verdict() {
        let item = |state| Item {
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: "ca".into(),
            via: "capstan.dev/inject-ca-from-issuer".into(),
            state,
            reason: "r".into(),
        };
        assert!(all_in_sync(&[item(State::InSync)]));
        assert!(!all_in_sync(&[item(State::InSync), item(State::Error)]));
        assert!(render(&[item(State::OutOfSync)]).contains("OutOfSync"));
        assert!(render(&[]).starts_with("No injection targets"));
    }
}
