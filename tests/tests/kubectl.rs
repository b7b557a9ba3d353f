//! The real kubectl 1.34 against a real control plane (kube-apiserver 1.35
//! and friends): what users and the e2e suites run must work and look as on
//! a cluster, and capstan's CRDs print the columns the docs show.
//!
//! Tests that only touch namespaced objects share the test binary's control
//! plane, each in a namespace of its own that is kubectl's default; tests
//! that install CRDs or run capstan's binaries start their own.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use capstan_tests::cluster::{self, MASTERS, p256_csr, start_binary, user_kubeconfig};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, await_condition, shared_dir};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// A test's place on the shared control plane: kubectl whose default
/// namespace is a new one, that namespace, and the directory holding the
/// kubeconfig.
struct Shared {
    cp: &'static ControlPlane,
    k: Kubectl,
    ns: String,
    dir: tempfile::TempDir,
}

async fn shared(prefix: &str) -> Shared {
    let cp = ControlPlane::shared().await.unwrap();
    let ns = cp.namespace(prefix).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&namespaced_kubeconfig(cp, dir.path(), &ns)).unwrap();
    Shared { cp, k, ns, dir }
}

/// A copy of the admin kubeconfig whose context's namespace is `ns`.
fn namespaced_kubeconfig(cp: &ControlPlane, dir: &Path, ns: &str) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    assert!(admin.contains("    namespace: default\n"), "{admin}");
    let path = dir.join("admin.kubeconfig");
    std::fs::write(
        &path,
        admin.replace(
            "    namespace: default\n",
            &format!("    namespace: {ns}\n"),
        ),
    )
    .unwrap();
    path
}

