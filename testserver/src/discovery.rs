//! Discovery (`/version`, `/api`, `/apis`, group and group-version resource
//! lists), the `/openapi/v3` documents, health endpoints, and the `/_test/`
//! control endpoints of the binary (faults, request log).

use std::sync::Arc;

use axum::body::Body;
use http::{HeaderMap, Method, Response};
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::faults::Faults;
use super::openapi::{self, OpenApiResource};
use super::request::Route;
use super::resources::{Registry, ResourceType};
use super::response;
use super::server::ServerState;
use super::status::{self, ApiResult};

/// The Kubernetes version the server claims to be.
pub const GIT_VERSION: &str = "v1.34.0";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "emulationMajor": "1",
        "emulationMinor": "34",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "f28b4c9efbca5c5c0af716d9f2d5702667ee8a45",
        "gitTreeState": "clean",
        "buildDate": "2025-08-27T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(json!({}))})
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs,
    });
    if !rt.short_names.is_empty() {
        main["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        main["categories"] = json!(rt.categories);
    }
    let mut out = vec![main];
    for s in &rt.subresources {
        let verbs: &[&str] = if s == "finalize" {
            &["update"]
        } else {
            &["get", "patch", "update"]
        };
        let mut entry = json!({"name": format!("{}/{s}", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": verbs});
        if s == "scale" {
            entry["kind"] = json!("Scale");
            entry["group"] = json!("autoscaling");
            entry["version"] = json!("v1");
        }
        out.push(entry);
    }
    out
}

/// `APIResourceList` for a group version.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = reg
        .in_group_version(group, version)
        .iter()
        .flat_map(|t| resource_entries(t))
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn gv_paths(reg: &Registry) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let path = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            out.push((path, g.clone(), v));
        }
    }
    out
}

/// The OpenAPI v3 document of one group version.
pub fn openapi_document(reg: &Registry, group: &str, version: &str, gv_path: &str) -> Value {
    let resources: Vec<OpenApiResource> = reg
        .in_group_version(group, version)
        .iter()
        .map(|t| OpenApiResource {
            group: t.group.clone(),
            version: t.version.clone(),
            kind: t.kind.clone(),
            plural: t.plural.clone(),
            namespaced: t.namespaced,
            schema: t.structural_schema().map(|s| (*s).clone()).unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            ),
            subresources: t.subresources.clone(),
        })
        .collect();
    openapi::group_version_document(gv_path, &resources)
}

/// Serves a non-resource route.
pub fn serve(
    state: &Arc<ServerState>,
    route: &Route,
    method: &Method,
    _headers: &HeaderMap,
) -> ApiResult<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return Err(status::method_not_allowed());
    }
    let reg = state.registry();
    let body = match route {
        Route::Version => version(),
        Route::Health => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        Route::Api => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.address}],
        }),
        Route::Apis => {
            let groups: Vec<Value> = reg
                .groups()
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_json(g, vs))
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        Route::Group(g) => {
            let vs = reg
                .groups()
                .into_iter()
                .find(|(x, _)| x == g)
                .map(|(_, vs)| vs)
                .unwrap_or_default();
            let mut v = group_json(g, &vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        }
        Route::GroupVersion(g, v) => resource_list(&reg, g, v),
        Route::OpenApiIndex => {
            let entries: Vec<(String, String)> = gv_paths(&reg)
                .into_iter()
                .map(|(path, g, v)| {
                    let doc = openapi_document(&reg, &g, &v, &path);
                    (path, openapi::document_hash(&doc))
                })
                .collect();
            openapi::index(&entries)
        }
        Route::OpenApiDocument(path) => {
            let Some((_, g, v)) = gv_paths(&reg).into_iter().find(|(p, _, _)| p == path) else {
                return Err(status::path_not_found());
            };
            openapi_document(&reg, &g, &v, path)
        }
        Route::NotFound { resource, .. } if resource.is_empty() => {
            return Err(status::page_not_found());
        }
        Route::Resource(_) | Route::NotFound { .. } => return Err(status::path_not_found()),
    };
    Ok(response::json(200, &body, &[]))
}

/// `/_test/faults` (GET, PUT) and `/_test/requests` (GET, DELETE).
pub fn test_endpoint(
    state: &Arc<ServerState>,
    method: &Method,
    rest: &str,
    body: Bytes,
) -> ApiResult<Response<Body>> {
    match (rest, method) {
        ("faults", &Method::GET) => Ok(response::json(200, &json!(state.faults.get()), &[])),
        ("faults", &Method::PUT) => {
            let f: Faults = serde_json::from_slice(&body)
                .map_err(|e| status::bad_request(format!("decoding faults: {e}")))?;
            state.faults.set(f);
            Ok(response::json(200, &json!(state.faults.get()), &[]))
        }
        ("requests", &Method::GET) => Ok(response::json(200, &json!(state.log.entries()), &[])),
        ("requests", &Method::DELETE) => {
            state.log.clear();
            Ok(response::json(200, &json!([]), &[]))
        }
        ("faults" | "requests", _) => Err(status::method_not_allowed()),
        _ => Err(status::path_not_found()),
    }
}
