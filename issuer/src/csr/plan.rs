//! Which `CertificateSigningRequest`s to sign, from their signer name and
//! conditions.
//!
//! Signer names, as cert-manager's external issuers spell them:
//! `clustercaissuers.capstan.dev/<name>` and
//! `caissuers.capstan.dev/<namespace>.<name>` (a namespace has no dots, so the
//! first dot splits it from the name).

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_pki::{LeafRequest, Truncation};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{self, request as reason};
use crate::api::identity::{IssuerKey, IssuerKind};
use crate::error::SignError;
use crate::policy;
use crate::signing::ReadyCa;

/// Signer-name prefix of `ClusterCAIssuer`s.
pub const CLUSTER_SIGNER_PREFIX: &str = "clustercaissuers.capstan.dev/";
/// Signer-name prefix of namespaced `CAIssuer`s.
pub const NAMESPACED_SIGNER_PREFIX: &str = "caissuers.capstan.dev/";
/// cert-manager's annotation asking for a CA certificate.
pub const REQUEST_IS_CA: &str = "experimental.cert-manager.io/request-is-ca";
/// cert-manager's annotation asking for a duration (Go duration string).
pub const REQUEST_DURATION: &str = "experimental.cert-manager.io/request-duration";

/// Parses a signer name; `None` when it is not one of capstan's.
#[must_use]
pub fn signer_target(signer_name: &str) -> Option<IssuerKey> {
    if let Some(name) = signer_name.strip_prefix(CLUSTER_SIGNER_PREFIX) {
        return (!name.is_empty()).then(|| IssuerKey {
            kind: IssuerKind::ClusterCaIssuer,
            namespace: None,
            name: name.to_owned(),
        });
    }
    let rest = signer_name.strip_prefix(NAMESPACED_SIGNER_PREFIX)?;
    let (namespace, name) = rest.split_once('.')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| IssuerKey {
        kind: IssuerKind::CaIssuer,
        namespace: Some(namespace.to_owned()),
        name: name.to_owned(),
    })
}

/// What to do with a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrDecision {
    /// Not ours, not approved yet, or already finished.
    Ignore,
    /// Denied by an approver: record a `Failed` condition, never sign.
    Deny,
    /// Approved: sign with this issuer.
    Sign(IssuerKey),
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == type_ && c.status == conditions::TRUE)
        })
}

/// Decides what to do with `csr`.
#[must_use]
pub fn plan(csr: &CertificateSigningRequest) -> CsrDecision {
    let Some(target) = signer_target(&csr.spec.signer_name) else {
        return CsrDecision::Ignore;
    };
    let signed = csr
        .status
        .as_ref()
        .is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()));
    if signed || has_condition(csr, conditions::FAILED) {
        return CsrDecision::Ignore;
    }
    if has_condition(csr, conditions::DENIED) {
        return CsrDecision::Deny;
    }
    if has_condition(csr, conditions::APPROVED) {
        CsrDecision::Sign(target)
    } else {
        CsrDecision::Ignore
    }
}

/// Whether the CSR asks for a CA certificate (cert-manager's annotation).
#[must_use]
pub fn requests_ca(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(REQUEST_IS_CA).is_some_and(|v| v == "true")
}

/// The duration a CSR asks for: `spec.expirationSeconds`, else cert-manager's
/// `experimental.cert-manager.io/request-duration` annotation (raw text, to be
/// parsed by the caller).
#[must_use]
pub fn requested_duration(csr: &CertificateSigningRequest) -> Option<RequestedDuration> {
    if let Some(seconds) = csr.spec.expiration_seconds {
        return Some(RequestedDuration::Seconds(seconds));
    }
    csr.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUEST_DURATION))
        .map(|text| RequestedDuration::Text(text.clone()))
}

/// The shortest lifetime a CSR may ask for, as Kubernetes requires of
/// `spec.expirationSeconds`.
const MIN_CSR_SECONDS: i32 = 600;

