//! The command line: kubectl's flags (`-n`, `-A`, `--context`,
//! `--kubeconfig`, `-o`) and the four commands.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::output::Format;

/// `kubectl capstan`: status, rotation, certificates and sync of capstan's
/// issuers, bundles and restarts.
#[derive(Debug, Parser)]
#[command(name = "kubectl-capstan", bin_name = "kubectl capstan", version)]
pub struct Cli {
    /// Cluster access, as kubectl takes it.
    #[command(flatten)]
    pub kube: KubeFlags,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    pub output: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's cluster-access flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// An issuer's Ready condition, rotation phase, every CA of its bundle
    /// (fingerprint, notAfter, role), the next rotation, when a retired CA
    /// leaves, and its last Events.
    Status {
        /// `clustercaissuer/NAME`, `caissuer/NAME` (with -n), or NAME (the
        /// ClusterCAIssuer first, then the CAIssuer in the namespace).
        issuer: String,
    },
    /// Rotate a self-managed CA now (sets `capstan.dev/rotate` to a new
    /// value) and follow the rotation until the new CA signs.
    Rotate {
        /// The issuer, as for `status`.
        issuer: String,
        /// Set the annotation and return at once.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the new CA to sign (Go duration: 90s, 10m);
        /// exit code 4 when it runs out.
        #[arg(long, default_value = "15m", value_parser = duration)]
        timeout: Duration,
    },
    /// The certificates of a Secret or ConfigMap: subject, SANs, issuer,
    /// validity, SHA-256, and which CA's signature verifies which.
    /// Private keys are never shown.
    Inspect {
        /// `secret` or `configmap`.
        #[arg(value_enum)]
        kind: ObjectKind,
        /// Its name, in the namespace.
        name: String,
        /// Also try the CAs of this object as issuers (`configmap/NAME` or
        /// `secret/NAME`, same namespace), e.g. the bundle a client trusts.
        #[arg(long)]
        bundle: Option<String>,
    },
    /// Every CA injection target (annotated ConfigMaps, CABundle targets)
    /// and restart-annotated workload (capstan's and Reloader's
    /// annotations): in sync, or why not. Exit code 3 when any is not.
    Check {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Where ClusterCAIssuers keep their CA Secrets (the issuer's and
        /// rotator's --cluster-resource-namespace).
        #[arg(long, env = "CAPSTAN_CLUSTER_RESOURCE_NAMESPACE")]
        cluster_resource_namespace: Option<String>,
    },
}

/// What `inspect` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A Secret.
    #[value(alias = "secrets")]
    Secret,
    /// A ConfigMap.
    #[value(alias = "configmaps", alias = "cm")]
    Configmap,
}

fn duration(text: &str) -> Result<Duration, String> {
    capstan_pki::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-capstan",
            "status",
            "ca",
            "-n",
            "apps",
            "--context",
            "kind",
            "-o",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.kube.namespace.as_deref(), Some("apps"));
        assert_eq!(cli.kube.context.as_deref(), Some("kind"));
        assert_eq!(cli.output, Format::Json);
        let cli = Cli::try_parse_from(["kubectl-capstan", "rotate", "ca", "--timeout", "90s"])
            .expect("parses");
        let Command::Rotate {
            timeout, no_wait, ..
        } = cli.command
        else {
            panic!("rotate")
        };
        assert_eq!((timeout, no_wait), (Duration::from_secs(90), false));
        assert!(
            Cli::try_parse_from(["kubectl-capstan", "rotate", "ca", "--timeout", "soon"]).is_err()
        );
        let cli = Cli::try_parse_from(["kubectl-capstan", "inspect", "cm", "x"]).expect("alias");
        assert!(matches!(
            cli.command,
            Command::Inspect {
                kind: ObjectKind::Configmap,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["kubectl-capstan", "check", "-A"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::Check {
                all_namespaces: true,
                ..
            }
        ));
    }
}
