//! Decoding of the Kubernetes protobuf encoding for the few kinds kubectl's
//! typed commands send that way (`kubectl create secret|configmap|namespace`,
//! `kubectl auth can-i`, `kubectl certificate approve|deny`
//! post `application/vnd.kubernetes.protobuf` bodies, with no fallback to
//! JSON). Responses are always JSON, which those clients also accept.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The 4-byte prefix of every protobuf-encoded Kubernetes object.
const MAGIC: &[u8] = b"k8s\0";

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wt) = (key >> 3, key & 7);
        let f = match wt {
            0 => Field::Varint(self.varint()?),
            1 | 5 => {
                let n = if wt == 1 { 8 } else { 4 };
                if self.pos + n > self.buf.len() {
                    return Err("truncated fixed field".into());
                }
                self.pos += n;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or("truncated bytes field")?;
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(b)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((num, f)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

fn map_entry(b: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader::new(b);
    let (mut k, mut v) = (String::new(), Vec::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = x.to_vec(),
            _ => {}
        }
    }
    Ok((k, v))
}

fn time(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut secs: i64 = 0;
    while let Some((n, f)) = r.next()? {
        if let (1, Field::Varint(v)) = (n, f) {
            secs = v as i64;
        }
    }
    if secs <= 0 {
        // Go's zero time: unset.
        return Ok(Value::Null);
    }
    let ts = k8s_openapi::jiff::Timestamp::from_second(secs).map_err(|e| e.to_string())?;
    Ok(json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn owner_reference(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => o.insert("kind".into(), json!(string(x)?)),
            (3, Field::Bytes(x)) => o.insert("name".into(), json!(string(x)?)),
            (4, Field::Bytes(x)) => o.insert("uid".into(), json!(string(x)?)),
            (5, Field::Bytes(x)) => o.insert("apiVersion".into(), json!(string(x)?)),
            (6, Field::Varint(v)) => o.insert("controller".into(), json!(v != 0)),
            (7, Field::Varint(v)) => o.insert("blockOwnerDeletion".into(), json!(v != 0)),
            _ => None,
        };
    }
    Ok(Value::Object(o))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut owners = Vec::new();
    let mut finalizers = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("name".into(), json!(string(x)?));
            }
            (2, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("generateName".into(), json!(string(x)?));
            }
            (3, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("namespace".into(), json!(string(x)?));
            }
            (5, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("uid".into(), json!(string(x)?));
            }
            (6, Field::Bytes(x)) if !x.is_empty() => {
                m.insert("resourceVersion".into(), json!(string(x)?));
            }
            (7, Field::Varint(v)) => {
                m.insert("generation".into(), json!(v as i64));
            }
            (8, Field::Bytes(x)) => {
                let t = time(x)?;
                if !t.is_null() {
                    m.insert("creationTimestamp".into(), t);
                }
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                labels.insert(k, json!(string(&v)?));
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                annotations.insert(k, json!(string(&v)?));
            }
            (13, Field::Bytes(x)) => owners.push(owner_reference(x)?),
            (14, Field::Bytes(x)) => finalizers.push(json!(string(x)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), json!(owners));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".into(), json!(finalizers));
    }
    Ok(Value::Object(m))
}

fn strings_message(b: &[u8], names: &[&str]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    while let Some((n, f)) = r.next()? {
        if let Field::Bytes(x) = f
            && !x.is_empty()
            && let Some(name) = usize::try_from(n)
                .ok()
                .and_then(|i| names.get(i.wrapping_sub(1)))
        {
            o.insert((*name).to_string(), json!(string(x)?));
        }
    }
    Ok(Value::Object(o))
}

/// `SelfSubjectAccessReviewSpec`: resource or non-resource attributes.
fn access_review_spec(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                let names = [
                    "namespace",
                    "verb",
                    "group",
                    "version",
                    "resource",
                    "subresource",
                    "name",
                ];
                o.insert("resourceAttributes".into(), strings_message(x, &names)?);
            }
            (2, Field::Bytes(x)) => {
                o.insert(
                    "nonResourceAttributes".into(),
                    strings_message(x, &["path", "verb"])?,
                );
            }
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

