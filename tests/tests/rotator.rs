//! End to end: the real `capstan-rotator` against the test API server.
//! Workloads are rolled (their pod template gets a new
//! `capstan.dev/config-hash`) when the content of a Secret or ConfigMap they
//! use changes, once per debounce window, and `kubectl get events` tells it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use capstan_tests::apiserver::auth::UserInfo;
use capstan_tests::apiserver::{TestApiServer, kubeconfig};
use capstan_tests::harness::{Kubectl, RunningBinary, await_condition, workspace_binary};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const HASH: &str = "capstan.dev/config-hash";

struct Env {
    _server: TestApiServer,
    client: kube::Client,
    kubectl: Kubectl,
    rotator: RunningBinary,
    _dir: tempfile::TempDir,
}

async fn start(extra: &[&str]) -> Env {
    let server = TestApiServer::builder()
        .rollout_delay(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let client = server.client().await.unwrap();
    let kubectl = Kubectl::for_server(&server).unwrap();
    let dir = tempfile::tempdir().unwrap();
    server
        .add_token(
            "capstan-rotator-token",
            UserInfo::new(
                "system:serviceaccount:default:capstan-rotator",
                &["system:masters"],
            ),
        )
        .unwrap();
    let config = dir.path().join("rotator.kubeconfig");
    kubeconfig::write(
        &config,
        server.url(),
        server.ca_pem(),
        "capstan-rotator-token",
    )
    .unwrap();
    let mut args = vec![
        "--kubeconfig",
        config.to_str().unwrap(),
        "--leader-election-namespace",
        "default",
        "--restart-debounce",
        "2s",
    ];
    args.extend_from_slice(extra);
    let rotator = RunningBinary::start(
        &workspace_binary("capstan-rotator").unwrap(),
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
        _server: server,
        client,
        kubectl,
        rotator,
        _dir: dir,
    }
}

impl Env {
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
        let template = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "web", "image": "web", "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}}}]}],
                "volumes": [{"name": "tls", "secret": {"secretName": "tls"}}, {"name": "ca", "configMap": {"name": "ca"}}]
            }
        });
        let deploy = json!({"metadata": {"name": "web", "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template}});
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

    // One change: one rollout, named in the events, followed to its end.
    env.set_secret("tls", "v2").await;
    env.wait_events("RolloutCompleted", 1).await;
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
    assert_eq!(
        rolled.metadata.generation,
        generation.map(|g| g + 1),
        "exactly one template change"
    );

    // Three objects changed inside one window: one rollout naming all three.
    env.set_secret("tls", "v3").await;
    env.set_secret("token", "v2").await;
    env.set_ca("v2").await;
    let events = env
        .wait_events("because ConfigMap/ca, Secret/tls, Secret/token changed", 1)
        .await;
    assert_eq!(events.matches("RolloutTriggered").count(), 2, "{events}");
    let after_three = env.deployment().await;
    assert_eq!(after_three.metadata.generation, generation.map(|g| g + 2));

    // The StatefulSet (Reloader's annotation) rolled for the ConfigMap only.
    env.wait_events(
        "Restarting StatefulSet/prometheus -n apps because ConfigMap/ca changed",
        1,
    )
    .await;

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
}

#[tokio::test]
async fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let env = start(&["--dry-run"]).await;
    env.create_sources().await;
    env.create_workloads(json!({"capstan.dev/restart-on-change": "true"}))
        .await;
    // Change only once the rotator knows the content and its watch of the
    // Secret runs (the first metadata event for it has been checked).
    env.rotator
        .wait_for_log(WAIT, |line| {
            line.contains("source content checked") && line.contains("Secret/tls")
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
}
