//! The declared minimum Rust version against the dependency tree: no
//! locked dependency may need a newer Rust than the workspace's
//! `rust-version` promises.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A Rust version as `major.minor[.patch]`, compared numerically.
fn parse(version: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = version.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| (2..=3).contains(&p.len()))
}

/// The packages of `cargo metadata` output whose `rust_version` is newer
/// than `declared`, as `name version (rust-version)`.
pub fn newer_than(declared: &str, metadata: &serde_json::Value) -> Result<Vec<String>> {
    let floor = parse(declared).with_context(|| format!("rust-version {declared:?}"))?;
    let mut newer = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        let Some(wanted) = package["rust_version"].as_str() else {
            continue;
        };
        let needs = parse(wanted).with_context(|| format!("rust-version {wanted:?}"))?;
        let padded = |mut v: Vec<u64>| {
            v.resize(3, 0);
            v
        };
        if padded(needs) > padded(floor.clone()) {
            newer.push(format!(
                "{} {} (rust-version {wanted})",
                package["name"].as_str().unwrap_or("?"),
                package["version"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(newer)
}

/// Fails, naming them, when locked dependencies need a newer Rust than the
/// workspace's `rust-version`.
pub fn check(root: &Path) -> Result<()> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("could not run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let declared = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .context("Cargo.toml declares no rust-version")?;
    let newer = newer_than(declared, &metadata)?;
    if !newer.is_empty() {
        bail!(
            "these need a newer Rust than the declared rust-version {declared}: {}",
            newer.join(", ")
        );
    }
    eprintln!("==> every dependency builds with the declared rust-version {declared}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_packages_that_need_a_newer_rust() {
        let metadata = serde_json::json!({"packages": [
            {"name": "old", "version": "1.0.0", "rust_version": "1.70"},
            {"name": "same", "version": "2.0.0", "rust_version": "1.89.0"},
            {"name": "none", "version": "0.1.0", "rust_version": null},
            {"name": "new", "version": "3.0.0", "rust_version": "1.90"},
        ]});
        assert_eq!(
            newer_than("1.89", &metadata).ok(),
            Some(vec!["new 3.0.0 (rust-version 1.90)".to_owned()])
        );
        assert!(newer_than("one", &metadata).is_err());
    }
}
