//! Command-line interface and process wiring of `capstan-issuer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use capstan_common::backoff::Retries;
use capstan_common::cli::{self, KubeArgs, LeaderArgs};
use capstan_common::config::ConfigArgs;
use capstan_common::events::Recorder;
use capstan_common::serve::{self, Health, ServeArgs};
use capstan_common::served::{CAPSTAN_INSTALL, CERT_MANAGER_INSTALL, CrdGate, RequiredCrd};
use capstan_common::shutdown;
use capstan_common::telemetry::LogArgs;

use tokio_util::sync::CancellationToken;

use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer};
use crate::api::cert_manager::CertificateRequest;
use crate::context::{Context, Signers};
use crate::metrics::Metrics;

/// capstan's issuer: a cert-manager external issuer that signs
/// CertificateRequests and CertificateSigningRequests with an in-cluster root
/// CA.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-issuer", version, about, long_about = None)]
pub struct Args {
    /// Config file.
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,

    /// Cluster access.
    #[command(flatten)]
    pub kube: KubeArgs,

    /// Leader election.
    #[command(flatten)]
    pub leader: LeaderArgs,

    /// Metrics and health serving.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Namespace of the CA Secrets of ClusterCAIssuers (as cert-manager's
    /// --cluster-resource-namespace). Default: the issuer's own namespace.
    #[arg(long, env = "CAPSTAN_CLUSTER_RESOURCE_NAMESPACE")]
    pub cluster_resource_namespace: Option<String>,

    /// Requests reconciled at once by each controller (cert-manager's
    /// flag). Bounded so that a burst of requests reuses a few API
    /// connections instead of opening one per request.
    #[arg(long, env = "CAPSTAN_CONCURRENT_WORKERS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_workers: u16,
}

/// Config-file keys of this binary beyond
/// [`capstan_common::config::COMMON_KEYS`], each with its flag.
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("clusterResourceNamespace", "cluster-resource-namespace"),
    ("concurrentWorkers", "concurrent-workers"),
];

impl Args {
    /// Runs the issuer until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// When the client, leader election or telemetry cannot start.
    pub fn run(self) -> anyhow::Result<()> {
        // One thread: the issuer's work is signing between API calls, and
        // waking other worker threads for it cost more CPU than signing.
        let log = self.log.clone();
        cli::run(&log, cli::Runtime::CurrentThread, async move {
            let shutdown = shutdown::on_signal().context("installing signal handlers")?;
            self.serve_until(shutdown).await
        })
    }

