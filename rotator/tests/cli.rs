//! The real binary's command line. (Also makes `cargo test --workspace`
//! build `capstan-rotator` before the end-to-end suites run it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_lists_the_flags_users_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan-rotator"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--restart-debounce",
        "--max-concurrent-rollouts",
        "--rollout-timeout",
        "--dry-run",
        "--leader-elect",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn zero_concurrency_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan-rotator"))
        .args(["--max-concurrent-rollouts", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("max-concurrent-rollouts")
    );
}

#[test]
fn namespace_scope_comes_from_flags_or_the_config_file() {
    let keys: Vec<(&str, &str)> = capstan_common::config::COMMON_KEYS
        .iter()
        .chain(capstan_rotator::CONFIG_KEYS)
        .copied()
        .collect();
    let file = std::env::temp_dir().join(format!("rotator-scope-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        "namespaces: [team-a, team-b]\nnamespaceSelector: 'env in (prod,staging),!legacy'\nnamespacesToIgnore: team-b\n",
    )
    .unwrap();
    let args: capstan_rotator::Args = capstan_common::config::try_parse_from(
        ["capstan-rotator", "--config", file.to_str().unwrap()],
        &keys,
    )
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(args.namespaces, ["team-a", "team-b"]);
    assert_eq!(args.namespaces_to_ignore, ["team-b"]);
    assert_eq!(
        args.namespace_selector.unwrap().to_string(),
        "env in (prod,staging),!legacy"
    );
    // Reloader's spelling, repeated and comma-separated.
    let args: capstan_rotator::Args = capstan_common::config::try_parse_from(
        ["capstan-rotator", "--namespaces", "a,b", "--namespace", "c"],
        &keys,
    )
    .unwrap();
    assert_eq!(args.namespaces, ["a", "b", "c"]);
}

#[test]
fn bad_namespace_flags_are_refused_with_the_culprit() {
    for (flag, value) in [
        ("--namespace-selector", "env in (prod"),
        ("--namespace", "Team_A"),
        ("--namespaces-to-ignore", "a,-b"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_capstan-rotator"))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(flag), "{stderr}");
    }
}
