//! End to end, for users moving from Stakater Reloader: the real
//! `capstan-rotator` against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok, so rollouts complete),
//! checked with the real kubectl.
//!
//! * Reloader's annotations mean what they meant: on the pod template as on
//!   the workload, `search` + `match`, `ignore` on a source, the `exclude`
//!   lists; and each Reloader annotation capstan does not honour is named
//!   in one Warning Event (`UnsupportedAnnotation`), not one per resync.
//! * `--namespace`, `--namespace-selector` and `--namespaces-to-ignore`
//!   keep restarts and bundle injection inside the scope, and a namespace
//!   labelled into the scope later is picked up.
//!
//! Each test starts its own control plane (the rotator acts cluster-wide
//! and holds a leader-election Lease).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use capstan_tests::cluster::{MASTERS, p256_ca, start_binary, user_kubeconfig_at};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, workspace_binary};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);
const HASH: &str = "capstan.dev/config-hash";
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";

struct Env {
    rotator: RunningBinary,
    client: kube::Client,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
    /// Declared last so it is dropped last, after the rotator.
    cp: ControlPlane,
}

/// A control plane with `namespaces` (name and labels), and the rotator
/// with `extra` arguments.
async fn start(namespaces: &[(&str, Value)], extra: &[&str]) -> Env {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client().await.unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in namespaces {
        let ns = json!({"metadata": {"name": name, "labels": labels}});
        api.create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
            .await
            .unwrap();
    }
    let mut args = vec![
        "--leader-election-namespace",
        "default",
        "--restart-debounce",
        "2s",
        "--max-concurrent-rollouts",
        "10",
    ];
    args.extend_from_slice(extra);
    let config =
        user_kubeconfig_at(&cp, &cp.url(), dir.path(), "rotator", ROTATOR_USER, MASTERS).unwrap();
    let rotator = start_binary(
        "capstan-rotator",
        &config,
        &args,
        &[
            ("POD_NAMESPACE", "default"),
            ("POD_NAME", "rotator-0"),
            ("RUST_LOG", "info,capstan_rotator=debug"),
        ],
    )
    .unwrap();
    Env {
        rotator,
        client,
        kubectl,
        dir,
        cp,
    }
}

