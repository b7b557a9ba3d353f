//! Label and field selectors as kube-apiserver parses and matches them.

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector (`app=x,tier in (a,b),!legacy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn valid_key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(format!(
            "unable to parse requirement: invalid label key \"{k}\""
        ));
    }
    Ok(k.to_string())
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            if let Some(k) = part.strip_prefix('!') {
                reqs.push(LabelReq::NotExists(valid_key(k)?));
            } else if let Some((k, v)) = part.split_once("!=") {
                reqs.push(LabelReq::NotEq(valid_key(k)?, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push(LabelReq::Eq(valid_key(k)?, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push(LabelReq::Eq(valid_key(k)?, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once(" notin ") {
                reqs.push(LabelReq::NotIn(valid_key(k)?, parse_set(v)?));
            } else if let Some((k, v)) = part.split_once(" in ") {
                reqs.push(LabelReq::In(valid_key(k)?, parse_set(v)?));
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| format!("unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer: {part}"))?;
                reqs.push(LabelReq::Gt(valid_key(k)?, n));
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| format!("unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer: {part}"))?;
                reqs.push(LabelReq::Lt(valid_key(k)?, n));
            } else {
                reqs.push(LabelReq::Exists(valid_key(&part)?));
            }
        }
        Ok(Self { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's `metadata.labels` match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// A parsed field selector (`metadata.name=x,type!=y`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `fieldSelector`, rejecting fields the resource does not support
    /// (`field label not supported: x`), as kube-apiserver does.
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let field = field.trim().to_string();
            if !supported.contains(&field.as_str()) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field, eq, value.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    /// Adds `metadata.name=<name>` (watch of one object by path).
    pub fn with_name(mut self, name: &str) -> Self {
        self.reqs.push(("metadata.name".into(), true, name.into()));
        self
    }

    /// Renames fields, e.g. `regarding.name` to `involvedObject.name` when an
    /// events.k8s.io selector is matched against stored core/v1 Events.
    pub fn rename(mut self, map: &[(&str, &str)]) -> Self {
        for r in &mut self.reqs {
            for (from, to) in map {
                if let Some(rest) = r.0.strip_prefix(from) {
                    r.0 = format!("{to}{rest}");
                }
            }
        }
        self
    }

    /// Whether the object's fields match.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(f, eq, v)| {
            let actual = field_value(obj, f);
            (actual == *v) == *eq
        })
    }
}

/// The string value of a selectable field; a missing field reads as `""`.
fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front", "n": "5"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing!=x", true),
            ("n>4,n<6", true),
            ("app=web,tier in (back)", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn field_selector_rejects_unsupported_fields() {
        let err = FieldSelector::parse("spec.foo=x", &["metadata.name"]).unwrap_err();
        assert_eq!(err, "field label not supported: spec.foo");
        let o = json!({"metadata": {"name": "a"}, "type": "Opaque"});
        let f = FieldSelector::parse(
            "metadata.name=a,type!=kubernetes.io/tls",
            &["metadata.name", "type"],
        )
        .unwrap();
        assert!(f.matches(&o));
    }
}
