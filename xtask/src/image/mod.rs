//! `cargo xtask image`: capstan's container images as OCI image archives,
//! without a container engine.
//!
//! Each image is what the root `Dockerfile` builds, made from this
//! machine's build: the binary at `/usr/local/bin/<name>` (the entrypoint),
//! and only what it needs to start (its shared libraries and the dynamic
//! loader, see [`libs`]) plus `/etc/passwd` and `/etc/group` naming the
//! non-root user it runs as. No shell, no package manager. Names are the
//! chart's default repositories (`ghcr.io/capstan-dev/capstan-issuer`,
//! `...-rotator`), tagged with the workspace version, the chart's
//! `appVersion`, so `kind load image-archive` and a default `helm install`
//! meet without overrides.

mod libs;
pub mod oci;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Parser as _;

/// Where the chart's default images live (`values.yaml`'s
/// `issuer.image.repository` and `rotator.image.repository`).
pub const REGISTRY: &str = "ghcr.io/capstan-dev";

/// The workspace version: the images' tag and the chart's `appVersion`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The numeric user and group the images run as: distroless's `nonroot`,
/// and what the chart's `securityContext` asks for.
pub const USER_ID: u32 = 65_532;

/// Where the binary goes in the image.
const BIN_DIR: &str = "/usr/local/bin";

/// One of capstan's two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Component {
    /// `capstan-issuer`.
    Issuer,
    /// `capstan-rotator`.
    Rotator,
}

impl Component {
    /// Both, in order.
    pub const ALL: [Self; 2] = [Self::Issuer, Self::Rotator];

    /// The binary's name, also the image's.
    #[must_use]
    pub fn binary(self) -> &'static str {
        match self {
            Self::Issuer => "capstan-issuer",
            Self::Rotator => "capstan-rotator",
        }
    }

    /// The image repository, e.g. `ghcr.io/capstan-dev/capstan-issuer`.
    #[must_use]
    pub fn repository(self) -> String {
        format!("{REGISTRY}/{}", self.binary())
    }

    fn description(self) -> &'static str {
        match self {
            Self::Issuer => {
                "A cert-manager external issuer signing with an in-cluster root CA it loads or generates and rotates."
            }
            Self::Rotator => {
                "Pushes CA bundles into ConfigMaps and rolls workloads whose Secrets or ConfigMaps changed."
            }
        }
    }
}

/// `cargo xtask image`: builds capstan's images as OCI image archives
/// (no Docker daemon needed).
#[derive(Debug, clap::Parser)]
#[command(name = "cargo xtask image")]
struct Args {
    /// Directory to write `<image>.tar` into. Default: `target/images`
    /// (under `CARGO_TARGET_DIR` when it is set).
    #[arg(long)]
    out: Option<PathBuf>,

    /// Cargo profile of the binaries packed (`release`, or `dev` for a
    /// quick debug build).
    #[arg(long, default_value = "release")]
    profile: String,

    /// Pack the binaries already built for the profile instead of running
    /// `cargo build` first.
    #[arg(long)]
    no_build: bool,

    /// The images to build. Default: both.
    #[arg(value_enum)]
    components: Vec<Component>,
}

