//! Developer commands for capstan, run as `cargo xtask <command>`.
//!
//! * `ci` — exactly what CI runs (`.ci/run` calls it): installs the real tools
//!   the end-to-end tests drive (`scripts/install-tools`), then checks
//!   formatting, lints with warnings denied, and runs every test of the
//!   workspace. Run it before you push; a green `cargo xtask ci` is a green CI.
//! * `crds` — writes `crds/*.yaml` from the Rust API types. The crates' tests
//!   fail when the committed files differ from what this would write.
//! * `chart-files` — copies `crds/*.yaml` and the monitoring mixin's rule
//!   files (`docs/mixin/alerts.yaml`, `rules.yaml`) into the Helm chart's
//!   `files/`, from which it renders its CRDs and PrometheusRule. A test
//!   fails when the chart's copies are stale.
//! * `docs` — writes the reference pages under `docs/reference/` (CRD
//!   fields, flags and config keys, metrics) from the code. A test of this
//!   crate fails when the committed pages differ from what this would write;
//!   `docs --check` only reports which pages are stale.
//!
//! Every command writes through [`generated::write`], and the checks render
//! the files again and compare them with what is committed.

mod generated;
mod reference;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "ci" => ci(&workspace_root()?),
        "crds" => crds(&workspace_root()?),
        "chart-files" => chart_files(&workspace_root()?),
        "docs" => docs(
            &workspace_root()?,
            std::env::args().nth(2).as_deref() == Some("--check"),
        ),
        "" | "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <command>\n\ncommands:\n  ci     install test tools, check fmt and clippy, run all tests\n  crds   regenerate crds/*.yaml from the Rust types\n  chart-files   copy crds/ and the mixin's rules into charts/capstan/files\n  docs   regenerate docs/reference/*.md from the code (--check: only check)"
            );
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}; run `cargo xtask help`"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

/// The CI pipeline, step by step; the first failing step stops it.
fn ci(root: &Path) -> Result<()> {
    run(root, "scripts/install-tools", &[])?;
    run(root, "cargo", &["fmt", "--all", "--check"])?;
    run(
        root,
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run(root, "cargo", &["test", "--workspace"])?;
    Ok(())
}

/// Runs one step in `root`, echoing it first, and fails when it fails.
fn run(root: &Path, program: &str, args: &[&str]) -> Result<()> {
    eprintln!("==> {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Writes every CRD capstan defines into `crds/`.
fn crds(root: &Path) -> Result<()> {
    let files = capstan_issuer::api::crds()
        .into_iter()
        .chain(capstan_rotator::api::crds())
        .map(|crd| {
            Ok(generated::Generated::new(
                Path::new("crds").join(capstan_common::crd::file_name(&crd)),
                capstan_common::crd::render(&crd)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    generated::write(root, &files)
}

/// Writes the reference pages, or with `check` fails when any is stale.
fn docs(root: &Path, check: bool) -> Result<()> {
    let files = reference::files()?;
    if !check {
        return generated::write(root, &files);
    }
    let stale = generated::stale(root, &files);
    if !stale.is_empty() {
        bail!("stale or missing: {stale:?}; run `cargo xtask docs` and commit the result");
    }
    eprintln!("{} reference pages are current", files.len());
    Ok(())
}

/// The files the chart renders from, each with its source.
fn chart_file_pairs(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let chart = root.join("charts/capstan/files");
    let mut pairs = Vec::new();
    for entry in std::fs::read_dir(root.join("crds")).context("reading crds/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().context("file name")?.to_owned();
            pairs.push((path, chart.join("crds").join(name)));
        }
    }
    for name in ["alerts.yaml", "rules.yaml"] {
        pairs.push((
            root.join("docs/mixin").join(name),
            chart.join("mixin").join(name),
        ));
    }
    pairs.sort();
    Ok(pairs)
}

fn chart_files(root: &Path) -> Result<()> {
    for dir in ["crds", "mixin"] {
        let dir = root.join("charts/capstan/files").join(dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
    }
    let files = chart_file_pairs(root)?
        .into_iter()
        .map(|(from, to)| {
            let contents = std::fs::read_to_string(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let to = to.strip_prefix(root).unwrap_or(&to).to_owned();
            Ok(generated::Generated::new(to, contents))
        })
        .collect::<Result<Vec<_>>>()?;
    generated::write(root, &files)
}
