//! The registry of served resource types: the built-in kinds and the kinds of
//! every established CustomResourceDefinition, with what discovery, the
//! handlers and validation need to know about each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::schema;

/// The built-in kinds the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event.
    Event,
    /// events.k8s.io/v1 Event (stored as core/v1 Events).
    EventV1,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// certificates.k8s.io/v1 CertificateSigningRequest.
    Csr,
    /// authentication.k8s.io/v1 TokenReview.
    TokenReview,
    /// authorization.k8s.io/v1 SubjectAccessReview.
    SubjectAccessReview,
    /// authorization.k8s.io/v1 SelfSubjectAccessReview.
    SelfSubjectAccessReview,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition.
    Crd,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// core/v1 Service.
    Service,
    /// rbac.authorization.k8s.io/v1 Role.
    Role,
    /// rbac.authorization.k8s.io/v1 ClusterRole.
    ClusterRole,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
    /// rbac.authorization.k8s.io/v1 ClusterRoleBinding.
    ClusterRoleBinding,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// apps/v1 ReplicaSet (served so status readers such as kstatus can
    /// look for a Deployment's ReplicaSets).
    ReplicaSet,
    /// core/v1 Pod (served, never run).
    Pod,
}

macro_rules! per_builtin {
    ($b:expr, $f:ident) => {
        match $b {
            Builtin::Namespace => $f::<Namespace>(),
            Builtin::Secret => $f::<Secret>(),
            Builtin::ConfigMap => $f::<ConfigMap>(),
            Builtin::Event => $f::<Event>(),
            Builtin::EventV1 => $f::<k8s_openapi::api::events::v1::Event>(),
            Builtin::Lease => $f::<Lease>(),
            Builtin::Deployment => $f::<Deployment>(),
            Builtin::StatefulSet => $f::<StatefulSet>(),
            Builtin::DaemonSet => $f::<DaemonSet>(),
            Builtin::Csr => $f::<CertificateSigningRequest>(),
            Builtin::TokenReview => $f::<TokenReview>(),
            Builtin::SubjectAccessReview => $f::<SubjectAccessReview>(),
            Builtin::SelfSubjectAccessReview => $f::<SelfSubjectAccessReview>(),
            Builtin::Crd => $f::<CustomResourceDefinition>(),
            Builtin::ServiceAccount => $f::<k8s_openapi::api::core::v1::ServiceAccount>(),
            Builtin::Service => $f::<k8s_openapi::api::core::v1::Service>(),
            Builtin::Role => $f::<k8s_openapi::api::rbac::v1::Role>(),
            Builtin::ClusterRole => $f::<k8s_openapi::api::rbac::v1::ClusterRole>(),
            Builtin::RoleBinding => $f::<k8s_openapi::api::rbac::v1::RoleBinding>(),
            Builtin::ClusterRoleBinding => $f::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(),
            Builtin::PodDisruptionBudget => {
                $f::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
            }
            Builtin::NetworkPolicy => $f::<k8s_openapi::api::networking::v1::NetworkPolicy>(),
            Builtin::ReplicaSet => $f::<k8s_openapi::api::apps::v1::ReplicaSet>(),
            Builtin::Pod => $f::<k8s_openapi::api::core::v1::Pod>(),
        }
    };
}

impl Builtin {
    /// Decodes the object into its k8s-openapi type and encodes it again, as
    /// kube-apiserver decodes into Go types: wrong types fail, unknown fields
    /// are dropped.
    pub fn normalize(self, obj: Value) -> Result<Value, String> {
        fn rt<K: serde::de::DeserializeOwned + serde::Serialize>()
        -> fn(Value) -> Result<Value, String> {
            |v| {
                let k: K = serde_json::from_value(v).map_err(|e| e.to_string())?;
                serde_json::to_value(k).map_err(|e| e.to_string())
            }
        }
        let f = per_builtin!(self, rt);
        f(obj)
    }

    /// The structural schema of the kind, cached.
    pub fn schema(self) -> Arc<Value> {
        static CACHE: OnceLock<Mutex<HashMap<Builtin, Arc<Value>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(s) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&self) {
            return s.clone();
        }
        fn schema_of<K: k8s_openapi::schemars::JsonSchema>() -> Value {
            schema::builtin_schema::<K>()
        }
        let s = Arc::new(per_builtin!(self, schema_of));
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self, s.clone());
        s
    }
}

