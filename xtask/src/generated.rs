//! Files generated from the code and committed: rendered in memory, written
//! by an xtask command, and checked by a test that renders them again and
//! compares — the same render-then-compare that guards `crds/`
//! ([`capstan_common::crd::stale`]) — so a code change without
//! regenerating fails `cargo test --workspace` instead of shipping stale
//! files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One generated file: where it goes (relative to the workspace root) and
/// what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Path relative to the workspace root, e.g. `docs/reference/crds.md`.
    pub path: PathBuf,
    /// The whole file.
    pub contents: String,
}

impl Generated {
    /// A file at `path` (relative to the workspace root) holding `contents`.
    pub fn new(path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            contents: contents.into(),
        }
    }
}

/// Writes every file under `root`, creating directories as needed, and
/// says which it wrote.
///
/// # Errors
/// When a directory or file cannot be written.
pub fn write(root: &Path, files: &[Generated]) -> Result<()> {
    for file in files {
        let path = root.join(&file.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The files under `root` that differ from what they should hold (missing
/// or edited by hand), relative to `root`; a test asserts this is empty.
#[must_use]
pub fn stale(root: &Path, files: &[Generated]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|file| {
            std::fs::read_to_string(root.join(&file.path))
                .ok()
                .as_deref()
                != Some(file.contents.as_str())
        })
        .map(|file| file.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn written_files_are_current_and_edits_make_them_stale() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = vec![
            Generated::new("a/one.md", "one\n"),
            Generated::new("two.md", "two\n"),
        ];
        assert_eq!(
            stale(dir.path(), &files),
            vec![PathBuf::from("a/one.md"), PathBuf::from("two.md")],
            "missing files are stale"
        );
        write(dir.path(), &files).expect("write");
        assert!(stale(dir.path(), &files).is_empty());
        std::fs::write(dir.path().join("two.md"), "edited\n").expect("edit");
        assert_eq!(stale(dir.path(), &files), vec![PathBuf::from("two.md")]);
    }
}
