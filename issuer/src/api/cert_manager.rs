//! The subset of cert-manager's `CertificateRequest` (`cert-manager.io/v1`)
//! that the issuer reads and writes.
//!
//! Hand-written rather than generated: capstan never installs this CRD, so the
//! types carry only the fields the issuer uses. Status writes go through
//! patches, so fields unknown here are never dropped from the live object.
//! Schema: <https://cert-manager.io/docs/reference/api-docs/#cert-manager.io/v1.CertificateRequest>
//! and `shared/cert-manager-crds/cert-manager.io_certificaterequests.yaml`.

use std::borrow::Cow;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use super::{conditions, metadata};

/// A cert-manager `CertificateRequest`, as the issuer reads it.
///
/// Written out rather than derived with `CustomResource` so that its
/// metadata is decoded without `managedFields` (see [`metadata`]): the
/// issuer watches every request in the cluster and never reads them.
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CertificateRequest {
    /// Object metadata, without `managedFields`.
    #[serde(deserialize_with = "metadata::without_managed_fields")]
    pub metadata: ObjectMeta,
    /// What is requested.
    pub spec: CertificateRequestSpec,
    /// What happened to the request.
    #[serde(default)]
    pub status: Option<CertificateRequestStatus>,
}

impl kube::Resource for CertificateRequest {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        "CertificateRequest".into()
    }

    fn group((): &()) -> Cow<'_, str> {
        "cert-manager.io".into()
    }

    fn version((): &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural((): &()) -> Cow<'_, str> {
        "certificaterequests".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `spec` of a cert-manager `CertificateRequest`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// The PEM-encoded CSR (base64 on the wire: the field has `format: byte`).
    pub request: ByteString,
    /// Requested lifetime, as a Go duration string (`2160h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Requested `isCA`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "isCA")]
    pub is_ca: Option<bool>,
    /// Requested usages, in cert-manager's spelling (`digital signature`, `server auth`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usages: Option<Vec<String>>,
    /// The issuer asked to sign.
    pub issuer_ref: IssuerRef,
    /// The user who created the request (set by cert-manager's webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `spec.issuerRef`: which issuer should sign.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
pub struct IssuerRef {
    /// Name of the issuer.
    pub name: String,
    /// Kind of the issuer; cert-manager defaults it to `Issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// API group of the issuer; cert-manager defaults it to `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `status` of a cert-manager `CertificateRequest`, as far as the issuer
/// reads it. `certificate` and `ca` are written (by the status patch) but
/// never read back, so the watch skips them instead of copying kilobytes of
/// base64 out of every event.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// Conditions: `Approved`, `Denied`, `Ready`, `InvalidRequest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<CertificateRequestCondition>,
    /// When the request failed; drives cert-manager's retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<Time>,
}

/// One condition of a `CertificateRequest`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestCondition {
    /// `Ready`, `Approved`, `Denied` or `InvalidRequest`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

impl CertificateRequest {
    /// The condition of type `type_`, if present.
    #[must_use]
    pub fn condition(&self, type_: &str) -> Option<&CertificateRequestCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// Whether condition `type_` is present with status `True`.
    #[must_use]
    pub fn has_true(&self, type_: &str) -> bool {
        self.condition(type_)
            .is_some_and(|c| c.status == conditions::TRUE)
    }
}