/// What a CSR asks of its leaf: the duration (`spec.expirationSeconds` or
/// cert-manager's duration annotation), whether it is a CA, the usages.
///
/// # Errors
/// A duration too short or unreadable.
pub fn leaf_request(csr: &CertificateSigningRequest) -> Result<LeafRequest, SignError> {
    let duration = match requested_duration(csr) {
        None => None,
        Some(RequestedDuration::Seconds(s)) if s < MIN_CSR_SECONDS => {
            return Err(SignError::ExpirationTooShort {
                minimum: MIN_CSR_SECONDS,
            });
        }
        Some(RequestedDuration::Seconds(s)) => {
            Some(Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        }
        Some(RequestedDuration::Text(t)) => Some(policy::parse_duration(REQUEST_DURATION, &t)?),
    };
    let annotations = csr.metadata.annotations.clone().unwrap_or_default();
    Ok(LeafRequest {
        duration,
        is_ca: requests_ca(&annotations),
        usages: csr.spec.usages.clone().unwrap_or_default(),
    })
}

/// How handling a CSR ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrOutcome {
    /// An approver denied it.
    Denied,
    /// It was signed.
    Issued {
        /// The leaf followed by any intermediates, PEM.
        certificate: String,
        /// Whether and why the lifetime was shortened, for the Event.
        truncated: Option<Truncation>,
    },
    /// It can never be signed.
    Failed(SignError),
}

impl CsrOutcome {
    /// The reason of the `Failed` condition, the Event and the
    /// `capstan_issuer_requests_failed_total` label.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied => reason::DENIED,
            Self::Issued { .. } => reason::ISSUED,
            Self::Failed(_) => reason::FAILED,
        }
    }
}

/// Signs an approved `csr` with `ca` (pure CPU work): issued, or failed for
/// good with the reason.
#[must_use]
pub fn sign(csr: &CertificateSigningRequest, ca: &ReadyCa, now: Timestamp) -> CsrOutcome {
    match leaf_request(csr).and_then(|r| ca.sign(&csr.spec.request.0, &r, now)) {
        Ok(leaf) => CsrOutcome::Issued {
            certificate: leaf.chain_pem,
            truncated: leaf.truncated,
        },
        Err(refused) => CsrOutcome::Failed(refused),
    }
}

