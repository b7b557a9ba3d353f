//! `docs/reference/metrics.md`: every metric both binaries export on
//! `/metrics`, read from the registries they build.

use anyhow::{Context, Result};
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{HistogramVec, Registry};

use super::markdown::{cell, code, table};

/// One metric as the page describes it.
#[derive(Debug, Clone, PartialEq)]
struct Metric {
    name: String,
    type_: MetricType,
    labels: Vec<String>,
    help: String,
    /// Upper bounds of a histogram's buckets.
    buckets: Vec<f64>,
}

/// Describes a collector's metrics from its descriptors and an empty
/// collection (which still carries the type).
fn describe(collector: &dyn Collector) -> Vec<Metric> {
    let types: Vec<(String, MetricType)> = collector
        .collect()
        .iter()
        .map(|f| (f.name().to_owned(), f.get_field_type()))
        .collect();
    collector
        .desc()
        .into_iter()
        .map(|d| Metric {
            name: d.fq_name.clone(),
            type_: types
                .iter()
                .find(|(n, _)| *n == d.fq_name)
                .map_or(MetricType::UNTYPED, |(_, t)| *t),
            labels: d.variable_labels.clone(),
            help: d.help.clone(),
            buckets: Vec::new(),
        })
        .collect()
}

/// A histogram, with its buckets (read from a child with placeholder
/// labels: the metrics described here are never served).
fn describe_histogram(histogram: &HistogramVec) -> Vec<Metric> {
    let mut metrics = describe(histogram);
    for metric in &mut metrics {
        let placeholders = vec![""; metric.labels.len()];
        let child = histogram.with_label_values(&placeholders);
        metric.buckets = child
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .flat_map(|m| m.get_histogram().get_bucket())
            .map(|b| b.upper_bound())
            .collect();
    }
    metrics
}

/// The issuer's metrics. The destructuring names every field, so a new
/// metric does not compile until it is listed here (and documented).
fn issuer() -> Result<Vec<Metric>> {
    let capstan_issuer::metrics::Metrics {
        signed,
        failed,
        signing_seconds,
        ca_not_after,
        ca_next_rotation,
        ready,
        bundle_size,
        reconcile_errors,
        pending,
    } = capstan_issuer::metrics::Metrics::register(&Registry::new())
        .context("registering the issuer's metrics")?;
    let mut metrics = Vec::new();
    metrics.extend(describe(&signed));
    metrics.extend(describe(&failed));
    metrics.extend(describe_histogram(&signing_seconds));
    metrics.extend(describe(&ca_not_after));
    metrics.extend(describe(&ca_next_rotation));
    metrics.extend(describe(&ready));
    metrics.extend(describe(&bundle_size));
    metrics.extend(describe(&reconcile_errors));
    metrics.extend(describe(&pending));
    Ok(metrics)
}

/// The rotator's metrics; every field named, as for [`issuer`].
fn rotator() -> Result<Vec<Metric>> {
    let capstan_rotator::metrics::Metrics {
        bundle_updates,
        bundle_targets,
        bundle_targets_in_sync,
        rollouts_triggered,
        rollouts_completed,
        rollouts_timed_out,
        rollouts_waiting,
        sources_watched,
        reconcile_errors,
    } = capstan_rotator::metrics::Metrics::register(&Registry::new())
        .context("registering the rotator's metrics")?;
    let mut metrics = Vec::new();
    metrics.extend(describe(&bundle_updates));
    metrics.extend(describe(&bundle_targets));
    metrics.extend(describe(&bundle_targets_in_sync));
    metrics.extend(describe(&rollouts_triggered));
    metrics.extend(describe(&rollouts_completed));
    metrics.extend(describe(&rollouts_timed_out));
    metrics.extend(describe(&rollouts_waiting));
    metrics.extend(describe(&sources_watched));
    metrics.extend(describe(&reconcile_errors));
    Ok(metrics)
}

/// What the registry both binaries start from already holds (the process
/// collector).
fn process() -> Vec<Metric> {
    capstan_common::serve::registry()
        .gather()
        .iter()
        .map(|f| Metric {
            name: f.name().to_owned(),
            type_: f.get_field_type(),
            labels: Vec::new(),
            help: f.help().to_owned(),
            buckets: Vec::new(),
        })
        .collect()
}

