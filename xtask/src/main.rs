//! Developer commands for capstan, run as `cargo xtask <command>`.
//!
//! * `ci` — exactly what CI runs (`.ci/run` calls it): installs the real tools
//!   the end-to-end tests drive (`scripts/install-tools`), then checks
//!   formatting, lints with warnings denied, the declared `rust-version`
//!   against the dependencies' ([`msrv`]), deny.toml's license, ban and
//!   source checks (cargo-deny), runs every test of the
//!   workspace, and fuzzes each cargo-fuzz target for a few seconds
//!   (`scripts/fuzz`). Run it before you push; a green `cargo xtask ci` is a
//!   green CI.
//! * `crds` — writes `crds/*.yaml` from the Rust API types. The crates' tests
//!   fail when the committed files differ from what this would write.
//! * `chart-files` — copies `crds/*.yaml` and the monitoring mixin's rule
//!   files (`docs/mixin/alerts.yaml`, `rules.yaml`) into the Helm chart's
//!   `files/`, from which it renders its CRDs and PrometheusRule. A test
//!   fails when the chart's copies are stale.
//! * `docs` — writes the reference pages under `docs/reference/` (CRD
//!   fields, flags and config keys, metrics) from the code.
//! * `control-plane build|up|down` — builds the real control plane the
//!   end-to-end suites run against (etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler, kwok) from their Go modules
//!   into a cache (`tests/controlplane/build`); `up [--kubeconfig PATH]`
//!   starts one on 127.0.0.1 and writes an admin kubeconfig, `down` stops it.
//! * `bench-peers [N]` — the peer benchmarks, on demand (not in CI): builds
//!   the control plane and the peers (`tests/controlplane/build-peers`:
//!   trust-manager), capstan's binaries in release mode, then runs
//!   `tests/src/bin/bench-peers.rs` in release mode, which compares capstan
//!   with cert-manager's CA issuer and trust-manager on one control plane.
//! * `drill` — the Prometheus drill (`tests/tests/prometheus_drill.rs`) on
//!   its own, printing what it sees: a real Prometheus scraping TLS and
//!   mTLS targets whose certificates capstan signs, through three root CA
//!   rotations; per target, scrapes attempted and failed, and per rotation
//!   the CA before and after.
//! * `image [--out DIR] [--profile PROFILE] [--no-build] [issuer|rotator]...`
//!   — builds the release binaries and packs each into an OCI image archive
//!   (`target/images/capstan-issuer.tar`, `capstan-rotator.tar`) named as
//!   the chart's default images, with no container engine: the binary and
//!   only the shared libraries it loads, run as a non-root user, no shell
//!   ([`image`]). `kind load image-archive` and `skopeo copy oci-archive:`
//!   read them.
//! * `check-generated` — renders all of the above again and fails, naming
//!   the command to run, when a committed file differs; this crate's test
//!   `every_generated_file_is_current` does the same in
//!   `cargo test --workspace`.
//!
//! Each command writes one [`Set`] through [`generated::write`], and the
//! check compares the same sets with what is committed, so writing and
//! checking cannot drift apart.