    /// Runs until `shutdown` fires, on the caller's runtime and logging
    /// (the binary's [`Args::run`] sets those up; the embedded demo runs
    /// both components in one process this way).
    ///
    /// # Errors
    /// When the servers, the client or leader election cannot start.
    pub async fn serve_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let plan = self.serve.plan(&cli::own_namespace())?;
        let client = self.kube.client().await?;
        let identity = cli::identity("capstan-issuer");
        let registry = serve::registry();
        let health = Health::default();
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        health.add_check("controllers", move || seen.load(Ordering::SeqCst));
        let crds = CrdGate::new(&health);
        let serving = serve::start(
            plan,
            registry.clone(),
            client.clone(),
            health,
            shutdown.clone(),
        )
        .await?;
        let (leadership, campaign) = self
            .leader
            .leadership(client.clone(), "capstan-issuer", &identity, &shutdown)
            .await?;
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client.clone(), "capstan-issuer", identity.clone()),
            metrics: Metrics::register(&registry)?,
            leadership,
            signers: Signers::default(),
            cluster_resource_namespace: self
                .cluster_resource_namespace
                .clone()
                .unwrap_or_else(cli::own_namespace),
            concurrent_workers: self.concurrent_workers,
            retries: Retries::default(),
        });
        tracing::info!(
            identity = %identity,
            cluster_resource_namespace = %ctx.cluster_resource_namespace,
            leader_elect = self.leader.enabled,
            "capstan-issuer starting"
        );
        let stop = || {
            let token = shutdown.clone();
            async move { token.cancelled().await }
        };
        // Each controller starts once the CRDs it reads are served; the
        // CertificateSigningRequest controller needs none.
        let ca_issuers = RequiredCrd::of::<CAIssuer>(CAPSTAN_INSTALL);
        let cluster_ca_issuers = RequiredCrd::of::<ClusterCAIssuer>(CAPSTAN_INSTALL);
        let requests = [
            RequiredCrd::of::<CertificateRequest>(CERT_MANAGER_INSTALL),
            ca_issuers.clone(),
            cluster_ca_issuers.clone(),
        ];
        started.store(true, Ordering::SeqCst);
        tokio::join!(
            gated(
                &crds,
                &client,
                &shutdown,
                "CAIssuer",
                std::slice::from_ref(&ca_issuers),
                crate::issuer::controller::run::<CAIssuer>(ctx.clone(), stop())
            ),
            gated(
                &crds,
                &client,
                &shutdown,
                "ClusterCAIssuer",
                std::slice::from_ref(&cluster_ca_issuers),
                crate::issuer::controller::run::<ClusterCAIssuer>(ctx.clone(), stop())
            ),
            gated(
                &crds,
                &client,
                &shutdown,
                "CertificateRequest",
                &requests,
                crate::request::controller::run(ctx.clone(), stop())
            ),
            shutdown::drained(
                "CertificateSigningRequest",
                crate::csr::controller::run(ctx.clone(), stop()),
                &shutdown,
            ),
        );
        // The controllers have stopped: drop the last Leadership so that a
        // held Lease is released for the other replica.
        drop(ctx);
        tokio::join!(campaign.released(), serving.stopped());
        tracing::info!("capstan-issuer stopped");
        Ok(())
    }
}

/// Runs the controller `run`, named `name`, once the CRDs in `needed` are
/// served, and gives it the drain budget once `shutdown` fires.
async fn gated(
    crds: &CrdGate,
    client: &kube::Client,
    shutdown: &CancellationToken,
    name: &str,
    needed: &[RequiredCrd],
    run: impl std::future::Future<Output = ()>,
) {
    shutdown::drained(
        name,
        crds.run_when_served(client, name, needed, shutdown, run),
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(args: &[&str]) -> String {
        let keys: Vec<(&str, &str)> = capstan_common::config::COMMON_KEYS
            .iter()
            .chain(CONFIG_KEYS)
            .copied()
            .collect();
        let argv = std::iter::once("capstan-issuer").chain(args.iter().copied());
        let args: Args = capstan_common::config::try_parse_from(argv, &keys).expect("parse");
        format!("{args:?}")
    }

    /// A cert-manager controller's command line, as its Helm chart and
    /// users write it, configures the issuer as capstan's own spelling does.
    #[test]
    fn cert_managers_flags_give_the_same_config() {
        let theirs = parse(&[
            "--v=4",
            "--logging-format=json",
            "--leader-elect",
            "--leader-election-namespace=kube-system",
            "--leader-election-lease-duration=60s",
            "--leader-election-renew-deadline=40s",
            "--cluster-resource-namespace=cert-manager",
            "--internal-healthz-listen-address=:9404",
            "--metrics-tls-min-version=VersionTLS13",
            "--metrics-tls-cipher-suites=TLS_AES_128_GCM_SHA256",
            "--concurrent-workers=5",
        ]);
        let ours = parse(&[
            "--v=4",
            "--log-format=json",
            "--leader-elect=true",
            "--leader-election-namespace=kube-system",
            "--leader-election-lease-duration=60s",
            "--leader-election-renew-deadline=40s",
            "--cluster-resource-namespace=cert-manager",
            "--health-listen-address=:9404",
            "--tls-min-version=VersionTLS13",
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256",
            "--concurrent-workers=5",
        ]);
        assert_eq!(theirs, ours);
        assert_ne!(theirs, parse(&[]), "the flags changed something");
    }
}
