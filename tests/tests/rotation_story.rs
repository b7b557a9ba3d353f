//! The headline story end to end: the real `capstan-issuer` and
//! `capstan-rotator` on a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, and kwok, whose fake node makes
//! pods Ready, so rollouts really complete), checked with the real kubectl
//! and openssl.
//!
//! A self-managed `ClusterCAIssuer` rotates its CA. Its bundle reaches every
//! target — annotated ConfigMaps (`capstan.dev/inject-ca-from-issuer`) in
//! three namespaces and a `CABundle`'s ConfigMap in each namespace its
//! selector picks — before the issuer switches signing; a Deployment that
//! mounts a leaf Secret and a StatefulSet that mounts the bundle each roll
//! exactly once per change; and `kubectl get events -A --sort-by` tells the
//! steps in order.
//!
//! The leaf is a user's: a `Certificate` that cert-manager's own controller
//! (built from its Go module) turns into a request, approves and, once
//! capstan has signed it, writes to the Secret the Deployment mounts; after
//! the switch it is renewed as `cmctl renew` does it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capstan_tests::cluster::{
    MASTERS, decode_b64, openssl_in, start_binary, start_issuer, user_kubeconfig,
};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::cert_manager::{self, CertManager};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition};
use capstan_tests::hygiene;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);
/// How often the monitor samples the issuer and the targets.
const SAMPLE: Duration = Duration::from_millis(50);
const TEAMS: [&str; 3] = ["team-a", "team-b", "team-c"];
/// Not selected by the `CABundle`, and without annotated ConfigMaps.
const OUTSIDE: &str = "outside";
const HASH: &str = "capstan.dev/config-hash";
const KEY: &str = "ca-bundle.crt";
/// The annotated ConfigMap's name in each team namespace.
const INJECTED: &str = "monitoring-ca";
/// The `CABundle`'s target name.
const TRUST: &str = "trust-bundle";

struct Story {
    rotator: RunningBinary,
    issuer: RunningBinary,
    client: kube::Client,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
    cert_manager: CertManager,
    /// Declared last so it is dropped last, after the binaries.
    _server: ControlPlane,
}

fn issuers(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("capstan.dev", "v1alpha1", "ClusterCAIssuer");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "clustercaissuers"),
    )
}

fn certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The signing CA's fingerprint, once the issuer reports one.
async fn signing_fingerprint(client: &kube::Client) -> Option<String> {
    let issuer = issuers(client).get_opt("monitoring-ca").await.ok()??;
    issuer.data["status"]["ca"]["fingerprint"]
        .as_str()
        .map(str::to_owned)
}

/// Every target: (namespace, ConfigMap name).
fn targets() -> Vec<(String, String)> {
    TEAMS
        .iter()
        .flat_map(|ns| {
            [
                (ns.to_string(), INJECTED.to_owned()),
                (ns.to_string(), TRUST.to_owned()),
            ]
        })
        .collect()
}

async fn bundle_of(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??
        .data?
        .remove(KEY)
}

fn template_hash(annotations: Option<&BTreeMap<String, String>>) -> Option<String> {
    annotations?.get(HASH).cloned()
}

async fn deployment(client: &kube::Client) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), "team-a")
        .get("metrics-app")
        .await
        .unwrap()
}

async fn stateful_set(client: &kube::Client) -> StatefulSet {
    Api::<StatefulSet>::namespaced(client.clone(), "team-a")
        .get("prometheus")
        .await
        .unwrap()
}

/// What the monitor saw while the rotation ran.
#[derive(Debug, Default)]
struct Observed {
    /// When the issuer was first seen signing with another CA.
    switched: Option<Instant>,
    /// Per target: when it was first seen with both CAs, and that bundle.
    both: BTreeMap<(String, String), (Instant, String)>,
    /// Targets seen without both CAs after the switch had been seen.
    late: Vec<String>,
    /// Distinct successive pod-template hashes of each workload.
    deployment_hashes: Vec<Option<String>>,
    stateful_set_hashes: Vec<Option<String>>,
}