/// A requested duration as written in the CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestedDuration {
    /// `spec.expirationSeconds`.
    Seconds(i32),
    /// The duration annotation's text.
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csr(signer: &str, conditions: &[&str], certificate: bool) -> CertificateSigningRequest {
        let conditions: Vec<_> = conditions
            .iter()
            .map(|t| json!({"type": t, "status": "True"}))
            .collect();
        let mut status = json!({ "conditions": conditions });
        if certificate {
            status["certificate"] = json!("Q0VSVA==");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "node-exporter"},
            "spec": {"signerName": signer, "request": "Q1NS", "usages": ["server auth"]},
            "status": status,
        }))
        .expect("valid CSR")
    }

    #[test]
    fn a_csr_asks_for_its_duration_ca_and_usages() {
        let mut c = csr("clustercaissuers.capstan.dev/ca", &["Approved"], false);
        let plain = leaf_request(&c).expect("no duration asked");
        assert_eq!(plain.duration, None);
        assert!(!plain.is_ca);
        assert_eq!(plain.usages, vec!["server auth".to_owned()]);
        c.spec.expiration_seconds = Some(3600);
        let hour = leaf_request(&c).expect("an hour");
        assert_eq!(hour.duration, Some(Duration::from_secs(3600)));
        c.spec.expiration_seconds = Some(599);
        assert_eq!(
            leaf_request(&c).map(|r| r.duration),
            Err(SignError::ExpirationTooShort { minimum: 600 })
        );
        c.spec.expiration_seconds = None;
        c.metadata.annotations = Some(BTreeMap::from([
            (REQUEST_DURATION.to_owned(), "2h".to_owned()),
            (REQUEST_IS_CA.to_owned(), "true".to_owned()),
        ]));
        let annotated = leaf_request(&c).expect("annotated");
        assert_eq!(annotated.duration, Some(Duration::from_secs(7200)));
        assert!(annotated.is_ca);
        c.metadata.annotations = Some(BTreeMap::from([(
            REQUEST_DURATION.to_owned(),
            "soon".to_owned(),
        )]));
        let err = leaf_request(&c)
            .map(|r| r.duration)
            .expect_err("unreadable");
        assert!(matches!(err, SignError::Duration(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("Failed to sign: experimental.cert-manager.io/request-duration: "),
            "{err}"
        );
    }

    #[test]
    fn a_csr_the_pki_refuses_fails_for_good() {
        let ca = crate::fixtures::ready_ca();
        let c = csr("clustercaissuers.capstan.dev/ca", &["Approved"], false);
        let outcome = sign(&c, &ca, Timestamp::now());
        assert!(
            matches!(outcome, CsrOutcome::Failed(SignError::Pki(_))),
            "{outcome:?}"
        );
        assert_eq!(outcome.reason(), "Failed");
        let mut short = c.clone();
        short.spec.expiration_seconds = Some(60);
        assert_eq!(
            sign(&short, &ca, Timestamp::now()),
            CsrOutcome::Failed(SignError::ExpirationTooShort { minimum: 600 })
        );
    }

    #[test]
    fn parses_signer_names() {
        assert_eq!(
            signer_target("clustercaissuers.capstan.dev/monitoring-ca"),
            Some(IssuerKey {
                kind: IssuerKind::ClusterCaIssuer,
                namespace: None,
                name: "monitoring-ca".into()
            })
        );
        assert_eq!(
            signer_target("caissuers.capstan.dev/monitoring.local.ca"),
            Some(IssuerKey {
                kind: IssuerKind::CaIssuer,
                namespace: Some("monitoring".into()),
                name: "local.ca".into()
            })
        );
        for other in [
            "kubernetes.io/kube-apiserver-client",
            "issuers.cert-manager.io/ns.name",
            "caissuers.capstan.dev/no-dot",
            "clustercaissuers.capstan.dev/",
        ] {
            assert_eq!(signer_target(other), None, "{other}");
        }
    }

    #[test]
    fn signs_only_approved_unfinished_csrs_of_ours() {
        let ours = "clustercaissuers.capstan.dev/monitoring-ca";
        assert_eq!(plan(&csr(ours, &[], false)), CsrDecision::Ignore);
        assert!(matches!(
            plan(&csr(ours, &["Approved"], false)),
            CsrDecision::Sign(_)
        ));
        assert_eq!(plan(&csr(ours, &["Approved"], true)), CsrDecision::Ignore);
        assert_eq!(
            plan(&csr(ours, &["Approved", "Failed"], false)),
            CsrDecision::Ignore
        );
        assert_eq!(plan(&csr(ours, &["Denied"], false)), CsrDecision::Deny);
        assert_eq!(
            plan(&csr(ours, &["Denied", "Failed"], false)),
            CsrDecision::Ignore
        );
        assert_eq!(
            plan(&csr("example.com/other", &["Approved"], false)),
            CsrDecision::Ignore
        );
    }

    #[test]
    fn reads_cert_manager_request_annotations() {
        let mut c = csr("clustercaissuers.capstan.dev/x", &[], false);
        assert_eq!(requested_duration(&c), None);
        c.metadata.annotations = Some(
            [
                (REQUEST_DURATION.to_owned(), "24h".to_owned()),
                (REQUEST_IS_CA.to_owned(), "true".to_owned()),
            ]
            .into(),
        );
        assert_eq!(
            requested_duration(&c),
            Some(RequestedDuration::Text("24h".into()))
        );
        assert!(requests_ca(c.metadata.annotations.as_ref().expect("set")));
        c.spec.expiration_seconds = Some(3600);
        assert_eq!(
            requested_duration(&c),
            Some(RequestedDuration::Seconds(3600))
        );
    }
}
