//! Rendering CustomResourceDefinitions generated from Rust types into the
//! committed YAML under `crds/` (written by `cargo xtask crds`, checked for
//! staleness by each crate's tests).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// First line of every generated CRD file.
pub const GENERATED_HEADER: &str =
    "# Generated from the Rust types by `cargo xtask crds`. Do not edit by hand.\n";

/// The file name a CRD is written to: `<group>_<plural>.yaml`, as
/// controller-gen names them.
#[must_use]
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// The YAML document for `crd`, with the generated-file header.
///
/// # Errors
/// When serialization fails (it does not for well-formed CRDs).
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_norway::Error> {
    Ok(format!(
        "{GENERATED_HEADER}{}",
        serde_norway::to_string(crd)?
    ))
}

/// The files under `dir` that differ from what `crds` render to (missing or
/// edited by hand); each crate's test asserts this is empty.
#[must_use]
pub fn stale(crds: &[CustomResourceDefinition], dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    crds.iter()
        .filter_map(|crd| {
            let path = dir.join(file_name(crd));
            let expected = render(crd).ok()?;
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            (committed != expected).then_some(path)
        })
        .collect()
}
