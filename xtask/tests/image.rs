//! `cargo xtask image`, end to end: packs the debug binaries (the same code
//! path as the release default, only the profile differs), then reads each
//! archive back as a registry client would — index → manifest → config →
//! layers, every digest and size checked — unpacks the layers into a root
//! file system and runs the binary from it, and asks Debian's `skopeo`
//! (`scripts/install-tools`) what it sees.
//!
//! Needs `cargo build -p capstan-issuer -p capstan-rotator` first, as the
//! end-to-end suites do. Runs the binary under `chroot` as its image user
//! when the test runs as root (as in CI); otherwise through the image's own
//! dynamic loader with the image's libraries only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cargo xtask image --profile dev --no-build --out OUT ARGS`.
fn xtask_image(out: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["image", "--profile", "dev", "--no-build", "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo xtask image failed (build the binaries first: cargo build -p capstan-issuer -p capstan-rotator):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// The archive's files by path.
fn unpack(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(archive).unwrap();
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(file).entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(path, bytes);
    }
    files
}

/// The blob a descriptor points at, its digest and size checked.
fn blob<'a>(
    files: &'a BTreeMap<String, Vec<u8>>,
    descriptor: &oci_spec::image::Descriptor,
    seen: &mut Vec<String>,
) -> &'a [u8] {
    let digest = descriptor.digest().to_string();
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = format!("blobs/sha256/{hex}");
    let bytes = files
        .get(&path)
        .unwrap_or_else(|| panic!("{path} is missing"));
    assert_eq!(
        sha256(bytes),
        digest,
        "{path}: content does not match its digest"
    );
    assert_eq!(
        descriptor.size(),
        u64::try_from(bytes.len()).unwrap(),
        "{path}: size"
    );
    seen.push(path);
    bytes
}

/// What the archive of `binary` holds, checked against the spec and the
/// promises of `cargo xtask image`; returns the root file system's layers
/// (uncompressed tars, bottom first) and the manifest digest.
fn check_layout(archive: &Path, binary: &str, revision: &str) -> (Vec<Vec<u8>>, String) {
    let files = unpack(archive);
    let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index = ImageIndex::from_reader(&files["index.json"][..]).unwrap();
    assert_eq!(index.schema_version(), 2);
    assert_eq!(index.manifests().len(), 1, "one image per archive");
    let entry = &index.manifests()[0];
    assert_eq!(entry.media_type(), &MediaType::ImageManifest);
    let names = entry.annotations().as_ref().expect("the image's names");
    let reference = format!("ghcr.io/capstan-dev/{binary}:{VERSION}");
    assert_eq!(names["io.containerd.image.name"], reference);
    assert_eq!(names["org.opencontainers.image.ref.name"], VERSION);

    let mut seen = Vec::new();
    let manifest = ImageManifest::from_reader(blob(&files, entry, &mut seen)).unwrap();
    assert_eq!(manifest.schema_version(), 2);
    assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
    let config =
        ImageConfiguration::from_reader(blob(&files, manifest.config(), &mut seen)).unwrap();
    assert_eq!(config.os().to_string(), "linux");
    let process = config.config().as_ref().expect("a process config");
    assert_eq!(process.user().as_deref(), Some("65532:65532"), "non-root");
    assert_eq!(
        process.entrypoint().as_deref(),
        Some(&[format!("/usr/local/bin/{binary}")][..])
    );
    let labels = process.labels().as_ref().expect("labels");
    for (key, value) in [
        ("org.opencontainers.image.title", binary),
        ("org.opencontainers.image.version", VERSION),
        (
            "org.opencontainers.image.source",
            "https://github.com/capstan-dev/capstan",
        ),
        ("org.opencontainers.image.licenses", "Apache-2.0"),
        ("org.opencontainers.image.revision", revision),
    ] {
        assert_eq!(
            labels.get(key).map(String::as_str),
            Some(value),
            "label {key}"
        );
    }
    assert_eq!(
        manifest.annotations().as_ref(),
        Some(labels),
        "annotations = labels"
    );

    let diff_ids = config.rootfs().diff_ids();
    assert_eq!(
        diff_ids.len(),
        manifest.layers().len(),
        "a diff_id per layer"
    );
    assert_eq!(
        config.history().as_ref().map(Vec::len),
        Some(diff_ids.len()),
        "a history line per layer"
    );
    let mut layers = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        assert_eq!(layer.media_type(), &MediaType::ImageLayerGzip);
        let gz = blob(&files, layer, &mut seen);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(&sha256(&tar), diff_id, "diff_id of {}", layer.digest());
        layers.push(tar);
    }
    seen.sort();
    let blobs: Vec<&String> = files.keys().filter(|k| k.starts_with("blobs/")).collect();
    assert_eq!(
        blobs,
        seen.iter().collect::<Vec<_>>(),
        "every blob is referenced"
    );
    (layers, entry.digest().to_string())
}

