//! JSON patch, merge patch, strategic merge patch, server-side apply and
//! managed-fields bookkeeping.
//!
//! - JSON patch (RFC 6902) and merge patch (RFC 7386) as
//!   `k8s.io/apiserver/pkg/endpoints/handlers/patch.go` applies them.
//! - Strategic merge patch: `k8s.io/apimachinery/pkg/util/strategicpatch/patch.go`
//!   (directives `$patch`, `$retainKeys`, `$setElementOrder/…`,
//!   `$deleteFromPrimitiveList/…`), with the patch strategies of k8s.io/api.
//! - Server-side apply and managed fields: `sigs.k8s.io/structured-merge-diff/v4`
//!   (`merge/update.go`, `typed/merge.go`, `typed/compare.go`,
//!   `typed/tofieldset.go`, `fieldpath/serialize.go`) and
//!   `k8s.io/apimachinery/pkg/util/managedfields/internal` (`stripmeta.go`,
//!   `conflict.go`, `managedfields.go`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::schema::{ListSemantics, builtin_list_semantics};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch is malformed or does not apply (400/422), with kube's message.
    #[error("{0}")]
    Invalid(String),
    /// Server-side apply conflicts (409).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The other manager's name, e.g. `kubectl`.
    pub manager: String,
    /// The field, as `fieldpath.Path.String()`: `.data.foo`,
    /// `.status.conditions[type="Ready"].status`.
    pub field: String,
    /// The other manager's operation, `Apply` or `Update`.
    pub operation: String,
    /// The other manager's API version (printed for `Update` managers).
    pub api_version: String,
    /// The other manager's subresource, if any.
    pub subresource: Option<String>,
}

impl Conflict {
    /// conflict.go `printManager`: `"kubectl"`, `"kubectl" using v1`,
    /// `"ctrl" with subresource "status" using v1`. Use it in the cause
    /// message: `conflict with <describe()>`.
    pub fn describe(&self) -> String {
        let mut s = quote(&self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {}", quote(sub)));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// conflict.go `getConflictMessage`.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.describe(),
            c.field
        );
    }
    let mut by_manager: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager.entry(c.describe()).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Invalid(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| PatchError::Invalid(e.to_string()))?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch (`application/merge-patch+json`).
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch (`application/strategic-merge-patch+json`)
/// to a built-in object of `kind`. Lists merge by the k8s.io/api
/// `patchMergeKey` of their field (see [`builtin_list_semantics`]); other
/// lists are replaced.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let (Some(d), Some(p)) = (doc.as_object(), patch.as_object()) else {
        return Err(PatchError::Invalid(
            "couldn't get version/kind; json parse error: json: cannot unmarshal into Go value of type struct"
                .into(),
        ));
    };
    let parent = if kind == "Service" { "ServiceSpec" } else { "" };
    Ok(smp_map(d, p, parent)?.map_or_else(|| json!({}), Value::Object))
}

/// patch.go `mergeMap`. `None` means the map is deleted (`$patch: delete`).
fn smp_map(
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
    parent: &str,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(DIRECTIVE).and_then(Value::as_str) {
        Some("replace") => return Ok(Some(strip_directives_map(patch, parent)?)),
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type: {other} in map: {}",
                Value::Object(patch.clone())
            )));
        }
    }
    let mut out = orig.clone();
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or_else(|| PatchError::Invalid("invalid retainKeys directive: not a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let drop = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = out.get_mut(field) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) {
            orders.push((field.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Value::Object(o)), Value::Object(p)) => smp_map(o, p, k)?.map(Value::Object),
            (Some(Value::Array(o)), Value::Array(p)) => Some(smp_list(o, p, parent, k)?),
            (None, Value::Object(p)) => smp_map(&Map::new(), p, k)?.map(Value::Object),
            (None, Value::Array(p)) => Some(smp_list(&[], p, parent, k)?),
            _ => Some(v.clone()),
        };
        match merged {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, order) in orders {
        let sem = builtin_list_semantics(parent, &field);
        if let Some(Value::Array(list)) = out.get_mut(&field) {
            reorder(list, &order, sem.as_ref());
        }
    }
    Ok(Some(out))
}

/// Removes directives from a value that replaces or is added wholesale.
fn strip_directives_map(
    patch: &Map<String, Value>,
    parent: &str,
) -> Result<Map<String, Value>, PatchError> {
    let mut clean = patch.clone();
    clean.remove(DIRECTIVE);
    Ok(smp_map(&Map::new(), &clean, parent)?.unwrap_or_default())
}

