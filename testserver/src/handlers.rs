//! The request entry point and the verbs on resources: get, list, create,
//! update, patch (JSON, merge, strategic merge, server-side apply), delete
//! and deletecollection, on the main resource and its subresources.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::admission::{self, FieldValidation, Op};
use super::auth::{Attributes, UserInfo};
use super::faults::Target;
use super::patch::{self, PatchError};
use super::request::{self, Output, Query, ResourcePath, Route};
use super::request_log::RequestRecord;
use super::resources::{self, Builtin, ResourceType};
use super::response;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::ServerState;
use super::status::{self, ApiError, ApiResult};
use super::store::{EventType, Gr, ObjKey, Write, name_suffix, now_micro, now_rfc3339};
use super::table::{self, IncludeObject, TableSource};
use super::{discovery, watch};

/// kube-apiserver's limit on request bodies.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the request log records about a request.
#[derive(Debug, Default, Clone)]
struct Info {
    verb: String,
    group: String,
    resource: String,
    sub: String,
    namespace: String,
    name: String,
}

/// Serves one HTTP request.
pub async fn handle<B>(state: Arc<ServerState>, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let time = now_micro();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let mut info = Info {
        verb: parts.method.as_str().to_lowercase(),
        ..Info::default()
    };
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = token.and_then(|t| state.auth().authenticate(t));
    let resp = match &user {
        None => response::error(&status::unauthorized()),
        Some(u) => {
            let body = read_body(body).await;
            match serve(
                &state,
                &parts.method,
                &parts.headers,
                body,
                &path,
                &query,
                u,
                &mut info,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => response::error(&e),
            }
        }
    };
    state.log.push(RequestRecord {
        time,
        user: user
            .map(|u| u.username)
            .unwrap_or_else(|| "system:anonymous".into()),
        verb: info.verb,
        group: info.group,
        resource: info.resource,
        subresource: info.sub,
        namespace: info.namespace,
        name: info.name,
        path,
        code: resp.status().as_u16(),
    });
    resp
}

async fn read_body<B>(body: B) -> ApiResult<hyper::body::Bytes>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(status::entity_too_large(MAX_BODY_BYTES))
            } else {
                Err(status::bad_request(format!(
                    "reading the request body: {e}"
                )))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    state: &Arc<ServerState>,
    method: &Method,
    headers: &HeaderMap,
    body: ApiResult<hyper::body::Bytes>,
    path: &str,
    query: &Query,
    user: &UserInfo,
    info: &mut Info,
) -> ApiResult<Response<Body>> {
    if let Some(rest) = path.strip_prefix("/_test/") {
        return discovery::test_endpoint(state, method, rest, body?);
    }
    let reg = state.registry();
    let route = request::route(&reg, path);
    let is_resource = matches!(route, Route::Resource(_));
    if let Some(d) = state.faults.latency(&user.username, !is_resource) {
        tokio::time::sleep(d).await;
    }
    let rp = match route {
        Route::Resource(rp) => rp,
        Route::NotFound { group, resource } if !resource.is_empty() => {
            info.group = group;
            info.resource = resource;
            return Err(status::path_not_found());
        }
        other => {
            let verb = method.as_str().to_lowercase();
            if !state.authorize(
                &user.username,
                &user.groups,
                &Attributes::Path {
                    verb: verb.clone(),
                    path: path.into(),
                },
            ) {
                return Err(status::forbidden_path(&user.username, &verb, path));
            }
            let target = Target {
                write: !matches!(*method, Method::GET | Method::HEAD),
                ..Target::default()
            };
            if let Some(e) = state.faults.roll(&user.username, true, target) {
                return Err(e);
            }
            return discovery::serve(state, &other, method, headers);
        }
    };
    let verb = match *method {
        Method::GET if rp.watch || query.flag("watch") => "watch",
        Method::GET if rp.name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if rp.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(status::method_not_allowed()),
    };
    *info = Info {
        verb: verb.into(),
        group: rp.rt.group.clone(),
        resource: rp.rt.plural.clone(),
        sub: rp.sub.clone().unwrap_or_default(),
        namespace: rp.namespace.clone().unwrap_or_default(),
        name: rp.name.clone().unwrap_or_default(),
    };
    let attrs = Attributes::Resource {
        verb: verb.into(),
        group: rp.rt.group.clone(),
        resource: rp.rt.plural.clone(),
        subresource: rp.sub.clone(),
        namespace: rp.namespace.clone(),
        name: rp.name.clone(),
    };
    if !state.authorize(&user.username, &user.groups, &attrs) {
        return Err(status::forbidden(
            &user.username,
            verb,
            &rp.rt.group,
            &rp.rt.plural,
            rp.sub.as_deref(),
            rp.namespace.as_deref(),
            rp.name.as_deref(),
        ));
    }
    let sub_verbs = ["get", "update", "patch"];
    let allowed = match &rp.sub {
        Some(_) => sub_verbs.contains(&verb),
        None => {
            rp.rt.allows(verb) || (verb == "create" && rp.name.is_none() && rp.rt.allows("create"))
        }
    };
    if !allowed || (verb == "create" && rp.name.is_some()) {
        return Err(status::method_not_allowed());
    }
    let target = Target {
        group: &rp.rt.group,
        resource: &rp.rt.plural,
        name: rp.name.as_deref().unwrap_or(""),
        write: !matches!(verb, "get" | "list" | "watch"),
    };
    if let Some(e) = state.faults.roll(&user.username, false, target) {
        return Err(e);
    }
    let output = request::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let ctx = Ctx {
        ua: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        state,
        rp: &rp,
        query,
        output,
        user,
    };
    if rp.sub.as_deref() == Some("scale") {
        return ctx.scale(verb, &body?, content_type(headers));
    }
    match verb {
        "get" => ctx.get(),
        "list" => ctx.list(),
        "watch" => watch::serve(
            state,
            &rp,
            query,
            output,
            state.faults.watch_cut(&user.username),
        ),
        "create" => ctx.create(&body?, content_type(headers)),
        "update" => ctx.update(&body?, content_type(headers)),
        "patch" => ctx.patch(&body?, content_type(headers).unwrap_or_default()),
        "delete" => ctx.delete(&body?),
        _ => ctx.delete_collection(&body?),
    }
}