fn push_changed(seen: &mut Vec<Option<String>>, hash: Option<String>) {
    if seen.last() != Some(&hash) {
        seen.push(hash);
    }
}

/// Samples, until `stop`, first the issuer and then every target, so that a
/// target lacking the new CA in a sample taken after the switch was seen
/// lacked it at the switch.
async fn monitor(client: kube::Client, first: String, stop: Arc<AtomicBool>) -> Observed {
    let mut seen = Observed::default();
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let switched = signing_fingerprint(&client)
            .await
            .is_some_and(|f| f != first);
        if switched && seen.switched.is_none() {
            seen.switched = Some(now);
        }
        for (ns, name) in targets() {
            let bundle = bundle_of(&client, &ns, &name).await.unwrap_or_default();
            let has_both = certificates(&bundle) >= 2;
            if has_both {
                seen.both
                    .entry((ns.clone(), name.clone()))
                    .or_insert((now, bundle));
            } else if switched {
                seen.late.push(format!(
                    "ConfigMap/{name} -n {ns} held {} CA(s) after the switch",
                    certificates(&bundle)
                ));
            }
        }
        let d = deployment(&client).await;
        push_changed(
            &mut seen.deployment_hashes,
            template_hash(
                d.spec
                    .and_then(|s| s.template.metadata)
                    .and_then(|m| m.annotations)
                    .as_ref(),
            ),
        );
        let s = stateful_set(&client).await;
        push_changed(
            &mut seen.stateful_set_hashes,
            template_hash(
                s.spec
                    .and_then(|s| s.template.metadata)
                    .and_then(|m| m.annotations)
                    .as_ref(),
            ),
        );
        tokio::time::sleep(SAMPLE).await;
    }
    seen
}

impl Story {
    /// Fails on any private key (the Secrets' and those this test made)
    /// outside Secrets: objects, the binaries' logs, their metrics.
    async fn assert_no_key_leaks(&self) {
        let keys = hygiene::keys_in_dir(self.dir.path());
        hygiene::assert_no_key_leaks(&self.kubectl, &[&self.rotator, &self.issuer], &keys).await;
    }