/// `CertificateSigningRequestSpec`.
fn csr_spec(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    let (mut usages, mut groups, mut extra) = (Vec::new(), Vec::new(), Map::new());
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                o.insert("request".into(), b64(x));
            }
            (2, Field::Bytes(x)) if !x.is_empty() => {
                o.insert("username".into(), json!(string(x)?));
            }
            (3, Field::Bytes(x)) if !x.is_empty() => {
                o.insert("uid".into(), json!(string(x)?));
            }
            (4, Field::Bytes(x)) => groups.push(json!(string(x)?)),
            (5, Field::Bytes(x)) => usages.push(json!(string(x)?)),
            (6, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                let mut items = Vec::new();
                let mut e = Reader::new(&v);
                while let Some((n, f)) = e.next()? {
                    if let (1, Field::Bytes(y)) = (n, f) {
                        items.push(json!(string(y)?));
                    }
                }
                extra.insert(k, json!(items));
            }
            (7, Field::Bytes(x)) => {
                o.insert("signerName".into(), json!(string(x)?));
            }
            (8, Field::Varint(v)) => {
                o.insert("expirationSeconds".into(), json!(v as i32));
            }
            _ => {}
        }
    }
    if !usages.is_empty() {
        o.insert("usages".into(), json!(usages));
    }
    if !groups.is_empty() {
        o.insert("groups".into(), json!(groups));
    }
    if !extra.is_empty() {
        o.insert("extra".into(), Value::Object(extra));
    }
    Ok(Value::Object(o))
}

/// `CertificateSigningRequestStatus` with its conditions.
fn csr_status(b: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    let mut conditions = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                let mut c = Reader::new(x);
                let mut cond = Map::new();
                while let Some((n, f)) = c.next()? {
                    let key = match n {
                        1 => "type",
                        2 => "reason",
                        3 => "message",
                        4 => "lastUpdateTime",
                        5 => "lastTransitionTime",
                        6 => "status",
                        _ => continue,
                    };
                    if let Field::Bytes(y) = f {
                        let v = if n == 4 || n == 5 {
                            time(y)?
                        } else {
                            json!(string(y)?)
                        };
                        if !v.is_null() {
                            cond.insert(key.into(), v);
                        }
                    }
                }
                conditions.push(Value::Object(cond));
            }
            (2, Field::Bytes(x)) if !x.is_empty() => {
                o.insert("certificate".into(), b64(x));
            }
            _ => {}
        }
    }
    if !conditions.is_empty() {
        o.insert("conditions".into(), json!(conditions));
    }
    Ok(Value::Object(o))
}

fn b64(v: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(v))
}

fn body(kind: &str, raw: &[u8]) -> Result<Value, String> {
    let mut r = Reader::new(raw);
    let mut out = Map::new();
    let mut maps: [Map<String, Value>; 3] = [Map::new(), Map::new(), Map::new()];
    while let Some((n, f)) = r.next()? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => {
                out.insert("metadata".into(), object_meta(x)?);
            }
            ("Secret", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                maps[0].insert(k, b64(&v));
            }
            ("Secret", 3, Field::Bytes(x)) if !x.is_empty() => {
                out.insert("type".into(), json!(string(x)?));
            }
            ("Secret", 4, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                maps[1].insert(k, json!(string(&v)?));
            }
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                out.insert("immutable".into(), json!(v != 0));
            }
            ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                maps[0].insert(k, json!(string(&v)?));
            }
            ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                maps[2].insert(k, b64(&v));
            }
            ("CertificateSigningRequest", 2, Field::Bytes(x)) => {
                out.insert("spec".into(), csr_spec(x)?);
            }
            ("CertificateSigningRequest", 3, Field::Bytes(x)) => {
                out.insert("status".into(), csr_status(x)?);
            }
            ("SelfSubjectAccessReview", 2, Field::Bytes(x)) => {
                out.insert("spec".into(), access_review_spec(x)?);
            }
            ("Namespace", 2, Field::Bytes(x)) => {
                let mut s = Reader::new(x);
                let mut fin = Vec::new();
                while let Some((n, f)) = s.next()? {
                    if let (1, Field::Bytes(y)) = (n, f) {
                        fin.push(json!(string(y)?));
                    }
                }
                out.insert("spec".into(), json!({"finalizers": fin}));
            }
            _ => {}
        }
    }
    let [data, string_data, binary] = maps;
    if !data.is_empty() {
        out.insert("data".into(), Value::Object(data));
    }
    if !string_data.is_empty() {
        out.insert("stringData".into(), Value::Object(string_data));
    }
    if !binary.is_empty() {
        out.insert("binaryData".into(), Value::Object(binary));
    }
    Ok(Value::Object(out))
}

