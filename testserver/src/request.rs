//! Reading a request: the route (discovery, OpenAPI, a resource path), the
//! query parameters and the media type the client asked for.

use std::collections::HashMap;
use std::sync::Arc;

use super::resources::{Registry, ResourceType};

/// Decoded query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(percent_decode(k), percent_decode(v));
        }
        Self(m)
    }

    /// A parameter, `None` when absent or empty.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

/// What the client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The objects themselves.
    Object,
    /// `meta.k8s.io` PartialObjectMetadata(List).
    Metadata,
    /// `meta.k8s.io/v1` Table.
    Table,
}

/// Picks the first media type in `Accept` the server can produce; protobuf
/// and unknown types fall through to the next one and finally to JSON.
pub fn negotiate(accept: Option<&str>) -> Output {
    let Some(accept) = accept else {
        return Output::Object;
    };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let mime = parts.next().unwrap_or_default();
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        if !(mime == "application/json"
            || mime == "application/yaml"
            || mime == "*/*"
            || mime == "application/*")
        {
            continue;
        }
        match (params.get("as"), params.get("g")) {
            (None, _) => return Output::Object,
            (Some(&"Table"), Some(&"meta.k8s.io")) => return Output::Table,
            (Some(&"PartialObjectMetadata"), Some(&"meta.k8s.io"))
            | (Some(&"PartialObjectMetadataList"), Some(&"meta.k8s.io")) => {
                return Output::Metadata;
            }
            _ => continue,
        }
    }
    Output::Object
}

/// A request for a resource.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
    /// A legacy `/watch/` path.
    pub watch: bool,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/api`.
    Api,
    /// `/apis`.
    Apis,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// `/openapi/v3`.
    OpenApiIndex,
    /// `/openapi/v3/<api/v1|apis/g/v>`.
    OpenApiDocument(String),
    /// `/healthz`, `/livez`, `/readyz`.
    Health,
    /// A resource path.
    Resource(ResourcePath),
    /// A resource path under a served group version for an unknown resource,
    /// or any other unknown path.
    NotFound {
        /// The group, when the path named one.
        group: String,
        /// The resource, when the path named one.
        resource: String,
    },
}

/// Parses a URL path against the registry.
pub fn route(reg: &Registry, path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let nf = || Route::NotFound {
        group: String::new(),
        resource: String::new(),
    };
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v3", rest @ ..] => Route::OpenApiDocument(rest.join("/")),
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["apis", g] => {
            if reg.groups().iter().any(|(x, _)| x == g) {
                Route::Group(g.to_string())
            } else {
                nf()
            }
        }
        ["api", v] if reg.has_group_version("", v) => {
            Route::GroupVersion(String::new(), v.to_string())
        }
        ["apis", g, v] if reg.has_group_version(g, v) => {
            Route::GroupVersion(g.to_string(), v.to_string())
        }
        ["api", v, rest @ ..] if reg.has_group_version("", v) => resource_route(reg, "", v, rest),
        ["apis", g, v, rest @ ..] if reg.has_group_version(g, v) => resource_route(reg, g, v, rest),
        _ => nf(),
    }
}

fn resource_route(reg: &Registry, group: &str, version: &str, rest: &[&str]) -> Route {
    let (watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let nf = |resource: &str| Route::NotFound {
        group: group.to_string(),
        resource: resource.to_string(),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, tail @ ..]
            if reg.find(group, version, r).is_some_and(|t| t.namespaced) =>
        {
            (Some(ns.to_string()), [&[*r][..], tail].concat())
        }
        r => (None, r.to_vec()),
    };
    let Some(res) = rest.first() else {
        return nf("");
    };
    let Some(rt) = reg.find(group, version, res) else {
        return nf(res);
    };
    if namespace.is_none() && rt.namespaced && rest.len() > 1 {
        return nf(res);
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return nf(res);
    }
    if let Some(s) = &sub
        && !rt.subresources.contains(s)
    {
        return nf(res);
    }
    Route::Resource(ResourcePath {
        rt,
        namespace,
        name,
        sub,
        watch,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_falls_back_past_protobuf_and_unknown_types() {
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Output::Table
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf,application/json")),
            Output::Object
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            )),
            Output::Metadata
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Output::Object
        );
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let reg = Registry::new(&[]);
        let Route::Resource(r) = route(&reg, "/api/v1/namespaces/default/secrets/x") else {
            panic!()
        };
        assert_eq!(
            (
                r.rt.plural.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref()
            ),
            ("secrets", Some("default"), Some("x"))
        );
        let Route::Resource(r) = route(&reg, "/api/v1/namespaces/default") else {
            panic!()
        };
        assert_eq!(
            (r.rt.plural.as_str(), r.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let Route::Resource(r) = route(&reg, "/api/v1/namespaces/default/status") else {
            panic!()
        };
        assert_eq!(r.sub.as_deref(), Some("status"));
        let Route::Resource(r) = route(&reg, "/apis/apps/v1/watch/namespaces/a/deployments") else {
            panic!()
        };
        assert!(r.watch);
        let Route::Resource(r) = route(
            &reg,
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval",
        ) else {
            panic!()
        };
        assert_eq!(r.sub.as_deref(), Some("approval"));
        assert!(matches!(route(&reg, "/api/v1/secrets"), Route::Resource(_)));
        assert!(matches!(
            route(&reg, "/api/v1/nothings"),
            Route::NotFound { .. }
        ));
        assert_eq!(
            Query::parse(Some("labelSelector=a%3Db%2Cc+in+(x)")).get("labelSelector"),
            Some("a=b,c in (x)")
        );
    }
}
