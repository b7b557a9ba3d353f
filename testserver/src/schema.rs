//! openAPIV3Schema validation, pruning and defaulting of custom resources,
//! and structural schemas for built-in kinds.
//!
//! Validation follows kube-openapi's validators
//! (`k8s.io/kube-openapi/pkg/validation/validate`) and the conversion of
//! their results to field errors in apiextensions-apiserver
//! `pkg/apiserver/validation/validation.go` (`kubeOpenAPIResultToFieldErrors`);
//! the error text is apimachinery's `pkg/util/validation/field/errors.go`.
//! Pruning follows `pkg/apiserver/schema/pruning/algorithm.go`, defaulting
//! `pkg/apiserver/schema/defaulting/algorithm.go`, list-type checks
//! `pkg/apiserver/schema/listtype/validation.go`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value, json};

/// The kinds of field errors (apimachinery `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// `Invalid value`.
    Invalid,
    /// `Required value`.
    Required,
    /// `Unsupported value` (enum).
    NotSupported,
    /// `Too long`.
    TooLong,
    /// `Too many`.
    TooMany,
    /// `Duplicate value`.
    Duplicate,
    /// `Forbidden`.
    Forbidden,
    /// `Invalid value` for a wrong JSON type (reason `FieldValueTypeInvalid`).
    TypeInvalid,
}

impl FieldErrorType {
    /// The `StatusCause` reason (`metav1.CauseType`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Invalid => "FieldValueInvalid",
            Self::Required => "FieldValueRequired",
            Self::NotSupported => "FieldValueNotSupported",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// `ErrorType.String()`.
    pub fn text(self) -> &'static str {
        match self {
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::Required => "Required value",
            Self::NotSupported => "Unsupported value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
        }
    }
}

/// One validation error (apimachinery `field.Error`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// What went wrong.
    pub kind: FieldErrorType,
    /// The field path as the apiserver prints it, e.g. `spec.duration`.
    pub field: String,
    /// Extra detail, may be empty.
    pub detail: String,
    /// The offending value, when the error type prints one.
    pub bad_value: Option<Value>,
}

impl FieldError {
    fn new(kind: FieldErrorType, field: &str, bad_value: Option<Value>, detail: String) -> Self {
        Self {
            kind,
            field: field.to_string(),
            detail,
            bad_value,
        }
    }

    /// The `StatusCause` reason, e.g. `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// `field.Error.ErrorBody()`: the message without the field, as in
    /// `StatusCause.message`.
    pub fn body(&self) -> String {
        let omit_value = matches!(
            self.kind,
            FieldErrorType::Required | FieldErrorType::Forbidden | FieldErrorType::TooLong
        );
        let mut s = match (&self.bad_value, omit_value) {
            (Some(v), false) => format!("{}: {}", self.kind.text(), go_value(v)),
            _ => self.kind.text().to_string(),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `field.Error.Error()`: `<field>: <body>`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// How Go's `%v`/`%q` (field.Error) prints a decoded JSON value: strings
/// quoted, numbers and booleans bare, composites as `%#v`.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) => go_quote(s),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        _ => go_sharp_v(v),
    }
}

fn go_quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::String(s) => go_quote(s),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Array(a) => format!(
            "[]interface {{}}{{{}}}",
            a.iter().map(go_sharp_v).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "map[string]interface {{}}{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_sharp_v(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The result of [`validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    /// Schema violations, in the order kube-openapi reports them.
    pub errors: Vec<FieldError>,
    /// Fields pruning would drop, as `spec.foo` (the apiserver's
    /// `unknown field "spec.foo"` wording), sorted.
    pub unknown_fields: Vec<String>,
}

/// Validates a custom resource against its CRD version's openAPIV3Schema.
pub fn validate(schema: &Value, obj: &Value) -> Validation {
    let mut errors = Vec::new();
    validate_object_meta(obj.get("metadata"), "metadata", &mut errors);
    validate_node(schema, obj, "", true, &mut errors);
    // CEL rules are not evaluated here, but kube-apiserver says when an
    // error kept it from evaluating them (customresource/strategy.go
    // `hasBlockingErr`), so the answer to a bad object agrees.
    let blocking = errors.iter().any(|e| {
        matches!(
            e.kind,
            FieldErrorType::NotSupported
                | FieldErrorType::Required
                | FieldErrorType::TooLong
                | FieldErrorType::TooMany
                | FieldErrorType::TypeInvalid
        )
    });
    if blocking && has_cel_rules(schema) {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "<nil>",
            Some(Value::Null),
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
        ));
    }
    let mut probe = obj.clone();
    let unknown_fields = prune(schema, &mut probe);
    Validation {
        errors,
        unknown_fields,
    }
}

