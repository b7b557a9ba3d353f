//! Secret hygiene: after an end-to-end run, no private key may appear
//! anywhere but in Secrets — not in a ConfigMap, an Event, a status, a log
//! line or a metric.
//!
//! [`assert_no_key_leaks`] collects every private key the cluster holds in
//! its Secrets (plus any the test made itself), then looks for them, and for
//! PEM private-key headers, in everything else a user can read: each kind
//! listed in [`SCANNED_KINDS`] (where the cluster serves it), the binaries'
//! logs, and their `/metrics`.

use base64::Engine as _;
use serde_json::Value;

use crate::harness::{Kubectl, RunningBinary};

/// Kinds read with `kubectl get -A -o json` and searched. Kinds the
/// cluster does not serve (CRDs not installed) are skipped.
pub const SCANNED_KINDS: &[&str] = &[
    "configmaps",
    "events",
    "certificaterequests.cert-manager.io",
    "certificatesigningrequests",
    "clustercaissuers.capstan.dev",
    "caissuers.capstan.dev",
    "cabundles.capstan.dev",
    "deployments",
    "statefulsets",
    "daemonsets",
    "leases",
];

/// Lines of a PEM key body long enough to be unmistakable (a full base64
/// line is 64 characters; short tail lines could match by chance).
const MIN_LINE: usize = 40;

/// What a scan looked at, for the test's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes of objects, logs and metrics searched.
    pub bytes: usize,
    /// Private keys searched for.
    pub keys: usize,
}

/// Private keys (PEM) found in the data of every Secret in the cluster.
///
/// # Errors
/// When the Secrets cannot be listed.
pub async fn secret_keys(kubectl: &Kubectl) -> anyhow::Result<Vec<String>> {
    let list: Value = serde_json::from_str(
        &kubectl
            .run_ok(&["get", "secrets", "-A", "-o", "json"])
            .await?,
    )?;
    let mut keys = Vec::new();
    for secret in list["items"].as_array().into_iter().flatten() {
        let Some(data) = secret["data"].as_object() else {
            continue;
        };
        for value in data.values() {
            let Some(decoded) = value
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            else {
                continue;
            };
            keys.extend(private_key_blocks(&String::from_utf8_lossy(&decoded)));
        }
    }
    Ok(keys)
}

/// Private keys (PEM) in the files of `dir`, e.g. the keys a test made
/// with openssl for its CSRs. Unreadable files are skipped.
#[must_use]
pub fn keys_in_dir(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|text| private_key_blocks(&text))
        .collect()
}

/// The PEM private-key blocks of `text`, without any certificates beside
/// them (a Secret or file may hold both; certificates are public).
#[must_use]
pub fn private_key_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY-----") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

/// Where `haystack` shows private-key material: a PEM private-key header, or
/// a body line (raw or base64 again) of one of `keys`. Pure; empty when clean.
#[must_use]
pub fn leaks(haystack: &str, keys: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(at) = haystack.find("PRIVATE KEY-----") {
        let start = at.saturating_sub(80);
        found.push(format!(
            "a PEM private key header: ...{}",
            haystack[start..at]
                .chars()
                .rev()
                .take(80)
                .collect::<String>()
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        for line in key
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && l.len() >= MIN_LINE)
        {
            let encoded = base64::engine::general_purpose::STANDARD.encode(line);
            if haystack.contains(line) || haystack.contains(&encoded) {
                found.push(format!("a line of private key #{i}"));
                break;
            }
        }
    }
    found
}

/// Scans the cluster's readable objects, the binaries' logs and their
/// `/metrics` for the private keys in the cluster's Secrets and `extra_keys`,
/// and fails the test on any leak.
///
/// # Panics
/// On a leak, naming where.
pub async fn assert_no_key_leaks(
    kubectl: &Kubectl,
    binaries: &[&RunningBinary],
    extra_keys: &[String],
) -> Scanned {
    let mut output = String::new();
    for binary in binaries {
        output.push_str(&binary.logs().join("\n"));
        if let Some(metrics) = binary.metrics_text().await {
            output.push_str(&metrics);
        }
    }
    assert_no_key_leaks_in(kubectl, output, extra_keys).await
}

/// [`assert_no_key_leaks`] for binaries that are gone: their `output`
/// (logs, metrics) is given as text.
///
/// # Panics
/// On a leak, naming where.
pub async fn assert_no_key_leaks_in(
    kubectl: &Kubectl,
    output: String,
    extra_keys: &[String],
) -> Scanned {
    let mut keys = secret_keys(kubectl)
        .await
        .expect("listing Secrets for the key scan");
    keys.extend(extra_keys.iter().cloned());
    let mut haystack = output;
    for kind in SCANNED_KINDS {
        if let Ok(out) = kubectl.run(&["get", kind, "-A", "-o", "json"]).await
            && out.success()
        {
            haystack.push_str(&out.stdout);
        }
    }
    let found = leaks(&haystack, &keys);
    assert!(
        found.is_empty(),
        "private-key material outside Secrets: {found:#?}"
    );
    Scanned {
        bytes: haystack.len(),
        keys: keys.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nshort\n-----END PRIVATE KEY-----\n";

    #[test]
    fn only_key_blocks_are_taken_from_mixed_pem() {
        let mixed = format!(
            "-----BEGIN CERTIFICATE-----\nMIIB{}\n-----END CERTIFICATE-----\n{KEY}",
            "c".repeat(60)
        );
        let blocks = private_key_blocks(&mixed);
        assert_eq!(blocks.len(), 1);
        assert!(!blocks[0].contains("CERTIFICATE") && blocks[0].contains("bbbb"));
    }

    #[test]
    fn clean_text_has_no_leaks() {
        assert!(leaks("a ConfigMap with a CERTIFICATE only", &[KEY.into()]).is_empty());
    }

    #[test]
    fn headers_lines_and_base64_lines_are_found() {
        assert_eq!(leaks("x -----BEGIN EC PRIVATE KEY----- y", &[]).len(), 1);
        let line = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        assert_eq!(leaks(&format!("log: {line}"), &[KEY.into()]).len(), 1);
        let encoded = base64::engine::general_purpose::STANDARD.encode(line);
        assert_eq!(leaks(&format!("data: {encoded}"), &[KEY.into()]).len(), 1);
        assert!(
            leaks("short", &[KEY.into()]).is_empty(),
            "short lines are not matched"
        );
    }
}
