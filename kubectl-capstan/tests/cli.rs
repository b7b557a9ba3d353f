//! The `kubectl-capstan` binary as a user starts it, before any cluster is
//! involved: its help names the four commands, a usage error exits 2 and an
//! unreadable kubeconfig exits 1 with a message on stderr. (Building this
//! test also makes `cargo test --workspace` build the binary that the
//! end-to-end suite `kubectl_plugin` runs through kubectl.)

use std::process::Command;

fn plugin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubectl-capstan"))
}

#[test]
fn help_names_every_command() {
    let out = plugin().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["status", "rotate", "inspect", "check"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn a_usage_error_exits_2() {
    let out = plugin().arg("no-such-command").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
}

#[test]
fn an_unreadable_kubeconfig_exits_1_and_says_why() {
    let out = plugin()
        .args(["--kubeconfig", "/nonexistent/kubeconfig", "status", "ca"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}