/// A control plane of the test's own, without workloads (CRDs are
/// cluster-wide; no test here needs them to share).
async fn own() -> (ControlPlane, Kubectl) {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let k = Kubectl::for_server(&cp).expect("kubectl is needed for these tests");
    (cp, k)
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
    let (_cp, k) = own().await;
    let crds = shared_dir().join("cert-manager-crds");
    let out = k
        .run_ok(&["apply", "-f", crds.to_str().unwrap()])
        .await
        .unwrap();
    assert!(
        out.contains("certificaterequests.cert-manager.io created"),
        "{out}"
    );
    k.wait_crds_established().await.unwrap();
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
    let Shared {
        cp,
        k,
        ns,
        dir: _dir,
    } = shared("events").await;
    let client = cp.client().await.unwrap();
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
        namespace: Some(ns.clone()),
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
    let Shared {
        cp,
        k,
        ns,
        dir: _dir,
    } = shared("watch").await;
    k.run_ok(&["create", "configmap", "watched", "--from-literal=a=1"])
        .await
        .unwrap();
    let mut w = k.spawn(&["get", "cm", "watched", "-w"]).unwrap();
    w.until(Duration::from_secs(20), |l| {
        l.starts_with("watched ") && l.split_whitespace().nth(1) == Some("1")
    })
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cp.client().await.unwrap(), &ns);
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
    let Shared { k, dir: _dir, .. } = shared("rollout").await;
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
    let Shared {
        k, ns, dir: _dir, ..
    } = shared("objects").await;
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
    let v: serde_json::Value = serde_norway::from_str(&yaml).unwrap();
    assert_eq!(v["data"]["mode"], "fast");
    assert_eq!(v["metadata"]["namespace"], ns.as_str());
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
    let team = format!("{ns}-team");
    k.run_ok(&["create", "namespace", &team]).await.unwrap();
    let out = k.run_ok(&["get", "ns"]).await.unwrap();
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{team} ")) && l.contains("Active")),
        "{out}"
    );
    k.run_ok(&["delete", "namespace", &team, "--wait=false"])
        .await
        .unwrap();
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
    let Shared { k, ns, dir, .. } = shared("csr").await;
    // CertificateSigningRequests are cluster-scoped: named after the
    // test's namespace. kube-apiserver parses `spec.request`, so it is a
    // real CSR.
    let name = format!("{ns}-c1");
    let request = p256_csr(dir.path(), "c1", "/CN=c1.example", Some("DNS:c1.example"));
    let csr = format!(
        "apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: {name}
spec:
  request: {request}
  signerName: capstan.dev/ca
  usages: [digital signature, server auth]
"
    );
    let out = k
        .run_with_stdin(&["apply", "-f", "-"], Some(&csr))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    let out = k.run_ok(&["get", "csr", &name]).await.unwrap();
    assert_eq!(
        table(&out)[0]["CONDITION"],
        "Pending",
        "not approved yet: {out}"
    );
    k.run_ok(&["certificate", "approve", &name]).await.unwrap();
    let out = k.run_ok(&["get", "csr", &name]).await.unwrap();
    let rows = table(&out);
    assert_eq!(
        header(&out),
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ],
        "{out}"
    );
    let row = &rows[0];
    assert_eq!(row["NAME"], name, "{out}");
    assert_eq!(row["SIGNERNAME"], "capstan.dev/ca", "{out}");
    assert_eq!(row["REQUESTOR"], "admin", "the requestor is shown: {out}");
    assert_eq!(row["REQUESTEDDURATION"], "<none>", "{out}");
    // Approved but not signed: nothing signs capstan.dev/ca here.
    assert_eq!(row["CONDITION"], "Approved", "{out}");
    let conds = k
        .run_ok(&[
            "get",
            "csr",
            &name,
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ])
        .await
        .unwrap();
    assert_eq!(conds, "KubectlApprove");
    k.run_ok(&["delete", "csr", &name]).await.unwrap();
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_with_wait() {
    let Shared { k, ns, dir, .. } = shared("helm").await;
    let helm = capstan_tests::harness::helm_path().expect("helm is needed for this test");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let run = |args: Vec<String>| {
        let helm = helm.clone();
        let kubeconfig = kubeconfig.clone();
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
    let args = |a: &[&str]| {
        a.iter()
            .map(|s| s.to_string())
            .chain(["--namespace".to_owned(), ns.clone()])
            .collect::<Vec<_>>()
    };
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
    let out = k.run_ok(&["get", "deploy", "demo"]).await.unwrap();
    assert_eq!(table(&out)[0]["READY"], "1/1", "{out}");
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
    assert_eq!(table(&out)[0]["READY"], "2/2", "{out}");
    // Foreground deletion: the Deployment is gone only once its
    // ReplicaSets and Pods are, and `--wait` waits for the Deployment.
    run(args(&[
        "uninstall",
        "demo",
        "--wait",
        "--cascade=foreground",
    ]))
    .await;
    let out = k
        .run_ok(&["get", "all,serviceaccounts,secrets"])
        .await
        .unwrap();
    assert!(!out.contains("demo"), "{out}");
}

/// The column names of the first table kubectl printed (cells are apart by
/// at least two spaces; a name may hold one, as `CA EXPIRY`).
fn header(out: &str) -> Vec<String> {
    columns(out.lines().next().unwrap_or_default())
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// (offset, name) of each column of a table's header line.
fn columns(line: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !(chars[i] == ' ' && chars.get(i + 1).is_none_or(|c| *c == ' ')) {
            i += 1;
        }
        out.push((start, chars[start..i].iter().collect()));
    }
    out
}

/// The rows of the first table kubectl printed, each cell under its
/// column's name (kubectl aligns every cell with its column's header).
fn table(out: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = out.lines();
    let cols = columns(lines.next().unwrap_or_default());
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            cols.iter()
                .enumerate()
                .map(|(i, (start, name))| {
                    let end = cols.get(i + 1).map_or(chars.len(), |(s, _)| *s);
                    let cell: String = chars
                        .get(*start..end.min(chars.len()))
                        .unwrap_or_default()
                        .iter()
                        .collect();
                    (name.clone(), cell.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

/// Every table kubectl printed for `get a,b` (one per resource, apart by a
/// blank line).
fn tables(out: &str) -> Vec<String> {
    out.split("\n\n")
        .filter(|t| !t.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// The Ready condition of `obj`: (status, reason, message).
fn ready_condition(obj: &serde_json::Value) -> (String, String, String) {
    let c = capstan_tests::harness::condition(obj, "Ready")
        .unwrap_or_else(|| panic!("no Ready: {obj}"));
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test]
async fn capstans_crds_print_the_documented_columns_and_describe_shows_their_events() {
    let (cp, k) = own().await;
    k.apply_crds(true).await.unwrap();
    k.run_ok(&["create", "namespace", "team"]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = user_kubeconfig(&cp, dir.path(), "capstan", "capstan", MASTERS).unwrap();
    let issuer = cluster::start_issuer(&config, "default", "capstan-issuer-0").unwrap();
    let rotator = start_binary(
        "capstan-rotator",
        &config,
        &[
            "--cluster-resource-namespace",
            "default",
            "--leader-election-namespace",
            "default",
        ],
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "capstan-rotator-0"),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap();
    let logs = || {
        format!(
            "issuer:\n{}\nrotator:\n{}",
            issuer.logs().join("\n"),
            rotator.logs().join("\n")
        )
    };
    k.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  selfManaged:
    secretName: monitoring-ca
---
apiVersion: capstan.dev/v1alpha1
kind: CAIssuer
metadata:
  name: team-ca
  namespace: team
spec:
  selfManaged:
    secretName: team-ca
---
apiVersion: v1
kind: Namespace
metadata:
  name: trusting
  labels:
    trust: \"yes\"
---
apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: corp
spec:
  sources:
    - secret:
        namespace: default
        name: monitoring-ca
  target:
    configMap: corp-trust
  namespaceSelector:
    matchLabels:
      trust: \"yes\"
",
    )
    .await;
    let ccai = k
        .wait_condition(&["ccai", "monitoring-ca"], "Ready", "True", WAIT, POLL)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let cai = k
        .wait_condition(
            &["cai", "team-ca", "-n", "team"],
            "Ready",
            "True",
            WAIT,
            POLL,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let cab = await_condition("CABundle corp in sync", WAIT, POLL, || async {
        let b = k.get_json(&["cab", "corp"]).await?;
        (b["status"]["targetsInSync"] == 1 && ready_condition(&b).0 == "True").then_some(b)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // ClusterCAIssuer: as docs/quickstart-kind.md shows it, every cell the
    // column's JSONPath of the object.
    let out = k
        .run_ok(&["get", "clustercaissuer", "monitoring-ca", "-o", "wide"])
        .await
        .unwrap();
    assert_eq!(
        header(&out),
        [
            "NAME",
            "READY",
            "REASON",
            "PHASE",
            "CA EXPIRY",
            "NEXT ROTATION",
            "STATUS",
            "AGE"
        ],
        "{out}"
    );
    let (status, reason, message) = ready_condition(&ccai);
    let row = &table(&out)[0];
    assert_eq!(row["NAME"], "monitoring-ca", "{out}");
    assert_eq!(row["READY"], status, "{out}");
    assert_eq!(row["REASON"], reason, "{out}");
    assert_eq!(row["PHASE"], "Stable", "{out}");
    assert_eq!(
        row["CA EXPIRY"],
        ccai["status"]["ca"]["notAfter"].as_str().unwrap(),
        "{out}"
    );
    assert_eq!(
        row["NEXT ROTATION"],
        ccai["status"]["rotation"]["nextRotationTime"]
            .as_str()
            .unwrap(),
        "{out}"
    );
    assert_eq!(row["STATUS"], message, "{out}");
    // Without -o wide, the message (priority 1) is left out.
    let out = k.run_ok(&["get", "ccai"]).await.unwrap();
    assert_eq!(
        header(&out),
        [
            "NAME",
            "READY",
            "REASON",
            "PHASE",
            "CA EXPIRY",
            "NEXT ROTATION",
            "AGE"
        ],
        "{out}"
    );

    // docs/troubleshooting.md's first command: one table per kind, the
    // namespaced one with its namespace.
    let out = k
        .run_ok(&["get", "clustercaissuers,caissuers", "-A", "-o", "wide"])
        .await
        .unwrap();
    let printed = tables(&out);
    assert_eq!(printed.len(), 2, "{out}");
    assert_eq!(
        table(&printed[0])[0]["NAME"],
        "clustercaissuer.capstan.dev/monitoring-ca",
        "{out}"
    );
    assert_eq!(
        header(&printed[1]),
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "REASON",
            "PHASE",
            "CA EXPIRY",
            "NEXT ROTATION",
            "STATUS",
            "AGE"
        ],
        "{out}"
    );
    let (status, reason, message) = ready_condition(&cai);
    let row = &table(&printed[1])[0];
    assert_eq!(row["NAMESPACE"], "team", "{out}");
    assert_eq!(row["NAME"], "caissuer.capstan.dev/team-ca", "{out}");
    assert_eq!(
        (&row["READY"], &row["REASON"], &row["STATUS"]),
        (&status, &reason, &message),
        "{out}"
    );
    assert_eq!(
        row["CA EXPIRY"],
        cai["status"]["ca"]["notAfter"].as_str().unwrap(),
        "{out}"
    );
    assert_eq!(
        (row["PHASE"].as_str(), row["NEXT ROTATION"].as_str()),
        (
            "Stable",
            cai["status"]["rotation"]["nextRotationTime"]
                .as_str()
                .unwrap()
        ),
        "{out}"
    );

    // CABundle, as docs/troubleshooting.md's second command.
    let out = k.run_ok(&["get", "cabundles", "-o", "wide"]).await.unwrap();
    assert_eq!(
        header(&out),
        ["NAME", "READY", "IN SYNC", "TARGETS", "CERTIFICATES", "AGE"],
        "{out}"
    );
    let row = &table(&out)[0];
    assert_eq!(row["NAME"], "corp", "{out}");
    assert_eq!(row["READY"], "True", "{out}");
    assert_eq!(row["IN SYNC"], "1", "{out}");
    assert_eq!(row["TARGETS"], "1", "{out}");
    assert_eq!(
        row["CERTIFICATES"],
        cab["status"]["certificates"].to_string(),
        "{out}"
    );

    // kubectl describe finds the Events capstan wrote on the cluster-scoped
    // issuer (in `default`, as docs/concepts.md says) and on a request.
    let events = await_condition("the issuer's Events", WAIT, POLL, || async {
        let list = k
            .get_json(&[
                "events",
                "-n",
                "default",
                "--field-selector",
                "involvedObject.name=monitoring-ca,involvedObject.kind=ClusterCAIssuer",
            ])
            .await?;
        let reasons: Vec<String> = list["items"]
            .as_array()?
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect();
        (!reasons.is_empty()).then_some(reasons)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let out = k
        .run_ok(&["describe", "clustercaissuer", "monitoring-ca"])
        .await
        .unwrap();
    assert!(out.contains("Kind:         ClusterCAIssuer"), "{out}");
    let described = out.split("\nEvents:").nth(1).unwrap_or_default();
    for reason in &events {
        assert!(described.contains(reason.as_str()), "{reason}: {out}");
    }
    let request = p256_csr(
        dir.path(),
        "web",
        "/CN=web.team.svc",
        Some("DNS:web.team.svc"),
    );
    k.apply(&format!(
        "apiVersion: cert-manager.io/v1
kind: CertificateRequest
metadata:
  name: web
  namespace: team
spec:
  request: {request}
  usages: [digital signature, server auth]
  issuerRef:
    group: capstan.dev
    kind: CAIssuer
    name: team-ca
"
    ))
    .await;
    k.approve_request("team", "web").await.unwrap();
    k.wait_condition(&["cr", "web", "-n", "team"], "Ready", "True", WAIT, POLL)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    // docs/troubleshooting.md: describe shows the Ready condition and the
    // Events.
    let out = await_condition("the Issued Event in describe", WAIT, POLL, || async {
        let out = k
            .run_ok(&["describe", "certificaterequest", "-n", "team", "web"])
            .await
            .ok()?;
        out.split("\nEvents:")
            .nth(1)?
            .contains("Issued")
            .then_some(out)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert!(out.contains("Reason:                Issued"), "{out}");
    assert!(out.contains("Type:                  Ready"), "{out}");
    drop((issuer, rotator));
}