mod generated;
mod image;
mod msrv;
mod reference;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "ci" => ci(&workspace_root()?),
        "crds" => write(&workspace_root()?, Set::Crds),
        "chart-files" => write(&workspace_root()?, Set::ChartFiles),
        "docs" => write(&workspace_root()?, Set::Docs),
        "check-generated" => check_generated(&workspace_root()?),
        "control-plane" => control_plane(
            &workspace_root()?,
            &std::env::args().skip(2).collect::<Vec<_>>(),
        ),
        "drill" => drill(&workspace_root()?),
        "image" => image::run(
            &workspace_root()?,
            &std::env::args().skip(2).collect::<Vec<_>>(),
        ),
        "bench-peers" => bench_peers(
            &workspace_root()?,
            &std::env::args().skip(2).collect::<Vec<_>>(),
        ),
        "" | "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <command>\n\ncommands:\n  ci     install test tools, check fmt and clippy, run all tests\n  crds   regenerate crds/*.yaml from the Rust types\n  chart-files   copy crds/ and the mixin's rules into charts/capstan/files\n  docs   regenerate docs/reference/*.md from the code\n  check-generated   fail when crds/, the chart's files or docs/reference are stale\n  control-plane build   build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok into the cache\n  control-plane up [--kubeconfig PATH] [--no-workloads]   start a real control plane (Ctrl-C stops it)\n  control-plane down [--kubeconfig PATH]   stop the one `up` started\n  drill   run the Prometheus drill (three root CA rotations under a real Prometheus) and print what it sees\n  image [--out DIR] [--profile PROFILE] [--no-build] [issuer|rotator]...   build capstan's images as OCI archives (target/images/*.tar) without a container engine\n  bench-peers [N]   build the peers, then compare capstan with cert-manager's CA issuer (N Certificates, default 1000) and trust-manager on a real control plane"
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
    msrv::check(root)?;
    // deny.toml: licenses, banned crates (aws-lc, OpenSSL) and sources.
    let deny = root.join(".tools").join("bin").join("cargo-deny");
    run(
        root,
        deny.to_str().context("the workspace path is not UTF-8")?,
        &["check", "licenses", "bans", "sources"],
    )?;
    // The real control plane every end-to-end suite runs against, built
    // from the Go module proxy (cached: a warm machine rebuilds nothing).
    run(root, CONTROL_PLANE_BUILD, &[])?;
    run(root, "cargo", &["test", "--workspace"])?;
    // A short fuzz of every cargo-fuzz target (CSRs, bundles, CA key pairs,
    // durations); fuzz/README.md describes the long run.
    run(root, "scripts/fuzz", &[FUZZ_SECONDS])?;
    match std::env::var_os(REAL_CLUSTER_VAR) {
        Some(v) if !v.is_empty() => {
            eprintln!("==> the real-cluster e2e ran against the cluster {REAL_CLUSTER_VAR} names")
        }
        _ => eprintln!(
            "==> {REAL_CLUSTER_VAR} is not set: the real_cluster story ran on a control plane \
             of its own, not on an outside cluster; see docs/e2e-real-cluster.md"
        ),
    }
    Ok(())
}

/// The script that builds the control plane into its cache.
const CONTROL_PLANE_BUILD: &str = "tests/controlplane/build";

/// `cargo xtask control-plane build|up|down [...]`.
fn control_plane(root: &Path, args: &[String]) -> Result<()> {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("build") => run(root, CONTROL_PLANE_BUILD, &rest),
        Some(verb @ ("up" | "down")) => {
            if verb == "up" {
                run(root, CONTROL_PLANE_BUILD, &[])?;
            }
            let mut all = vec![
                "run",
                "--quiet",
                "-p",
                "capstan-tests",
                "--bin",
                "capstan-control-plane",
                "--",
                verb,
            ];
            all.extend(rest);
            run(root, "cargo", &all)
        }
        _ => bail!("usage: cargo xtask control-plane build|up|down [--kubeconfig PATH]"),
    }
}

/// The script that builds the peers of the peer benchmarks into the cache.
const PEERS_BUILD: &str = "tests/controlplane/build-peers";

/// `cargo xtask bench-peers [N]`: builds what the peer benchmarks run (the
/// control plane, the peers, capstan's release binaries), then runs them.
fn bench_peers(root: &Path, args: &[String]) -> Result<()> {
    run(root, CONTROL_PLANE_BUILD, &[])?;
    run(root, PEERS_BUILD, &[])?;
    run(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "capstan-issuer",
            "-p",
            "capstan-rotator",
        ],
    )?;
    let mut all = vec![
        "run",
        "--release",
        "-p",
        "capstan-tests",
        "--bin",
        "bench-peers",
        "--",
    ];
    all.extend(args.iter().map(String::as_str));
    run(root, "cargo", &all)
}

/// `cargo xtask drill`: the tools, the control plane and capstan's
/// binaries it needs, then the drill with its report on the terminal.
fn drill(root: &Path) -> Result<()> {
    run(root, "scripts/install-tools", &[])?;
    run(root, CONTROL_PLANE_BUILD, &[])?;
    run(
        root,
        "cargo",
        &["build", "-p", "capstan-issuer", "-p", "capstan-rotator"],
    )?;
    run(
        root,
        "cargo",
        &[
            "test",
            "-p",
            "capstan-tests",
            "--test",
            "prometheus_drill",
            "--",
            "--nocapture",
        ],
    )
}

/// Seconds each fuzz target runs in CI.
const FUZZ_SECONDS: &str = "5";

/// The variable naming a real cluster's kubeconfig for the e2e suite.
const REAL_CLUSTER_VAR: &str = "CAPSTAN_E2E_KUBECONFIG";

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

