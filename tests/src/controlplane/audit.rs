//! kube-apiserver's audit log, read back: who made which request, and what
//! the answer was. The least-privilege and scale suites judge capstan's
//! calls from it, as a cluster's auditors would.

use std::path::Path;

use anyhow::Context as _;
use capstan_testserver::RequestRecord;
use serde::Deserialize;

/// One audited request (`audit.k8s.io/v1` Event, the fields the suites use).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The API verb (`get`, `list`, `watch`, `create`, `patch`, ...).
    pub verb: String,
    /// The request URI, query included.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Who made it (the admin, for an impersonated request).
    pub user: User,
    /// Whom the request impersonated, if anyone.
    #[serde(default)]
    pub impersonated_user: Option<User>,
    /// The object it concerned, when it concerned one.
    #[serde(default)]
    pub object_ref: Option<ObjectRef>,
    /// The answer's status.
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    /// The user agent.
    #[serde(default)]
    pub user_agent: String,
    /// When kube-apiserver received it (RFC 3339, microseconds).
    #[serde(default)]
    pub request_received_timestamp: String,
}

/// The user of an audited request.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// User name (`system:serviceaccount:ns:name`, `admin`, ...).
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The object an audited request concerned.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Resource (plural).
    #[serde(default)]
    pub resource: String,
    /// Namespace, for namespaced objects.
    #[serde(default)]
    pub namespace: String,
    /// Name, when the request named one.
    #[serde(default)]
    pub name: String,
    /// API group (empty for the core group).
    #[serde(default)]
    pub api_group: String,
    /// Subresource (`status`, ...).
    #[serde(default)]
    pub subresource: String,
}

/// The status of an audited request's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

impl Event {
    /// The user the request acted as: the impersonated one, else its own.
    pub fn effective_user(&self) -> &User {
        self.impersonated_user.as_ref().unwrap_or(&self.user)
    }

    /// The answer's status code (0 when none was recorded).
    pub fn code(&self) -> u16 {
        self.response_status.as_ref().map_or(0, |s| s.code)
    }
}

impl From<&Event> for RequestRecord {
    /// The audited request in the shape of the test API server's request
    /// log, so a suite reads either the same way.
    fn from(e: &Event) -> Self {
        let o = e.object_ref.clone().unwrap_or_default();
        Self {
            time: e.request_received_timestamp.clone(),
            user: e.effective_user().username.clone(),
            verb: e.verb.clone(),
            group: o.api_group,
            resource: o.resource,
            subresource: o.subresource,
            namespace: o.namespace,
            name: o.name,
            path: e
                .request_uri
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned(),
            code: e.code(),
        }
    }
}

/// Reads every event of the JSON-lines audit log at `path`; a line cut
/// short by a write in progress is skipped.
pub fn read(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text))
}

/// The events in JSON-lines `text`.
pub fn parse(text: &str) -> Vec<Event> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kube_apiserver_audit_lines_and_skips_a_torn_one() {
        let text = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/secrets/x","verb":"get","user":{"username":"system:serviceaccount:default:capstan-issuer","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"capstan-issuer","objectRef":{"resource":"secrets","namespace":"default","name":"x","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":404}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"li"#;
        let events = parse(text);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.verb, "get");
        assert_eq!(
            e.user.username,
            "system:serviceaccount:default:capstan-issuer"
        );
        assert_eq!(
            e.object_ref.as_ref().map(|o| o.resource.as_str()),
            Some("secrets")
        );
        assert_eq!(e.code(), 404);
    }
}
