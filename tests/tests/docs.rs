//! The user documentation stays connected to what it documents: every
//! alert's `runbook_url` names a runbook that exists (and every runbook an
//! alert), every relative link and `#anchor` in `docs/**/*.md` and
//! `README.md` resolves, every `capstan_*` metric the prose mentions is one
//! the binaries export (as listed by the generated `docs/reference/metrics.md`,
//! which xtask's test keeps equal to the registries) or a recording rule of
//! the mixin, every `capstan.dev/...` annotation or label it mentions is
//! one the code uses, every Event reason and log line it quotes is one the
//! code writes, and every manifest it shows is accepted by a real
//! kube-apiserver (a control plane the test starts) with capstan's and
//! cert-manager's CRDs: `kubectl apply --dry-run=server`, strict field
//! validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use capstan_tests::harness::workspace_root;
use capstan_tests::markdown;
use serde::Deserialize as _;

/// Where GitHub serves the repository's files; the alerts' runbook URLs
/// start with it.
const BLOB_PREFIX: &str = "https://github.com/capstan-dev/capstan/blob/main/";

/// `README.md` and every Markdown file under `docs/`, relative to the root.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files);
    files
}

/// The text of a Markdown file outside fenced code blocks and inline code
/// spans, where `[x](y)` is not a link; each line keeps its place.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            let mut in_code = false;
            for c in line.chars() {
                if c == '`' {
                    in_code = !in_code;
                } else if !in_code {
                    out.push(c);
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Link targets in `markdown`: inline `[text](target)` and reference
/// definitions `[label]: target`.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(target.trim_matches(['<', '>']).to_owned());
        rest = &after[end..];
    }
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(close) = line.strip_prefix('[').and_then(|l| l.find("]: ")) {
            let target = line[close + 4..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            targets.push(target.to_owned());
        }
    }
    targets
}

/// The anchors GitHub gives a file's headings: lower case, punctuation
/// other than `-` and `_` dropped, spaces as `-`.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        anchors.insert(slug);
    }
    anchors
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// What is wrong with each relative link of `file` (empty when they all
/// resolve, anchors included).
fn broken_links(root: &Path, file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let dir = file.parent().unwrap();
    let name = file.strip_prefix(root).unwrap().display().to_string();
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.is_empty() || is_external(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else {
            dir.join(path)
        };
        if !resolved.exists() {
            broken.push(format!(
                "{name}: {target} ({} does not exist)",
                resolved.display()
            ));
            continue;
        }
        if let Some(anchor) = anchor
            && resolved.extension().is_some_and(|e| e == "md")
        {
            let heads = anchors(&std::fs::read_to_string(&resolved).unwrap());
            if !heads.contains(anchor) {
                broken.push(format!(
                    "{name}: {target} (no heading #{anchor}; has {heads:?})"
                ));
            }
        }
    }
    broken
}

/// Every alert's name and `runbook_url` in the mixin's alerts.
fn alerts(root: &Path) -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(root.join("docs/mixin/alerts.yaml")).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut alerts = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            if let Some(alert) = rule["alert"].as_str() {
                let url = rule["annotations"]["runbook_url"]
                    .as_str()
                    .map(str::to_owned);
                alerts.push((alert.to_owned(), url));
            }
        }
    }
    alerts
}

