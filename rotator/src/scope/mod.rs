//! Which namespaces the rotator acts in: `--namespace` (only these),
//! `--namespace-selector` (only Namespaces whose labels match) and
//! `--namespaces-to-ignore` (never these), Reloader's flags of the same
//! purpose. A namespace is in scope when all three agree. Both restarts and
//! bundles (injected ConfigMaps and `CABundle` targets) stay inside it;
//! sources (CA Secrets, issuers) may live anywhere the rotator can read.
//!
//! * [`Scope`] and the flag parsers here are pure;
//! * [`namespaces`] follows Namespace labels when a selector needs them and
//!   says which namespaces entered or left the scope;
//! * [`watch`] watches a namespaced kind cluster-wide, or namespace by
//!   namespace when the scope is a fixed list (so namespaced RBAC suffices).

pub mod namespaces;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// The namespaces the rotator acts in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    namespaces: BTreeSet<String>,
    ignored: BTreeSet<String>,
    selector: Option<Selector>,
}

impl Scope {
    /// Only `namespaces` (every namespace when empty), never `ignored`, and
    /// only Namespaces whose labels match `selector`.
    #[must_use]
    pub fn new(
        namespaces: impl IntoIterator<Item = String>,
        ignored: impl IntoIterator<Item = String>,
        selector: Option<Selector>,
    ) -> Self {
        let ignored: BTreeSet<String> = ignored.into_iter().collect();
        Self {
            namespaces: namespaces.into_iter().collect(),
            ignored,
            selector: selector.filter(|s| *s != Selector::default()),
        }
    }

    /// The fixed list of namespaces to watch one by one, if the scope is
    /// one (ignored ones left out).
    #[must_use]
    pub fn fixed(&self) -> Option<Vec<String>> {
        (!self.namespaces.is_empty()).then(|| {
            self.namespaces
                .iter()
                .filter(|n| !self.ignored.contains(*n))
                .cloned()
                .collect()
        })
    }

    /// Where sources (CA Secrets, bundle sources) are watched: every
    /// namespace, or for a fixed list, those namespaces and `also` (the
    /// cluster resource namespace, where `ClusterCAIssuer`s keep their CA).
    #[must_use]
    pub fn sources(&self, also: &str) -> Self {
        match self.fixed() {
            None => Self::default(),
            Some(mut namespaces) => {
                namespaces.push(also.to_owned());
                Self::new(namespaces, [], None)
            }
        }
    }

    /// Whether deciding needs the Namespaces' labels.
    #[must_use]
    pub fn needs_labels(&self) -> bool {
        self.selector.is_some()
    }

    /// Whether nothing is left out.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.namespaces.is_empty() && self.ignored.is_empty() && self.selector.is_none()
    }

    /// Whether `namespace`, with `labels` (`None`: not known to exist), is
    /// in scope. Without a selector the labels are not looked at.
    #[must_use]
    pub fn admits(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.ignored.contains(namespace)
            || (!self.namespaces.is_empty() && !self.namespaces.contains(namespace))
        {
            return false;
        }
        match &self.selector {
            None => true,
            Some(selector) => labels.is_some_and(|l| selector.matches(l)),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_everything() {
            return write!(f, "all namespaces");
        }
        let mut parts = Vec::new();
        if !self.namespaces.is_empty() {
            parts.push(format!(
                "namespaces {}",
                self.namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(selector) = &self.selector {
            parts.push(format!("namespaces labelled {selector}"));
        }
        if !self.ignored.is_empty() {
            parts.push(format!(
                "not {}",
                self.ignored.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Parses a namespace name flag value (an RFC 1123 label).
///
/// # Errors
/// When `text` is not a valid namespace name.
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let name = text.trim();
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

/// Parses a label selector as `kubectl -l` writes it: comma-separated
/// `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
/// `key notin (a,b)`, `key` and `!key`. Reloader's legacy `key:value` and
/// `key:*` / `key=*` (the key exists) are accepted too.
///
/// # Errors
/// When a requirement cannot be read, naming it.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut expressions = Vec::new();
    for requirement in split_requirements(text)? {
        expressions.push(requirement_of(&requirement)?);
    }
    Ok(expressions.into_iter().collect())
}

/// Splits at the commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?}: unbalanced ')'"))?;
            }
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(format!("{text:?}: unbalanced '('"));
    }
    out.push(current);
    Ok(out
        .into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect())
}

fn checked_key(key: &str, requirement: &str) -> Result<String, String> {
    let key = key.trim();
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("{requirement:?}: {key:?} is not a label key"))
    }
}

fn checked_value(value: &str, requirement: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{requirement:?}: {value:?} is not a label value"))
    }
}

fn set_of(list: &str, requirement: &str) -> Result<BTreeSet<String>, String> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{requirement:?}: expected a list in parentheses"))?;
    inner
        .split(',')
        .map(|v| checked_value(v, requirement))
        .collect()
}

