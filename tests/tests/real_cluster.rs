//! The end-to-end story on a real cluster (kind, k3d, ...) when
//! `CAPSTAN_E2E_KUBECONFIG` names its kubeconfig; otherwise on a real
//! control plane the suite starts itself (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok with a fake node, so the
//! Deployment's pods become Ready and its rollouts complete).
//!
//! Only what every Kubernetes API server offers is used: the real
//! `capstan-issuer` and `capstan-rotator` binaries run on this machine with
//! the kubeconfig, `kubectl` drives and reads, `openssl` checks. Everything is
//! made in a fresh namespace (and one uniquely named `ClusterCAIssuer`) that
//! is deleted at the end, so the run leaves the cluster as it found it.
//!
//! ```sh
//! cargo build --bins
//! CAPSTAN_E2E_KUBECONFIG=$HOME/.kube/config \
//!   cargo test -p capstan-tests --test real_cluster -- --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_tests::cluster::{decode_b64, openssl_ok, p256_csr, start_binary};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, workspace_root};
use capstan_tests::hygiene;
use serde_json::Value;

/// The environment variable naming a real cluster's kubeconfig.
const KUBECONFIG_VAR: &str = "CAPSTAN_E2E_KUBECONFIG";
/// Real clusters pull images and schedule pods: give them time.
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(500);

/// Where the suite runs: a real cluster, or a control plane it started.
struct Target {
    kubeconfig: PathBuf,
    real: bool,
    /// Kept alive for the run when no real cluster was given.
    _server: Option<ControlPlane>,
}

async fn target() -> Target {
    match std::env::var_os(KUBECONFIG_VAR) {
        Some(path) if !path.is_empty() => {
            println!("{KUBECONFIG_VAR} is set: running against the real cluster it names");
            Target {
                kubeconfig: PathBuf::from(path),
                real: true,
                _server: None,
            }
        }
        _ => {
            println!(
                "{KUBECONFIG_VAR} is not set: running the same story against a \
                 control plane of its own (etcd, kube-apiserver, controller-manager, \
                 scheduler, kwok)"
            );
            let server = ControlPlane::start().await.unwrap();
            Target {
                kubeconfig: server.kubeconfig_path().to_path_buf(),
                real: false,
                _server: Some(server),
            }
        }
    }
}

/// The suite's handles: kubectl, its namespace and issuer name, a scratch
/// directory for openssl.
struct Story {
    kubectl: Kubectl,
    namespace: String,
    issuer: String,
    dir: tempfile::TempDir,
}

impl Story {
    async fn apply(&self, yaml: &str) {
        let out = self.kubectl.stdin("apply", yaml).await;
        assert!(out.success(), "kubectl apply:\n{}\n{yaml}", out.stderr);
    }

    async fn json(&self, args: &[&str]) -> Option<Value> {
        self.kubectl.get_json(args).await
    }

    async fn condition(&self, args: &[&str], type_: &str, status: &str) -> Value {
        self.kubectl
            .wait_condition(args, type_, status, WAIT, POLL)
            .await
            .unwrap()
    }

