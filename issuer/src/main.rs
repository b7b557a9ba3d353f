//! `capstan-issuer`: install the crypto provider, parse the arguments and config file, run.

fn main() -> anyhow::Result<()> {
    // ring is capstan's one crypto provider; install it before any TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    capstan_common::config::parse::<capstan_issuer::Args>(capstan_issuer::CONFIG_KEYS).run()
}
