//! Command-line interface of `capstan-rotator`.

use capstan_common::telemetry::{self, LogArgs};

/// capstan's rotator: the rotator: pushes CA bundles into ConfigMaps and rolls the workloads that use rotated Secrets and ConfigMaps.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-rotator", version, about, long_about = None)]
pub struct Args {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// Runs the rotator.
    ///
    /// # Errors
    /// This build carries the command-line interface only; the controllers
    /// arrive with their own change, so running it reports that plainly
    /// instead of pretending to work.
    pub fn run(self) -> anyhow::Result<()> {
        telemetry::init(&self.log).map_err(anyhow::Error::msg)?;
        anyhow::bail!(
            "capstan-rotator {}: this build has no controllers yet; only --help and --version work",
            env!("CARGO_PKG_VERSION")
        )
    }
}
