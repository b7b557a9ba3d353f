//! Command-line pieces both binaries share: how to reach the cluster, leader
//! election, and who this replica is.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::lease::{self, Leadership, LeaseConfig};

/// Parses a duration flag written like `15s`, `5m`, `2h`: Go's syntax, as
/// cert-manager's flags and config take it, parsed by
/// [`capstan_pki::parse_duration`] so flags, config files and resource
/// fields all accept the same text.
///
/// # Errors
/// When the text is not a positive duration of at most Go's maximum.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    capstan_pki::parse_duration(text).map_err(|e| e.to_string())
}

/// Which tokio runtime a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Everything on the calling thread (blocking work still goes to
    /// `spawn_blocking`'s pool). For work that is short CPU bursts between
    /// API calls, as signing is: handing tasks between worker threads costs
    /// more CPU (futex wake-ups, context switches) than the work itself.
    CurrentThread,
    /// A worker thread per core.
    MultiThread,
}

/// Starts logging, builds the runtime and runs `serve` on it: the common
/// start of both binaries.
///
/// # Errors
/// When logging or the runtime cannot start, or `serve` fails.
pub fn run<F>(log: &crate::telemetry::LogArgs, runtime: Runtime, serve: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init(log).map_err(anyhow::Error::msg)?;
    let mut builder = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve)
}

/// How to reach the Kubernetes API.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig to use; in a pod the service account is used.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

impl KubeArgs {
    /// A client for the configured cluster.
    ///
    /// # Errors
    /// When no cluster configuration can be found or read.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
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
}

/// Leader election on a Lease.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Elect a leader on a coordination.k8s.io Lease so that several
    /// replicas are safe; only the leader writes. `--leader-elect` alone
    /// means true, as cert-manager's boolean flag.
    #[arg(
        long = "leader-elect",
        env = "CAPSTAN_LEADER_ELECT",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,

    /// Namespace of the leader-election Lease. Default: the pod's own namespace.
    #[arg(
        long = "leader-election-namespace",
        env = "CAPSTAN_LEADER_ELECTION_NAMESPACE"
    )]
    pub namespace: Option<String>,

    /// How long a leader's lease lasts without renewal.
    #[arg(long = "leader-election-lease-duration", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long before expiry the leader renews.
    #[arg(long = "leader-election-renew-grace", default_value = "5s", value_parser = parse_duration)]
    pub renew_grace: Duration,

    /// cert-manager's way to say the renew grace: how long after its last
    /// renewal the leader keeps trying to renew before it stops leading.
    /// The grace becomes the lease duration minus this; when given, it
    /// replaces `--leader-election-renew-grace`.
    #[arg(long = "leader-election-renew-deadline", value_parser = parse_duration)]
    pub renew_deadline: Option<Duration>,
}

/// The renew grace that a client-go style renew deadline stands for: the
/// holder stops leading `deadline` after its last renewal, so it renews
/// `lease_duration - deadline` before the lease expires.
///
/// # Errors
/// When the deadline is not shorter than the lease duration.
pub fn grace_from_deadline(
    lease_duration: Duration,
    deadline: Duration,
) -> Result<Duration, String> {
    lease_duration
        .checked_sub(deadline)
        .filter(|grace| !grace.is_zero())
        .ok_or_else(|| {
            format!(
                "--leader-election-renew-deadline ({deadline:?}) must be shorter than \
                 --leader-election-lease-duration ({lease_duration:?})"
            )
        })
}

/// How long one attempt to start leader election (read or create the
/// Lease) may take before it is said in the log and tried again.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping replica waits for its Lease to be released.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A replica's campaign, awaited at shutdown so that a Lease it holds is
/// released (the other replica takes over at once) before the process
/// exits, instead of expiring a lease duration later.
#[derive(Debug)]
pub struct Campaign {
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Campaign {
    /// Once every [`Leadership`] clone is dropped, waits up to
    /// [`RELEASE_TIMEOUT`] for the election task to release the Lease.
    pub async fn released(self) {
        let Some(ended) = self.ended else {
            return;
        };
        if tokio::time::timeout(RELEASE_TIMEOUT, ended).await.is_err() {
            tracing::warn!(
                timeout = ?RELEASE_TIMEOUT,
                "the leader-election Lease was not released in time; the other replica takes over when it expires"
            );
        }
    }
}

impl LeaderArgs {
    /// How long before expiry the leader renews: `--leader-election-renew-grace`,
    /// or what `--leader-election-renew-deadline` stands for when given.
    ///
    /// # Errors
    /// When the renew deadline is not shorter than the lease duration.
    pub fn grace(&self) -> anyhow::Result<Duration> {
        match self.renew_deadline {
            Some(deadline) => {
                grace_from_deadline(self.lease_duration, deadline).map_err(anyhow::Error::msg)
            }
            None => Ok(self.renew_grace),
        }
    }