impl Env {
    /// `kubectl-capstan check -n NS -o json` as the cluster admin: its
    /// stdout (it exits 3 while something is out of sync).
    async fn capstan_check(&self, ns: &str) -> String {
        let out = tokio::process::Command::new(workspace_binary("kubectl-capstan").unwrap())
            .args(["check", "-n", ns, "-o", "json"])
            .env("KUBECONFIG", self.cp.kubeconfig_path())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .expect("kubectl-capstan finished")
            .expect("kubectl-capstan ran");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn secret(&self, ns: &str, name: &str, annotations: Value) {
        let s = json!({"metadata": {"name": name, "annotations": annotations}, "stringData": {"value": "v1"}});
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
            .await
            .unwrap();
    }

    async fn config_map(&self, ns: &str, name: &str, annotations: Value) {
        let cm = json!({"metadata": {"name": name, "annotations": annotations}, "data": {"value": "v1"}});
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
    }

    async fn set_secret(&self, ns: &str, name: &str, value: &str) {
        let patch = json!({"stringData": {"value": value}});
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn set_config_map(&self, ns: &str, name: &str, value: &str) {
        let patch = json!({"data": {"value": value}});
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A one-replica Deployment `name` in `ns` with these workload and pod
    /// template annotations, using `secrets` (env) and `config_maps`
    /// (volumes).
    async fn deployment(
        &self,
        ns: &str,
        name: &str,
        annotations: Value,
        template_annotations: Value,
        secrets: &[&str],
        config_maps: &[&str],
    ) {
        let env: Vec<Value> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("S{i}"), "valueFrom": {"secretKeyRef": {"name": s, "key": "value"}}}))
            .collect();
        let volumes: Vec<Value> = config_maps
            .iter()
            .map(|c| json!({"name": c, "configMap": {"name": c}}))
            .collect();
        let d = json!({"metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}, "annotations": template_annotations},
                    "spec": {"containers": [{"name": "c", "image": "c", "env": env}], "volumes": volumes}}}});
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }

    /// The hash annotation on the Deployment (the baseline or the last roll).
    async fn recorded_hash(&self, ns: &str, name: &str) -> Option<String> {
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .metadata
            .annotations
            .and_then(|a| a.get(HASH).cloned())
    }

    async fn wait_baseline(&self, ns: &str, name: &str) {
        let what = format!("a baseline hash on Deployment/{name} -n {ns}");
        if let Err(e) = await_condition(&what, WAIT, POLL, || async {
            self.recorded_hash(ns, name).await
        })
        .await
        {
            panic!("{e}\nrotator logs:\n{}", self.rotator.logs().join("\n"));
        }
    }

    async fn events(&self, ns: &str) -> Vec<Value> {
        let out = self
            .kubectl
            .run_ok(&["get", "events", "-n", ns, "-o", "json"])
            .await
            .unwrap();
        let list: Value = serde_json::from_str(&out).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Events in `ns` with `reason` about Deployment `name`, by message.
    async fn messages(&self, ns: &str, reason: &str, name: &str) -> Vec<(String, i64)> {
        self.events(ns)
            .await
            .into_iter()
            .filter(|e| {
                e["reason"] == reason
                    && e["involvedObject"]["kind"] == "Deployment"
                    && e["involvedObject"]["name"] == name
            })
            .map(|e| {
                (
                    e["message"].as_str().unwrap_or_default().to_owned(),
                    e["count"].as_i64().unwrap_or(1),
                )
            })
            .collect()
    }

    async fn wait_message(&self, ns: &str, reason: &str, name: &str) -> Vec<(String, i64)> {
        let what = format!("a {reason} Event on Deployment/{name} -n {ns}");
        match await_condition(&what, WAIT, POLL, || async {
            let found = self.messages(ns, reason, name).await;
            (!found.is_empty()).then_some(found)
        })
        .await
        {
            Ok(found) => found,
            Err(e) => panic!(
                "{e}\nevents:\n{}\nrotator logs:\n{}",
                self.kubectl
                    .run_ok(&["get", "events", "-n", ns])
                    .await
                    .unwrap_or_default(),
                self.rotator.logs().join("\n")
            ),
        }
    }
}

