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