/// Kubernetes' JSON patch library lets `{"op":"test","value":null}` pass
/// on a missing member (kube-runtime's finalizer helper relies on it to add
/// the first finalizer); such tests are dropped before applying.
fn null_tests_as_kube(doc: &Value, patch: &Value) -> Value {
    let Some(ops) = patch.as_array() else {
        return patch.clone();
    };
    let kept: Vec<Value> = ops
        .iter()
        .filter(|op| {
            let is_null_test = op["op"] == "test" && op.get("value").is_none_or(Value::is_null);
            if !is_null_test {
                return true;
            }
            let path = op["path"].as_str().unwrap_or_default();
            let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            let parent_exists = parent.is_empty() || doc.pointer(parent).is_some();
            let missing_or_null = doc.pointer(path).is_none_or(Value::is_null);
            !(parent_exists && missing_or_null)
        })
        .cloned()
        .collect();
    Value::Array(kept)
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
}

/// The stored (internal) form to the form served at the endpoint.
pub fn to_external<'a>(rt: &ResourceType, obj: &'a Value) -> Cow<'a, Value> {
    match rt.builtin {
        Some(Builtin::EventV1) => Cow::Owned(resources::event_to_v1(obj)),
        None if obj.get("apiVersion").and_then(Value::as_str)
            != Some(rt.api_version().as_str()) =>
        {
            let mut o = obj.clone();
            o["apiVersion"] = json!(rt.api_version());
            Cow::Owned(o)
        }
        _ => Cow::Borrowed(obj),
    }
}

fn to_internal(rt: &ResourceType, obj: Value) -> Value {
    match rt.builtin {
        Some(Builtin::EventV1) => resources::event_from_v1(&obj),
        _ => obj,
    }
}

/// An object rendered for the requested output (object, metadata, table).
pub fn render_one(rt: &ResourceType, obj: &Value, output: Output, query: &Query) -> Value {
    match output {
        Output::Object => to_external(rt, obj).into_owned(),
        Output::Metadata => partial_metadata(obj),
        Output::Table => {
            let ext = to_external(rt, obj).into_owned();
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            table_of(rt, &[ext], query, &json!({"resourceVersion": rv}))
        }
    }
}

