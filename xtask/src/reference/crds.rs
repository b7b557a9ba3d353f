//! `docs/reference/crds.md`: every field of every CRD capstan defines, read
//! from the OpenAPI v3 schema the Rust types generate.

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use super::markdown::{cell, code, table};

/// One row of a CRD's field table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    path: String,
    type_: String,
    required: bool,
    default: Option<String>,
    description: String,
}

/// The page for `crds`, in their order.
///
/// # Errors
/// When a CRD has no version or no schema.
pub fn render(crds: &[CustomResourceDefinition]) -> Result<String> {
    let mut out =
        super::header("the Rust API types (`capstan_issuer::api`, `capstan_rotator::api`)");
    out.push_str("\n# CRD reference\n\n");
    out.push_str(
        "Every field of capstan's custom resources, as the API server validates them \
         (the same schemas as `crds/`). Defaults the API server does not fill in are \
         applied by capstan and stated in the description; the Default column repeats \
         them.\n\n",
    );
    for crd in crds {
        let kind = &crd.spec.names.kind;
        out.push_str(&format!(
            "* [{kind}](#{}) (`{}`)\n",
            kind.to_lowercase(),
            crd.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    out.push('\n');
    for crd in crds {
        out.push_str(&render_one(crd)?);
    }
    Ok(out.trim_end().to_owned() + "\n")
}

fn render_one(crd: &CustomResourceDefinition) -> Result<String> {
    let names = &crd.spec.names;
    let Some(version) = crd.spec.versions.first() else {
        bail!("CRD {} has no version", names.kind);
    };
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .with_context(|| format!("CRD {} has no openAPIV3Schema", names.kind))?;
    let schema = serde_json::to_value(schema).context("serializing the schema")?;

    let mut out = format!("## {}\n\n", names.kind);
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&format!("{}\n\n", cell(description)));
    }
    let scope = if crd.spec.scope == "Cluster" {
        "cluster-scoped".to_owned()
    } else {
        "namespaced".to_owned()
    };
    let list = |items: &Option<Vec<String>>| {
        items
            .iter()
            .flatten()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&table(
        &["", ""],
        &[
            vec![
                "API version".into(),
                format!("`{}/{}`", crd.spec.group, version.name),
            ],
            vec!["Kind".into(), format!("`{}`, {scope}", names.kind)],
            vec![
                "Resource".into(),
                format!(
                    "`{}` (singular `{}`)",
                    names.plural,
                    names.singular.as_deref().unwrap_or_default()
                ),
            ],
            vec!["Short names".into(), list(&names.short_names)],
            vec!["Categories".into(), list(&names.categories)],
            vec![
                "Status subresource".into(),
                if version
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some())
                {
                    "yes".into()
                } else {
                    "no".into()
                },
            ],
        ],
    ));

    let columns: Vec<Vec<String>> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| {
            vec![
                cell(&c.name),
                code(&c.json_path),
                cell(&c.type_),
                if c.priority.unwrap_or(0) == 0 {
                    "`kubectl get`".into()
                } else {
                    "`kubectl get -o wide`".into()
                },
            ]
        })
        .collect();
    if !columns.is_empty() {
        out.push_str("### Printer columns\n\n");
        out.push_str(&table(
            &["Column", "JSONPath", "Type", "Shown by"],
            &columns,
        ));
    }

    let mut fields = Vec::new();
    walk(&schema, "", &mut fields);
    out.push_str("### Fields\n\n");
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|f| {
            vec![
                code(&f.path),
                cell(&f.type_),
                if f.required {
                    "yes".into()
                } else {
                    String::new()
                },
                f.default.as_deref().map(cell).unwrap_or_default(),
                cell(&f.description),
            ]
        })
        .collect();
    out.push_str(&table(
        &["Field", "Type", "Required", "Default", "Description"],
        &rows,
    ));
    Ok(out)
}

/// Appends a row for every property under `schema` (depth first, by
/// name), with `prefix` as the path of `schema` itself.
fn walk(schema: &Value, prefix: &str, out: &mut Vec<Field>) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort();
    for name in names {
        let property = &properties[name];
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let description = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        out.push(Field {
            type_: type_name(property),
            required: required.contains(&name.as_str()),
            default: property
                .get("default")
                .map(|d| format!("`{d}`"))
                .or_else(|| stated_default(&description)),
            description,
            path: path.clone(),
        });
        walk(property, &path, out);
        if let Some(items) = property.get("items") {
            walk(items, &format!("{path}[]"), out);
        }
    }
}

/// The type of a property as a reader would write it: `string`,
/// `integer (int32)`, `[]string`, `map[string]string`, or an enum's values.
fn type_name(schema: &Value) -> String {
    let type_ = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        return format!("{type_}, one of {}", values.join(", "));
    }
    match type_ {
        "array" => format!(
            "[]{}",
            schema
                .get("items")
                .map_or_else(|| "any".to_owned(), type_name)
        ),
        "object" => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => format!("map[string]{}", type_name(values)),
            _ => "object".to_owned(),
        },
        other => match schema.get("format").and_then(Value::as_str) {
            Some(format) => format!("{other} ({format})"),
            None => other.to_owned(),
        },
    }
}

/// The default a description states (`Default: x.` or ``Default `x`.``),
/// for the Default column; the description keeps saying it too.
fn stated_default(description: &str) -> Option<String> {
    let text = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = text
        .match_indices("Default")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || text[..i].ends_with(". "))?;
    let rest = text[start + "Default".len()..]
        .trim_start_matches(':')
        .trim_start();
    let sentence = rest.split(". ").next().unwrap_or(rest);
    let sentence = sentence.strip_suffix('.').unwrap_or(sentence).trim();
    (!sentence.is_empty()).then(|| sentence.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_read_from_the_sentence_that_states_them() {
        assert_eq!(
            stated_default("Longest lifetime. Default `2160h` (90 days)."),
            Some("`2160h` (90 days)".into())
        );
        assert_eq!(
            stated_default("Leaf lifetime.\nDefault: `maxDuration`."),
            Some("`maxDuration`".into())
        );
        assert_eq!(
            stated_default("Split. Default `0.3333`."),
            Some("`0.3333`".into())
        );
        assert_eq!(
            stated_default("How long. Default: until the\nlast leaf expires. More."),
            Some("until the last leaf expires".into())
        );
        assert_eq!(stated_default("The defaultDuration field."), None);
    }

    #[test]
    fn every_nested_property_gets_a_row_with_its_type_and_requiredness() {
        let schema = json!({
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["sources"],
                    "properties": {
                        "sources": {
                            "type": "array",
                            "items": {"type": "object", "properties": {
                                "inline": {"type": "string", "description": "PEM."}
                            }}
                        },
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "algorithm": {"type": "string", "enum": ["A", "B"]},
                        "count": {"type": "integer", "format": "int32", "default": 3}
                    }
                }
            }
        });
        let mut fields = Vec::new();
        walk(&schema, "", &mut fields);
        let rows: Vec<(&str, &str, bool, Option<&str>)> = fields
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.type_.as_str(),
                    f.required,
                    f.default.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("spec", "object", false, None),
                ("spec.algorithm", "string, one of `A`, `B`", false, None),
                ("spec.count", "integer (int32)", false, Some("`3`")),
                ("spec.labels", "map[string]string", false, None),
                ("spec.sources", "[]object", true, None),
                ("spec.sources[].inline", "string", false, None),
            ]
        );
    }
}
