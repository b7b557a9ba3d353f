//! The rotator's Prometheus metrics.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the rotator exports, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    /// Bundle keys written, by target namespace and ConfigMap.
    pub bundle_updates: IntCounterVec,
    /// Namespaces selected, per `CABundle`.
    pub bundle_targets: IntGaugeVec,
    /// Selected namespaces holding the current bundle, per `CABundle`.
    pub bundle_targets_in_sync: IntGaugeVec,
    /// Rollouts started, by namespace and workload kind.
    pub rollouts_triggered: IntCounterVec,
    /// Rollouts seen to finish, by namespace and workload kind.
    pub rollouts_completed: IntCounterVec,
    /// Rollouts given up on, by namespace and workload kind.
    pub rollouts_timed_out: IntCounterVec,
    /// Restarts due but waiting for a free slot in their namespace.
    pub rollouts_waiting: IntGauge,
    /// Secrets and ConfigMaps whose content is watched, by controller
    /// (`restart`: used by opted-in workloads; `inject`: read by annotated
    /// ConfigMaps; `bundle`: read by `CABundle`s).
    pub sources_watched: IntGaugeVec,
    /// Reconcile errors by controller and category.
    pub reconcile_errors: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// # Errors
    /// When a metric is registered twice.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let m = Self {
            bundle_updates: counter(
                "capstan_rotator_bundle_updates_total",
                "CA bundle keys written into ConfigMaps.",
                &["namespace", "configmap"],
            )?,
            bundle_targets: IntGaugeVec::new(
                Opts::new(
                    "capstan_rotator_bundle_targets",
                    "Namespaces a CABundle selects.",
                ),
                &["bundle"],
            )?,
            bundle_targets_in_sync: IntGaugeVec::new(
                Opts::new(
                    "capstan_rotator_bundle_targets_in_sync",
                    "Selected namespaces holding the current bundle.",
                ),
                &["bundle"],
            )?,
            rollouts_triggered: counter(
                "capstan_rotator_rollouts_triggered_total",
                "Rollouts started because a Secret or ConfigMap changed.",
                &["namespace", "kind"],
            )?,
            rollouts_completed: counter(
                "capstan_rotator_rollouts_completed_total",
                "Rollouts seen to complete.",
                &["namespace", "kind"],
            )?,
            rollouts_timed_out: counter(
                "capstan_rotator_rollouts_timed_out_total",
                "Rollouts that did not complete within the timeout.",
                &["namespace", "kind"],
            )?,
            rollouts_waiting: IntGauge::new(
                "capstan_rotator_rollouts_waiting",
                "Restarts due but waiting for a free slot in their namespace.",
            )?,
            sources_watched: IntGaugeVec::new(
                Opts::new(
                    "capstan_rotator_sources_watched",
                    "Secrets and ConfigMaps whose content the rotator watches, by controller.",
                ),
                &["controller"],
            )?,
            reconcile_errors: counter(
                "capstan_rotator_reconcile_errors_total",
                "Reconcile errors by controller and category.",
                &["controller", "category"],
            )?,
        };
        registry.register(Box::new(m.bundle_updates.clone()))?;
        registry.register(Box::new(m.bundle_targets.clone()))?;
        registry.register(Box::new(m.bundle_targets_in_sync.clone()))?;
        registry.register(Box::new(m.rollouts_triggered.clone()))?;
        registry.register(Box::new(m.rollouts_completed.clone()))?;
        registry.register(Box::new(m.rollouts_timed_out.clone()))?;
        registry.register(Box::new(m.rollouts_waiting.clone()))?;
        registry.register(Box::new(m.sources_watched.clone()))?;
        registry.register(Box::new(m.reconcile_errors.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_once() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).expect("register once");
        m.bundle_updates.with_label_values(&["ns", "cm"]).inc();
        m.bundle_targets.with_label_values(&["b"]).set(3);
        m.bundle_targets_in_sync.with_label_values(&["b"]).set(3);
        m.rollouts_triggered
            .with_label_values(&["ns", "Deployment"])
            .inc();
        m.rollouts_completed
            .with_label_values(&["ns", "Deployment"])
            .inc();
        m.rollouts_timed_out
            .with_label_values(&["ns", "Deployment"])
            .inc();
        m.reconcile_errors
            .with_label_values(&["bundle", "APIError"])
            .inc();
        m.sources_watched.with_label_values(&["restart"]).set(1);
        assert_eq!(registry.gather().len(), 9);
        assert!(Metrics::register(&registry).is_err());
    }
}
