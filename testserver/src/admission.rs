//! What happens to an object between the request body and the store:
//! kind checks, unknown-field handling (`fieldValidation`), decoding into the
//! built-in type or CRD-schema pruning, defaulting and validation, status
//! subresource isolation, server-owned metadata, generation and size limits.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::resources::{self, Builtin, ResourceType};
use super::schema;
use super::status::{self, ApiError, ApiResult};
use super::store::{new_uid, now_rfc3339};

/// Kubernetes' limit on the total size of annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// The limit on a ConfigMap's or Secret's data (`corev1.MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
/// etcd's request limit, which bounds a stored object.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Unknown fields fail the request.
    Strict,
    /// Unknown fields give a `Warning` header (the default).
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter.
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(o) => Err(status::bad_request(format!(
                "fieldValidation: Unsupported value: \"{o}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Which write it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// create (or apply creating).
    Create,
    /// update or patch.
    Update,
}

/// Checks apiVersion and kind of a body against the endpoint and fills them
/// in when missing.
pub fn check_type(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(status::bad_request(
            "the body of the request was not a JSON object",
        ));
    }
    let want_av = rt.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if av != want_av => {
            return Err(status::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        Some(_) => {}
        None => obj["apiVersion"] = json!(want_av),
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(status::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        Some(_) => {}
        None => obj["kind"] = json!(rt.kind),
    }
    if !obj.get("metadata").is_none_or(Value::is_object) {
        return Err(decode_error(rt, "metadata: expected an object"));
    }
    if obj.get("metadata").is_none() {
        obj["metadata"] = json!({});
    }
    Ok(())
}

fn decode_error(rt: &ResourceType, msg: &str) -> ApiError {
    status::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {msg}",
        rt.kind, rt.version, rt.kind
    ))
}

/// Unknown fields of the object (paths like `spec.foo`), per the kind's schema.
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    let Some(schema) = rt.structural_schema() else {
        return Vec::new();
    };
    let mut probe = obj.clone();
    let meta = probe.as_object_mut().and_then(|m| m.remove("metadata"));
    let mut unknown = schema::prune(&schema, &mut probe);
    if rt.builtin.is_none() {
        unknown.retain(|f| !f.starts_with("metadata"));
    }
    if let Some(meta) = meta {
        unknown.extend(unknown_metadata_fields(&meta));
    }
    unknown.retain(|f| f != "apiVersion" && f != "kind");
    unknown
}

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn unknown_metadata_fields(meta: &Value) -> Vec<String> {
    meta.as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !META_FIELDS.contains(&k.as_str()))
                .map(|k| format!("metadata.{k}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Applies `fieldValidation` to the unknown fields: an error for Strict,
/// warnings for Warn.
pub fn field_validation(mode: FieldValidation, unknown: &[String]) -> ApiResult<Vec<String>> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        FieldValidation::Strict => Err(status::bad_request(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        ))),
        FieldValidation::Warn => Ok(msgs),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

/// Whether a name is an RFC 1123 subdomain.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether a name is an RFC 1123 label.
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

fn validate_metadata(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut causes: Vec<(&str, &str, String)> = Vec::new();
    if name.is_empty() {
        causes.push((
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        ));
    } else if rt.builtin == Some(Builtin::Namespace) && !is_dns_label(name) {
        causes.push((
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        ));
    } else if rt.group == "rbac.authorization.k8s.io" {
        // RBAC objects are named as path segments (`system:auth-delegator`).
        if name == "." || name == ".." || name.contains('/') || name.contains('%') {
            causes.push((
                "metadata.name",
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"),
            ));
        }
    } else if !matches!(rt.builtin, Some(Builtin::Event) | Some(Builtin::EventV1))
        && !is_dns_subdomain(name)
    {
        causes.push((
            "metadata.name",
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > MAX_ANNOTATIONS_BYTES {
            causes.push((
                "metadata.annotations",
                "FieldValueTooLong",
                format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
            ));
        }
    }
    // ConfigMaps and Secrets hold at most 1 MiB of data.
    let data_size = |keys: &[&str]| -> usize {
        keys.iter()
            .filter_map(|k| obj.get(*k).and_then(Value::as_object))
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum()
    };
    match rt.builtin {
        Some(Builtin::ConfigMap) if data_size(&["data", "binaryData"]) > MAX_DATA_BYTES => causes
            .push((
                "[]",
                "FieldValueTooLong",
                format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
            )),
        Some(Builtin::Secret) if secret_data_size(obj) > MAX_DATA_BYTES => causes.push((
            "data",
            "FieldValueTooLong",
            format!("Too long: may not be more than {MAX_DATA_BYTES} bytes"),
        )),
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(status::invalid(&rt.kind, &rt.group, name, &causes))
    }
}

/// The decoded size of a Secret's data (keys plus values).
fn secret_data_size(obj: &Value) -> usize {
    obj.get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, |s| s.len() / 4 * 3))
                .sum()
        })
        .unwrap_or(0)
}

