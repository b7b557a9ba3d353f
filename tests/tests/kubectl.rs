//! The real kubectl 1.34 against the test API server: what users and the
//! e2e suites run must work and look as on a cluster.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use capstan_tests::apiserver::TestApiServer;
use capstan_tests::harness::{Kubectl, await_condition, shared_dir};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

async fn setup() -> (TestApiServer, Kubectl) {
    let s = TestApiServer::builder()
        .rollout_delay(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let k = Kubectl::for_server(&s).expect("kubectl is needed for these tests");
    (s, k)
}

const CERTIFICATE_REQUEST: &str = "apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: web
  namespace: default
spec:
  issuerRef:
    group: capstan.dev
    kind: CAIssuer
    name: ca
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K
  usages:
  - digital signature
  - server auth
";

#[tokio::test]
async fn apply_cert_manager_crds_and_a_certificate_request_with_validation() {
    let (_s, k) = setup().await;
    let crds = shared_dir().join("cert-manager-crds");
    let out = k
        .run_ok(&["apply", "-f", crds.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        out.contains("certificaterequests.cert-manager.io created"),
        "{out}"
    );
    let out = k
        .run_with_stdin(&["apply", "-f", "-"], Some(CERTIFICATE_REQUEST))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("certificaterequest.cert-manager.io/web created"),
        "{out:?}"
    );
    // An unknown field fails as on a cluster (kubectl's default --validate=strict).
    let bad = CERTIFICATE_REQUEST.replace("  request:", "  foo: bar\n  request:");
    let out = k
        .run_with_stdin(&["apply", "-f", "-"], Some(&bad))
        .await
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("unknown field \"spec.foo\""),
        "{}",
        out.stderr
    );
    // A schema violation is rejected by the server with the CRD's rules.
    let invalid = CERTIFICATE_REQUEST.replace("  - server auth\n", "  - not a usage\n");
    let out = k
        .run_with_stdin(
            &["apply", "-f", "-"],
            Some(&invalid.replace("name: web", "name: web2")),
        )
        .await
        .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("spec.usages[1]"), "{}", out.stderr);
    // Printer columns, via the short name.
    let out = k.run_ok(&["get", "crs"]).await.unwrap();
    let header = out.lines().next().unwrap();
    for col in [
        "NAME",
        "APPROVED",
        "DENIED",
        "READY",
        "ISSUER",
        "REQUESTER",
        "AGE",
    ] {
        assert!(header.contains(col), "{out}");
    }
    assert!(out.lines().nth(1).unwrap().starts_with("web "), "{out}");
    // Status through the subresource.
    let patch = r#"{"status":{"conditions":[{"type":"Approved","status":"True","reason":"Test","message":"ok"}]}}"#;
    k.run_ok(&[
        "patch",
        "cr",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ])
    .await
    .unwrap();
    let approved = k
        .run_ok(&[
            "get",
            "cr",
            "web",
            "-o",
            "jsonpath={.status.conditions[0].type}",
        ])
        .await
        .unwrap();
    assert_eq!(approved, "Approved");
    let out = k.run_ok(&["get", "cr", "web"]).await.unwrap();
    assert!(out.lines().nth(1).unwrap().contains("True"), "{out}");
    // Server-side apply through kubectl.
    let out = k
        .run_with_stdin(
            &["apply", "--server-side", "-f", "-"],
            Some(CERTIFICATE_REQUEST),
        )
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
}

#[tokio::test]
async fn get_events_shows_the_usual_columns() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (s, k) = setup().await;
    let client = s.client().await.unwrap();
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "capstan".into(),
            instance: None,
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some("ca".into()),
        namespace: Some("default".into()),
        ..ObjectReference::default()
    };
    let ev = Event {
        type_: EventType::Warning,
        reason: "Rotated".into(),
        note: Some("CA rotated".into()),
        action: "Rotate".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    let out = k.run_ok(&["get", "events"]).await.unwrap();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{out}"
    );
    let row = lines.next().unwrap();
    for part in ["Warning", "Rotated", "secret/ca", "CA rotated"] {
        assert!(row.contains(part), "{out}");
    }
    let out = k
        .run_ok(&[
            "get",
            "ev",
            "--field-selector",
            "reason=Rotated",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    assert!(out.trim().starts_with("event/ca."), "{out}");
}

#[tokio::test]
async fn get_watch_sees_changes() {
    let (s, k) = setup().await;
    k.run_ok(&["create", "configmap", "watched", "--from-literal=a=1"])
        .await
        .unwrap();
    let mut w = k.spawn(&["get", "cm", "watched", "-w"]).unwrap();
    w.until(Duration::from_secs(20), |l| {
        l.starts_with("watched ") && l.split_whitespace().nth(1) == Some("1")
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    api.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "2"}})),
    )
    .await
    .unwrap();
    w.until(Duration::from_secs(20), |l| {
        l.starts_with("watched ") && l.split_whitespace().nth(1) == Some("2")
    })
    .await
    .unwrap();
    w.kill().await.unwrap();
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

