//! `capstan-test-apiserver`: the test Kubernetes API server as a process, for
//! running capstan's binaries by hand against it (`tests/binary.rs` checks
//! it, restarts with `--data-dir` included).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use capstan_testserver::{Faults, TestApiServer, UserInfo};
use clap::Parser;

/// Serves the test API server until SIGTERM or SIGINT.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig once the server is ready.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Persist objects, resourceVersions, tokens and the serving certificate here.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The admin token (random, or the persisted one, by default).
    #[arg(long, env = "CAPSTAN_TEST_APISERVER_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Extra tokens as `TOKEN=USER[:GROUP,GROUP...]`; repeatable.
    #[arg(long = "token", value_parser = parse_token)]
    tokens: Vec<(String, UserInfo)>,
    /// Milliseconds before a workload rollout is reported finished.
    #[arg(long, default_value_t = 1000)]
    rollout_delay_ms: u64,
    /// Milliseconds between watch BOOKMARK events.
    #[arg(long, default_value_t = 5000)]
    bookmark_interval_ms: u64,
    /// Events kept for watches resuming from a resourceVersion.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
    /// Initial faults as JSON (see `PUT /_test/faults`), e.g. `{"errorRate":0.1}`.
    #[arg(long)]
    faults: Option<String>,
}

fn parse_token(s: &str) -> Result<(String, UserInfo), String> {
    let (token, rest) = s
        .split_once('=')
        .ok_or("expected TOKEN=USER[:GROUP,GROUP...]")?;
    let (user, groups) = rest.split_once(':').unwrap_or((rest, ""));
    if token.is_empty() || user.is_empty() {
        return Err("token and user must not be empty".into());
    }
    let groups: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
    Ok((token.to_string(), UserInfo::new(user, &groups)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let faults: Faults = match &args.faults {
        Some(j) => serde_json::from_str(j).context("parsing --faults")?,
        None => Faults::default(),
    };
    let mut b = TestApiServer::builder()
        .listen(args.listen)
        .kubeconfig_path(&args.kubeconfig)
        .tokens(args.tokens.clone())
        .faults(faults)
        .rollout_delay(Duration::from_millis(args.rollout_delay_ms))
        .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms))
        .history_limit(args.history_limit);
    if let Some(d) = &args.data_dir {
        b = b.data_dir(d);
    }
    if let Some(t) = &args.admin_token {
        b = b.admin_token(t);
    }
    let server = b.start().await?;
    println!("listening on {}", server.url());
    println!(
        "kubeconfig written to {}",
        server.kubeconfig_path().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.stop().await;
    Ok(())
}
