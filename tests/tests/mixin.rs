//! The monitoring mixin (docs/mixin): promtool checks the rule files and
//! runs their unit tests; every metric the alerts, recording rules and
//! dashboard use is one the issuer or rotator registers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use capstan_tests::harness::{promtool_path, workspace_root};

fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new(promtool_path().unwrap())
        .args(args)
        .current_dir(workspace_root().join("docs/mixin"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "alerts.yaml", "rules.yaml"]);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every `capstan_*` metric name in `text`, without histogram suffixes and
/// without recording-rule names (which contain a colon).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("capstan_") {
        let start = i + at;
        let preceded_ok = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(text.len(), |e| start + e);
        let name = &text[start..end];
        if preceded_ok
            && !name.contains(':')
            && name.starts_with("capstan_issuer_") | name.starts_with("capstan_rotator_")
        {
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            names.insert(base.to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn every_metric_the_mixin_uses_is_registered_by_the_code() {
    let root = workspace_root();
    let registered = [
        std::fs::read_to_string(root.join("issuer/src/metrics.rs")).unwrap(),
        std::fs::read_to_string(root.join("rotator/src/metrics.rs")).unwrap(),
    ]
    .join("\n");
    let mut used = BTreeSet::new();
    for file in ["alerts.yaml", "rules.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(root.join("docs/mixin").join(file)).unwrap();
        used.extend(metric_names(&text));
    }
    assert!(used.len() >= 12, "{used:?}");
    for name in &used {
        assert!(
            registered.contains(&format!("\"{name}\"")),
            "{name} is used by the mixin but registered by neither binary"
        );
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/mixin/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "capstan-overview");
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}
