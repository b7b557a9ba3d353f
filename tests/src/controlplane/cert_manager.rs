//! cert-manager's own controller in the loop: `cert-manager-controller`, a
//! main of ours over cert-manager's public packages built from its Go module
//! by `tests/controlplane/build` (`tests/controlplane/cert-manager`), run out
//! of cluster against a [`ControlPlane`] as a supervised [`Process`], with
//! cert-manager's CRDs from the same module version ([`crd_dir`]).
//!
//! It runs as cert-manager's ServiceAccount ([`USER`], by impersonation, in
//! `system:masters`, so the audit log tells its calls from the test's), with
//! no leader election and no webhook: nothing fills a CertificateRequest's
//! `spec.username`/`groups`, nothing validates specs, and nothing checks an
//! approver's `approve` permission on `signers`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::process::Process;
use super::{ControlPlane, bin_dir, free_port, http_get, wait_ready};
use crate::harness::condition;
use crate::harness::{Kubectl, await_condition};

/// The binary's name in [`bin_dir`].
pub const BINARY: &str = "cert-manager-controller";

/// The user cert-manager's controller runs as (its Helm chart's
/// ServiceAccount `cert-manager/cert-manager`).
pub const USER: &str = "system:serviceaccount:cert-manager:cert-manager";

/// The controllers it runs unless told otherwise: issuer bookkeeping, the
/// Certificate life cycle, the approver that approves every request, and
/// the CA issuer's signer.
pub const DEFAULT_CONTROLLERS: &[&str] = &[
    "issuers",
    "clusterissuers",
    "certificates-trigger",
    "certificates-issuing",
    "certificates-key-manager",
    "certificates-request-manager",
    "certificates-readiness",
    "certificates-revision-manager",
    "certificaterequests-approver",
    "certificaterequests-issuer-ca",
];

/// The approver: without it CertificateRequests wait for someone else to
/// approve them.
pub const APPROVER: &str = "certificaterequests-approver";