/// Runs `cargo xtask image ARGS`.
///
/// # Errors
/// When the build fails, a binary or one of its libraries is missing, or
/// an archive cannot be written.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let args = Args::try_parse_from(
        std::iter::once("cargo xtask image".to_owned()).chain(args.iter().cloned()),
    )?;
    let mut components = if args.components.is_empty() {
        Component::ALL.to_vec()
    } else {
        args.components.clone()
    };
    components.sort();
    components.dedup();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    if !args.no_build {
        let mut build = vec!["build", "--profile", args.profile.as_str()];
        for component in &components {
            build.extend(["-p", component.binary()]);
        }
        crate::run(root, "cargo", &build)?;
    }
    let profile_dir = if args.profile == "dev" {
        "debug"
    } else {
        args.profile.as_str()
    };
    let out = args.out.unwrap_or_else(|| target.join("images"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let provenance = Provenance::of(root);
    for component in components {
        let binary = target.join(profile_dir).join(component.binary());
        if !binary.is_file() {
            bail!(
                "{} not found; build it (cargo build --profile {} -p {}) or drop --no-build",
                binary.display(),
                args.profile,
                component.binary()
            );
        }
        let image = image(component, &binary, &provenance)?;
        let archive = oci::archive(&image)?;
        let path = out.join(format!("{}.tar", component.binary()));
        write_atomically(&path, &archive.bytes)?;
        eprintln!(
            "==> {}: {} ({}, {:.1} MiB)",
            path.display(),
            image.reference(),
            archive.manifest_digest,
            archive.bytes.len() as f64 / 1_048_576.0
        );
    }
    Ok(())
}

/// Where the images come from: the commit and its time.
struct Provenance {
    /// `git rev-parse HEAD`, when the tree is a git checkout.
    revision: Option<String>,
    /// `SOURCE_DATE_EPOCH`, else the commit's time, else the epoch: never
    /// the wall clock, so that the same commit gives the same digests.
    created: u64,
}

impl Provenance {
    fn of(root: &Path) -> Self {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        let created = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .or_else(|| git(&["log", "-1", "--format=%ct"]))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Self {
            revision: git(&["rev-parse", "HEAD"]),
            created,
        }
    }
}

/// The OCI architecture of the machine the binaries were built on.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image of `component` around `binary`.
fn image(component: Component, binary: &Path, provenance: &Provenance) -> Result<oci::Image> {
    let mut runtime = vec![
        oci::File {
            path: "/etc/passwd".into(),
            mode: 0o644,
            contents: format!(
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER_ID}:{USER_ID}:nonroot:/home/nonroot:/sbin/nologin\n"
            )
            .into_bytes(),
        },
        oci::File {
            path: "/etc/group".into(),
            mode: 0o644,
            contents: format!("root:x:0:\nnonroot:x:{USER_ID}:\n").into_bytes(),
        },
    ];
    let needed = libs::needed(binary)?;
    let mut sources = Vec::new();
    for library in &needed {
        let path = library
            .to_str()
            .with_context(|| format!("{} is not UTF-8", library.display()))?;
        runtime.push(oci::File {
            path: path.to_owned(),
            mode: 0o755,
            contents: std::fs::read(library)
                .with_context(|| format!("reading {}", library.display()))?,
        });
        sources.push(path.to_owned());
    }
    let name = component.binary();
    let entrypoint = format!("{BIN_DIR}/{name}");
    let layers = vec![
        oci::Layer {
            created_by: format!(
                "cargo xtask image: /etc/passwd, /etc/group and the shared libraries the binary loads ({})",
                if sources.is_empty() {
                    "none: static".to_owned()
                } else {
                    sources.join(", ")
                }
            ),
            files: runtime,
        },
        oci::Layer {
            created_by: format!("cargo xtask image: {entrypoint}"),
            files: vec![oci::File {
                path: entrypoint.clone(),
                mode: 0o755,
                contents: std::fs::read(binary)
                    .with_context(|| format!("reading {}", binary.display()))?,
            }],
        },
    ];
    let mut labels = BTreeMap::from([
        ("org.opencontainers.image.title".to_owned(), name.to_owned()),
        (
            "org.opencontainers.image.description".to_owned(),
            component.description().to_owned(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            VERSION.to_owned(),
        ),
        (
            "org.opencontainers.image.source".to_owned(),
            env!("CARGO_PKG_REPOSITORY").to_owned(),
        ),
        (
            "org.opencontainers.image.licenses".to_owned(),
            env!("CARGO_PKG_LICENSE").to_owned(),
        ),
    ]);
    if let Some(revision) = &provenance.revision {
        labels.insert(
            "org.opencontainers.image.revision".to_owned(),
            revision.clone(),
        );
    }
    Ok(oci::Image {
        repository: component.repository(),
        tag: VERSION.to_owned(),
        architecture: architecture().to_owned(),
        created: provenance.created,
        layers,
        user: format!("{USER_ID}:{USER_ID}"),
        entrypoint: vec![entrypoint],
        labels,
    })
}

/// Writes `bytes` to `path` through a temporary file beside it, so a
/// reader never sees half an archive.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("tar.partial");
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The images `cargo xtask image` names are the ones a default install
    /// of the chart pulls: same repositories, tag = the chart's appVersion.
    #[test]
    fn image_names_are_the_charts_defaults() {
        let root = crate::workspace_root().unwrap();
        let values = std::fs::read_to_string(root.join("charts/capstan/values.yaml")).unwrap();
        for component in Component::ALL {
            let line = format!("repository: {}", component.repository());
            assert!(values.contains(&line), "values.yaml lacks {line:?}");
        }
        let chart = std::fs::read_to_string(root.join("charts/capstan/Chart.yaml")).unwrap();
        assert!(
            chart.contains(&format!("appVersion: \"{VERSION}\"")),
            "Chart.yaml's appVersion is not the workspace version {VERSION}"
        );
    }

    /// The root `Dockerfile` builds the same images for those with a
    /// container engine: same toolchain, version, user, entrypoints and
    /// descriptions, so that the two cannot drift apart.
    #[test]
    fn the_dockerfile_builds_the_same_images() {
        let root = crate::workspace_root().unwrap();
        let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
        let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
        let channel = toolchain
            .lines()
            .find_map(|l| l.strip_prefix("channel = "))
            .unwrap()
            .trim_matches('"');
        let mut expected = vec![
            format!("ARG RUST_VERSION={channel}\n"),
            format!("ARG VERSION={VERSION}\n"),
            format!("USER {USER_ID}:{USER_ID}\n"),
        ];
        for component in Component::ALL {
            let name = component.binary();
            let stage = name.trim_start_matches("capstan-");
            expected.push(format!("FROM runtime AS {stage}\n"));
            expected.push(format!("ENTRYPOINT [\"{BIN_DIR}/{name}\"]\n"));
            expected.push(format!(
                "org.opencontainers.image.description=\"{}\"",
                component.description()
            ));
        }
        for line in expected {
            assert!(dockerfile.contains(&line), "the Dockerfile lacks {line:?}");
        }
    }

    #[test]
    fn the_image_runs_the_binary_as_non_root_with_oci_labels() {
        let own = std::env::current_exe().unwrap();
        let provenance = Provenance {
            revision: Some("abc".into()),
            created: 5,
        };
        let image = image(Component::Rotator, &own, &provenance).unwrap();
        assert_eq!(
            image.reference(),
            format!("ghcr.io/capstan-dev/capstan-rotator:{VERSION}")
        );
        assert_eq!(image.user, "65532:65532");
        assert_eq!(image.entrypoint, ["/usr/local/bin/capstan-rotator"]);
        assert_eq!(image.labels["org.opencontainers.image.revision"], "abc");
        assert_eq!(
            image.labels["org.opencontainers.image.licenses"],
            "Apache-2.0"
        );
        let paths: Vec<&str> = image
            .layers
            .iter()
            .flat_map(|l| l.files.iter().map(|f| f.path.as_str()))
            .collect();
        assert!(!paths.iter().any(|p| p.ends_with("/sh")), "{paths:?}");
        assert!(paths.contains(&"/usr/local/bin/capstan-rotator"));
    }
}
