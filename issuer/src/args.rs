//! Command-line interface and process wiring of `capstan-issuer`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use capstan_common::events::Recorder;
use capstan_common::lease::{self, Leadership, LeaseConfig};
use capstan_common::shutdown;
use capstan_common::telemetry::{self, LogArgs};

use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer};
use crate::context::{Context, Signers};
use crate::metrics::Metrics;

/// capstan's issuer: a cert-manager external issuer that signs
/// CertificateRequests and CertificateSigningRequests with an in-cluster root
/// CA.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-issuer", version, about, long_about = None)]
pub struct Args {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,

    /// Kubeconfig to use; in a pod the service account is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the CA Secrets of ClusterCAIssuers (as cert-manager's
    /// --cluster-resource-namespace). Default: the issuer's own namespace.
    #[arg(long, env = "CAPSTAN_CLUSTER_RESOURCE_NAMESPACE")]
    pub cluster_resource_namespace: Option<String>,

    /// Elect a leader on a coordination.k8s.io Lease so that several
    /// replicas are safe; only the leader writes.
    #[arg(long, env = "CAPSTAN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease. Default: the issuer's own namespace.
    #[arg(long, env = "CAPSTAN_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// How long a leader's lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,

    /// How long before expiry the leader renews.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub leader_election_renew_grace: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::policy::parse_duration("duration", text).map_err(|e| e.to_string())
}

/// This pod's namespace (downward API `POD_NAMESPACE`, else the service
/// account's, else `default`).
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// This replica's identity (`POD_NAME`, else the host name, else a pid).
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .map_or_else(
            || format!("capstan-issuer-{}", std::process::id()),
            |name| format!("{name}-{}", std::process::id()),
        )
}

impl Args {
    /// Runs the issuer until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// When the client, leader election or telemetry cannot start.
    pub fn run(self) -> anyhow::Result<()> {
        telemetry::init(&self.log).map_err(anyhow::Error::msg)?;
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(self.serve())
    }

    async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await?
            }
            None => kube::Config::infer()
                .await
                .context("finding the cluster (in-cluster or KUBECONFIG)")?,
        };
        Ok(kube::Client::try_from(config)?)
    }

    async fn serve(self) -> anyhow::Result<()> {
        let shutdown = shutdown::on_signal().context("installing signal handlers")?;
        let client = self.client().await?;
        let namespace = own_namespace();
        let identity = identity();
        let leadership = if self.leader_elect {
            let config = LeaseConfig {
                namespace: self
                    .leader_election_namespace
                    .clone()
                    .unwrap_or_else(|| namespace.clone()),
                name: "capstan-issuer".to_owned(),
                identity: identity.clone(),
                duration: self.leader_election_lease_duration,
                grace: self.leader_election_renew_grace,
            };
            let (leadership, task) = lease::campaign(client.clone(), &config)
                .await
                .context("starting leader election")?;
            let ended = shutdown.clone();
            tokio::spawn(async move {
                match task.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "leader election ended"),
                    Err(e) => tracing::error!(error = %e, "leader election task failed"),
                }
                // Without a lease, writes would be unsafe: stop the process.
                ended.cancel();
            });
            leadership
        } else {
            Leadership::always()
        };
        let registry = prometheus::Registry::new();
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), "capstan-issuer", identity.clone()),
            metrics: Metrics::register(&registry)?,
            leadership,
            signers: Signers::default(),
            cluster_resource_namespace: self
                .cluster_resource_namespace
                .clone()
                .unwrap_or(namespace),
        });
        tracing::info!(
            identity = %identity,
            cluster_resource_namespace = %ctx.cluster_resource_namespace,
            leader_elect = self.leader_elect,
            "capstan-issuer starting"
        );
        let stop = |token: &tokio_util::sync::CancellationToken| {
            let token = token.clone();
            async move { token.cancelled().await }
        };
        tokio::join!(
            crate::issuer::controller::run::<CAIssuer>(ctx.clone(), stop(&shutdown)),
            crate::issuer::controller::run::<ClusterCAIssuer>(ctx.clone(), stop(&shutdown)),
            crate::request::controller::run(ctx.clone(), stop(&shutdown)),
            crate::csr::controller::run(ctx.clone(), stop(&shutdown)),
        );
        tracing::info!("capstan-issuer stopped");
        Ok(())
    }
}
