//! The status patch and the Event for each outcome of a request, as
//! cert-manager's own issuers write them.
//!
//! Every patch carries the request's `resourceVersion`, so a write based on a
//! stale read fails with 409 instead of overwriting another writer's result:
//! with two replicas, or after a crash between signing and writing, a
//! request's certificate is still published exactly once.

use capstan_common::events::Record;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use super::plan::Outcome;
use crate::api::cert_manager::{CertificateRequest, CertificateRequestCondition};
use crate::api::conditions;

/// Message of the `Ready=True` condition, as cert-manager's issuers word it.
pub const ISSUED_MESSAGE: &str = "Certificate fetched from issuer successfully";
/// Message of the `Ready=False/Denied` condition, as cert-manager words it.
pub const DENIED_MESSAGE: &str = "The CertificateRequest was denied by an approval controller";

/// The `Ready` condition an outcome leads to: (status, message); its
/// reason is [`Outcome::reason`].
fn ready_condition(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Denied => (conditions::FALSE, DENIED_MESSAGE.to_owned()),
        Outcome::Pending(message) => (conditions::FALSE, message.clone()),
        Outcome::Issued { .. } => (conditions::TRUE, ISSUED_MESSAGE.to_owned()),
        Outcome::Failed(refused) => (conditions::FALSE, refused.to_string()),
    }
}

/// A merge patch of a request's `/status`, guarded by the
/// `resourceVersion` it was planned from. Serialized as it is, in one pass
/// (building it as a JSON value first cost more than the write itself).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct StatusPatch {
    metadata: PatchMetadata,
    status: PatchStatus,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PatchMetadata {
    /// Always written (`null` when unknown): the API server refuses the
    /// patch with 409 when the request changed since.
    resource_version: Option<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PatchStatus {
    conditions: Vec<CertificateRequestCondition>,
    /// PEM, base64 on the wire (`format: byte`).
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<ByteString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_time: Option<Time>,
}

/// The merge patch for `/status` that records `outcome`, or `None` when the
/// request already says exactly that (a repeated `Pending` writes nothing).
///
/// The `Ready` condition is replaced in place and every other condition
/// (`Approved`, `Denied`, ...) is kept; `lastTransitionTime` moves only when
/// the condition's status changes. Final outcomes set `failureTime`
/// (`Failed`, `Denied`), without which cert-manager backs off for an hour.
#[must_use]
pub fn outcome_patch(
    request: &CertificateRequest,
    outcome: &Outcome,
    now: &Time,
) -> Option<StatusPatch> {
    let (status, message) = ready_condition(outcome);
    let reason = outcome.reason();
    let existing = request.condition(conditions::READY);
    let unchanged = existing.is_some_and(|c| {
        c.status == status
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message.as_str())
    });
    if unchanged && matches!(outcome, Outcome::Pending(_)) {
        return None;
    }
    let last_transition_time = match existing {
        Some(c) if c.status == status => c
            .last_transition_time
            .clone()
            .unwrap_or_else(|| now.clone()),
        _ => now.clone(),
    };
    let ready = CertificateRequestCondition {
        type_: conditions::READY.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(last_transition_time),
    };
    let mut conditions: Vec<CertificateRequestCondition> = request
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == conditions::READY) {
        Some(slot) => *slot = ready,
        None => conditions.push(ready),
    }

    let (certificate, ca) = match outcome {
        Outcome::Issued {
            certificate, ca, ..
        } => (
            Some(ByteString(certificate.clone().into_bytes())),
            Some(ByteString(ca.clone().into_bytes())),
        ),
        _ => (None, None),
    };
    let failure_time = matches!(outcome, Outcome::Failed(_) | Outcome::Denied).then(|| now.clone());
    Some(StatusPatch {
        metadata: PatchMetadata {
            resource_version: request.metadata.resource_version.clone(),
        },
        status: PatchStatus {
            conditions,
            certificate,
            ca,
            failure_time,
        },
    })
}

