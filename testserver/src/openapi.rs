//! The `/openapi/v3` documents kube-apiserver publishes, as kubectl reads them.
//!
//! kubectl 1.34 `apply`/`create` with the default `--validate=strict` asks
//! whether the server supports the `fieldValidation` query parameter
//! (cli-runtime `pkg/resource/query_param_verifier_v3.go`): it GETs the
//! `/openapi/v3` index, follows `paths["apis/<group>/<version>"].serverRelativeURL`,
//! then looks for a path whose PATCH operation carries
//! `x-kubernetes-group-version-kind` equal to the object's GVK and an
//! *operation-level* query parameter named `fieldValidation`. Every PATCH of a
//! GVK must carry it, since the verifier stops at the first matching PATCH it
//! finds (map order). kubectl's client-side apply also looks up the kind's
//! schema in `components.schemas` by its `x-kubernetes-group-version-kind`
//! (kubectl `pkg/cmd/apply/patcher.go`, `gvkSupportsPatchOpenAPIV3`).
//!
//! The layout follows kube-openapi's builder
//! (`k8s.io/kube-openapi/pkg/builder3`) and the endpoint installer
//! (`k8s.io/apiserver/pkg/endpoints/installer.go`).

use serde_json::{Map, Value, json};

/// One resource of a group version, as the documents need it.
#[derive(Debug, Clone)]
pub struct OpenApiResource {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `CertificateRequest`.
    pub kind: String,
    /// Plural resource name, e.g. `certificaterequests`.
    pub plural: String,
    /// Whether the resource lives in namespaces.
    pub namespaced: bool,
    /// The kind's openAPIV3Schema (structural).
    pub schema: Value,
    /// Subresources served, e.g. `status`, `approval`, `scale`.
    pub subresources: Vec<String>,
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

/// The `/openapi/v3` index: `{"paths": {"<gv path>": {"serverRelativeURL": "/openapi/v3/<gv path>?hash=<HASH>"}}}`
/// (kube-openapi `pkg/handler3/handler.go`, `OpenAPIV3Discovery`).
pub fn index(group_versions: &[(String, String)]) -> Value {
    let paths: Map<String, Value> = group_versions
        .iter()
        .map(|(path, hash)| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// A stable hash of a document, formatted like kube-openapi's
/// (`handler3.computeETag`: upper-case hex of SHA-512 over the JSON bytes).
/// Keys are sorted first so the hash does not depend on map order.
pub fn document_hash(doc: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(doc, &mut canonical);
    let digest = ring::digest::digest(&ring::digest::SHA512, canonical.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The name kube-openapi gives a kind's schema in `components.schemas`:
/// built-ins use their Go package (`io.k8s.api.core.v1.Secret`), custom
/// resources the reversed group (`io.cert-manager.v1.CertificateRequest`,
/// apiextensions-apiserver `pkg/controller/openapi/builder/builder.go`).
pub fn schema_name(group: &str, version: &str, kind: &str) -> String {
    if group == "apiextensions.k8s.io" {
        return format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}");
    }
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}.{kind}");
    }
    if let Some(short) = group.strip_suffix(".k8s.io") {
        return format!("io.k8s.api.{short}.{version}.{kind}");
    }
    if group == "apps" || group == "batch" || group == "policy" || group == "autoscaling" {
        return format!("io.k8s.api.{group}.{version}.{kind}");
    }
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The full OpenAPI 3.0 document of one group version (`api/v1` or
/// `apis/<group>/<version>`).
pub fn group_version_document(gv_path: &str, resources: &[OpenApiResource]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in resources {
        add_resource_paths(gv_path, r, &mut paths);
        add_resource_schemas(r, &mut schemas);
    }
    add_meta_schemas(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// Whether the group is a built-in one (strategic merge patch is only
/// accepted for built-in kinds, `installer.go` `supportedTypes`).
fn is_builtin_group(group: &str) -> bool {
    group.is_empty()
        || group.ends_with(".k8s.io")
        || matches!(group, "apps" | "batch" | "policy" | "autoscaling")
}

fn gvk(r: &OpenApiResource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `CertManagerIoV1`, `CoreV1`, `AppsV1`: the middle of kube's operation ids.
fn operation_infix(r: &OpenApiResource) -> String {
    let group = if r.group.is_empty() {
        "core".to_string()
    } else {
        r.group.trim_end_matches(".k8s.io").to_string()
    };
    let mut out = String::new();
    for part in group.split(['.', '-']) {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    let mut v = r.version.chars();
    if let Some(first) = v.next() {
        out.extend(first.to_uppercase());
        out.push_str(v.as_str());
    }
    out
}

fn query_param(name: &str, description: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn dry_run() -> Value {
    query_param(
        "dryRun",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        "string",
    )
}

fn field_manager() -> Value {
    query_param(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        "string",
    )
}

fn field_validation() -> Value {
    query_param(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        "string",
    )
}

fn force() -> Value {
    query_param(
        "force",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        "boolean",
    )
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn json_body(schema: Value) -> Value {
    json!({"content": {
        "application/json": {"schema": schema.clone()},
        "application/yaml": {"schema": schema.clone()},
        "application/vnd.kubernetes.protobuf": {"schema": schema},
    }})
}

fn responses(codes: &[&str], schema: &Value) -> Value {
    let mut m = Map::new();
    for code in codes {
        let description = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        m.insert(
            (*code).to_string(),
            json!({"description": description, "content": {
                "application/json": {"schema": schema},
                "application/yaml": {"schema": schema},
                "application/vnd.kubernetes.protobuf": {"schema": schema},
            }}),
        );
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

struct Op<'a> {
    r: &'a OpenApiResource,
    verb: &'a str,
    action: &'a str,
    id: String,
    params: Vec<Value>,
    body: Option<Value>,
    codes: &'a [&'a str],
    response: Value,
}

fn operation(op: Op<'_>) -> Value {
    let mut o = json!({
        "tags": [operation_infix(op.r)],
        "description": format!("{} {}", op.verb, op.r.kind),
        "operationId": op.id,
        "responses": responses(op.codes, &op.response),
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": gvk(op.r),
    });
    if !op.params.is_empty() {
        o["parameters"] = Value::Array(op.params);
    }
    if let Some(b) = op.body {
        o["requestBody"] = b;
    }
    o
}

fn patch_body(builtin: bool) -> Value {
    let s = schema_ref(PATCH);
    let mut content = Map::new();
    for ct in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
    ] {
        content.insert(ct.into(), json!({"schema": s}));
    }
    if builtin {
        content.insert(
            "application/strategic-merge-patch+json".into(),
            json!({"schema": s}),
        );
    }
    json!({"content": content, "required": true})
}

fn add_resource_paths(gv_path: &str, r: &OpenApiResource, paths: &mut Map<String, Value>) {
    let infix = operation_infix(r);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind_ref = schema_ref(&schema_name(&r.group, &r.version, &r.kind));
    let list_ref = schema_ref(&schema_name(
        &r.group,
        &r.version,
        &format!("{}List", r.kind),
    ));
    let builtin = is_builtin_group(&r.group);
    let base = if r.namespaced {
        format!("/{gv_path}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("/{gv_path}/{}", r.plural)
    };
    let mut scope_params = vec![query_param(
        "pretty",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
        "string",
    )];
    if r.namespaced {
        scope_params.insert(
            0,
            path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ),
        );
        // All-namespaces list: GET /<gv>/<plural>.
        paths.insert(
            format!("/{gv_path}/{}", r.plural),
            json!({"get": operation(Op {
                r, verb: "list or watch objects of kind", action: "list",
                id: format!("list{infix}{}ForAllNamespaces", r.kind),
                params: list_params(), body: None, codes: &["200"], response: list_ref.clone(),
            })}),
        );
    }
    let collection = json!({
        "get": operation(Op { r, verb: "list or watch objects of kind", action: "list",
            id: format!("list{infix}{ns}{}", r.kind), params: list_params(), body: None,
            codes: &["200"], response: list_ref.clone() }),
        "post": operation(Op { r, verb: "create a", action: "post",
            id: format!("create{infix}{ns}{}", r.kind),
            params: vec![dry_run(), field_manager(), field_validation()],
            body: Some(json_body(kind_ref.clone())), codes: &["200", "201", "202"], response: kind_ref.clone() }),
        "delete": operation(Op { r, verb: "delete collection of", action: "deletecollection",
            id: format!("deletecollection{infix}{ns}{}", r.kind), params: list_params(),
            body: Some(json_body(schema_ref(DELETE_OPTIONS))), codes: &["200"], response: schema_ref(STATUS) }),
        "parameters": scope_params.clone(),
    });
    paths.insert(base.clone(), collection);

    let mut item_params = vec![path_param("name", &format!("name of the {}", r.kind))];
    item_params.extend(scope_params.iter().cloned());
    let item = json!({
        "get": operation(Op { r, verb: "read the specified", action: "get",
            id: format!("read{infix}{ns}{}", r.kind), params: vec![], body: None,
            codes: &["200"], response: kind_ref.clone() }),
        "put": operation(Op { r, verb: "replace the specified", action: "put",
            id: format!("replace{infix}{ns}{}", r.kind),
            params: vec![dry_run(), field_manager(), field_validation()],
            body: Some(json_body(kind_ref.clone())), codes: &["200", "201"], response: kind_ref.clone() }),
        "delete": operation(Op { r, verb: "delete a", action: "delete",
            id: format!("delete{infix}{ns}{}", r.kind),
            params: vec![dry_run(), query_param("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
                query_param("propagationPolicy", "Whether and how garbage collection will be performed.", "string")],
            body: Some(json_body(schema_ref(DELETE_OPTIONS))), codes: &["200", "202"], response: schema_ref(STATUS) }),
        "patch": operation(Op { r, verb: "partially update the specified", action: "patch",
            id: format!("patch{infix}{ns}{}", r.kind),
            params: vec![dry_run(), field_manager(), field_validation(), force()],
            body: Some(patch_body(builtin)), codes: &["200", "201"], response: kind_ref.clone() }),
        "parameters": item_params.clone(),
    });
    paths.insert(format!("{base}/{{name}}"), item);

    for sub in &r.subresources {
        let title = capitalize(sub);
        let sub_doc = json!({
            "get": operation(Op { r, verb: &format!("read {sub} of the specified"), action: "get",
                id: format!("read{infix}{ns}{}{title}", r.kind), params: vec![], body: None,
                codes: &["200"], response: kind_ref.clone() }),
            "put": operation(Op { r, verb: &format!("replace {sub} of the specified"), action: "put",
                id: format!("replace{infix}{ns}{}{title}", r.kind),
                params: vec![dry_run(), field_manager(), field_validation()],
                body: Some(json_body(kind_ref.clone())), codes: &["200", "201"], response: kind_ref.clone() }),
            "patch": operation(Op { r, verb: &format!("partially update {sub} of the specified"), action: "patch",
                id: format!("patch{infix}{ns}{}{title}", r.kind),
                params: vec![dry_run(), field_manager(), field_validation(), force()],
                body: Some(patch_body(builtin)), codes: &["200", "201"], response: kind_ref.clone() }),
            "parameters": item_params.clone(),
        });
        paths.insert(format!("{base}/{{name}}/{sub}"), sub_doc);
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query_param(n, n, t))
    .collect()
}

/// The kind's schema as kube publishes it: `metadata` points at ObjectMeta,
/// `apiVersion`/`kind` are described, and the GVK extension is attached.
fn add_resource_schemas(r: &OpenApiResource, schemas: &mut Map<String, Value>) {
    let mut schema = r.schema.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("type").or_insert(json!("object"));
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert(
                "apiVersion".into(),
                json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
            );
            props.insert(
                "kind".into(),
                json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
            );
            props.insert(
                "metadata".into(),
                json!({"allOf": [schema_ref(OBJECT_META)], "default": {}, "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
            );
        }
        obj.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": r.group, "kind": r.kind, "version": r.version}]),
        );
    }
    let name = schema_name(&r.group, &r.version, &r.kind);
    let list_kind = format!("{}List", r.kind);
    schemas.insert(
        schema_name(&r.group, &r.version, &list_kind),
        json!({
            "description": format!("{list_kind} is a list of {}", r.kind),
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "items": {"type": "array", "items": schema_ref(&name)},
                "metadata": {"allOf": [schema_ref(LIST_META)], "default": {}},
            },
            "x-kubernetes-group-version-kind": [{"group": r.group, "kind": list_kind, "version": r.version}],
        }),
    );
    schemas.insert(name, schema);
}

fn add_meta_schemas(schemas: &mut Map<String, Value>) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    schemas.insert(
        OBJECT_META.into(),
        super::schema::builtin_schema::<meta::ObjectMeta>(),
    );
    schemas.insert(
        LIST_META.into(),
        super::schema::builtin_schema::<meta::ListMeta>(),
    );
    schemas.insert(
        STATUS.into(),
        super::schema::builtin_schema::<meta::Status>(),
    );
    schemas.insert(
        DELETE_OPTIONS.into(),
        super::schema::builtin_schema::<meta::DeleteOptions>(),
    );
    schemas.insert(
        PATCH.into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn certificate_request() -> OpenApiResource {
        OpenApiResource {
            group: "cert-manager.io".into(),
            version: "v1".into(),
            kind: "CertificateRequest".into(),
            plural: "certificaterequests".into(),
            namespaced: true,
            schema: json!({"type": "object", "properties": {"spec": {"type": "object"}}}),
            subresources: vec!["status".into()],
        }
    }

    /// A transcription of cli-runtime's `supportsQueryParamV3` and
    /// `hasGVKExtensionV3`: the first PATCH whose GVK matches decides.
    fn supports_query_param(
        doc: &Value,
        group: &str,
        version: &str,
        kind: &str,
        param: &str,
    ) -> bool {
        let Some(paths) = doc["paths"].as_object() else {
            return false;
        };
        for item in paths.values() {
            let Some(op) = item.get("patch") else {
                continue;
            };
            let g = &op["x-kubernetes-group-version-kind"];
            if g["group"] != group || g["version"] != version || g["kind"] != kind {
                continue;
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in params {
                if p["name"] == param && p["in"] == "query" {
                    return true;
                }
                if let Some(r) = p["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/parameters/"))
                {
                    let global = &doc["components"]["parameters"][r];
                    if global["in"] == "query" && global["name"] == param {
                        return true;
                    }
                }
            }
            return false;
        }
        false
    }

    #[test]
    fn verifier_finds_field_validation_through_the_index() {
        let doc = group_version_document("apis/cert-manager.io/v1", &[certificate_request()]);
        let hash = document_hash(&doc);
        let idx = index(&[("apis/cert-manager.io/v1".into(), hash.clone())]);
        let url = idx["paths"]["apis/cert-manager.io/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert_eq!(
            url,
            format!("/openapi/v3/apis/cert-manager.io/v1?hash={hash}")
        );
        assert_eq!(hash.len(), 128);
        assert!(supports_query_param(
            &doc,
            "cert-manager.io",
            "v1",
            "CertificateRequest",
            "fieldValidation"
        ));
        assert!(!supports_query_param(
            &doc,
            "cert-manager.io",
            "v1",
            "Issuer",
            "fieldValidation"
        ));
        assert!(!supports_query_param(
            &doc,
            "example.com",
            "v1",
            "CertificateRequest",
            "fieldValidation"
        ));
    }

    #[test]
    fn every_patch_of_the_kind_carries_field_validation() {
        let doc = group_version_document("apis/cert-manager.io/v1", &[certificate_request()]);
        let patches: Vec<&Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|p| p.get("patch"))
            .collect();
        assert_eq!(patches.len(), 2);
        for op in patches {
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            assert!(names.contains(&"fieldValidation"));
            assert!(names.contains(&"force"));
        }
        assert!(doc["paths"]["/apis/cert-manager.io/v1/namespaces/{namespace}/certificaterequests/{name}/status"].is_object());
        assert!(doc["paths"]["/apis/cert-manager.io/v1/certificaterequests"]["get"].is_object());
    }

    #[test]
    fn components_carry_the_kind_schema_with_its_gvk() {
        let doc = group_version_document("apis/cert-manager.io/v1", &[certificate_request()]);
        let s = &doc["components"]["schemas"]["io.cert-manager.v1.CertificateRequest"];
        assert_eq!(
            s["x-kubernetes-group-version-kind"][0]["kind"],
            "CertificateRequest"
        );
        assert!(s["properties"]["spec"].is_object());
        assert!(doc["components"]["schemas"][OBJECT_META]["properties"]["name"].is_object());
        assert_eq!(doc["openapi"], "3.0.0");
    }

    #[test]
    fn schema_names_follow_kube() {
        assert_eq!(schema_name("", "v1", "Secret"), "io.k8s.api.core.v1.Secret");
        assert_eq!(
            schema_name("apps", "v1", "Deployment"),
            "io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            schema_name("coordination.k8s.io", "v1", "Lease"),
            "io.k8s.api.coordination.v1.Lease"
        );
        assert_eq!(
            schema_name("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        );
        assert_eq!(
            schema_name("cert-manager.io", "v1", "Issuer"),
            "io.cert-manager.v1.Issuer"
        );
    }

    #[test]
    fn builtin_paths_accept_strategic_merge_and_core_paths() {
        let secret = OpenApiResource {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
            plural: "secrets".into(),
            namespaced: true,
            schema: json!({"type": "object"}),
            subresources: vec![],
        };
        let doc = group_version_document("api/v1", &[secret]);
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert!(
            patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object()
        );
        assert_eq!(patch["operationId"], "patchCoreV1NamespacedSecret");
        assert!(supports_query_param(
            &doc,
            "",
            "v1",
            "Secret",
            "fieldValidation"
        ));
    }

    #[test]
    fn hash_is_stable_and_content_sensitive() {
        let a = json!({"b": 1, "a": [1, {"y": 2, "x": 3}]});
        let b = json!({"a": [1, {"x": 3, "y": 2}], "b": 1});
        assert_eq!(document_hash(&a), document_hash(&b));
        assert_ne!(document_hash(&a), document_hash(&json!({"b": 2})));
    }
}
