//! RBAC from the stored Roles, ClusterRoles and their bindings, evaluated
//! as kube-apiserver's RBAC authorizer does (allow rules only), so a
//! binary run with a ServiceAccount token gets the 403s a chart's RBAC
//! would give it on a cluster.

use serde_json::Value;

use super::auth::Attributes;
use super::store::Store;

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn has(list: &[&str], v: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == v)
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let resources = strings(&rule["resources"]);
            let res_ok = match subresource {
                Some(s) => {
                    let full = format!("{resource}/{s}");
                    let any = format!("*/{s}");
                    resources
                        .iter()
                        .any(|r| *r == "*" || *r == full || *r == any)
                }
                None => has(&resources, resource),
            };
            let names = strings(&rule["resourceNames"]);
            let name_ok = names.is_empty() || name.as_deref().is_some_and(|n| names.contains(&n));
            has(&verbs, verb) && has(&strings(&rule["apiGroups"]), group) && res_ok && name_ok
        }
        Attributes::Path { verb, path } => {
            has(&verbs, verb)
                && strings(&rule["nonResourceURLs"])
                    .iter()
                    .any(|u| match u.strip_suffix('*') {
                        Some(prefix) => path.starts_with(prefix),
                        None => u == path,
                    })
        }
    }
}

fn subject_matches(subject: &Value, binding_ns: &str, user: &str, groups: &[String]) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => name == user,
        Some("Group") => groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules(store: &Store, kind: &str, name: &str, ns: &str) -> Vec<Value> {
    let rbac = "rbac.authorization.k8s.io".to_string();
    let (resource, key_ns) = if kind == "ClusterRole" {
        ("clusterroles", "")
    } else {
        ("roles", ns)
    };
    store
        .get(
            &(rbac, resource.to_string()),
            &(key_ns.to_string(), name.to_string()),
        )
        .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// Whether the stored RBAC objects allow the request.
pub fn allows(store: &Store, user: &str, groups: &[String], attrs: &Attributes) -> bool {
    let rbac = "rbac.authorization.k8s.io".to_string();
    let bound = |binding: &Value, ns: &str| {
        binding["subjects"].as_array().is_some_and(|subjects| {
            subjects
                .iter()
                .any(|s| subject_matches(s, ns, user, groups))
        })
    };
    for crb in store.all(&(rbac.clone(), "clusterrolebindings".into()), None) {
        if bound(&crb, "")
            && crb["roleRef"]["kind"] == "ClusterRole"
            && role_rules(
                store,
                "ClusterRole",
                crb["roleRef"]["name"].as_str().unwrap_or_default(),
                "",
            )
            .iter()
            .any(|r| rule_allows(r, attrs))
        {
            return true;
        }
    }
    let Attributes::Resource {
        namespace: Some(ns),
        ..
    } = attrs
    else {
        return false;
    };
    for rb in store.all(&(rbac.clone(), "rolebindings".into()), Some(ns)) {
        let kind = rb["roleRef"]["kind"].as_str().unwrap_or_default();
        if bound(&rb, ns)
            && role_rules(
                store,
                kind,
                rb["roleRef"]["name"].as_str().unwrap_or_default(),
                ns,
            )
            .iter()
            .any(|r| rule_allows(r, attrs))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, resource: &str, sub: Option<&str>, name: Option<&str>) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: "".into(),
            resource: resource.into(),
            subresource: sub.map(String::from),
            namespace: Some("ns".into()),
            name: name.map(String::from),
        }
    }

    #[test]
    fn rules_match_verbs_resources_subresources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["secrets", "pods/status"], "verbs": ["get", "list"], "resourceNames": []});
        assert!(rule_allows(
            &rule,
            &attrs("get", "secrets", None, Some("a"))
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("delete", "secrets", None, Some("a"))
        ));
        assert!(rule_allows(
            &rule,
            &attrs("get", "pods", Some("status"), Some("p"))
        ));
        assert!(!rule_allows(&rule, &attrs("get", "pods", None, Some("p"))));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["ca"]});
        assert!(rule_allows(
            &named,
            &attrs("get", "secrets", None, Some("ca"))
        ));
        assert!(!rule_allows(
            &named,
            &attrs("get", "secrets", None, Some("other"))
        ));
        assert!(!rule_allows(&named, &attrs("get", "secrets", None, None)));
        let sa = json!({"kind": "ServiceAccount", "name": "issuer"});
        assert!(subject_matches(
            &sa,
            "capstan",
            "system:serviceaccount:capstan:issuer",
            &[]
        ));
        assert!(!subject_matches(
            &sa,
            "other",
            "system:serviceaccount:capstan:issuer",
            &[]
        ));
    }
}
