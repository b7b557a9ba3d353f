//! The test API server behaves as kube-apiserver does for what kube-rs
//! clients and controllers rely on. Each test starts its own server.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use capstan_tests::harness::{await_condition, eventually};
use capstan_testserver::{Faults, Rule, TestApiServer, UserInfo};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, ObjectReference, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;

fn cm(name: &str, labels: &[(&str, &str)], data: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "data": {"v": data},
    }))
    .unwrap()
}

async fn setup() -> (TestApiServer, kube::Client) {
    let s = TestApiServer::start().await.unwrap();
    let c = s.client().await.unwrap();
    (s, c)
}

fn rv_of<K: kube::Resource>(k: &K) -> String {
    k.meta().resource_version.clone().unwrap()
}

#[tokio::test]
async fn crud_and_stale_update_conflict() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let created = api
        .create(&PostParams::default(), &cm("a", &[], "1"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some(BTreeMap::from([("v".into(), "2".into())]));
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(rv_of(&updated).parse::<u64>().unwrap() > rv_of(&created).parse::<u64>().unwrap());
    stale.data = Some(BTreeMap::from([("v".into(), "3".into())]));
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    let kube::Error::Api(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let err = api
        .create(&PostParams::default(), &updated)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 500 && e.message.contains("resourceVersion should not be set on objects to be created")),
        "{err:?}"
    );
    let dup = api
        .create(&PostParams::default(), &cm("a", &[], "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(dup, kube::Error::Api(ref e) if e.code == 409 && e.reason == "AlreadyExists"),
        "{dup:?}"
    );
    // An unchanged update keeps the resourceVersion.
    let same = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(rv_of(&same), rv_of(&updated));
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let gone = api.get("a").await.unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref e) if e.code == 404 && e.message == "configmaps \"a\" not found"),
        "{gone:?}"
    );
}

