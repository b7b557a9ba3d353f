//! Waiting for the CustomResourceDefinitions a controller needs.
//!
//! A chart installed without its CRDs, or before cert-manager, must not
//! leave a controller retrying a watch on a resource the API server has
//! never heard of. Instead each controller waits here before it starts:
//! while a CRD it needs is not served, the process logs an error naming it
//! and how to install it, `/readyz` fails with the same words (the `crds`
//! check), and discovery is asked again every [`POLL`] until the CRD
//! appears; then the controller starts, with no restart needed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::serve::{CheckResult, Health};

/// How often discovery is asked again while a CRD is missing.
pub const POLL: Duration = Duration::from_secs(2);
/// How long one question to discovery may take before it is said in the
/// log and asked again.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// A CustomResourceDefinition a controller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredCrd {
    /// API group (`capstan.dev`, `cert-manager.io`).
    pub group: String,
    /// The version the controller reads.
    pub version: String,
    /// Plural resource name (`cabundles`).
    pub plural: String,
    /// How a user installs it, as a sentence.
    pub install: &'static str,
}

impl RequiredCrd {
    /// The CRD behind resource type `K`, installed as `install` says.
    #[must_use]
    pub fn of<K: kube::Resource<DynamicType = ()>>(install: &'static str) -> Self {
        Self {
            group: K::group(&()).into_owned(),
            version: K::version(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            install,
        }
    }

    /// The CRD's object name, `<plural>.<group>`.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// What the log and `/readyz` say while it is missing.
    #[must_use]
    pub fn missing_message(&self) -> String {
        format!(
            "CustomResourceDefinition {} ({}/{}) is not installed; {}",
            self.name(),
            self.group,
            self.version,
            self.install
        )
    }
}

/// How to install capstan's own CRDs.
pub const CAPSTAN_INSTALL: &str =
    "install capstan's CRDs (the Helm chart with crds.enabled=true, or kubectl apply -f crds/)";

/// How to install cert-manager's CRDs.
pub const CERT_MANAGER_INSTALL: &str = "install cert-manager first, with its CRDs \
     (helm install cert-manager jetstack/cert-manager --set crds.enabled=true)";

/// The CRDs missing right now, shared by every controller of a process and
/// reported by its `/readyz` as the `crds` check.
#[derive(Debug, Clone, Default)]
pub struct CrdGate {
    missing: Arc<RwLock<BTreeMap<String, String>>>,
}

impl CrdGate {
    /// A gate whose state `health` reports as the `crds` check.
    #[must_use]
    pub fn new(health: &Health) -> Self {
        let gate = Self::default();
        let seen = gate.clone();
        health.add_check_with_reason("crds", move || seen.check());
        gate
    }

