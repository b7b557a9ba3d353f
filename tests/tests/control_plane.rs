//! The real control plane itself, tried as a new user would on its admin
//! kubeconfig: `kubectl create deployment` and `kubectl rollout status`
//! complete (kwok makes the pods Ready), `kubectl get events` shows the
//! controllers' story, capstan's and cert-manager's CRDs apply, service
//! account tokens authenticate, and the audit log records who did what.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, await_condition};

async fn kubectl() -> (&'static ControlPlane, Kubectl, String) {
    let cp = ControlPlane::shared().await.unwrap();
    let kubectl = Kubectl::new(cp.kubeconfig_path()).unwrap();
    let ns = cp.namespace("cp").await.unwrap();
    (cp, kubectl, ns)
}

#[tokio::test]
async fn a_deployment_rolls_out_and_tells_its_story_in_events() {
    let (cp, kubectl, ns) = kubectl().await;
    kubectl
        .run_ok(&[
            "create",
            "deployment",
            "d1",
            "--image=nginx",
            "--replicas=2",
            "-n",
            &ns,
        ])
        .await
        .unwrap();
    let out = kubectl
        .run(&[
            "rollout",
            "status",
            "deployment/d1",
            "-n",
            &ns,
            "--timeout=120s",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out:?}\n{}", cp.logs(20));
    assert!(out.stdout.contains("successfully rolled out"), "{out:?}");

    // A second rollout (a new pod template) completes too.
    kubectl
        .run_ok(&["set", "image", "deployment/d1", "nginx=nginx:2", "-n", &ns])
        .await
        .unwrap();
    let out = kubectl
        .run(&[
            "rollout",
            "status",
            "deployment/d1",
            "-n",
            &ns,
            "--timeout=120s",
        ])
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");

    let events = kubectl.run_ok(&["get", "events", "-n", &ns]).await.unwrap();
    assert!(events.contains("ScalingReplicaSet"), "{events}");
    assert!(events.contains("SuccessfulCreate"), "{events}");
    assert!(events.contains("Scheduled"), "{events}");
}

#[tokio::test]
async fn statefulsets_and_daemonsets_become_ready() {
    let (_cp, kubectl, ns) = kubectl().await;
    kubectl
        .apply(&format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: s1, namespace: {ns}}}
spec:
  serviceName: s1
  replicas: 2
  selector: {{matchLabels: {{app: s1}}}}
  template:
    metadata: {{labels: {{app: s1}}}}
    spec: {{containers: [{{name: c, image: busybox}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds1, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: ds1}}}}
  template:
    metadata: {{labels: {{app: ds1}}}}
    spec: {{containers: [{{name: c, image: busybox}}]}}
"
        ))
        .await;
    for workload in ["statefulset/s1", "daemonset/ds1"] {
        let out = kubectl
            .run(&["rollout", "status", workload, "-n", &ns, "--timeout=120s"])
            .await
            .unwrap();
        assert!(out.success(), "{workload}: {out:?}");
    }
}

#[tokio::test]
async fn crds_apply_and_serve() {
    let (_cp, kubectl, ns) = kubectl().await;
    kubectl.apply_crds(true).await.unwrap();
    await_condition(
        "capstan's and cert-manager's kinds served",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let out = kubectl
                .run(&["api-resources", "--api-group=capstan.dev"])
                .await
                .ok()?;
            let cm = kubectl
                .run(&["get", "certificaterequests", "-n", &ns])
                .await
                .ok()?;
            (out.stdout.contains("ClusterCAIssuer") && cm.success()).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_judges_them() {
    let (cp, kubectl, ns) = kubectl().await;
    let dir = tempfile::tempdir().unwrap();
    let token = cp.service_account_token(&ns, "reader", &[]).await.unwrap();
    let config = cp
        .token_kubeconfig_at(&cp.url(), dir.path(), "reader", &token)
        .unwrap();
    let as_reader = Kubectl::new(&config).unwrap();
    let who = as_reader
        .run_ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await
        .unwrap();
    assert_eq!(who, format!("system:serviceaccount:{ns}:reader"));
    let denied = as_reader.run(&["get", "secrets", "-n", &ns]).await.unwrap();
    assert!(!denied.success());
    assert!(
        denied.stderr.contains("Forbidden") || denied.stderr.contains("forbidden"),
        "{denied:?}"
    );

    kubectl
        .run_ok(&[
            "create",
            "role",
            "read-secrets",
            "--verb=get,list",
            "--resource=secrets",
            "-n",
            &ns,
        ])
        .await
        .unwrap();
    kubectl
        .run_ok(&[
            "create",
            "rolebinding",
            "read-secrets",
            "--role=read-secrets",
            &format!("--serviceaccount={ns}:reader"),
            "-n",
            &ns,
        ])
        .await
        .unwrap();
    as_reader
        .run_ok(&["get", "secrets", "-n", &ns])
        .await
        .unwrap();

    // The audit log names the service account's denied and allowed lists.
    let user = format!("system:serviceaccount:{ns}:reader");
    let codes = await_condition(
        "the audit log",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let codes: Vec<u16> = cp
                .audit_events()
                .ok()?
                .into_iter()
                .filter(|e| e.user.username == user && e.verb == "list")
                .map(|e| e.code())
                .collect();
            (codes.contains(&403) && codes.contains(&200)).then_some(codes)
        },
    )
    .await
    .unwrap();
    assert!(codes.iter().all(|c| *c == 403 || *c == 200), "{codes:?}");
}

#[tokio::test]
async fn impersonated_users_are_judged_as_themselves() {
    let (cp, _kubectl, _ns) = kubectl().await;
    let dir = tempfile::tempdir().unwrap();
    let config = cp
        .user_kubeconfig_at(
            &cp.url(),
            dir.path(),
            "alice",
            "alice",
            &["team-a", "system:masters"],
        )
        .unwrap();
    let alice = Kubectl::new(&config).unwrap();
    let who = alice
        .run_ok(&["auth", "whoami", "-o", "json"])
        .await
        .unwrap();
    assert!(who.contains("\"alice\""), "{who}");
    assert!(who.contains("team-a"), "{who}");
    alice.run_ok(&["get", "nodes"]).await.unwrap();
    // Without system:masters, RBAC refuses what alice has not been granted.
    let plain = cp
        .user_kubeconfig_at(&cp.url(), dir.path(), "bob", "bob", &["team-a"])
        .unwrap();
    let bob = Kubectl::new(&plain).unwrap();
    let denied = bob.run(&["get", "nodes"]).await.unwrap();
    assert!(
        !denied.success() && denied.stderr.contains("forbidden"),
        "{denied:?}"
    );
}