/// How one protobuf field maps to JSON, for the schema-driven decoder.
#[derive(Clone, Copy)]
enum Ty {
    /// A string; empty is left out (Go's `omitempty`).
    Str,
    /// An integer; zero is left out.
    Int,
    /// An integer behind a pointer in Go: present means set, zero included.
    OptInt,
    /// A boolean; false is left out.
    Bool,
    /// A nested message.
    Msg(&'static Schema),
    /// `ObjectMeta`.
    Meta,
    /// A repeated string.
    Strs,
    /// A repeated message.
    Msgs(&'static Schema),
    /// `map<string, string>`.
    StrMap,
    /// `map<string, Quantity>` (resource amounts; a Quantity is its string).
    Quantities,
    /// `IntOrString`.
    IntOrString,
    /// Read and left out.
    Ignored,
}

/// A message's known fields: number, JSON name, type.
type Schema = [(u64, &'static str, Ty)];

const DEPLOYMENT: &Schema = &[
    (1, "metadata", Ty::Meta),
    (2, "spec", Ty::Msg(DEPLOYMENT_SPEC)),
    // Clients send an empty status; the server resets it on create.
    (3, "status", Ty::Ignored),
];
const DEPLOYMENT_SPEC: &Schema = &[
    (1, "replicas", Ty::OptInt),
    (2, "selector", Ty::Msg(LABEL_SELECTOR)),
    (3, "template", Ty::Msg(POD_TEMPLATE)),
    (4, "strategy", Ty::Msg(STRATEGY)),
    (5, "minReadySeconds", Ty::Int),
    (6, "revisionHistoryLimit", Ty::OptInt),
    (7, "paused", Ty::Bool),
    (9, "progressDeadlineSeconds", Ty::OptInt),
];
const LABEL_SELECTOR: &Schema = &[
    (1, "matchLabels", Ty::StrMap),
    (2, "matchExpressions", Ty::Msgs(SELECTOR_REQUIREMENT)),
];
const SELECTOR_REQUIREMENT: &Schema = &[
    (1, "key", Ty::Str),
    (2, "operator", Ty::Str),
    (3, "values", Ty::Strs),
];
const STRATEGY: &Schema = &[
    (1, "type", Ty::Str),
    (2, "rollingUpdate", Ty::Msg(ROLLING_UPDATE)),
];
const ROLLING_UPDATE: &Schema = &[
    (1, "maxUnavailable", Ty::IntOrString),
    (2, "maxSurge", Ty::IntOrString),
];
const POD_TEMPLATE: &Schema = &[(1, "metadata", Ty::Meta), (2, "spec", Ty::Msg(POD_SPEC))];
const POD_SPEC: &Schema = &[
    (2, "containers", Ty::Msgs(CONTAINER)),
    (20, "initContainers", Ty::Msgs(CONTAINER)),
    (3, "restartPolicy", Ty::Str),
    (4, "terminationGracePeriodSeconds", Ty::OptInt),
    (6, "dnsPolicy", Ty::Str),
    (7, "nodeSelector", Ty::StrMap),
    (8, "serviceAccountName", Ty::Str),
    (9, "serviceAccount", Ty::Str),
    (10, "nodeName", Ty::Str),
    (16, "hostname", Ty::Str),
    (17, "subdomain", Ty::Str),
    (19, "schedulerName", Ty::Str),
    (24, "priorityClassName", Ty::Str),
];
const CONTAINER: &Schema = &[
    (1, "name", Ty::Str),
    (2, "image", Ty::Str),
    (3, "command", Ty::Strs),
    (4, "args", Ty::Strs),
    (5, "workingDir", Ty::Str),
    (6, "ports", Ty::Msgs(CONTAINER_PORT)),
    (7, "env", Ty::Msgs(ENV_VAR)),
    (8, "resources", Ty::Msg(RESOURCES)),
    (13, "terminationMessagePath", Ty::Str),
    (20, "terminationMessagePolicy", Ty::Str),
    (14, "imagePullPolicy", Ty::Str),
    (16, "stdin", Ty::Bool),
    (17, "stdinOnce", Ty::Bool),
    (18, "tty", Ty::Bool),
];
const CONTAINER_PORT: &Schema = &[
    (1, "name", Ty::Str),
    (2, "hostPort", Ty::Int),
    (3, "containerPort", Ty::Int),
    (4, "protocol", Ty::Str),
    (5, "hostIP", Ty::Str),
];
const ENV_VAR: &Schema = &[(1, "name", Ty::Str), (2, "value", Ty::Str)];
const RESOURCES: &Schema = &[
    (1, "limits", Ty::Quantities),
    (2, "requests", Ty::Quantities),
];

/// Decodes message `b` of type `what` by `schema`. A field the schema does
/// not know is refused rather than dropped, so nothing a client sent is
/// silently lost; such clients can send JSON.
fn message(b: &[u8], schema: &'static Schema, what: &str) -> Result<Value, String> {
    let mut r = Reader::new(b);
    let mut o = Map::new();
    while let Some((n, f)) = r.next()? {
        let Some((_, name, ty)) = schema.iter().find(|(num, ..)| *num == n) else {
            let empty =
                matches!(f, Field::Varint(0)) || matches!(f, Field::Bytes(x) if x.is_empty());
            if empty {
                continue;
            }
            return Err(format!(
                "protobuf field {n} of {what} is not supported by this test server; send JSON"
            ));
        };
        let key = (*name).to_owned();
        match (*ty, f) {
            (Ty::Str, Field::Bytes(x)) if !x.is_empty() => {
                o.insert(key, json!(string(x)?));
            }
            (Ty::Str, Field::Bytes(_)) => {}
            (Ty::Int, Field::Varint(0)) | (Ty::Bool, Field::Varint(0)) => {}
            (Ty::Int | Ty::OptInt, Field::Varint(v)) => {
                o.insert(key, json!(v as i64));
            }
            (Ty::Bool, Field::Varint(_)) => {
                o.insert(key, json!(true));
            }
            (Ty::Msg(inner), Field::Bytes(x)) => {
                o.insert(key, message(x, inner, name)?);
            }
            (Ty::Meta, Field::Bytes(x)) => {
                o.insert(key, object_meta(x)?);
            }
            (Ty::Strs, Field::Bytes(x)) => push(&mut o, key, json!(string(x)?)),
            (Ty::Msgs(inner), Field::Bytes(x)) => push(&mut o, key, message(x, inner, name)?),
            (Ty::StrMap, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                entry(&mut o, key, k, json!(string(&v)?));
            }
            (Ty::Quantities, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                // A Quantity message is its string form, field 1.
                let q = message(&v, &[(1, "string", Ty::Str)], "Quantity")?;
                entry(&mut o, key, k, q["string"].clone());
            }
            (Ty::Ignored, _) => {}
            (Ty::IntOrString, Field::Bytes(x)) => {
                let v = message(
                    x,
                    &[
                        (1, "type", Ty::Int),
                        (2, "intVal", Ty::Int),
                        (3, "strVal", Ty::Str),
                    ],
                    "IntOrString",
                )?;
                let value = if v["type"].as_i64() == Some(1) {
                    v["strVal"].clone()
                } else {
                    json!(v["intVal"].as_i64().unwrap_or(0))
                };
                o.insert(key, value);
            }
            _ => {
                return Err(format!(
                    "protobuf field {n} of {what} has the wrong wire type"
                ));
            }
        }
    }
    Ok(Value::Object(o))
}

fn push(o: &mut Map<String, Value>, key: String, v: Value) {
    if let Value::Array(items) = o.entry(key).or_insert_with(|| json!([])) {
        items.push(v);
    }
}

fn entry(o: &mut Map<String, Value>, key: String, k: String, v: Value) {
    if let Value::Object(m) = o.entry(key).or_insert_with(|| json!({})) {
        m.insert(k, v);
    }
}

/// Decodes protobuf-encoded `DeleteOptions` (typed clients such as helm's
/// Secret storage driver send them with DELETE).
pub fn decode_delete_options(bytes: &[u8]) -> Result<Value, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf prefix")?;
    let mut r = Reader::new(rest);
    let mut raw: &[u8] = &[];
    while let Some((n, f)) = r.next()? {
        if let (2, Field::Bytes(x)) = (n, f) {
            raw = x;
        }
    }
    let mut r = Reader::new(raw);
    let mut o = Map::new();
    let mut dry_run = Vec::new();
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Varint(v)) => {
                o.insert("gracePeriodSeconds".into(), json!(v as i64));
            }
            (2, Field::Bytes(x)) => {
                o.insert(
                    "preconditions".into(),
                    strings_message(x, &["uid", "resourceVersion"])?,
                );
            }
            (3, Field::Varint(v)) => {
                o.insert("orphanDependents".into(), json!(v != 0));
            }
            (4, Field::Bytes(x)) if !x.is_empty() => {
                o.insert("propagationPolicy".into(), json!(string(x)?));
            }
            (5, Field::Bytes(x)) => dry_run.push(json!(string(x)?)),
            _ => {}
        }
    }
    if !dry_run.is_empty() {
        o.insert("dryRun".into(), json!(dry_run));
    }
    Ok(Value::Object(o))
}

