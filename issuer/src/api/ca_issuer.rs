//! `CAIssuer` (namespaced) and `ClusterCAIssuer` (cluster-scoped), group
//! `capstan.dev`, version `v1alpha1`.
//!
//! Both kinds share [`IssuerSpec`] and [`IssuerStatus`]. The spec names one CA
//! source — an existing CA Secret (`spec.ca`) or a CA the issuer generates and
//! rotates itself (`spec.selfManaged`) — and the leaf policy every request is
//! held to. Durations are Go duration strings (`15s`, `5m`, `2160h`), as in
//! cert-manager.

// kube-derive takes one `printcolumn(...)` per column, each with `type_ = ...`;
// clippy reads the repeated keys as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;

use super::rules;
use serde::{Deserialize, Serialize};

/// `spec` of a namespaced `CAIssuer`: signs requests in its own namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(
    validation = rules::spec_rules()[0].clone(),
    validation = rules::spec_rules()[1].clone(),
    validation = rules::spec_rules()[2].clone()
)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "CAIssuer",
    namespaced,
    status = "IssuerStatus",
    shortname = "cai",
    category = "capstan",
    category = "cert-manager",
    derive = "PartialEq",
    derive = "Default",
    doc = "A certificate authority that signs cert-manager CertificateRequests in its own namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.rotation.phase"),
    printcolumn(
        name = "CA Expiry",
        type_ = "string",
        json_path = ".status.ca.notAfter"
    ),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.rotation.nextRotationTime"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct CAIssuerSpec {
    /// The issuer's configuration.
    #[serde(flatten)]
    pub issuer: IssuerSpec,
}

/// `spec` of a cluster-scoped `ClusterCAIssuer`: signs requests in any namespace.
///
/// Its CA Secret lives in the cluster resource namespace
/// (`--cluster-resource-namespace`), as for cert-manager's ClusterIssuers.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(
    validation = rules::spec_rules()[0].clone(),
    validation = rules::spec_rules()[1].clone(),
    validation = rules::spec_rules()[2].clone()
)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "ClusterCAIssuer",
    status = "IssuerStatus",
    shortname = "ccai",
    category = "capstan",
    category = "cert-manager",
    derive = "PartialEq",
    derive = "Default",
    doc = "A certificate authority that signs cert-manager CertificateRequests in every namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.rotation.phase"),
    printcolumn(
        name = "CA Expiry",
        type_ = "string",
        json_path = ".status.ca.notAfter"
    ),
    printcolumn(
        name = "Next Rotation",
        type_ = "string",
        json_path = ".status.rotation.nextRotationTime"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterCAIssuerSpec {
    /// The issuer's configuration.
    #[serde(flatten)]
    pub issuer: IssuerSpec,
}

/// Configuration shared by `CAIssuer` and `ClusterCAIssuer`.
///
/// The CRD checks the rules of [`rules`] at `kubectl apply`, in the words
/// the issuer would use for `InvalidSpec`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Sign with an existing CA key pair from a `kubernetes.io/tls` Secret.
    /// Exactly one of `ca` and `selfManaged` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSecretSource>,
    /// Generate a root CA, keep it in a Secret the issuer owns, and rotate it.
    /// Exactly one of `ca` and `selfManaged` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_managed: Option<SelfManagedCa>,
    /// Longest leaf lifetime the issuer signs; longer requests are shortened
    /// to it. Default `2160h` (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule())]
    pub max_duration: Option<String>,
    /// Leaf lifetime when a request asks for none, at most `maxDuration`.
    /// Default: `maxDuration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule())]
    pub default_duration: Option<String>,
    /// Usages a request may ask for, in cert-manager's spelling (`server auth`,
    /// `client auth`, `digital signature`, ...). Empty: any usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::LIST_MAX_ITEMS), inner(length(max = 64)))]
    #[x_kube(validation = rules::usages_rule())]
    pub allowed_usages: Vec<String>,
    /// Names every requested SAN must fall within; a request outside them fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_constraints: Option<NameConstraints>,
}

/// `spec.ca`: a CA key pair the user provides.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretSource {
    /// Name of a Secret with `tls.crt`, `tls.key` and optionally `ca.crt`. For a
    /// `CAIssuer` it is in the issuer's namespace; for a `ClusterCAIssuer`, in
    /// the cluster resource namespace.
    #[x_kube(validation = rules::not_empty_rule())]
    pub secret_name: String,
}

