//! Command-line interface and process wiring of `capstan-rotator`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use capstan_common::cli::{self, KubeArgs, LeaderArgs, parse_duration};
use capstan_common::config::ConfigArgs;
use capstan_common::events::Recorder;
use capstan_common::serve::{self, Health, ServeArgs};
use capstan_common::shutdown;
use capstan_common::telemetry::LogArgs;

use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::metrics::Metrics;
use crate::restart::controller::Restarter;
use crate::restart::schedule::Limits;
use crate::scope::{self, Scope, namespaces::Live};

/// capstan's rotator: rolls the Deployments, StatefulSets and DaemonSets
/// that use a changed Secret or ConfigMap, and tells the story as Events.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-rotator", version, about, long_about = None)]
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

    /// Changes within this window of the first one make one rollout.
    #[arg(long, env = "CAPSTAN_RESTART_DEBOUNCE", default_value = "10s", value_parser = parse_duration)]
    pub restart_debounce: Duration,

    /// Rollouts in flight at once per namespace; the next waits for one to
    /// complete or time out.
    #[arg(long, env = "CAPSTAN_MAX_CONCURRENT_ROLLOUTS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_rollouts: u16,

    /// How long to wait for a rollout before giving up on it (an Event says so).
    #[arg(long, env = "CAPSTAN_ROLLOUT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub rollout_timeout: Duration,

    /// Namespace of the CA Secrets of ClusterCAIssuers, as the issuer's flag
    /// of the same name (and the same environment variable, so one setting
    /// serves both). Default: the rotator's own namespace.
    #[arg(long, env = "CAPSTAN_CLUSTER_RESOURCE_NAMESPACE")]
    pub cluster_resource_namespace: Option<String>,

    /// Log and record Events for what would change; change nothing.
    #[arg(long, env = "CAPSTAN_DRY_RUN")]
    pub dry_run: bool,

    /// Act only in these namespaces (repeat the flag or separate names with
    /// commas; Reloader's `--namespaces` works too): workloads are restarted
    /// and ConfigMaps get bundles there only, and Secrets, ConfigMaps and
    /// workloads are watched namespace by namespace, so namespaced RBAC
    /// suffices for them. Default: every namespace.
    #[arg(long = "namespace", visible_alias = "namespaces", env = "CAPSTAN_NAMESPACES", value_delimiter = ',', value_parser = scope::parse_namespace)]
    pub namespaces: Vec<String>,

    /// Act only in Namespaces whose labels match this selector, written as
    /// for `kubectl -l` (`team=payments,env in (prod,staging)`), as
    /// Reloader's flag of the same name. Needs to list and watch Namespaces.
    #[arg(long, env = "CAPSTAN_NAMESPACE_SELECTOR", value_parser = scope::parse_selector)]
    pub namespace_selector: Option<kube::core::Selector>,

    /// Never act in these namespaces (repeat the flag or separate names with
    /// commas), as Reloader's flag of the same name.
    #[arg(long, env = "CAPSTAN_NAMESPACES_TO_IGNORE", value_delimiter = ',', value_parser = scope::parse_namespace)]
    pub namespaces_to_ignore: Vec<String>,
}

/// Config-file keys of this binary beyond
/// [`capstan_common::config::COMMON_KEYS`], each with its flag.
pub const CONFIG_KEYS: &[(&str, &str)] = &[
    ("restartDebounce", "restart-debounce"),
    ("maxConcurrentRollouts", "max-concurrent-rollouts"),
    ("rolloutTimeout", "rollout-timeout"),
    ("dryRun", "dry-run"),
    ("clusterResourceNamespace", "cluster-resource-namespace"),
    ("namespaces", "namespace"),
    ("namespaceSelector", "namespace-selector"),
    ("namespacesToIgnore", "namespaces-to-ignore"),
];

impl Args {
    /// Runs the rotator until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// When the client, leader election or telemetry cannot start.
    pub fn run(self) -> anyhow::Result<()> {
        let log = self.log.clone();
        cli::run(&log, cli::Runtime::MultiThread, async move {
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
        let identity = cli::identity("capstan-rotator");
        let registry = serve::registry();
        // Registered before /metrics is served, so that every scrape (also
        // one while leader election cannot start yet) has every family.
        let metrics = Metrics::register(&registry)?;
        let health = Health::default();
        let started = Arc::new(AtomicBool::new(false));
        let seen = started.clone();
        health.add_check("controllers", move || seen.load(Ordering::SeqCst));
        let crds = capstan_common::served::CrdGate::new(&health);
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
            .leadership(client.clone(), "capstan-rotator", &identity, &shutdown)
            .await?;
        let scope = Live::new(Scope::new(
            self.namespaces.clone(),
            self.namespaces_to_ignore.clone(),
            self.namespace_selector.clone(),
        ));
        tracing::info!(scope = %scope.scope(), "restarts and bundles act in {}", scope.scope());
        let following = tokio::spawn(scope.clone().follow(client.clone(), shutdown.clone()));
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(client, "capstan-rotator", identity.clone()),
            metrics,
            leadership,
            dry_run: self.dry_run,
            scope: scope.clone(),
        });
        let limits = Limits {
            debounce: self.restart_debounce,
            max_concurrent: usize::from(self.max_concurrent_rollouts),
            rollout_timeout: self.rollout_timeout,
        };
        tracing::info!(identity = %identity, dry_run = self.dry_run, ?limits, "capstan-rotator starting");
        let bundles = crate::bundle::Config {
            cluster_resource_namespace: self
                .cluster_resource_namespace
                .clone()
                .unwrap_or_else(cli::own_namespace),
            resync: crate::bundle::RESYNC,
        };
        // The controllers decide with the Namespaces' labels: they start
        // once those are known.
        if scope.synced(&shutdown).await {
            started.store(true, Ordering::SeqCst);
        }
        tokio::join!(
            shutdown::drained(
                "restarts",
                Restarter::new(ctx.clone(), limits).run(shutdown.clone()),
                &shutdown,
            ),
            shutdown::drained(
                "bundles",
                crate::bundle::run(ctx.clone(), bundles, crds, shutdown.clone()),
                &shutdown,
            ),
        );
        // The controllers have stopped: drop the last Leadership so that a
        // held Lease is released for the other replica.
        drop(ctx);
        if let Err(error) = following.await {
            tracing::warn!(%error, "the Namespace watch task failed");
        }
        tokio::join!(campaign.released(), serving.stopped());
        tracing::info!("capstan-rotator stopped");
        Ok(())
    }
}