/// One served resource (one group/version/plural).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (e.g. `all`).
    pub categories: Vec<String>,
    /// Verbs on the main resource.
    pub verbs: Vec<&'static str>,
    /// Subresources served: `status`, `approval`.
    pub subresources: Vec<String>,
    /// The built-in kind, `None` for custom resources.
    pub builtin: Option<Builtin>,
    /// The CRD version's openAPIV3Schema.
    pub schema: Option<Arc<Value>>,
    /// The CRD version's additionalPrinterColumns.
    pub printer_columns: Option<Value>,
    /// Fields usable in field selectors.
    pub selectable_fields: Vec<String>,
    /// Group under which objects are stored (events.k8s.io events are core events).
    pub storage_group: String,
    /// Resource under which objects are stored.
    pub storage_resource: String,
    /// Whether metadata.generation is maintained.
    pub generation: bool,
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `api/v1` or `apis/apps/v1`.
    pub fn gv_path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }

    /// Whether the kind has a status subresource.
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }

    /// Whether the main resource accepts the verb.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The schema used to find unknown fields and managed-field structure.
    pub fn structural_schema(&self) -> Option<Arc<Value>> {
        match self.builtin {
            Some(b) => Some(b.schema()),
            None => self.schema.clone(),
        }
    }

    /// Field selectors the resource supports.
    pub fn field_selectors(&self) -> Vec<&str> {
        let mut f = vec!["metadata.name", "metadata.namespace"];
        f.extend(self.selectable_fields.iter().map(String::as_str));
        f
    }

    #[allow(clippy::too_many_arguments)]
    fn builtin(
        b: Builtin,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        short: &[&str],
        subresources: &[&str],
        verbs: &'static [&'static str],
        fields: &[&str],
        generation: bool,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            verbs: verbs.to_vec(),
            subresources: subresources.iter().map(|s| s.to_string()).collect(),
            builtin: Some(b),
            schema: None,
            printer_columns: None,
            selectable_fields: fields.iter().map(|s| s.to_string()).collect(),
            storage_group: group.into(),
            storage_resource: plural.into(),
            generation,
        }
    }
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

const EVENT_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "deprecatedSource",
    "type",
];

/// The mapping from events.k8s.io/v1 selector fields to stored core fields.
pub const EVENT_V1_FIELD_RENAMES: &[(&str, &str)] = &[
    ("regarding.", "involvedObject."),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
];

fn builtins() -> Vec<ResourceType> {
    use Builtin as B;
    let mut v = vec![
        ResourceType::builtin(
            B::Namespace,
            "",
            "v1",
            "Namespace",
            "namespaces",
            false,
            &["ns"],
            &["status", "finalize"],
            CRUD_NO_COLLECTION,
            &["status.phase"],
            false,
        ),
        ResourceType::builtin(
            B::Secret,
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            &[],
            &[],
            CRUD,
            &["type"],
            false,
        ),
        ResourceType::builtin(
            B::ConfigMap,
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            true,
            &["cm"],
            &[],
            CRUD,
            &[],
            false,
        ),
        ResourceType::builtin(
            B::Event,
            "",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            &[],
            CRUD,
            EVENT_FIELDS,
            false,
        ),
        ResourceType::builtin(
            B::EventV1,
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            true,
            &["ev"],
            &[],
            CRUD,
            EVENT_V1_FIELDS,
            false,
        ),
        ResourceType::builtin(
            B::Lease,
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            true,
            &[],
            &[],
            CRUD,
            &[],
            false,
        ),
        ResourceType::builtin(
            B::Deployment,
            "apps",
            "v1",
            "Deployment",
            "deployments",
            true,
            &["deploy"],
            &["status", "scale"],
            CRUD,
            &[],
            true,
        ),
        ResourceType::builtin(
            B::StatefulSet,
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            true,
            &["sts"],
            &["status", "scale"],
            CRUD,
            &[],
            true,
        ),
        ResourceType::builtin(
            B::DaemonSet,
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            true,
            &["ds"],
            &["status"],
            CRUD,
            &[],
            true,
        ),
        ResourceType::builtin(
            B::Csr,
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            false,
            &["csr"],
            &["status", "approval"],
            CRUD,
            &["spec.signerName"],
            false,
        ),
        ResourceType::builtin(
            B::TokenReview,
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            false,
            &[],
            &[],
            &["create"],
            &[],
            false,
        ),
        ResourceType::builtin(
            B::SubjectAccessReview,
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            &[],
            &[],
            &["create"],
            &[],
            false,
        ),
        ResourceType::builtin(
            B::SelfSubjectAccessReview,
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            &[],
            &[],
            &["create"],
            &[],
            false,
        ),
        ResourceType::builtin(
            B::Crd,
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            &["crd", "crds"],
            &["status"],
            CRUD,
            &[],
            true,
        ),
    ];
    // Kinds charts install, served so `helm install` and `kubectl apply` of a
    // chart's manifests work; nothing acts on them.
    let rbac = "rbac.authorization.k8s.io";
    for (b, group, kind, plural, namespaced, short, sub) in [
        (
            B::ServiceAccount,
            "",
            "ServiceAccount",
            "serviceaccounts",
            true,
            &["sa"][..],
            &[][..],
        ),
        (
            B::Service,
            "",
            "Service",
            "services",
            true,
            &["svc"][..],
            &["status"][..],
        ),
        (B::Role, rbac, "Role", "roles", true, &[][..], &[][..]),
        (
            B::ClusterRole,
            rbac,
            "ClusterRole",
            "clusterroles",
            false,
            &[][..],
            &[][..],
        ),
        (
            B::RoleBinding,
            rbac,
            "RoleBinding",
            "rolebindings",
            true,
            &[][..],
            &[][..],
        ),
        (
            B::ClusterRoleBinding,
            rbac,
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            &[][..],
            &[][..],
        ),
        (
            B::PodDisruptionBudget,
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            &["pdb"][..],
            &["status"][..],
        ),
        (
            B::NetworkPolicy,
            "networking.k8s.io",
            "NetworkPolicy",
            "networkpolicies",
            true,
            &["netpol"][..],
            &[][..],
        ),
        (
            B::ReplicaSet,
            "apps",
            "ReplicaSet",
            "replicasets",
            true,
            &["rs"][..],
            &["status"][..],
        ),
        (
            B::Pod,
            "",
            "Pod",
            "pods",
            true,
            &["po"][..],
            &["status"][..],
        ),
    ] {
        v.push(ResourceType::builtin(
            b,
            group,
            "v1",
            kind,
            plural,
            namespaced,
            short,
            sub,
            CRUD,
            &[],
            matches!(b, B::PodDisruptionBudget | B::ReplicaSet),
        ));
    }
    for r in &mut v {
        if matches!(r.builtin, Some(B::Service | B::Pod)) {
            r.categories = vec!["all".into()];
        }
        if r.group == "apps" {
            r.categories = vec!["all".into()];
        }
        if r.builtin == Some(B::EventV1) {
            r.storage_group = String::new();
        }
    }
    v
}

