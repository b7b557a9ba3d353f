//! Structured logging: text for people, JSON for log pipelines.
//!
//! The filter comes from `--log-level` (any `tracing` `EnvFilter` directive,
//! e.g. `info` or `info,capstan_issuer=debug`) or from cert-manager's
//! `-v` verbosity; `RUST_LOG`, when set, wins, as it does for every
//! `tracing` program.

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
    #[arg(
        long = "log-format",
        visible_alias = "logging-format",
        env = "CAPSTAN_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub format: LogFormat,
    /// Log verbosity as cert-manager (klog) counts it, for flags carried
    /// over from cert-manager: 0 to 2 log at `info`, 3 and 4 at `debug`, 5
    /// and more at `trace`. When given, it replaces `--log-level`.
    #[arg(short = 'v', long = "v", value_name = "VERBOSITY")]
    pub verbosity: Option<u8>,
}

impl LogArgs {
    /// The filter directives in force: `-v`'s level when given, else
    /// `--log-level`.
    #[must_use]
    pub fn directives(&self) -> &str {
        match self.verbosity {
            Some(verbosity) => verbosity_level(verbosity),
            None => &self.level,
        }
    }
}

/// The level of a klog verbosity as cert-manager uses them (its `logf`
/// levels: info at 2, extended info at 3, debug at 4, trace at 5; its
/// chart's default is 2).
#[must_use]
pub fn verbosity_level(verbosity: u8) -> &'static str {
    match verbosity {
        0..=2 => "info",
        3 | 4 => "debug",
        _ => "trace",
    }
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
    let filter = filter(args.directives())?;
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

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    fn parse(args: &[&str]) -> LogArgs {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("parse")
            .log
    }

    #[test]
    fn cert_managers_logging_format_is_log_format() {
        assert_eq!(
            format!("{:?}", parse(&["--logging-format=json"])),
            format!("{:?}", parse(&["--log-format=json"]))
        );
        assert_eq!(parse(&["--logging-format", "json"]).format, LogFormat::Json);
    }

    #[test]
    fn cert_managers_verbosity_picks_a_level() {
        assert_eq!(parse(&[]).directives(), "info");
        assert_eq!(parse(&["--log-level=warn"]).directives(), "warn");
        assert_eq!(parse(&["-v", "2"]).directives(), "info");
        assert_eq!(parse(&["-v4"]).directives(), "debug");
        assert_eq!(parse(&["--v=5"]).directives(), "trace");
        assert_eq!(
            parse(&["--log-level=warn", "-v", "3"]).directives(),
            "debug",
            "-v, when given, replaces --log-level"
        );
        assert_eq!(verbosity_level(0), "info");
        assert_eq!(verbosity_level(255), "trace");
    }

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
