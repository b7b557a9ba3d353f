//! End to end: the real `capstan-rotator` against a real control plane
//! (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
//! whose fake node makes pods Ready, so rollouts really complete).
//! Workloads are rolled (their pod template gets a new
//! `capstan.dev/config-hash`) when the content of a Secret or ConfigMap they
//! use changes, once per debounce window, and `kubectl get events` tells it.
//! Failed reads and patches (injected by a fault proxy between the rotator
//! and kube-apiserver) delay a rollout but never lose it; a rollout that
//! does not finish in time is reported; Reloader's name lists and DaemonSets
//! work as Deployments and StatefulSets do.
//!
//! Each test starts its own control plane (the rotator acts cluster-wide and
//! holds a leader-election Lease). The rotator talks to kube-apiserver
//! through a [`FaultProxy`]; the test's own client and kubectl talk to
//! kube-apiserver directly, so injected faults never reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use capstan_tests::cluster::{MASTERS, scraped_series, start_binary, user_kubeconfig_at};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::controlplane::proxy::FaultProxy;
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, strip_ansi};
use capstan_tests::hygiene;
use capstan_testserver::faults::{Faults, FaultsHandle};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const HASH: &str = "capstan.dev/config-hash";
const ROTATOR_USER: &str = "system:serviceaccount:default:capstan-rotator";

struct Env {
    rotator: RunningBinary,
    /// Between the rotator and kube-apiserver.
    proxy: FaultProxy,
    client: kube::Client,
    kubectl: Kubectl,
    _dir: tempfile::TempDir,
    /// Declared last so it is dropped last, after the rotator.
    _cp: ControlPlane,
}

async fn start(extra: &[&str]) -> Env {
    start_with("2s", extra).await
}

/// A control plane, and the rotator (through a fault proxy that injects
/// nothing until told to) with `--restart-debounce debounce` and `extra`
/// arguments.
async fn start_with(debounce: &str, extra: &[&str]) -> Env {
    let cp = ControlPlane::start().await.unwrap();
    let proxy = FaultProxy::start(&cp, FaultsHandle::new(Faults::default()))
        .await
        .unwrap();
    let client = cp.client().await.unwrap();
    let kubectl = Kubectl::for_server(&cp).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--leader-election-namespace",
        "default",
        "--restart-debounce",
        debounce,
    ];
    args.extend_from_slice(extra);
    let config = user_kubeconfig_at(
        &cp,
        proxy.url(),
        dir.path(),
        "rotator",
        ROTATOR_USER,
        MASTERS,
    )
    .unwrap();
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
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "apps"}})).unwrap(),
        )
        .await
        .unwrap();
    Env {
        rotator,
        proxy,
        client,
        kubectl,
        _dir: dir,
        _cp: cp,
    }
}

impl Env {
    /// Fails on any private key (the Secrets' and those this test made)
    /// outside Secrets: objects, the binaries' logs, their metrics.
    async fn assert_no_key_leaks(&self) {
        let keys = hygiene::keys_in_dir(self._dir.path());
        hygiene::assert_no_key_leaks(&self.kubectl, &[&self.rotator], &keys).await;
    }