/// Decodes a protobuf-encoded Secret, ConfigMap, Namespace,
/// SelfSubjectAccessReview or CertificateSigningRequest to JSON.
/// Other kinds are refused (the caller answers 415).
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf prefix")?;
    let mut r = Reader::new(rest);
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    while let Some((n, f)) = r.next()? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((n, f)) = t.next()? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if (api_version.as_str(), kind.as_str()) == ("apps/v1", "Deployment") {
        let mut obj = message(raw, DEPLOYMENT, "Deployment")?;
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        return Ok(obj);
    }
    let supported = matches!(
        (api_version.as_str(), kind.as_str()),
        ("v1", "Secret" | "ConfigMap" | "Namespace")
    ) || (api_version == "authorization.k8s.io/v1"
        && kind == "SelfSubjectAccessReview")
        || (api_version == "certificates.k8s.io/v1" && kind == "CertificateSigningRequest");
    if !supported {
        return Err(format!(
            "protobuf bodies of {api_version} {kind} are not supported; send JSON"
        ));
    }
    let mut obj = body(&kind, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn decodes_a_secret_as_kubectl_sends_it() {
        let meta = [
            field(1, b"s"),
            field(3, b"default"),
            field(11, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        let env = [MAGIC.to_vec(), field(1, &tm), field(2, &secret)].concat();
        let v = decode(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default", "labels": {"a": "b"}}, "data": {"k": "dg=="}, "type": "Opaque"})
        );
        assert!(decode(b"{}").is_err());
    }

    fn varint(num: u64, v: u8) -> Vec<u8> {
        vec![(num << 3) as u8, v]
    }

    fn deployment(spec: &[u8]) -> Vec<u8> {
        let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [
            field(1, &field(1, b"d1")),
            field(2, spec),
            field(3, &varint(1, 0)),
        ]
        .concat();
        [MAGIC.to_vec(), field(1, &tm), field(2, &body)].concat()
    }

    #[test]
    fn decodes_a_deployment_as_kubectl_create_deployment_sends_it() {
        let labels = field(1, &[field(1, b"app"), field(2, b"d1")].concat());
        let container = [field(1, b"nginx"), field(2, b"nginx"), field(8, b"")].concat();
        let template = [
            field(1, &field(11, &[field(1, b"app"), field(2, b"d1")].concat())),
            field(2, &field(2, &container)),
        ]
        .concat();
        let spec = [
            varint(1, 0),
            field(2, &labels),
            field(3, &template),
            field(4, b""),
            varint(5, 0),
        ]
        .concat();
        let v = decode(&deployment(&spec)).unwrap();
        assert_eq!(
            v,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d1"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "d1"}},
                    "template": {
                        "metadata": {"labels": {"app": "d1"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}
                    },
                    "strategy": {}
                }
            })
        );
    }

    #[test]
    fn a_deployment_field_it_does_not_know_is_refused_not_dropped() {
        let err = decode(&deployment(&field(10, b"x"))).unwrap_err();
        assert!(
            err.contains("field 10") && err.contains("send JSON"),
            "{err}"
        );
    }
}