/// Merges Secret `stringData` into `data`, as the apiserver does on write.
fn merge_string_data(obj: &mut Value) -> ApiResult<()> {
    let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return Ok(());
    };
    let Some(sd) = sd.as_object() else {
        if sd.is_null() {
            return Ok(());
        }
        return Err(status::bad_request(
            "Secret in version \"v1\" cannot be handled as a Secret: stringData: expected a map",
        ));
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let s = v.as_str().ok_or_else(|| {
            status::bad_request(format!("Secret in version \"v1\" cannot be handled as a Secret: stringData.{k}: expected a string"))
        })?;
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
    }
    Ok(())
}

fn builtin_defaults(b: Builtin, obj: &mut Value) {
    match b {
        Builtin::Secret
            if obj
                .get("type")
                .is_none_or(|t| t.as_str().is_none_or(str::is_empty)) =>
        {
            obj["type"] = json!("Opaque");
        }
        Builtin::Deployment | Builtin::StatefulSet => {
            if obj.get("spec").is_some_and(Value::is_object)
                && obj["spec"].get("replicas").is_none_or(Value::is_null)
            {
                obj["spec"]["replicas"] = json!(1);
            }
            if b == Builtin::Deployment && obj.get("spec").is_some_and(Value::is_object) {
                for (k, v) in [
                    ("revisionHistoryLimit", json!(10)),
                    ("progressDeadlineSeconds", json!(600)),
                    (
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                    ),
                ] {
                    if obj["spec"]
                        .get(k)
                        .is_none_or(|s| s.as_object().is_some_and(|o| o.is_empty()))
                    {
                        obj["spec"][k] = v;
                    }
                }
            }
            pod_template_defaults(obj);
        }
        Builtin::DaemonSet => pod_template_defaults(obj),
        Builtin::Event if obj.get("type").is_none() => {
            obj["type"] = json!("Normal");
        }
        _ => {}
    }
}

/// The defaults kube-apiserver fills into a workload's pod template
/// (`SetDefaults_PodSpec`, `SetDefaults_Container`): restart and DNS
/// policy, scheduler, grace period, and per container the termination
/// message settings and an image pull policy of `Always` for an untagged or
/// `:latest` image, else `IfNotPresent`.
fn pod_template_defaults(obj: &mut Value) {
    let Some(spec) = obj
        .pointer_mut("/spec/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        spec.entry(k).or_insert(v);
    }
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or_default();
            let tag = last.split_once(':').map(|(_, t)| t);
            let pull = if image.contains('@') || tag.is_some_and(|t| t != "latest") {
                "IfNotPresent"
            } else {
                "Always"
            };
            c.entry("imagePullPolicy").or_insert(json!(pull));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert(json!({}));
        }
    }
}