    async fn start() -> Self {
        let server = ControlPlane::start().await.unwrap();
        let client = server.client().await.unwrap();
        let kubectl = Kubectl::for_server(&server).unwrap();
        kubectl.apply_crds(false).await.unwrap();
        // With cert-manager's CRDs, from the module it was built from.
        let cert_manager = CertManager::start(&server).await.unwrap();
        for ns in TEAMS.iter().copied().chain(["certs", OUTSIDE]) {
            kubectl.run_ok(&["create", "namespace", ns]).await.unwrap();
        }
        for ns in TEAMS {
            kubectl
                .run_ok(&["label", "namespace", ns, "trust=yes"])
                .await
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let config = |name: &str| {
            let user = format!("system:serviceaccount:default:{name}");
            user_kubeconfig(&server, dir.path(), name, &user, MASTERS).unwrap()
        };
        let rotator_config = config("capstan-rotator");
        let issuer_config = config("capstan-issuer");
        let rotator = start_binary(
            "capstan-rotator",
            &rotator_config,
            &[
                "--leader-election-namespace",
                "default",
                "--cluster-resource-namespace",
                "certs",
                "--restart-debounce",
                "1s",
                "--rollout-timeout",
                "60s",
            ],
            &[
                ("POD_NAMESPACE", "default"),
                ("POD_NAME", "rotator-0"),
                ("RUST_LOG", "info,capstan_rotator=debug"),
            ],
        )
        .unwrap();
        let issuer = start_issuer(&issuer_config, "certs", "issuer-0").unwrap();
        Self {
            rotator,
            issuer,
            client,
            kubectl,
            dir,
            cert_manager,
            _server: server,
        }
    }

    fn logs(&self) -> String {
        format!(
            "rotator logs:\n{}\nissuer logs:\n{}\ncert-manager's log:\n{}",
            self.rotator.logs().join("\n"),
            self.issuer.logs().join("\n"),
            self.cert_manager.logs(40)
        )
    }

    async fn apply(&self, yaml: &str) {
        self.kubectl.apply(yaml).await;
    }

    async fn wait<T, Fut>(&self, what: &str, check: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Option<T>>,
    {
        match await_condition(what, WAIT, POLL, check).await {
            Ok(v) => v,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    fn openssl(&self, args: &[&str]) -> (bool, String) {
        openssl_in(self.dir.path(), args)
    }

    fn write(&self, file: &str, content: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Whether the leaf in file `leaf` verifies against `bundle` (PEM).
    fn verifies(&self, leaf: &str, bundle: &str) -> (bool, String) {
        let file = self.write("bundle-under-test.pem", bundle);
        self.openssl(&["verify", "-CAfile", &file, leaf])
    }

    /// Waits until cert-manager has written `revision` of Certificate
    /// `metrics-app` to Secret `metrics-tls`; writes its leaf (and key, for
    /// the leak scan) to files; returns the leaf's file.
    async fn issued(&self, revision: u64) -> String {
        cert_manager::wait_issued(&self.kubectl, "team-a", "metrics-app", revision, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        let secret = self
            .kubectl
            .get_json(&["secret", "metrics-tls", "-n", "team-a"])
            .await
            .unwrap();
        self.write(
            &format!("metrics-app-{revision}.key"),
            &decode_b64(&secret["data"]["tls.key"]),
        );
        self.write(
            &format!("metrics-app-{revision}.crt"),
            &decode_b64(&secret["data"]["tls.crt"]),
        )
    }

    /// Events (reason, kind/name, namespace, lastTimestamp, count) in the
    /// order `kubectl get events -A --sort-by=.lastTimestamp` prints them.
    async fn sorted_events(&self) -> Vec<(String, String, String, String, u64)> {
        let out = self
            .kubectl
            .run_ok(&[
                "get",
                "events",
                "-A",
                "--sort-by=.lastTimestamp",
                "-o",
                "json",
            ])
            .await
            .unwrap();
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&e["reason"]),
                    format!(
                        "{}/{}",
                        s(&e["involvedObject"]["kind"]),
                        s(&e["involvedObject"]["name"])
                    ),
                    s(&e["involvedObject"]["namespace"]),
                    s(&e["lastTimestamp"]),
                    e["count"].as_u64().unwrap_or(1),
                )
            })
            .collect()
    }

    /// How many times `reason` was recorded on `object` (rows, and the
    /// repeats folded into a row's count).
    async fn count_events(&self, reason: &str, object: &str) -> u64 {
        self.sorted_events()
            .await
            .iter()
            .filter(|(r, o, _, _, _)| r == reason && o == object)
            .map(|e| e.4)
            .sum()
    }
}

/// The user's Certificate for the metrics endpoint (the issuer's
/// `maxDuration`, so cert-manager renews only when asked, within the test).
const CERTIFICATE: &str = "apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: metrics-app
  namespace: team-a
spec:
  secretName: metrics-tls
  commonName: metrics-app.team-a.svc
  dnsNames: [metrics-app.team-a.svc]
  duration: 10m
  privateKey:
    algorithm: ECDSA
    size: 256
  usages: [digital signature, server auth]
  issuerRef:
    group: capstan.dev
    kind: ClusterCAIssuer
    name: monitoring-ca
";

fn workload(kind: &str, name: &str, volume: &str) -> String {
    let service = if kind == "StatefulSet" {
        format!("\n  serviceName: {name}")
    } else {
        String::new()
    };
    format!(
        "apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
  namespace: team-a
  annotations:
    capstan.dev/restart-on-change: \"true\"
spec:
  replicas: 1{service}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: {name}
          image: {name}
          volumeMounts: [{{name: mounted, mountPath: /etc/mounted, readOnly: true}}]
      volumes:
        - name: mounted
          {volume}
"
    )
}

#[tokio::test]
async fn a_ca_rotation_reaches_every_target_before_signing_and_rolls_each_workload_once() {
    let story = Story::start().await;
    let client = story.client.clone();

    // An issuer, a CABundle over the team namespaces, and an annotated
    // ConfigMap in each of them.
    let mut yaml = "apiVersion: capstan.dev/v1alpha1
kind: ClusterCAIssuer
metadata:
  name: monitoring-ca
spec:
  maxDuration: 10m
  selfManaged:
    secretName: monitoring-ca
    duration: 1h
    rotateBefore: 20m
    propagationDelay: 8s
---
apiVersion: capstan.dev/v1alpha1
kind: CABundle
metadata:
  name: monitoring-trust
spec:
  sources:
    - secret:
        namespace: certs
        name: monitoring-ca
        key: ca-bundle.crt
  target:
    configMap: trust-bundle
  namespaceSelector:
    matchLabels:
      trust: \"yes\"
"
    .to_owned();
    for ns in TEAMS {
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {INJECTED}
  namespace: {ns}
  annotations:
    capstan.dev/inject-ca-from-issuer: monitoring-ca
"
        ));
    }
    story.apply(&yaml).await;
    let first = story
        .wait("the issuer's first CA", || signing_fingerprint(&client))
        .await;
    for (ns, name) in targets() {
        story
            .wait(&format!("the CA in ConfigMap/{name} -n {ns}"), || async {
                bundle_of(&client, &ns, &name)
                    .await
                    .filter(|b| certificates(b) == 1)
            })
            .await;
    }
    assert!(
        bundle_of(&client, OUTSIDE, TRUST).await.is_none(),
        "an unselected namespace gets no bundle"
    );

