//! The issuer's Prometheus metrics.

use crate::api::identity::IssuerKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric the issuer exports, registered once per process.
#[derive(Clone)]
pub struct Metrics {
    /// Requests signed, by issuer kind, namespace and name.
    pub signed: IntCounterVec,
    /// Requests failed for good, by issuer and reason.
    pub failed: IntCounterVec,
    /// Time from the start of a signing reconcile to the written status.
    pub signing_seconds: HistogramVec,
    /// notAfter of the CA that signs, as a Unix timestamp, per issuer.
    pub ca_not_after: IntGaugeVec,
    /// When the signing CA of a self-managed issuer rotates on schedule, as
    /// a Unix timestamp; absent while a rotation is publishing and for a
    /// user-provided CA.
    pub ca_next_rotation: IntGaugeVec,
    /// 1 when the issuer is Ready, else 0.
    pub ready: IntGaugeVec,
    /// CAs in each issuer's published bundle.
    pub bundle_size: IntGaugeVec,
    /// Reconcile errors by controller and category.
    pub reconcile_errors: IntCounterVec,
    /// Requests waiting: approved, not finished, by issuer.
    pub pending: IntGaugeVec,
}

const ISSUER_LABELS: [&str; 3] = ["issuer_kind", "issuer_namespace", "issuer_name"];

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    ///
    /// # Errors
    /// When a metric is registered twice.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let failed_labels = [
            ISSUER_LABELS[0],
            ISSUER_LABELS[1],
            ISSUER_LABELS[2],
            "reason",
        ];
        let metrics = Self {
            signed: IntCounterVec::new(
                Opts::new(
                    "capstan_issuer_requests_signed_total",
                    "Certificate requests signed.",
                ),
                &ISSUER_LABELS,
            )?,
            failed: IntCounterVec::new(
                Opts::new(
                    "capstan_issuer_requests_failed_total",
                    "Certificate requests that failed for good, by reason.",
                ),
                &failed_labels,
            )?,
            signing_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "capstan_issuer_signing_duration_seconds",
                    "Time to sign a request and write its status.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &ISSUER_LABELS,
            )?,
            ca_not_after: IntGaugeVec::new(
                Opts::new(
                    "capstan_issuer_ca_expiration_timestamp_seconds",
                    "notAfter of the signing CA, Unix time.",
                ),
                &ISSUER_LABELS,
            )?,
            ca_next_rotation: IntGaugeVec::new(
                Opts::new(
                    "capstan_issuer_ca_next_rotation_timestamp_seconds",
                    "When the self-managed signing CA next rotates on schedule, Unix time; absent while a new CA is being published and for a user-provided CA.",
                ),
                &ISSUER_LABELS,
            )?,
            ready: IntGaugeVec::new(
                Opts::new("capstan_issuer_ready", "1 when the issuer is Ready."),
                &ISSUER_LABELS,
            )?,
            bundle_size: IntGaugeVec::new(
                Opts::new(
                    "capstan_issuer_bundle_certificates",
                    "CAs in the issuer's published bundle.",
                ),
                &ISSUER_LABELS,
            )?,
            reconcile_errors: IntCounterVec::new(
                Opts::new(
                    "capstan_issuer_reconcile_errors_total",
                    "Reconcile errors by controller and category.",
                ),
                &["controller", "category"],
            )?,
            pending: IntGaugeVec::new(
                Opts::new(
                    "capstan_issuer_requests_pending",
                    "Approved requests not yet finished.",
                ),
                &ISSUER_LABELS,
            )?,
        };
        registry.register(Box::new(metrics.signed.clone()))?;
        registry.register(Box::new(metrics.failed.clone()))?;
        registry.register(Box::new(metrics.signing_seconds.clone()))?;
        registry.register(Box::new(metrics.ca_not_after.clone()))?;
        registry.register(Box::new(metrics.ca_next_rotation.clone()))?;
        registry.register(Box::new(metrics.ready.clone()))?;
        registry.register(Box::new(metrics.bundle_size.clone()))?;
        registry.register(Box::new(metrics.reconcile_errors.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        Ok(metrics)
    }
}

impl Metrics {
    /// Sets the next scheduled rotation of the issuer with `labels`, or
    /// removes the series when there is none.
    pub fn set_next_rotation(&self, labels: &[&str], at: Option<&Time>) {
        match at {
            Some(at) => self
                .ca_next_rotation
                .with_label_values(labels)
                .set(at.0.as_second()),
            // Absent already is fine.
            None => {
                let _ = self.ca_next_rotation.remove_label_values(labels);
            }
        }
    }

    /// Drops every per-issuer series of a deleted issuer, so no alert fires
    /// for a CA that no longer exists. Counters keep their history.
    pub fn forget_issuer(&self, key: &IssuerKey) {
        let labels = key.labels();
        for gauge in [
            &self.ca_not_after,
            &self.ca_next_rotation,
            &self.ready,
            &self.bundle_size,
            &self.pending,
        ] {
            // Absent series (never set) are fine to skip.
            let _ = gauge.remove_label_values(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_exports_every_metric() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).expect("register once");
        m.signed
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .inc();
        m.failed
            .with_label_values(&["ClusterCAIssuer", "", "ca", "Failed"])
            .inc();
        m.signing_seconds
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .observe(0.01);
        m.ca_not_after
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .set(1);
        m.ready
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .set(1);
        let labels = ["ClusterCAIssuer", "", "ca"];
        m.set_next_rotation(&labels, Some(&crate::fixtures::at(60)));
        assert_eq!(
            m.ca_next_rotation.with_label_values(&labels).get(),
            1_767_225_660
        );
        m.set_next_rotation(&labels, None);
        assert!(
            m.ca_next_rotation.remove_label_values(&labels).is_err(),
            "removed with no next rotation"
        );
        m.set_next_rotation(&labels, Some(&crate::fixtures::at(60)));
        m.bundle_size
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .set(2);
        m.reconcile_errors
            .with_label_values(&["request", "APIError"])
            .inc();
        m.pending
            .with_label_values(&["ClusterCAIssuer", "", "ca"])
            .set(0);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(names.len(), 9, "{names:?}");
        assert!(
            Metrics::register(&registry).is_err(),
            "double registration must fail"
        );
    }
}
