//! The config file: YAML with the same settings as the flags, under
//! camelCase keys (`metricsTLSConfig.filesystem.certFile` is
//! `--metrics-tls-cert-file`). Precedence: flags, then environment, then the
//! file, then defaults.
//!
//! The file is applied through clap itself: each key becomes its flag,
//! placed before the real command line, and only for settings the command
//! line and environment left at their defaults, so values are checked by
//! the same parsers as flags and nothing can drift between the two.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches};

/// The `--config` flag; flatten it into a binary's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// YAML config file with the same settings as the flags (camelCase keys,
    /// e.g. `metricsTLSConfig.filesystem.certFile`); flags and environment win.
    #[arg(long = "config", env = "CAPSTAN_CONFIG")]
    pub path: Option<PathBuf>,
}

/// Config keys both binaries accept, each with the flag it stands for.
pub const COMMON_KEYS: &[(&str, &str)] = &[
    ("logLevel", "log-level"),
    ("logFormat", "log-format"),
    ("kubeconfig", "kubeconfig"),
    ("leaderElection.enabled", "leader-elect"),
    ("leaderElection.namespace", "leader-election-namespace"),
    (
        "leaderElection.leaseDuration",
        "leader-election-lease-duration",
    ),
    ("leaderElection.renewGrace", "leader-election-renew-grace"),
    ("metricsListenAddress", "metrics-listen-address"),
    ("healthListenAddress", "health-listen-address"),
    (
        "metricsTLSConfig.filesystem.certFile",
        "metrics-tls-cert-file",
    ),
    (
        "metricsTLSConfig.filesystem.keyFile",
        "metrics-tls-private-key-file",
    ),
    (
        "metricsTLSConfig.dynamic.secretNamespace",
        "metrics-dynamic-serving-ca-secret-namespace",
    ),
    (
        "metricsTLSConfig.dynamic.secretName",
        "metrics-dynamic-serving-ca-secret-name",
    ),
    (
        "metricsTLSConfig.dynamic.dnsNames",
        "metrics-dynamic-serving-dns-names",
    ),
    (
        "metricsTLSConfig.dynamic.leafDuration",
        "metrics-dynamic-serving-leaf-duration",
    ),
    ("tlsSecurityProfile.type", "tls-security-profile"),
    ("tlsSecurityProfile.custom.minTLSVersion", "tls-min-version"),
    ("tlsSecurityProfile.custom.ciphers", "tls-cipher-suites"),
    ("metricsAuth.tokenReview", "metrics-auth-token-review"),
    ("metricsAuth.clientCAFile", "metrics-client-ca-file"),
    (
        "metricsAuth.clientAllowedNames",
        "metrics-client-allowed-names",
    ),
    ("metricsAuth.tokenAudiences", "metrics-auth-token-audiences"),
];

fn config_error(path: &Path, problem: impl std::fmt::Display) -> clap::Error {
    clap::Error::raw(
        ErrorKind::InvalidValue,
        format!("config file {}: {problem}\n", path.display()),
    )
}

/// Flattens a YAML document into dotted keys and scalar-or-list values.
fn flatten(
    prefix: &str,
    value: serde_norway::Value,
    out: &mut BTreeMap<String, serde_norway::Value>,
) -> Result<(), String> {
    match value {
        serde_norway::Value::Mapping(map) => {
            for (k, v) in map {
                let serde_norway::Value::String(k) = k else {
                    return Err(format!("a key under {prefix:?} is not a string"));
                };
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
            Ok(())
        }
        serde_norway::Value::Null => Ok(()),
        other => {
            out.insert(prefix.to_owned(), other);
            Ok(())
        }
    }
}

fn scalar(key: &str, value: &serde_norway::Value) -> Result<String, String> {
    match value {
        serde_norway::Value::String(s) => Ok(s.clone()),
        serde_norway::Value::Bool(b) => Ok(b.to_string()),
        serde_norway::Value::Number(n) => Ok(n.to_string()),
        serde_norway::Value::Sequence(items) => items
            .iter()
            .map(|item| match item {
                serde_norway::Value::Sequence(_) | serde_norway::Value::Mapping(_) => {
                    Err(format!("{key}: list items must be plain values"))
                }
                other => scalar(key, other),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        _ => Err(format!("{key}: unsupported value")),
    }
}

/// Turns the file's settings into flags for the settings the command line
/// and environment did not set.
fn flags_from_file(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    path: &Path,
    keys: &[(&str, &str)],
) -> Result<Vec<OsString>, clap::Error> {
    let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
    let document: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| config_error(path, format!("not YAML: {e}")))?;
    let mut values = BTreeMap::new();
    flatten("", document, &mut values).map_err(|e| config_error(path, e))?;
    let mut flags = Vec::new();
    for (key, value) in values {
        let Some((_, flag)) = keys.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            return Err(config_error(
                path,
                format!("unknown key {key:?}; known keys: {}", known.join(", ")),
            ));
        };
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_long() == Some(*flag))
        else {
            return Err(config_error(
                path,
                format!("key {key:?} has no flag {flag:?}"),
            ));
        };
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let text = scalar(&key, &value).map_err(|e| config_error(path, e))?;
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match text.as_str() {
                "true" => flags.push(OsString::from(format!("--{flag}"))),
                "false" => {}
                other => {
                    return Err(config_error(
                        path,
                        format!("{key}: expected true or false, got {other:?}"),
                    ));
                }
            }
        } else {
            flags.push(OsString::from(format!("--{flag}={text}")));
        }
    }
    Ok(flags)
}

