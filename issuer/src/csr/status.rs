//! The status patch and the Event for each outcome of a CSR.
//!
//! Every patch carries the CSR's `resourceVersion`, so a write based on a
//! stale read fails with 409: a CSR is signed at most once.

use capstan_common::events::Record;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::plan::CsrOutcome;
use crate::api::conditions;

/// Message of the Event on a denied CSR.
pub const DENIED_MESSAGE: &str = "The CertificateSigningRequest was denied; it will not be signed";
/// Message of the Event on a signed CSR.
pub const ISSUED_MESSAGE: &str = "Certificate issued";

/// The merge patch for `/status` that records `outcome`: the certificate,
/// or the CSR's conditions plus a `Failed` one; guarded by the
/// `resourceVersion` it was planned from.
#[must_use]
pub fn outcome_patch(
    csr: &CertificateSigningRequest,
    outcome: &CsrOutcome,
    now: Timestamp,
) -> Value {
    let status = match outcome {
        CsrOutcome::Issued { certificate, .. } => {
            json!({ "certificate": ByteString(certificate.clone().into_bytes()) })
        }
        CsrOutcome::Denied => with_failed(csr, outcome.reason(), DENIED_MESSAGE, now),
        CsrOutcome::Failed(refused) => {
            with_failed(csr, outcome.reason(), &refused.to_string(), now)
        }
    };
    json!({ "metadata": { "resourceVersion": csr.resource_version() }, "status": status })
}

/// The Event that tells the user what happened to a CSR.
#[must_use]
pub fn outcome_record(outcome: &CsrOutcome) -> Record {
    let reason = outcome.reason();
    match outcome {
        CsrOutcome::Denied => Record::warning(reason, DENIED_MESSAGE),
        CsrOutcome::Issued { truncated, .. } => Record::normal(
            reason,
            match truncated {
                Some(why) => format!("{ISSUED_MESSAGE}; {why}"),
                None => ISSUED_MESSAGE.to_owned(),
            },
        ),
        CsrOutcome::Failed(refused) => Record::warning(reason, refused.to_string()),
    }
}

/// A status with the CSR's conditions plus a `Failed` one.
fn with_failed(
    csr: &CertificateSigningRequest,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Value {
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.push(CertificateSigningRequestCondition {
        type_: conditions::FAILED.to_owned(),
        status: conditions::TRUE.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    json!({ "conditions": conditions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SignError;
    use capstan_common::events::EventType;

    fn approved() -> CertificateSigningRequest {
        serde_json::from_value(json!({
            "metadata": {"name": "node-exporter", "resourceVersion": "12"},
            "spec": {"signerName": "clustercaissuers.capstan.dev/ca", "request": "Q1NS"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]},
        }))
        .expect("valid CSR")
    }

    #[test]
    fn a_signed_csr_gets_its_certificate_and_nothing_else() {
        let issued = CsrOutcome::Issued {
            certificate: "LEAF".into(),
            truncated: None,
        };
        let now = Timestamp::from_second(1_767_225_600).expect("valid");
        assert_eq!(
            outcome_patch(&approved(), &issued, now),
            json!({"metadata": {"resourceVersion": "12"}, "status": {"certificate": "TEVBRg=="}})
        );
        let record = outcome_record(&issued);
        assert_eq!(
            (
                record.type_,
                record.reason.as_str(),
                record.message.as_str()
            ),
            (EventType::Normal, "Issued", "Certificate issued")
        );
    }

    #[test]
    fn refused_csrs_keep_their_conditions_and_gain_failed() {
        let now = Timestamp::from_second(1_767_225_600).expect("valid");
        let short = SignError::ExpirationTooShort { minimum: 600 };
        for (outcome, reason, message) in [
            (CsrOutcome::Denied, "Denied", DENIED_MESSAGE.to_owned()),
            (
                CsrOutcome::Failed(short.clone()),
                "Failed",
                short.to_string(),
            ),
        ] {
            let patch = outcome_patch(&approved(), &outcome, now);
            let conditions = patch["status"]["conditions"]
                .as_array()
                .expect("conditions");
            assert_eq!(conditions.len(), 2, "{patch}");
            assert_eq!(conditions[0]["type"], "Approved");
            assert_eq!(conditions[1]["type"], "Failed");
            assert_eq!(conditions[1]["status"], "True");
            assert_eq!(conditions[1]["reason"], reason);
            assert_eq!(conditions[1]["message"], message.as_str());
            let record = outcome_record(&outcome);
            assert_eq!(record.type_, EventType::Warning);
            assert_eq!((record.reason.as_str(), record.message), (reason, message));
        }
    }
}