fn type_name(type_: MetricType) -> &'static str {
    match type_ {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

fn section(title: &str, intro: &str, mut metrics: Vec<Metric>) -> String {
    metrics.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = metrics
        .iter()
        .map(|m| {
            let mut help = m.help.clone();
            if m.type_ == MetricType::HISTOGRAM {
                let bounds: Vec<String> = m.buckets.iter().map(ToString::to_string).collect();
                help.push_str(&format!(
                    " Series `{0}_bucket` (label `le`; buckets {1}, `+Inf`), `{0}_sum`, `{0}_count`.",
                    m.name,
                    bounds.join(", ")
                ));
            }
            vec![
                code(&m.name),
                type_name(m.type_).to_owned(),
                m.labels.iter().map(|l| code(l)).collect::<Vec<_>>().join(", "),
                cell(&help),
            ]
        })
        .collect();
    format!(
        "## {title}\n\n{intro}\n\n{}",
        table(&["Metric", "Type", "Labels", "Help"], &rows)
    )
}

/// The page for both binaries.
///
/// # Errors
/// When a component's metrics cannot be registered.
pub fn render() -> Result<String> {
    let mut out = super::header(
        "the metric registries (`capstan_issuer::metrics`, `capstan_rotator::metrics`, \
         `capstan_common::serve::registry`)",
    );
    out.push_str("\n# Metrics reference\n\n");
    out.push_str(
        "Both binaries serve these on `/metrics` (`--metrics-listen-address`, default \
         `:9402`), in the Prometheus text format. Series with labels appear once the \
         first object is seen. The [monitoring mixin](../mixin/) alerts and records on \
         them.\n\n",
    );
    out.push_str(&section(
        "capstan-issuer",
        "Issuer labels: `issuer_kind` (`CAIssuer` or `ClusterCAIssuer`), \
         `issuer_namespace` (empty for a `ClusterCAIssuer`), `issuer_name`.",
        issuer()?,
    ));
    out.push_str(&section(
        "capstan-rotator",
        "Bundle labels: `bundle` is the `CABundle`'s name; `namespace` and `configmap` name \
         the ConfigMap written; `kind` is `Deployment`, `StatefulSet` or `DaemonSet`.",
        rotator()?,
    ));
    out.push_str(&section(
        "Both binaries: the process",
        "The process collector's metrics, as every Prometheus client library exports them.",
        process(),
    ));
    Ok(out.trim_end().to_owned() + "\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use prometheus::{HistogramOpts, IntCounterVec, Opts};

    #[test]
    fn labelled_metrics_are_described_before_any_series_exists() {
        let counter =
            IntCounterVec::new(Opts::new("x_total", "Things."), &["kind", "name"]).expect("new");
        assert_eq!(
            describe(&counter),
            vec![Metric {
                name: "x_total".into(),
                type_: MetricType::COUNTER,
                labels: vec!["kind".into(), "name".into()],
                help: "Things.".into(),
                buckets: Vec::new(),
            }]
        );
        let histogram = HistogramVec::new(
            HistogramOpts::new("d_seconds", "Time.").buckets(vec![0.5, 1.0]),
            &["kind"],
        )
        .expect("new");
        let described = describe_histogram(&histogram);
        assert_eq!(described[0].type_, MetricType::HISTOGRAM);
        assert_eq!(described[0].buckets, vec![0.5, 1.0]);
    }

    #[test]
    fn both_components_export_their_prefixed_metrics() {
        let issuer = issuer().expect("issuer");
        assert!(issuer.iter().all(|m| m.name.starts_with("capstan_issuer_")));
        let rotator = rotator().expect("rotator");
        assert!(
            rotator
                .iter()
                .all(|m| m.name.starts_with("capstan_rotator_"))
        );
        assert!(
            process()
                .iter()
                .any(|m| m.name == "process_resident_memory_bytes"),
            "the process collector is registered"
        );
    }
}