    /// `Ok` when nothing is missing, else every missing CRD's message.
    pub fn check(&self) -> CheckResult {
        let missing = self
            .missing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.values().cloned().collect::<Vec<_>>().join("; "))
        }
    }

    /// Records whether `crd` is served; returns whether that changed.
    fn set(&self, crd: &RequiredCrd, served: bool) -> bool {
        let mut missing = self
            .missing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if served {
            missing.remove(&crd.name()).is_some()
        } else {
            missing.insert(crd.name(), crd.missing_message()).is_none()
        }
    }

    /// Waits until every CRD in `needed` is served, asking discovery every
    /// [`POLL`]. `controller` names who waits, for the log. Returns `false`
    /// when `shutdown` fired first.
    pub async fn wait_until_served(
        &self,
        client: &kube::Client,
        controller: &str,
        needed: &[RequiredCrd],
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            let mut all = true;
            for crd in needed {
                // kube's client retries 503s and 429s on its own for minutes:
                // bound each question, so that no answer is said in the log.
                let answer = tokio::time::timeout(ASK_TIMEOUT, is_served(client, crd))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {ASK_TIMEOUT:?}")));
                match answer {
                    Ok(served) => {
                        all &= served;
                        if self.set(crd, served) {
                            if served {
                                tracing::info!(crd = %crd.name(), "CustomResourceDefinition is served now");
                            } else {
                                tracing::error!(crd = %crd.name(), controller, "{}", crd.missing_message());
                            }
                        }
                    }
                    Err(error) => {
                        all = false;
                        tracing::warn!(crd = %crd.name(), controller, %error, "could not ask the API server whether a CustomResourceDefinition is served; asking again");
                    }
                }
            }
            if all {
                return true;
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!(controller, "stopping while waiting for CustomResourceDefinitions");
                    return false;
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Runs `controller_run` once every CRD in `needed` is served (see
    /// [`CrdGate::wait_until_served`]); not at all when `shutdown` fires
    /// first.
    pub async fn run_when_served(
        &self,
        client: &kube::Client,
        controller: &str,
        needed: &[RequiredCrd],
        shutdown: &CancellationToken,
        controller_run: impl std::future::Future<Output = ()>,
    ) {
        if self
            .wait_until_served(client, controller, needed, shutdown)
            .await
        {
            controller_run.await;
        }
    }
}

/// Whether discovery lists `crd`'s resource in its group version. A group
/// version the API server does not know (404) means not served; any other
/// failure is an error, for the caller to retry.
async fn is_served(client: &kube::Client, crd: &RequiredCrd) -> Result<bool, String> {
    let group_version = format!("{}/{}", crd.group, crd.version);
    match client.list_api_group_resources(&group_version).await {
        Ok(list) => Ok(lists(&list, crd)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error.to_string()),
    }
}

/// Whether a discovery answer lists `crd`'s resource.
fn lists(
    list: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
    crd: &RequiredCrd,
) -> bool {
    list.resources.iter().any(|r| r.name == crd.plural)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};

    fn crd(group: &str, version: &str, plural: &str, install: &'static str) -> RequiredCrd {
        RequiredCrd {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            install,
        }
    }

    fn certificate_requests() -> RequiredCrd {
        crd(
            "cert-manager.io",
            "v1",
            "certificaterequests",
            CERT_MANAGER_INSTALL,
        )
    }

    fn ca_bundles() -> RequiredCrd {
        crd("capstan.dev", "v1alpha1", "cabundles", CAPSTAN_INSTALL)
    }

    #[test]
    fn a_resource_type_names_its_crd() {
        let required = RequiredCrd::of::<k8s_openapi::api::core::v1::ConfigMap>(CAPSTAN_INSTALL);
        assert_eq!(
            (
                required.group.as_str(),
                required.version.as_str(),
                required.plural.as_str()
            ),
            ("", "v1", "configmaps")
        );
    }

    #[test]
    fn the_message_names_the_crd_and_how_to_install_it() {
        let message = certificate_requests().missing_message();
        assert!(
            message.starts_with(
                "CustomResourceDefinition certificaterequests.cert-manager.io (cert-manager.io/v1) is not installed; install cert-manager"
            ),
            "{message}"
        );
    }

    #[test]
    fn the_gate_reports_every_missing_crd_until_it_is_served() {
        let gate = CrdGate::default();
        assert_eq!(gate.check(), Ok(()));
        assert!(gate.set(&ca_bundles(), false), "newly missing");
        assert!(!gate.set(&ca_bundles(), false), "still missing: said once");
        assert!(gate.set(&certificate_requests(), false));
        let why = gate.check().expect_err("missing");
        assert!(
            why.contains("cabundles.capstan.dev")
                && why.contains("certificaterequests.cert-manager.io"),
            "{why}"
        );
        assert!(gate.set(&ca_bundles(), true), "appeared");
        assert!(!gate.set(&ca_bundles(), true));
        assert!(gate.set(&certificate_requests(), true));
        assert_eq!(gate.check(), Ok(()));
    }

    #[test]
    fn discovery_must_list_the_plural() {
        let list = APIResourceList {
            group_version: "capstan.dev/v1alpha1".into(),
            resources: vec![APIResource {
                name: "caissuers".into(),
                ..APIResource::default()
            }],
        };
        assert!(lists(
            &list,
            &crd("capstan.dev", "v1alpha1", "caissuers", CAPSTAN_INSTALL)
        ));
        assert!(!lists(&list, &ca_bundles()));
    }
}
