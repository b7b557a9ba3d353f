//! `docs/reference/flags.md`: every flag of `capstan-issuer` and
//! `capstan-rotator`, read from their clap commands, with the config-file
//! key of each (from `COMMON_KEYS` and each binary's `CONFIG_KEYS`).

use anyhow::{Result, bail};
use clap::{ArgAction, CommandFactory};

use super::markdown::{cell, code, table};

/// One binary's flags and config keys.
struct Binary {
    command: clap::Command,
    /// Config keys and their flags: the common ones, then the binary's.
    keys: Vec<(&'static str, &'static str)>,
}

impl Binary {
    fn new<T: CommandFactory>(keys: Vec<(&'static str, &'static str)>) -> Self {
        let mut command = T::command();
        command.build();
        Self { command, keys }
    }
}

/// [`capstan_common::config::COMMON_KEYS`] followed by a binary's own keys,
/// as the binaries combine them.
fn with_common(own: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    capstan_common::config::COMMON_KEYS
        .iter()
        .chain(own)
        .copied()
        .collect()
}

/// The page for both binaries.
///
/// # Errors
/// When a config key names a flag its binary does not have: the file would
/// be rejected at run time, so the reference must not document it.
pub fn render() -> Result<String> {
    let binaries = [
        Binary::new::<capstan_issuer::Args>(with_common(capstan_issuer::CONFIG_KEYS)),
        Binary::new::<capstan_rotator::Args>(with_common(capstan_rotator::CONFIG_KEYS)),
    ];
    let mut out = super::header(
        "the binaries' clap commands (`capstan_issuer::Args`, `capstan_rotator::Args`) and \
         config-key tables (`COMMON_KEYS`, `CONFIG_KEYS`)",
    );
    out.push_str("\n# Flags, environment variables and config-file keys\n\n");
    out.push_str(
        "Every setting of both binaries can be given three ways: a flag, an environment \
         variable, or a key of the YAML file named by `--config`. A flag wins over the \
         environment, which wins over the file, which wins over the default. Nested keys \
         are written as YAML mappings: `metricsTLSConfig.filesystem.certFile: /tls/tls.crt` \
         is\n\n```yaml\nmetricsTLSConfig:\n  filesystem:\n    certFile: /tls/tls.crt\n```\n\n\
         and list values (comma-separated on the command line) may be YAML lists. An \
         unknown key is an error that names the file and lists the known keys.\n\n\
         Where cert-manager's controller names the same setting differently, its flag is \
         accepted too (listed as an alias), so flags carry over from a cert-manager \
         deployment: `--logging-format`, `--internal-healthz-listen-address`, \
         `--metrics-tls-min-version`, `--metrics-tls-cipher-suites` (the last two, as every \
         custom TLS setting, with `--tls-security-profile Custom`; other profiles refuse \
         them with an error). Its `-v` verbosity and \
         `--leader-election-renew-deadline` are flags of their own that translate into \
         capstan's settings, as their descriptions say; `--leader-elect` alone means true, \
         as in cert-manager.\n\n",
    );
    for binary in &binaries {
        let name = binary.command.get_name();
        out.push_str(&format!("* [{name}](#{name})\n"));
    }
    out.push('\n');
    for binary in &binaries {
        out.push_str(&render_binary(binary)?);
    }
    Ok(out.trim_end().to_owned() + "\n")
}

fn render_binary(binary: &Binary) -> Result<String> {
    let command = &binary.command;
    let name = command.get_name();
    for (key, flag) in &binary.keys {
        if !command.get_arguments().any(|a| a.get_long() == Some(flag)) {
            bail!("{name}: config key {key:?} names flag --{flag}, which {name} does not have");
        }
    }
    let mut out = format!("## {name}\n\n");
    if let Some(about) = command.get_about() {
        out.push_str(&format!("{}\n\n", cell(&about.to_string())));
    }
    let rows: Vec<Vec<String>> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
            let mut flag = match arg.get_value_names() {
                Some(names) if takes_value => {
                    let values: Vec<String> = names.iter().map(|n| format!("<{n}>")).collect();
                    code(&format!("--{long} {}", values.join(" ")))
                }
                _ => code(&format!("--{long}")),
            };
            if let Some(short) = arg.get_short() {
                flag = format!("`-{short}`, {flag}");
            }
            // cert-manager's spellings of the same setting.
            for alias in arg.get_visible_aliases().unwrap_or_default() {
                flag.push_str(&format!(", alias {}", code(&format!("--{alias}"))));
            }
            let env = arg
                .get_env()
                .map(|e| code(&e.to_string_lossy()))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if defaults.is_empty() {
                String::new()
            } else {
                code(&defaults.join(","))
            };
            let key = binary
                .keys
                .iter()
                .find(|(_, f)| *f == long)
                .map(|(k, _)| code(k))
                .unwrap_or_default();
            let mut help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            // clap drops the full stop of a one-sentence doc comment.
            if !help.is_empty() && !help.ends_with(['.', ')', '!', '?']) {
                help.push('.');
            }
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| format!("`{}`", v.get_name()))
                .collect();
            if takes_value
                && !possible.is_empty()
                && !matches!(arg.get_action(), ArgAction::SetTrue)
            {
                help.push_str(&format!(" One of {}.", possible.join(", ")));
            }
            Some(vec![flag, env, default, key, cell(&help)])
        })
        .collect();
    out.push_str(&table(
        &[
            "Flag",
            "Environment",
            "Default",
            "Config key",
            "Description",
        ],
        &rows,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo")]
    struct Demo {
        /// A name.
        #[arg(long, env = "DEMO_NAME", default_value = "a")]
        name: String,
        /// Quiet.
        #[arg(long)]
        quiet: bool,
        /// Output format.
        #[arg(long, visible_alias = "output-format", default_value = "text")]
        format: String,
    }

    #[test]
    fn each_flag_has_its_environment_default_and_key() {
        let page = render_binary(&Binary::new::<Demo>(vec![("nameKey", "name")])).expect("render");
        assert!(
            page.contains("| `--name <NAME>` | `DEMO_NAME` | `a` | `nameKey` | A name. |"),
            "{page}"
        );
        assert!(
            page.contains("| `--quiet` |  | `false` |  | Quiet. |"),
            "{page}"
        );
        assert!(
            page.contains(
                "| `--format <FORMAT>`, alias `--output-format` |  | `text` |  | Output format. |"
            ),
            "{page}"
        );
    }

    #[test]
    fn a_config_key_for_a_missing_flag_is_an_error() {
        let binary = Binary::new::<Demo>(vec![("typo", "nmae")]);
        let e = render_binary(&binary)
            .expect_err("no such flag")
            .to_string();
        assert!(e.contains("--nmae"), "{e}");
    }
}
