//! `meta.k8s.io/v1` `Status` bodies for every error the server answers, with
//! the reasons, codes and messages kube-apiserver uses.

use serde_json::{Value, json};

/// An error answer: the HTTP code, the `Status` body and extra headers.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// The `Status` object sent as the body.
    pub body: Value,
    /// Extra response headers, e.g. `Retry-After`.
    pub headers: Vec<(String, String)>,
}

/// Result of a request step that may end in a `Status` answer.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with the given code, reason and message and no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self::with_details(code, reason, message, None)
    }

    /// An error with `Status.details`.
    pub fn with_details(
        code: u16,
        reason: &str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        Self {
            code,
            body: status(code, reason, &message.into(), details),
            headers: Vec::new(),
        }
    }

    /// An error whose body was built elsewhere (e.g. `schema::invalid_status`).
    pub fn from_status(body: Value) -> Self {
        let code = body.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
        Self {
            code,
            body,
            headers: Vec::new(),
        }
    }

    /// The `Status.message`.
    pub fn message(&self) -> &str {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// A `Status` object with `status: Failure`.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    });
    if !reason.is_empty() {
        s["reason"] = json!(reason);
    }
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

/// A `Status` with `status: Success`, as answered by some deletes.
pub fn success(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// `secrets` or `leases.coordination.k8s.io`: the qualified resource kube
/// puts in its messages.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

/// 404 `secrets "x" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
    ApiError::with_details(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", qualified(group, resource)),
        Some(details(group, resource, name)),
    )
}

/// 404 for a path the server does not serve.
pub fn path_not_found() -> ApiError {
    ApiError::with_details(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// 404 for a path outside every served group and version: kube-apiserver's
/// HTTP mux answers these in plain text, not with a `Status`.
pub fn page_not_found() -> ApiError {
    ApiError {
        code: 404,
        body: Value::String("404 page not found\n".into()),
        headers: Vec::new(),
    }
}

/// 409 `secrets "x" already exists`.
pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
    ApiError::with_details(
        409,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", qualified(group, resource)),
        Some(details(group, resource, name)),
    )
}

/// 409 Conflict on a stale resourceVersion, with kube's exact message.
pub fn conflict_modified(group: &str, resource: &str, name: &str) -> ApiError {
    conflict(
        group,
        resource,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// 409 Conflict `Operation cannot be fulfilled on <qr> "<name>": <why>`.
pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
    ApiError::with_details(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(group, resource)
        ),
        Some(details(group, resource, name)),
    )
}

/// 400 BadRequest.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message)
}

/// 410 Gone with reason Expired.
pub fn expired(message: impl Into<String>) -> ApiError {
    ApiError::new(410, "Expired", message)
}

/// 410 for a watch or list from a resourceVersion no longer in the history.
pub fn too_old(requested: u64, oldest: u64) -> ApiError {
    expired(format!("too old resource version: {requested} ({oldest})"))
}

/// 401 Unauthorized.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// 403 Forbidden for a resource request.
pub fn forbidden(
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> ApiError {
    let qr = qualified(group, resource);
    let res = match sub {
        Some(s) => format!("{resource}/{s}"),
        None => resource.to_string(),
    };
    let scope = match namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let subject = match name {
        Some(n) => format!("{qr} \"{n}\" is forbidden"),
        None => format!("{qr} is forbidden"),
    };
    ApiError::with_details(
        403,
        "Forbidden",
        format!(
            "{subject}: User \"{user}\" cannot {verb} resource \"{res}\" in API group \"{group}\"{scope}"
        ),
        Some(details(group, resource, name.unwrap_or(""))),
    )
}

/// 403 Forbidden for a non-resource URL.
pub fn forbidden_path(user: &str, verb: &str, path: &str) -> ApiError {
    ApiError::with_details(
        403,
        "Forbidden",
        format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
        Some(json!({})),
    )
}

/// 405 MethodNotAllowed.
pub fn method_not_allowed() -> ApiError {
    ApiError::with_details(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

/// 415 UnsupportedMediaType.
pub fn unsupported_media_type(content_type: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type})"
        ),
    )
}

/// 413 for a request body over 3 MiB, as kube-apiserver answers.
pub fn entity_too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {limit}"),
    )
}

/// 500 InternalError.
pub fn internal(message: impl Into<String>) -> ApiError {
    let m = message.into();
    ApiError::with_details(
        500,
        "InternalError",
        format!("Internal error occurred: {m}"),
        Some(json!({"causes": [{"message": m}]})),
    )
}

/// 422 Invalid with field causes, for checks the server does itself (metadata).
pub fn invalid(kind: &str, group: &str, name: &str, causes: &[(&str, &str, String)]) -> ApiError {
    let summary: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let summary = if summary.len() == 1 {
        summary[0].clone()
    } else {
        format!("[{}]", summary.join(", "))
    };
    let cs: Vec<Value> = causes
        .iter()
        .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
        .collect();
    let mut d = json!({"name": name, "kind": kind, "causes": cs});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    ApiError::with_details(
        422,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {summary}"),
        Some(d),
    )
}