fn requirement_of(r: &str) -> Result<Expression, String> {
    if let Some(key) = r.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(checked_key(key, r)?));
    }
    if let Some((key, value)) = r.split_once("!=") {
        return Ok(Expression::NotEqual(
            checked_key(key, r)?,
            checked_value(value, r)?,
        ));
    }
    if let Some((key, value)) = r
        .split_once("==")
        .or_else(|| r.split_once('='))
        .or_else(|| r.split_once(':'))
    {
        let key = checked_key(key, r)?;
        return Ok(if value.trim() == "*" {
            Expression::Exists(key)
        } else {
            Expression::Equal(key, checked_value(value, r)?)
        });
    }
    let words: Vec<&str> = r.splitn(3, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => Ok(Expression::Exists(checked_key(key, r)?)),
        [key, "in", list] => Ok(Expression::In(checked_key(key, r)?, set_of(list, r)?)),
        [key, "notin", list] => Ok(Expression::NotIn(checked_key(key, r)?, set_of(list, r)?)),
        _ => Err(format!(
            "{r:?} is not a label selector requirement (key=value, key!=value, key in (a,b), key notin (a,b), key, !key)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn everything_by_default() {
        let scope = Scope::default();
        assert!(scope.is_everything() && !scope.needs_labels());
        assert!(scope.admits("any", None));
        assert_eq!(scope.fixed(), None);
        assert_eq!(scope.to_string(), "all namespaces");
    }

    #[test]
    fn fixed_namespaces_minus_ignored() {
        let scope = Scope::new(["a".to_owned(), "b".to_owned()], ["b".to_owned()], None);
        assert!(scope.admits("a", None));
        assert!(!scope.admits("b", None), "ignored wins");
        assert!(!scope.admits("c", None));
        assert_eq!(scope.fixed(), Some(vec!["a".to_owned()]));
        assert_eq!(scope.to_string(), "namespaces a, b; not b");
    }

    #[test]
    fn sources_are_watched_in_the_fixed_namespaces_and_the_cluster_resource_namespace() {
        let fixed = Scope::new(["a".to_owned()], ["x".to_owned()], None);
        assert_eq!(
            fixed.sources("capstan").fixed(),
            Some(vec!["a".to_owned(), "capstan".to_owned()])
        );
        let selected = Scope::new([], [], Some(parse_selector("a=b").expect("valid")));
        assert!(selected.sources("capstan").is_everything());
    }

    #[test]
    fn selector_needs_the_labels() {
        let selector = parse_selector("team=payments,env in (prod, staging)").expect("valid");
        let scope = Scope::new([], ["kube-system".to_owned()], Some(selector));
        assert!(scope.needs_labels());
        assert!(scope.admits("p", Some(&labels(&[("team", "payments"), ("env", "prod")]))));
        assert!(!scope.admits("p", Some(&labels(&[("team", "payments")]))));
        assert!(
            !scope.admits("p", None),
            "an unknown namespace is not in scope"
        );
        assert!(!scope.admits(
            "kube-system",
            Some(&labels(&[("team", "payments"), ("env", "prod")]))
        ));
    }

    #[test]
    fn an_empty_selector_selects_everything() {
        let scope = Scope::new([], [], Some(parse_selector("").expect("empty")));
        assert!(!scope.needs_labels() && scope.is_everything());
    }

    #[test]
    fn reads_every_requirement_kind() {
        let selector =
            parse_selector("a=1, b==2,c!=3,d in (x,y),e notin (z),f,!g,legacy:v,any:*,h=*")
                .expect("valid");
        assert_eq!(
            selector.to_string(),
            "a=1,b=2,c!=3,d in (x,y),e notin (z),f,!g,legacy=v,any,h"
        );
        let on = labels(&[
            ("a", "1"),
            ("b", "2"),
            ("d", "y"),
            ("f", ""),
            ("legacy", "v"),
            ("any", "q"),
            ("h", "r"),
        ]);
        assert!(selector.matches(&on));
    }

    #[test]
    fn bad_selectors_and_names_are_refused_with_the_culprit() {
        for bad in ["a in (x", "a in x", "a b c", "bad key=1", "a=b c"] {
            let error = parse_selector(bad).expect_err(bad);
            assert!(error.contains('"'), "{error}");
        }
        assert_eq!(parse_namespace(" team-a "), Ok("team-a".to_owned()));
        for bad in ["", "Team", "-a", "a_b", &"x".repeat(64)] {
            assert!(parse_namespace(bad).is_err(), "{bad}");
        }
    }
}