#[tokio::test]
async fn reloader_annotations_mean_what_they_meant_in_reloader() {
    let env = start(&[("apps", json!({}))], &[]).await;
    let ns = "apps";
    env.secret(ns, "plain", json!({})).await;
    env.secret(
        ns,
        "matched",
        json!({"reloader.stakater.com/match": "true"}),
    )
    .await;
    env.secret(ns, "unmatched", json!({})).await;
    env.secret(
        ns,
        "ignored",
        json!({"reloader.stakater.com/ignore": "true"}),
    )
    .await;
    env.config_map(ns, "settings", json!({})).await;
    env.config_map(ns, "excluded", json!({})).await;

    // Opted in on the pod template only, as Reloader accepts.
    env.deployment(
        ns,
        "templated",
        json!({}),
        json!({"reloader.stakater.com/auto": "true"}),
        &["plain"],
        &[],
    )
    .await;
    // Search mode: only the referenced Secret marked match counts.
    env.deployment(
        ns,
        "searching",
        json!({"reloader.stakater.com/search": "true"}),
        json!({}),
        &["matched", "unmatched"],
        &[],
    )
    .await;
    // An ignored Secret never counts.
    env.deployment(
        ns,
        "ignoring",
        json!({"reloader.stakater.com/auto": "true"}),
        json!({}),
        &["ignored"],
        &["settings"],
    )
    .await;
    // An excluded ConfigMap never counts, though auto would take it.
    env.deployment(
        ns,
        "excluding",
        json!({"reloader.stakater.com/auto": "true",
               "configmaps.exclude.reloader.stakater.com/reload": "excluded"}),
        json!({}),
        &["plain"],
        &["excluded"],
    )
    .await;
    // Annotations capstan does not honour.
    env.deployment(
        ns,
        "unsupported",
        json!({"reloader.stakater.com/auto": "true",
               "reloader.stakater.com/rollout-strategy": "restart",
               "deployment.reloader.stakater.com/pause-period": "5m"}),
        json!({}),
        &["plain"],
        &[],
    )
    .await;
    for name in [
        "templated",
        "searching",
        "ignoring",
        "excluding",
        "unsupported",
    ] {
        env.wait_baseline(ns, name).await;
    }

    // Every source changes at once; each workload rolls once, for the
    // sources that count for it, and the messages name only those.
    env.set_secret(ns, "unmatched", "v2").await;
    env.set_secret(ns, "ignored", "v2").await;
    env.set_config_map(ns, "excluded", "v2").await;
    env.set_secret(ns, "plain", "v2").await;
    env.set_secret(ns, "matched", "v2").await;
    env.set_config_map(ns, "settings", "v2").await;
    let expected = [
        ("templated", "Secret/plain"),
        ("searching", "Secret/matched"),
        ("ignoring", "ConfigMap/settings"),
        ("excluding", "Secret/plain"),
        ("unsupported", "Secret/plain"),
    ];
    for (name, because) in expected {
        let triggered = env.wait_message(ns, "RolloutTriggered", name).await;
        assert_eq!(
            triggered,
            [(
                format!("Restarting Deployment/{name} -n {ns} because {because} changed"),
                1
            )],
            "{name}"
        );
    }
    for (name, _) in expected {
        env.wait_message(ns, "RolloutCompleted", name).await;
    }

    // The Warning names each annotation not honoured, and says it once,
    // though the workload changed many times since (baseline, roll, rollout
    // status). `kubectl get events` shows it.
    let warnings = env
        .wait_message(ns, "UnsupportedAnnotation", "unsupported")
        .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (message, count) = &warnings[0];
    assert_eq!(*count, 1, "{message}");
    assert!(
        message.contains("reloader.stakater.com/rollout-strategy is a Reloader annotation capstan does not honour"),
        "{message}"
    );
    assert!(
        message.contains("deployment.reloader.stakater.com/pause-period is a Reloader annotation capstan does not honour"),
        "{message}"
    );
    let table = env
        .kubectl
        .run_ok(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "reason=UnsupportedAnnotation",
        ])
        .await
        .unwrap();
    assert_eq!(
        table.matches("deployment/unsupported").count(),
        1,
        "{table}"
    );
    assert_eq!(table.matches("UnsupportedAnnotation").count(), 1, "{table}");
    for name in ["templated", "searching", "ignoring", "excluding"] {
        assert!(
            env.messages(ns, "UnsupportedAnnotation", name)
                .await
                .is_empty(),
            "{name} has only honoured annotations"
        );
    }

    // Changed again, the sources that do not count are still not named:
    // had one counted, the message would name it beside the counted one.
    env.set_secret(ns, "ignored", "v3").await;
    env.set_secret(ns, "unmatched", "v3").await;
    env.set_config_map(ns, "excluded", "v3").await;
    env.set_config_map(ns, "settings", "v3").await;
    env.set_secret(ns, "matched", "v3").await;
    for (name, because) in [
        ("ignoring", "ConfigMap/settings"),
        ("searching", "Secret/matched"),
    ] {
        let what = format!("a second rollout of {name}");
        let found = await_condition(&what, WAIT, POLL, || async {
            let found = env.messages(ns, "RolloutTriggered", name).await;
            found
                .first()
                .is_some_and(|(_, count)| *count >= 2)
                .then_some(found)
        })
        .await
        .unwrap();
        assert_eq!(
            found,
            [(
                format!("Restarting Deployment/{name} -n {ns} because {because} changed"),
                2
            )],
            "{name}"
        );
    }
    assert_eq!(
        env.messages(ns, "RolloutTriggered", "excluding").await[0].1,
        1,
        "the excluded ConfigMap rolled nothing"
    );

    // `kubectl capstan check` expects the rotator's hash: the ignored and
    // unmatched Secrets changed since the last rollouts, yet every workload
    // is in sync, as they do not count.
    let in_sync = await_condition("kubectl capstan check in sync", WAIT, POLL, || async {
        let out = env.capstan_check(ns).await;
        let v: Value = serde_json::from_str(&out).ok()?;
        let items = v["items"].as_array()?;
        (v["inSync"] == true && items.len() == 5).then_some(v)
    })
    .await;
    let check = match in_sync {
        Ok(v) => v,
        Err(e) => panic!("{e}\nlast check:\n{}", env.capstan_check(ns).await),
    };
    for name in [
        "templated",
        "searching",
        "ignoring",
        "excluding",
        "unsupported",
    ] {
        let item = check["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {check}"));
        assert_eq!(item["state"], "InSync", "{item}");
    }
}

