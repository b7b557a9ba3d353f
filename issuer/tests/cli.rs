//! The real binary's command line. (Also makes `cargo test --workspace`
//! build `capstan-issuer` before the end-to-end suites run it.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_lists_the_flags_users_set() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan-issuer"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--cluster-resource-namespace",
        "--leader-elect",
        "--log-format",
        "--kubeconfig",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_bad_flag_value_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_capstan-issuer"))
        .args(["--leader-election-lease-duration", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("soon"), "{err}");
}
