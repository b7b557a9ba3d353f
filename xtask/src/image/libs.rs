//! What a dynamically linked binary needs at run time: its ELF `DT_NEEDED`
//! libraries, theirs in turn, and the dynamic loader (`PT_INTERP`), as this
//! machine's loader resolves them. `ldd` is glibc's loader run in trace
//! mode, so its answer is exactly the set of files the binary maps when it
//! starts; nothing else goes into the image.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The absolute paths of the shared objects `binary` loads (the loader
/// included), sorted; empty for a static binary.
///
/// # Errors
/// When `ldd` cannot run, or a library is not found on this machine.
pub fn needed(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian's libc-bin) to find the binary's shared libraries")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // ldd exits 1 for "not a dynamic executable", the static case.
    if !output.status.success() && !is_static(&stdout, &String::from_utf8_lossy(&output.stderr)) {
        bail!(
            "ldd {} failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_ldd(&stdout).with_context(|| format!("resolving the libraries of {}", binary.display()))
}

/// Whether ldd's output says the binary is statically linked.
fn is_static(stdout: &str, stderr: &str) -> bool {
    [stdout, stderr]
        .iter()
        .any(|s| s.contains("not a dynamic executable") || s.contains("statically linked"))
}

/// The files named in `ldd` output, one per line in one of three forms:
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` (a library),
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` (the loader), and
/// `linux-vdso.so.1 (0x...)` (the kernel's vDSO, not a file: skipped).
///
/// # Errors
/// When a library is `not found`, or a line is none of those forms.
fn parse_ldd(stdout: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    missing.push(name.trim().to_owned());
                    continue;
                }
                without_address(target)
            }
            None => without_address(line),
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        } else if !path.starts_with("linux-vdso") && !path.starts_with("linux-gate") {
            bail!("unexpected ldd line {line:?}");
        }
    }
    if !missing.is_empty() {
        bail!(
            "libraries not found on this machine: {}",
            missing.join(", ")
        );
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// `text` without ldd's trailing load address `(0x...)`.
fn without_address(text: &str) -> &str {
    match text.rfind(" (0x") {
        Some(at) => text[..at].trim(),
        None => text.trim(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const DEBIAN: &str = "\tlinux-vdso.so.1 (0x00007ffd3b5f1000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f6bc9cd3000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f6bc9bf3000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6bc761e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f6bc9d06000)
";

    #[test]
    fn libraries_and_the_loader_are_kept_and_the_vdso_skipped() {
        let paths = parse_ldd(DEBIAN).expect("parse");
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        let e = parse_ldd("\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
            .expect_err("missing")
            .to_string();
        assert!(e.contains("libfoo.so.1"), "{e}");
    }

    #[test]
    fn a_static_binary_needs_nothing() {
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        assert!(is_static("", "\tnot a dynamic executable\n"));
    }

    #[test]
    fn an_unknown_line_is_an_error_not_a_guess() {
        assert!(parse_ldd("\tsomething odd\n").is_err());
    }

    #[test]
    fn this_machine_resolves_its_own_test_binary() {
        let own = std::env::current_exe().expect("current exe");
        let paths = needed(&own).expect("ldd");
        assert!(
            paths
                .iter()
                .any(|p| p.to_string_lossy().contains("libc.so")),
            "{paths:?}"
        );
        assert!(paths.iter().all(|p| p.is_file()), "{paths:?}");
    }
}