/// patch.go `mergeSlice`: replace unless the field has a merge strategy.
fn smp_list(
    orig: &[Value],
    patch: &[Value],
    parent: &str,
    field: &str,
) -> Result<Value, PatchError> {
    let sem = builtin_list_semantics(parent, field);
    let replace_all = patch
        .iter()
        .any(|p| p.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    match sem {
        Some(ListSemantics::Map { merge_key, .. }) if !replace_all => {
            smp_merge_by_key(orig, patch, field, merge_key)
        }
        Some(ListSemantics::Set) if !replace_all => {
            let mut out = orig.to_vec();
            for p in patch {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
            Ok(Value::Array(out))
        }
        _ => {
            let mut out = Vec::new();
            for p in patch {
                match p {
                    Value::Object(m) if m.get(DIRECTIVE).is_some() && m.len() == 1 => {}
                    Value::Object(m) => out.push(Value::Object(strip_directives_map(m, field)?)),
                    other => out.push(other.clone()),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

fn smp_merge_by_key(
    orig: &[Value],
    patch: &[Value],
    field: &str,
    key: &str,
) -> Result<Value, PatchError> {
    let mut out = orig.to_vec();
    for p in patch {
        let Some(pm) = p.as_object() else {
            return Err(PatchError::Invalid(format!(
                "unable to find api field in struct {field} for the json field {p}"
            )));
        };
        let Some(kv) = pm.get(key) else {
            return Err(PatchError::Invalid(format!(
                "map: {p} does not contain declared merge key: {key}"
            )));
        };
        let pos = out.iter().position(|o| o.get(key) == Some(kv));
        let delete = pm.get(DIRECTIVE).and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = match out[i].as_object() {
                    Some(o) => smp_map(o, pm, field)?,
                    None => Some(pm.clone()),
                };
                match merged {
                    Some(m) => out[i] = Value::Object(m),
                    None => {
                        out.remove(i);
                    }
                }
            }
            (None, false) => out.push(Value::Object(strip_directives_map(pm, field)?)),
        }
    }
    Ok(Value::Array(out))
}

/// `$setElementOrder`: listed items first, in the given order; the others
/// (server-only items) after them in their original order.
fn reorder(list: &mut Vec<Value>, order: &[Value], sem: Option<&ListSemantics>) {
    let key_of = |v: &Value| -> Value {
        match sem {
            Some(ListSemantics::Map { merge_key, .. }) => {
                v.get(*merge_key).cloned().unwrap_or(Value::Null)
            }
            _ => v.clone(),
        }
    };
    let order_keys: Vec<Value> = order.iter().map(&key_of).collect();
    let mut ordered: Vec<(usize, Value)> = Vec::new();
    let mut rest = Vec::new();
    for item in list.drain(..) {
        match order_keys.iter().position(|k| *k == key_of(&item)) {
            Some(i) => ordered.push((i, item)),
            None => rest.push(item),
        }
    }
    ordered.sort_by_key(|(i, _)| *i);
    list.extend(ordered.into_iter().map(|(_, v)| v));
    list.extend(rest);
}

// ---------------------------------------------------------------------------
// Field sets (structured-merge-diff fieldpath.Set, FieldsV1 encoding)
// ---------------------------------------------------------------------------

/// A set of field paths as a tree. Children are keyed by FieldsV1 path
/// elements: `f:<name>`, `k:<json keys>`, `v:<json value>`, `i:<index>`.
#[derive(Debug, Clone, Default, PartialEq)]
struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// fieldpath/serialize.go: `{}` leaves, `".": {}` for a member with children.
    fn from_json(v: &Value) -> Self {
        let mut s = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, c) in m {
                if k == "." {
                    s.member = true;
                } else {
                    let mut child = FieldSet::from_json(c);
                    if c.as_object().is_some_and(Map::is_empty) {
                        child.member = true;
                    }
                    s.children.insert(k.clone(), child);
                }
            }
        }
        s
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }

    fn child(&mut self, pe: &str) -> &mut FieldSet {
        self.children.entry(pe.to_string()).or_default()
    }

    fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    fn prune(&mut self) {
        for c in self.children.values_mut() {
            c.prune();
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.child(k).union(c);
        }
    }

    /// Members of `self` that are not members of `other`.
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            out.children.insert(k.clone(), d);
        }
        out.prune();
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                out.children.insert(k.clone(), c.intersection(o));
            }
        }
        out.prune();
        out
    }

    /// The node at `path`, if the tree has one.
    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((h, rest)) => self.children.get(h)?.node(rest),
        }
    }

    /// Whether any member lies at or below `path`.
    fn owns_at_or_below(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    fn member_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.member_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Non-member nodes (named struct fields) with their paths.
    fn inner_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if !self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.inner_paths(prefix, out);
            prefix.pop();
        }
    }

    fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.member_paths(&mut Vec::new(), &mut out);
        out
    }
}

/// `fieldpath.Path.String()`: `.spec.x`, `[name="a"]`, `[="v"]`, `[0]`.
fn path_string(path: &[String]) -> String {
    let mut s = String::new();
    for pe in path {
        if let Some(f) = pe.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = pe.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = pe.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = pe.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// stripmeta.go: fields no manager ever owns.
fn strip_ignored(set: &mut FieldSet) {
    set.children.remove("f:apiVersion");
    set.children.remove("f:kind");
    if let Some(meta) = set.children.get_mut("f:metadata") {
        meta.member = false;
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            meta.children.remove(&format!("f:{f}"));
        }
    }
    set.prune();
}

// ---------------------------------------------------------------------------
// Types: how maps and lists of an object behave
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListKind {
    Atomic,
    Set,
    Map,
}

/// The type of one node: its schema (if any), how its lists merge, and the
/// JSON field it sits under (for the built-in table when no schema is given).
#[derive(Debug, Clone)]
struct Ty<'s> {
    schema: Option<&'s Value>,
    builtin: bool,
    name: String,
    list: ListKind,
    keys: Vec<String>,
}

/// Map-typed fields of built-in kinds: their entries are not declared
/// fields, so each entry is owned on its own (tofieldset.go).
const BUILTIN_MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "stringData",
    "binaryData",
    "nodeSelector",
    "limits",
    "requests",
    "matchLabels",
    "capacity",
    "allocatable",
    "extra",
];

