//! `capstan-control-plane`: the real control plane the end-to-end suites use
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok with
//! a fake node), started by hand so kubectl and capstan's binaries can be
//! pointed at it. Run through `cargo xtask control-plane up|down`.

use std::path::PathBuf;

use anyhow::Context as _;
use capstan_tests::controlplane::ControlPlane;
use clap::{Parser, Subcommand};

/// Starts or stops a real control plane on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start it, write an admin kubeconfig, and serve until Ctrl-C, SIGTERM
    /// or `down`.
    Up {
        /// Where to write the admin kubeconfig.
        #[arg(long, default_value = "control-plane.kubeconfig")]
        kubeconfig: PathBuf,
        /// Leave out the scheduler and kwok (no pod ever runs).
        #[arg(long)]
        no_workloads: bool,
    },
    /// Stop the control plane that `up` started with this kubeconfig.
    Down {
        /// The kubeconfig `up` wrote.
        #[arg(long, default_value = "control-plane.kubeconfig")]
        kubeconfig: PathBuf,
    },
}

fn pid_file(kubeconfig: &std::path::Path) -> PathBuf {
    kubeconfig.with_extension("pid")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Up {
            kubeconfig,
            no_workloads,
        } => up(kubeconfig, !no_workloads).await,
        Cmd::Down { kubeconfig } => down(&kubeconfig),
    }
}

async fn up(kubeconfig: PathBuf, workloads: bool) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!(
        "control-plane: starting (binaries from {})",
        capstan_tests::controlplane::bin_dir().display()
    );
    let start = std::time::Instant::now();
    let starting = ControlPlane::builder().workloads(workloads).start();
    let mut cp = tokio::select! {
        cp = starting => cp?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted while starting"),
        _ = term.recv() => anyhow::bail!("terminated while starting"),
    };
    std::fs::copy(cp.kubeconfig_path(), &kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    std::fs::write(pid_file(&kubeconfig), std::process::id().to_string())?;
    let dir = cp.keep_dir();
    println!(
        "control-plane: ready in {:.1} s at {}\n  kubeconfig: {}\n  logs and audit log: {}\n  try: kubectl --kubeconfig {} get nodes\n  stop: Ctrl-C, or cargo xtask control-plane down --kubeconfig {}",
        start.elapsed().as_secs_f64(),
        cp.url(),
        kubeconfig.display(),
        dir.display(),
        kubeconfig.display(),
        kubeconfig.display(),
    );
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("control-plane: stopping");
    tokio::task::spawn_blocking(move || cp.stop()).await?;
    let _ = std::fs::remove_file(pid_file(&kubeconfig));
    eprintln!("control-plane: stopped (logs kept in {})", dir.display());
    Ok(())
}

fn down(kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let pid_path = pid_file(kubeconfig);
    let pid = std::fs::read_to_string(&pid_path).with_context(|| {
        format!(
            "no control plane started with {} ({} is missing)",
            kubeconfig.display(),
            pid_path.display()
        )
    })?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {} failed", pid.trim());
    eprintln!("control-plane: asked process {} to stop", pid.trim());
    Ok(())
}