#[tokio::test]
async fn missing_namespace_is_not_found_and_namespace_deletion_removes_content() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "nope");
    let err = api
        .create(&PostParams::default(), &cm("a", &[], "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404 && e.message == "namespaces \"nope\" not found"),
        "{err:?}"
    );
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    api.create(&PostParams::default(), &cm("a", &[], "1"))
        .await
        .unwrap();
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    eventually("namespace gone", || async {
        nss.get_opt("team").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn unauthenticated_requests_get_401_and_rules_give_403() {
    let s = TestApiServer::builder()
        .tokens([(
            "viewer-token".to_string(),
            UserInfo::new("viewer", &["viewers"]),
        )])
        .rules([Rule {
            groups: vec!["viewers".into()],
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["configmaps".into()],
            ..Rule::default()
        }])
        .start()
        .await
        .unwrap();
    let http = reqwest_like(&s, None, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(http.0, 401);
    assert_eq!(http.1["reason"], "Unauthorized");
    let ok = reqwest_like(
        &s,
        Some("viewer-token"),
        "/api/v1/namespaces/default/configmaps",
    )
    .await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    let denied = reqwest_like(
        &s,
        Some("viewer-token"),
        "/api/v1/namespaces/default/secrets",
    )
    .await;
    assert_eq!(denied.0, 403);
    assert_eq!(
        denied.1["message"],
        "secrets is forbidden: User \"viewer\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
}

/// A GET with a raw kube client using an explicit token.
async fn reqwest_like(
    s: &TestApiServer,
    token: Option<&str>,
    path: &str,
) -> (u16, serde_json::Value) {
    let mut kc = kube::config::Kubeconfig::read_from(s.kubeconfig_path()).unwrap();
    for u in &mut kc.auth_infos {
        if let Some(a) = u.auth_info.as_mut() {
            a.token = token.map(|t| t.to_string().into());
        }
    }
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request_text(req).await {
        Ok(t) => (200, serde_json::from_str(&t).unwrap()),
        Err(kube::Error::Api(e)) => (e.code, json!({"reason": e.reason, "message": e.message})),
        Err(e) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_without_gaps_or_repeats() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let a = api
        .create(&PostParams::default(), &cm("a", &[], "1"))
        .await
        .unwrap();
    let from = rv_of(&a);
    api.create(&PostParams::default(), &cm("b", &[], "1"))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => seen.push(format!(
                "MODIFIED {} {}",
                o.metadata.name.unwrap(),
                o.data.unwrap()["v"]
            )),
            WatchEvent::Deleted(o) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(seen, ["ADDED b", "MODIFIED a 2", "DELETED b"]);
    // Later changes arrive live, once.
    api.create(&PostParams::default(), &cm("c", &[], "1"))
        .await
        .unwrap();
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => {
                assert_eq!(o.metadata.name.as_deref(), Some("c"));
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn watch_from_an_expired_resource_version_is_gone() {
    let s = TestApiServer::builder()
        .history_limit(5)
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    let first = api
        .create(&PostParams::default(), &cm("a", &[], "0"))
        .await
        .unwrap();
    for i in 1..10 {
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &rv_of(&first))
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
            assert!(
                e.message
                    .starts_with(&format!("too old resource version: {} (", rv_of(&first))),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn pagination_is_a_consistent_snapshot() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..25 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i:02}"), &[], "1"))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        if pages == 1 {
            assert_eq!(page.metadata.remaining_item_count, Some(15));
            // Changes after the first page do not show in later pages.
            api.create(&PostParams::default(), &cm("cm-99", &[], "1"))
                .await
                .unwrap();
            api.delete("cm-24", &DeleteParams::default()).await.unwrap();
        }
        names.extend(page.items.into_iter().map(|o| o.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, want);
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        25
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &cm("a", &[("app", "web"), ("tier", "front")], "1"),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &cm("b", &[("app", "web"), ("tier", "back")], "1"),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("c", &[("app", "db")], "1"))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|o| o.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    for (sel, want) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier!=back", vec!["a"]),
        ("tier in (front,back)", vec!["a", "b"]),
        ("tier notin (front)", vec!["b", "c"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
    ] {
        assert_eq!(
            names(api.list(&ListParams::default().labels(sel)).await.unwrap()),
            want,
            "{sel}"
        );
    }
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name!=b"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    let err = api
        .list(&ListParams::default().fields("data.v=1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 400 && e.message == "field label not supported: data.v"),
        "{err:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(c, "default");
    secrets
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x", "tls.key": "y"}})).unwrap())
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "o"}})).unwrap(),
        )
        .await
        .unwrap();
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(tls.items.len(), 1);
    assert_eq!(tls.items[0].data.as_ref().unwrap()["tls.crt"].0, b"x");
    assert_eq!(
        secrets.get("o").await.unwrap().type_.as_deref(),
        Some("Opaque")
    );
}

#[tokio::test]
async fn watch_applies_selectors_to_both_sides_of_a_change() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let a = api
        .create(&PostParams::default(), &cm("a", &[("app", "web")], "1"))
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().labels("app=web").timeout(10),
            &rv_of(&a),
        )
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => seen.push("ADDED"),
            WatchEvent::Modified(_) => seen.push("MODIFIED"),
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            _ => {}
        }
    }
    assert_eq!(seen, ["DELETED", "ADDED"]);
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let (_s, c) = setup().await;
    let api: Api<Secret> = Api::namespaced(c, "default");
    let s0 = api
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "s", "labels": {"a": "b"}}, "stringData": {"k": "secret"}})).unwrap())
        .await
        .unwrap();
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("s"));
    assert_eq!(
        list.items[0].types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );
    let mut stream = api
        .watch_metadata(&WatchParams::default().timeout(10), &rv_of(&s0))
        .await
        .unwrap()
        .boxed();
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "c"}}})),
    )
    .await
    .unwrap();
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            WatchEvent::Modified(m) => {
                assert_eq!(m.metadata.labels.unwrap()["a"], "c");
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // A metadata watcher (what the rotator runs) sees every Secret.
    let meta_api: Api<kube::core::PartialObjectMeta<Secret>> =
        Api::namespaced(api.clone().into_client(), "default");
    let stream = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.into_future())
        .await
        .unwrap()
        .0
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("s"));
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let mut o = cm("f", &[], "1");
    o.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &o).await.unwrap();
    api.delete("f", &DeleteParams::default()).await.unwrap();
    let held = api.get("f").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    let again = api.delete("f", &DeleteParams::default()).await.unwrap();
    assert!(again.is_left());
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert!(api.get_opt("f").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_preconditions_and_dry_run() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let o = api
        .create(&PostParams::default(), &cm("p", &[], "1"))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = api.delete("p", &dp).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409 && e.message.contains("Precondition failed: UID in precondition: wrong")),
        "{err:?}"
    );
    api.delete(
        "p",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(api.get_opt("p").await.unwrap().is_some());
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&pp, &cm("dry", &[], "1")).await.unwrap();
    assert!(api.get_opt("dry").await.unwrap().is_none());
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: o.metadata.uid.clone(),
            resource_version: Some(rv_of(&o)),
        }),
        ..DeleteParams::default()
    };
    api.delete("p", &dp).await.unwrap();
}