/// The Event that tells the user what happened to a request: Warning for
/// a request that will never be signed, Normal otherwise.
#[must_use]
pub fn outcome_record(outcome: &Outcome) -> Record {
    let reason = outcome.reason();
    match outcome {
        Outcome::Denied => Record::warning(reason, DENIED_MESSAGE),
        Outcome::Pending(message) => Record::normal(reason, message.clone()),
        Outcome::Issued { truncated, .. } => Record::normal(
            reason,
            match truncated {
                Some(why) => format!("{ISSUED_MESSAGE}; {why}"),
                None => ISSUED_MESSAGE.to_owned(),
            },
        ),
        Outcome::Failed(refused) => Record::warning(reason, refused.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::request as reason;
    use crate::error::SignError;
    use crate::fixtures::{RequestFixture, at};
    use capstan_common::events::EventType;
    use capstan_pki::Truncation;
    use serde_json::{Value, json};

    /// The patch as the API server receives it.
    fn patch_json(request: &CertificateRequest, outcome: &Outcome, now: &Time) -> Option<Value> {
        outcome_patch(request, outcome, now).map(|p| serde_json::to_value(p).expect("JSON"))
    }

    fn ready(patch: &Value) -> &Value {
        patch["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .expect("patch has a Ready condition")
    }

    #[test]
    fn issued_sets_certificate_and_ca_base64_and_keeps_approval() {
        let cr = CertificateRequest::test()
            .approved()
            .ready("False", reason::PENDING);
        let outcome = Outcome::Issued {
            certificate: "LEAF".into(),
            ca: "ROOT".into(),
            truncated: None,
        };
        let patch = patch_json(&cr, &outcome, &at(100)).expect("a patch");
        assert_eq!(patch["status"]["certificate"], "TEVBRg==");
        assert_eq!(patch["status"]["ca"], "Uk9PVA==");
        assert_eq!(ready(&patch)["status"], "True");
        assert_eq!(ready(&patch)["reason"], "Issued");
        assert!(patch["status"].get("failureTime").is_none());
        let types: Vec<_> = patch["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["type"].clone())
            .collect();
        assert_eq!(types, vec![json!("Approved"), json!("Ready")]);
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn failed_and_denied_set_failure_time() {
        let now = at(200);
        for (cr, outcome, reason) in [
            (
                CertificateRequest::test().approved(),
                Outcome::Failed(SignError::ExpirationTooShort { minimum: 600 }),
                "Failed",
            ),
            (
                CertificateRequest::test().denied(),
                Outcome::Denied,
                "Denied",
            ),
        ] {
            let patch = patch_json(&cr, &outcome, &now).expect("a patch");
            assert_eq!(ready(&patch)["reason"], reason);
            assert_eq!(ready(&patch)["status"], "False");
            assert_eq!(patch["status"]["failureTime"], json!(now));
        }
    }

    #[test]
    fn repeated_pending_writes_nothing_and_a_new_message_keeps_transition_time() {
        let first = at(10);
        let cr = CertificateRequest::test().approved().ready_at(
            "False",
            reason::PENDING,
            "waiting",
            first.clone(),
        );
        assert_eq!(
            patch_json(&cr, &Outcome::Pending("waiting".into()), &at(20)),
            None
        );
        let patch =
            patch_json(&cr, &Outcome::Pending("still waiting".into()), &at(30)).expect("a patch");
        assert_eq!(ready(&patch)["lastTransitionTime"], json!(first));
        // False → False (Pending → Failed) is no transition, as in cert-manager's
        // SetCertificateRequestCondition; False → True is.
        let failed = Outcome::Failed(SignError::Pki(capstan_pki::Error::NoNames));
        let failed = patch_json(&cr, &failed, &at(40)).expect("a patch");
        assert_eq!(ready(&failed)["lastTransitionTime"], json!(first));
        let issued = Outcome::Issued {
            certificate: "C".into(),
            ca: "A".into(),
            truncated: None,
        };
        let patch = patch_json(&cr, &issued, &at(50)).expect("a patch");
        assert_eq!(ready(&patch)["lastTransitionTime"], json!(at(50)));
    }

    #[test]
    fn events_match_outcomes() {
        let denied = outcome_record(&Outcome::Denied);
        assert_eq!(denied.type_, EventType::Warning);
        assert_eq!(denied.message, DENIED_MESSAGE);
        let failed = outcome_record(&Outcome::Failed(SignError::Pki(
            capstan_pki::Error::NoNames,
        )));
        assert_eq!(failed.reason, "Failed");
        assert_eq!(failed.type_, EventType::Warning);
        assert_eq!(
            failed.message,
            "Failed to sign: the CSR has neither a subject nor any subject alternative name"
        );
        let pending = outcome_record(&Outcome::Pending("waiting".into()));
        assert_eq!(
            (pending.type_, pending.reason.as_str()),
            (EventType::Normal, "Pending")
        );
        let issued = outcome_record(&Outcome::Issued {
            certificate: String::new(),
            ca: String::new(),
            truncated: Some(Truncation::MaxDuration {
                requested: std::time::Duration::from_secs(7200),
                granted: std::time::Duration::from_secs(3600),
            }),
        });
        assert_eq!(issued.reason, "Issued");
        assert_eq!(
            issued.message,
            format!(
                "{ISSUED_MESSAGE}; the requested duration of 7200s was shortened to the issuer's maxDuration of 3600s"
            )
        );
    }
}