/// The structural schema of ObjectMeta, built once.
fn object_meta_schema() -> &'static Value {
    static META: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    META.get_or_init(|| {
        super::schema::builtin_schema::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        )
    })
}

impl<'s> Ty<'s> {
    fn root(schema: Option<&'s Value>) -> Self {
        Ty {
            schema,
            builtin: schema.is_none(),
            name: String::new(),
            list: ListKind::Atomic,
            keys: Vec::new(),
        }
    }

    /// `x-kubernetes-map-type: atomic` maps are owned as a whole.
    fn atomic_map(&self) -> bool {
        self.schema
            .and_then(|s| s.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic")
    }

    /// The type of field `k`, and whether `k` is a declared (struct) field.
    fn field(&self, k: &str) -> (Ty<'s>, bool) {
        let (schema, declared) = match self.schema {
            // kube-apiserver types every object's metadata as ObjectMeta,
            // whatever a CRD's schema says about it (apiextensions-apiserver
            // `pkg/apiserver/schema/objectmeta`), so labels and annotations
            // are granular maps and ownerReferences a map keyed by uid.
            Some(_) if self.name.is_empty() && k == "metadata" => {
                (Some(object_meta_schema()), true)
            }
            Some(s) => match s.get("properties").and_then(|p| p.get(k)) {
                Some(p) => (Some(p), true),
                None => (
                    s.get("additionalProperties").filter(|a| a.is_object()),
                    false,
                ),
            },
            None => (
                None,
                self.builtin && !BUILTIN_MAP_FIELDS.contains(&self.name.as_str()),
            ),
        };
        let (list, keys) = match schema.and_then(|s| s.get("x-kubernetes-list-type")) {
            Some(t) => match t.as_str() {
                Some("map") => (
                    ListKind::Map,
                    schema
                        .and_then(|s| s.get("x-kubernetes-list-map-keys"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                Some("set") => (ListKind::Set, Vec::new()),
                _ => (ListKind::Atomic, Vec::new()),
            },
            None if self.builtin => match builtin_list_semantics(&self.name, k) {
                Some(ListSemantics::Map { keys, .. }) => {
                    (ListKind::Map, keys.iter().map(|k| k.to_string()).collect())
                }
                Some(ListSemantics::Set) => (ListKind::Set, Vec::new()),
                None => (ListKind::Atomic, Vec::new()),
            },
            None => (ListKind::Atomic, Vec::new()),
        };
        let ty = Ty {
            schema,
            builtin: self.builtin,
            name: k.to_string(),
            list,
            keys,
        };
        (ty, declared)
    }

    fn item(&self) -> Ty<'s> {
        Ty {
            schema: self.schema.and_then(|s| s.get("items")),
            builtin: self.builtin,
            name: self.name.clone(),
            list: ListKind::Atomic,
            keys: Vec::new(),
        }
    }

    /// The path element of a list item: `k:{"name":"a"}`, `v:"x"`, `i:0`.
    fn item_pe(&self, item: &Value, idx: usize) -> String {
        match self.list {
            ListKind::Set => format!("v:{item}"),
            ListKind::Map => {
                let keys: BTreeMap<&str, &Value> = self
                    .keys
                    .iter()
                    .filter_map(|k| item.get(k.as_str()).map(|v| (k.as_str(), v)))
                    .collect();
                if keys.is_empty() {
                    format!("i:{idx}")
                } else {
                    format!("k:{}", serde_json::to_string(&keys).unwrap_or_default())
                }
            }
            ListKind::Atomic => format!("i:{idx}"),
        }
    }
}

/// tofieldset.go: the fields an applied configuration sets.
fn to_field_set(v: &Value, ty: &Ty, set: &mut FieldSet) {
    match v {
        Value::Object(m) if !ty.atomic_map() => {
            for (k, cv) in m {
                let (cty, declared) = ty.field(k);
                let child = set.child(&format!("f:{k}"));
                to_field_set(cv, &cty, child);
                if cv.is_null() || cv.as_object().is_some_and(Map::is_empty) || !declared {
                    child.member = true;
                }
            }
        }
        Value::Array(a) if ty.list != ListKind::Atomic => {
            let ity = ty.item();
            for (i, item) in a.iter().enumerate() {
                let child = set.child(&ty.item_pe(item, i));
                to_field_set(item, &ity, child);
                child.member = true;
            }
        }
        _ => set.member = true,
    }
}

/// Marks `v` and everything below it (compare.go: an added or removed node
/// and all its descendants).
fn mark_all(v: &Value, ty: &Ty, set: &mut FieldSet) {
    set.member = true;
    match v {
        Value::Object(m) if !ty.atomic_map() => {
            for (k, cv) in m {
                let (cty, _) = ty.field(k);
                mark_all(cv, &cty, set.child(&format!("f:{k}")));
            }
        }
        Value::Array(a) if ty.list != ListKind::Atomic => {
            let ity = ty.item();
            for (i, item) in a.iter().enumerate() {
                mark_all(item, &ity, set.child(&ty.item_pe(item, i)));
            }
        }
        _ => {}
    }
}

/// compare.go: fields added or modified (`changed`) and removed between
/// `l` and `r`.
fn compare(
    l: Option<&Value>,
    r: Option<&Value>,
    ty: &Ty,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    // A null that becomes a map or list is an addition of all its fields.
    let (l, r) = match (l, r) {
        (Some(Value::Null), Some(x)) if x.is_object() || x.is_array() => (None, r),
        (Some(x), Some(Value::Null)) if x.is_object() || x.is_array() => (l, None),
        _ => (l, r),
    };
    match (l, r) {
        (None, None) => {}
        (None, Some(r)) => mark_all(r, ty, changed),
        (Some(l), None) => mark_all(l, ty, removed),
        (Some(Value::Object(lm)), Some(Value::Object(rm))) if !ty.atomic_map() => {
            let mut keys: Vec<&String> = lm.keys().chain(rm.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (cty, _) = ty.field(k);
                let pe = format!("f:{k}");
                compare(
                    lm.get(k),
                    rm.get(k),
                    &cty,
                    changed.child(&pe),
                    removed.child(&pe),
                );
            }
        }
        (Some(Value::Array(la)), Some(Value::Array(ra))) if ty.list != ListKind::Atomic => {
            let ity = ty.item();
            let lk: Vec<(String, &Value)> = la
                .iter()
                .enumerate()
                .map(|(i, v)| (ty.item_pe(v, i), v))
                .collect();
            let rk: Vec<(String, &Value)> = ra
                .iter()
                .enumerate()
                .map(|(i, v)| (ty.item_pe(v, i), v))
                .collect();
            let find = |list: &[(String, &'_ Value)], pe: &str| -> Option<Value> {
                list.iter()
                    .find(|(k, _)| k == pe)
                    .map(|(_, v)| (*v).clone())
            };
            let mut pes: Vec<&String> = lk.iter().chain(rk.iter()).map(|(k, _)| k).collect();
            pes.sort();
            pes.dedup();
            for pe in pes {
                let (a, b) = (find(&lk, pe), find(&rk, pe));
                compare(
                    a.as_ref(),
                    b.as_ref(),
                    &ity,
                    changed.child(pe),
                    removed.child(pe),
                );
            }
        }
        (Some(l), Some(r)) => {
            if l != r {
                changed.member = true;
            }
        }
    }
}

/// merge.go: the applied configuration merged into the live object. Maps
/// merge per key, associative lists per item, everything else is replaced.
/// A `null` in the configuration removes the field.
fn merge(l: &Value, r: &Value, ty: &Ty) -> Value {
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if !ty.atomic_map() => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                if rv.is_null() {
                    out.remove(k);
                    continue;
                }
                let (cty, _) = ty.field(k);
                let v = match lm.get(k) {
                    Some(lv) => merge(lv, rv, &cty),
                    None => rv.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        (Value::Array(la), Value::Array(ra)) if ty.list != ListKind::Atomic => {
            let ity = ty.item();
            let mut out = la.clone();
            for (i, ritem) in ra.iter().enumerate() {
                let pe = ty.item_pe(ritem, i);
                let pos = out
                    .iter()
                    .enumerate()
                    .position(|(j, x)| ty.item_pe(x, j) == pe);
                match pos {
                    Some(j) => out[j] = merge(&out[j], ritem, &ity),
                    None => out.push(ritem.clone()),
                }
            }
            Value::Array(out)
        }
        _ => r.clone(),
    }
}

/// Removes the node at `path` from `v` (typed.RemoveItems for one path).
fn remove_path(v: &mut Value, path: &[String], ty: &Ty) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    if let Some(f) = head.strip_prefix("f:") {
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(f);
        } else if let Some(c) = m.get_mut(f) {
            let (cty, _) = ty.field(f);
            remove_path(c, rest, &cty);
        }
        return;
    }
    let Some(a) = v.as_array_mut() else { return };
    let pos = a
        .iter()
        .enumerate()
        .position(|(i, x)| ty.item_pe(x, i) == *head);
    if let Some(i) = pos {
        if rest.is_empty() {
            a.remove(i);
        } else {
            remove_path(&mut a[i], rest, &ty.item());
        }
    }
}

fn value_at<'v>(v: &'v Value, path: &[String], ty: &Ty) -> Option<&'v Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(v);
    };
    if let Some(f) = head.strip_prefix("f:") {
        let (cty, _) = ty.field(f);
        return value_at(v.get(f)?, rest, &cty);
    }
    let a = v.as_array()?;
    let item = a
        .iter()
        .enumerate()
        .find(|(i, x)| ty.item_pe(x, *i) == *head)?
        .1;
    value_at(item, rest, &ty.item())
}