#[tokio::test]
async fn status_subresource_isolation_and_rollout_simulation() {
    let s = TestApiServer::builder()
        .rollout_delay(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let api: Api<Deployment> = Api::namespaced(s.client().await.unwrap(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"replicas": 99},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none(), "status is dropped on create");
    let done = |g: i64| {
        let api = api.clone();
        async move {
            let d = api.get("web").await.unwrap();
            let st = d.status?;
            (st.observed_generation == Some(g)
                && st.updated_replicas == Some(2)
                && st.available_replicas == Some(2))
            .then_some(())
        }
    };
    eventually("first rollout", || done(1)).await.unwrap();
    // Metadata changes keep the generation; template changes bump it.
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    let p = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {"restartedAt": "now"}}}}})))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2));
    eventually("second rollout", || done(2)).await.unwrap();
    // Main-resource writes ignore status; status writes ignore spec.
    let p = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().replicas, Some(2));
    let p = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}, "status": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().replicas, Some(7));
    assert_eq!(p.spec.unwrap().replicas, Some(2));
    assert_eq!(p.metadata.generation, Some(2));
}

#[tokio::test]
async fn reflector_stays_in_sync_across_cut_watches() {
    let s = TestApiServer::builder()
        .faults(Faults {
            watch_cut_after_events: Some(3),
            ..Faults::default()
        })
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("r-{i}"), &[], "0"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        stream.for_each(|_| async {}).await;
    });
    for round in 1..=4 {
        for i in 0..5 {
            api.patch(
                &format!("r-{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": round.to_string()}})),
            )
            .await
            .unwrap();
        }
    }
    api.delete("r-0", &DeleteParams::default()).await.unwrap();
    let reader2 = reader.clone();
    await_condition(
        "reflector in sync",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let r = reader2.clone();
            async move {
                let st = r.state();
                (st.len() == 4
                    && st
                        .iter()
                        .all(|o| o.data.as_ref().is_some_and(|d| d["v"] == "4")))
                .then_some(())
            }
        },
    )
    .await
    .unwrap();
    task.abort();
    let watches = s
        .request_log()
        .iter()
        .filter(|r| r.verb == "watch" && r.resource == "configmaps")
        .count();
    assert!(
        watches >= 2,
        "the watch was cut and restarted ({watches} watches)"
    );
}

#[tokio::test]
async fn streaming_list_watcher() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("s-{i}"), &[], "0"))
            .await
            .unwrap();
    }
    let cfg = watcher::Config::default().streaming_lists();
    let mut stream = watcher(api.clone(), cfg).boxed();
    let mut init = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(_) => init += 1,
            watcher::Event::InitDone => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(init, 3);
    api.create(&PostParams::default(), &cm("later", &[], "0"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("later")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn controller_reconciles() {
    use kube::runtime::controller::{Action, Controller};
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    api.create(&PostParams::default(), &cm("ctl", &[], "1"))
        .await
        .unwrap();
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(#[from] kube::Error);
    async fn reconcile(o: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>) -> Result<Action, E> {
        let name = o.metadata.name.clone().unwrap();
        let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"annotations": {"reconciled": "yes"}}});
        api.patch(
            &name,
            &PatchParams::apply("test-controller"),
            &Patch::Apply(patch),
        )
        .await?;
        Ok(Action::await_change())
    }
    let ctl_api = api.clone();
    let task = tokio::spawn(async move {
        Controller::new(ctl_api.clone(), watcher::Config::default())
            .run(
                reconcile,
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                Arc::new(ctl_api),
            )
            .for_each(|_| async {})
            .await;
    });
    eventually("reconciled", || async {
        let o = api.get("ctl").await.unwrap();
        o.metadata
            .annotations
            .is_some_and(|a| a.get("reconciled").is_some_and(|v| v == "yes"))
            .then_some(())
    })
    .await
    .unwrap();
    task.abort();
}

