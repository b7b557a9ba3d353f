//! The thin layer: build a client from the kubeconfig, read what a command
//! needs, hand it to the pure modules, print, and return the exit code.
//!
//! * [`issuer`] — `status` and `rotate`;
//! * [`objects`] — a Secret's or ConfigMap's data, and `inspect`;
//! * [`targets`] — `check`.

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::{Cli, Command, KubeFlags};
use crate::error::{Error, Result};

mod issuer;
mod objects;
mod targets;

/// Runs the command; returns the exit code.
///
/// # Errors
/// Whatever stops the command: unreadable kubeconfig, API errors, objects
/// not found, a refused rotation, a timeout.
pub async fn run(cli: Cli) -> Result<i32> {
    use issuer::{rotate_cmd, status_cmd};
    use objects::inspect_cmd;
    use targets::check_cmd;
    let (client, namespace) = connect(&cli.kube).await?;
    let format = cli.output;
    match cli.command {
        Command::Status { issuer } => status_cmd(&client, &namespace, &issuer, format).await,
        Command::Rotate {
            issuer,
            no_wait,
            timeout,
        } => rotate_cmd(&client, &namespace, &issuer, no_wait, timeout, format).await,
        Command::Inspect { kind, name, bundle } => {
            inspect_cmd(&client, &namespace, kind, &name, bundle.as_deref(), format).await
        }
        Command::Check {
            all_namespaces,
            cluster_resource_namespace,
        } => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            check_cmd(
                &client,
                scope,
                cluster_resource_namespace.as_deref(),
                format,
            )
            .await
        }
    }
}

/// A client and the namespace to use, from kube-rs's kubeconfig loading
/// with kubectl's context selection; in a pod without a kubeconfig, the
/// service account.
async fn connect(flags: &KubeFlags) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(e) if flags.context.is_some() => return Err(Error::Kubeconfig(e.to_string())),
            Err(e) => kube::Config::incluster()
                .map_err(|_| Error::Kubeconfig(format!("{e} (and not running in a pod either)")))?,
        },
    };
    let namespace = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((client, namespace))
}

fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
