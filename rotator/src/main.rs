//! `capstan-rotator`: parse the arguments and hand over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    capstan_rotator::Args::parse().run()
}