/// `PartialObjectMetadata` for an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A Table for the objects (external form).
pub fn table_of(rt: &ResourceType, items: &[Value], query: &Query, list_meta: &Value) -> Value {
    let include = match query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let empty = json!([]);
    let source = match rt.builtin {
        Some(_) => TableSource::Builtin {
            group: &rt.group,
            resource: &rt.plural,
        },
        None => TableSource::Custom {
            printer_columns: rt.printer_columns.as_ref().unwrap_or(&empty),
        },
    };
    table::to_table(
        source,
        items,
        include,
        list_meta,
        std::time::SystemTime::now(),
    )
}

/// Selectors of a list or watch, matched against stored objects.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// From `labelSelector` and `fieldSelector` (and a name from the path).
    pub fn new(rt: &ResourceType, query: &Query, name: Option<&str>) -> ApiResult<Self> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(status::bad_request)?;
        let mut fields = FieldSelector::parse(
            query.get("fieldSelector").unwrap_or(""),
            &rt.field_selectors(),
        )
        .map_err(status::bad_request)?;
        if rt.builtin == Some(Builtin::EventV1) {
            fields = fields.rename(resources::EVENT_V1_FIELD_RENAMES);
        }
        if let Some(n) = name {
            fields = fields.with_name(n);
        }
        Ok(Self { labels, fields })
    }

    /// Whether a stored object matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

fn gr(rt: &ResourceType) -> Gr {
    (rt.storage_group.clone(), rt.storage_resource.clone())
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| {
        status::bad_request(format!(
            "resourceVersion: Invalid value: \"{s}\": must be a non-negative integer"
        ))
    })
}

fn decode_continue(token: &str) -> ApiResult<(u64, ObjKey)> {
    let bad = || {
        status::bad_request("continue key is not valid: the continue token could not be decoded")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let ns = v["start"][0].as_str().ok_or_else(bad)?.to_string();
    let name = v["start"][1].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, (ns, name)))
}

fn encode_continue(rv: u64, key: &ObjKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"v": "capstan.test/1", "rv": rv, "start": [key.0, key.1]}).to_string())
}

struct Ctx<'a> {
    /// The User-Agent, from which kube derives a default field manager.
    ua: Option<String>,
    state: &'a Arc<ServerState>,
    rp: &'a ResourcePath,
    query: &'a Query,
    output: Output,
    user: &'a UserInfo,
}