#[tokio::test]
async fn recorder_events_are_visible_as_core_events() {
    use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let o = api
        .create(&PostParams::default(), &cm("ev", &[], "1"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        c.clone(),
        Reporter {
            controller: "capstan-test".into(),
            instance: Some("pod-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: o.metadata.name.clone(),
        namespace: Some("default".into()),
        uid: o.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    let ev = KEvent {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("it works".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<Event> = Api::namespaced(c, "default");
    let list = events
        .list(&ListParams::default().fields("involvedObject.name=ev,involvedObject.kind=ConfigMap"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "{list:?}");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Tested"));
    assert_eq!(e.message.as_deref(), Some("it works"));
    assert_eq!(e.reporting_component.as_deref(), Some("capstan-test"));
    assert_eq!(e.involved_object.name.as_deref(), Some("ev"));
    assert!(e.series.is_some(), "the repeat was recorded as a series");
}

#[tokio::test]
async fn leases_create_and_update() {
    let (_s, c) = setup().await;
    let api: Api<Lease> = Api::namespaced(c, "default");
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2025-01-01T00:00:00.000000Z"}})).unwrap();
    let created = api.create(&PostParams::default(), &l).await.unwrap();
    let mut next = created.clone();
    next.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let updated = api
        .replace("leader", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_eq!(updated.spec.unwrap().holder_identity.as_deref(), Some("b"));
    let err = api
        .replace("leader", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
}

#[tokio::test]
async fn token_and_access_reviews() {
    let s = TestApiServer::builder()
        .tokens([(
            "issuer-token".to_string(),
            UserInfo::new(
                "system:serviceaccount:capstan:issuer",
                &["system:serviceaccounts"],
            ),
        )])
        .rules([Rule {
            users: vec!["system:serviceaccount:capstan:issuer".into()],
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["secrets".into()],
            namespaces: vec!["capstan".into()],
            ..Rule::default()
        }])
        .start()
        .await
        .unwrap();
    let c = s.client().await.unwrap();
    let tr: Api<TokenReview> = Api::all(c.clone());
    let r = tr
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"token": "issuer-token"}})).unwrap(),
        )
        .await
        .unwrap();
    let st = r.status.unwrap();
    assert_eq!(st.authenticated, Some(true));
    assert_eq!(
        st.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:capstan:issuer")
    );
    let r = tr
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"token": "nope"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(r.status.unwrap().authenticated, Some(true));
    let sar: Api<SubjectAccessReview> = Api::all(c);
    let ask = |ns: &str| {
        serde_json::from_value::<SubjectAccessReview>(json!({"spec": {
            "user": "system:serviceaccount:capstan:issuer",
            "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "secrets"},
        }}))
        .unwrap()
    };
    assert!(
        sar.create(&PostParams::default(), &ask("capstan"))
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    assert!(
        !sar.create(&PostParams::default(), &ask("other"))
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn injected_faults_and_request_log() {
    let (s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    s.faults().update(|f| {
        f.error_rate = 1.0;
        f.error_codes = vec![500];
    });
    let err = api.get_opt("x").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 500),
        "{err:?}"
    );
    s.faults().clear();
    assert!(api.get_opt("x").await.unwrap().is_none());
    let log = s.request_log();
    let gets: Vec<_> = log
        .iter()
        .filter(|r| r.verb == "get" && r.resource == "configmaps" && r.name == "x")
        .collect();
    assert_eq!(gets.iter().map(|r| r.code).collect::<Vec<_>>(), [500, 404]);
    assert_eq!(gets[0].namespace, "default");
    assert_eq!(gets[0].user, "admin");
}

#[tokio::test]
async fn data_dir_survives_a_restart_with_resource_versions_moving_forward() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestApiServer::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let port = s.addr().port();
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    let a = api
        .create(&PostParams::default(), &cm("keep", &[], "1"))
        .await
        .unwrap();
    let kubeconfig = std::fs::read_to_string(s.kubeconfig_path()).unwrap();
    s.stop().await;
    let s = TestApiServer::builder()
        .port(port)
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(s.kubeconfig_path()).unwrap(),
        kubeconfig,
        "same CA, token and URL"
    );
    let api: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "default");
    let got = api.get("keep").await.unwrap();
    assert_eq!(got.metadata.uid, a.metadata.uid);
    assert_eq!(rv_of(&got), rv_of(&a));
    let b = api
        .create(&PostParams::default(), &cm("next", &[], "1"))
        .await
        .unwrap();
    assert!(rv_of(&b).parse::<u64>().unwrap() > rv_of(&a).parse::<u64>().unwrap());
}

#[tokio::test]
async fn dependents_are_garbage_collected_with_their_owner() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let owner = api
        .create(&PostParams::default(), &cm("owner", &[], "1"))
        .await
        .unwrap();
    let other = api
        .create(&PostParams::default(), &cm("other", &[], "1"))
        .await
        .unwrap();
    let owned = |name: &str, owners: &[&ConfigMap]| {
        let refs: Vec<serde_json::Value> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}))
            .collect();
        serde_json::from_value::<ConfigMap>(
            json!({"metadata": {"name": name, "ownerReferences": refs}}),
        )
        .unwrap()
    };
    api.create(&PostParams::default(), &owned("dep", &[&owner]))
        .await
        .unwrap();
    api.create(&PostParams::default(), &owned("shared", &[&owner, &other]))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually("dependent collected", || async {
        api.get_opt("dep").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(
        api.get_opt("shared").await.unwrap().is_some(),
        "an object with a live owner stays"
    );
    let dp = DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    api.delete("other", &dp).await.unwrap();
    let shared = api.get("shared").await.unwrap();
    assert!(
        shared.metadata.owner_references.is_none(),
        "orphaned dependents lose the reference"
    );
}

#[tokio::test]
async fn stored_rbac_objects_authorize_service_account_tokens() {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let sa_user = "system:serviceaccount:default:issuer";
    let s = TestApiServer::builder()
        .tokens([(
            "sa-token".to_string(),
            UserInfo::new(
                sa_user,
                &["system:serviceaccounts", "system:serviceaccounts:default"],
            ),
        )])
        .start()
        .await
        .unwrap();
    let admin = s.client().await.unwrap();
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "issuer"}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
            ]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    cms.create(&PostParams::default(), &cm("c", &[], "1"))
        .await
        .unwrap();
    assert_eq!(
        reqwest_like(
            &s,
            Some("sa-token"),
            "/api/v1/namespaces/default/configmaps/c"
        )
        .await
        .0,
        403
    );
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "issuer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "issuer"},
                "subjects": [{"kind": "ServiceAccount", "name": "issuer", "namespace": "default"}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        reqwest_like(
            &s,
            Some("sa-token"),
            "/api/v1/namespaces/default/configmaps/c"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        reqwest_like(&s, Some("sa-token"), "/api/v1/namespaces/default/secrets")
            .await
            .0,
        403
    );
    assert_eq!(
        reqwest_like(
            &s,
            Some("sa-token"),
            "/api/v1/namespaces/kube-system/configmaps"
        )
        .await
        .0,
        403
    );
    let sar: Api<SubjectAccessReview> = Api::all(admin);
    let r = sar
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"user": sa_user, "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "configmaps"}}})).unwrap(),
        )
        .await
        .unwrap();
    assert!(r.status.unwrap().allowed);
    // The same through a ServiceAccount token and kubeconfig made by the server.
    let token = s.service_account_token("default", "issuer").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.kubeconfig");
    s.write_kubeconfig(&path, &token).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let as_sa: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    assert_eq!(
        as_sa
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let denied: Vec<_> = s
        .request_log()
        .into_iter()
        .filter(|r| r.user == sa_user && r.code == 403)
        .collect();
    assert_eq!(denied.len(), 3);
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    api.create(&PostParams::default(), &cm("fin", &[], "1"))
        .await
        .unwrap();
    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;
    let step = |api: Api<ConfigMap>| async move {
        let obj = Arc::new(api.get("fin").await.unwrap());
        finalizer(&api, "capstan.dev/test", obj, |ev| async move {
            Ok::<_, Never>(match ev {
                Fin::Apply(_) => Action::await_change(),
                Fin::Cleanup(_) => Action::await_change(),
            })
        })
        .await
        .unwrap();
    };
    step(api.clone()).await;
    let got = api.get("fin").await.unwrap();
    assert_eq!(
        got.metadata.finalizers.as_deref(),
        Some(&["capstan.dev/test".to_string()][..])
    );
    step(api.clone()).await;
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    assert!(
        api.get("fin")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    step(api.clone()).await;
    assert!(api.get_opt("fin").await.unwrap().is_none());
}