/// Whether a schema declares `x-kubernetes-validations` anywhere.
fn has_cel_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            map.contains_key("x-kubernetes-validations") || map.values().any(has_cel_rules)
        }
        Value::Array(items) => items.iter().any(has_cel_rules),
        _ => false,
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// apimachinery `api/validation/objectmeta.go` `ValidateObjectMeta` with
/// `NameIsDNSSubdomain` (what customResourceStrategy.Validate uses).
fn validate_object_meta(meta: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let generate = meta
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let field = format!("{path}.name");
    if name.is_empty() {
        if generate.is_empty() {
            errors.push(FieldError::new(
                FieldErrorType::Required,
                &field,
                None,
                "name or generateName is required".into(),
            ));
        }
        return;
    }
    for msg in dns1123_subdomain_errors(name) {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            &field,
            Some(json!(name)),
            msg,
        ));
    }
}

/// apimachinery `validation.IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if !s.split('.').all(label_ok) {
        out.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    out
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// kube-openapi names the whole object `<root>` only in messages; an empty
/// path prints as the empty string in field errors.
fn in_body(path: &str) -> String {
    format!("{path} in body")
}

/// kube-openapi's type names for decoded JSON.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match (want, v) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        _ => false,
    }
}

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn validate_node(schema: &Value, v: &Value, path: &str, root: bool, errors: &mut Vec<FieldError>) {
    if v.is_null() {
        if !is_true(schema, "nullable")
            && let Some(t) = schema.get("type").and_then(Value::as_str)
        {
            errors.push(type_error(path, t, v));
        }
        return;
    }
    if is_true(schema, "x-kubernetes-int-or-string") {
        if !matches!(json_type(v), "integer" | "string") {
            errors.push(type_error(path, "integer,string", v));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_matches(t, v)
    {
        errors.push(type_error(path, t, v));
        return;
    }
    validate_enum(schema, v, path, errors);
    match v {
        Value::String(s) => validate_string(schema, s, path, errors),
        Value::Number(_) => validate_number(schema, v, path, errors),
        Value::Array(a) => validate_array(schema, a, path, errors),
        Value::Object(m) => validate_object(schema, m, path, root, errors),
        _ => {}
    }
    validate_composition(schema, v, path, errors);
}

/// `InvalidTypeCode` becomes `field.TypeInvalid(path, <actual type>, msg)`.
fn type_error(path: &str, want: &str, v: &Value) -> FieldError {
    let actual = json_type(v);
    FieldError::new(
        FieldErrorType::TypeInvalid,
        path,
        Some(json!(actual)),
        format!("{} must be of type {want}: \"{actual}\"", in_body(path)),
    )
}

fn validate_enum(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(values) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if values.contains(v) {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|x| match x {
            Value::String(s) => go_quote(s),
            other => go_quote(&other.to_string()),
        })
        .collect();
    errors.push(FieldError::new(
        FieldErrorType::NotSupported,
        path,
        Some(v.clone()),
        format!("supported values: {}", supported.join(", ")),
    ));
}

fn validate_string(schema: &Value, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        errors.push(FieldError::new(
            FieldErrorType::TooLong,
            path,
            Some(json!(s)),
            format!(
                "may not be more than {max} {}",
                if max == 1 { "byte" } else { "bytes" }
            ),
        ));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        errors.push(invalid(
            path,
            json!(s),
            format!("{} should be at least {min} chars long", in_body(path)),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(p)
        && !re.is_match(s)
    {
        errors.push(invalid(
            path,
            json!(s),
            format!("{} should match '{p}'", in_body(path)),
        ));
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str)
        && !format_ok(f, s)
    {
        errors.push(FieldError::new(
            FieldErrorType::TypeInvalid,
            path,
            Some(json!(s)),
            format!("{} must be of type {f}: {}", in_body(path), go_quote(s)),
        ));
    }
}

fn invalid(path: &str, v: Value, detail: String) -> FieldError {
    FieldError::new(FieldErrorType::Invalid, path, Some(v), detail)
}

/// The string formats kube-openapi's strfmt registry checks
/// (`pkg/validation/strfmt/default.go`); unknown formats pass.
fn format_ok(format: &str, s: &str) -> bool {
    use base64::Engine as _;
    match format {
        "date-time" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => s.parse::<k8s_openapi::jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        "uuid" => is_uuid(s),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "mac" => {
            s.split([':', '-']).count() == 6
                && s.split([':', '-'])
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        _ => true,
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn validate_number(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = is_true(schema, "exclusiveMinimum");
        if (exclusive && x <= min) || (!exclusive && x < min) {
            let op = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(invalid(
                path,
                v.clone(),
                format!("{} should be {op} {}", in_body(path), schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = is_true(schema, "exclusiveMaximum");
        if (exclusive && x >= max) || (!exclusive && x > max) {
            let op = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(invalid(
                path,
                v.clone(),
                format!("{} should be {op} {}", in_body(path), schema["maximum"]),
            ));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64)
        && m != 0.0
        && (x / m).fract() != 0.0
    {
        errors.push(invalid(
            path,
            v.clone(),
            format!(
                "{} should be a multiple of {}",
                in_body(path),
                schema["multipleOf"]
            ),
        ));
    }
}

fn validate_array(schema: &Value, a: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (a.len() as u64) < min
    {
        errors.push(invalid(
            path,
            Value::Array(a.to_vec()),
            format!("{} should have at least {min} items", in_body(path)),
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && (a.len() as u64) > max
    {
        errors.push(FieldError::new(
            FieldErrorType::TooMany,
            path,
            Some(json!(a.len())),
            format!("must have at most {max} items"),
        ));
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        for (i, item) in a.iter().enumerate() {
            validate_node(items, item, &format!("{path}[{i}]"), false, errors);
        }
    }
    validate_list_type(schema, a, path, errors);
}

/// listtype/validation.go: `set` items and `map` keys must be unique.
fn validate_list_type(schema: &Value, a: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in a.iter().enumerate() {
                if a[..i].contains(item) {
                    errors.push(FieldError::new(
                        FieldErrorType::Duplicate,
                        &format!("{path}[{i}]"),
                        Some(item.clone()),
                        String::new(),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Value {
                let m: Map<String, Value> = keys
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| ((*k).to_string(), v.clone())))
                    .collect();
                Value::Object(m)
            };
            let all: Vec<Value> = a.iter().map(key_of).collect();
            for (i, k) in all.iter().enumerate() {
                if all[..i].contains(k) {
                    errors.push(FieldError::new(
                        FieldErrorType::Duplicate,
                        &format!("{path}[{i}]"),
                        Some(k.clone()),
                        String::new(),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn validate_object(
    schema: &Value,
    m: &Map<String, Value>,
    path: &str,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for r in required.iter().filter_map(Value::as_str) {
            if root && r == "metadata" {
                continue;
            }
            if !m.contains_key(r) {
                errors.push(FieldError::new(
                    FieldErrorType::Required,
                    &child(path, r),
                    None,
                    String::new(),
                ));
            }
        }
    }
    let n = m.len() as u64;
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        errors.push(invalid(
            path,
            Value::Object(m.clone()),
            format!("{} should have at least {min} properties", in_body(path)),
        ));
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        errors.push(FieldError::new(
            FieldErrorType::TooMany,
            path,
            Some(json!(n)),
            format!("must have at most {max} items"),
        ));
    }
    if is_true(schema, "x-kubernetes-embedded-resource") {
        for k in ["apiVersion", "kind"] {
            if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                errors.push(FieldError::new(
                    FieldErrorType::Required,
                    &child(path, k),
                    None,
                    "must not be empty".into(),
                ));
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in m {
        if (root || is_true(schema, "x-kubernetes-embedded-resource")) && k == "metadata" {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)) {
            validate_node(s, v, &child(path, k), false, errors);
        } else if let Some(s) = additional {
            validate_node(s, v, &child(path, k), false, errors);
        }
    }
}

/// allOf / anyOf / oneOf / not, as structural schemas allow them
/// (value validations only).
fn validate_composition(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let run = |s: &Value| {
        let mut e = Vec::new();
        validate_node(s, v, path, false, &mut e);
        e
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            errors.extend(run(s));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
        && !any.iter().any(|s| run(s).is_empty())
    {
        errors.push(invalid(
            path,
            v.clone(),
            format!(
                "{} must validate at least one schema (anyOf)",
                in_body(path)
            ),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
        && one.iter().filter(|s| run(s).is_empty()).count() != 1
    {
        errors.push(invalid(
            path,
            v.clone(),
            format!(
                "{} must validate one and only one schema (oneOf)",
                in_body(path)
            ),
        ));
    }
    if let Some(not) = schema.get("not").filter(|s| s.is_object())
        && run(not).is_empty()
    {
        errors.push(invalid(
            path,
            v.clone(),
            format!("{} must not validate the schema (not)", in_body(path)),
        ));
    }
}

/// Builds kube-apiserver's 422 Status for validation errors
/// (apimachinery `pkg/api/errors/errors.go` `NewInvalid`).
pub fn invalid_status(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Value {
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
        .collect();
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let message = match aggregate(errors) {
        Some(agg) => format!("{qualified} {} is invalid: {agg}", go_quote(name)),
        None => format!("{qualified} {} is invalid", go_quote(name)),
    };
    let mut details = json!({"name": name, "kind": kind, "causes": causes});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Invalid",
        "details": details,
        "code": 422,
    })
}

/// `utilerrors.NewAggregate(...).Error()`: one message as is, several as
/// `[a, b]`, duplicates removed.
fn aggregate(errors: &[FieldError]) -> Option<String> {
    let mut msgs: Vec<String> = Vec::new();
    for e in errors {
        let m = e.message();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    match msgs.len() {
        0 => None,
        1 => msgs.pop(),
        _ => Some(format!("[{}]", msgs.join(", "))),
    }
}

/// Drops fields the schema does not know, returning their paths
/// (`spec.foo`, `spec.list[0].bar`), sorted. `apiVersion`, `kind` and
/// `metadata` are never pruned at the root or in embedded resources.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_node(schema, obj, "", true, &mut out);
    out.sort();
    out
}

fn prune_node(schema: &Value, v: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    let preserve = is_true(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = root || is_true(schema, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = child(path, &k);
                if let Some(s) = props.and_then(|p| p.get(&k)) {
                    if let Some(x) = m.get_mut(&k) {
                        prune_node(s, x, &p, false, out);
                    }
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    if let Some(x) = m.get_mut(&k) {
                        prune_node(s, x, &p, false, out);
                    }
                } else if preserve || additional == Some(&Value::Bool(true)) {
                    continue;
                } else {
                    m.remove(&k);
                    out.push(p);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for (i, x) in a.iter_mut().enumerate() {
                    prune_node(items, x, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default:` values in place (structural defaulting). As since
/// Kubernetes 1.20, a `null` in a non-nullable field with a default is
/// replaced by the default.
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    default_node(schema, obj, true);
}

fn default_node(schema: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    let Some(d) = s.get("default") else { continue };
                    match m.get(k) {
                        None => {
                            m.insert(k.clone(), d.clone());
                        }
                        Some(Value::Null) if !is_true(s, "nullable") => {
                            m.insert(k.clone(), d.clone());
                        }
                        _ => {}
                    }
                }
                for (k, s) in props {
                    if root && k == "metadata" {
                        continue;
                    }
                    if let Some(x) = m.get_mut(k) {
                        default_node(s, x, false);
                    }
                }
            }
            if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for x in m.values_mut() {
                    default_node(s, x, false);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
                for x in a.iter_mut() {
                    default_node(items, x, false);
                }
            }
        }
        _ => {}
    }
}

/// How a list of a built-in kind merges (k8s.io/api `patchStrategy`,
/// `patchMergeKey`, `+listType`, `+listMapKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSemantics {
    /// An associative list: items keyed by `keys`, strategic merge patch
    /// merges by `merge_key`.
    Map {
        /// `x-kubernetes-list-map-keys`.
        keys: Vec<&'static str>,
        /// `x-kubernetes-patch-merge-key`.
        merge_key: &'static str,
        /// Whether the patch strategy also has `retainKeys`.
        retain_keys: bool,
    },
    /// A set of scalars, merged as a union.
    Set,
}

/// The merge semantics of a built-in list field. `parent` is the Go type
/// that holds the field (`PodSpec`, `ObjectMeta`, `ServiceSpec`) or, when
/// no schema is at hand, the JSON field above it (`metadata`, `spec`,
/// `containers`).
pub fn builtin_list_semantics(parent: &str, field: &str) -> Option<ListSemantics> {
    let map = |keys: Vec<&'static str>, merge_key: &'static str| {
        Some(ListSemantics::Map {
            keys,
            merge_key,
            retain_keys: false,
        })
    };
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "imagePullSecrets"
        | "env"
        | "resourceClaims"
        | "schedulingGates" => map(vec!["name"], "name"),
        "volumes" => Some(ListSemantics::Map {
            keys: vec!["name"],
            merge_key: "name",
            retain_keys: true,
        }),
        "ports" if matches!(parent, "ServiceSpec" | "spec") => {
            map(vec!["port", "protocol"], "port")
        }
        "ports" => map(vec!["containerPort", "protocol"], "containerPort"),
        "volumeMounts" => map(vec!["mountPath"], "mountPath"),
        "volumeDevices" => map(vec!["devicePath"], "devicePath"),
        "hostAliases" | "podIPs" | "hostIPs" => map(vec!["ip"], "ip"),
        "conditions" => map(vec!["type"], "type"),
        "ownerReferences" => map(vec!["uid"], "uid"),
        "topologySpreadConstraints" => map(vec!["topologyKey", "whenUnsatisfiable"], "topologyKey"),
        "finalizers" if matches!(parent, "ObjectMeta" | "metadata") => Some(ListSemantics::Set),
        _ => None,
    }
}

/// A structural schema for a built-in kind, from k8s-openapi's schemars
/// implementation: `$ref`s resolved inline (a recursive type, such as
/// JSONSchemaProps, becomes `x-kubernetes-preserve-unknown-fields` where it
/// recurs), objects without properties preserve unknown fields (RawExtension,
/// FieldsV1), and associative lists carry `x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`, `x-kubernetes-patch-strategy` and
/// `x-kubernetes-patch-merge-key` as in kube-apiserver's published OpenAPI.
/// Cached per type.
pub fn builtin_schema<K: k8s_openapi::schemars::JsonSchema>() -> Value {
    static CACHE: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    let key = K::schema_name().into_owned();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return v.clone();
    }
    let root = k8s_openapi::schemars::SchemaGenerator::default()
        .into_root_schema_for::<K>()
        .to_value();
    let defs = root
        .get("$defs")
        .or_else(|| root.get("definitions"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut stack = vec![key.clone()];
    let out = convert(&root, &defs, &mut stack, &key);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, out.clone());
    out
}

/// k8s.io/api types marked `+structType=atomic` (published with
/// `x-kubernetes-map-type: atomic`): server-side apply owns them as a whole.
const ATOMIC_STRUCTS: &[&str] = &[
    "LabelSelector",
    "OwnerReference",
    "ObjectReference",
    "LocalObjectReference",
    "TypedLocalObjectReference",
    "ObjectFieldSelector",
    "ResourceFieldSelector",
    "ConfigMapKeySelector",
    "SecretKeySelector",
    "ConfigMapEnvSource",
    "SecretEnvSource",
    "NodeSelector",
    "NodeSelectorTerm",
    "TopologySelectorTerm",
];

fn short_name(def: &str) -> &str {
    def.rsplit('.').next().unwrap_or(def)
}

fn convert(node: &Value, defs: &Map<String, Value>, stack: &mut Vec<String>, def: &str) -> Value {
    let Some(obj) = node.as_object() else {
        return node.clone();
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r).to_string();
        let mut resolved = if stack.contains(&name) {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        } else if let Some(target) = defs.get(&name) {
            stack.push(name.clone());
            let mut c = convert(target, defs, stack, &name);
            stack.pop();
            if ATOMIC_STRUCTS.contains(&short_name(&name))
                && let Some(m) = c.as_object_mut()
            {
                m.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
            c
        } else {
            json!({"x-kubernetes-preserve-unknown-fields": true})
        };
        if let Some(m) = resolved.as_object_mut() {
            for (k, v) in obj {
                if k != "$ref" {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        return resolved;
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "$schema" | "$defs" | "definitions" | "title" => {}
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(name, s)| {
                                (name.clone(), convert_property(name, s, defs, stack, def))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), convert(v, defs, stack, def));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list: Vec<Value> = v
                    .as_array()
                    .map(|a| a.iter().map(|s| convert(s, defs, stack, def)).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Array(list));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if out.get("type").and_then(Value::as_str) == Some("object")
        && !out.contains_key("properties")
        && !out.contains_key("additionalProperties")
    {
        out.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    Value::Object(out)
}

fn convert_property(
    name: &str,
    s: &Value,
    defs: &Map<String, Value>,
    stack: &mut Vec<String>,
    def: &str,
) -> Value {
    let mut c = convert(s, defs, stack, def);
    if c.get("type").and_then(Value::as_str) != Some("array") {
        return c;
    }
    let Some(m) = c.as_object_mut() else { return c };
    match builtin_list_semantics(short_name(def), name) {
        Some(ListSemantics::Map {
            keys,
            merge_key,
            retain_keys,
        }) => {
            m.insert("x-kubernetes-list-type".into(), json!("map"));
            m.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            m.insert("x-kubernetes-patch-merge-key".into(), json!(merge_key));
            let strategy = if retain_keys {
                "merge,retainKeys"
            } else {
                "merge"
            };
            m.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        Some(ListSemantics::Set) => {
            m.insert("x-kubernetes-list-type".into(), json!("set"));
            m.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        }
        None => {
            m.insert("x-kubernetes-list-type".into(), json!("atomic"));
        }
    }
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn crd_schema(file: &str) -> Value {
        let text = std::fs::read_to_string(format!(
            "{}/../tests/fixtures/cert-manager-crds/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let crd: Value = serde_norway::from_str(&text).unwrap();
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap()["schema"]["openAPIV3Schema"]
            .clone()
    }

    fn cr_schema() -> Value {
        crd_schema("cert-manager.io_certificaterequests.yaml")
    }

    fn valid_cr() -> Value {
        json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "CertificateRequest",
            "metadata": {"name": "cr-1", "namespace": "default"},
            "spec": {
                "request": "LS0tLS1CRUdJTg==",
                "issuerRef": {"name": "capstan", "kind": "Issuer", "group": "capstan.dev"},
                "duration": "2160h",
                "isCA": false,
                "usages": ["digital signature", "key encipherment"],
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "certificate": "LS0t",
            },
        })
    }

    fn messages(v: &Validation) -> Vec<String> {
        v.errors.iter().map(FieldError::message).collect()
    }

    #[test]
    fn valid_certificate_request_passes() {
        let v = validate(&cr_schema(), &valid_cr());
        assert_eq!(v.errors, vec![]);
        assert!(v.unknown_fields.is_empty());
    }

    #[test]
    fn wrong_type_is_reported_like_the_apiserver() {
        let mut cr = valid_cr();
        cr["spec"]["duration"] = json!(5);
        let v = validate(&cr_schema(), &cr);
        assert_eq!(
            messages(&v),
            [
                r#"spec.duration: Invalid value: "integer": spec.duration in body must be of type string: "integer""#
            ]
        );
        assert_eq!(v.errors[0].reason(), "FieldValueTypeInvalid");
    }

    #[test]
    fn missing_required_request() {
        let mut cr = valid_cr();
        cr["spec"].as_object_mut().unwrap().remove("request");
        let v = validate(&cr_schema(), &cr);
        assert_eq!(messages(&v), ["spec.request: Required value"]);
        assert_eq!(v.errors[0].reason(), "FieldValueRequired");
    }

    #[test]
    fn enum_and_format_violations() {
        let mut cr = valid_cr();
        cr["spec"]["usages"] = json!(["signing", "bogus"]);
        cr["status"]["conditions"][0]["status"] = json!("Maybe");
        cr["status"]["conditions"][0]["lastTransitionTime"] = json!("yesterday");
        cr["spec"]["request"] = json!("not base64!");
        let v = validate(&cr_schema(), &cr);
        let m = messages(&v);
        assert!(m.contains(&r#"spec.request: Invalid value: "not base64!": spec.request in body must be of type byte: "not base64!""#.to_string()), "{m:?}");
        assert!(m.iter().any(|x| x.starts_with(r#"spec.usages[1]: Unsupported value: "bogus": supported values: "signing", "digital signature""#)), "{m:?}");
        assert!(m.contains(&r#"status.conditions[0].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown""#.to_string()), "{m:?}");
        assert!(m.contains(&r#"status.conditions[0].lastTransitionTime: Invalid value: "yesterday": status.conditions[0].lastTransitionTime in body must be of type date-time: "yesterday""#.to_string()), "{m:?}");
        assert_eq!(
            v.errors
                .iter()
                .filter(|e| e.reason() == "FieldValueNotSupported")
                .count(),
            2
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported() {
        let mut cr = valid_cr();
        cr["spec"]["foo"] = json!(1);
        cr["spec"]["issuerRef"]["bar"] = json!("x");
        cr["metadata"]["labels"] = json!({"a": "b"});
        let v = validate(&cr_schema(), &cr);
        assert!(v.errors.is_empty());
        assert_eq!(v.unknown_fields, ["spec.foo", "spec.issuerRef.bar"]);
        let removed = prune(&cr_schema(), &mut cr);
        assert_eq!(removed, ["spec.foo", "spec.issuerRef.bar"]);
        assert!(cr["spec"].get("foo").is_none());
        assert_eq!(cr["metadata"]["labels"]["a"], "b");
        assert_eq!(cr["apiVersion"], "cert-manager.io/v1");
    }

    #[test]
    fn list_map_duplicates_and_set_duplicates() {
        let mut cr = valid_cr();
        cr["status"]["conditions"] =
            json!([{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]);
        let v = validate(&cr_schema(), &cr);
        assert_eq!(
            messages(&v),
            [r#"status.conditions[1]: Duplicate value: map[string]interface {}{"type":"Ready"}"#]
        );
        let schema = json!({"type": "object", "properties": {"s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}});
        let v = validate(
            &schema,
            &json!({"metadata": {"name": "x"}, "s": ["a", "b", "a"]}),
        );
        assert_eq!(messages(&v), [r#"s[2]: Duplicate value: "a""#]);
    }

    #[test]
    fn certificate_crd_patterns_and_nested_items() {
        let schema = crd_schema("cert-manager.io_certificates.yaml");
        let mut cert = json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.default.svc"],
                "renewal": {"windows": [{"cron": "0 2 * * *", "windowDuration": "2h30m"}]}},
        });
        assert!(schema["properties"]["spec"]["properties"]["renewal"].is_object());
        assert_eq!(validate(&schema, &cert).errors, vec![]);
        cert["spec"]["renewal"]["windows"][0]["windowDuration"] = json!("two hours");
        cert["spec"]["renewal"]["windows"][0]["cron"] = json!("");
        let m = messages(&validate(&schema, &cert));
        assert!(m.contains(&r#"spec.renewal.windows[0].windowDuration: Invalid value: "two hours": spec.renewal.windows[0].windowDuration in body should match '^([0-9]+(\.[0-9]+)?(s|m|h))+$'"#.to_string()), "{m:?}");
        assert!(m.contains(&r#"spec.renewal.windows[0].cron: Invalid value: "": spec.renewal.windows[0].cron in body should be at least 1 chars long"#.to_string()), "{m:?}");
        cert["spec"].as_object_mut().unwrap().remove("secretName");
        assert!(
            messages(&validate(&schema, &cert))
                .contains(&"spec.secretName: Required value".to_string())
        );
    }

    #[test]
    fn metadata_name_rules() {
        let schema = json!({"type": "object"});
        let v = validate(&schema, &json!({"metadata": {}}));
        assert_eq!(
            messages(&v),
            ["metadata.name: Required value: name or generateName is required"]
        );
        let v = validate(&schema, &json!({"metadata": {"name": "Bad_Name"}}));
        assert!(messages(&v)[0].starts_with(
            r#"metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#
        ));
        assert!(
            validate(&schema, &json!({"metadata": {"generateName": "x-"}}))
                .errors
                .is_empty()
        );
    }

    #[test]
    fn numeric_string_and_collection_limits() {
        let schema = json!({"type": "object", "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
            "l": {"type": "array", "maxItems": 1, "minItems": 1, "items": {"type": "string"}},
            "m": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
            "ios": {"x-kubernetes-int-or-string": true},
            "nul": {"type": "string", "nullable": true},
        }});
        let obj = json!({"metadata": {"name": "x"}, "n": 11, "s": "ABCD", "l": ["a", "b"], "m": {"a": "1", "b": 2}, "ios": true, "nul": null});
        let m = messages(&validate(&schema, &obj));
        assert_eq!(
            m,
            [
                "ios: Invalid value: \"boolean\": ios in body must be of type integer,string: \"boolean\"",
                "l: Too many: 2: must have at most 1 items",
                "m: Too many: 2: must have at most 1 items",
                "m.b: Invalid value: \"integer\": m.b in body must be of type string: \"integer\"",
                "n: Invalid value: 11: n in body should be less than or equal to 10",
                "s: Too long: may not be more than 3 bytes",
                "s: Invalid value: \"ABCD\": s in body should match '^[a-z]+$'",
            ]
        );
    }

    #[test]
    fn invalid_status_matches_new_invalid() {
        let errors = vec![
            FieldError::new(
                FieldErrorType::Required,
                "spec.request",
                None,
                String::new(),
            ),
            FieldError::new(
                FieldErrorType::TypeInvalid,
                "spec.duration",
                Some(json!("integer")),
                "spec.duration in body must be of type string: \"integer\"".into(),
            ),
        ];
        let s = invalid_status("CertificateRequest", "cert-manager.io", "cr-1", &errors);
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["message"],
            "CertificateRequest.cert-manager.io \"cr-1\" is invalid: [spec.request: Required value, spec.duration: Invalid value: \"integer\": spec.duration in body must be of type string: \"integer\"]"
        );
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "spec.request"})
        );
        let one = invalid_status("Secret", "", "s", &errors[..1]);
        assert_eq!(
            one["message"],
            "Secret \"s\" is invalid: spec.request: Required value"
        );
        assert!(one["details"].get("group").is_none());
    }

    #[test]
    fn defaults_are_applied() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "a": {"type": "string", "default": "x"},
            "b": {"type": "object", "default": {}, "properties": {"c": {"type": "integer", "default": 3}}},
            "n": {"type": "string", "default": "y"},
            "absent": {"type": "object", "properties": {"d": {"type": "integer", "default": 1}}},
        }}}});
        let mut obj = json!({"spec": {"n": null}});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj, json!({"spec": {"a": "x", "b": {"c": 3}, "n": "y"}}));
    }

    #[test]
    fn builtin_schemas_are_structural() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Secret;
        let s = builtin_schema::<Secret>();
        assert_eq!(
            s["properties"]["data"]["additionalProperties"]["format"],
            "byte"
        );
        assert_eq!(
            s["properties"]["metadata"]["properties"]["finalizers"]["x-kubernetes-list-type"],
            "set"
        );
        let mut obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"a": "eA=="}, "bogus": 1});
        assert_eq!(prune(&s, &mut obj), ["bogus"]);
        let d = builtin_schema::<Deployment>();
        assert_eq!(
            d["properties"]["spec"]["properties"]["selector"]["x-kubernetes-map-type"],
            "atomic"
        );
        let containers = &d["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]
            ["containers"];
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(
            containers["items"]["properties"]["ports"]["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        assert_eq!(
            containers["items"]["properties"]["ports"]["items"]["properties"]["containerPort"]["type"],
            "integer"
        );
        assert_eq!(
            containers["items"]["properties"]["resources"]["properties"]["limits"]["additionalProperties"]
                ["x-kubernetes-int-or-string"],
            true
        );
        let crd = builtin_schema::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>();
        assert!(
            crd["properties"]["spec"]["properties"]["versions"]["items"]["properties"]["schema"]
                .is_object()
        );
        assert!(!crd.to_string().contains("\"$ref\":\"#"));
    }
}
