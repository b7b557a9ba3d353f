//! `CABundle` (cluster-scoped, `capstan.dev/v1alpha1`): one trust bundle,
//! assembled from several sources, written into a ConfigMap in every
//! namespace a selector picks — the trust-manager `Bundle` model.

// kube-derive takes one `printcolumn(...)` per column, each with `type_ = ...`;
// clippy reads the repeated keys as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules;

/// `spec` of a `CABundle`.
///
/// The CRD refuses at `kubectl apply` what the rotator would report as
/// `InvalidSource`, in the same words.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "CABundle",
    status = "CABundleStatus",
    shortname = "cab",
    category = "capstan",
    derive = "PartialEq",
    derive = "Default",
    validation = rules::name_rule(),
    doc = "A trust bundle assembled from Secrets, ConfigMaps and inline PEM, written into a ConfigMap in every selected namespace.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "In Sync",
        type_ = "integer",
        json_path = ".status.targetsInSync"
    ),
    printcolumn(name = "Targets", type_ = "integer", json_path = ".status.targets"),
    printcolumn(
        name = "Certificates",
        type_ = "integer",
        priority = "1",
        json_path = ".status.certificates"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CABundleSpec {
    /// Where the CA certificates come from. Private keys are never copied: a
    /// source holding one is refused.
    #[schemars(length(max = rules::MAX_SOURCES))]
    #[x_kube(validation = rules::sources_rule())]
    pub sources: Vec<BundleSource>,
    /// The ConfigMap written in each selected namespace.
    pub target: BundleTarget,
    /// Namespaces that get the target ConfigMap. Empty: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// One source of CA certificates. Set exactly one field.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = rules::source_rule())]
#[serde(rename_all = "camelCase")]
pub struct BundleSource {
    /// A key of a Secret (for example an issuer's CA Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectKeySource>,
    /// A key of a ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ObjectKeySource>,
    /// PEM certificates written into the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// A key of a namespaced Secret or ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectKeySource {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Key holding PEM certificates. Default: `ca-bundle.crt` if present,
    /// else `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The ConfigMap a bundle is written to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleTarget {
    /// ConfigMap name, the same in every namespace.
    #[schemars(length(max = 512))]
    #[x_kube(validation = rules::config_map_name_rule())]
    pub config_map: String,
    /// Key of the ConfigMap. Default `ca-bundle.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = rules::config_map_key_rule())]
    pub key: Option<String>,
}

/// `status` of a `CABundle`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CABundleStatus {
    /// `Ready`: every target holds the current bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// SHA-256 of the bundle's bytes, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_hash: Option<String>,
    /// Certificates in the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<i32>,
    /// Namespaces selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<i32>,
    /// Targets holding the current bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_in_sync: Option<i32>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
