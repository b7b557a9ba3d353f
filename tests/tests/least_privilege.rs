//! The chart's RBAC is exactly what the code uses, and nothing leaks a
//! private key.
//!
//! The issuer and rotator run as their chart ServiceAccounts (no
//! system:masters) with the chart's rendered roles enforced by the test API
//! server, through a scenario that exercises every feature: self-managed and
//! user-provided CAs, CertificateRequests, a Kubernetes CSR, a CA rotation,
//! bundle injection (including a refused private-key source), a `CABundle`
//! that creates and deletes targets, and a restart. Then:
//! * no call was refused (the roles grant all the code needs);
//! * every granted verb on every resource was used (the roles grant
//!   nothing more), except the few listed with their reason;
//! * no ConfigMap, Event, status, log line or metric holds private-key
//!   material, neither PEM headers nor any line of the CA keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use capstan_tests::apiserver::TestApiServer;
use capstan_tests::cluster::{
    request_condition_args, request_condition_patch, start_binary, user_kubeconfig,
};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, helm_path, workspace_root};
use capstan_tests::hygiene::assert_no_key_leaks;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);
const ISSUER: &str = "system:serviceaccount:capstan:capstan-issuer";
const ROTATOR: &str = "system:serviceaccount:capstan:capstan-rotator";

/// Granted but not used by this scenario: (verb, group, resource, why).
/// `*` matches any group or resource.
const UNUSED_ON_PURPOSE: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "*",
        "*",
        "reads go through watches; a get happens only after a conflict or restart",
    ),
    (
        "patch",
        "apps",
        "statefulsets",
        "the scenario rolls a Deployment; StatefulSets take the same code path",
    ),
    (
        "patch",
        "apps",
        "daemonsets",
        "the scenario rolls a Deployment; DaemonSets take the same code path",
    ),
];

struct Env {
    server: TestApiServer,
    admin: Kubectl,
    dir: tempfile::TempDir,
}

impl Env {
    async fn apply(&self, yaml: &str) {
        let out = self.admin.stdin("apply", yaml).await;
        assert!(out.success(), "kubectl apply:\n{}\n{yaml}", out.stderr);
    }

    async fn json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.admin.run(&all).await.ok()?;
        out.success()
            .then(|| serde_json::from_str(&out.stdout).ok())
            .flatten()
    }

    async fn condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        self.admin
            .wait_condition(args, type_, status, WAIT, POLL)
            .await
            .unwrap_or_else(|e| panic!("{e}\nrefused so far: {:#?}", self.refused()))
    }

    /// Calls of the components the API server refused.
    fn refused(&self) -> Vec<String> {
        self.server
            .request_log()
            .iter()
            .filter(|r| (r.user == ISSUER || r.user == ROTATOR) && r.code == 403)
            .map(|r| {
                format!(
                    "{} {} {}/{} {} {}/{}",
                    r.user, r.verb, r.group, r.resource, r.subresource, r.namespace, r.name
                )
            })
            .collect()
    }

    async fn event(&self, namespace: &str, reason: &str) {
        await_condition(&format!("event {reason}"), WAIT, POLL, || async {
            let events = self.json(&["get", "events", "-n", namespace]).await?;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| e["reason"] == reason)
                .then_some(())
        })
        .await
        .unwrap();
    }

    fn start(&self, binary: &str, user: &str, args: &[&str]) -> RunningBinary {
        let groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:capstan",
            "system:authenticated",
        ];
        let path = user_kubeconfig(&self.server, self.dir.path(), binary, user, &groups).unwrap();
        start_binary(
            binary,
            &path,
            args,
            &[
                ("POD_NAMESPACE", "capstan"),
                ("POD_NAME", binary),
                (
                    "RUST_LOG",
                    "debug,kube=info,hyper=info,tower=info,rustls=info",
                ),
            ],
        )
        .unwrap()
    }
}

/// The chart rendered with its defaults (CRDs applied separately).
fn rendered_chart() -> String {
    let out = std::process::Command::new(helm_path().unwrap())
        .args(["template", "capstan"])
        .arg(workspace_root().join("charts/capstan"))
        .args(["--namespace", "capstan", "--set", "crds.enabled=false"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (verb, group, resource[/subresource]) granted to a ServiceAccount by the
/// chart's ClusterRoles and Roles bound to it.
fn granted(chart: &str, service_account: &str) -> BTreeSet<(String, String, String)> {
    use serde::Deserialize as _;
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(chart)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let bound: BTreeSet<String> = docs
        .iter()
        .filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some("ClusterRoleBinding" | "RoleBinding")
            )
        })
        .filter(|d| {
            d["subjects"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|s| s["name"] == service_account))
        })
        .map(|d| d["roleRef"]["name"].as_str().unwrap().to_owned())
        .collect();
    let mut out = BTreeSet::new();
    for role in docs.iter().filter(|d| {
        matches!(d["kind"].as_str(), Some("ClusterRole" | "Role"))
            && bound.contains(d["metadata"]["name"].as_str().unwrap())
    }) {
        for rule in role["rules"].as_sequence().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_sequence()
                    .map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((verb, group.clone(), resource.clone()));
                    }
                }
            }
        }
    }
    out
}

