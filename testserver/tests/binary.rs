//! The `capstan-test-apiserver` binary: kubeconfig on start, the `/_test/`
//! control endpoints, and `--data-dir` surviving a SIGKILL.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

async fn start(listen: &str, kubeconfig: &Path, data_dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan-test-apiserver"))
        .args(["--listen", listen, "--kubeconfig"])
        .arg(kubeconfig)
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first.strip_prefix("listening on ").unwrap().to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// Polls `check` every 50 ms until it returns `Some`, failing after 10 s.
async fn eventually<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after 10 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn binary_serves_persists_and_exposes_test_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let data = dir.path().join("data");
    let (mut child, url) = start("127.0.0.1:0", &kubeconfig, &data).await;
    let port = url.rsplit(':').next().unwrap().to_string();
    let c = client(&kubeconfig).await;
    let version = c.apiserver_version().await.unwrap();
    assert_eq!(
        version.git_version,
        capstan_testserver::discovery::GIT_VERSION
    );
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kept"}})).unwrap(),
        )
        .await
        .unwrap();

    let faults = c
        .request_text(
            http::Request::put("/_test/faults")
                .body(serde_json::to_vec(&json!({"errorRate": 1.0, "errorCodes": [500]})).unwrap())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&faults).unwrap()["errorRate"],
        1.0
    );
    let err = api.get("kept").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 500),
        "{err:?}"
    );
    c.request_text(
        http::Request::put("/_test/faults")
            .body(b"{}".to_vec())
            .unwrap(),
    )
    .await
    .unwrap();
    let log: serde_json::Value = serde_json::from_str(
        &c.request_text(
            http::Request::get("/_test/requests")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["verb"] == "create" && r["resource"] == "configmaps" && r["code"] == 201)
    );

    // SIGKILL, then start again on the same port with the same data.
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (_child, url2) = start(&format!("127.0.0.1:{port}"), &kubeconfig, &data).await;
    assert_eq!(url, url2);
    let c = client(&kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let got = eventually("server back", || async { api.get("kept").await.ok() })
        .await
        .unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let next = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "next"}})).unwrap(),
        )
        .await
        .unwrap();
    let rv = |o: &ConfigMap| {
        o.metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&next) > rv(&created));
}
