//! End to end: the README's first command. The demo tells its whole story,
//! leaves a kubeconfig that the real kubectl can use while it runs, and
//! stops cleanly on Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// The real kubectl, where the e2e suites find it: `$CAPSTAN_KUBECTL`, else
/// the workspace's `.tools/bin/kubectl` (installed by `scripts/install-tools`).
fn kubectl_path() -> PathBuf {
    let path = std::env::var_os("CAPSTAN_KUBECTL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/kubectl"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "kubectl not found at {} (set CAPSTAN_KUBECTL or run scripts/install-tools)",
        path.display()
    );
    path
}

/// Runs kubectl with `kubeconfig` (and a discovery cache of its own beside
/// it) and returns its stdout, panicking with its stderr when it fails.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("KUBECACHEDIR", kubeconfig.with_extension("kubecache"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap_or_else(|_| panic!("kubectl {} did not finish in 60 s", args.join(" ")))
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_demo_tells_the_rotation_story_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_capstan-demo"))
        .arg("--dir")
        .arg(dir.path())
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut out = BufReader::new(demo.stdout.take().unwrap()).lines();
    let seen = lines.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            seen.lock().unwrap().push(line);
        }
    });
    let text = || lines.lock().unwrap().join("\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let told = loop {
        let t = text();
        if t.contains("Press Ctrl-C") || t.contains("failed") {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 300 s waiting for the story to be told:\n{t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(told.contains("Press Ctrl-C"), "{told}");
    for expected in [
        "DNS names              metrics-app.monitoring.svc",
        "bundle trusts",
        "CARotationStarted",
        "CARotated",
        "ConfigMapUpdated",
        "RolloutTriggered    deployment/metrics-app",
        "RolloutCompleted    deployment/prometheus",
    ] {
        assert!(told.contains(expected), "missing {expected:?} in:\n{told}");
    }

    // While it runs, the kubeconfig it left works with the real kubectl.
    let kubeconfig = dir.path().join("kubeconfig");
    let issuers = kubectl(&kubeconfig, &["get", "clustercaissuers"]).await;
    assert!(
        issuers.contains("monitoring-ca") && issuers.contains("True"),
        "{issuers}"
    );
    let events = kubectl(&kubeconfig, &["get", "events", "-n", "monitoring"]).await;
    assert!(events.contains("RolloutCompleted"), "{events}");

    // Ctrl-C stops it cleanly.
    let pid = demo.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), demo.wait())
        .await
        .expect("the demo stops within a minute of Ctrl-C")
        .unwrap();
    reader.await.unwrap();
    assert!(exited.success(), "exit status {exited:?}\n{}", text());
    assert!(text().contains("Stopped cleanly."), "{}", text());
}