/// (verb, group, resource[/subresource]) a user called, from the request log.
fn used(server: &TestApiServer, user: &str) -> BTreeSet<(String, String, String)> {
    server
        .request_log()
        .into_iter()
        .filter(|r| r.user == user && !r.resource.is_empty())
        .map(|r| {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            (r.verb.clone(), r.group.clone(), resource)
        })
        .collect()
}

fn user_ca_secret() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let ca = capstan_pki::generate_ca(
        &capstan_pki::CaSpec {
            common_name: "team CA".into(),
            organization: None,
            algorithm: capstan_pki::KeyAlgorithm::EcdsaP256,
            lifetime: Duration::from_secs(24 * 3600),
        },
        now,
    )
    .unwrap();
    (ca.cert_pem, ca.key.expose().to_owned())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn csr_pem() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["app.monitoring.svc".to_owned()]).unwrap();
    (
        params.serialize_request(&key).unwrap().pem().unwrap(),
        key.serialize_pem(),
    )
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_code_uses_and_no_key_leaks() {
    let server = TestApiServer::builder()
        .rollout_delay(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let admin = Kubectl::for_server(&server).unwrap();
    let env = Env {
        server,
        admin,
        dir: tempfile::tempdir().unwrap(),
    };
    for dir in [
        workspace_root().join("tests/fixtures/cert-manager-crds"),
        workspace_root().join("crds"),
    ] {
        env.admin
            .run_ok(&["apply", "-f", dir.to_str().unwrap()])
            .await
            .unwrap();
    }
    env.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: capstan\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: monitoring\n")
        .await;
    let chart = rendered_chart();
    env.apply(&chart).await;

    let issuer = env.start("capstan-issuer", ISSUER, &[]);
    let rotator = env.start("capstan-rotator", ROTATOR, &["--restart-debounce=1s"]);

    // Issuers: self-managed (cluster) and user-provided (namespaced).
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: monitoring-ca\nspec:\n  maxDuration: 1h\n  selfManaged:\n    secretName: monitoring-ca\n    duration: 2h\n    rotateBefore: 30m\n    propagationDelay: 2s\n").await;
    let (team_crt, team_key) = user_ca_secret();
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: team-ca\n  namespace: monitoring\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\napiVersion: capstan.dev/v1alpha1\nkind: CAIssuer\nmetadata:\n  name: team\n  namespace: monitoring\nspec:\n  ca:\n    secretName: team-ca\n",
        b64(&team_crt),
        b64(&team_key)
    ))
    .await;
    env.condition(&["clustercaissuer", "monitoring-ca"], "Ready", "True")
        .await;
    env.condition(&["caissuer", "team", "-n", "monitoring"], "Ready", "True")
        .await;

    // CertificateRequests for both, approved as cert-manager's approver does.
    let mut leaf_keys = Vec::new();
    for (name, kind, issuer_name) in [
        ("app-cluster", "ClusterCAIssuer", "monitoring-ca"),
        ("app-team", "CAIssuer", "team"),
    ] {
        let (csr, key) = csr_pem();
        leaf_keys.push(key);
        env.apply(&format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: monitoring\nspec:\n  request: {}\n  issuerRef:\n    group: capstan.dev\n    kind: {kind}\n    name: {issuer_name}\n",
            b64(&csr)
        ))
        .await;
        let approve = request_condition_patch("Approved", "approved");
        let out = env
            .admin
            .run(&request_condition_args("monitoring", name, &approve))
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
        env.condition(
            &["certificaterequest", name, "-n", "monitoring"],
            "Ready",
            "True",
        )
        .await;
    }

    // A Kubernetes CSR for the cluster issuer's signer.
    let (csr, key) = csr_pem();
    leaf_keys.push(key);
    env.apply(&format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: app-csr\nspec:\n  request: {}\n  signerName: clustercaissuers.capstan.dev/monitoring-ca\n  usages: [digital signature, server auth]\n",
        b64(&csr)
    ))
    .await;
    env.admin
        .run_ok(&["certificate", "approve", "app-csr"])
        .await
        .unwrap();
    await_condition("the CSR's certificate", WAIT, POLL, || async {
        let csr = env.json(&["get", "csr", "app-csr"]).await?;
        csr["status"]["certificate"].as_str().map(|_| ())
    })
    .await
    .unwrap();

    // Bundles: an injected ConfigMap, a refused private-key source, and a
    // CABundle whose selected namespace comes and goes.
    env.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scrape-ca\n  namespace: monitoring\n  annotations:\n    capstan.dev/inject-ca-from-issuer: monitoring-ca\n").await;
    env.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: careless\n  namespace: monitoring\ndata:\n  ca.crt: {}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: careless-ca\n  namespace: monitoring\n  annotations:\n    capstan.dev/inject-ca-from: monitoring/careless\n",
        b64(&format!("{team_crt}{team_key}"))
    ))
    .await;
    env.apply("apiVersion: capstan.dev/v1alpha1\nkind: CABundle\nmetadata:\n  name: corp\nspec:\n  sources:\n  - secret: {namespace: monitoring, name: team-ca, key: tls.crt}\n  target:\n    configMap: corp-ca\n  namespaceSelector:\n    matchLabels: {corp-ca: \"yes\"}\n").await;
    env.admin
        .run_ok(&["label", "namespace", "monitoring", "corp-ca=yes"])
        .await
        .unwrap();
    await_condition("the CABundle target", WAIT, POLL, || async {
        env.json(&["get", "configmap", "corp-ca", "-n", "monitoring"])
            .await
            .map(|_| ())
    })
    .await
    .unwrap();
    env.admin
        .run_ok(&["label", "namespace", "monitoring", "corp-ca-"])
        .await
        .unwrap();
    await_condition("the CABundle target to go", WAIT, POLL, || async {
        env.json(&["get", "configmap", "corp-ca", "-n", "monitoring"])
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();

    // A restart, then a CA rotation that reaches the injected ConfigMap.
    env.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-config\n  namespace: monitoring\nstringData:\n  level: info\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: monitoring\n  annotations:\n    capstan.dev/restart-on-change: \"true\"\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n        envFrom:\n        - secretRef: {name: app-config}\n").await;
    // Change only once the rotator knows the content (it says so once).
    rotator
        .wait_for_log(WAIT, |l| {
            l.contains("watching the sources of Deployment/app") && l.contains("Secret/app-config")
        })
        .await
        .unwrap();
    env.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-config\n  namespace: monitoring\nstringData:\n  level: debug\n").await;
    env.event("monitoring", "RolloutCompleted").await;
    env.admin
        .run_ok(&[
            "annotate",
            "clustercaissuer",
            "monitoring-ca",
            "capstan.dev/rotate=drill-1",
        ])
        .await
        .unwrap();
    env.event("default", "CARotated").await;
    env.event("monitoring", "ConfigMapUpdated").await;

    // 1. Nothing was refused.
    let refused = env.refused();
    assert!(refused.is_empty(), "the chart's RBAC refused: {refused:#?}");

    // 2. Everything granted was used.
    let mut overgranted = Vec::new();
    for (user, service_account) in [(ISSUER, "capstan-issuer"), (ROTATOR, "capstan-rotator")] {
        let granted = granted(&chart, service_account);
        let used = used(&env.server, user);
        println!("{service_account}: granted {granted:?}\n  used {used:?}");
        let unused: Vec<_> = granted
            .iter()
            .filter(|g| !used.contains(g))
            .filter(|(verb, group, resource)| {
                // The approver and signer grants are checked by other
                // components (cert-manager, kube-controller-manager).
                let signer = resource == "signers" && group == "certificates.k8s.io";
                let exempt = UNUSED_ON_PURPOSE.iter().any(|(v, g, r, _)| {
                    v == verb && (*g == "*" || g == group) && (*r == "*" || r == resource)
                });
                !signer && !exempt
            })
            .collect();
        overgranted.extend(
            unused
                .into_iter()
                .map(|u| format!("{service_account}: {u:?}")),
        );
    }
    assert!(
        overgranted.is_empty(),
        "granted more than used: {overgranted:#?}"
    );

    // 3. No private key anywhere but Secrets: the CA keys the Secrets hold,
    // the user CA's key and the leaf keys this test made.
    for binary in [&issuer, &rotator] {
        assert!(binary.metrics_text().await.is_some(), "metrics are scanned");
    }
    let mut keys: Vec<String> = vec![team_key];
    keys.extend(leaf_keys);
    let scanned = assert_no_key_leaks(&env.admin, &[&issuer, &rotator], &keys).await;
    assert!(scanned.keys >= 6, "the CA keys and ours: {scanned:?}");
    println!(
        "scanned {} bytes of ConfigMaps, Events, statuses, logs and metrics for {} private keys",
        scanned.bytes, scanned.keys
    );
}
