//! An OCI image archive (`oci-archive:`): a tar of an [image layout]
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) holding one image, its
//! index → manifest → config → gzipped layers, each addressed by its
//! sha256 digest. What `skopeo copy oci-archive:...`, containerd's import
//! (`kind load image-archive`) and `docker load` read.
//!
//! The archive is reproducible: files, directories and JSON keys are
//! sorted, owners are root, and every timestamp is the image's creation
//! time, so the same binaries give the same digests.
//!
//! [image layout]: https://github.com/opencontainers/image-spec/blob/v1.1.1/image-layout.md

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;

use anyhow::{Context, Result};
use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, Config, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use serde_json::Value;

/// The annotation containerd's importer (`ctr images import`, which
/// `kind load image-archive` runs) names the image by.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One regular file of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Absolute path in the image, e.g. `/usr/local/bin/capstan-issuer`.
    pub path: String,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// One layer: its files and the history line that says what it is.
#[derive(Debug, Clone)]
pub struct Layer {
    /// What the layer holds, for the config's history.
    pub created_by: String,
    /// Its files; parent directories are added.
    pub files: Vec<File>,
}

/// An image to write as an archive.
#[derive(Debug, Clone)]
pub struct Image {
    /// Repository, e.g. `ghcr.io/capstan-dev/capstan-issuer`.
    pub repository: String,
    /// Tag, e.g. `0.1.0`.
    pub tag: String,
    /// CPU architecture in OCI terms (`amd64`, `arm64`).
    pub architecture: String,
    /// Creation time, seconds since the epoch; also every file's mtime.
    pub created: u64,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// `User`: numeric `uid:gid`.
    pub user: String,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// Labels of the config; also the manifest's annotations.
    pub labels: BTreeMap<String, String>,
}

impl Image {
    /// `repository:tag`.
    #[must_use]
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// A content-addressed blob.
struct Blob {
    digest: Sha256Digest,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Result<Self> {
        Ok(Self {
            digest: sha256(&bytes)?,
            bytes,
        })
    }

    fn descriptor(
        &self,
        media_type: MediaType,
        annotations: Option<HashMap<String, String>>,
    ) -> Result<Descriptor> {
        let size = u64::try_from(self.bytes.len()).context("blob size")?;
        let mut builder = DescriptorBuilder::default()
            .media_type(media_type)
            .size(size)
            .digest(self.digest.clone());
        if let Some(annotations) = annotations {
            builder = builder.annotations(annotations);
        }
        builder.build().context("building a descriptor")
    }
}

/// The sha256 digest of `bytes` (ring, capstan's one crypto provider).
fn sha256(bytes: &[u8]) -> Result<Sha256Digest> {
    let hex: String = ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex.parse().context("a sha256 digest")
}

/// `value` as JSON with every object's keys sorted (the spec's types keep
/// annotations and labels in `HashMap`s, whose order varies by run).
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    fn sort(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<String, Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(value)?))?)
}

/// A tar header for `path` owned by root, with `mtime`.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Appends a directory entry.
fn append_dir<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &str, mtime: u64) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .with_context(|| format!("adding directory {path}"))
}

/// Appends a regular file.
fn append_file<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    contents: &[u8],
    mtime: u64,
) -> Result<()> {
    let size = u64::try_from(contents.len()).context("file size")?;
    let mut h = header(tar::EntryType::Regular, mode, size, mtime);
    tar.append_data(&mut h, path, contents)
        .with_context(|| format!("adding {path}"))
}

/// A layer's uncompressed tar: every parent directory, then the files,
/// in path order, paths relative to the root (`usr/local/bin/x`).
fn layer_tar(files: &[File], mtime: u64) -> Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    let mut sorted: Vec<&File> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for file in &sorted {
        let relative = file.path.trim_start_matches('/');
        let mut parts: Vec<&str> = relative.split('/').collect();
        parts.pop();
        for depth in 1..=parts.len() {
            dirs.insert(parts[..depth].join("/"));
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for dir in &dirs {
        append_dir(&mut tar, dir, mtime)?;
    }
    for file in sorted {
        append_file(
            &mut tar,
            file.path.trim_start_matches('/'),
            file.mode,
            &file.contents,
            mtime,
        )?;
    }
    tar.into_inner().context("finishing a layer")
}

/// `bytes` gzipped (no name, mtime 0 in the gzip header: reproducible).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).context("compressing a layer")?;
    encoder.finish().context("compressing a layer")
}

/// RFC 3339 (UTC) of `seconds` since the epoch, as the config's `created`.
fn rfc3339(seconds: u64) -> Result<String> {
    let seconds = i64::try_from(seconds).context("timestamp")?;
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}

/// A written archive.
#[derive(Debug)]
pub struct Archive {
    /// The archive's bytes.
    pub bytes: Vec<u8>,
    /// The manifest's digest (`sha256:...`), the image's identity.
    pub manifest_digest: String,
}