/// `spec.selfManaged`: a root CA the issuer generates and rotates.
///
/// Rotation order: the new CA is published in the bundle first, signs only
/// after `propagationDelay`, and the retired CA stays in the bundle for
/// `overlap` (default: until the last leaf it signed has expired).
///
/// `rotateBefore` must be shorter than `duration`, and `propagationDelay`
/// shorter than the rotation window.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(
    validation = rules::self_managed_rules()[0].clone(),
    validation = rules::self_managed_rules()[1].clone()
)]
#[serde(rename_all = "camelCase")]
pub struct SelfManagedCa {
    /// Name of the Secret the issuer creates and owns for the CA.
    #[x_kube(validation = rules::not_empty_rule())]
    pub secret_name: String,
    /// Subject common name of the root CA. Default: the issuer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Key algorithm of the root CA (default `ECDSAP256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_algorithm: Option<KeyAlgorithm>,
    /// Lifetime of each root CA, at most `876600h` (100 years). Default
    /// `17520h` (2 years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule(), validation = rules::ca_duration_rule())]
    pub duration: Option<String>,
    /// Start a rotation when this much of the CA's lifetime is left.
    /// Overrides `rotationFraction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule())]
    pub rotate_before: Option<String>,
    /// Start a rotation when this fraction of the CA's lifetime is left
    /// (between 0 and 1, exclusive). Default `0.3333`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::rotation_fraction_rule())]
    pub rotation_fraction: Option<f64>,
    /// How long a new CA sits in the bundle before it signs anything, so that
    /// every client trusts it first. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule())]
    pub propagation_delay: Option<String>,
    /// How long a retired CA stays in the bundle. Default: until the last
    /// leaf it signed has expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::DURATION_MAX_LENGTH))]
    #[x_kube(validation = rules::duration_rule())]
    pub overlap: Option<String>,
}

/// Key algorithm of a self-managed root CA.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    #[serde(rename = "ECDSAP256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ECDSAP384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "Ed25519")]
    Ed25519,
    /// RSA, 2048-bit modulus.
    #[serde(rename = "RSA2048")]
    Rsa2048,
    /// RSA, 3072-bit modulus.
    #[serde(rename = "RSA3072")]
    Rsa3072,
    /// RSA, 4096-bit modulus.
    #[serde(rename = "RSA4096")]
    Rsa4096,
}

/// Names requests are confined to (RFC 5280 name-constraint semantics).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameConstraints {
    /// DNS domains SANs must equal or fall under, e.g. `svc.cluster.local`;
    /// `.example.com` permits only names under `example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::LIST_MAX_ITEMS), inner(length(max = 254)))]
    #[x_kube(validation = rules::dns_domains_rule())]
    pub permitted_dns_domains: Vec<String>,
    /// IP ranges (CIDR) IP SANs must fall within, e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::LIST_MAX_ITEMS), inner(length(max = 64)))]
    #[x_kube(validation = rules::ip_ranges_rule())]
    pub permitted_ip_ranges: Vec<String>,
}

/// `status` of both issuer kinds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    /// `Ready` says whether requests are being signed, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The CA that signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSummary>,
    /// How many CAs the published bundle holds (2 during a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_size: Option<i32>,
    /// When signing last switched to a new CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where a self-managed CA is in its rotation (absent for `spec.ca`:
    /// a user-provided CA is rotated by its user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// Every CA in the published bundle, newest first, as the rotator
    /// publishes it: unexpired, de-duplicated. For `selfManaged` the CA
    /// Secret's `ca-bundle.crt`; for `spec.ca` its `ca-bundle.crt`, else
    /// `ca.crt`, else `tls.crt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundle: Vec<BundleCa>,
}

/// `status.rotation`: the rotation phase of a self-managed CA and its clock.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// `Stable`, `Publishing` or `Retiring`.
    pub phase: RotationPhase,
    /// When the next rotation starts on schedule: the signing CA's rotation
    /// point (its notAfter minus `rotateBefore`). Absent while `Publishing`,
    /// when the next CA is already chosen. A `capstan.dev/rotate` trigger
    /// starts one earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// While `Publishing`: when the published CA starts signing (its
    /// publication plus `propagationDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch_time: Option<Time>,
}

/// Phase of a self-managed CA's rotation.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RotationPhase {
    /// One CA signs; nothing is waiting to sign or to leave the bundle.
    Stable,
    /// A new CA is in the bundle but does not sign yet (`propagationDelay`);
    /// the previous CA still signs.
    Publishing,
    /// The new CA signs; a retired CA stays in the bundle until its
    /// `retireTime`.
    Retiring,
}

/// One CA of the published bundle.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleCa {
    /// SHA-256 fingerprint of the DER certificate, hex (as in `status.ca`).
    pub fingerprint: String,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Start of validity.
    pub not_before: Time,
    /// End of validity.
    pub not_after: Time,
    /// `Signing`, `Next` (published, not signing yet), `Retired` or
    /// `Trusted`.
    pub role: BundleRole,
    /// For a `Retired` CA: when it leaves the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_time: Option<Time>,
}

/// What a CA in the bundle is there for.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BundleRole {
    /// Signs new leaves.
    Signing,
    /// Published ahead of a switch; signs from `status.rotation.switchTime`.
    Next,
    /// No longer signs; trusted until its `retireTime` so its leaves verify.
    Retired,
    /// In the bundle, but capstan neither signs with it nor rotates it: the
    /// root above a user-provided intermediate, or another CA a user put in
    /// the Secret's bundle.
    Trusted,
}

/// Identity and validity of a CA certificate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSummary {
    /// SHA-256 fingerprint of the DER certificate, hex.
    pub fingerprint: String,
    /// Subject, RFC 4514.
    pub subject: String,
    /// Start of validity.
    pub not_before: Time,
    /// End of validity.
    pub not_after: Time,
}
