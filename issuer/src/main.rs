//! `capstan-issuer`: parse the arguments and hand over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    capstan_issuer::Args::parse().run()
}
