//! Which `CertificateSigningRequest`s to sign, from their signer name and
//! conditions.
//!
//! Signer names, as cert-manager's external issuers spell them:
//! `clustercaissuers.capstan.dev/<name>` and
//! `caissuers.capstan.dev/<namespace>.<name>` (a namespace has no dots, so the
//! first dot splits it from the name).

use std::collections::BTreeMap;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

use crate::request::plan::IssuerKind;

/// Signer-name prefix of `ClusterCAIssuer`s.
pub const CLUSTER_SIGNER_PREFIX: &str = "clustercaissuers.capstan.dev/";
/// Signer-name prefix of namespaced `CAIssuer`s.
pub const NAMESPACED_SIGNER_PREFIX: &str = "caissuers.capstan.dev/";
/// cert-manager's annotation asking for a CA certificate.
pub const REQUEST_IS_CA: &str = "experimental.cert-manager.io/request-is-ca";
/// cert-manager's annotation asking for a duration (Go duration string).
pub const REQUEST_DURATION: &str = "experimental.cert-manager.io/request-duration";

/// The issuer a signer name designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerTarget {
    /// Which kind.
    pub kind: IssuerKind,
    /// The namespace of a `CAIssuer`.
    pub namespace: Option<String>,
    /// The issuer's name.
    pub name: String,
}

/// Parses a signer name; `None` when it is not one of capstan's.
#[must_use]
pub fn signer_target(signer_name: &str) -> Option<SignerTarget> {
    if let Some(name) = signer_name.strip_prefix(CLUSTER_SIGNER_PREFIX) {
        return (!name.is_empty()).then(|| SignerTarget {
            kind: IssuerKind::ClusterCaIssuer,
            namespace: None,
            name: name.to_owned(),
        });
    }
    let rest = signer_name.strip_prefix(NAMESPACED_SIGNER_PREFIX)?;
    let (namespace, name) = rest.split_once('.')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| SignerTarget {
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
    Sign(SignerTarget),
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
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
    if signed || has_condition(csr, "Failed") {
        return CsrDecision::Ignore;
    }
    if has_condition(csr, "Denied") {
        return CsrDecision::Deny;
    }
    if has_condition(csr, "Approved") {
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
    fn parses_signer_names() {
        assert_eq!(
            signer_target("clustercaissuers.capstan.dev/monitoring-ca"),
            Some(SignerTarget {
                kind: IssuerKind::ClusterCaIssuer,
                namespace: None,
                name: "monitoring-ca".into()
            })
        );
        assert_eq!(
            signer_target("caissuers.capstan.dev/monitoring.local.ca"),
            Some(SignerTarget {
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