#[test]
fn every_alert_links_an_existing_runbook_and_every_runbook_has_an_alert() {
    let root = workspace_root();
    let alerts = alerts(&root);
    assert!(!alerts.is_empty(), "alerts.yaml has no alerts");
    let mut problems = Vec::new();
    for (alert, url) in &alerts {
        let Some(url) = url else {
            problems.push(format!("{alert}: no runbook_url"));
            continue;
        };
        let expected = format!("docs/runbooks/{alert}.md");
        match url.strip_prefix(BLOB_PREFIX) {
            Some(path) if path == expected => {
                if !root.join(path).is_file() {
                    problems.push(format!("{alert}: {path} does not exist"));
                }
            }
            _ => problems.push(format!(
                "{alert}: runbook_url {url} is not {BLOB_PREFIX}{expected}"
            )),
        }
    }
    let names: BTreeSet<String> = alerts.iter().map(|(a, _)| format!("{a}.md")).collect();
    let runbooks = std::fs::read_dir(root.join("docs/runbooks"))
        .unwrap_or_else(|e| panic!("docs/runbooks: {e}"));
    for entry in runbooks {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if file != "README.md" && !names.contains(&file) {
            problems.push(format!("docs/runbooks/{file} is the runbook of no alert"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = workspace_root();
    let files = markdown_files(&root);
    assert!(files.len() > 5, "found only {files:?}");
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(&root, f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The workspace's crates, named in Rust paths and log filters
/// (`info,capstan_issuer=debug`) but never metrics.
const CRATES: &[&str] = &[
    "capstan_common",
    "capstan_demo",
    "capstan_issuer",
    "capstan_pki",
    "capstan_rotator",
    "capstan_tests",
];

/// `capstan_*` names in `text`: metric names, and recording-rule names
/// (`capstan_issuer:requests_signed:rate5m`). Rust paths
/// (`capstan_issuer::metrics`) and prefixes (`capstan_rotator_`) are not
/// names.
fn capstan_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("capstan_") {
        let start = i + at;
        let preceded = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |e| start + e);
        i = end.max(start + 1);
        let name = &text[start..end];
        if preceded || name.contains("::") || name.ends_with('_') || CRATES.contains(&name) {
            continue;
        }
        names.insert(name.trim_end_matches(':').to_owned());
    }
    names
}

/// The metric names in the first column of the generated metrics page.
fn documented_metrics(root: &Path) -> BTreeSet<String> {
    let page = std::fs::read_to_string(root.join("docs/reference/metrics.md")).unwrap();
    page.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The recording rules of the mixin.
fn recording_rules(root: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root.join("docs/mixin/rules.yaml")).unwrap();
    let doc: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `name` is a documented metric or one of a documented
/// histogram's series.
fn is_metric(name: &str, metrics: &BTreeSet<String>) -> bool {
    metrics.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| metrics.contains(base))
        })
}

#[test]
fn every_metric_the_docs_mention_is_exported() {
    let root = workspace_root();
    let metrics = documented_metrics(&root);
    assert!(
        metrics.contains("capstan_issuer_requests_signed_total")
            && metrics.contains("capstan_rotator_rollouts_triggered_total"),
        "docs/reference/metrics.md lists {metrics:?}; run `cargo xtask docs`"
    );
    let rules = recording_rules(&root);
    let mut unknown = Vec::new();
    let mut mentioned = 0;
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in capstan_names(&text) {
            mentioned += 1;
            let known = if name.contains(':') {
                rules.contains(&name)
            } else {
                is_metric(&name, &metrics)
            };
            if !known {
                unknown.push(format!(
                    "{}: {name}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(mentioned > 10, "the docs mention only {mentioned} metrics");
    assert!(
        unknown.is_empty(),
        "not exported by either binary (see docs/reference/metrics.md) nor recorded by \
         docs/mixin/rules.yaml:\n{}",
        unknown.join("\n")
    );
}

/// Every `capstan.dev/...` name in `text` that is not part of a longer
/// domain (`clustercaissuers.capstan.dev/x` is a signer name).
fn capstan_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (at, _) in text.match_indices("capstan.dev/") {
        let preceded = text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if preceded {
            continue;
        }
        let rest = &text[at + "capstan.dev/".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(rest.len());
        if end > 0 {
            keys.insert(format!("capstan.dev/{}", &rest[..end]));
        }
    }
    keys
}

/// The text of every Rust source file of the two components and `common`.
fn sources(root: &Path) -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    for dir in ["issuer/src", "rotator/src", "common/src"] {
        walk(&root.join(dir), &mut out);
    }
    out
}

#[test]
fn every_annotation_and_label_the_docs_mention_is_used_by_the_code() {
    let root = workspace_root();
    let code = sources(&root);
    // `capstan.dev/v1alpha1` is the API version of the CRDs, not a key.
    let mut versions = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("crds")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        for version in crd["spec"]["versions"].as_sequence().unwrap() {
            versions.insert(format!("capstan.dev/{}", version["name"].as_str().unwrap()));
        }
    }
    let mut unknown = Vec::new();
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for key in capstan_keys(&text) {
            if !versions.contains(&key) && !code.contains(&format!("\"{key}\"")) {
                unknown.push(format!(
                    "{}: {key}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "no such annotation or label in issuer/, rotator/ or common/:\n{}",
        unknown.join("\n")
    );
}

/// The lines of `markdown` under the heading `heading` (up to the next
/// heading of the same level).
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.split(' ').next().unwrap_or_default();
    markdown
        .lines()
        .skip_while(|l| l.trim_end() != heading)
        .skip(1)
        .take_while(|l| !(l.starts_with(level) && l[level.len()..].starts_with(' ')))
        .collect()
}

/// The code spans in the first cell of each row of the tables in `lines`.
fn first_cells(lines: &[&str]) -> Vec<Vec<String>> {
    lines
        .iter()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cell = l[1..].split(" | ").next().unwrap_or_default();
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// The string literals of Rust `code`.
fn string_literals(code: &str) -> Vec<String> {
    let literal = regex::Regex::new(r#""((?:[^"\\]|\\.)*)""#).unwrap();
    literal
        .captures_iter(code)
        .map(|c| c[1].to_owned())
        .collect()
}

/// Whether `reason` is one of `literals`, or what one of them formats to
/// (`"ConfigMap{}SkippedDryRun"` makes `ConfigMapUpdateSkippedDryRun`).
fn is_reason(reason: &str, literals: &[String]) -> bool {
    let placeholder = regex::Regex::new(r"\{[^}]*\}").unwrap();
    literals.iter().any(|l| {
        if l == reason {
            return true;
        }
        if !l.contains('{') {
            return false;
        }
        let pattern = placeholder
            .split(l)
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join("[A-Za-z]+");
        regex::Regex::new(&format!("^{pattern}$")).is_ok_and(|r| r.is_match(reason))
    })
}

/// Event reasons that the code spells out: literals handed to
/// `Record::normal`/`Record::warning`, and the constants of the reasons
/// modules whose doc comment says they are an Event's (`/// Event: ...`,
/// `/// Condition and Event: ...`, `/// ... Event reason ...`).
fn recorded_reasons(code: &str) -> BTreeSet<String> {
    let direct = regex::Regex::new(r#"Record::(?:normal|warning)\(\s*"([A-Za-z]+)""#).unwrap();
    let constant = regex::Regex::new(
        r#"///[^\n]*\bEvent\b[^\n]*\n\s*pub const [A-Z_]+: &str = "([A-Za-z]+)";"#,
    )
    .unwrap();
    direct
        .captures_iter(code)
        .chain(constant.captures_iter(code))
        .map(|c| c[1].to_owned())
        .collect()
}

#[test]
fn every_event_reason_is_documented_and_every_quoted_log_line_is_in_the_code() {
    let root = workspace_root();
    let code = sources(&root);
    let literals = string_literals(&code);
    let concepts = std::fs::read_to_string(root.join("docs/concepts.md")).unwrap();
    let reasons: Vec<String> = first_cells(&section(&concepts, "## Events"))
        .into_iter()
        .flatten()
        .collect();
    assert!(
        reasons.len() > 20,
        "the events table lists only {reasons:?}"
    );
    let unknown: Vec<&String> = reasons
        .iter()
        .filter(|r| !is_reason(r, &literals))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/concepts.md lists Event reasons no code records: {unknown:?}"
    );
    let recorded = recorded_reasons(&code);
    assert!(recorded.len() > 10, "found only {recorded:?} in the code");
    let undocumented: Vec<&String> = recorded.iter().filter(|r| !reasons.contains(r)).collect();
    assert!(
        undocumented.is_empty(),
        "Event reasons the code records that docs/concepts.md's Events table lacks: {undocumented:?}"
    );

    let troubleshooting = std::fs::read_to_string(root.join("docs/troubleshooting.md")).unwrap();
    let lines: Vec<String> = first_cells(&section(&troubleshooting, "## Logs"))
        .into_iter()
        .filter_map(|cells| cells.into_iter().next())
        .collect();
    assert!(lines.len() > 10, "the log table lists only {lines:?}");
    let unknown: Vec<&String> = lines
        .iter()
        .filter(|l| !code.contains(l.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/troubleshooting.md quotes log lines no code writes: {unknown:?}"
    );
}

/// Kubernetes manifests in `markdown`: the ```yaml blocks, and the
/// heredocs of shell blocks (`kubectl apply -f - <<'EOF'`), each split into
/// its documents; only documents with an `apiVersion` and a `kind`.
fn manifests(markdown: &str) -> Vec<serde_norway::Value> {
    let mut blocks = Vec::new();
    for (lang, text) in markdown::code_blocks(markdown) {
        if lang == "yaml" {
            blocks.push(text);
            continue;
        }
        let mut heredoc: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some((end, body)) = &mut heredoc {
                if line.trim_start() == end {
                    blocks.push(std::mem::take(body));
                    heredoc = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            } else if let Some((_, tag)) = line.split_once("<<'") {
                heredoc = tag
                    .split('\'')
                    .next()
                    .map(|t| (t.to_owned(), String::new()));
            }
        }
    }
    let mut docs = Vec::new();
    for text in blocks {
        for doc in serde_norway::Deserializer::from_str(&text) {
            let Ok(value) = serde_norway::Value::deserialize(doc) else {
                continue;
            };
            if value["apiVersion"].is_string() && value["kind"].is_string() {
                docs.push(value);
            }
        }
    }
    docs
}

/// API groups whose CRDs the control plane is not given (the Prometheus
/// Operator's); their manifests are not validated here.
const UNAVAILABLE_GROUPS: &[&str] = &["monitoring.coreos.com/"];

#[tokio::test]
async fn every_manifest_in_the_docs_is_accepted_by_the_api_server() {
    use capstan_tests::controlplane::ControlPlane;
    use capstan_tests::harness::Kubectl;

    let root = workspace_root();
    let mut found = Vec::new();
    for file in markdown_files(&root) {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        for doc in manifests(&std::fs::read_to_string(&file).unwrap()) {
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            if !UNAVAILABLE_GROUPS.iter().any(|g| api.starts_with(g)) {
                found.push((name.clone(), doc));
            }
        }
    }
    assert!(found.len() > 15, "found only {} manifests", found.len());

    // Its own control plane: the docs' CRDs and namespaces are
    // cluster-wide. A dry run needs no pods, so no workloads.
    let server = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    for dir in ["tests/fixtures/cert-manager-crds", "crds"] {
        let dir = root.join(dir);
        kubectl
            .run_ok(&["apply", "-f", dir.to_str().unwrap()])
            .await
            .unwrap();
    }
    kubectl.wait_crds_established().await.unwrap();
    let namespaces: BTreeSet<&str> = found
        .iter()
        .filter_map(|(_, doc)| doc["metadata"]["namespace"].as_str())
        .collect();
    for namespace in namespaces {
        kubectl
            .run_ok(&["create", "namespace", namespace])
            .await
            .unwrap();
    }
    let mut refused = Vec::new();
    for (file, doc) in &found {
        let yaml = serde_norway::to_string(doc).unwrap();
        let out = kubectl
            .run_with_stdin(
                &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
                Some(&yaml),
            )
            .await
            .unwrap();
        if !out.success() {
            refused.push(format!("{file}: {}{}", out.stderr, yaml));
        }
    }
    assert!(
        refused.is_empty(),
        "manifests the API server refuses:\n{}",
        refused.join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    let md = "See [a](a.md#x) and `[no](code.md)`.\n```\n[no](fenced.md)\n```\n[ref]: b.md\n";
    assert_eq!(link_targets(md), vec!["a.md#x", "b.md"]);
    assert_eq!(
        anchors("# Scraping TLS: ServiceMonitor `tlsConfig`\n## capstan-issuer\n"),
        BTreeSet::from([
            "scraping-tls-servicemonitor-tlsconfig".to_owned(),
            "capstan-issuer".to_owned()
        ])
    );
    assert_eq!(
        capstan_names(
            "capstan_issuer_ready, capstan_issuer:ca_seconds_to_expiry, \
             capstan_issuer::metrics, the capstan_rotator_ prefix, x_capstan_y, \
             info,capstan_issuer=debug"
        ),
        BTreeSet::from([
            "capstan_issuer:ca_seconds_to_expiry".to_owned(),
            "capstan_issuer_ready".to_owned()
        ])
    );
    let metrics = BTreeSet::from(["capstan_issuer_signing_duration_seconds".to_owned()]);
    assert!(is_metric(
        "capstan_issuer_signing_duration_seconds_bucket",
        &metrics
    ));
    assert!(!is_metric("capstan_issuer_signing_seconds", &metrics));
    let md = "```yaml\nkind: ConfigMap\napiVersion: v1\n---\nnot: a manifest\n```\n\
              ```sh\nkubectl apply -f - <<'EOF'\napiVersion: v1\nkind: Secret\nEOF\n```\n\
              1. x\n\n   ```yaml\n   apiVersion: v1\n   kind: Namespace\n   ```\n";
    let kinds: Vec<String> = manifests(md)
        .iter()
        .map(|d| d["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, vec!["ConfigMap", "Secret", "Namespace"]);
    assert_eq!(
        recorded_reasons(
            "Record::warning(\n \"Denied\", m); Record::normal(format!(\"x\"));\n\
             /// Condition and Event reason: gone.\npub const GONE: &str = \"Gone\";\n\
             /// The condition type.\npub const READY: &str = \"Ready\";"
        ),
        BTreeSet::from(["Denied".to_owned(), "Gone".to_owned()])
    );
    let literals = vec![
        "CARotated".to_owned(),
        "ConfigMap{}SkippedDryRun".to_owned(),
    ];
    assert!(is_reason("CARotated", &literals));
    assert!(is_reason("ConfigMapDeleteSkippedDryRun", &literals));
    assert!(!is_reason("CARotate", &literals));
    assert!(!is_reason("ConfigMapSkippedDryRunX", &literals));
    let md =
        "## Events\n\n| reason | on |\n| --- | --- |\n| `A`, `B` | x |\n## Next\n| `C` | y |\n";
    assert_eq!(first_cells(&section(md, "## Events")), vec![vec!["A", "B"]]);
    assert_eq!(
        string_literals(r#"f("a \"b\"", 'c', "d")"#),
        vec![r#"a \"b\""#, "d"]
    );
    assert_eq!(
        capstan_keys("capstan.dev/rotate: x; clustercaissuers.capstan.dev/ca; capstan.dev/bundle"),
        BTreeSet::from([
            "capstan.dev/bundle".to_owned(),
            "capstan.dev/rotate".to_owned()
        ])
    );
}
