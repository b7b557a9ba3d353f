//! Bearer-token authentication and a small RBAC-like authorizer, also used to
//! answer TokenReviews and SubjectAccessReviews.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The user a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// `username`.
    pub username: String,
    /// `uid`.
    #[serde(default)]
    pub uid: String,
    /// `groups` (`system:authenticated` is added on authentication).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user in the given groups.
    pub fn new(username: &str, groups: &[&str]) -> Self {
        Self {
            username: username.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// An allow rule: who (users or groups) may do what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Usernames the rule applies to.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups the rule applies to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Verbs (`*` for all).
    pub verbs: Vec<String>,
    /// API groups (`*` for all).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resources, optionally `resource/subresource` (`*` for all).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Namespaces; empty means all and the cluster scope.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/apis/*`).
    #[serde(default)]
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    /// Everything, for a group (e.g. `system:masters`).
    pub fn allow_all_for_group(group: &str) -> Self {
        Self {
            groups: vec![group.into()],
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Self::default()
        }
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A resource request.
    Resource {
        /// Verb.
        verb: String,
        /// API group.
        group: String,
        /// Resource.
        resource: String,
        /// Subresource.
        subresource: Option<String>,
        /// Namespace.
        namespace: Option<String>,
        /// Name.
        name: Option<String>,
    },
    /// A non-resource request.
    Path {
        /// Verb (`get`, `post`, ...).
        verb: String,
        /// URL path.
        path: String,
    },
}

/// Tokens and rules.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Token to user.
    pub tokens: HashMap<String, UserInfo>,
    /// Allow rules.
    pub rules: Vec<Rule>,
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

fn url_matches(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => p == path,
    })
}

impl Auth {
    /// The user for a bearer token, with `system:authenticated` added.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mut u = self.tokens.get(token)?.clone();
        if !u.groups.iter().any(|g| g == "system:authenticated") {
            u.groups.push("system:authenticated".into());
        }
        Some(u)
    }

    /// Whether a user may do something. Discovery, health and OpenAPI paths
    /// are open to every authenticated user, as with kube's
    /// `system:discovery` and `system:public-info-viewer` roles.
    pub fn authorize(&self, user: &str, groups: &[String], attrs: &Attributes) -> bool {
        if let Attributes::Path { verb, path } = attrs {
            let public = [
                "/api", "/apis", "/version", "/healthz", "/livez", "/readyz", "/openapi",
            ];
            if verb == "get"
                && groups.iter().any(|g| g == "system:authenticated")
                && public
                    .iter()
                    .any(|p| path == p || path.starts_with(&format!("{p}/")))
            {
                return true;
            }
        }
        self.rules.iter().any(|r| {
            let subject =
                r.users.iter().any(|u| u == user) || r.groups.iter().any(|g| groups.contains(g));
            subject
                && match attrs {
                    Attributes::Resource {
                        verb,
                        group,
                        resource,
                        subresource,
                        namespace,
                        ..
                    } => {
                        let res_ok = match subresource {
                            Some(s) => {
                                let full = format!("{resource}/{s}");
                                r.resources
                                    .iter()
                                    .any(|x| x == "*" || *x == full || *x == format!("*/{s}"))
                            }
                            None => has(&r.resources, resource),
                        };
                        has(&r.verbs, verb)
                            && has(&r.api_groups, group)
                            && res_ok
                            && (r.namespaces.is_empty()
                                || namespace.as_ref().is_some_and(|n| has(&r.namespaces, n)))
                    }
                    Attributes::Path { verb, path } => {
                        has(&r.verbs, verb) && url_matches(&r.non_resource_urls, path)
                    }
                }
        })
    }

    /// The `status` of a TokenReview for `spec`.
    pub fn token_review_status(&self, spec: &Value) -> Value {
        let token = spec["token"].as_str().unwrap_or_default();
        match self.authenticate(token) {
            Some(u) => {
                let mut s = json!({"authenticated": true, "user": {"username": u.username, "groups": u.groups}});
                if !u.uid.is_empty() {
                    s["user"]["uid"] = json!(u.uid);
                }
                if let Some(a) = spec.get("audiences") {
                    s["audiences"] = a.clone();
                }
                s
            }
            None => json!({"user": {}, "error": "invalid bearer token"}),
        }
    }

    /// The `status` of a SubjectAccessReview for `spec` (user and groups from
    /// the spec) or of a SelfSubjectAccessReview (from the caller).
    pub fn access_review_status(
        &self,
        spec: &Value,
        caller: Option<&UserInfo>,
        authorize: &dyn Fn(&str, &[String], &Attributes) -> bool,
    ) -> Value {
        let (user, groups) = match caller {
            Some(u) => (u.username.clone(), u.groups.clone()),
            None => (
                spec["user"].as_str().unwrap_or_default().to_string(),
                spec["groups"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        };
        let s = |v: &Value, k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(String::from);
        let attrs = if let Some(ra) = spec.get("resourceAttributes") {
            Attributes::Resource {
                verb: s(ra, "verb").unwrap_or_default(),
                group: s(ra, "group").unwrap_or_default(),
                resource: s(ra, "resource").unwrap_or_default(),
                subresource: s(ra, "subresource"),
                namespace: s(ra, "namespace"),
                name: s(ra, "name"),
            }
        } else {
            let na = &spec["nonResourceAttributes"];
            Attributes::Path {
                verb: s(na, "verb").unwrap_or_default(),
                path: s(na, "path").unwrap_or_default(),
            }
        };
        if authorize(&user, &groups, &attrs) {
            json!({"allowed": true, "reason": "allowed by the test API server's rules"})
        } else {
            json!({"allowed": false})
        }
    }

    /// The tokens table as persisted.
    pub fn to_json(&self) -> Value {
        json!({"tokens": self.tokens, "rules": self.rules})
    }

    /// Restores a persisted tokens table.
    pub fn from_json(v: &Value) -> anyhow::Result<Self> {
        Ok(Self {
            tokens: serde_json::from_value(v["tokens"].clone())?,
            rules: serde_json::from_value(v["rules"].clone())?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_subresources_namespaces_and_paths() {
        let mut a = Auth::default();
        a.tokens
            .insert("t".into(), UserInfo::new("alice", &["dev"]));
        a.rules.push(Rule {
            groups: vec!["dev".into()],
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["secrets".into(), "pods/log".into()],
            namespaces: vec!["team".into()],
            ..Rule::default()
        });
        let u = a.authenticate("t").unwrap();
        let attrs = |r: &str, sub: Option<&str>, ns: &str| Attributes::Resource {
            verb: "get".into(),
            group: "".into(),
            resource: r.into(),
            subresource: sub.map(String::from),
            namespace: Some(ns.into()),
            name: None,
        };
        assert!(a.authorize(&u.username, &u.groups, &attrs("secrets", None, "team")));
        assert!(!a.authorize(&u.username, &u.groups, &attrs("secrets", None, "other")));
        assert!(a.authorize(&u.username, &u.groups, &attrs("pods", Some("log"), "team")));
        assert!(!a.authorize(&u.username, &u.groups, &attrs("pods", None, "team")));
        assert!(a.authorize(
            &u.username,
            &u.groups,
            &Attributes::Path {
                verb: "get".into(),
                path: "/apis/apps".into()
            }
        ));
        assert!(a.authenticate("nope").is_none());
    }
}
