//! The kubeconfig file written for clients (kubectl, kube-rs, the binaries
//! under test).

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

/// The kubeconfig YAML for a server URL, its CA and a bearer token.
pub fn render(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: capstan-test
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: capstan-test-admin
  user:
    token: {token}
contexts:
- name: capstan-test
  context:
    cluster: capstan-test
    user: capstan-test-admin
    namespace: default
current-context: capstan-test
preferences: {{}}
"
    )
}

/// Writes the kubeconfig atomically (readers never see half a file).
pub fn write(path: &Path, server_url: &str, ca_pem: &str, token: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(server_url, ca_pem, token))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