    async fn event(&self, reason: &str, object: &str) -> Value {
        let selector = format!("reason={reason},involvedObject.name={object}");
        await_condition(
            &format!("event {reason} on {object}"),
            WAIT,
            POLL,
            || async {
                let events = self
                    .json(&[
                        "events",
                        "-n",
                        &self.namespace,
                        "--field-selector",
                        &selector,
                    ])
                    .await?;
                events["items"].as_array()?.first().cloned()
            },
        )
        .await
        .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) -> String {
        openssl_ok(self.dir.path(), args)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Requests a certificate for `dns` the way cert-manager does, approves
    /// it as cert-manager's approver does, and returns (leaf, ca) PEM once
    /// it is Ready.
    async fn issue(&self, name: &str, dns: &str) -> (String, String) {
        let csr = p256_csr(
            self.dir.path(),
            name,
            &format!("/CN={dns}"),
            Some(&format!("DNS:{dns}")),
        );
        self.apply(&format!(
            "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  request: {csr}\n  duration: 2h\n  usages: [digital signature, key encipherment, server auth]\n  issuerRef:\n    group: capstan.dev\n    kind: ClusterCAIssuer\n    name: {issuer}\n",
            ns = self.namespace,
            issuer = self.issuer
        ))
        .await;
        self.kubectl
            .set_request_condition(
                &self.namespace,
                name,
                "Approved",
                "approved by the e2e suite",
            )
            .await
            .unwrap();
        let cr = self
            .condition(
                &["certificaterequest", name, "-n", &self.namespace],
                "Ready",
                "True",
            )
            .await;
        (
            decode_b64(&cr["status"]["certificate"]),
            decode_b64(&cr["status"]["ca"]),
        )
    }

    /// Writes the leaf and its key into Secret `tls` as cert-manager would.
    async fn store_leaf(&self, name: &str, leaf: &str) {
        let crt = self.write(&format!("{name}.crt"), leaf);
        let yaml = self
            .kubectl
            .run_ok(&[
                "create",
                "secret",
                "tls",
                "app-tls",
                "-n",
                &self.namespace,
                &format!("--cert={}", crt.display()),
                &format!("--key={}", self.path(&format!("{name}.key")).display()),
                "--dry-run=client",
                "-o",
                "yaml",
            ])
            .await
            .unwrap();
        self.apply(&yaml).await;
    }

    /// The Deployment's `capstan.dev/config-hash`: on the object (the
    /// baseline the rotator records when it starts watching) or on the pod
    /// template (set only when it rolls the workload).
    async fn config_hash(&self, on_template: bool) -> Option<String> {
        let d = self
            .json(&["deployment", "app", "-n", &self.namespace])
            .await?;
        let meta = if on_template {
            &d["spec"]["template"]["metadata"]
        } else {
            &d["metadata"]
        };
        meta["annotations"]["capstan.dev/config-hash"]
            .as_str()
            .map(str::to_owned)
    }
}

fn start(binary: &str, kubeconfig: &Path, namespace: &str, extra: &[&str]) -> RunningBinary {
    let mut args = vec![
        "--cluster-resource-namespace",
        namespace,
        "--leader-election-namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    start_binary(
        binary,
        kubeconfig,
        &args,
        &[
            ("POD_NAMESPACE", namespace),
            ("POD_NAME", binary),
            ("RUST_LOG", "info"),
        ],
    )
    .unwrap()
}

/// A name unique enough for a shared cluster.
fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
}