#[tokio::test]
async fn namespace_flags_keep_restarts_injection_and_cabundles_in_scope() {
    let on = json!({"capstan": "on"});
    let env = start(
        &[
            ("inside", on.clone()),
            ("later", json!({})),
            ("ignored", on.clone()),
            ("unlisted", on.clone()),
        ],
        &[
            "--namespace",
            "inside,later",
            "--namespace",
            "ignored",
            "--namespace-selector",
            "capstan=on",
            "--namespaces-to-ignore",
            "ignored",
        ],
    )
    .await;
    // A CA to inject, in a namespace of the scope.
    p256_ca(env.dir.path(), "ca");
    let crt = std::fs::read_to_string(env.dir.path().join("ca.crt")).unwrap();
    let ca = json!({"metadata": {"name": "ca"}, "stringData": {"ca.crt": crt}});
    Api::<Secret>::namespaced(env.client.clone(), "inside")
        .create(&PostParams::default(), &serde_json::from_value(ca).unwrap())
        .await
        .unwrap();
    // A CABundle for every namespace: its targets too stay in the scope. A
    // ConfigMap it would own outside the scope is left as it is.
    env.kubectl.apply_crds(false).await.unwrap();
    let stale = json!({"metadata": {"name": "fleet-trust", "labels": {"capstan.dev/bundle": "fleet"}},
        "data": {"ca-bundle.crt": "left alone"}});
    Api::<ConfigMap>::namespaced(env.client.clone(), "unlisted")
        .create(
            &PostParams::default(),
            &serde_json::from_value(stale).unwrap(),
        )
        .await
        .unwrap();
    let bundle = json!({"apiVersion": "capstan.dev/v1alpha1", "kind": "CABundle",
        "metadata": {"name": "fleet"},
        "spec": {"sources": [{"inline": crt}], "target": {"configMap": "fleet-trust"}}});
    let file = env.dir.path().join("bundle.json");
    std::fs::write(&file, bundle.to_string()).unwrap();
    env.kubectl
        .run_ok(&["apply", "-f", file.to_str().unwrap()])
        .await
        .unwrap();
    for ns in ["inside", "later", "ignored", "unlisted"] {
        env.secret(ns, "token", json!({})).await;
        env.config_map(
            ns,
            "trust",
            json!({"capstan.dev/inject-ca-from": "inside/ca"}),
        )
        .await;
        env.deployment(
            ns,
            "web",
            json!({"reloader.stakater.com/auto": "true"}),
            json!({}),
            &["token"],
            &[],
        )
        .await;
    }
    let injected = |ns: &'static str| {
        let client = env.client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, ns)
                .get("trust")
                .await
                .unwrap()
                .data
                .and_then(|d| d.get("ca-bundle.crt").cloned())
        }
    };
    let bundle = await_condition("the CA injected in inside", WAIT, POLL, || {
        injected("inside")
    })
    .await
    .unwrap();
    assert!(bundle.contains("BEGIN CERTIFICATE"));
    env.wait_baseline("inside", "web").await;
    env.set_secret("inside", "token", "v2").await;
    for ns in ["later", "ignored", "unlisted"] {
        env.set_secret(ns, "token", "v2").await;
    }
    env.wait_message("inside", "RolloutTriggered", "web").await;
    env.wait_message("inside", "RolloutCompleted", "web").await;

    let fleet = |ns: &'static str| {
        let client = env.client.clone();
        async move {
            Api::<ConfigMap>::namespaced(client, ns)
                .get_opt("fleet-trust")
                .await
                .unwrap()
                .and_then(|c| c.data)
                .and_then(|d| d.get("ca-bundle.crt").cloned())
        }
    };
    await_condition("the CABundle target in inside", WAIT, POLL, || {
        fleet("inside")
    })
    .await
    .unwrap();

    // Outside the scope: not baselined, not rolled, not injected, no
    // CABundle target created or updated.
    assert_eq!(fleet("later").await, None);
    assert_eq!(fleet("ignored").await, None);
    assert_eq!(fleet("unlisted").await.as_deref(), Some("left alone"));
    for ns in ["later", "ignored", "unlisted"] {
        assert_eq!(env.recorded_hash(ns, "web").await, None, "{ns}");
        assert!(
            env.messages(ns, "RolloutTriggered", "web").await.is_empty(),
            "{ns}"
        );
        assert_eq!(injected(ns).await, None, "{ns}");
    }

    // Labelled into the scope: picked up (baselined, injected), then rolled
    // on its next change.
    let label = json!({"metadata": {"labels": {"capstan": "on"}}});
    Api::<Namespace>::all(env.client.clone())
        .patch("later", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    await_condition("the CA injected in later", WAIT, POLL, || injected("later"))
        .await
        .unwrap();
    await_condition("the CABundle target in later", WAIT, POLL, || {
        fleet("later")
    })
    .await
    .unwrap();
    env.wait_baseline("later", "web").await;
    env.set_secret("later", "token", "v3").await;
    env.wait_message("later", "RolloutTriggered", "web").await;

    // The fixed list is watched namespace by namespace: the rotator never
    // listed or watched Secrets, ConfigMaps or workloads across all
    // namespaces (kube-apiserver's audit log), so namespaced RBAC suffices.
    let logs = env.rotator.logs().join("\n");
    assert!(
        logs.contains("restarts and bundles act in namespaces ignored, inside, later; namespaces labelled capstan=on; not ignored"),
        "{logs}"
    );
    let namespaced = [
        "secrets",
        "configmaps",
        "deployments",
        "statefulsets",
        "daemonsets",
    ];
    let cluster_wide: Vec<String> = env
        .cp
        .request_log()
        .into_iter()
        .filter(|r| {
            r.user == ROTATOR_USER
                && ["list", "watch"].contains(&r.verb.as_str())
                && namespaced.contains(&r.resource.as_str())
                && r.namespace.is_empty()
        })
        .map(|r| format!("{} {}", r.verb, r.resource))
        .collect();
    assert!(cluster_wide.is_empty(), "{cluster_wide:?}");
    let per_namespace = env
        .cp
        .request_log()
        .into_iter()
        .filter(|r| r.user == ROTATOR_USER && r.verb == "watch" && r.resource == "deployments")
        .map(|r| r.namespace)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        per_namespace,
        ["inside", "later"].map(String::from).into(),
        "one watch per listed namespace, the ignored one left out"
    );
    for ns in ["ignored", "unlisted"] {
        assert_eq!(env.recorded_hash(ns, "web").await, None, "{ns}");
        assert_eq!(injected(ns).await, None, "{ns}");
    }
    assert_eq!(fleet("unlisted").await.as_deref(), Some("left alone"));
    // Its status counts the namespaces in scope only.
    await_condition("CABundle/fleet counting 2 targets", WAIT, POLL, || async {
        let out = env
            .kubectl
            .run_ok(&["get", "cabundle", "fleet", "-o", "json"])
            .await
            .ok()?;
        let bundle: Value = serde_json::from_str(&out).ok()?;
        (bundle["status"]["targets"] == 2 && bundle["status"]["targetsInSync"] == 2).then_some(())
    })
    .await
    .unwrap();
}