#[tokio::test]
async fn rollout_status_completes() {
    let (_s, k) = setup().await;
    let out = k
        .run_with_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let out = k
        .run_ok(&["rollout", "status", "deployment/web", "--timeout=30s"])
        .await
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    k.run_ok(&["rollout", "restart", "deployment/web"])
        .await
        .unwrap();
    let out = k
        .run_ok(&["rollout", "status", "deploy/web", "--timeout=30s"])
        .await
        .unwrap();
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = k.run_ok(&["get", "deploy", "web"]).await.unwrap();
    assert!(out.lines().nth(1).unwrap().contains("2/2"), "{out}");
    k.run_ok(&["scale", "deployment/web", "--replicas=3"])
        .await
        .unwrap();
    k.run_ok(&["rollout", "status", "deploy/web", "--timeout=30s"])
        .await
        .unwrap();
    let out = k.run_ok(&["get", "deploy", "web"]).await.unwrap();
    assert!(out.lines().nth(1).unwrap().contains("3/3"), "{out}");
}

#[tokio::test]
async fn secrets_configmaps_and_delete() {
    let (_s, k) = setup().await;
    k.run_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ])
    .await
    .unwrap();
    let b64 = k
        .run_ok(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"])
        .await
        .unwrap();
    assert_eq!(b64, "aHVudGVyMg==");
    k.run_ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ])
    .await
    .unwrap();
    let yaml = k
        .run_ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await
        .unwrap();
    let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v["data"]["mode"], "fast");
    assert_eq!(v["metadata"]["namespace"], "default");
    assert!(v["metadata"]["resourceVersion"].is_string());
    assert_eq!(
        v["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    k.run_ok(&["delete", "cm", "settings"]).await.unwrap();
    let out = k.run(&["get", "cm", "settings"]).await.unwrap();
    assert!(!out.success());
    assert!(
        out.stderr.contains("configmaps \"settings\" not found"),
        "{}",
        out.stderr
    );
    let can = k
        .run_ok(&["auth", "can-i", "delete", "secrets"])
        .await
        .unwrap();
    assert_eq!(can.trim(), "yes");
    k.run_ok(&["create", "namespace", "team"]).await.unwrap();
    let out = k.run_ok(&["get", "ns"]).await.unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with("team ") && l.contains("Active")),
        "{out}"
    );
    await_condition(
        "api-resources lists short names",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            let out = k.run_ok(&["api-resources"]).await.ok()?;
            (out.contains("deploy") && out.contains("sts") && out.contains("csr")).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn certificate_approve_uses_the_approval_subresource() {
    let (_s, k) = setup().await;
    let csr = "apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: c1
spec:
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K
  signerName: capstan.dev/ca
  usages: [server auth]
";
    let out = k
        .run_with_stdin(&["apply", "-f", "-"], Some(csr))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    k.run_ok(&["certificate", "approve", "c1"]).await.unwrap();
    let out = k.run_ok(&["get", "csr", "c1"]).await.unwrap();
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row.last(), Some(&"Approved"), "{out}");
    assert!(row.contains(&"admin"), "the requestor is shown: {out}");
    let conds = k
        .run_ok(&[
            "get",
            "csr",
            "c1",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ])
        .await
        .unwrap();
    assert_eq!(conds, "KubectlApprove");
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_with_wait() {
    let (s, k) = setup().await;
    let helm = capstan_tests::harness::helm_path().expect("helm is needed for this test");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<String>| {
        let helm = helm.clone();
        let kubeconfig = s.kubeconfig_path().to_path_buf();
        let cwd = dir.path().to_path_buf();
        async move {
            let out = tokio::process::Command::new(&helm)
                .args(&args)
                .env("KUBECONFIG", &kubeconfig)
                .env("HELM_CACHE_HOME", cwd.join("cache"))
                .env("HELM_CONFIG_HOME", cwd.join("config"))
                .env("HELM_DATA_HOME", cwd.join("data"))
                .current_dir(&cwd)
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "helm {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    run(args(&["create", "demo"])).await;
    run(args(&[
        "install",
        "demo",
        "./demo",
        "--wait",
        "--timeout",
        "60s",
    ]))
    .await;
    run(args(&[
        "upgrade",
        "demo",
        "./demo",
        "--set",
        "replicaCount=2",
        "--wait",
        "--timeout",
        "60s",
    ]))
    .await;
    let out = k.run_ok(&["get", "deploy", "demo"]).await.unwrap();
    assert!(out.lines().nth(1).unwrap().contains("2/2"), "{out}");
    run(args(&["uninstall", "demo", "--wait"])).await;
    let out = k
        .run_ok(&["get", "all,serviceaccounts,secrets"])
        .await
        .unwrap();
    assert!(!out.contains("demo"), "{out}");
}
