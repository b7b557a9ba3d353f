//! trust-manager (cert-manager/trust-manager), the peer of capstan's
//! `CABundle` in the peer benchmarks: built from its Go module by
//! `tests/controlplane/build-peers` (`tests/controlplane/trust-manager`)
//! and run out of cluster against a [`ControlPlane`] as a supervised
//! [`Process`], with its CRDs from the same module version ([`crd_dir`]).
//!
//! It runs as its Helm chart's ServiceAccount ([`USER`], by impersonation,
//! in `system:masters`, so the audit log tells its calls apart), without
//! leader election, every port free on 127.0.0.1, and a webhook server
//! (which it always starts) serving a certificate made here; nothing
//! registers the webhook with kube-apiserver.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::process::Process;
use super::{ControlPlane, bin_dir, free_port, http_get, pki, wait_ready};

/// The binary's name in [`bin_dir`].
pub const BINARY: &str = "trust-manager";

/// The user trust-manager runs as (its Helm chart's ServiceAccount
/// `cert-manager/trust-manager`).
pub const USER: &str = "system:serviceaccount:cert-manager:trust-manager";

/// How long it gets to become ready, and its CRDs to be Established.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What to build first when a file of trust-manager is missing.
const BUILD_HINT: &str = "build the peers first (cargo xtask bench-peers builds them)";

/// The directory of trust-manager's CRDs (`deploy/crds` of the module
/// version the binary was built from), linked beside the binaries.
pub fn crd_dir() -> anyhow::Result<PathBuf> {
    let dir = bin_dir().join("trust-manager-crds");
    if !dir.is_dir() {
        bail!("{} not found: {BUILD_HINT}", dir.display());
    }
    Ok(dir)
}

/// The trust-manager version the build linked (`v0.25.0`), read from the
/// name of the CRD directory (`trust-manager-crds-<version>`).
pub fn version() -> anyhow::Result<String> {
    let target = std::fs::read_link(crd_dir()?)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .context("the CRD link has no name")?;
    name.strip_prefix("trust-manager-crds-")
        .map(str::to_owned)
        .with_context(|| format!("{name} does not name a version"))
}

/// A running trust-manager; dropping it kills it.
#[derive(Debug)]
pub struct TrustManager {
    process: Process,
    readyz_url: String,
}

impl TrustManager {
    /// Applies trust-manager's CRDs to `cp`, starts it with its sources in
    /// `trust_namespace` (which must exist) and waits for its `/readyz`.
    pub async fn start(cp: &ControlPlane, trust_namespace: &str) -> anyhow::Result<Self> {
        cp.apply_crd_dir(&crd_dir()?).await?;
        let program = bin_dir().join(BINARY);
        if !program.exists() {
            bail!("{} not found: {BUILD_HINT}", program.display());
        }
        let kubeconfig = cp.user_kubeconfig_at(
            &cp.url(),
            cp.dir(),
            BINARY,
            USER,
            &[
                "system:masters",
                "system:serviceaccounts",
                "system:serviceaccounts:cert-manager",
            ],
        )?;
        let certs = webhook_certificate_dir(cp.dir())?;
        let log = cp.dir().join(format!("{BINARY}.log"));
        let mut last = None;
        // Free ports are picked here and bound a moment later: a start that
        // loses that race is tried again.
        for _ in 0..3 {
            let ready_port = free_port()?;
            let args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".to_owned(),
                format!("--trust-namespace={trust_namespace}"),
                format!("--metrics-port={}", free_port()?),
                format!("--readiness-probe-port={ready_port}"),
                "--webhook-host=127.0.0.1".to_owned(),
                format!("--webhook-port={}", free_port()?),
                format!("--webhook-certificate-dir={}", certs.display()),
            ];
            let process = Process::spawn(BINARY, &program, &args, &log, Duration::from_secs(5))?;
            let tm = Self {
                process,
                readyz_url: format!("http://127.0.0.1:{ready_port}/readyz"),
            };
            match tm.wait_ready().await {
                Ok(()) => return Ok(tm),
                Err(e) if format!("{e:#}").contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("{BINARY} did not start")))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_ready(&self.process, START_TIMEOUT, || async {
            http_get(&self.readyz_url).await.map(drop)
        })
        .await
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

/// `<dir>/trust-manager-webhook/` with a `tls.crt` and `tls.key` for
/// 127.0.0.1, from a throwaway CA: the webhook server will not start
/// without them.
fn webhook_certificate_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let certs = dir.join("trust-manager-webhook");
    std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    let ca = pki::Ca::generate("trust-manager webhook CA")?;
    let serving = ca.serving("trust-manager-webhook", &["127.0.0.1", "localhost"])?;
    pki::write_private(&certs, "tls.crt", &serving.cert_pem)?;
    pki::write_private(&certs, "tls.key", &serving.key_pem)?;
    Ok(certs)
}