/// A group of generated files, written by one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// `crds/*.yaml`, from the Rust API types.
    Crds,
    /// `charts/capstan/files/`: copies of `crds/` and the mixin's rules.
    ChartFiles,
    /// `docs/reference/*.md`, from the code.
    Docs,
}

impl Set {
    const ALL: [Self; 3] = [Self::Crds, Self::ChartFiles, Self::Docs];

    /// The command that writes this set.
    fn command(self) -> &'static str {
        match self {
            Self::Crds => "cargo xtask crds",
            Self::ChartFiles => "cargo xtask chart-files",
            Self::Docs => "cargo xtask docs",
        }
    }

    /// The files of this set as they should be.
    fn files(self, root: &Path) -> Result<Vec<generated::Generated>> {
        match self {
            Self::Crds => crd_files(),
            Self::ChartFiles => chart_files(root),
            Self::Docs => reference::files(),
        }
    }
}

/// Writes one set of generated files.
fn write(root: &Path, set: Set) -> Result<()> {
    if set == Set::ChartFiles {
        // The chart renders every file in these directories: start empty so
        // that a removed CRD or rule file does not linger.
        for dir in ["crds", "mixin"] {
            let dir = root.join("charts/capstan/files").join(dir);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("clearing {}", dir.display()))?;
            }
        }
    }
    generated::write(root, &set.files(root)?)
}

/// What is stale, per set, with the command that fixes it.
fn stale_sets(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for set in Set::ALL {
        let stale = generated::stale(root, &set.files(root)?);
        if !stale.is_empty() {
            problems.push(format!(
                "stale or missing: {stale:?}; run `{}` and commit the result",
                set.command()
            ));
        }
    }
    Ok(problems)
}

fn check_generated(root: &Path) -> Result<()> {
    let problems = stale_sets(root)?;
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    eprintln!("crds/, charts/capstan/files and docs/reference are current");
    Ok(())
}

/// Every CRD capstan defines, as written into `crds/`.
fn crd_files() -> Result<Vec<generated::Generated>> {
    capstan_issuer::api::crds()
        .into_iter()
        .chain(capstan_rotator::api::crds())
        .map(|crd| {
            Ok(generated::Generated::new(
                Path::new("crds").join(capstan_common::crd::file_name(&crd)),
                capstan_common::crd::render(&crd)?,
            ))
        })
        .collect()
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

/// The chart's copies, with the content of their sources.
fn chart_files(root: &Path) -> Result<Vec<generated::Generated>> {
    chart_file_pairs(root)?
        .into_iter()
        .map(|(from, to)| {
            let contents = std::fs::read_to_string(&from)
                .with_context(|| format!("reading {}", from.display()))?;
            let to = to.strip_prefix(root).unwrap_or(&to).to_owned();
            Ok(generated::Generated::new(to, contents))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn chart_files_are_copied_and_leftovers_removed() {
        let root = tempfile::tempdir().expect("tmp");
        let root = root.path();
        for (path, text) in [
            (
                "crds/capstan.dev_x.yaml",
                "kind: CustomResourceDefinition\n",
            ),
            ("docs/mixin/alerts.yaml", "groups: []\n"),
            ("docs/mixin/rules.yaml", "groups: []\n"),
            ("charts/capstan/files/crds/capstan.dev_gone.yaml", "old\n"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let files = Set::ChartFiles.files(root).expect("files");
        assert!(!generated::stale(root, &files).is_empty());
        write(root, Set::ChartFiles).expect("write");
        assert!(generated::stale(root, &files).is_empty());
        let chart = root.join("charts/capstan/files");
        assert_eq!(
            std::fs::read_to_string(chart.join("crds/capstan.dev_x.yaml")).unwrap(),
            "kind: CustomResourceDefinition\n"
        );
        assert!(chart.join("mixin/rules.yaml").is_file());
        assert!(
            !chart.join("crds/capstan.dev_gone.yaml").exists(),
            "a copy whose source is gone is removed"
        );
    }

    /// `crds/`, the chart's `files/` and `docs/reference/` are generated; a
    /// change to their sources without regenerating them must fail here
    /// rather than ship stale files.
    #[test]
    fn every_generated_file_is_current() {
        let root = workspace_root().expect("workspace root");
        let problems = stale_sets(&root).expect("render the generated files");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
