//! End to end: the README's first command. The demo tells its whole story,
//! leaves a kubeconfig that the real kubectl can use while it runs, and
//! stops cleanly on Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use capstan_tests::harness::{Kubectl, await_condition};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

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
    let told = await_condition(
        "the story to be told",
        Duration::from_secs(300),
        Duration::from_millis(200),
        || {
            let t = text();
            async move { (t.contains("Press Ctrl-C") || t.contains("failed")).then_some(t) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", text()));
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
    let kubectl = Kubectl::new(&dir.path().join("kubeconfig")).unwrap();
    let issuers = kubectl.run_ok(&["get", "clustercaissuers"]).await.unwrap();
    assert!(
        issuers.contains("monitoring-ca") && issuers.contains("True"),
        "{issuers}"
    );
    let events = kubectl
        .run_ok(&["get", "events", "-n", "monitoring"])
        .await
        .unwrap();
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
