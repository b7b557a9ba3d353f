//! End to end: the real `capstan-rotator` (and, for issuer sources, the real
//! `capstan-issuer`) against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager), driven with the real kubectl, checked with the
//! real openssl.
//!
//! * Annotated ConfigMaps get their source's CAs under one key; other keys
//!   are left alone, a hand edit is put back, an unchanged bundle is never
//!   rewritten, a source holding a private key is refused with a Warning.
//! * With an issuer source, a manual CA rotation puts both CAs in the
//!   ConfigMap while they overlap, and leaves of both verify against it.
//! * A `CABundle` creates, updates and deletes its ConfigMaps as namespaces
//!   are selected and unselected, and counts them in its status (what it
//!   created goes with it, collected by the real garbage collector).
//! * Two writers of one ConfigMap key do not fight: the older `CABundle` (or
//!   the ConfigMap's own injection annotation) keeps it, the other reports
//!   `TargetConflict`; a source that is a bundle's output is refused.
//! * Secrets other than sources are only ever listed and watched as
//!   metadata.
//!
//! Each test starts its own control plane (the rotator acts cluster-wide and
//! holds a leader-election Lease); no test needs Ready pods, so none runs
//! the scheduler or kwok. The rotator talks to kube-apiserver through a
//! [`FaultProxy`] that injects nothing and records each request (method,
//! URI, `Accept`), which is how the suite tells what the rotator asked for
//! and wrote; the test's kubectl and client talk to kube-apiserver directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use capstan_tests::cluster::{
    MASTERS, decode_b64, openssl_ok, p256_ca, p256_csr, scraped_series, start_binary, start_issuer,
    user_kubeconfig_at,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::proxy::{self, FaultProxy, Seen};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition};
use capstan_tests::hygiene;
use capstan_testserver::faults::{Faults, FaultsHandle};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";
const BUNDLE_KEY: &str = "ca-bundle.crt";

struct Env {
    rotator: RunningBinary,
    issuer: Option<RunningBinary>,
    /// Between the rotator and kube-apiserver; records what it sent.
    proxy: FaultProxy,
    client: kube::Client,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
    /// Declared last so it is dropped last, after the binaries.
    cp: ControlPlane,
}

/// A control plane with capstan's CRDs (and cert-manager's when
/// `with_issuer`), namespaces `certs` and `apps`, the rotator (through the
/// recording proxy) and optionally the issuer.
async fn start(with_issuer: bool) -> Env {
    start_with(with_issuer, &[]).await
}

/// [`start`] with extra rotator arguments.
async fn start_with(with_issuer: bool, extra: &[&str]) -> Env {
    let cp = ControlPlane::builder()
        .workloads(false)
        .start()
        .await
        .unwrap();
    let proxy = FaultProxy::start(&cp, FaultsHandle::new(Faults::default()))
        .await
        .unwrap();
    let client = cp.client().await.unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    kubectl.apply_crds(with_issuer).await.unwrap();
    for ns in ["certs", "apps"] {
        kubectl.run_ok(&["create", "namespace", ns]).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let rotator_config = user_kubeconfig_at(
        &cp,
        proxy.url(),
        dir.path(),
        "capstan-rotator",
        ROTATOR_USER,
        MASTERS,
    )
    .unwrap();
    let mut args = vec!["--leader-election-namespace", "default"];
    args.extend_from_slice(extra);
    let rotator = start_binary(
        "capstan-rotator",
        &rotator_config,
        &args,
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "rotator-0"),
            ("CAPSTAN_CLUSTER_RESOURCE_NAMESPACE", "certs"),
            ("RUST_LOG", "info,capstan_rotator=debug"),
        ],
    )
    .unwrap();
    let issuer = with_issuer.then(|| {
        let config = user_kubeconfig_at(
            &cp,
            &cp.url(),
            dir.path(),
            "capstan-issuer",
            "system:serviceaccount:default:capstan-issuer",
            MASTERS,
        )
        .unwrap();
        start_issuer(&config, "certs", "issuer-0").unwrap()
    });
    Env {
        rotator,
        issuer,
        proxy,
        client,
        kubectl,
        dir,
        cp,
    }
}

impl Env {
    /// Fails on any private key (the Secrets' and those this test made)
    /// outside Secrets: objects, the binaries' logs, their metrics.
    async fn assert_no_key_leaks(&self) {
        let mut binaries = vec![&self.rotator];
        binaries.extend(self.issuer.as_ref());
        let keys = hygiene::keys_in_dir(self.dir.path());
        hygiene::assert_no_key_leaks(&self.kubectl, &binaries, &keys).await;
    }

    fn logs(&self) -> String {
        let issuer = self
            .issuer
            .as_ref()
            .map(|i| i.logs().join("\n"))
            .unwrap_or_default();
        format!(
            "rotator logs:\n{}\nissuer logs:\n{issuer}",
            self.rotator.logs().join("\n")
        )
    }

