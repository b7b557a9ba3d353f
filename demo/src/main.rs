//! `capstan-demo`: capstan end to end with no cluster.
//!
//! Starts the test Kubernetes API server in this process, installs the
//! cert-manager and capstan CRDs, runs the real issuer and rotator (their
//! library code, in this process, against the server over HTTPS), and walks
//! through issuing a certificate, injecting a CA bundle, rotating the CA
//! and the rollouts that follow, printing what a user would check.
//!
//! ```sh
//! cargo run --release --bin capstan-demo            # runs until Ctrl-C
//! cargo run --release --bin capstan-demo -- --exit  # stops after the story
//! ```

mod progress;
mod story;
mod table;

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context as _;
use clap::Parser as _;

/// capstan end to end on an embedded Kubernetes API server.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-demo", version, about)]
struct Args {
    /// Stop once the story is told instead of running until Ctrl-C.
    #[arg(long)]
    exit: bool,

    /// Where to write the kubeconfig and the components' log.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("capstan-demo"))]
    dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    // ring is capstan's one crypto provider; install it before any TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let log = std::fs::File::create(args.dir.join("capstan.log"))
        .context("creating the components' log")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(Mutex::new(log))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(story::run(story::Options {
            dir: args.dir,
            exit: args.exit,
        }))
}