    /// Campaigns for lease `name` (or always leads when disabled). If the
    /// election task ends, `shutdown` is cancelled: writing without a lease
    /// would be unsafe. Await the [`Campaign`] after the controllers have
    /// stopped and dropped their [`Leadership`].
    ///
    /// # Errors
    /// When the Lease cannot be read or created.
    pub async fn leadership(
        &self,
        client: kube::Client,
        name: &str,
        identity: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(Leadership, Campaign)> {
        let no_lease = |leadership| Ok((leadership, Campaign { ended: None }));
        if !self.enabled {
            return no_lease(Leadership::always());
        }
        let config = LeaseConfig {
            namespace: self.namespace.clone().unwrap_or_else(own_namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: self.lease_duration,
            grace: self.grace()?,
        };
        // A transient API error at start must not crash the process (a
        // CrashLoopBackOff on every API server hiccup): retry until it works
        // or the process is told to stop.
        let mut retry = crate::backoff::WatchBackoff::default();
        let (leadership, task) = loop {
            // kube-lease-manager retries a failing Lease read on its own,
            // silently and for ever: bound each attempt, so that every
            // failure is said in the log, and stop when told to.
            let attempt = tokio::time::timeout(
                START_TIMEOUT,
                lease::campaign(client.clone(), &config, shutdown),
            );
            let attempt = tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!("stopping before leader election started");
                    return no_lease(Leadership::never());
                }
                attempt = attempt => attempt,
            };
            let error = match attempt {
                Ok(Ok(started)) => break started,
                Ok(Err(e)) if lease::is_transient(&e) => e.to_string(),
                Ok(Err(e)) => return Err(anyhow::Error::new(e).context("starting leader election")),
                Err(_) => format!(
                    "no answer to reading Lease {}/{} within {START_TIMEOUT:?}",
                    config.namespace, config.name
                ),
            };
            let wait = retry.next().unwrap_or(crate::backoff::Policy::WATCH.max);
            tracing::warn!(%error, retry_in = ?wait, "could not start leader election; retrying");
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::info!("stopping before leader election started");
                    return no_lease(Leadership::never());
                }
                () = tokio::time::sleep(wait) => {}
            }
        };
        let ended = shutdown.clone();
        let (done, ended_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            match task.await {
                Ok(Ok(())) if ended.is_cancelled() => {
                    tracing::info!("left leader election (a Lease held is released)");
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "leader election ended"),
                Err(e) => tracing::error!(error = %e, "leader election task failed"),
            }
            ended.cancel();
            let _ = done.send(());
        });
        Ok((
            leadership,
            Campaign {
                ended: Some(ended_rx),
            },
        ))
    }
}

/// This pod's namespace: `POD_NAMESPACE` (downward API), else the service
/// account's, else `default`.
#[must_use]
pub fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// This replica's identity: `POD_NAME` (else the host name) and the process
/// id, so a restarted process never mistakes an old lease for its own.
#[must_use]
pub fn identity(component: &str) -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .map_or_else(
            || format!("{component}-{}", std::process::id()),
            |name| format!("{name}-{}", std::process::id()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(
            parse_duration("soon")
                .expect_err("not a duration")
                .contains("soon")
        );
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(
            parse_duration("100000000h").is_err(),
            "past Go's maximum duration"
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        leader: LeaderArgs,
    }

    fn leader(args: &[&str]) -> LeaderArgs {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("parse")
            .leader
    }

    #[test]
    fn leader_elect_alone_means_true_as_cert_managers_flag() {
        assert!(leader(&["--leader-elect"]).enabled);
        assert!(!leader(&["--leader-elect=false"]).enabled);
        assert!(!leader(&["--leader-elect", "false"]).enabled);
        assert!(leader(&[]).enabled);
    }

    #[test]
    fn cert_managers_renew_deadline_sets_the_grace() {
        let args = leader(&[
            "--leader-election-lease-duration=60s",
            "--leader-election-renew-deadline=40s",
        ]);
        assert_eq!(args.grace().expect("grace"), Duration::from_secs(20));
        assert_eq!(
            leader(&["--leader-election-renew-grace=7s"])
                .grace()
                .expect("grace"),
            Duration::from_secs(7)
        );
        let e = leader(&["--leader-election-renew-deadline=15s"])
            .grace()
            .expect_err("deadline = duration")
            .to_string();
        assert!(e.contains("must be shorter"), "{e}");
        assert!(grace_from_deadline(Duration::from_secs(10), Duration::from_secs(11)).is_err());
    }

    #[test]
    fn identity_carries_the_process_id() {
        assert!(identity("capstan-x").ends_with(&format!("-{}", std::process::id())));
    }
}