    async fn create_sources(&self) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), "apps");
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), "apps");
        for name in ["tls", "token"] {
            let s = json!({"metadata": {"name": name}, "stringData": {"value": "v1"}});
            secrets
                .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
                .await
                .unwrap();
        }
        let cm = json!({"metadata": {"name": "ca"}, "data": {"ca-bundle.crt": "v1"}});
        cms.create(&PostParams::default(), &serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
    }

    async fn create_workloads(&self, annotations: serde_json::Value) {
        self.create_workloads_with(annotations, 0).await;
    }

    /// [`Env::create_workloads`], the Deployment's new pods counting as
    /// available only once Ready for `min_ready_seconds`.
    async fn create_workloads_with(&self, annotations: serde_json::Value, min_ready_seconds: i32) {
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "web", "image": "web", "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}}}]}],
                "volumes": [{"name": "tls", "secret": {"secretName": "tls"}}, {"name": "ca", "configMap": {"name": "ca"}}]
            }
        });
        let deploy = json!({"metadata": {"name": "web", "annotations": annotations},
            "spec": {"replicas": 1, "minReadySeconds": min_ready_seconds,
                "selector": {"matchLabels": {"app": "web"}}, "template": template}});
        Api::<Deployment>::namespaced(self.client.clone(), "apps")
            .create(
                &PostParams::default(),
                &serde_json::from_value(deploy).unwrap(),
            )
            .await
            .unwrap();
        let sts = json!({"metadata": {"name": "prometheus", "annotations": {"reloader.stakater.com/auto": "true"}},
            "spec": {"replicas": 1, "serviceName": "prometheus", "selector": {"matchLabels": {"app": "prometheus"}},
                "template": {"metadata": {"labels": {"app": "prometheus"}}, "spec": {"containers": [{"name": "p", "image": "p"}],
                    "volumes": [{"name": "ca", "configMap": {"name": "ca"}}]}}}});
        Api::<StatefulSet>::namespaced(self.client.clone(), "apps")
            .create(
                &PostParams::default(),
                &serde_json::from_value(sts).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn set_secret(&self, name: &str, value: &str) {
        let patch = json!({"stringData": {"value": value}});
        Api::<Secret>::namespaced(self.client.clone(), "apps")
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn set_ca(&self, value: &str) {
        let patch = json!({"data": {"ca-bundle.crt": value}});
        Api::<ConfigMap>::namespaced(self.client.clone(), "apps")
            .patch("ca", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn deployment(&self) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), "apps")
            .get("web")
            .await
            .unwrap()
    }

    /// The pods of app `app` that are not being deleted: the config hash
    /// each was made with, and whether it is Ready.
    async fn live_pods(&self, app: &str) -> Vec<(Option<String>, bool)> {
        let params = kube::api::ListParams::default().labels(&format!("app={app}"));
        Api::<Pod>::namespaced(self.client.clone(), "apps")
            .list(&params)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let hash = p.metadata.annotations.and_then(|a| a.get(HASH).cloned());
                (hash, ready)
            })
            .collect()
    }

    async fn events(&self) -> String {
        self.kubectl
            .run_ok(&["get", "events", "-n", "apps"])
            .await
            .unwrap()
    }

    async fn wait_events(&self, what: &str, count: usize) -> String {
        let found = await_condition(what, WAIT, POLL, || async {
            let events = self.events().await;
            (events.matches(what).count() >= count).then_some(events)
        })
        .await;
        match found {
            Ok(events) => events,
            Err(e) => panic!(
                "{e}\nevents:\n{}\nrotator logs:\n{}",
                self.events().await,
                self.rotator.logs().join("\n")
            ),
        }
    }
}

fn template_hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(HASH)
        .cloned()
}

fn baseline(d: &Deployment) -> Option<String> {
    d.metadata.annotations.as_ref()?.get(HASH).cloned()
}

