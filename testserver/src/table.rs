//! Server-side `meta.k8s.io/v1` Table printing, as kube-apiserver does it for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (what `kubectl get`
//! asks for).
//!
//! Built-in kinds follow `pkg/printers/internalversion/printers.go`; the
//! server always generates the wide rows (`GenerateOptions{Wide: true}` in
//! `pkg/printers/storage/storage.go`) and kubectl hides columns with
//! priority > 0 unless `-o wide`. Kinds without a printer use the default
//! convertor (`k8s.io/apiserver/pkg/registry/rest/table.go`: Name, Created
//! At). Custom resources follow apiextensions-apiserver
//! `pkg/registry/customresource/tableconvertor/tableconvertor.go`. Row
//! objects follow `?includeObject=` (`k8s.io/apiserver/pkg/endpoints/handlers/response.go`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `None`: rows carry no object (`"object": null`).
    None,
    /// `Metadata` (the default): a `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the full object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter value; `None` when it is not one of the three.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "None" => Some(Self::None),
            "" | "Metadata" => Some(Self::Metadata),
            "Object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// Where the columns come from.
#[derive(Debug, Clone, Copy)]
pub enum TableSource<'a> {
    /// A built-in resource, printed by printers.go.
    Builtin {
        /// API group (`""` for core).
        group: &'a str,
        /// Plural resource name.
        resource: &'a str,
    },
    /// A custom resource, printed from its CRD version's columns.
    Custom {
        /// The version's `additionalPrinterColumns` (an array, may be empty).
        printer_columns: &'a Value,
    },
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Builds the Table for `items` (a list's items, or one object).
pub fn to_table(
    source: TableSource,
    items: &[Value],
    include: IncludeObject,
    list_metadata: &Value,
    now: SystemTime,
) -> Value {
    let (columns, rows): (Vec<Value>, Vec<Vec<Value>>) = match source {
        TableSource::Builtin { group, resource } => {
            let printer = builtin_printer(group, resource);
            (
                printer.columns(),
                items.iter().map(|o| printer.cells(o, now)).collect(),
            )
        }
        TableSource::Custom { printer_columns } => {
            let cols = custom_columns(printer_columns);
            (
                custom_column_definitions(&cols),
                items.iter().map(|o| custom_cells(&cols, o, now)).collect(),
            )
        }
    };
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(items)
        .map(|(cells, obj)| json!({"cells": cells, "object": row_object(obj, include)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": table_metadata(list_metadata),
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The Table's ListMeta: resourceVersion, continue, remainingItemCount.
fn table_metadata(list_metadata: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for key in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = list_metadata.get(key)
            && !v.is_null()
            && v != ""
        {
            m.insert(key.into(), v.clone());
        }
    }
    Value::Object(m)
}

/// `response.go` `asTable`: Metadata rows carry a PartialObjectMetadata.
fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

fn column(name: &str, ty: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column("Name", "string", "name", NAME_DOC, 0)
}

fn age_column() -> Value {
    column("Age", "string", "", CREATED_DOC, 0)
}

/// The built-in printers capstan's resources need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Event,
    Secret,
    ConfigMap,
    Namespace,
    Deployment,
    StatefulSet,
    DaemonSet,
    Csr,
    Lease,
    Default,
}

fn builtin_printer(group: &str, resource: &str) -> Printer {
    match (group, resource) {
        ("" | "events.k8s.io", "events") => Printer::Event,
        ("", "secrets") => Printer::Secret,
        ("", "configmaps") => Printer::ConfigMap,
        ("", "namespaces") => Printer::Namespace,
        ("apps", "deployments") => Printer::Deployment,
        ("apps", "statefulsets") => Printer::StatefulSet,
        ("apps", "daemonsets") => Printer::DaemonSet,
        ("certificates.k8s.io", "certificatesigningrequests") => Printer::Csr,
        ("coordination.k8s.io", "leases") => Printer::Lease,
        _ => Printer::Default,
    }
}

impl Printer {
    fn columns(self) -> Vec<Value> {
        let s = |n: &str, d: &str| column(n, "string", "", d, 0);
        let wide = |n: &str, d: &str| column(n, "string", "", d, 1);
        let int = |n: &str, d: &str| column(n, "integer", "", d, 0);
        match self {
            Printer::Event => vec![
                s(
                    "Last Seen",
                    "The time at which the most recent occurrence of this event was recorded.",
                ),
                s(
                    "Type",
                    "Type of this event (Normal, Warning), new types could be added in the future",
                ),
                s(
                    "Reason",
                    "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                ),
                s("Object", "The object that this event is about."),
                wide(
                    "Subobject",
                    "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
                ),
                wide(
                    "Source",
                    "The component reporting this event. Should be a short machine understandable string.",
                ),
                s(
                    "Message",
                    "A human-readable description of the status of this operation.",
                ),
                wide(
                    "First Seen",
                    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
                ),
                wide("Count", "The number of times this event has occurred."),
                column("Name", "string", "name", NAME_DOC, 1),
            ],
            Printer::Secret => vec![
                name_column(),
                s(
                    "Type",
                    "Used to facilitate programmatic handling of secret data.",
                ),
                s("Data", "Data contains the secret data."),
                age_column(),
            ],
            Printer::ConfigMap => vec![
                name_column(),
                s("Data", "Data contains the configuration data."),
                age_column(),
            ],
            Printer::Namespace => vec![
                name_column(),
                s("Status", "The status of the namespace"),
                age_column(),
            ],
            Printer::Deployment => vec![
                name_column(),
                s("Ready", "Number of the pod with ready state"),
                int(
                    "Up-to-date",
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                int(
                    "Available",
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age_column(),
                wide("Containers", "Names of each container in the template."),
                wide(
                    "Images",
                    "Images referenced by each container in the template.",
                ),
                wide(
                    "Selector",
                    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
                ),
            ],
            Printer::StatefulSet => vec![
                name_column(),
                s("Ready", "Number of the pod with ready state"),
                age_column(),
                wide("Containers", "Names of each container in the template."),
                wide(
                    "Images",
                    "Images referenced by each container in the template.",
                ),
            ],
            Printer::DaemonSet => vec![
                name_column(),
                int(
                    "Desired",
                    "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
                ),
                int(
                    "Current",
                    "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
                ),
                int(
                    "Ready",
                    "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
                ),
                int(
                    "Up-to-date",
                    "The total number of nodes that are running updated daemon pod",
                ),
                int(
                    "Available",
                    "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
                ),
                s(
                    "Node Selector",
                    "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.",
                ),
                age_column(),
                wide("Containers", "Names of each container in the template."),
                wide(
                    "Images",
                    "Images referenced by each container in the template.",
                ),
                wide(
                    "Selector",
                    "A label query over pods that are managed by the daemon set.",
                ),
            ],
            Printer::Csr => vec![
                name_column(),
                age_column(),
                s(
                    "SignerName",
                    "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`.",
                ),
                s("Requestor", "Name of the user who requested the CSR."),
                s(
                    "RequestedDuration",
                    "expirationSeconds is the requested duration of validity of the issued certificate.",
                ),
                s(
                    "Condition",
                    "Conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
                ),
            ],
            Printer::Lease => vec![
                name_column(),
                s(
                    "Holder",
                    "holderIdentity contains the identity of the holder of a current lease.",
                ),
                age_column(),
            ],
            Printer::Default => vec![
                name_column(),
                column("Created At", "date", "", CREATED_DOC, 0),
            ],
        }
    }

    fn cells(self, o: &Value, now: SystemTime) -> Vec<Value> {
        let name = json!(str_at(o, "/metadata/name"));
        let age = json!(age_of(o.pointer("/metadata/creationTimestamp"), now));
        match self {
            Printer::Event => event_cells(o, now),
            Printer::Secret => vec![
                name,
                json!(str_at(o, "/type")),
                json!(len_at(o, "/data")),
                age,
            ],
            Printer::ConfigMap => vec![
                name,
                json!(len_at(o, "/data") + len_at(o, "/binaryData")),
                age,
            ],
            Printer::Namespace => vec![name, json!(str_at(o, "/status/phase")), age],
            Printer::Deployment => {
                let (containers, images) = container_cells(o);
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        int_at(o, "/status/readyReplicas"),
                        replicas(o)
                    )),
                    json!(int_at(o, "/status/updatedReplicas")),
                    json!(int_at(o, "/status/availableReplicas")),
                    age,
                    json!(containers),
                    json!(images),
                    json!(selector_string(o.pointer("/spec/selector"))),
                ]
            }
            Printer::StatefulSet => {
                let (containers, images) = container_cells(o);
                vec![
                    name,
                    json!(format!(
                        "{}/{}",
                        int_at(o, "/status/readyReplicas"),
                        replicas(o)
                    )),
                    age,
                    json!(containers),
                    json!(images),
                ]
            }
            Printer::DaemonSet => {
                let (containers, images) = container_cells(o);
                vec![
                    name,
                    json!(int_at(o, "/status/desiredNumberScheduled")),
                    json!(int_at(o, "/status/currentNumberScheduled")),
                    json!(int_at(o, "/status/numberReady")),
                    json!(int_at(o, "/status/updatedNumberScheduled")),
                    json!(int_at(o, "/status/numberAvailable")),
                    json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
                    age,
                    json!(containers),
                    json!(images),
                    json!(selector_string(o.pointer("/spec/selector"))),
                ]
            }
            Printer::Csr => csr_cells(o, name, age),
            Printer::Lease => vec![name, json!(str_at(o, "/spec/holderIdentity")), age],
            Printer::Default => vec![name, json!(str_at(o, "/metadata/creationTimestamp"))],
        }
    }
}

fn str_at<'a>(o: &'a Value, ptr: &str) -> &'a str {
    o.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int_at(o: &Value, ptr: &str) -> i64 {
    o.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn len_at(o: &Value, ptr: &str) -> usize {
    o.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// `spec.replicas` is defaulted to 1 by the apps/v1 defaulters.
fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// printers.go `layoutContainerCells`: names and images joined by commas.
fn container_cells(o: &Value) -> (String, String) {
    let containers = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// apimachinery `labels.FormatLabels`: sorted `k=v` joined by commas, `<none>` if empty.
fn format_labels(m: Option<&Value>) -> String {
    let pairs: BTreeMap<&str, &str> = m
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key.
fn selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = str_at(e, "/key").to_string();
            let mut values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let s = match str_at(e, "/operator") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                "DoesNotExist" => format!("!{key}"),
                _ => return "<invalid>".into(),
            };
            reqs.push((key, s));
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// printers.go `printCertificateSigningRequest` and `extractCSRStatus`.
fn csr_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let signer = match str_at(o, "/spec/signerName") {
        "" => "<none>".to_string(),
        s => s.to_string(),
    };
    let duration = match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
        Some(s) => human_duration(Duration::from_secs(s.max(0).unsigned_abs()).as_secs_f64()),
        None => "<none>".into(),
    };
    let conditions = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c["type"] == t);
    let mut status = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(o, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    vec![
        name,
        age,
        json!(signer),
        json!(str_at(o, "/spec/username")),
        json!(duration),
        json!(status),
    ]
}

/// printers.go `printEvent` (wide). events.k8s.io/v1 Events are printed by
/// the same function after conversion to the internal Event, so their
/// fields are read under their v1 names too (`regarding`, `note`,
/// `deprecated*`).
fn event_cells(o: &Value, now: SystemTime) -> Vec<Value> {
    let pick = |a: &str, b: &str| -> Option<Value> {
        o.pointer(a)
            .filter(|v| !v.is_null())
            .or_else(|| o.pointer(b).filter(|v| !v.is_null()))
            .cloned()
    };
    let event_time = o.pointer("/eventTime").filter(|v| !v.is_null());
    let first = match pick("/firstTimestamp", "/deprecatedFirstTimestamp") {
        Some(t) => age_of(Some(&t), now),
        None => age_of(event_time, now),
    };
    let mut last = match pick("/lastTimestamp", "/deprecatedLastTimestamp") {
        Some(t) => age_of(Some(&t), now),
        None => first.clone(),
    };
    let mut count = pick("/count", "/deprecatedCount")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    if let Some(series) = o.get("series").filter(|s| s.is_object()) {
        last = age_of(series.get("lastObservedTime"), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }
    let involved = pick("/involvedObject", "/regarding").unwrap_or(Value::Null);
    let kind = str_at(&involved, "/kind").to_lowercase();
    let target = match str_at(&involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = pick("/source", "/deprecatedSource").unwrap_or(Value::Null);
    let component = first_non_empty(
        str_at(&source, "/component"),
        str_at(o, "/reportingController"),
    );
    let instance = first_non_empty(str_at(&source, "/host"), str_at(o, "/reportingInstance"));
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    let message = pick("/message", "/note")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    vec![
        json!(last),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(target),
        json!(str_at(&involved, "/fieldPath")),
        json!(source),
        json!(message.trim()),
        json!(first),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// printers.go `translateTimestampSince`: `<unknown>` for a zero time,
/// otherwise `duration.HumanDuration(time.Since(t))`.
fn age_of(ts: Option<&Value>, now: SystemTime) -> String {
    let Some(t) = ts.and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return "<unknown>".into();
    };
    match seconds_since(t, now) {
        Some(d) => human_duration(d),
        None => "<invalid>".into(),
    }
}

/// Seconds from the RFC 3339 time `t` to `now` (negative if in the future).
fn seconds_since(t: &str, now: SystemTime) -> Option<f64> {
    let ts: k8s_openapi::jiff::Timestamp = t.parse().ok()?;
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let then = ts.as_second() as f64 + f64::from(ts.subsec_nanosecond()) / 1e9;
    Some(now - then)
}

/// apimachinery `pkg/util/duration.HumanDuration`, with its rounding
/// (integer division at each unit) and its 2-second tolerance for clocks
/// slightly in the future.
pub fn human_duration(secs: f64) -> String {
    let seconds = secs.trunc() as i64;
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// One CRD printer column.
struct CustomColumn {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    path: Vec<Step>,
}

/// The CRD's columns; with none, apiextensions defaulting adds
/// `Age` (`type: date`, `.metadata.creationTimestamp`).
fn custom_columns(printer_columns: &Value) -> Vec<CustomColumn> {
    let defs = printer_columns.as_array().cloned().unwrap_or_default();
    let defs = if defs.is_empty() {
        vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
    } else {
        defs
    };
    defs.iter()
        .map(|c| {
            let json_path = str_at(c, "/jsonPath");
            let description = match str_at(c, "/description") {
                "" => {
                    format!("Custom resource definition column (in JSONPath format): {json_path}")
                }
                d => d.to_string(),
            };
            CustomColumn {
                name: str_at(c, "/name").into(),
                ty: str_at(c, "/type").into(),
                format: str_at(c, "/format").into(),
                description,
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                path: parse_json_path(json_path),
            }
        })
        .collect()
}

fn custom_column_definitions(cols: &[CustomColumn]) -> Vec<Value> {
    let mut out = vec![name_column()];
    out.extend(
        cols.iter()
            .map(|c| column(&c.name, &c.ty, &c.format, &c.description, c.priority)),
    );
    out
}

/// tableconvertor.go: the first JSONPath result, typed by the column type
/// (`cellForJSONValue`), `null` when missing.
fn custom_cells(cols: &[CustomColumn], o: &Value, now: SystemTime) -> Vec<Value> {
    let mut cells = vec![json!(str_at(o, "/metadata/name"))];
    for c in cols {
        let found = eval_json_path(&c.path, o);
        let cell = match found.first() {
            None => Value::Null,
            Some(v) => cell_for(&c.ty, v, now),
        };
        cells.push(cell);
    }
    cells
}

fn cell_for(ty: &str, v: &Value, now: SystemTime) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        // jsonpath's PrintResults prints non-strings as JSON.
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .map(|i| json!(i))
            .or_else(|| n.as_f64().map(|f| json!(f as i64)))
            .unwrap_or(Value::Null),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match seconds_since(s, now) {
            Some(d) => json!(human_duration(d)),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// A step of the simple JSONPath CRD columns allow.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    Wildcard,
    /// `[?(@.a.b == "v")]`
    Filter(Vec<String>, Value),
}

fn parse_json_path(path: &str) -> Vec<Step> {
    let p = path.trim().trim_start_matches('{').trim_end_matches('}');
    let chars: Vec<char> = p.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name == "*" {
                    steps.push(Step::Wildcard);
                } else if !name.is_empty() {
                    steps.push(Step::Field(name));
                }
            }
            '[' => {
                let end = find_bracket_end(&chars, i);
                let inner: String = chars[i + 1..end].iter().collect();
                steps.push(parse_bracket(inner.trim()));
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    steps
}

fn find_bracket_end(chars: &[char], start: usize) -> usize {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(start) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    chars.len().saturating_sub(1).max(start)
}

fn parse_bracket(inner: &str) -> Step {
    if inner == "*" {
        return Step::Wildcard;
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Step::Index(n);
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|s| s.strip_suffix(')'))
        && let Some((lhs, rhs)) = f.split_once("==")
    {
        let field: Vec<String> = lhs
            .trim()
            .trim_start_matches('@')
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let rhs = rhs.trim();
        let value = if let Some(s) = rhs
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .or_else(|| rhs.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        {
            json!(s)
        } else {
            serde_json::from_str(rhs).unwrap_or_else(|_| json!(rhs))
        };
        return Step::Filter(field, value);
    }
    let name = inner.trim_matches(|c| c == '\'' || c == '"');
    Step::Field(name.to_string())
}

fn eval_json_path<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut cur: Vec<&Value> = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(n) => next.extend(v.get(*n)),
                Step::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(field, want) => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|item| {
                            field
                                .iter()
                                .try_fold(*item, |x, f| x.get(f.as_str()))
                                .is_some_and(|got| got == want)
                        }));
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        let t: k8s_openapi::jiff::Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_second().unsigned_abs())
    }

    fn names(t: &Value) -> Vec<String> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn builtin(group: &str, resource: &str, items: &[Value]) -> Value {
        to_table(
            TableSource::Builtin { group, resource },
            items,
            IncludeObject::Metadata,
            &json!({"resourceVersion": "42"}),
            now(),
        )
    }

    #[test]
    fn human_durations_match_apimachinery() {
        assert_eq!(human_duration(-5.0), "<invalid>");
        assert_eq!(human_duration(-0.5), "0s");
        assert_eq!(human_duration(59.0), "59s");
        assert_eq!(human_duration(119.0), "119s");
        assert_eq!(human_duration(300.0), "5m");
        assert_eq!(human_duration(330.0), "5m30s");
        assert_eq!(human_duration(3.0 * 3600.0 + 120.0), "3h2m");
        assert_eq!(human_duration(10.0 * 3600.0), "10h");
        assert_eq!(human_duration(50.0 * 3600.0), "2d2h");
        assert_eq!(human_duration(30.0 * 86400.0), "30d");
        assert_eq!(human_duration(800.0 * 86400.0), "2y70d");
    }

    #[test]
    fn events_print_like_kubectl_get_events() {
        let ev = json!({
            "metadata": {"name": "x.1", "namespace": "default", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "involvedObject": {"kind": "Secret", "name": "tls", "fieldPath": ""},
            "reason": "Issued", "type": "Normal", "message": "Certificate issued \n",
            "source": {"component": "capstan-issuer"},
            "firstTimestamp": "2026-01-01T11:00:00Z", "lastTimestamp": "2026-01-01T11:55:00Z", "count": 3,
        });
        let t = builtin("", "events", &[ev]);
        assert_eq!(
            names(&t),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "5m",
                "Normal",
                "Issued",
                "secret/tls",
                "",
                "capstan-issuer",
                "Certificate issued",
                "60m",
                3,
                "x.1"
            ])
        );
        assert_eq!(t["columnDefinitions"][4]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "42");
    }

    #[test]
    fn events_v1_series_and_reporting_controller() {
        let ev = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "CertificateRequest", "name": "cr"},
            "reason": "Failed", "type": "Warning", "note": "boom",
            "reportingController": "capstan", "reportingInstance": "pod-1",
            "eventTime": "2026-01-01T11:58:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2026-01-01T11:59:30.000000Z"},
        });
        let t = builtin("events.k8s.io", "events", &[ev]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "30s");
        assert_eq!(cells[3], "certificaterequest/cr");
        assert_eq!(cells[5], "capstan, pod-1");
        assert_eq!(cells[6], "boom");
        assert_eq!(cells[7], "2m");
        assert_eq!(cells[8], 7);
    }

    #[test]
    fn secrets_configmaps_namespaces_leases() {
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": "2026-01-01T09:00:00Z"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        let t = builtin("", "secrets", &[secret]);
        assert_eq!(names(&t), ["Name", "Type", "Data", "Age"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["s", "kubernetes.io/tls", 2, "3h"])
        );

        let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2026-01-01T11:58:00Z"}, "data": {"a": "1"}, "binaryData": {"b": ""}});
        let t = builtin("", "configmaps", &[cm]);
        assert_eq!(names(&t), ["Name", "Data", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["c", 2, "2m"]));

        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2025-12-01T12:00:00Z"}, "status": {"phase": "Active"}});
        let t = builtin("", "namespaces", &[ns]);
        assert_eq!(t["rows"][0]["cells"], json!(["default", "Active", "31d"]));

        let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "pod-a"}});
        let t = builtin("coordination.k8s.io", "leases", &[lease]);
        assert_eq!(names(&t), ["Name", "Holder", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["l", "pod-a", "<unknown>"]));
    }

    #[test]
    fn workloads() {
        let template = json!({"spec": {"containers": [{"name": "a", "image": "img:1"}, {"name": "b", "image": "img:2"}], "nodeSelector": {"os": "linux"}}});
        let deploy = json!({
            "metadata": {"name": "d", "creationTimestamp": "2026-01-01T11:00:00Z"},
            "spec": {"replicas": 2, "template": template, "selector": {"matchLabels": {"app": "x"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1},
        });
        let t = builtin("apps", "deployments", &[deploy]);
        assert_eq!(
            names(&t),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "d",
                "1/2",
                2,
                1,
                "60m",
                "a,b",
                "img:1,img:2",
                "app=x,tier in (a,b)"
            ])
        );

        let sts = json!({"metadata": {"name": "s"}, "spec": {"template": template}, "status": {"readyReplicas": 1}});
        let t = builtin("apps", "statefulsets", &[sts]);
        assert_eq!(names(&t), ["Name", "Ready", "Age", "Containers", "Images"]);
        assert_eq!(t["rows"][0]["cells"][1], "1/1");

        let ds = json!({"metadata": {"name": "ds"}, "spec": {"template": template, "selector": {"matchLabels": {"app": "y"}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let t = builtin("apps", "daemonsets", &[ds]);
        assert_eq!(names(&t)[6], "Node Selector");
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "ds",
                3,
                3,
                2,
                3,
                2,
                "os=linux",
                "<unknown>",
                "a,b",
                "img:1,img:2",
                "app=y"
            ])
        );
    }

    #[test]
    fn csr_condition_and_duration() {
        let csr = json!({
            "metadata": {"name": "csr-1", "creationTimestamp": "2026-01-01T11:59:00Z"},
            "spec": {"signerName": "capstan.dev/ca", "username": "system:admin", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"},
        });
        let t = builtin("certificates.k8s.io", "certificatesigningrequests", &[csr]);
        assert_eq!(
            names(&t),
            [
                "Name",
                "Age",
                "SignerName",
                "Requestor",
                "RequestedDuration",
                "Condition"
            ]
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "csr-1",
                "60s",
                "capstan.dev/ca",
                "system:admin",
                "24h",
                "Approved,Issued"
            ])
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {}});
        let t = builtin(
            "certificates.k8s.io",
            "certificatesigningrequests",
            &[pending],
        );
        assert_eq!(t["rows"][0]["cells"][2], "<none>");
        assert_eq!(t["rows"][0]["cells"][5], "Pending");
    }

    #[test]
    fn default_printer_for_crds() {
        let crd = json!({"metadata": {"name": "issuers.cert-manager.io", "creationTimestamp": "2026-01-01T10:00:00Z"}});
        let t = builtin("apiextensions.k8s.io", "customresourcedefinitions", &[crd]);
        assert_eq!(names(&t), ["Name", "Created At"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["issuers.cert-manager.io", "2026-01-01T10:00:00Z"])
        );
    }

    fn cert_manager_columns() -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/cert-manager-crds/cert-manager.io_certificaterequests.yaml"
        ))
        .unwrap();
        let crd: Value = serde_norway::from_str(&text).unwrap();
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap()["additionalPrinterColumns"]
            .clone()
    }

    #[test]
    fn certificate_request_printer_columns() {
        let cols = cert_manager_columns();
        let cr = json!({
            "metadata": {"name": "cr-1", "namespace": "default", "creationTimestamp": "2026-01-01T11:57:00Z"},
            "spec": {"issuerRef": {"name": "capstan-ca"}, "username": "system:serviceaccount:cm:cm", "request": "LS0t"},
            "status": {"conditions": [
                {"type": "Approved", "status": "True", "message": "ok"},
                {"type": "Ready", "status": "False", "message": "Waiting on signing"},
            ]},
        });
        let t = to_table(
            TableSource::Custom {
                printer_columns: &cols,
            },
            &[cr],
            IncludeObject::Object,
            &json!({"resourceVersion": "7", "continue": ""}),
            now(),
        );
        assert_eq!(
            names(&t),
            [
                "Name",
                "Approved",
                "Denied",
                "Ready",
                "Issuer",
                "Requester",
                "Status",
                "Age"
            ]
        );
        assert_eq!(t["columnDefinitions"][6]["priority"], 1);
        assert_eq!(t["columnDefinitions"][7]["type"], "date");
        assert_eq!(
            t["columnDefinitions"][1]["description"],
            "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type == \"Approved\")].status"
        );
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "cr-1",
                "True",
                null,
                "False",
                "capstan-ca",
                "system:serviceaccount:cm:cm",
                "Waiting on signing",
                "3m"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["spec"]["request"], "LS0t");
        assert_eq!(t["metadata"], json!({"resourceVersion": "7"}));
    }

    #[test]
    fn crd_without_columns_gets_age_and_none_include() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T11:59:59Z"}, "spec": {"n": 3}});
        let t = to_table(
            TableSource::Custom {
                printer_columns: &json!([]),
            },
            &[obj],
            IncludeObject::None,
            &json!({}),
            now(),
        );
        assert_eq!(names(&t), ["Name", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["x", "1s"]));
        assert!(t["rows"][0]["object"].is_null());
        let cols = json!([{"name": "N", "type": "integer", "jsonPath": ".spec.n"}, {"name": "B", "type": "boolean", "jsonPath": ".spec.missing"}]);
        let obj = json!({"metadata": {"name": "x"}, "spec": {"n": 3}});
        let t = to_table(
            TableSource::Custom {
                printer_columns: &cols,
            },
            &[obj],
            IncludeObject::Metadata,
            &json!({}),
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["x", 3, null]));
    }

    #[test]
    fn include_object_parses() {
        assert_eq!(IncludeObject::parse(""), Some(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("x"), None);
    }
}
