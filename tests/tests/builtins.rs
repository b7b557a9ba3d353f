//! Built-in kinds with special behaviour: CSR approval, events.k8s.io
//! conversion, CRD lifecycle, validation limits, bookmarks.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use capstan_tests::harness::eventually;
use capstan_testserver::TestApiServer;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::ApiResource;
use serde_json::json;

async fn setup() -> (TestApiServer, kube::Client) {
    let s = TestApiServer::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let c = s.client().await.unwrap();
    (s, c)
}

#[tokio::test]
async fn csr_approval_and_status_are_separate() {
    let (_s, c) = setup().await;
    let api: Api<CertificateSigningRequest> = Api::all(c);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "metadata": {"name": "c1"},
        "spec": {"request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K", "signerName": "capstan.dev/ca", "usages": ["server auth"]},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &csr).await.unwrap();
    assert_eq!(
        created.spec.username.as_deref(),
        Some("admin"),
        "the requester is recorded"
    );
    assert!(
        created
            .spec
            .groups
            .unwrap()
            .contains(&"system:authenticated".to_string())
    );
    let approved = api
        .patch_approval(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Test", "message": "ok"}], "certificate": "Zm9v"}})),
        )
        .await
        .unwrap();
    let st = approved.status.unwrap();
    assert_eq!(st.conditions.as_ref().unwrap()[0].type_, "Approved");
    assert!(
        st.conditions.as_ref().unwrap()[0]
            .last_update_time
            .is_some()
    );
    assert!(
        st.certificate.is_none(),
        "approval does not set the certificate"
    );
    let signed = api
        .patch_status(
            "c1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"certificate": "Zm9v", "conditions": []}})),
        )
        .await
        .unwrap();
    let st = signed.status.unwrap();
    assert_eq!(st.certificate.unwrap().0, b"foo");
    assert_eq!(
        st.conditions.unwrap()[0].type_,
        "Approved",
        "status writes keep the approval"
    );
    let by_signer = api
        .list(&ListParams::default().fields("spec.signerName=capstan.dev/ca"))
        .await
        .unwrap();
    assert_eq!(by_signer.items.len(), 1);
}

#[tokio::test]
async fn events_are_served_in_both_versions() {
    let (_s, c) = setup().await;
    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let e: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Secret", "name": "ca", "namespace": "default"},
        "note": "hello", "reason": "Made", "type": "Normal", "action": "Make",
        "reportingController": "capstan", "reportingInstance": "capstan-0",
    }))
    .unwrap();
    v1.create(&PostParams::default(), &e).await.unwrap();
    let core: Api<Event> = Api::namespaced(c, "default");
    let got = core.get("e1").await.unwrap();
    assert_eq!(got.message.as_deref(), Some("hello"));
    assert_eq!(got.involved_object.name.as_deref(), Some("ca"));
    assert_eq!(got.reporting_component.as_deref(), Some("capstan"));
    let back = v1.get("e1").await.unwrap();
    assert_eq!(back.note.as_deref(), Some("hello"));
    assert_eq!(back.regarding.unwrap().name.as_deref(), Some("ca"));
    let sel = v1
        .list(&ListParams::default().fields("regarding.name=ca"))
        .await
        .unwrap();
    assert_eq!(sel.items.len(), 1);
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"], "categories": ["all"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1, "default": 3}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}},
            }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn crd_lifecycle_registers_and_removes_its_resources() {
    let (_s, c) = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let created = crds
        .create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    let conds = created.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}, "status": {"ready": true}})).unwrap();
    let w = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );
    let w = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(w.data["status"]["ready"], true);
    assert_eq!(w.metadata.generation, Some(1));
    let w = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    let err = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 6}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 415),
        "{err:?}"
    );
    let discovery = kube::Discovery::new(c.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "example.com"));
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    eventually("crd gone", || async {
        crds.get_opt("widgets.example.com")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    let err = widgets.get("w").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn size_limits_and_decoding_errors() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let big = "a".repeat(300 * 1024);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "big", "annotations": {"x": big}}}))
            .unwrap();
    let err = api.create(&PostParams::default(), &cm).await.unwrap_err();
    let kube::Error::Api(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "ConfigMap \"big\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    let full: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "full"}, "data": {"x": "a".repeat(1100 * 1024)}}),
    )
    .unwrap();
    let err = api.create(&PostParams::default(), &full).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message == "ConfigMap \"full\" is invalid: []: Too long: may not be more than 1048576 bytes"),
        "{err:?}"
    );
    let huge: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "huge"}, "data": {"x": "a".repeat(4 * 1024 * 1024)}}),
    )
    .unwrap();
    let err = api.create(&PostParams::default(), &huge).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 413),
        "{err:?}"
    );
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let req = http::Request::post("/api/v1/namespaces/default/secrets")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b"}, "data": {"k": "not base64!"}})).unwrap())
        .unwrap();
    let err = c.request_text(req).await.unwrap_err();
    let kube::Error::Api(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, 400);
    assert!(
        e.message
            .starts_with("Secret in version \"v1\" cannot be handled as a Secret:"),
        "{}",
        e.message
    );
    let req = http::Request::post("/api/v1/namespaces/default/secrets")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
            )
            .unwrap(),
        )
        .unwrap();
    let err = c.request_text(req).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 400),
        "{err:?}"
    );
    assert!(secrets.get_opt("b").await.unwrap().is_none());
    // Unknown metadata fields: Strict fails, Warn and Ignore drop them.
    let req = |fv: &str| {
        http::Request::post(format!("/api/v1/namespaces/default/configmaps?fieldValidation={fv}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("fv-{}", fv.to_lowercase()), "bogus": 1}})).unwrap())
            .unwrap()
    };
    let err = c.request_text(req("Strict")).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 400 && e.message == "strict decoding error: unknown field \"metadata.bogus\""),
        "{err:?}"
    );
    c.request_text(req("Warn")).await.unwrap();
    c.request_text(req("Ignore")).await.unwrap();
}

#[tokio::test]
async fn watches_get_bookmarks_at_the_current_resource_version() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
        )
        .await
        .unwrap();
    let other: Api<Secret> = Api::namespaced(c, "default");
    let s = other
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().timeout(10),
            &a.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Bookmark(b) = first else {
        panic!("expected a bookmark, got {first:?}")
    };
    let rv: u64 = b.metadata.resource_version.parse().unwrap();
    let secret_rv: u64 = s
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rv >= secret_rv,
        "bookmark {rv} is at the current resourceVersion {secret_rv} or later"
    );
}

#[tokio::test]
async fn tables_and_partial_metadata_by_accept_header() {
    let (_s, c) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "t"}, "data": {"a": "1", "b": "2"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let get = |path: &str, accept: &str| {
        http::Request::get(path.to_string())
            .header("accept", accept.to_string())
            .body(Vec::new())
            .unwrap()
    };
    let kubectl_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let table: serde_json::Value = serde_json::from_str(
        &c.request_text(get("/api/v1/namespaces/default/configmaps", kubectl_accept))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["cells"][1], 2);
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let one: serde_json::Value = serde_json::from_str(
        &c.request_text(get(
            "/api/v1/namespaces/default/configmaps/t",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ))
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["metadata"]["name"], "t");
    assert!(one.get("data").is_none());
    let proto: serde_json::Value = serde_json::from_str(
        &c.request_text(get(
            "/api/v1/namespaces/default/configmaps/t",
            "application/vnd.kubernetes.protobuf,application/json",
        ))
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(proto["data"]["a"], "1");
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c);
    let err = ns
        .delete("default", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 403),
        "{err:?}"
    );
}