/// Whether the "spec" (everything but metadata, and status when the kind has
/// a status subresource) differs, which bumps generation.
fn spec_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if rt.has_status() {
                m.remove("status");
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Turns the external object a client sent (after any patch) into the
/// object to store. `old` is the current object (external form).
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    rt: &ResourceType,
    op: Op,
    sub: Option<&str>,
    old: Option<&Value>,
    mut new: Value,
    validation: FieldValidation,
    manager: Option<&str>,
) -> ApiResult<(Value, Vec<String>)> {
    check_type(rt, &mut new)?;
    let unknown = unknown_fields(rt, &new);
    let warnings = field_validation(validation, &unknown)?;
    if rt.builtin == Some(Builtin::Secret) {
        merge_string_data(&mut new)?;
    }
    let now = now_rfc3339();

    // Status subresource isolation.
    if let Some(old) = old {
        match sub {
            Some("status") | Some("approval") => {
                let mut merged = old.clone();
                let new_status = new.get("status").cloned();
                if rt.builtin == Some(Builtin::Csr) {
                    merged["status"] = csr_status(
                        old,
                        new_status.unwrap_or(Value::Null),
                        sub == Some("approval"),
                        &now,
                    );
                } else {
                    match new_status {
                        Some(s) => merged["status"] = s,
                        None => {
                            if let Some(m) = merged.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if rt.builtin.is_some() {
                    // Built-in status strategies keep label and annotation changes.
                    for k in ["labels", "annotations"] {
                        match new.pointer(&format!("/metadata/{k}")) {
                            Some(v) => merged["metadata"][k] = v.clone(),
                            None => {
                                meta_mut(&mut merged).remove(k);
                            }
                        }
                    }
                }
                if let Some(mf) = new.pointer("/metadata/managedFields") {
                    merged["metadata"]["managedFields"] = mf.clone();
                }
                new = merged;
            }
            _ if rt.has_status() => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            _ => {}
        }
    } else if rt.has_status()
        && rt.builtin != Some(Builtin::Namespace)
        && let Some(m) = new.as_object_mut()
    {
        m.remove("status");
    }

    // Decode into the built-in type, or prune, default and validate a CR.
    match rt.builtin {
        Some(b) => {
            builtin_defaults(b, &mut new);
            new = b.normalize(new).map_err(|e| decode_error(rt, &e))?;
        }
        None => {
            if let Some(schema) = &rt.schema {
                let meta = new.get("metadata").cloned();
                schema::prune(schema, &mut new);
                schema::apply_defaults(schema, &mut new);
                if let Some(meta) = meta {
                    new["metadata"] = meta;
                }
                new["apiVersion"] = json!(rt.api_version());
                new["kind"] = json!(rt.kind);
                let v = schema::validate(schema, &new);
                if !v.errors.is_empty() {
                    let name = new
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    return Err(ApiError::from_status(schema::invalid_status(
                        &rt.kind, &rt.group, name, &v.errors,
                    )));
                }
            }
        }
    }

    // Server-owned metadata.
    {
        let m = meta_mut(&mut new);
        {
            let k = "selfLink";
            m.remove(k);
        }
        match old {
            Some(old) => {
                for k in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "namespace",
                    "name",
                ] {
                    match old.pointer(&format!("/metadata/{k}")) {
                        Some(v) => {
                            m.insert(k.into(), v.clone());
                        }
                        None => {
                            m.remove(k);
                        }
                    }
                }
            }
            None => {
                m.insert("uid".into(), json!(new_uid()));
                m.insert("creationTimestamp".into(), json!(now));
                m.remove("deletionTimestamp");
                m.remove("deletionGracePeriodSeconds");
                m.remove("resourceVersion");
                if rt.generation {
                    m.insert("generation".into(), json!(1));
                } else {
                    m.remove("generation");
                }
            }
        }
    }
    if let Some(old) = old
        && rt.generation
        && spec_changed(rt, old, &new)
    {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        new["metadata"]["generation"] = json!(g);
    }
    if rt.builtin == Some(Builtin::Namespace) {
        new["spec"] = json!({"finalizers": ["kubernetes"]});
        if op == Op::Create || new.pointer("/status/phase").is_none() {
            new["status"] = json!({"phase": "Active"});
        }
        if let Some(n) = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(String::from)
        {
            let labels = meta_mut(&mut new)
                .entry("labels")
                .or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(n);
        }
    }
    if rt.builtin == Some(Builtin::Crd) {
        new["status"] = resources::crd_status(&new, &now);
    }
    validate_metadata(rt, &new)?;

    if let Some(manager) = manager {
        let schema = rt.structural_schema();
        new = super::patch::record_update(old, new, manager, sub, &now, schema.as_deref());
    }
    let size = serde_json::to_vec(&new).map(|b| b.len()).unwrap_or(0);
    if size > MAX_OBJECT_BYTES {
        // What kube-apiserver answers when etcd refuses the write.
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: etcdserver: request is too large",
        ));
    }
    Ok((new, warnings))
}

fn csr_status(old: &Value, new_status: Value, approval: bool, now: &str) -> Value {
    let mut status = old.get("status").cloned().unwrap_or_else(|| json!({}));
    let old_conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let new_conds: Vec<Value> = new_status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_approval = |c: &Value| matches!(c["type"].as_str(), Some("Approved") | Some("Denied"));
    let mut conds: Vec<Value> = if approval {
        let mut c: Vec<Value> = new_conds
            .iter()
            .filter(|c| is_approval(c))
            .cloned()
            .collect();
        c.extend(old_conds.iter().filter(|c| !is_approval(c)).cloned());
        c
    } else {
        let mut c: Vec<Value> = old_conds
            .iter()
            .filter(|c| is_approval(c))
            .cloned()
            .collect();
        c.extend(new_conds.iter().filter(|c| !is_approval(c)).cloned());
        if let Some(cert) = new_status.get("certificate") {
            status["certificate"] = cert.clone();
        } else if let Some(m) = status.as_object_mut() {
            m.remove("certificate");
        }
        c
    };
    for c in &mut conds {
        for k in ["lastUpdateTime", "lastTransitionTime"] {
            if c.get(k).is_none_or(Value::is_null) {
                c[k] = json!(now);
            }
        }
    }
    status["conditions"] = json!(conds);
    if conds.is_empty()
        && let Some(m) = status.as_object_mut()
    {
        m.remove("conditions");
    }
    status
}
