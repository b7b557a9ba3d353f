//! `capstan-rotator`: install the crypto provider, parse the arguments, run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // ring is capstan's one crypto provider; install it before any TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    capstan_rotator::Args::parse().run()
}