    // A leaf for the metrics endpoint, as a user asks for it, and the two
    // workloads.
    story.apply(CERTIFICATE).await;
    let before = story.issued(1).await;
    story
        .apply(&workload(
            "Deployment",
            "metrics-app",
            "secret: {secretName: metrics-tls}",
        ))
        .await;
    story
        .apply(&workload(
            "StatefulSet",
            "prometheus",
            "configMap: {name: trust-bundle}",
        ))
        .await;
    // Both get a baseline hash on themselves; neither rolls for it.
    story
        .wait("baseline hashes", || async {
            let d = deployment(&client).await;
            let s = stateful_set(&client).await;
            (template_hash(d.metadata.annotations.as_ref()).is_some()
                && template_hash(s.metadata.annotations.as_ref()).is_some())
            .then_some(())
        })
        .await;
    let d0 = deployment(&client).await.metadata.generation.unwrap();
    let s0 = stateful_set(&client).await.metadata.generation.unwrap();

    // Rotate, sampling the issuer and every target until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(monitor(client.clone(), first.clone(), stop.clone()));
    story
        .kubectl
        .rotate("monitoring-ca", "story-1")
        .await
        .unwrap();
    let second = story
        .wait("the issuer to sign with the new CA", || async {
            signing_fingerprint(&client).await.filter(|f| *f != first)
        })
        .await;
    story
        .wait("the StatefulSet's rollout for the new bundle", || async {
            (story
                .count_events("RolloutCompleted", "StatefulSet/prometheus")
                .await
                >= 1)
                .then_some(())
        })
        .await;

    // The renewed leaf, from the new CA: the Deployment rolls for it.
    cert_manager::renew(&story.kubectl, "team-a", "metrics-app")
        .await
        .unwrap();
    let after = story.issued(2).await;
    story
        .wait("the Deployment's rollout for the renewed leaf", || async {
            (story
                .count_events("RolloutCompleted", "Deployment/metrics-app")
                .await
                >= 1)
                .then_some(())
        })
        .await;
    stop.store(true, Ordering::SeqCst);
    let seen = sampler.await.unwrap();

