//! Developer commands for capstan, run as `cargo xtask <command>`.
//!
//! * `ci` — exactly what CI runs (`.ci/run` calls it): installs the real tools
//!   the end-to-end tests drive (`scripts/install-tools`), then checks
//!   formatting, lints with warnings denied, and runs every test of the
//!   workspace. Run it before you push; a green `cargo xtask ci` is a green CI.
//! * `crds` — writes `crds/*.yaml` from the Rust API types. The crates' tests
//!   fail when the committed files differ from what this would write.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "ci" => ci(&workspace_root()?),
        "crds" => crds(&workspace_root()?),
        "" | "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <command>\n\ncommands:\n  ci     install test tools, check fmt and clippy, run all tests\n  crds   regenerate crds/*.yaml from the Rust types"
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
    let dir = root.join("crds");
    std::fs::create_dir_all(&dir)?;
    let all = capstan_issuer::api::crds()
        .into_iter()
        .chain(capstan_rotator::api::crds());
    for crd in all {
        let path = dir.join(capstan_common::crd::file_name(&crd));
        std::fs::write(&path, capstan_common::crd::render(&crd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
