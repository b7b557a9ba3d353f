//! Test builders: `CertificateRequest::test().approved().issuer(..)`.

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use crate::api::ca_issuer::{CaSecretSource, IssuerSpec};
use crate::api::cert_manager::{
    CertificateRequest, CertificateRequestCondition, CertificateRequestSpec,
    CertificateRequestStatus, IssuerRef,
};
use crate::api::conditions;
use crate::signing::{CaMaterial, ReadyCa};

/// A CA loaded under a default policy (an hour-long ECDSA root), ready to
/// sign.
pub fn ready_ca() -> ReadyCa {
    let ca = capstan_pki::generate_ca(
        &capstan_pki::CaSpec {
            common_name: "test".into(),
            organization: None,
            algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
            lifetime: std::time::Duration::from_secs(3600),
        },
        time::OffsetDateTime::now_utc(),
    )
    .expect("CA");
    let spec = IssuerSpec {
        ca: Some(CaSecretSource {
            secret_name: "ca".into(),
        }),
        ..IssuerSpec::default()
    };
    let policy = crate::policy::resolve("ca", &spec).expect("policy");
    let material = CaMaterial {
        cert_pem: ca.cert_pem.into_bytes(),
        key_pem: ca.key.expose().as_bytes().to_vec(),
        chain_pem: None,
    };
    ReadyCa::load(&material, &policy, Timestamp::now()).expect("ready")
}

/// A fixed instant `secs` seconds after 2026-01-01T00:00:00Z.
pub fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_767_225_600 + secs).expect("valid timestamp"))
}

/// Chainable builders for requests in tests.
pub trait RequestFixture: Sized {
    /// A request in namespace `apps` for `ClusterCAIssuer/monitoring-ca`,
    /// with no conditions and resourceVersion 7.
    fn test() -> Self;
    /// Names the issuer by group, kind and name.
    fn issuer(self, group: &str, kind: &str, name: &str) -> Self;
    /// Names the issuer by kind and name only (cert-manager's default group).
    fn issuer_kind_only(self, kind: &str, name: &str) -> Self;
    /// Adds a condition.
    fn condition(
        self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        at: Option<Time>,
    ) -> Self;
    /// `Approved=True`, as cert-manager's approver sets it.
    fn approved(self) -> Self {
        self.condition(
            conditions::APPROVED,
            "True",
            "cert-manager.io",
            "Certificate request has been approved by cert-manager.io",
            None,
        )
    }
    /// `Denied=True`.
    fn denied(self) -> Self {
        self.condition(
            conditions::DENIED,
            "True",
            "policy",
            "denied by policy",
            None,
        )
    }
    /// `InvalidRequest=True`.
    fn invalid_request(self) -> Self {
        self.condition(
            conditions::INVALID_REQUEST,
            "True",
            "BadConfig",
            "invalid",
            None,
        )
    }
    /// A `Ready` condition with this status and reason.
    fn ready(self, status: &str, reason: &str) -> Self {
        self.condition(conditions::READY, status, reason, "", None)
    }
    /// A `Ready` condition with message and transition time.
    fn ready_at(self, status: &str, reason: &str, message: &str, at: Time) -> Self {
        self.condition(conditions::READY, status, reason, message, Some(at))
    }
}

impl RequestFixture for CertificateRequest {
    fn test() -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some("metrics".into()),
                namespace: Some("apps".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: CertificateRequestSpec {
                request: ByteString(b"-----BEGIN CERTIFICATE REQUEST-----".to_vec()),
                issuer_ref: IssuerRef {
                    name: "monitoring-ca".into(),
                    kind: Some("ClusterCAIssuer".into()),
                    group: Some("capstan.dev".into()),
                },
                ..CertificateRequestSpec::default()
            },
            status: None,
        }
    }

    fn issuer(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.spec.issuer_ref = IssuerRef {
            name: name.into(),
            kind: Some(kind.into()),
            group: Some(group.into()),
        };
        self
    }

    fn issuer_kind_only(mut self, kind: &str, name: &str) -> Self {
        self.spec.issuer_ref = IssuerRef {
            name: name.into(),
            kind: Some(kind.into()),
            group: None,
        };
        self
    }

    fn condition(
        mut self,
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
        at: Option<Time>,
    ) -> Self {
        let status_obj = self
            .status
            .get_or_insert_with(CertificateRequestStatus::default);
        status_obj.conditions.push(CertificateRequestCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: at,
        });
        self
    }
}