    async fn apply(&self, yaml: &str) {
        self.kubectl.apply(yaml).await;
    }

    async fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl.run_ok(args).await.unwrap()
    }

    async fn get_json(&self, args: &[&str]) -> Option<Value> {
        self.kubectl.get_json(args).await
    }

    async fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// Waits until ConfigMap `ns/name` satisfies `pred`; returns it.
    async fn wait_config_map(
        &self,
        what: &str,
        ns: &str,
        name: &str,
        pred: impl Fn(&ConfigMap) -> bool,
    ) -> ConfigMap {
        let found = await_condition(what, WAIT, POLL, || async {
            self.config_map(ns, name).await.filter(|cm| pred(cm))
        })
        .await;
        match found {
            Ok(cm) => cm,
            Err(e) => panic!(
                "{e}\nlast seen: {:?}\n{}",
                self.config_map(ns, name).await,
                self.logs()
            ),
        }
    }

    async fn events(&self, ns: &str) -> String {
        self.kubectl(&["get", "events", "-n", ns]).await
    }

    async fn wait_events(&self, ns: &str, needle: &str) -> String {
        let found = await_condition(needle, WAIT, POLL, || async {
            let events = self.events(ns).await;
            events.contains(needle).then_some(events)
        })
        .await;
        match found {
            Ok(events) => events,
            Err(e) => panic!("{e}\nevents:\n{}\n{}", self.events(ns).await, self.logs()),
        }
    }

    /// Waits for `.status` of a `CABundle` to satisfy `pred`.
    async fn wait_bundle(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = await_condition(what, WAIT, POLL, || async {
            self.get_json(&["cabundle", name])
                .await
                .filter(|b| pred(&b["status"]))
        })
        .await;
        match found {
            Ok(b) => b,
            Err(e) => panic!(
                "{e}\nlast seen: {:?}\n{}",
                self.get_json(&["cabundle", name]).await,
                self.logs()
            ),
        }
    }

    fn openssl(&self, args: &[&str]) -> String {
        openssl_ok(self.dir.path(), args)
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).to_str().unwrap().to_owned()
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap()
    }

    fn write(&self, file: &str, content: &str) -> String {
        std::fs::write(self.dir.path().join(file), content).unwrap();
        self.path(file)
    }

    /// A self-signed CA: `<name>.crt`, `<name>.key`.
    fn ca(&self, name: &str) -> String {
        p256_ca(self.dir.path(), name)
    }

    /// A leaf `<name>.crt` signed by CA `<ca>`.
    fn leaf(&self, name: &str, ca: &str) -> String {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &format!("{name}.crt"),
        ]);
        self.path(&format!("{name}.crt"))
    }

    /// Whether `leaf` verifies against `bundle` (PEM text).
    fn verifies(&self, leaf: &str, bundle: &str) -> (bool, String) {
        let file = self.write("bundle-under-test.pem", bundle);
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", &file, leaf])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A Secret from files of the test's directory (`key=file`).
    async fn secret(&self, ns: &str, name: &str, files: &[(&str, &str)]) {
        let mut args = vec![
            "create".to_owned(),
            "secret".to_owned(),
            "generic".to_owned(),
            name.to_owned(),
            "-n".to_owned(),
            ns.to_owned(),
        ];
        for (key, file) in files {
            args.push(format!("--from-file={key}={}", self.path(file)));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl(&refs).await;
    }

    /// The rotator's writes (create, update, patch, delete) to ConfigMaps
    /// since the proxy's record was last cleared, as `<verb> <ns>/<name>`
    /// (`<ns>/` alone for a create, which names no object in its path).
    fn rotator_config_map_writes(&self) -> Vec<String> {
        self.proxy
            .seen()
            .into_iter()
            .filter_map(|r| {
                let verb = match r.method.as_str() {
                    "POST" => "create",
                    "PUT" => "update",
                    "PATCH" => "patch",
                    "DELETE" => "delete",
                    _ => return None,
                };
                let path = r.uri.split('?').next().unwrap_or_default();
                let target = proxy::target(path)?;
                (target.group.is_empty() && target.resource == "configmaps").then(|| {
                    let namespace = path
                        .strip_prefix("/api/v1/namespaces/")
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or_default();
                    format!("{verb} {namespace}/{}", target.name)
                })
            })
            .collect()
    }

    /// How many rotator log lines contain every one of `needles`.
    fn count_logs(&self, needles: &[&str]) -> usize {
        self.rotator
            .logs()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until more than `seen` rotator log lines contain `needles`: a
    /// reconcile finished after the count was taken.
    async fn wait_more_logs(&self, needles: &[&str], seen: usize) {
        await_condition(&needles.join(" "), WAIT, POLL, || async {
            (self.count_logs(needles) > seen).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }
}

fn data<'a>(cm: &'a ConfigMap, key: &str) -> Option<&'a str> {
    cm.data.as_ref()?.get(key).map(String::as_str)
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn ready(status: &Value) -> (String, String) {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn inject_ca_from_a_secret_writes_one_key_restores_edits_and_never_rewrites() {
    let env = start(false).await;
    let root = env.ca("root");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: trust
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/root-ca
data:
  app.conf: keep me
",
    )
    .await;
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: roots
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/root-ca
    capstan.dev/inject-ca-key: roots.pem
",
    )
    .await;

    // The key appears, the other key is kept, a leaf of the CA verifies.
    let cm = env
        .wait_config_map("the bundle key", "apps", "trust", |cm| {
            data(cm, BUNDLE_KEY).is_some()
        })
        .await;
    let bundle = data(&cm, BUNDLE_KEY).unwrap().to_owned();
    assert_eq!(certificates(&bundle), 1);
    assert_eq!(data(&cm, "app.conf"), Some("keep me"));
    let leaf = env.leaf("leaf", "root");
    let (ok, out) = env.verifies(&leaf, &bundle);
    assert!(ok, "{out}");
    let (other, out) = env.verifies(&leaf, &root);
    assert!(other, "{out}");
    env.wait_events("apps", "Updated ConfigMap/trust -n apps because it changed")
        .await;
    let events = env.events("apps").await;
    assert!(
        events.contains("ConfigMapUpdated") && events.contains("configmap/trust"),
        "{events}"
    );
    // The custom key.
    let roots = env
        .wait_config_map("the custom key", "apps", "roots", |cm| {
            data(cm, "roots.pem").is_some()
        })
        .await;
    assert_eq!(data(&roots, "roots.pem"), Some(bundle.as_str()));
    assert_eq!(data(&roots, BUNDLE_KEY), None);

    // Unchanged content is never rewritten: a metadata change of the source
    // makes the rotator look again, and it writes nothing.
    let rv = cm.metadata.resource_version.clone();
    let in_sync = ["bundle in sync", "trust"];
    let seen = env.count_logs(&in_sync);
    env.proxy.clear_seen();
    env.kubectl(&["label", "secret", "root-ca", "-n", "certs", "touched=yes"])
        .await;
    env.wait_more_logs(&in_sync, seen).await;
    let again = env.config_map("apps", "trust").await.unwrap();
    assert_eq!(again.metadata.resource_version, rv);
    assert_eq!(env.rotator_config_map_writes(), Vec::<String>::new());

    // A hand edit of the key is put back; the other key stays as edited.
    env.kubectl(&[
        "patch",
        "configmap",
        "trust",
        "-n",
        "apps",
        "--type=merge",
        "-p",
        r#"{"data":{"ca-bundle.crt":"tampered","app.conf":"edited"}}"#,
    ])
    .await;
    let restored = env
        .wait_config_map("the hand edit put back", "apps", "trust", |cm| {
            data(cm, BUNDLE_KEY) == Some(bundle.as_str())
        })
        .await;
    assert_eq!(data(&restored, "app.conf"), Some("edited"));

    // The source gains a CA: both are injected, newest first.
    let next = env.ca("next");
    env.write("both.pem", &format!("{root}{next}"));
    let both = env.read("both.pem");
    let patch = serde_json::json!({"data": {"ca-bundle.crt": base64::engine::general_purpose::STANDARD.encode(&both)}});
    env.kubectl(&[
        "patch",
        "secret",
        "root-ca",
        "-n",
        "certs",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .await;
    let two = env
        .wait_config_map("both CAs", "apps", "trust", |cm| {
            data(cm, BUNDLE_KEY).is_some_and(|b| certificates(b) == 2)
        })
        .await;
    let (ok, out) = env.verifies(&leaf, data(&two, BUNDLE_KEY).unwrap());
    assert!(ok, "{out}");
    let next_leaf = env.leaf("next-leaf", "next");
    let (ok, out) = env.verifies(&next_leaf, data(&two, BUNDLE_KEY).unwrap());
    assert!(ok, "{out}");
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn private_keys_are_refused_and_missing_sources_are_retried() {
    let env = start(false).await;
    env.ca("root");
    let key_and_cert = format!("{}{}", env.read("root.crt"), env.read("root.key"));
    env.write("leaky.pem", &key_and_cert);
    env.secret("certs", "leaky", &[("ca.crt", "leaky.pem")])
        .await;
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: leaky
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/leaky
data:
  app.conf: keep me
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: early
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/later
",
    )
    .await;

    let events = env.wait_events("apps", "PrivateKeyRefused").await;
    assert!(
        events.contains("Warning") && events.contains("configmap/leaky"),
        "{events}"
    );
    assert!(
        events.contains("holds a private key"),
        "the message says why: {events}"
    );
    let events = env.wait_events("apps", "SourceMissing").await;
    assert!(
        events.contains("Secret/later -n certs not found"),
        "{events}"
    );
    let leaky = env.config_map("apps", "leaky").await.unwrap();
    assert_eq!(data(&leaky, BUNDLE_KEY), None, "nothing copied");
    assert_eq!(data(&leaky, "app.conf"), Some("keep me"));

    // The missing source appears: the ConfigMap gets it without any change
    // of its own.
    env.secret("certs", "later", &[("ca.crt", "root.crt")])
        .await;
    let early = env
        .wait_config_map("the late source injected", "apps", "early", |cm| {
            data(cm, BUNDLE_KEY).is_some()
        })
        .await;
    assert_eq!(certificates(data(&early, BUNDLE_KEY).unwrap()), 1);
    // Still nothing leaked.
    let leaky = env.config_map("apps", "leaky").await.unwrap();
    assert_eq!(data(&leaky, BUNDLE_KEY), None);
    env.assert_no_key_leaks().await;
}

/// The issuer signs a CertificateRequest (approved as cert-manager's
/// approver does) and returns the leaf PEM.
async fn issue(env: &Env, name: &str) -> String {
    let csr = p256_csr(env.dir.path(), name, &format!("/CN={name}"), None);
    env.apply(&format!(
        "apiVersion: cert-manager.io/v1\nkind: CertificateRequest\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  request: {csr}\n  issuerRef:\n    group: capstan.dev\n    kind: ClusterCAIssuer\n    name: monitoring-ca\n"
    ))
    .await;
    env.kubectl.approve_request("apps", name).await.unwrap();
    let cr = await_condition("the leaf", WAIT, POLL, || async {
        let cr = env
            .get_json(&["certificaterequest", name, "-n", "apps"])
            .await?;
        cr["status"]["certificate"].as_str().is_some().then_some(cr)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    env.write(
        &format!("{name}.crt"),
        &decode_b64(&cr["status"]["certificate"]),
    )
}

#[tokio::test]
async fn inject_ca_from_issuer_holds_both_cas_during_a_rotation() {
    let env = start(true).await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 1h
    rotateBefore: 20m
    propagationDelay: 4s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: monitoring-ca
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from-issuer: monitoring-ca
",
    )
    .await;
    let one = env
        .wait_config_map("the issuer's CA", "apps", "monitoring-ca", |cm| {
            data(cm, BUNDLE_KEY).is_some()
        })
        .await;
    assert_eq!(certificates(data(&one, BUNDLE_KEY).unwrap()), 1);
    let before = issue(&env, "before").await;
    let (ok, out) = env.verifies(&before, data(&one, BUNDLE_KEY).unwrap());
    assert!(ok, "{out}");
    let first = env
        .get_json(&["clustercaissuer", "monitoring-ca"])
        .await
        .unwrap()["status"]["ca"]["fingerprint"]
        .clone();

    env.kubectl
        .rotate("monitoring-ca", "drill-1")
        .await
        .unwrap();
    // Published: both CAs reach the ConfigMap; the old leaf still verifies.
    let two = env
        .wait_config_map("both CAs", "apps", "monitoring-ca", |cm| {
            data(cm, BUNDLE_KEY).is_some_and(|b| certificates(b) == 2)
        })
        .await;
    let (ok, out) = env.verifies(&before, data(&two, BUNDLE_KEY).unwrap());
    assert!(ok, "{out}");

    // Switched: the new CA signs; its leaf verifies against the ConfigMap,
    // which still holds the old CA too.
    await_condition("the new CA to sign", WAIT, POLL, || async {
        let issuer = env.get_json(&["clustercaissuer", "monitoring-ca"]).await?;
        (issuer["status"]["ca"]["fingerprint"] != first).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    let after = issue(&env, "after").await;
    let now = env.config_map("apps", "monitoring-ca").await.unwrap();
    let bundle = data(&now, BUNDLE_KEY).unwrap();
    assert_eq!(
        certificates(bundle),
        2,
        "the old CA stays while it overlaps"
    );
    for leaf in [&before, &after] {
        let (ok, out) = env.verifies(leaf, bundle);
        assert!(ok, "{leaf}: {out}");
    }
    // The ConfigMap holds exactly the issuer's published bundle.
    let secret = env
        .get_json(&["secret", "monitoring-ca", "-n", "certs"])
        .await
        .unwrap();
    let published = decode_b64(&secret["data"]["ca-bundle.crt"]);
    assert_eq!(certificates(&published), 2);
    for block in published.split_inclusive("-----END CERTIFICATE-----\n") {
        assert!(bundle.contains(block.trim()), "missing {block}");
    }
    env.wait_events(
        "apps",
        "Updated ConfigMap/monitoring-ca -n apps because it changed",
    )
    .await;
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn cabundle_follows_its_namespace_selector_and_reports_status() {
    let env = start(false).await;
    let root = env.ca("root");
    let extra = env.ca("extra");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    for (ns, trusted) in [("team-a", true), ("team-b", true), ("team-c", false)] {
        env.kubectl(&["create", "namespace", ns]).await;
        if trusted {
            env.kubectl(&["label", "namespace", ns, "trust=yes"]).await;
        }
    }
    // A ConfigMap of the user's own under the target name: only the key is
    // written there, and it is never deleted.
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: corp-trust
  namespace: team-b
data:
  keep: me
",
    )
    .await;
    let inline: String = extra.lines().map(|l| format!("        {l}\n")).collect();
    env.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: corp
spec:
  sources:
    - secret:
        namespace: certs
        name: root-ca
    - inline: |
{inline}  target:
    configMap: corp-trust
  namespaceSelector:
    matchLabels:
      trust: \"yes\"
"
    ))
    .await;

    let b = env
        .wait_bundle("corp", "2 targets in sync", |s| {
            s["targets"] == 2 && s["targetsInSync"] == 2
        })
        .await;
    let status = &b["status"];
    assert_eq!(ready(status), ("True".into(), "Synced".into()), "{b}");
    assert_eq!(status["certificates"], 2);
    assert_eq!(status["observedGeneration"], b["metadata"]["generation"]);
    let a = env.config_map("team-a", "corp-trust").await.unwrap();
    let pem = data(&a, BUNDLE_KEY).unwrap().to_owned();
    assert_eq!(status["bundleHash"], sha256_hex(&pem));
    assert_eq!(certificates(&pem), 2);
    for ca in [&root, &extra] {
        assert!(pem.contains(ca.trim()), "missing a source CA");
    }
    let labels = a.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("capstan.dev/bundle").map(String::as_str),
        Some("corp")
    );
    let owner = &a.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CABundle", "corp")
    );
    let users = env.config_map("team-b", "corp-trust").await.unwrap();
    assert_eq!(data(&users, BUNDLE_KEY), Some(pem.as_str()));
    assert_eq!(data(&users, "keep"), Some("me"));
    assert!(users.metadata.owner_references.is_none());
    assert!(env.config_map("team-c", "corp-trust").await.is_none());
    let events = env
        .wait_events(
            "team-a",
            "Created ConfigMap/corp-trust -n team-a because it was missing",
        )
        .await;
    assert!(events.contains("ConfigMapCreated"), "{events}");
    env.wait_events(
        "team-b",
        "Updated ConfigMap/corp-trust -n team-b because it changed",
    )
    .await;
    let wide = env.kubectl(&["get", "cabundle", "corp"]).await;
    assert!(wide.contains("True"), "{wide}");

    // Nothing changed: a reconcile (a new, unselected namespace) writes no
    // ConfigMap.
    let versions = |cms: Vec<Option<ConfigMap>>| {
        cms.into_iter()
            .map(|c| c.and_then(|c| c.metadata.resource_version))
            .collect::<Vec<_>>()
    };
    let before = versions(vec![
        env.config_map("team-a", "corp-trust").await,
        env.config_map("team-b", "corp-trust").await,
    ]);
    let synced = ["CABundle synced", "corp"];
    let seen = env.count_logs(&synced);
    env.proxy.clear_seen();
    env.kubectl(&["create", "namespace", "team-d"]).await;
    env.wait_more_logs(&synced, seen).await;
    let after = versions(vec![
        env.config_map("team-a", "corp-trust").await,
        env.config_map("team-b", "corp-trust").await,
    ]);
    assert_eq!(before, after);
    assert_eq!(env.rotator_config_map_writes(), Vec::<String>::new());

    // Selected: created. Unselected: deleted if the bundle created it, kept
    // (with its key) if it is the user's.
    env.kubectl(&["label", "namespace", "team-c", "trust=yes"])
        .await;
    env.wait_config_map("created in team-c", "team-c", "corp-trust", |cm| {
        data(cm, BUNDLE_KEY) == Some(pem.as_str())
    })
    .await;
    env.wait_bundle("corp", "3 targets", |s| {
        s["targets"] == 3 && s["targetsInSync"] == 3
    })
    .await;
    env.kubectl(&["label", "namespace", "team-a", "trust-"])
        .await;
    env.kubectl(&["label", "namespace", "team-b", "trust-"])
        .await;
    await_condition("team-a's ConfigMap deleted", WAIT, POLL, || async {
        env.config_map("team-a", "corp-trust")
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    env.wait_bundle("corp", "1 target", |s| {
        s["targets"] == 1 && s["targetsInSync"] == 1
    })
    .await;
    let kept = env.config_map("team-b", "corp-trust").await.unwrap();
    assert_eq!(data(&kept, "keep"), Some("me"));

    // A bad source: Ready=False with the reason; the targets keep the last
    // good bundle.
    env.kubectl(&[
        "patch",
        "cabundle",
        "corp",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/sources/-","value":{"secret":{"namespace":"certs","name":"missing"}}}]"#,
    ])
    .await;
    let b = env
        .wait_bundle("corp", "Ready=False", |s| {
            ready(s) == ("False".into(), "SourceMissing".into())
        })
        .await;
    assert_eq!(
        b["status"]["observedGeneration"],
        b["metadata"]["generation"]
    );
    let message = b["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Secret/missing -n certs not found"),
        "{message}"
    );
    let c = env.config_map("team-c", "corp-trust").await.unwrap();
    assert_eq!(data(&c, BUNDLE_KEY), Some(pem.as_str()));

    // Deleting the bundle removes what it created (owner references), not
    // the user's ConfigMap.
    env.kubectl(&["delete", "cabundle", "corp"]).await;
    await_condition("team-c's ConfigMap collected", WAIT, POLL, || async {
        env.config_map("team-c", "corp-trust")
            .await
            .is_none()
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    assert!(env.config_map("team-b", "corp-trust").await.is_some());
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn dry_run_writes_nothing_and_says_what_it_would_do() {
    let env = start_with(false, &["--dry-run"]).await;
    env.ca("root");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: trust
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/root-ca
---
apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: corp
spec:
  sources:
    - secret:
        namespace: certs
        name: root-ca
  target:
    configMap: corp-trust
",
    )
    .await;
    env.wait_events(
        "apps",
        "Dry run: would update ConfigMap/trust -n apps because it changed",
    )
    .await;
    let events = env
        .wait_events(
            "apps",
            "Dry run: would create ConfigMap/corp-trust -n apps for CABundle/corp",
        )
        .await;
    assert!(!events.contains("ConfigMapUpdated"), "{events}");
    assert_eq!(
        data(&env.config_map("apps", "trust").await.unwrap(), BUNDLE_KEY),
        None
    );
    assert!(env.config_map("apps", "corp-trust").await.is_none());
    assert_eq!(env.rotator_config_map_writes(), Vec::<String>::new());
    let bundle = env.get_json(&["cabundle", "corp"]).await.unwrap();
    assert!(bundle["status"].is_null(), "no status in dry run: {bundle}");
    env.assert_no_key_leaks().await;
}

/// The value of the sample `series` (name and labels, as exposed) on the
/// rotator's `/metrics`.
async fn metric(rotator: &RunningBinary, series: &str) -> Option<f64> {
    scraped_series(rotator, series, WAIT).await
}

/// The Ready condition's message of a `CABundle` status.
fn ready_message(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn two_writers_on_one_key_do_not_fight_the_older_keeps_it() {
    let env = start(false).await;
    let root = env.ca("root");
    let other = env.ca("other");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    env.secret("certs", "other-ca", &[("ca.crt", "other.crt")])
        .await;
    for ns in ["team-a", "team-b"] {
        env.kubectl(&["create", "namespace", ns]).await;
        env.kubectl(&["label", "namespace", ns, "trust=yes"]).await;
    }
    let bundle = |name: &str, secret: &str, target: &str, selector: &str| {
        format!(
            "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: {name}
spec:
  sources:
    - secret:
        namespace: certs
        name: {secret}
  target:
    configMap: {target}
{selector}"
        )
    };
    let trust_only = "  namespaceSelector:\n    matchLabels:\n      trust: \"yes\"\n";
    env.apply(&bundle("first", "root-ca", "shared-trust", trust_only))
        .await;
    env.wait_bundle("first", "2 targets in sync", |s| {
        s["targets"] == 2 && s["targetsInSync"] == 2
    })
    .await;

    // A newer bundle writing the same ConfigMap key everywhere: it leaves
    // team-a and team-b to the first, writes elsewhere, and says so.
    env.apply(&bundle("second", "other-ca", "shared-trust", ""))
        .await;
    let b = env
        .wait_bundle("second", "TargetConflict", |s| {
            ready(s) == ("False".into(), "TargetConflict".into())
        })
        .await;
    let message = ready_message(&b["status"]);
    for ns in ["team-a", "team-b"] {
        assert!(
            message.contains(&format!("{ns} (written by CABundle/first)")),
            "{message}"
        );
    }
    assert!(!message.contains("apps"), "{message}");
    env.wait_config_map("second's own target", "apps", "shared-trust", |cm| {
        data(cm, BUNDLE_KEY).is_some_and(|b| b.contains(other.trim()))
    })
    .await;
    let events = env
        .wait_events(
            "default",
            "Not writing key ca-bundle.crt of ConfigMap/shared-trust",
        )
        .await;
    assert!(events.contains("TargetConflict"), "{events}");
    let first = env
        .wait_bundle("first", "still Synced", |s| {
            ready(s) == ("True".into(), "Synced".into())
        })
        .await;
    assert_eq!(first["status"]["targetsInSync"], 2);
    for ns in ["team-a", "team-b"] {
        let cm = env.config_map(ns, "shared-trust").await.unwrap();
        let pem = data(&cm, BUNDLE_KEY).unwrap();
        assert!(
            pem.contains(root.trim()) && !pem.contains(other.trim()),
            "{ns}"
        );
    }

    // No fight: a hand edit in team-a re-runs both bundles; only the first
    // writes (once, to put its bundle back).
    let synced = ["CABundle synced", "second"];
    let seen = env.count_logs(&synced);
    env.proxy.clear_seen();
    env.kubectl(&[
        "patch",
        "configmap",
        "shared-trust",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"data":{"ca-bundle.crt":"edited"}}"#,
    ])
    .await;
    env.wait_config_map("first's bundle back", "team-a", "shared-trust", |cm| {
        data(cm, BUNDLE_KEY).is_some_and(|b| b.contains(root.trim()))
    })
    .await;
    env.wait_more_logs(&synced, seen).await;
    let writes: Vec<String> = env
        .rotator_config_map_writes()
        .into_iter()
        // Creates name no object in their path: any in team-a counts.
        .filter(|w| w.ends_with(" team-a/shared-trust") || w.ends_with(" team-a/"))
        .collect();
    assert_eq!(writes, ["patch team-a/shared-trust"], "{}", env.logs());

    // A bundle whose target carries injection annotations for the same key
    // leaves that ConfigMap to its annotation.
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: annotated-trust
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/root-ca
",
    )
    .await;
    env.wait_config_map("the injected CA", "apps", "annotated-trust", |cm| {
        data(cm, BUNDLE_KEY).is_some_and(|b| b.contains(root.trim()))
    })
    .await;
    env.apply(&bundle("third", "other-ca", "annotated-trust", ""))
        .await;
    let b = env
        .wait_bundle("third", "TargetConflict", |s| {
            ready(s) == ("False".into(), "TargetConflict".into())
        })
        .await;
    let message = ready_message(&b["status"]);
    assert!(
        message.contains("apps (written by its capstan.dev/inject-ca annotations)"),
        "{message}"
    );
    let cm = env.config_map("apps", "annotated-trust").await.unwrap();
    assert!(!data(&cm, BUNDLE_KEY).unwrap().contains(other.trim()));
    // Sources: root-ca and other-ca for the bundles, root-ca for injection.
    for (controller, n) in [("bundle", 2.0), ("inject", 1.0)] {
        let series = format!("capstan_rotator_sources_watched{{controller=\"{controller}\"}}");
        await_condition(&series, WAIT, POLL, || async {
            (metric(&env.rotator, &series).await == Some(n)).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    }

    // The first bundle goes: the second takes its namespaces over.
    env.kubectl(&["delete", "cabundle", "first"]).await;
    env.wait_config_map(
        "second's bundle in team-a",
        "team-a",
        "shared-trust",
        |cm| data(cm, BUNDLE_KEY).is_some_and(|b| b.contains(other.trim())),
    )
    .await;
    env.wait_bundle("second", "Synced", |s| {
        ready(s) == ("True".into(), "Synced".into())
    })
    .await;
    // Only other-ca is read by a bundle now.
    let series = r#"capstan_rotator_sources_watched{controller="bundle"}"#;
    await_condition(series, WAIT, POLL, || async {
        (metric(&env.rotator, series).await == Some(1.0)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.logs()));
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn a_bundle_cannot_read_a_target() {
    let env = start(false).await;
    env.ca("root");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    env.kubectl(&["create", "namespace", "team-a"]).await;
    env.kubectl(&["label", "namespace", "team-a", "trust=yes"])
        .await;
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: corp
spec:
  sources:
    - secret:
        namespace: certs
        name: root-ca
  target:
    configMap: corp-trust
  namespaceSelector:
    matchLabels:
      trust: \"yes\"
",
    )
    .await;
    env.wait_config_map("corp's target", "team-a", "corp-trust", |cm| {
        data(cm, BUNDLE_KEY).is_some()
    })
    .await;
    // Reading another bundle's output, and reading its own.
    env.apply(
        "apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: reader
spec:
  sources:
    - configMap:
        namespace: team-a
        name: corp-trust
  target:
    configMap: reader-trust
---
apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: ouroboros
spec:
  sources:
    - secret:
        namespace: certs
        name: root-ca
    - configMap:
        namespace: team-a
        name: ouroboros-trust
  target:
    configMap: ouroboros-trust
",
    )
    .await;
    let b = env
        .wait_bundle("reader", "SourceIsTarget", |s| {
            ready(s) == ("False".into(), "SourceIsTarget".into())
        })
        .await;
    let message = ready_message(&b["status"]);
    assert!(
        message.contains("ConfigMap/corp-trust -n team-a"),
        "{message}"
    );
    // ouroboros' own target does not exist yet: the source is missing. Make
    // it exist (as a user might, by hand), and the source is refused.
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: ouroboros-trust
  namespace: team-a
data:
  ca.crt: placeholder
",
    )
    .await;
    let b = env
        .wait_bundle("ouroboros", "SourceIsTarget", |s| {
            ready(s) == ("False".into(), "SourceIsTarget".into())
        })
        .await;
    let message = ready_message(&b["status"]);
    assert!(
        message.contains("is a target of CABundle/ouroboros"),
        "{message}"
    );
    let events = env
        .wait_events("default", "a bundle cannot read its own output")
        .await;
    assert!(events.contains("SourceIsTarget"), "{events}");
    // Nothing was written from either.
    assert!(env.config_map("team-a", "reader-trust").await.is_none());
    let own = env.config_map("team-a", "ouroboros-trust").await.unwrap();
    assert_eq!(data(&own, BUNDLE_KEY), None);
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn unrelated_secrets_are_only_ever_asked_for_as_metadata() {
    let env = start(false).await;
    env.ca("root");
    env.secret("certs", "root-ca", &[("ca.crt", "root.crt")])
        .await;
    for i in 0..5 {
        env.kubectl(&[
            "create",
            "secret",
            "generic",
            &format!("unrelated-{i}"),
            "-n",
            "apps",
            "--from-literal=password=hunter2",
        ])
        .await;
    }
    // A source for injection, and one for a restart (a workload's Secret).
    env.kubectl(&[
        "create",
        "secret",
        "generic",
        "app-tls",
        "-n",
        "apps",
        "--from-literal=tls.crt=v1",
    ])
    .await;
    env.apply(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: trust
  namespace: apps
  annotations:
    capstan.dev/inject-ca-from: certs/root-ca
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
  annotations:
    capstan.dev/restart-on-change: \"true\"
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers: [{name: web, image: web}]
      volumes: [{name: tls, secret: {secretName: app-tls}}]
",
    )
    .await;
    env.wait_config_map("the CA", "apps", "trust", |cm| {
        data(cm, BUNDLE_KEY).is_some()
    })
    .await;
    // Change an unrelated Secret, then the source: once the ConfigMap
    // follows the source, the unrelated change has been seen as well.
    env.kubectl(&[
        "patch",
        "secret",
        "unrelated-0",
        "-n",
        "apps",
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"changed"}}"#,
    ])
    .await;
    let root2 = env.ca("root2");
    env.kubectl(&["delete", "secret", "root-ca", "-n", "certs"])
        .await;
    env.secret("certs", "root-ca", &[("ca.crt", "root2.crt")])
        .await;
    env.wait_config_map("the new CA", "apps", "trust", |cm| {
        data(cm, BUNDLE_KEY).is_some_and(|b| b.contains(root2.trim()))
    })
    .await;
    let seen = env.proxy.seen();
    let secrets: Vec<&Seen> = seen.iter().filter(|r| r.uri.contains("/secrets")).collect();
    let metadata = |r: &Seen| r.accept.contains("as=PartialObjectMetadata");
    // Secrets as a collection: metadata only, cluster-wide.
    let collection: Vec<&&Seen> = secrets
        .iter()
        .filter(|r| r.uri.starts_with("/api/v1/secrets"))
        .collect();
    assert!(!collection.is_empty(), "{seen:#?}");
    for r in &collection {
        assert!(metadata(r), "a list or watch with data: {r:?}");
    }
    // Secrets with their data: only the sources, by name.
    for r in secrets.iter().filter(|r| !metadata(r)) {
        let path = r.uri.split('?').next().unwrap_or_default();
        assert!(
            r.method == "GET"
                && (path == "/api/v1/namespaces/certs/secrets/root-ca"
                    || path == "/api/v1/namespaces/apps/secrets/app-tls"),
            "the rotator read {r:?}"
        );
    }
    assert!(
        secrets
            .iter()
            .any(|r| r.uri.contains("/secrets/root-ca") && !metadata(r)),
        "the source itself is read: {secrets:#?}"
    );
    // kube-apiserver's audit log agrees that nothing else was asked for by
    // name.
    let named: Vec<String> = env
        .cp
        .request_log()
        .into_iter()
        .filter(|r| r.user == ROTATOR_USER && r.resource == "secrets" && !r.name.is_empty())
        .map(|r| format!("{} {}/{}", r.verb, r.namespace, r.name))
        .filter(|r| !r.ends_with("certs/root-ca") && !r.ends_with("apps/app-tls"))
        .collect();
    assert_eq!(named, Vec::<String>::new());
    env.assert_no_key_leaks().await;
}