/// The image as an archive.
///
/// # Errors
/// When a layer cannot be written or a spec type rejects a value.
pub fn archive(image: &Image) -> Result<Archive> {
    let created = rfc3339(image.created)?;
    let mut blobs = Vec::new();
    let mut layer_descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let mut history = Vec::new();
    for layer in &image.layers {
        let tar = layer_tar(&layer.files, image.created)?;
        diff_ids.push(Digest::from(sha256(&tar)?).to_string());
        let blob = Blob::new(gzip(&tar)?)?;
        layer_descriptors.push(blob.descriptor(MediaType::ImageLayerGzip, None)?);
        blobs.push(blob);
        history.push(
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(layer.created_by.clone())
                .build()
                .context("building a history entry")?,
        );
    }
    let labels: HashMap<String, String> = image.labels.clone().into_iter().collect();
    let mut config = Config::default();
    config.set_user(Some(image.user.clone()));
    config.set_entrypoint(Some(image.entrypoint.clone()));
    config.set_labels(Some(labels.clone()));
    let configuration = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(image.architecture.as_str()))
        .os(Os::Linux)
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .context("building the rootfs")?,
        )
        .history(history)
        .build()
        .context("building the image configuration")?;
    let config_blob = Blob::new(canonical_json(&configuration)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_blob.descriptor(MediaType::ImageConfig, None)?)
        .layers(layer_descriptors)
        .annotations(labels)
        .build()
        .context("building the manifest")?;
    let manifest_blob = Blob::new(canonical_json(&manifest)?)?;
    let names = HashMap::from([
        (ANNOTATION_REF_NAME.to_owned(), image.tag.clone()),
        (ANNOTATION_CONTAINERD_NAME.to_owned(), image.reference()),
    ]);
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![
            manifest_blob.descriptor(MediaType::ImageManifest, Some(names))?,
        ])
        .build()
        .context("building the index")?;
    let manifest_digest = Digest::from(manifest_blob.digest.clone()).to_string();
    blobs.push(config_blob);
    blobs.push(manifest_blob);
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .context("building oci-layout")?;

    let mut tar = tar::Builder::new(Vec::new());
    let mtime = image.created;
    append_file(
        &mut tar,
        "oci-layout",
        0o644,
        &canonical_json(&layout)?,
        mtime,
    )?;
    append_file(
        &mut tar,
        "index.json",
        0o644,
        &canonical_json(&index)?,
        mtime,
    )?;
    append_dir(&mut tar, "blobs", mtime)?;
    append_dir(&mut tar, "blobs/sha256", mtime)?;
    blobs.sort_by(|a, b| a.digest.digest().cmp(b.digest.digest()));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    for blob in &blobs {
        let path = format!("blobs/sha256/{}", blob.digest.digest());
        append_file(&mut tar, &path, 0o644, &blob.bytes, mtime)?;
    }
    Ok(Archive {
        bytes: tar.into_inner().context("finishing the archive")?,
        manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, u32, u64)> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_layer_has_its_parent_directories_first_and_root_owned_sorted_files() {
        let files = vec![
            File {
                path: "/usr/local/bin/b".into(),
                mode: 0o755,
                contents: b"b".to_vec(),
            },
            File {
                path: "/etc/passwd".into(),
                mode: 0o644,
                contents: b"p".to_vec(),
            },
        ];
        let tar = layer_tar(&files, 7).unwrap();
        assert_eq!(
            entries(&tar),
            [
                ("etc/".to_owned(), 0o755, 7),
                ("usr/".to_owned(), 0o755, 7),
                ("usr/local/".to_owned(), 0o755, 7),
                ("usr/local/bin/".to_owned(), 0o755, 7),
                ("etc/passwd".to_owned(), 0o644, 7),
                ("usr/local/bin/b".to_owned(), 0o755, 7),
            ]
        );
    }

    #[test]
    fn json_keys_are_sorted_so_digests_do_not_depend_on_hash_order() {
        let map: HashMap<String, u8> = (0..20).map(|i| (format!("k{i:02}"), i)).collect();
        let json = String::from_utf8(canonical_json(&map).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .match_indices("\"k")
            .map(|(i, _)| &json[i..i + 4])
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_827_696).unwrap(), "2000-02-29T12:34:56Z");
        assert_eq!(rfc3339(1_796_515_200).unwrap(), "2026-12-06T00:00:00Z");
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256(b"").unwrap().digest(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn the_same_image_gives_the_same_bytes() {
        let image = Image {
            repository: "example.com/x".into(),
            tag: "1.0.0".into(),
            architecture: "amd64".into(),
            created: 1,
            layers: vec![Layer {
                created_by: "test".into(),
                files: vec![File {
                    path: "/x".into(),
                    mode: 0o755,
                    contents: b"x".to_vec(),
                }],
            }],
            user: "65532:65532".into(),
            entrypoint: vec!["/x".into()],
            labels: (0..10)
                .map(|i| (format!("l{i}"), format!("v{i}")))
                .collect(),
        };
        let first = archive(&image).unwrap();
        assert_eq!(first.bytes, archive(&image).unwrap().bytes);
        assert!(first.manifest_digest.starts_with("sha256:"));
        let first = first.bytes;
        let names: Vec<String> = entries(&first).into_iter().map(|e| e.0).collect();
        assert_eq!(
            names[..4],
            ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]
        );
        assert_eq!(names.len(), 4 + 3, "one layer, a config and a manifest");
    }
}