/// How long the controller gets to sync its caches.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory of cert-manager's CRDs (`deploy/crds` of the module version
/// the controller was built from), linked beside the binaries.
pub fn crd_dir() -> anyhow::Result<PathBuf> {
    let dir = bin_dir().join("cert-manager-crds");
    if !dir.is_dir() {
        bail!(
            "{} not found: build the control plane first (cargo xtask control-plane build)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Applies cert-manager's CRDs ([`crd_dir`]) to `cp` (server-side apply, so
/// applying twice is harmless) and waits until each is Established.
pub async fn apply_crds(cp: &ControlPlane) -> anyhow::Result<()> {
    cp.apply_crd_dir(&crd_dir()?).await
}

/// How to run the controller.
#[derive(Debug, Clone)]
pub struct Builder {
    controllers: Vec<String>,
    cluster_resource_namespace: String,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            controllers: DEFAULT_CONTROLLERS
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            cluster_resource_namespace: "kube-system".to_owned(),
        }
    }
}

impl Builder {
    /// The controllers to run (`--controllers`).
    pub fn controllers(mut self, controllers: &[&str]) -> Self {
        self.controllers = controllers.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// [`DEFAULT_CONTROLLERS`] without `controller` (say, [`APPROVER`]).
    pub fn without(mut self, controller: &str) -> Self {
        self.controllers.retain(|c| c != controller);
        self
    }

    /// Where ClusterIssuers' Secrets live (`--cluster-resource-namespace`,
    /// default `kube-system`).
    pub fn cluster_resource_namespace(mut self, namespace: &str) -> Self {
        namespace.clone_into(&mut self.cluster_resource_namespace);
        self
    }

    /// Applies cert-manager's CRDs to `cp`, starts the controller and waits
    /// until its informer caches have synced (its `/readyz`).
    pub async fn start(self, cp: &ControlPlane) -> anyhow::Result<CertManager> {
        apply_crds(cp).await?;
        let program = bin_dir().join(BINARY);
        if !program.exists() {
            bail!(
                "{} not found: build the control plane first (cargo xtask control-plane build)",
                program.display()
            );
        }
        let kubeconfig = cp.user_kubeconfig_at(
            &cp.url(),
            cp.dir(),
            "cert-manager",
            USER,
            &[
                "system:masters",
                "system:serviceaccounts",
                "system:serviceaccounts:cert-manager",
            ],
        )?;
        let log = cp.dir().join(format!("{BINARY}.log"));
        let mut last = None;
        // The metrics port is picked free and bound by the controller a moment
        // later; a start that loses that race is tried again.
        for _ in 0..3 {
            let port = free_port()?;
            let args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--controllers={}", self.controllers.join(",")),
                format!(
                    "--cluster-resource-namespace={}",
                    self.cluster_resource_namespace
                ),
                format!("--metrics-listen-address=127.0.0.1:{port}"),
                "--v=2".to_owned(),
            ];
            let process = Process::spawn(BINARY, &program, &args, &log, Duration::from_secs(5))?;
            let cm = CertManager {
                process,
                base_url: format!("http://127.0.0.1:{port}"),
                controllers: self.controllers.clone(),
            };
            match cm.wait_ready().await {
                Ok(()) => return Ok(cm),
                Err(e) if format!("{e:#}").contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{BINARY} did not start")))
    }
}

/// A running cert-manager controller; dropping it kills it.
#[derive(Debug)]
pub struct CertManager {
    process: Process,
    base_url: String,
    controllers: Vec<String>,
}

impl CertManager {
    /// How to run it.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts it with [`DEFAULT_CONTROLLERS`] ([`Builder::start`]).
    pub async fn start(cp: &ControlPlane) -> anyhow::Result<Self> {
        Builder::default().start(cp).await
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.base_url);
        wait_ready(&self.process, START_TIMEOUT, || async {
            http_get(&url)
                .await
                .is_some_and(|body| body.trim() == "ok")
                .then_some(())
        })
        .await
    }

    /// cert-manager's Prometheus endpoint (`http://127.0.0.1:<port>/metrics`).
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.base_url)
    }

    /// One scrape of [`CertManager::metrics_url`]; `None` when it does not
    /// answer.
    pub async fn metrics(&self) -> Option<String> {
        http_get(&self.metrics_url()).await
    }

    /// The controllers it runs.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// Its process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// Waits until Certificate `namespace/name` has finished issuing
/// `revision`: Ready, at that revision, no longer Issuing (cert-manager's
/// readiness controller may mark it Ready from the new Secret a moment
/// before its issuing controller records the revision); returns it.
pub async fn wait_issued(
    kubectl: &Kubectl,
    namespace: &str,
    name: &str,
    revision: u64,
    timeout: Duration,
) -> anyhow::Result<Value> {
    await_condition(
        &format!("revision {revision} of Certificate {namespace}/{name}"),
        timeout,
        Duration::from_millis(200),
        || async {
            let cert = kubectl
                .get_json(&["certificate", name, "-n", namespace])
                .await?;
            (cert["status"]["revision"] == revision
                && condition(&cert, "Issuing").is_none()
                && condition(&cert, "Ready").is_some_and(|c| c["status"] == "True"))
            .then_some(cert)
        },
    )
    .await
}

/// Asks for a renewal of Certificate `namespace/name` now, as `cmctl renew`
/// does: an `Issuing=True` condition (reason `ManuallyTriggered`) on its
/// status, at its current generation.
pub async fn renew(kubectl: &Kubectl, namespace: &str, name: &str) -> anyhow::Result<()> {
    let cert = kubectl
        .get_json(&["certificate", name, "-n", namespace])
        .await
        .with_context(|| format!("Certificate {namespace}/{name} not found"))?;
    let patch = serde_json::json!([{
        "op": "add",
        "path": "/status/conditions/-",
        "value": {
            "type": "Issuing",
            "status": "True",
            "reason": "ManuallyTriggered",
            "message": "Certificate re-issuance manually triggered",
            "observedGeneration": cert["metadata"]["generation"],
        },
    }]);
    kubectl
        .run_ok(&[
            "patch",
            "certificate",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=json",
            "-p",
            &patch.to_string(),
        ])
        .await
        .map(drop)
}