/// Parses `argv` into `T`, applying the `--config` file (when given) under
/// the command line and environment. `keys` maps config keys to flags (the
/// binary's own plus [`COMMON_KEYS`]).
///
/// # Errors
/// clap's errors (including `--help`), an unreadable or non-YAML file, an
/// unknown key, or a value its flag does not accept, named with the file.
pub fn try_parse_from<T, I>(argv: I, keys: &[(&str, &str)]) -> Result<T, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let command = T::command();
    let matches = command.clone().try_get_matches_from(&argv)?;
    let Some(path) = matches.get_one::<PathBuf>("path").cloned() else {
        return T::from_arg_matches(&matches);
    };
    let flags = flags_from_file(&command, &matches, &path, keys)?;
    let mut combined = Vec::with_capacity(argv.len() + flags.len());
    combined.extend(argv.first().cloned());
    combined.extend(flags);
    combined.extend(argv.into_iter().skip(1));
    let matches = command
        .args_override_self(true)
        .try_get_matches_from(combined)
        .map_err(|e| config_error(&path, e.to_string().trim_start_matches("error: ")))?;
    T::from_arg_matches(&matches)
}

/// [`try_parse_from`] on the process's arguments with [`COMMON_KEYS`] and
/// `keys`; prints the error (or help) and exits on failure, as clap does.
#[must_use]
pub fn parse<T: CommandFactory + FromArgMatches>(keys: &[(&str, &str)]) -> T {
    let all: Vec<(&str, &str)> = COMMON_KEYS.iter().chain(keys).copied().collect();
    try_parse_from(std::env::args_os(), &all).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long, env = "CAPSTAN_CONFIG_TEST_LEVEL", default_value = "info")]
        level: String,
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        #[arg(long)]
        dry_run: bool,
    }

    const KEYS: &[(&str, &str)] = &[
        ("name", "name"),
        ("nested.level", "level"),
        ("list", "names"),
        ("dryRun", "dry-run"),
    ];

    fn file(yaml: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(yaml.as_bytes()).expect("write");
        f
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        try_parse_from(argv, KEYS)
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_unset() {
        let f = file("name: b\nnested:\n  level: debug\nlist: [p, q]\ndryRun: true\n");
        let path = f.path().to_str().expect("utf8");
        let cli = parse(&["--config", path]).expect("parse");
        assert_eq!(cli.name, "b");
        assert_eq!(cli.level, "debug");
        assert_eq!(cli.names, vec!["p", "q"]);
        assert!(cli.dry_run);
        let cli = parse(&["--config", path, "--name=c"]).expect("parse");
        assert_eq!(cli.name, "c", "flags win over the file");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let f = file("nmae: b\n");
        let e = parse(&["--config", f.path().to_str().expect("utf8")])
            .expect_err("typo")
            .to_string();
        assert!(e.contains("unknown key \"nmae\""), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        let f = file("dryRun: maybe\n");
        let e = parse(&["--config", f.path().to_str().expect("utf8")])
            .expect_err("bool")
            .to_string();
        assert!(e.contains("dryRun"), "{e}");
        let e = parse(&["--config", "/nonexistent/capstan.yaml"])
            .expect_err("missing")
            .to_string();
        assert!(e.contains("/nonexistent/capstan.yaml"), "{e}");
    }

    #[test]
    fn without_a_file_flags_parse_as_usual() {
        let cli = parse(&["--name=z"]).expect("parse");
        assert_eq!(cli.name, "z");
        assert_eq!(cli.level, "info");
    }
}