/// Installs capstan's CRDs, and cert-manager's unless the cluster has them
/// (a real cluster's own cert-manager CRDs are never replaced).
async fn install_crds(kubectl: &Kubectl) {
    let has_cert_manager = kubectl
        .run(&["get", "crd", "certificaterequests.cert-manager.io"])
        .await
        .unwrap()
        .success();
    let mut dirs = vec![workspace_root().join("crds")];
    if !has_cert_manager {
        dirs.push(workspace_root().join("tests/fixtures/cert-manager-crds"));
    }
    for dir in dirs {
        kubectl
            .run_ok(&["apply", "-f", dir.to_str().unwrap()])
            .await
            .unwrap();
    }
    for crd in [
        "certificaterequests.cert-manager.io",
        "clustercaissuers.capstan.dev",
        "cabundles.capstan.dev",
    ] {
        kubectl
            .run_ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                crd,
            ])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn issue_inject_rotate_and_roll_on_the_target_cluster() {
    let target = target().await;
    let kubectl = Kubectl::new(&target.kubeconfig).unwrap();
    install_crds(&kubectl).await;
    let suffix = unique_suffix();
    let story = Story {
        kubectl,
        namespace: format!("capstan-e2e-{suffix}"),
        issuer: format!("capstan-e2e-{suffix}"),
        dir: tempfile::tempdir().unwrap(),
    };
    story
        .kubectl
        .run_ok(&["create", "namespace", &story.namespace])
        .await
        .unwrap();
    let issuer = start("capstan-issuer", &target.kubeconfig, &story.namespace, &[]);
    let rotator = start(
        "capstan-rotator",
        &target.kubeconfig,
        &story.namespace,
        &["--restart-debounce=2s"],
    );

    // A self-managed CA, Ready.
    story
        .apply(&format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: ClusterCAIssuer\nmetadata:\n  name: {}\nspec:\n  selfManaged:\n    secretName: {}-ca\n    propagationDelay: 5s\n",
            story.issuer, story.issuer
        ))
        .await;
    story
        .condition(&["clustercaissuer", &story.issuer], "Ready", "True")
        .await;

    // A certificate for a metrics endpoint, checked with openssl.
    let (leaf, ca) = story.issue("metrics-1", "app.metrics.svc").await;
    let leaf_file = story.write("leaf-1.pem", &leaf);
    let ca_file = story.write("ca-1.pem", &ca);
    let verify = story.openssl(&[
        "verify",
        "-CAfile",
        ca_file.to_str().unwrap(),
        leaf_file.to_str().unwrap(),
    ]);
    assert!(verify.contains(": OK"), "{verify}");
    let text = story.openssl(&[
        "x509",
        "-in",
        leaf_file.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(
        text.contains("DNS:app.metrics.svc") && text.contains("TLS Web Server Authentication"),
        "{text}"
    );
    story.event("Issued", "metrics-1").await;

    // The CA bundle reaches an annotated ConfigMap; the leaf verifies with it.
    story
        .apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scrape-ca\n  namespace: {}\n  annotations:\n    capstan.dev/inject-ca-from-issuer: {}\n",
            story.namespace, story.issuer
        ))
        .await;
    let bundle = await_condition("the injected bundle", WAIT, POLL, || async {
        let cm = story
            .json(&["configmap", "scrape-ca", "-n", &story.namespace])
            .await?;
        cm["data"]["ca-bundle.crt"].as_str().map(str::to_owned)
    })
    .await
    .unwrap();
    let bundle_file = story.write("bundle-1.pem", &bundle);
    let verify = story.openssl(&[
        "verify",
        "-CAfile",
        bundle_file.to_str().unwrap(),
        leaf_file.to_str().unwrap(),
    ]);
    assert!(verify.contains(": OK"), "{verify}");

    // A workload that mounts the leaf Secret and opts in to restarts.
    story.store_leaf("metrics-1", &leaf).await;
    story
        .apply(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: {}\n  annotations:\n    capstan.dev/restart-on-change: \"true\"\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: capstan-e2e}}\n  template:\n    metadata:\n      labels: {{app: capstan-e2e}}\n    spec:\n      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n        volumeMounts:\n        - {{name: tls, mountPath: /tls, readOnly: true}}\n      volumes:\n      - name: tls\n        secret: {{secretName: app-tls}}\n",
            story.namespace
        ))
        .await;
    let baseline = await_condition("the baseline config hash", WAIT, POLL, || {
        story.config_hash(false)
    })
    .await
    .unwrap();
    assert_eq!(
        story.config_hash(true).await,
        None,
        "recording the baseline must not roll the workload"
    );

    let first_ca = story
        .json(&["clustercaissuer", &story.issuer])
        .await
        .unwrap()["status"]["ca"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    // Rotate the CA: the bundle holds both, the renewed leaf comes from the
    // new CA, the workload rolls once, and the Events tell the story.
    story
        .kubectl
        .rotate(&story.issuer, "e2e-drill")
        .await
        .unwrap();
    await_condition("both CAs in the injected bundle", WAIT, POLL, || async {
        let cm = story
            .json(&["configmap", "scrape-ca", "-n", &story.namespace])
            .await?;
        let pem = cm["data"]["ca-bundle.crt"].as_str()?;
        (pem.matches("BEGIN CERTIFICATE").count() == 2).then_some(())
    })
    .await
    .unwrap();
    await_condition("signing with the new CA", WAIT, POLL, || async {
        let issuer = story.json(&["clustercaissuer", &story.issuer]).await?;
        let now = issuer["status"]["ca"]["fingerprint"].as_str()?;
        (now != first_ca).then_some(())
    })
    .await
    .unwrap();
    let (leaf2, ca2) = story.issue("metrics-2", "app.metrics.svc").await;
    assert_ne!(ca2, ca, "the renewed leaf comes from the new CA");
    let leaf2_file = story.write("leaf-2.pem", &leaf2);
    let cm = story
        .json(&["configmap", "scrape-ca", "-n", &story.namespace])
        .await
        .unwrap();
    let bundle2 = story.write(
        "bundle-2.pem",
        cm["data"]["ca-bundle.crt"].as_str().unwrap(),
    );
    for leaf in [&leaf_file, &leaf2_file] {
        let out = story.openssl(&[
            "verify",
            "-CAfile",
            bundle2.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ]);
        assert!(
            out.contains(": OK"),
            "old and new leaves verify with the bundle: {out}"
        );
    }
    story.store_leaf("metrics-2", &leaf2).await;
    let rolled = await_condition("the workload's rollout", WAIT, POLL, || async {
        story.config_hash(true).await.filter(|h| *h != baseline)
    })
    .await
    .unwrap();
    story.event("RolloutTriggered", "app").await;
    story.event("RolloutCompleted", "app").await;
    story.event("ConfigMapUpdated", "scrape-ca").await;
    let events = story
        .kubectl
        .run_ok(&["get", "events", "-n", &story.namespace])
        .await
        .unwrap();
    println!("{events}");
    assert_eq!(
        story.config_hash(true).await.as_deref(),
        Some(rolled.as_str()),
        "one rollout for one change"
    );

    // No private key outside Secrets (on a real cluster this scans every
    // namespace the kubeconfig may read).
    let keys = hygiene::keys_in_dir(story.dir.path());
    hygiene::assert_no_key_leaks(&story.kubectl, &[&issuer, &rotator], &keys).await;

    // Leave the cluster as it was found.
    story
        .kubectl
        .run_ok(&["delete", "clustercaissuer", &story.issuer])
        .await
        .unwrap();
    let mut delete = vec!["delete", "namespace", story.namespace.as_str()];
    if target.real {
        delete.push("--wait=false");
    }
    story.kubectl.run_ok(&delete).await.unwrap();
    drop((issuer, rotator));
}
