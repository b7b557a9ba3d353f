//! What the rotator reads of capstan-issuer's `CAIssuer` and
//! `ClusterCAIssuer`: where each keeps its CA Secret.
//!
//! A hand-written subset of the issuer's types (`issuer/src/api/ca_issuer.rs`),
//! read through [`DynamicObject`](kube::api::DynamicObject), so that the
//! rotator depends on neither the issuer's crate nor its CRDs being
//! installed: an issuer that cannot be read is a missing source.
//!
//! | issuer | CA Secret |
//! | --- | --- |
//! | `CAIssuer` `<ns>/<name>` | `spec.ca.secretName` or `spec.selfManaged.secretName`, in `<ns>` |
//! | `ClusterCAIssuer` `<name>` | the same fields, in the cluster resource namespace |

use kube::api::{ApiResource, GroupVersionKind};
use serde::Deserialize;

use super::injection::InjectSource;

/// API group of the issuer kinds.
pub const GROUP: &str = "capstan.dev";
/// API version of the issuer kinds.
pub const VERSION: &str = "v1alpha1";
/// Kind of the namespaced issuer.
pub const CA_ISSUER: &str = "CAIssuer";
/// Kind of the cluster-scoped issuer.
pub const CLUSTER_CA_ISSUER: &str = "ClusterCAIssuer";

/// The API resource of `CAIssuer`.
#[must_use]
pub fn ca_issuer_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, CA_ISSUER),
        "caissuers",
    )
}

/// The API resource of `ClusterCAIssuer`.
#[must_use]
pub fn cluster_ca_issuer_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, CLUSTER_CA_ISSUER),
        "clustercaissuers",
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretName {
    secret_name: String,
}

/// The subset of the issuer's `spec` naming its CA Secret.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssuerSpecSubset {
    #[serde(default)]
    ca: Option<SecretName>,
    #[serde(default)]
    self_managed: Option<SecretName>,
}

/// The name of the Secret an issuer keeps its CA in, read from the issuer's
/// `spec` (`spec.ca.secretName` or `spec.selfManaged.secretName`).
///
/// # Errors
/// A message naming the problem when the spec names no Secret, or both.
pub fn ca_secret_name(spec: &serde_json::Value) -> Result<String, String> {
    let spec: IssuerSpecSubset = serde_json::from_value(spec.clone())
        .map_err(|e| format!("its spec cannot be read: {e}"))?;
    match (spec.ca, spec.self_managed) {
        (Some(s), None) | (None, Some(s)) if !s.secret_name.is_empty() => Ok(s.secret_name),
        (Some(_), Some(_)) => Err("its spec sets both ca and selfManaged".to_owned()),
        _ => Err("its spec names no CA Secret".to_owned()),
    }
}

/// The namespace of an issuer source's CA Secret: the issuer's own for a
/// `CAIssuer`, `cluster_resource_namespace` for a `ClusterCAIssuer`; `None`
/// for a Secret source.
#[must_use]
pub fn secret_namespace<'a>(
    source: &'a InjectSource,
    cluster_resource_namespace: &'a str,
) -> Option<&'a str> {
    match source {
        InjectSource::Secret { .. } => None,
        InjectSource::Issuer { namespace, .. } => Some(namespace),
        InjectSource::ClusterIssuer { .. } => Some(cluster_resource_namespace),
    }
}

/// `CAIssuer/x -n ns`, `ClusterCAIssuer/x` or `Secret/x -n ns`: how Events
/// name a source.
#[must_use]
pub fn describe(source: &InjectSource) -> String {
    use capstan_common::events::object_phrase;
    match source {
        InjectSource::Secret { namespace, name } => object_phrase("Secret", Some(namespace), name),
        InjectSource::Issuer { namespace, name } => object_phrase(CA_ISSUER, Some(namespace), name),
        InjectSource::ClusterIssuer { name } => object_phrase(CLUSTER_CA_ISSUER, None, name),
    }
}

#[cfg(test)]
mod tests {
    use capstan_issuer::api::ca_issuer::{
        CaSecretSource, ClusterCAIssuer, ClusterCAIssuerSpec, IssuerSpec, SelfManagedCa,
    };
    use kube::Resource;

    use super::*;

    fn spec_of(issuer: &IssuerSpec) -> serde_json::Value {
        let obj = ClusterCAIssuer::new(
            "ca",
            ClusterCAIssuerSpec {
                issuer: issuer.clone(),
            },
        );
        serde_json::to_value(&obj).expect("serializes")["spec"].clone()
    }

    #[test]
    fn reads_the_secret_name_the_issuer_writes() {
        let managed = IssuerSpec {
            self_managed: Some(SelfManagedCa {
                secret_name: "root".into(),
                duration: Some("1h".into()),
                ..SelfManagedCa::default()
            }),
            max_duration: Some("10m".into()),
            ..IssuerSpec::default()
        };
        assert_eq!(ca_secret_name(&spec_of(&managed)), Ok("root".into()));
        let user = IssuerSpec {
            ca: Some(CaSecretSource {
                secret_name: "mine".into(),
            }),
            ..IssuerSpec::default()
        };
        assert_eq!(ca_secret_name(&spec_of(&user)), Ok("mine".into()));
    }

    #[test]
    fn a_spec_without_one_secret_is_named() {
        assert!(
            ca_secret_name(&serde_json::json!({}))
                .expect_err("none")
                .contains("no CA Secret")
        );
        let both =
            serde_json::json!({"ca": {"secretName": "a"}, "selfManaged": {"secretName": "b"}});
        assert!(ca_secret_name(&both).expect_err("both").contains("both"));
    }

    #[test]
    fn resources_match_the_issuer_crds() {
        let ar = cluster_ca_issuer_resource();
        assert_eq!(ar.plural, ClusterCAIssuer::plural(&()));
        assert_eq!(ar.api_version, ClusterCAIssuer::api_version(&()));
        assert_eq!(
            ca_issuer_resource().plural,
            capstan_issuer::api::ca_issuer::CAIssuer::plural(&())
        );
    }

    #[test]
    fn cluster_issuers_keep_their_secret_in_the_cluster_resource_namespace() {
        let cluster = InjectSource::ClusterIssuer { name: "ca".into() };
        assert_eq!(secret_namespace(&cluster, "capstan"), Some("capstan"));
        let ns = InjectSource::Issuer {
            namespace: "apps".into(),
            name: "ca".into(),
        };
        assert_eq!(secret_namespace(&ns, "capstan"), Some("apps"));
        assert_eq!(describe(&cluster), "ClusterCAIssuer/ca");
        assert_eq!(describe(&ns), "CAIssuer/ca -n apps");
    }
}
