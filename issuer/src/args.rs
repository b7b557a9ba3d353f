//! Command-line interface of `capstan-issuer`.

use capstan_common::telemetry::{self, LogArgs};

/// capstan's issuer: the cert-manager external issuer: signs CertificateRequests and CertificateSigningRequests with an in-cluster root CA.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-issuer", version, about, long_about = None)]
pub struct Args {
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Args {
    /// Runs the issuer.
    ///
    /// # Errors
    /// This build carries the command-line interface only; the controllers
    /// arrive with their own change, so running it reports that plainly
    /// instead of pretending to work.
    pub fn run(self) -> anyhow::Result<()> {
        telemetry::init(&self.log).map_err(anyhow::Error::msg)?;
        anyhow::bail!(
            "capstan-issuer {}: this build has no controllers yet; only --help and --version work",
            env!("CARGO_PKG_VERSION")
        )
    }
}
