//! Structured logging: text for people, JSON for log pipelines.
//!
//! The filter comes from `--log-level` (any `tracing` `EnvFilter` directive,
//! e.g. `info` or `info,capstan_issuer=debug`); `RUST_LOG`, when set, wins,
//! as it does for every `tracing` program.

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// Logging flags shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// `tracing` directives such as `info,capstan_issuer=debug`.
    #[arg(long = "log-level", env = "CAPSTAN_LOG_LEVEL", default_value = "info")]
    pub level: String,
    /// Log line format.
    #[arg(long = "log-format", env = "CAPSTAN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub format: LogFormat,
}

/// Builds the filter: `RUST_LOG` when set, else `level`.
///
/// # Errors
/// When the directives do not parse; the message names the bad directive.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| format!("invalid RUST_LOG {env:?}: {e}"))
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}")),
    }
}

/// Installs the global subscriber. Call once, first thing in `main`'s run.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = filter(&args.level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("could not install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_formats_case_insensitively() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn rejects_bad_filter_directives() {
        // SAFETY of the test: RUST_LOG is not set by the test runner.
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(filter("info,capstan=debug").is_ok());
            let err = filter("info,[=").expect_err("bad directive must fail");
            assert!(err.contains("--log-level"), "{err}");
        }
    }
}
