//! `kubectl-capstan`: parse the arguments, run, exit with the command's code.

use clap::Parser as _;

fn main() {
    // ring is capstan's one crypto provider; install it before any TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = kubectl_capstan::Cli::parse();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => match rt.block_on(kubectl_capstan::run::run(cli)) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: {error}");
                error.exit_code()
            }
        },
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            kubectl_capstan::error::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