#[tokio::test]
async fn changed_content_rolls_opted_in_workloads_once_per_window() {
    let env = start(&[]).await;
    env.create_sources().await;
    env.create_workloads(json!({"capstan.dev/restart-on-change": "true"}))
        .await;

    // A baseline is recorded on the workload itself; nothing rolls.
    let first = await_condition("a baseline hash", WAIT, POLL, || async {
        baseline(&env.deployment().await)
    })
    .await
    .unwrap();
    assert_eq!(template_hash(&env.deployment().await), None);
    let generation = env.deployment().await.metadata.generation;

    // One change: one rollout, named in the events, followed to its end:
    // once it is reported complete, the only pods left are the new
    // template's, and they are Ready.
    env.set_secret("tls", "v2").await;
    env.wait_events("RolloutCompleted", 1).await;
    let pods = env.live_pods("web").await;
    let events = env
        .wait_events(
            "Restarting Deployment/web -n apps because Secret/tls changed",
            1,
        )
        .await;
    assert!(events.contains("deployment/web"), "{events}");
    let rolled = env.deployment().await;
    let second = template_hash(&rolled).unwrap();
    assert_ne!(second, first);
    assert_eq!(pods, [(Some(second.clone()), true)], "{events}");
    assert_eq!(
        rolled.metadata.generation,
        generation.map(|g| g + 1),
        "exactly one template change"
    );

    // A ConfigMap change rolls the Deployment again, and the StatefulSet
    // (Reloader's annotation), which uses only the ConfigMap.
    env.set_ca("v2").await;
    env.wait_events(
        "Restarting Deployment/web -n apps because ConfigMap/ca changed",
        1,
    )
    .await;
    env.wait_events(
        "Restarting StatefulSet/prometheus -n apps because ConfigMap/ca changed",
        1,
    )
    .await;
    assert_eq!(
        env.deployment().await.metadata.generation,
        generation.map(|g| g + 2)
    );

    // A metadata-only change rolls nothing: change a label, then make a real
    // change elsewhere and wait for that one; the label caused no rollout.
    let label = json!({"metadata": {"labels": {"touched": "yes"}}});
    Api::<Secret>::namespaced(env.client.clone(), "apps")
        .patch("tls", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    env.set_secret("token", "v3").await;
    let events = env.wait_events("because Secret/token changed", 1).await;
    let tls_rolls = events.matches("because Secret/tls changed").count();
    assert_eq!(
        tls_rolls, 1,
        "a label change must not roll anything:\n{events}"
    );
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let env = start(&["--dry-run"]).await;
    env.create_sources().await;
    env.create_workloads(json!({"capstan.dev/restart-on-change": "true"}))
        .await;
    // Change only once the rotator knows the content (it says so once it
    // has read every source of the workload). A change seen later, by the
    // watch or by its first list, is a change.
    env.rotator
        .wait_for_log(WAIT, |line| {
            line.contains("watching the sources of Deployment/web -n apps")
        })
        .await
        .unwrap();
    env.set_secret("tls", "v2").await;
    let events = env
        .wait_events(
            "Dry run: would restart Deployment/web -n apps because Secret/tls changed",
            1,
        )
        .await;
    assert!(!events.contains("RolloutTriggered"), "{events}");
    let d = env.deployment().await;
    assert_eq!(template_hash(&d), None);
    assert_eq!(
        baseline(&d),
        None,
        "dry run writes nothing, not even a baseline"
    );
    assert_eq!(d.metadata.generation, Some(1));
    env.assert_no_key_leaks().await;
}

/// How many times `reason` was recorded on `workload` (`Kind/name`),
/// counting the repeats folded into one row, and the messages.
async fn recorded(env: &Env, reason: &str, workload: &str) -> (u64, Vec<String>) {
    let list = Api::<Event>::namespaced(env.client.clone(), "apps")
        .list(&Default::default())
        .await
        .unwrap();
    let matching: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            format!(
                "{}/{}",
                e.involved_object.kind.as_deref().unwrap_or_default(),
                e.involved_object.name.as_deref().unwrap_or_default()
            ) == workload
        })
        .collect();
    let count = matching
        .iter()
        .map(|e| u64::try_from(e.count.unwrap_or(1)).unwrap_or(1))
        .sum();
    (
        count,
        matching.into_iter().filter_map(|e| e.message).collect(),
    )
}

/// Waits until `reason` was recorded `count` times on `workload`.
async fn wait_recorded(env: &Env, reason: &str, workload: &str, count: u64) {
    let found = await_condition(
        &format!("{count} {reason} on {workload}"),
        WAIT,
        POLL,
        || async { (recorded(env, reason, workload).await.0 >= count).then_some(()) },
    )
    .await;
    if let Err(e) = found {
        panic!(
            "{e}\nevents:\n{}\nrotator logs:\n{}",
            env.events().await,
            env.rotator.logs().join("\n")
        );
    }
}

/// The value of the sample `series` (name and labels, as exposed) on the
/// rotator's `/metrics`.
async fn metric(rotator: &RunningBinary, series: &str) -> Option<f64> {
    scraped_series(rotator, series, WAIT).await
}