/// Unpacks `layers` in order into `root`; returns every file's path.
fn root_fs(layers: &[Vec<u8>], root: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    for layer in layers {
        let mut archive = tar::Archive::new(&layer[..]);
        archive.set_preserve_permissions(true);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().uid().unwrap(), 0, "root-owned");
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if !entry.header().entry_type().is_dir() {
                paths.push(format!("/{path}"));
            }
            assert!(
                entry.unpack_in(root).unwrap(),
                "{path} stays inside the root"
            );
        }
    }
    paths.sort();
    paths
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Runs the image's entrypoint with `arg` from the unpacked root `root`.
fn run_in(root: &Path, paths: &[String], binary: &str, arg: &str) -> String {
    let entrypoint = format!("/usr/local/bin/{binary}");
    let output = if is_root() {
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(root)
            .args([&entrypoint, arg])
            // Rust looks the program up on the child's PATH once the
            // environment is changed.
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .output()
            .unwrap()
    } else {
        let loader = paths
            .iter()
            .find(|p| p.contains("/ld-linux"))
            .expect("the image has a dynamic loader");
        let dirs: Vec<String> = paths
            .iter()
            .filter(|p| p.contains(".so"))
            .filter_map(|p| Path::new(p).parent())
            .map(|d| {
                root.join(d.strip_prefix("/").unwrap())
                    .display()
                    .to_string()
            })
            .collect();
        Command::new(root.join(loader.trim_start_matches('/')))
            .arg("--inhibit-cache")
            .arg("--library-path")
            .arg(dirs.join(":"))
            .arg(root.join(entrypoint.trim_start_matches('/')))
            .arg(arg)
            .env_clear()
            .output()
            .unwrap()
    };
    assert!(
        output.status.success(),
        "{binary} {arg} from the image failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn skopeo(args: &[&str]) -> serde_json::Value {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (Debian's; scripts/install-tools installs it)");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn images_are_valid_oci_archives_that_run_their_binary_without_a_shell() {
    let out = tempfile::tempdir().unwrap();
    xtask_image(out.path(), &[]);
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    let revision = String::from_utf8(revision.stdout)
        .unwrap()
        .trim()
        .to_owned();

    for binary in ["capstan-issuer", "capstan-rotator"] {
        let archive = out.path().join(format!("{binary}.tar"));
        let (layers, manifest_digest) = check_layout(&archive, binary, &revision);

        let root = tempfile::tempdir().unwrap();
        let paths = root_fs(&layers, root.path());
        let entrypoint = format!("/usr/local/bin/{binary}");
        assert!(paths.contains(&entrypoint), "{paths:?}");
        for path in &paths {
            let name = path.rsplit('/').next().unwrap();
            assert!(
                !["sh", "bash", "dash", "busybox", "ash"].contains(&name),
                "a shell in the image: {path}"
            );
            assert!(
                path == &entrypoint || path.starts_with("/etc/") || name.contains(".so"),
                "only the binary, its libraries and /etc/passwd, /etc/group: {path}"
            );
        }
        let version = run_in(root.path(), &paths, binary, "--version");
        assert_eq!(version.trim(), format!("{binary} {VERSION}"));
        let help = run_in(root.path(), &paths, binary, "--help");
        assert!(help.contains("--leader-elect"), "{help}");

        // A real client of the format agrees.
        let target = format!("oci-archive:{}", archive.display());
        let inspect = skopeo(&["inspect", &target]);
        assert_eq!(inspect["Digest"], manifest_digest.as_str());
        assert_eq!(inspect["Os"], "linux");
        assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], binary);
        assert_eq!(
            inspect["Layers"].as_array().map(Vec::len),
            Some(layers.len())
        );
        let config = skopeo(&["inspect", "--config", &target]);
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!([entrypoint])
        );
    }

    // Reproducible: the same binaries give the same bytes.
    let again = tempfile::tempdir().unwrap();
    xtask_image(again.path(), &["issuer"]);
    assert_eq!(
        std::fs::read(again.path().join("capstan-issuer.tar")).unwrap(),
        std::fs::read(out.path().join("capstan-issuer.tar")).unwrap(),
        "a second build of the same binary differs"
    );
    assert!(
        !again.path().join("capstan-rotator.tar").exists(),
        "only the image asked for"
    );
}
