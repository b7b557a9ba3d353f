//! The monitoring mixin (docs/mixin): promtool checks the rule files and
//! runs their unit tests, which give every alert a firing and a non-firing
//! case; every alert links its runbook; every metric the alerts, recording
//! rules and dashboard use is one the issuer or rotator registers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

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

fn mixin_yaml(name: &str) -> serde_norway::Value {
    serde_norway::from_str(
        &std::fs::read_to_string(workspace_root().join("docs/mixin").join(name)).unwrap(),
    )
    .unwrap()
}

/// The alerting rules of alerts.yaml.
fn alerts() -> Vec<serde_norway::Value> {
    mixin_yaml("alerts.yaml")["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    // alert name -> (has a case where it fires, has one where it does not)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in mixin_yaml("tests.yaml")["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    let alerts = alerts();
    assert_eq!(alerts.len(), 9);
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        assert_eq!(
            cases.get(name),
            Some(&(true, true)),
            "{name}: tests.yaml needs a case where it fires and one where it does not"
        );
    }
    for name in cases.keys() {
        assert!(
            alerts.iter().any(|a| a["alert"] == name.as_str()),
            "tests.yaml tests {name}, which alerts.yaml does not define"
        );
    }
}

#[test]
fn every_alert_links_its_runbook_and_says_how_bad_it_is() {
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(name.starts_with("Capstan"), "{name}");
        assert_eq!(
            alert["annotations"]["runbook_url"].as_str().unwrap(),
            format!("https://github.com/capstan-dev/capstan/blob/main/docs/runbooks/{name}.md")
        );
        assert!(
            ["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap()),
            "{name}"
        );
        for key in ["summary", "description"] {
            assert!(
                !alert["annotations"][key]
                    .as_str()
                    .unwrap()
                    .trim()
                    .is_empty(),
                "{name}: {key}"
            );
        }
    }
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