const CRUD_NO_COLLECTION: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// Orders versions as Kubernetes does: GA before beta before alpha, higher
/// numbers first, anything else last alphabetically.
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (i, pre) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(pre) {
                let minor: i64 = n.parse().ok()?;
                return Some((i, -major, -minor));
            }
        }
        None
    };
    match parse() {
        Some((a, b, c)) => (a, b, c, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// All served resource types.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// The built-ins plus the kinds of the given CRD objects.
    pub fn new(crds: &[Arc<Value>]) -> Self {
        let mut types: Vec<Arc<ResourceType>> = builtins().into_iter().map(Arc::new).collect();
        for crd in crds {
            // A terminating CRD keeps serving until its objects are gone, so
            // their finalizers can still be removed.
            types.extend(crd_types(crd).into_iter().map(Arc::new));
        }
        Self { types }
    }

    /// Every type.
    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// The type served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Whether group/version is served.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// Groups with their versions, preferred version first; core first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, vs)) => {
                    if !vs.contains(&t.version) {
                        vs.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        for (_, vs) in &mut out {
            vs.sort_by_key(|v| version_priority(v));
        }
        out
    }

    /// Types in one group/version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource types a CRD serves, one per served version.
pub fn crd_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        let mut subresources = Vec::new();
        if v.pointer("/subresources/status").is_some() {
            subresources.push("status".to_string());
        }
        let selectable = v["selectableFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                f["jsonPath"]
                    .as_str()
                    .map(|p| p.trim_start_matches('.').to_string())
            })
            .collect();
        out.push(ResourceType {
            group: group.clone(),
            version: v["name"].as_str().unwrap_or_default().to_string(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            verbs: CRUD.to_vec(),
            subresources,
            builtin: None,
            schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
            printer_columns: v.get("additionalPrinterColumns").cloned(),
            selectable_fields: selectable,
            storage_group: group.clone(),
            storage_resource: plural.clone(),
            generation: true,
        });
    }
    out
}

/// The status kube-apiserver's CRD controllers give a CRD right away.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["singular"] = json!(k.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["listKind"] = json!(format!("{k}List"));
    }
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    let mut stored_versions: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in stored {
        if !stored_versions.contains(&s) {
            stored_versions.push(s);
        }
    }
    let cond = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    json!({
        "acceptedNames": accepted,
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored_versions,
    })
}

/// Converts a stored core/v1 Event to events.k8s.io/v1, as the apiserver's
/// conversion does.
pub fn event_to_v1(core: &Value) -> Value {
    let mut out = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event"});
    let map = [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ];
    for (from, to) in map {
        if let Some(v) = core.get(from)
            && !v.is_null()
        {
            out[to] = v.clone();
        }
    }
    out
}

/// Converts an events.k8s.io/v1 Event to the stored core/v1 form.
pub fn event_from_v1(v1: &Value) -> Value {
    let mut out = json!({"apiVersion": "v1", "kind": "Event"});
    let map = [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ];
    for (from, to) in map {
        if let Some(v) = v1.get(from)
            && !v.is_null()
        {
            out[to] = v.clone();
        }
    }
    if out.get("involvedObject").is_none() {
        out["involvedObject"] = json!({});
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes() {
        let mut v = vec![
            "v1alpha1",
            "foo",
            "v1beta1",
            "v2",
            "v1",
            "v10beta3",
            "v11alpha2",
        ];
        v.sort_by_key(|s| version_priority(s));
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v10beta3",
                "v1beta1",
                "v11alpha2",
                "v1alpha1",
                "foo"
            ]
        );
    }

    #[test]
    fn events_round_trip_between_versions() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "reason": "R", "type": "Normal", "reportingComponent": "c", "count": 2});
        let v1 = event_to_v1(&core);
        assert_eq!(v1["regarding"]["name"], "p");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["deprecatedCount"], 2);
        assert_eq!(event_from_v1(&v1), core);
    }
}