// ---------------------------------------------------------------------------
// Managed fields
// ---------------------------------------------------------------------------

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<String>,
    set: FieldSet,
}

impl Entry {
    /// managedfields.go `BuildManagerIdentifier`: Apply managers are one per
    /// (manager, subresource), Update managers also per apiVersion.
    fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    fn from_json(v: &Value) -> Self {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|x| !x.is_empty())
                .map(String::from),
            time: v.get("time").and_then(Value::as_str).map(String::from),
            set: FieldSet::from_json(v.get("fieldsV1").unwrap_or(&Value::Null)),
        }
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_json(),
        });
        if let Some(t) = &self.time {
            e["time"] = json!(t);
        }
        if let Some(s) = &self.subresource {
            e["subresource"] = json!(s);
        }
        e
    }
}

fn read_entries(obj: Option<&Value>) -> Vec<Entry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Entry::from_json).collect())
        .unwrap_or_default()
}

/// Writes the entries, sorted as `sortEncodedManagedFields` does
/// (operation, time, manager, apiVersion, subresource).
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let Some(o) = obj.as_object_mut() else { return };
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// The part of an applied configuration a request may set: the main
/// resource never sets `.status`; the status subresource only sets
/// `.status` (the strategies' reset fields).
fn scope_config(config: &Value, subresource: Option<&str>) -> Value {
    let mut c = without_managed_fields(config);
    let Some(m) = c.as_object_mut() else {
        return c;
    };
    match subresource {
        None => {
            m.remove("status");
        }
        Some(_) => {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| k == "name" || k == "namespace");
            }
        }
    }
    c
}