fn parse_body(bytes: &[u8], ct: Option<&str>) -> ApiResult<Value> {
    if ct == Some("application/vnd.kubernetes.protobuf") {
        return super::protobuf::decode(bytes)
            .map_err(|e| ApiError::new(415, "UnsupportedMediaType", e));
    }
    if let Some(other) = ct.filter(|c| {
        !matches!(
            *c,
            "application/json" | "application/yaml" | "application/apply-patch+yaml" | ""
        )
    }) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
            ),
        ));
    }
    let v: Value = match ct {
        Some("application/yaml") | Some("application/apply-patch+yaml") => {
            serde_norway::from_slice(bytes)
                .map_err(|e| status::bad_request(format!("error decoding YAML: {e}")))?
        }
        _ => serde_json::from_slice(bytes).map_err(|e| {
            status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
    };
    Ok(v)
}

impl Ctx<'_> {
    fn rt(&self) -> &ResourceType {
        &self.rp.rt
    }

    fn key(&self, name: &str) -> ObjKey {
        (
            self.rp.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.query.get("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(o) => Err(status::bad_request(format!(
                "dryRun: Unsupported value: \"{o}\": supported values: \"All\""
            ))),
        }
    }

    fn validation(&self) -> ApiResult<FieldValidation> {
        FieldValidation::parse(self.query.get("fieldValidation"))
    }

    fn not_found(&self, name: &str) -> ApiError {
        status::not_found(&self.rt().group, &self.rt().plural, name)
    }

    /// A default field manager from the User-Agent, as kube derives it.
    fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        self.ua
            .as_deref()
            .and_then(|u| u.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }

    fn respond(&self, code: u16, obj: &Value, warnings: &[String]) -> ApiResult<Response<Body>> {
        Ok(response::json(
            code,
            &render_one(self.rt(), obj, self.output, self.query),
            warnings,
        ))
    }

    fn get(&self) -> ApiResult<Response<Body>> {
        let name = self.rp.name.as_deref().unwrap_or_default();
        let obj = self
            .state
            .store
            .get(&gr(self.rt()), &self.key(name))
            .ok_or_else(|| self.not_found(name))?;
        self.respond(200, &obj, &[])
    }

    fn list(&self) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let filter = Filter::new(rt, self.query, None)?;
        let limit: usize = match self.query.get("limit") {
            Some(l) => l
                .parse()
                .map_err(|_| status::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
            None => 0,
        };
        let (at, start) = match self.query.get("continue") {
            Some(t) => {
                let (rv, key) = decode_continue(t)?;
                (Some(rv), Some(key))
            }
            None => {
                let rv = self.query.get("resourceVersion");
                match (self.query.get("resourceVersionMatch"), rv) {
                    (Some("Exact"), Some(rv)) => (Some(parse_rv(rv)?), None),
                    (Some("Exact"), None) | (Some("NotOlderThan"), None) => {
                        return Err(status::bad_request(
                            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                        ));
                    }
                    (Some("NotOlderThan"), Some(rv)) => {
                        let want = parse_rv(rv)?;
                        let cur = self.state.store.current_rv();
                        if want > cur {
                            (Some(want), None)
                        } else {
                            (None, None)
                        }
                    }
                    (Some(o), _) => {
                        return Err(status::bad_request(format!(
                            "resourceVersionMatch: Unsupported value: \"{o}\": supported values: \"Exact\", \"NotOlderThan\""
                        )));
                    }
                    (None, Some(rv)) if rv != "0" => {
                        parse_rv(rv)?;
                        (None, None)
                    }
                    _ => (None, None),
                }
            }
        };
        let page = self
            .state
            .store
            .list(&gr(rt), self.rp.namespace.as_deref(), at, start.as_ref(), limit, &|o| filter.matches(o))
            .map_err(|e| {
                if e.code == 410 && self.query.get("continue").is_some() {
                    status::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
                } else {
                    e
                }
            })?;
        let mut meta = json!({"resourceVersion": page.rv.to_string()});
        if let Some(next) = &page.next {
            meta["continue"] = json!(encode_continue(page.rv, next));
            meta["remainingItemCount"] = json!(page.remaining);
        }
        match self.output {
            Output::Table => {
                let items: Vec<Value> = page
                    .items
                    .iter()
                    .map(|o| to_external(rt, o).into_owned())
                    .collect();
                Ok(response::json(
                    200,
                    &table_of(rt, &items, self.query, &meta),
                    &[],
                ))
            }
            Output::Metadata => {
                let mut out = Vec::with_capacity(page.items.len() * 512);
                out.extend_from_slice(b"{\"kind\":\"PartialObjectMetadataList\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":");
                serde_json::to_writer(&mut out, &meta)
                    .map_err(|e| status::internal(e.to_string()))?;
                out.extend_from_slice(b",\"items\":[");
                for (i, o) in page.items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, &partial_metadata(o))
                        .map_err(|e| status::internal(e.to_string()))?;
                }
                out.extend_from_slice(b"]}");
                Ok(response::bytes(200, out, &[]))
            }
            Output::Object => {
                let mut out = Vec::with_capacity(page.items.len() * 1024);
                let head = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta});
                let head =
                    serde_json::to_vec(&head).map_err(|e| status::internal(e.to_string()))?;
                out.extend_from_slice(&head[..head.len() - 1]);
                out.extend_from_slice(b",\"items\":[");
                for (i, o) in page.items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, to_external(rt, o).as_ref())
                        .map_err(|e| status::internal(e.to_string()))?;
                }
                out.extend_from_slice(b"]}");
                Ok(response::bytes(200, out, &[]))
            }
        }
    }

    fn check_namespace(&self) -> ApiResult<()> {
        let Some(ns) = &self.rp.namespace else {
            return Ok(());
        };
        let nsobj = self
            .state
            .store
            .get(
                &(String::new(), "namespaces".into()),
                &(String::new(), ns.clone()),
            )
            .ok_or_else(|| status::not_found("", "namespaces", ns))?;
        if nsobj.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::with_details(
                403,
                "Forbidden",
                format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    status::qualified(&self.rt().group, &self.rt().plural),
                    ""
                ),
                Some(
                    json!({"name": "", "kind": self.rt().plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                ),
            ));
        }
        Ok(())
    }

    fn set_namespace(&self, obj: &mut Value) -> ApiResult<()> {
        match (
            &self.rp.namespace,
            obj.pointer("/metadata/namespace").and_then(Value::as_str),
        ) {
            (Some(ns), Some(b)) if !b.is_empty() && b != ns => Err(status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            (Some(ns), _) => {
                obj["metadata"]["namespace"] = json!(ns);
                Ok(())
            }
            (None, _) => {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("namespace");
                }
                Ok(())
            }
        }
    }

    fn review(&self, mut obj: Value) -> ApiResult<Response<Body>> {
        admission::check_type(self.rt(), &mut obj)?;
        let b = self
            .rt()
            .builtin
            .ok_or_else(|| status::internal("not a review kind"))?;
        obj = b.normalize(obj).map_err(|e| {
            status::bad_request(format!(
                "{} in version \"v1\" cannot be handled as a {}: {e}",
                self.rt().kind,
                self.rt().kind
            ))
        })?;
        let auth = self.state.auth().clone();
        obj["status"] = match b {
            Builtin::TokenReview => auth.token_review_status(&obj["spec"]),
            Builtin::SubjectAccessReview => {
                auth.access_review_status(&obj["spec"], None, &|u, g, a| {
                    self.state.authorize(u, g, a)
                })
            }
            _ => auth.access_review_status(&obj["spec"], Some(self.user), &|u, g, a| {
                self.state.authorize(u, g, a)
            }),
        };
        obj["metadata"]["creationTimestamp"] = Value::Null;
        Ok(response::json(201, &obj, &[]))
    }

    fn create(&self, body: &[u8], ct: Option<&str>) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let obj = parse_body(body, ct)?;
        if matches!(
            rt.builtin,
            Some(
                Builtin::TokenReview
                    | Builtin::SubjectAccessReview
                    | Builtin::SelfSubjectAccessReview
            )
        ) {
            return self.review(obj);
        }
        let mut obj = obj;
        admission::check_type(rt, &mut obj)?;
        self.set_namespace(&mut obj)?;
        if obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty() && rv != "0")
        {
            // etcd3's store refuses this, surfacing as an internal error.
            return Err(status::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if rt.builtin == Some(Builtin::Csr) && obj.get("spec").is_some_and(Value::is_object) {
            // kube-apiserver records who asked, whatever the body says.
            obj["spec"]["username"] = json!(self.user.username);
            obj["spec"]["groups"] = json!(self.user.groups);
            if self.user.uid.is_empty() {
                if let Some(m) = obj["spec"].as_object_mut() {
                    m.remove("uid");
                }
            } else {
                obj["spec"]["uid"] = json!(self.user.uid);
            }
        }
        if rt.builtin != Some(Builtin::Namespace) {
            self.check_namespace()?;
        }
        let dry = self.dry_run()?;
        let generate = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(String::from);
        let explicit = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(String::from);
        let manager = self.manager();
        for attempt in 0..8 {
            let mut o = obj.clone();
            let name = match (&explicit, &generate) {
                (Some(n), _) => n.clone(),
                (None, Some(g)) => format!("{g}{}", name_suffix()),
                (None, None) => String::new(),
            };
            o["metadata"]["name"] = json!(name);
            let (new, warnings) = admission::prepare(
                rt,
                Op::Create,
                None,
                None,
                o,
                self.validation()?,
                Some(&manager),
            )?;
            let internal = to_internal(rt, new);
            let res = self
                .state
                .store
                .write(&gr(rt), &self.key(&name), dry, |cur| match cur {
                    Some(_) => Err(status::already_exists(&rt.group, &rt.plural, &name)),
                    None => Ok(Write::Put(internal)),
                });
            match res {
                Ok((stored, _)) => {
                    if !dry {
                        self.state.after_write(rt, &stored);
                    }
                    return self.respond(201, &stored, &warnings);
                }
                Err(e)
                    if e.code == 409 && explicit.is_none() && generate.is_some() && attempt < 7 =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(status::internal("could not generate a unique name"))
    }

    fn update(&self, body: &[u8], ct: Option<&str>) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let name = self.rp.name.clone().unwrap_or_default();
        let mut obj = parse_body(body, ct)?;
        admission::check_type(rt, &mut obj)?;
        match obj.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(status::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => obj["metadata"]["name"] = json!(name),
        }
        self.set_namespace(&mut obj)?;
        let body_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from);
        if body_rv.is_none() && rt.builtin.is_none() {
            return Err(status::invalid(
                &rt.kind,
                &rt.group,
                &name,
                &[(
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        let validation = self.validation()?;
        let manager = self.manager();
        let sub = self.rp.sub.clone();
        self.write_existing(&name, |cur_ext| {
            if let Some(rv) = &body_rv
                && cur_ext
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    != Some(rv.as_str())
            {
                return Err(status::conflict_modified(&rt.group, &rt.plural, &name));
            }
            admission::prepare(
                rt,
                Op::Update,
                sub.as_deref(),
                Some(cur_ext),
                obj,
                validation,
                Some(&manager),
            )
        })
    }

    /// Read-modify-write of an existing object through `f` (which gets the
    /// external form); removes the object when the write drops its last
    /// finalizer while it is being deleted.
    fn write_existing(
        &self,
        name: &str,
        f: impl FnOnce(&Value) -> ApiResult<(Value, Vec<String>)>,
    ) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let dry = self.dry_run()?;
        let mut warnings = Vec::new();
        let (stored, kind) = self
            .state
            .store
            .write(&gr(rt), &self.key(name), dry, |cur| {
                let cur = cur.ok_or_else(|| self.not_found(name))?;
                let ext = to_external(rt, cur);
                let (new, w) = f(ext.as_ref())?;
                warnings = w;
                let internal = to_internal(rt, new);
                let finalizing = internal.pointer("/metadata/deletionTimestamp").is_some()
                    && internal
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty);
                Ok(if finalizing {
                    Write::Delete(internal)
                } else {
                    Write::Put(internal)
                })
            })?;
        if !dry && kind.is_some() {
            self.state.after_write(rt, &stored);
            if kind == Some(EventType::Deleted) {
                self.state.after_delete(rt, &stored);
            }
        }
        self.respond(200, &stored, &warnings)
    }

    fn patch(&self, body: &[u8], ct: &str) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let name = self.rp.name.clone().unwrap_or_default();
        let validation = self.validation()?;
        let sub = self.rp.sub.clone();
        let now = now_rfc3339();
        match ct {
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                let manager = self
                    .query
                    .get("fieldManager")
                    .ok_or_else(|| {
                        status::bad_request(
                            "PATCH, application/apply-patch+yaml requires fieldManager parameter",
                        )
                    })?
                    .to_string();
                let force = self.query.flag("force");
                let mut config = parse_body(body, Some("application/apply-patch+yaml"))?;
                if !config.is_object() {
                    return Err(status::bad_request(
                        "the body of an apply patch must be an object",
                    ));
                }
                for (k, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.clone())] {
                    match config.get(k).and_then(Value::as_str) {
                        None | Some("") => {
                            return Err(status::bad_request(format!(
                                "{k} must be set in an apply patch"
                            )));
                        }
                        Some(v) if v != want => {
                            return Err(status::bad_request(format!(
                                "the {} in the data ({v}) does not match the expected {} ({want})",
                                if k == "kind" { "kind" } else { "API version" },
                                if k == "kind" { "kind" } else { "API version" }
                            )));
                        }
                        _ => {}
                    }
                }
                match config.pointer("/metadata/name").and_then(Value::as_str) {
                    Some(n) if n != name => {
                        return Err(status::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )));
                    }
                    _ => config["metadata"]["name"] = json!(name),
                }
                self.set_namespace(&mut config)?;
                let unknown = admission::unknown_fields(rt, &config);
                let mut warnings = admission::field_validation(validation, &unknown)?;
                let schema = rt.structural_schema();
                let conflict = |e: PatchError| match e {
                    PatchError::Conflicts(c) => {
                        let causes: Vec<Value> = c
                            .iter()
                            .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.describe()), "field": c.field}))
                            .collect();
                        ApiError::with_details(
                            409,
                            "Conflict",
                            patch::conflict_message(&c),
                            Some(
                                json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}),
                            ),
                        )
                    }
                    PatchError::Invalid(m) => ApiError::new(422, "Invalid", m),
                };
                let exists = self.state.store.get(&gr(rt), &self.key(&name)).is_some();
                if !exists {
                    if sub.is_some() {
                        return Err(self.not_found(&name));
                    }
                    if rt.builtin != Some(Builtin::Namespace) {
                        self.check_namespace()?;
                    }
                    let applied = patch::apply(
                        None,
                        &config,
                        &manager,
                        force,
                        None,
                        &now,
                        schema.as_deref(),
                    )
                    .map_err(conflict)?;
                    let (new, w) = admission::prepare(
                        rt,
                        Op::Create,
                        None,
                        None,
                        applied,
                        FieldValidation::Ignore,
                        None,
                    )?;
                    warnings.extend(w);
                    let internal = to_internal(rt, new);
                    let dry = self.dry_run()?;
                    let (stored, _) = self.state.store.write(
                        &gr(rt),
                        &self.key(&name),
                        dry,
                        |cur| match cur {
                            Some(_) => Err(status::conflict_modified(&rt.group, &rt.plural, &name)),
                            None => Ok(Write::Put(internal)),
                        },
                    )?;
                    if !dry {
                        self.state.after_write(rt, &stored);
                    }
                    return self.respond(201, &stored, &warnings);
                }
                let r = self.write_existing(&name, |cur| {
                    let applied = patch::apply(
                        Some(cur),
                        &config,
                        &manager,
                        force,
                        sub.as_deref(),
                        &now,
                        schema.as_deref(),
                    )
                    .map_err(conflict)?;
                    admission::prepare(
                        rt,
                        Op::Update,
                        sub.as_deref(),
                        Some(cur),
                        applied,
                        FieldValidation::Ignore,
                        None,
                    )
                });
                let mut r = r?;
                for w in warnings {
                    if let Ok(v) = http::HeaderValue::from_str(&format!(
                        "299 - \"{}\"",
                        w.replace('"', "\\\"")
                    )) {
                        r.headers_mut().append("warning", v);
                    }
                }
                Ok(r)
            }
            "application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json" => {
                if ct == "application/strategic-merge-patch+json" && rt.builtin.is_none() {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/apply-patch+cbor".to_string(),
                    ));
                }
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
                let manager = self.manager();
                self.write_existing(&name, |cur| {
                    let patched = match ct {
                        "application/json-patch+json" => {
                            patch::json_patch(cur, &null_tests_as_kube(cur, &p))
                        }
                        "application/merge-patch+json" => Ok(patch::merge_patch(cur, &p)),
                        _ => patch::strategic_merge_patch(cur, &p, &rt.kind),
                    }
                    .map_err(|e| match e {
                        PatchError::Invalid(m) => ApiError::new(422, "Invalid", m),
                        PatchError::Conflicts(c) => {
                            ApiError::new(409, "Conflict", patch::conflict_message(&c))
                        }
                    })?;
                    if !patched.is_object() {
                        return Err(status::bad_request(
                            "the patched object is not a JSON object",
                        ));
                    }
                    let cur_rv = cur.pointer("/metadata/resourceVersion");
                    if patched
                        .pointer("/metadata/resourceVersion")
                        .is_some_and(|v| Some(v) != cur_rv && !v.is_null())
                    {
                        return Err(status::conflict_modified(&rt.group, &rt.plural, &name));
                    }
                    admission::prepare(
                        rt,
                        Op::Update,
                        sub.as_deref(),
                        Some(cur),
                        patched,
                        validation,
                        Some(&manager),
                    )
                })
            }
            other => Err(status::unsupported_media_type(other)),
        }
    }

    /// The `autoscaling/v1` Scale of a workload.
    fn scale_of(obj: &Value) -> Value {
        let selector = obj
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let meta = &obj["metadata"];
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
            "status": {
                "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                "selector": selector,
            },
        })
    }

    /// The `/scale` subresource: read or change `spec.replicas`.
    fn scale(&self, verb: &str, body: &[u8], ct: Option<&str>) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let name = self.rp.name.clone().unwrap_or_default();
        if verb == "get" {
            let obj = self
                .state
                .store
                .get(&gr(rt), &self.key(&name))
                .ok_or_else(|| self.not_found(&name))?;
            return Ok(response::json(200, &Self::scale_of(&obj), &[]));
        }
        let manager = self.manager();
        let validation = self.validation()?;
        let dry = self.dry_run()?;
        let (stored, kind) = self
            .state
            .store
            .write(&gr(rt), &self.key(&name), dry, |cur| {
                let cur = cur.ok_or_else(|| self.not_found(&name))?;
                let current = Self::scale_of(cur);
                let wanted = if verb == "update" {
                    parse_body(body, ct)?
                } else {
                    let p: Value = serde_json::from_slice(body)
                        .map_err(|e| status::bad_request(format!("error decoding patch: {e}")))?;
                    if ct == Some("application/json-patch+json") {
                        patch::json_patch(&current, &p).map_err(|e| match e {
                            PatchError::Invalid(m) => ApiError::new(422, "Invalid", m),
                            PatchError::Conflicts(c) => {
                                ApiError::new(409, "Conflict", patch::conflict_message(&c))
                            }
                        })?
                    } else {
                        patch::merge_patch(&current, &p)
                    }
                };
                if let Some(rv) = wanted
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    && !rv.is_empty()
                    && Some(rv)
                        != cur
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                {
                    return Err(status::conflict_modified(&rt.group, &rt.plural, &name));
                }
                let replicas = wanted
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .filter(|r| *r >= 0)
                    .ok_or_else(|| {
                        status::invalid(
                            "Scale",
                            "autoscaling",
                            &name,
                            &[(
                                "spec.replicas",
                                "FieldValueInvalid",
                                "Invalid value: must be greater than or equal to 0".into(),
                            )],
                        )
                    })?;
                let mut new = (**cur).clone();
                new["spec"]["replicas"] = json!(replicas);
                let (new, _) = admission::prepare(
                    rt,
                    Op::Update,
                    None,
                    Some(cur),
                    new,
                    validation,
                    Some(&manager),
                )?;
                Ok(Write::Put(new))
            })?;
        if !dry && kind.is_some() {
            self.state.after_write(rt, &stored);
        }
        Ok(response::json(200, &Self::scale_of(&stored), &[]))
    }

    fn delete_options(&self, body: &[u8]) -> ApiResult<Value> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        if body.starts_with(b"k8s\0") {
            return super::protobuf::decode_delete_options(body)
                .map_err(|e| status::bad_request(format!("error decoding DeleteOptions: {e}")));
        }
        serde_json::from_slice(body)
            .map_err(|e| status::bad_request(format!("error decoding DeleteOptions: {e}")))
    }

    fn delete(&self, body: &[u8]) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let name = self.rp.name.clone().unwrap_or_default();
        let opts = self.delete_options(body)?;
        let dry = self.dry_run()?
            || opts["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let (obj, code) = self
            .state
            .delete_object(rt, &self.key(&name), Some(&opts), dry)?;
        self.respond(code, &obj, &[])
    }

    fn delete_collection(&self, body: &[u8]) -> ApiResult<Response<Body>> {
        let rt = self.rt();
        let opts = self.delete_options(body)?;
        let dry = self.dry_run()?;
        let filter = Filter::new(rt, self.query, None)?;
        let objs: Vec<Arc<Value>> = self
            .state
            .store
            .all(&gr(rt), self.rp.namespace.as_deref())
            .into_iter()
            .filter(|o| filter.matches(o))
            .collect();
        let mut items = Vec::new();
        for o in objs {
            let key = (
                o.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            );
            match self.state.delete_object(rt, &key, Some(&opts), dry) {
                Ok((obj, _)) => items.push(to_external(rt, &obj).into_owned()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let list = json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": self.state.store.current_rv().to_string()},
            "items": items,
        });
        Ok(response::json(200, &list, &[]))
    }
}