    // Every target held both CAs before the issuer switched signing.
    let switched = seen.switched.expect("the switch was sampled");
    assert!(
        seen.late.is_empty(),
        "targets behind the switch: {:#?}\n{}",
        seen.late,
        story.logs()
    );
    for target in targets() {
        let (at, bundle) = seen
            .both
            .get(&target)
            .unwrap_or_else(|| panic!("{target:?} never held both CAs\n{}", story.logs()));
        assert!(
            *at < switched,
            "{target:?} held both CAs only {:?} after the switch",
            at.duration_since(switched)
        );
        // That bundle is the one it holds now, and it trusts both leaves.
        let now = bundle_of(&client, &target.0, &target.1).await.unwrap();
        assert_eq!(&now, bundle, "{target:?} changed after holding both CAs");
        for leaf in [&before, &after] {
            let (ok, out) = story.verifies(leaf, bundle);
            assert!(ok, "{leaf} against {target:?}: {out}");
        }
    }
    let secret = Api::<Secret>::namespaced(client.clone(), "certs")
        .get("monitoring-ca")
        .await
        .unwrap();
    let signing = String::from_utf8(secret.data.unwrap()["tls.crt"].0.clone()).unwrap();
    let (ok, _) = story.verifies(&after, &signing);
    assert!(ok, "the renewed leaf is signed by the issuer's current CA");
    assert_ne!(first, second);

    // Each workload rolled exactly once: one template change, one
    // generation, one RolloutTriggered.
    assert_eq!(
        seen.deployment_hashes.len(),
        2,
        "Deployment template hashes: {:?}",
        seen.deployment_hashes
    );
    assert_eq!(
        seen.stateful_set_hashes.len(),
        2,
        "StatefulSet template hashes: {:?}",
        seen.stateful_set_hashes
    );
    assert_eq!(deployment(&client).await.metadata.generation, Some(d0 + 1));
    assert_eq!(
        stateful_set(&client).await.metadata.generation,
        Some(s0 + 1)
    );
    for workload in ["Deployment/metrics-app", "StatefulSet/prometheus"] {
        assert_eq!(
            story.count_events("RolloutTriggered", workload).await,
            1,
            "{workload}"
        );
        assert_eq!(
            story.count_events("RolloutCompleted", workload).await,
            1,
            "{workload}"
        );
    }

    // The events, sorted by kubectl, tell the steps in order.
    let events = story.sorted_events().await;
    let table = story
        .kubectl
        .run_ok(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
        .await
        .unwrap();
    let times: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "kubectl sorted the events by time:\n{table}"
    );
    let position = |reason: &str, object: Option<&str>, from: usize| {
        events
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, (r, o, _, _, _))| r == reason && object.is_none_or(|x| x == o))
            .map(|(i, e)| (i, e.3.clone()))
            .unwrap_or_else(|| panic!("no {reason} {object:?} after row {from}:\n{table}"))
    };
    let started = position(
        "CARotationStarted",
        Some("ClusterCAIssuer/monitoring-ca"),
        0,
    );
    let mut steps = vec![("CARotationStarted".to_owned(), started.1.clone())];
    // Every target's update after the rotation started.
    let mut last_update = started.1.clone();
    for (ns, name) in targets() {
        let object = format!("ConfigMap/{name}");
        let (_, _, _, at, _) = events
            .iter()
            .rfind(|(r, o, n, _, _)| r == "ConfigMapUpdated" && *o == object && *n == ns)
            .unwrap_or_else(|| panic!("no ConfigMapUpdated for {ns}/{name}:\n{table}"));
        assert!(
            *at >= started.1,
            "{ns}/{name} updated before the rotation:\n{table}"
        );
        if *at > last_update {
            last_update = at.clone();
        }
    }
    steps.push(("ConfigMapUpdated (every target)".to_owned(), last_update));
    for (reason, object) in [
        ("RolloutTriggered", "StatefulSet/prometheus"),
        ("RolloutCompleted", "StatefulSet/prometheus"),
        ("CARotated", "ClusterCAIssuer/monitoring-ca"),
        ("RolloutTriggered", "Deployment/metrics-app"),
        ("RolloutCompleted", "Deployment/metrics-app"),
    ] {
        let (_, at) = position(reason, Some(object), 0);
        steps.push((format!("{reason} {object}"), at));
    }
    assert!(
        steps.windows(2).all(|w| w[0].1 <= w[1].1),
        "steps out of order: {steps:#?}\n{table}"
    );
    // The rows themselves come in that order where their times differ.
    let rotated = position("CARotated", Some("ClusterCAIssuer/monitoring-ca"), 0);
    assert!(started.0 < rotated.0, "{table}");
    println!("{table}");
    story.assert_no_key_leaks().await;
}