/// Server-side apply (`application/apply-patch+yaml`): merges `config` into
/// `live`, removes fields this manager applied before but no longer does
/// (unless another manager owns them), detects conflicts with other
/// managers and records ownership in `metadata.managedFields`.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    now: &str,
    schema: Option<&Value>,
) -> Result<Value, PatchError> {
    if !config.is_object() {
        return Err(PatchError::Invalid(
            "error decoding YAML: the applied configuration is not an object".into(),
        ));
    }
    let ty = Ty::root(schema);
    let config = scope_config(config, subresource);
    let live_v = live.map_or_else(|| json!({}), without_managed_fields);
    let mut entries = read_entries(live);
    let api_version = config
        .get("apiVersion")
        .or_else(|| live_v.get("apiVersion"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let me = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version,
        subresource: subresource.map(String::from),
        time: Some(now.to_string()),
        set: FieldSet::default(),
    };
    let last_set = entries
        .iter()
        .find(|e| e.same_manager(&me))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut new_set = FieldSet::default();
    to_field_set(&config, &ty, &mut new_set);
    strip_ignored(&mut new_set);

    let mut others = FieldSet::default();
    for e in entries.iter().filter(|e| !e.same_manager(&me)) {
        others.union(&e.set);
    }
    let mut merged = merge(&live_v, &config, &ty);
    prune_unapplied(&mut merged, &last_set, &new_set, &others, &ty);

    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    compare(
        Some(&live_v),
        Some(&merged),
        &ty,
        &mut changed,
        &mut removed,
    );
    changed.prune();
    removed.prune();

    let conflicts = find_conflicts(&entries, &me, &changed);
    if !force && !conflicts.is_empty() {
        return Err(PatchError::Conflicts(conflicts));
    }
    // A no-op apply (same object, same fields) leaves the object as it is,
    // timestamps included, so the store does not bump resourceVersion and
    // controllers that apply their status on every reconcile do not wake
    // themselves up (structured-merge-diff returns no object on a no-op).
    if let Some(live) = live
        && changed.is_empty()
        && removed.is_empty()
        && last_set == new_set
    {
        return Ok(live.clone());
    }
    for e in entries.iter_mut().filter(|e| !e.same_manager(&me)) {
        e.set = e.set.difference(&changed).difference(&removed);
    }
    entries.retain(|e| !e.same_manager(&me));
    entries.push(Entry { set: new_set, ..me });
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// update.go `prune`: fields in the manager's previous applied set that it
/// no longer applies are removed, unless another manager owns them; named
/// parents left empty by that go too.
fn prune_unapplied(
    merged: &mut Value,
    last: &FieldSet,
    new: &FieldSet,
    others: &FieldSet,
    ty: &Ty,
) {
    let dropped = last.difference(new);
    let mut paths = dropped.paths();
    paths.retain(|p| !others.owns_at_or_below(p) && !new.owns_at_or_below(p));
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &paths {
        remove_path(merged, p, ty);
    }
    if paths.is_empty() {
        return;
    }
    let mut parents = Vec::new();
    last.inner_paths(&mut Vec::new(), &mut parents);
    parents.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in parents {
        if p.first().map(String::as_str) == Some("f:metadata") && p.len() == 1 {
            continue;
        }
        let empty =
            value_at(merged, &p, ty).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        if empty && !others.owns_at_or_below(&p) && !new.owns_at_or_below(&p) {
            remove_path(merged, &p, ty);
        }
    }
}

fn find_conflicts(entries: &[Entry], me: &Entry, changed: &FieldSet) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut others: Vec<&Entry> = entries.iter().filter(|e| !e.same_manager(me)).collect();
    others.sort_by(|a, b| (&a.manager, &a.operation).cmp(&(&b.manager, &b.operation)));
    for e in others {
        for p in e.set.intersection(changed).paths() {
            out.push(Conflict {
                manager: e.manager.clone(),
                field: path_string(&p),
                operation: e.operation.clone(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
            });
        }
    }
    out
}

/// Records ownership for a create, update or non-apply patch: fields that
/// changed between `old` and `new` become owned by `manager` (operation
/// `Update`, merged into its existing entry for the same apiVersion and
/// subresource) and are taken from every other manager; removed fields are
/// dropped from all managers. A request that changes `managedFields`
/// itself is honoured (an empty list resets them).
pub fn record_update(
    old: Option<&Value>,
    new: Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
    schema: Option<&Value>,
) -> Value {
    let ty = Ty::root(schema);
    let old_entries = read_entries(old);
    let new_mf = new.pointer("/metadata/managedFields").cloned();
    let old_mf = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .cloned();
    let mut entries = match &new_mf {
        Some(Value::Array(a)) if a.is_empty() => Vec::new(),
        Some(v) if Some(v) != old_mf.as_ref() => read_entries(Some(&new)),
        _ => old_entries,
    };
    let old_v = old.map_or_else(|| json!({}), without_managed_fields);
    let mut new_v = without_managed_fields(&new);

    let mut changed = FieldSet::default();
    let mut removed = FieldSet::default();
    compare(Some(&old_v), Some(&new_v), &ty, &mut changed, &mut removed);
    strip_ignored(&mut changed);
    removed.prune();

    let api_version = new_v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let me = Entry {
        manager: manager.to_string(),
        operation: "Update".into(),
        api_version,
        subresource: subresource.map(String::from),
        time: Some(now.to_string()),
        set: FieldSet::default(),
    };
    for e in entries.iter_mut() {
        let owned_by_me = e.same_manager(&me);
        e.set = if owned_by_me {
            e.set.difference(&removed)
        } else {
            e.set.difference(&changed).difference(&removed)
        };
    }
    if !changed.is_empty() {
        let mut set = entries
            .iter()
            .find(|e| e.same_manager(&me))
            .map(|e| e.set.clone())
            .unwrap_or_default();
        set.union(&changed);
        entries.retain(|e| !e.same_manager(&me));
        entries.push(Entry { set, ..me });
    }
    write_entries(&mut new_v, entries);
    new_v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-01T00:01:00Z";

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
            .unwrap()
    }

    #[test]
    fn json_and_merge_patches() {
        let doc = json!({"a": 1, "b": {"c": 2}});
        let p = json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "add", "path": "/b/d", "value": 3}]);
        assert_eq!(
            json_patch(&doc, &p).unwrap(),
            json!({"a": 5, "b": {"c": 2, "d": 3}})
        );
        let bad = json!([{"op": "test", "path": "/a", "value": 9}]);
        assert!(matches!(
            json_patch(&doc, &bad),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            json_patch(&doc, &json!({"op": "x"})),
            Err(PatchError::Invalid(_))
        ));
        assert_eq!(
            merge_patch(&doc, &json!({"a": null, "b": {"e": 1}})),
            json!({"b": {"c": 2, "e": 1}})
        );
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "side", "image": "side:1"},
                ],
                "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
                "tolerations": [{"key": "k"}],
            }}},
        })
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "new", "image": "new:1"},
        ], "tolerations": [{"key": "t"}]}}}});
        let out = strategic_merge_patch(&deployment(), &patch, "Deployment").unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 3);
        assert_eq!(cs[0]["image"], "app:2");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(cs[2]["name"], "new");
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "t"}])
        );
    }

    #[test]
    fn strategic_merge_directives() {
        let patch = json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "containers": [{"name": "side", "$patch": "delete"}],
                "volumes": [{"name": "v", "configMap": {"name": "c"}, "$retainKeys": ["name", "configMap"]}],
                "$setElementOrder/containers": [{"name": "app"}],
            }}},
        });
        let out = strategic_merge_patch(&deployment(), &patch, "Deployment").unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        assert_eq!(
            spec["volumes"],
            json!([{"name": "v", "configMap": {"name": "c"}}])
        );

        let replace = json!({"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"name": "only"}]}}}});
        let out = strategic_merge_patch(&deployment(), &replace, "Deployment").unwrap();
        assert_eq!(
            out["spec"]["template"],
            json!({"spec": {"containers": [{"name": "only"}]}})
        );

        let list_replace = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "x"}]}}}});
        let out = strategic_merge_patch(&deployment(), &list_replace, "Deployment").unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "x"}])
        );

        let null_deletes = json!({"metadata": {"finalizers": null}, "data": {"k": "v"}});
        let out = strategic_merge_patch(&deployment(), &null_deletes, "Deployment").unwrap();
        assert!(out["metadata"].get("finalizers").is_none());
        assert_eq!(out["data"]["k"], "v");

        let missing_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = strategic_merge_patch(&deployment(), &missing_key, "Deployment").unwrap_err();
        assert!(
            err.to_string()
                .contains("does not contain declared merge key: name")
        );
    }

    #[test]
    fn strategic_merge_conditions_by_type() {
        let ns = json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]}});
        let p = json!({"status": {"conditions": [{"type": "B", "status": "True"}]}});
        let out = strategic_merge_patch(&ns, &p, "Namespace").unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "A", "status": "True"}, {"type": "B", "status": "True"}])
        );
    }

    #[test]
    fn apply_create_records_apply_entry() {
        let out = apply(
            None,
            &cm(json!({"foo": "1", "bar": "2"})),
            "kubectl",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        assert_eq!(out["data"], json!({"foo": "1", "bar": "2"}));
        let e = entry(&out, "kubectl");
        assert_eq!(e["operation"], "Apply");
        assert_eq!(e["apiVersion"], "v1");
        assert_eq!(e["time"], T1);
        assert_eq!(e["fieldsType"], "FieldsV1");
        assert_eq!(e["fieldsV1"], json!({"f:data": {"f:foo": {}, "f:bar": {}}}));
        assert!(e.get("subresource").is_none());
    }

    #[test]
    fn noop_apply_returns_the_live_object_unchanged() {
        let v1 = apply(
            None,
            &cm(json!({"foo": "1"})),
            "kubectl",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &cm(json!({"foo": "1"})),
            "kubectl",
            false,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(v1, v2);
        // A second manager applying the same value does record co-ownership.
        let v3 = apply(
            Some(&v1),
            &cm(json!({"foo": "1"})),
            "other",
            false,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(v3["metadata"]["managedFields"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn reapply_removes_omitted_field() {
        let v1 = apply(
            None,
            &cm(json!({"foo": "1", "bar": "2"})),
            "kubectl",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &cm(json!({"foo": "1"})),
            "kubectl",
            false,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(v2["data"], json!({"foo": "1"}));
        assert_eq!(
            entry(&v2, "kubectl")["fieldsV1"],
            json!({"f:data": {"f:foo": {}}})
        );
        assert_eq!(entry(&v2, "kubectl")["time"], T2);
    }

    #[test]
    fn shared_value_is_co_owned_and_kept() {
        let v1 = apply(
            None,
            &cm(json!({"foo": "1", "bar": "2"})),
            "a",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &cm(json!({"foo": "1"})),
            "b",
            false,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(
            entry(&v2, "a")["fieldsV1"],
            json!({"f:data": {"f:foo": {}, "f:bar": {}}})
        );
        assert_eq!(
            entry(&v2, "b")["fieldsV1"],
            json!({"f:data": {"f:foo": {}}})
        );
        // a stops applying foo: b still owns it, so it stays.
        let v3 = apply(
            Some(&v2),
            &cm(json!({"bar": "2"})),
            "a",
            false,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(v3["data"], json!({"foo": "1", "bar": "2"}));
    }

    #[test]
    fn conflict_and_force() {
        let v1 = apply(
            None,
            &cm(json!({"foo": "1"})),
            "kubectl",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        let err = apply(
            Some(&v1),
            &cm(json!({"foo": "2"})),
            "capstan",
            false,
            None,
            T2,
            None,
        )
        .unwrap_err();
        let PatchError::Conflicts(c) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].manager, "kubectl");
        assert_eq!(c[0].field, ".data.foo");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .data.foo"
        );
        let forced = apply(
            Some(&v1),
            &cm(json!({"foo": "2"})),
            "capstan",
            true,
            None,
            T2,
            None,
        )
        .unwrap();
        assert_eq!(forced["data"]["foo"], "2");
        assert_eq!(
            forced["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            entry(&forced, "capstan")["fieldsV1"],
            json!({"f:data": {"f:foo": {}}})
        );
    }

    #[test]
    fn conflict_messages_for_update_managers_and_many() {
        let c = |m: &str, f: &str, op: &str| Conflict {
            manager: m.into(),
            field: f.into(),
            operation: op.into(),
            api_version: "v1".into(),
            subresource: None,
        };
        assert_eq!(
            conflict_message(&[c("kubectl", ".data.foo", "Update")]),
            "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.foo"
        );
        assert_eq!(
            conflict_message(&[
                c("b", ".x", "Apply"),
                c("a", ".y", "Update"),
                c("b", ".z", "Apply")
            ]),
            "Apply failed with 3 conflicts: conflicts with \"a\" using v1:\n- .y\nconflicts with \"b\":\n- .x\n- .z"
        );
        let mut s = c("kcm", ".status", "Update");
        s.subresource = Some("status".into());
        assert_eq!(s.describe(), "\"kcm\" with subresource \"status\" using v1");
    }

    fn cr_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "list": {"type": "array", "items": {"type": "string"}}}},
            "status": {"type": "object", "properties": {"conditions": {
                "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}, "status": {"type": "string"}, "message": {"type": "string"}}},
            }}},
        }})
    }

    fn cr(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "capstan.dev/v1", "kind": "Thing", "metadata": {"name": "t", "namespace": "n"}, "spec": spec, "status": status})
    }

    #[test]
    fn status_apply_merges_conditions_per_type() {
        let schema = cr_schema();
        let live = apply(
            None,
            &cr(json!({"a": "x"}), json!({"ignored": true})),
            "user",
            false,
            None,
            T1,
            Some(&schema),
        )
        .unwrap();
        assert!(live.get("status").is_none(), "main apply ignores status");
        let s1 = apply(
            Some(&live),
            &cr(
                json!({"a": "evil"}),
                json!({"conditions": [{"type": "Ready", "status": "False"}]}),
            ),
            "ctrl-a",
            false,
            Some("status"),
            T1,
            Some(&schema),
        )
        .unwrap();
        assert_eq!(s1["spec"]["a"], "x", "status apply ignores spec");
        let s2 = apply(
            Some(&s1),
            &cr(
                json!({}),
                json!({"conditions": [{"type": "Issued", "status": "True"}]}),
            ),
            "ctrl-b",
            false,
            Some("status"),
            T2,
            Some(&schema),
        )
        .unwrap();
        assert_eq!(
            s2["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}, {"type": "Issued", "status": "True"}])
        );
        let a = entry(&s2, "ctrl-a");
        assert_eq!(a["subresource"], "status");
        assert_eq!(
            a["fieldsV1"],
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
        );
        let err = apply(
            Some(&s2),
            &cr(
                json!({}),
                json!({"conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            "ctrl-b",
            false,
            Some("status"),
            T2,
            Some(&schema),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"ctrl-a\" with subresource \"status\": .status.conditions[type=\"Ready\"].status"
        );
        let ok = apply(Some(&s2), &cr(json!({}), json!({"conditions": [{"type": "Ready", "status": "False"}, {"type": "Issued", "status": "True"}]})), "ctrl-b", false, Some("status"), T2, Some(&schema)).unwrap();
        assert_eq!(ok["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn custom_resource_metadata_is_typed_as_object_meta() {
        let schema = json!({"type": "object", "properties": {"metadata": {"type": "object"}, "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
        let cfg = json!({"apiVersion": "capstan.dev/v1", "kind": "Thing",
            "metadata": {"name": "t", "labels": {"app": "x"}, "finalizers": ["f"]}, "spec": {"free": {"a": 1}}});
        let out = apply(None, &cfg, "m", false, None, T1, Some(&schema)).unwrap();
        assert_eq!(
            entry(&out, "m")["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:app": {}}, "f:finalizers": {"v:\"f\"": {}}}, "f:spec": {"f:free": {".": {}, "f:a": {}}}})
        );
    }

    #[test]
    fn atomic_list_and_reapply_drops_empty_parent() {
        let schema = cr_schema();
        let v1 = apply(
            None,
            &cr(json!({"a": "x", "list": ["p", "q"]}), json!(null)),
            "m",
            false,
            None,
            T1,
            Some(&schema),
        )
        .unwrap();
        assert_eq!(
            entry(&v1, "m")["fieldsV1"],
            json!({"f:spec": {"f:a": {}, "f:list": {}}})
        );
        let v2 = apply(
            Some(&v1),
            &json!({"apiVersion": "capstan.dev/v1", "kind": "Thing", "metadata": {"name": "t"}}),
            "m",
            false,
            None,
            T2,
            Some(&schema),
        )
        .unwrap();
        assert!(v2.get("spec").is_none(), "{v2}");
        assert!(v2["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn record_update_moves_ownership() {
        let v1 = apply(
            None,
            &cm(json!({"foo": "1", "bar": "2"})),
            "kubectl",
            false,
            None,
            T1,
            None,
        )
        .unwrap();
        let mut edited = v1.clone();
        edited["data"]["foo"] = json!("changed");
        edited["data"]["baz"] = json!("3");
        let v2 = record_update(Some(&v1), edited, "editor", None, T2, None);
        assert_eq!(
            entry(&v2, "kubectl")["fieldsV1"],
            json!({"f:data": {"f:bar": {}}})
        );
        let e = entry(&v2, "editor");
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["apiVersion"], "v1");
        assert_eq!(e["fieldsV1"], json!({"f:data": {"f:foo": {}, "f:baz": {}}}));
        // Apply entries sort before Update entries.
        assert_eq!(v2["metadata"]["managedFields"][0]["operation"], "Apply");
        // kubectl now conflicts on foo with the Update manager.
        let err = apply(
            Some(&v2),
            &cm(json!({"foo": "1", "bar": "2"})),
            "kubectl",
            false,
            None,
            T2,
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.foo"
        );
    }

    #[test]
    fn record_update_on_create_and_status() {
        let schema = cr_schema();
        let created = record_update(
            None,
            cr(json!({"a": "x"}), json!(null)),
            "ctrl",
            None,
            T1,
            Some(&schema),
        );
        let e = entry(&created, "ctrl");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:spec": {".": {}, "f:a": {}}, "f:status": {}})
        );
        let mut st = created.clone();
        st["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let updated = record_update(
            Some(&created),
            st,
            "ctrl",
            Some("status"),
            T2,
            Some(&schema),
        );
        let entries = updated["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let s = entries
            .iter()
            .find(|e| e["subresource"] == "status")
            .unwrap();
        assert_eq!(
            s["fieldsV1"]["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"],
            json!({".": {}, "f:type": {}, "f:status": {}})
        );
        // A no-op update changes nothing.
        let same = record_update(
            Some(&updated),
            updated.clone(),
            "other",
            None,
            T2,
            Some(&schema),
        );
        assert_eq!(
            same["metadata"]["managedFields"],
            updated["metadata"]["managedFields"]
        );
        // An explicit empty list resets managed fields.
        let mut reset = updated.clone();
        reset["metadata"]["managedFields"] = json!([]);
        let r = record_update(Some(&updated), reset, "x", None, T2, Some(&schema));
        assert!(r["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn builtin_schema_lists_are_associative_in_apply() {
        use k8s_openapi::api::apps::v1::Deployment;
        let schema = super::super::schema::builtin_schema::<Deployment>();
        let cfg = |image: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"app": "x"}},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
        };
        let v1 = apply(None, &cfg("a:1"), "kubectl", false, None, T1, Some(&schema)).unwrap();
        let f = &entry(&v1, "kubectl")["fieldsV1"];
        assert_eq!(f["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(f["f:spec"]["f:selector"], json!({}));
        assert_eq!(
            f["f:spec"]["f:template"]["f:spec"]["f:containers"],
            json!({"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}})
        );
        let mut with_side = v1.clone();
        with_side["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "s:1"}));
        let v2 = record_update(Some(&v1), with_side, "injector", None, T2, Some(&schema));
        let v3 = apply(
            Some(&v2),
            &cfg("a:2"),
            "kubectl",
            false,
            None,
            T2,
            Some(&schema),
        )
        .unwrap();
        let cs = v3["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
    }
}
