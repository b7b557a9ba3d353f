//! The rules a `CABundle` must follow, written once for both places that
//! enforce them: the CRD's CEL rules (`x-kubernetes-validations`), so that
//! `kubectl apply` refuses a bad bundle, and the rotator's own checks
//! (`InvalidSource`) for a bundle that got past an older CRD. Both build
//! their message from the same constant.

use kube::core::{Message, Rule};

/// Most sources a bundle may list (keeps CEL's cost bounded).
pub const MAX_SOURCES: u32 = 256;
/// `spec.sources` lists nothing.
pub const NO_SOURCES: &str = "must list at least one source";
/// A source sets none or several of its kinds.
pub const ONE_SOURCE_KIND: &str = "set exactly one of secret, configMap and inline";
/// A target ConfigMap name that is not one.
pub const NOT_A_CONFIG_MAP_NAME: &str = "is not a valid ConfigMap name";
/// A target key that is not a ConfigMap key.
pub const NOT_A_CONFIG_MAP_KEY: &str = "is not a valid ConfigMap key";
/// A bundle name too long to be a label value.
pub const NAME_TOO_LONG: &str =
    "is longer than 63 characters and cannot label the ConfigMaps it creates";

/// `spec.sources`: [`NO_SOURCES`].
#[must_use]
pub fn no_sources(path: &str) -> String {
    format!("{path}: {NO_SOURCES}")
}

/// `spec.sources[i]`: [`ONE_SOURCE_KIND`].
#[must_use]
pub fn one_source_kind(path: &str) -> String {
    format!("{path}: {ONE_SOURCE_KIND}")
}

/// `<path>: "<value>" <words>`.
#[must_use]
pub fn value_message(path: &str, value: &str, words: &str) -> String {
    format!("{path}: \"{value}\" {words}")
}

/// The bundle name is too long to label what it creates.
#[must_use]
pub fn name_too_long(name: &str) -> String {
    format!("the name \"{name}\" {NAME_TOO_LONG}")
}

/// `text` as a CEL string literal.
fn lit(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// CEL: `"<expr>" <words>`.
fn quoted(expr: &str, words: &str) -> Message {
    Message::Expression(format!("'\"' + {expr} + '\" ' + {}", lit(words)))
}

/// The CEL rule of `spec.sources`.
#[must_use]
pub fn sources_rule() -> Rule {
    Rule::new("self.size() > 0").message(NO_SOURCES)
}

/// The CEL rule of one source.
#[must_use]
pub fn source_rule() -> Rule {
    Rule::new(
        "(has(self.secret) ? 1 : 0) + (has(self.configMap) ? 1 : 0) + (has(self.inline) ? 1 : 0) == 1",
    )
        .message(ONE_SOURCE_KIND)
}

/// The CEL rule of `spec.target.configMap` (surrounding spaces are
/// ignored, as the rotator trims them).
#[must_use]
pub fn config_map_name_rule() -> Rule {
    Rule::new("self.trim().matches('^[a-z0-9.-]{1,253}$')")
        .message(quoted("self.trim()", NOT_A_CONFIG_MAP_NAME))
}

/// The CEL rule of `spec.target.key`.
#[must_use]
pub fn config_map_key_rule() -> Rule {
    Rule::new("self.matches('^[-._a-zA-Z0-9]{1,253}$') && self != '.' && self != '..'")
        .message(quoted("self", NOT_A_CONFIG_MAP_KEY))
}

/// The CEL rule on the whole `CABundle`: a name that can label.
#[must_use]
pub fn name_rule() -> Rule {
    Rule::new("self.metadata.name.size() <= 63").message(Message::Expression(format!(
        "'the name \"' + self.metadata.name + '\" ' + {}",
        lit(NAME_TOO_LONG)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_the_rotator_writes_them() {
        assert_eq!(
            no_sources("spec.sources"),
            "spec.sources: must list at least one source"
        );
        assert_eq!(
            value_message("spec.target.key", "a/b", NOT_A_CONFIG_MAP_KEY),
            "spec.target.key: \"a/b\" is not a valid ConfigMap key"
        );
        assert!(
            name_rule()
                .message
                .is_some_and(|m| matches!(m, Message::Expression(e) if e.contains("cannot label")))
        );
    }
}