#[tokio::test]
async fn three_changes_in_one_window_roll_once() {
    // A window far longer than the three writes take, so the test does not
    // depend on how fast they land.
    let env = start_with("10s", &[]).await;
    env.create_sources().await;
    env.create_workloads(json!({"capstan.dev/restart-on-change": "true"}))
        .await;
    await_condition("a baseline hash", WAIT, POLL, || async {
        baseline(&env.deployment().await)
    })
    .await
    .unwrap();
    let generation = env.deployment().await.metadata.generation;
    tokio::join!(
        env.set_secret("tls", "v2"),
        env.set_secret("token", "v2"),
        env.set_ca("v2"),
    );
    env.wait_events(
        "Restarting Deployment/web -n apps because ConfigMap/ca, Secret/tls, Secret/token changed",
        1,
    )
    .await;
    wait_recorded(&env, "RolloutCompleted", "Deployment/web", 1).await;
    assert_eq!(
        env.deployment().await.metadata.generation,
        generation.map(|g| g + 1),
        "one template change for three objects\nevents:\n{}\nrotator logs:\n{}",
        env.events().await,
        env.rotator.logs().join("\n")
    );
    let rolls = recorded(&env, "RolloutTriggered", "Deployment/web").await;
    assert_eq!(rolls.0, 1, "{rolls:?}");
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn failed_reads_and_patches_are_retried_and_roll_once() {
    let env = start_with("4s", &[]).await;
    env.create_sources().await;
    env.create_workloads(json!({"capstan.dev/restart-on-change": "true"}))
        .await;
    await_condition("a baseline hash", WAIT, POLL, || async {
        baseline(&env.deployment().await)
    })
    .await
    .unwrap();
    let generation = env.deployment().await.metadata.generation;
    // Every request of the rotator fails; the test's own requests go to
    // kube-apiserver directly.
    let errors_on = |env: &Env| {
        env.proxy.faults().update(|f| {
            f.error_rate = 1.0;
            f.error_codes = vec![500];
        });
    };
    let count_logs = |needle: &str| {
        env.rotator
            .logs()
            .iter()
            .filter(|l| strip_ansi(l).contains(needle))
            .count()
    };

    // 1. The fetch of the changed Secret fails, and so does its first
    // retry; the change is not lost.
    errors_on(&env);
    env.set_secret("tls", "v2").await;
    await_condition("two failed reads of Secret/tls", WAIT, POLL, || async {
        (count_logs("reading Secret/tls -n apps") >= 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.rotator.logs().join("\n")));
    env.proxy.faults().clear();
    env.wait_events("because Secret/tls changed", 1).await;
    env.wait_events("RolloutCompleted", 1).await;
    assert_eq!(
        env.deployment().await.metadata.generation,
        generation.map(|g| g + 1)
    );

    // 2. The change is read, then every patch fails for a while; the
    // restart waits and is applied once the errors stop.
    let seen = count_logs("changed=true");
    env.set_secret("token", "v2").await;
    await_condition("the change of Secret/token read", WAIT, POLL, || async {
        (count_logs("changed=true") > seen).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.rotator.logs().join("\n")));
    errors_on(&env);
    await_condition("two failed restarts", WAIT, POLL, || async {
        (count_logs("could not restart; will try again") >= 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.rotator.logs().join("\n")));
    env.proxy.faults().clear();
    env.wait_events("because Secret/token changed", 1).await;
    let rolled = await_condition("the second rollout", WAIT, POLL, || async {
        let d = env.deployment().await;
        (d.metadata.generation == generation.map(|g| g + 2)).then_some(d)
    })
    .await
    .unwrap();
    // Exactly once each: no later template change, one trigger per change.
    wait_recorded(&env, "RolloutCompleted", "Deployment/web", 2).await;
    let rolls = recorded(&env, "RolloutTriggered", "Deployment/web").await;
    assert_eq!(rolls.0, 2, "{rolls:?}");
    assert_eq!(
        env.deployment().await.metadata.generation,
        rolled.metadata.generation
    );
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn a_rollout_that_does_not_complete_in_time_is_reported() {
    // The Deployment's rollouts take a minute (a new pod counts as
    // available once Ready for 60 s); the rotator waits three seconds.
    let env = start_with("1s", &["--rollout-timeout", "3s"]).await;
    env.create_sources().await;
    env.create_workloads_with(json!({"capstan.dev/restart-on-change": "true"}), 60)
        .await;
    await_condition("a baseline hash", WAIT, POLL, || async {
        baseline(&env.deployment().await)
    })
    .await
    .unwrap();
    env.set_secret("tls", "v2").await;
    let events = env
        .wait_events(
            "Gave up waiting for the rollout of Deployment/web -n apps after 3s",
            1,
        )
        .await;
    assert!(events.contains("RolloutTimedOut"), "{events}");
    assert!(!events.contains("RolloutCompleted"), "{events}");
    env.assert_no_key_leaks().await;
}

#[tokio::test]
async fn daemon_sets_and_reloader_reload_lists_roll() {
    let env = start(&[]).await;
    env.create_sources().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "apps");
    let extra = json!({"metadata": {"name": "extra"}, "data": {"v": "1"}});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(extra).unwrap(),
    )
    .await
    .unwrap();
    // A DaemonSet opted in with capstan's annotation; a Deployment with
    // Reloader's name lists: Secret token (referenced) and ConfigMap extra
    // (not referenced), but not Secret tls, which it mounts.
    let ds = json!({"metadata": {"name": "node-exporter", "annotations": {"capstan.dev/restart-on-change": "true"}},
        "spec": {"selector": {"matchLabels": {"app": "node-exporter"}},
            "template": {"metadata": {"labels": {"app": "node-exporter"}}, "spec": {"containers": [{"name": "ne", "image": "ne"}],
                "volumes": [{"name": "tls", "secret": {"secretName": "tls"}}]}}}});
    Api::<DaemonSet>::namespaced(env.client.clone(), "apps")
        .create(&PostParams::default(), &serde_json::from_value(ds).unwrap())
        .await
        .unwrap();
    env.create_workloads(json!({
        "secret.reloader.stakater.com/reload": "token",
        "configmap.reloader.stakater.com/reload": "extra"
    }))
    .await;
    await_condition("baseline hashes", WAIT, POLL, || async {
        let ds = Api::<DaemonSet>::namespaced(env.client.clone(), "apps")
            .get("node-exporter")
            .await
            .ok()?;
        ds.metadata.annotations.as_ref()?.get(HASH)?;
        baseline(&env.deployment().await)
    })
    .await
    .unwrap();

    // tls: the DaemonSet rolls; the Deployment, which does not list it,
    // does not (the next change's message would name it if it had joined).
    env.set_secret("tls", "v2").await;
    env.wait_events(
        "Restarting DaemonSet/node-exporter -n apps because Secret/tls changed",
        1,
    )
    .await;
    wait_recorded(&env, "RolloutCompleted", "DaemonSet/node-exporter", 1).await;
    env.set_secret("token", "v2").await;
    env.wait_events(
        "Restarting Deployment/web -n apps because Secret/token changed",
        1,
    )
    .await;
    // extra: listed, not referenced, still restarts the Deployment.
    let patch = json!({"data": {"v": "2"}});
    cms.patch("extra", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let events = env
        .wait_events(
            "Restarting Deployment/web -n apps because ConfigMap/extra changed",
            1,
        )
        .await;
    assert!(
        !events.contains("Deployment/web -n apps because Secret/tls"),
        "{events}"
    );
    let rolls = recorded(&env, "RolloutTriggered", "Deployment/web").await;
    assert_eq!(rolls.0, 2, "{rolls:?}");
    let ds_rolls = recorded(&env, "RolloutTriggered", "DaemonSet/node-exporter").await;
    assert_eq!(ds_rolls.0, 1, "{ds_rolls:?}");

    // Sources watched: token and extra (Deployment), ca (StatefulSet), tls
    // (DaemonSet); one fewer once the DaemonSet is gone.
    let watched = r#"capstan_rotator_sources_watched{controller="restart"}"#;
    assert_eq!(metric(&env.rotator, watched).await, Some(4.0));
    Api::<DaemonSet>::namespaced(env.client.clone(), "apps")
        .delete("node-exporter", &Default::default())
        .await
        .unwrap();
    await_condition("the DaemonSet's source forgotten", WAIT, POLL, || async {
        (metric(&env.rotator, watched).await == Some(3.0)).then_some(())
    })
    .await
    .unwrap();
    env.assert_no_key_leaks().await;
}
