//! The Helm chart's values profiles (`charts/capstan/ci/*-values.yaml`, the
//! chart-testing convention), the checks each profile's rendered manifests
//! must pass, and a parent chart that has capstan as a dependency, for the
//! suites in `tests/chart.rs`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_norway::{Mapping, Value};

use crate::harness::{helm_path, workspace_root};

/// The chart's directory, `charts/capstan`.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/capstan")
}

/// One values profile: `ci/<name>-values.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The file name without `-values.yaml`, e.g. `openshift`.
    pub name: String,
    /// The values file.
    pub values: PathBuf,
}

impl Profile {
    /// The profile's values, parsed (an empty mapping for `{}`).
    pub fn parsed(&self) -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(&self.values)
            .with_context(|| format!("reading {}", self.values.display()))?;
        let value: Value = serde_norway::from_str(&text)
            .with_context(|| format!("parsing {}", self.values.display()))?;
        Ok(if value.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            value
        })
    }
}

/// Every profile in `charts/capstan/ci`, sorted by name.
pub fn profiles() -> anyhow::Result<Vec<Profile>> {
    let dir = chart_dir().join("ci");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(name) = file.strip_suffix("-values.yaml") {
            out.push(Profile {
                name: name.to_owned(),
                values: path.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Runs helm; returns (success, stdout and stderr).
pub fn helm(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = std::process::Command::new(helm_path()?)
        .args(args)
        .output()
        .context("running helm")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

/// The non-empty YAML documents of a rendered manifest stream.
pub fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("parsing rendered YAML")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `kind/name` of an object, for messages.
pub fn object_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The pod template of a workload object (Deployment, StatefulSet,
/// DaemonSet, Job) or the spec of a Pod; `None` for other kinds.
fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "Pod" => Some(&doc["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&doc["spec"]["template"]["spec"])
        }
        _ => None,
    }
}

/// Why OpenShift's `restricted-v2` SecurityContextConstraints would refuse
/// (or rewrite) the pods the manifests make, one line per finding; empty
/// when they fit. The SCC assigns the UID, primary group and fsGroup from
/// the namespace's range, so a pod that fixes any of them is refused unless
/// the value happens to fall in that range: fixing one is a finding. It also
/// wants non-root, the RuntimeDefault seccomp profile, no privilege
/// escalation, every capability dropped (none added but NET_BIND_SERVICE),
/// no privileged containers, no host namespaces, ports or paths.
pub fn restricted_scc_findings(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        let Some(pod) = pod_spec(doc) else { continue };
        let name = object_name(doc);
        let pod_sc = &pod["securityContext"];
        for field in ["runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"] {
            if pod_sc.get(field).is_some() {
                out.push(format!("{name}: pod securityContext.{field} is fixed"));
            }
        }
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            if pod[field].as_bool() == Some(true) {
                out.push(format!("{name}: {field}"));
            }
        }
        for volume in pod["volumes"].as_sequence().into_iter().flatten() {
            if volume.get("hostPath").is_some() {
                out.push(format!("{name}: hostPath volume {:?}", volume["name"]));
            }
        }
        let containers = pod["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(pod["initContainers"].as_sequence().into_iter().flatten());
        for container in containers {
            let cname = format!(
                "{name} container {}",
                container["name"].as_str().unwrap_or("?")
            );
            let sc = &container["securityContext"];
            for field in ["runAsUser", "runAsGroup"] {
                if sc.get(field).is_some() {
                    out.push(format!("{cname}: securityContext.{field} is fixed"));
                }
            }
            let non_root = sc["runAsNonRoot"]
                .as_bool()
                .or_else(|| pod_sc["runAsNonRoot"].as_bool());
            if non_root != Some(true) {
                out.push(format!("{cname}: runAsNonRoot is not true"));
            }
            let seccomp = sc["seccompProfile"]["type"]
                .as_str()
                .or_else(|| pod_sc["seccompProfile"]["type"].as_str());
            if seccomp != Some("RuntimeDefault") {
                out.push(format!(
                    "{cname}: seccompProfile is {seccomp:?}, not RuntimeDefault"
                ));
            }
            if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                out.push(format!("{cname}: allowPrivilegeEscalation is not false"));
            }
            if sc["privileged"].as_bool() == Some(true) {
                out.push(format!("{cname}: privileged"));
            }
            let drops_all = sc["capabilities"]["drop"]
                .as_sequence()
                .is_some_and(|d| d.iter().any(|c| c == "ALL"));
            if !drops_all {
                out.push(format!("{cname}: capabilities.drop lacks ALL"));
            }
            for added in sc["capabilities"]["add"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                if added != "NET_BIND_SERVICE" {
                    out.push(format!("{cname}: adds capability {added:?}"));
                }
            }
            for port in container["ports"].as_sequence().into_iter().flatten() {
                if port.get("hostPort").is_some() {
                    out.push(format!("{cname}: hostPort {:?}", port["hostPort"]));
                }
            }
        }
    }
    out
}

/// Every place that fixes a `runAsUser` (pod or container), as
/// `kind/name`; empty when none does.
pub fn run_as_user_anywhere(docs: &[Value]) -> Vec<String> {
    fn walk(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) => {
                for (key, child) in map {
                    let key = key.as_str().unwrap_or("?");
                    if key == "runAsUser" {
                        out.push(format!("{path}.{key}"));
                    }
                    walk(child, &format!("{path}.{key}"), out);
                }
            }
            Value::Sequence(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for doc in docs {
        walk(doc, &object_name(doc), &mut out);
    }
    out
}

/// Objects (and pod templates) that lack one of `labels` with its value,
/// as `kind/name: key`; empty when every one carries them all.
pub fn missing_labels(docs: &[Value], labels: &Mapping) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        let name = object_name(doc);
        let mut carriers = vec![(name.clone(), &doc["metadata"]["labels"])];
        if pod_spec(doc).is_some() && doc["kind"] != "Pod" {
            carriers.push((
                format!("{name} pod template"),
                &doc["spec"]["template"]["metadata"]["labels"],
            ));
        }
        for (carrier, have) in carriers {
            for (key, value) in labels {
                if have.get(key) != Some(value) {
                    out.push(format!("{carrier}: {}", key.as_str().unwrap_or("?")));
                }
            }
        }
    }
    out
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes, under `dir`, a parent chart `platform` that has capstan as a
/// dependency (a copy in its `charts/`) and passes it `profile`'s values:
/// `global` at the parent's top level, where a parent sets it for all its
/// subcharts, the rest under `capstan:`. The parent also makes the
/// PriorityClass named by `global.priorityClassName`, as a platform chart
/// that sets one would. Returns the parent chart's directory.
pub fn parent_chart(dir: &Path, profile: &Value) -> anyhow::Result<PathBuf> {
    let parent = dir.join("platform");
    copy_dir(&chart_dir(), &parent.join("charts/capstan"))?;
    let version = chart_version()?;
    std::fs::write(
        parent.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform\ndescription: A platform chart with capstan as a dependency.\n\
             type: application\nversion: 1.0.0\nappVersion: \"1.0.0\"\n\
             dependencies:\n  - name: capstan\n    version: \"{version}\"\n"
        ),
    )?;
    let mut values = Mapping::new();
    let mut rest = profile.as_mapping().cloned().unwrap_or_default();
    if let Some(global) = rest.remove("global") {
        values.insert("global".into(), global);
    }
    values.insert("capstan".into(), Value::Mapping(rest));
    std::fs::write(
        parent.join("values.yaml"),
        serde_norway::to_string(&values)?,
    )?;
    std::fs::create_dir_all(parent.join("templates"))?;
    std::fs::write(
        parent.join("templates/priorityclass.yaml"),
        "{{- with .Values.global.priorityClassName }}\n\
         apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {{ . }}\n  labels:\n\
         \x20   {{- toYaml $.Values.global.commonLabels | nindent 4 }}\n\
         value: 1000000\nglobalDefault: false\ndescription: The platform's own components.\n\
         {{- end }}\n",
    )?;
    Ok(parent)
}

/// The chart's `version` from its Chart.yaml.
fn chart_version() -> anyhow::Result<String> {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml"))?;
    let chart: Value = serde_norway::from_str(&text)?;
    chart["version"]
        .as_str()
        .map(str::to_owned)
        .context("Chart.yaml has no version")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        documents(yaml).unwrap()
    }

    const HARDENED: &str = "
kind: Deployment
metadata: {name: a, labels: {team: x}}
spec:
  template:
    metadata: {labels: {team: x}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: c
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
";

    #[test]
    fn a_hardened_pod_without_fixed_ids_fits_restricted_v2() {
        assert_eq!(
            restricted_scc_findings(&docs(HARDENED)),
            Vec::<String>::new()
        );
        assert!(run_as_user_anywhere(&docs(HARDENED)).is_empty());
    }

    #[test]
    fn fixed_ids_and_missing_hardening_are_findings() {
        let yaml = HARDENED
            .replace(
                "runAsNonRoot: true,",
                "runAsNonRoot: true, runAsUser: 65532,",
            )
            .replace("drop: [ALL]", "drop: [NET_RAW], add: [SYS_ADMIN]")
            .replace("allowPrivilegeEscalation: false", "privileged: true");
        let findings = restricted_scc_findings(&docs(&yaml));
        assert_eq!(
            findings,
            [
                "Deployment/a: pod securityContext.runAsUser is fixed",
                "Deployment/a container c: allowPrivilegeEscalation is not false",
                "Deployment/a container c: privileged",
                "Deployment/a container c: capabilities.drop lacks ALL",
                "Deployment/a container c: adds capability String(\"SYS_ADMIN\")",
            ]
        );
        assert_eq!(
            run_as_user_anywhere(&docs(&yaml)),
            ["Deployment/a.spec.template.spec.securityContext.runAsUser"]
        );
        let no_seccomp = HARDENED.replace(", seccompProfile: {type: RuntimeDefault}", "");
        assert_eq!(
            restricted_scc_findings(&docs(&no_seccomp)),
            ["Deployment/a container c: seccompProfile is None, not RuntimeDefault"]
        );
    }

    #[test]
    fn missing_labels_names_objects_and_pod_templates() {
        let want: Mapping = serde_norway::from_str("{team: x}").unwrap();
        assert!(missing_labels(&docs(HARDENED), &want).is_empty());
        let other: Mapping = serde_norway::from_str("{team: y, tier: z}").unwrap();
        assert_eq!(
            missing_labels(&docs(HARDENED), &other),
            [
                "Deployment/a: team",
                "Deployment/a: tier",
                "Deployment/a pod template: team",
                "Deployment/a pod template: tier",
            ]
        );
        let config_map = docs("kind: ConfigMap\nmetadata: {name: b}\n");
        assert_eq!(missing_labels(&config_map, &want), ["ConfigMap/b: team"]);
    }
}
