//! CA bundles in ConfigMaps: from annotated ConfigMaps and from `CABundle`
//! resources.
//!
//! ```text
//!  ConfigMaps (metadata) ──► inject ──► the annotated ConfigMap's bundle key
//!  Secrets (metadata) ────┬─┘    ▲
//!  CAIssuers, ClusterCAIssuers ──┘ (which ConfigMaps read them: deps)
//!                         │
//!                         └─► controller ──► a ConfigMap per selected namespace,
//!  CABundles, Namespaces (metadata),             the CABundle's status
//!  ConfigMaps (metadata) ─────┘
//! ```
//!
//! Only Secrets and ConfigMaps that are sources or targets are ever read in
//! full, and their content is not kept between reconciles.
//!
//! * [`source`] — from a source's data to a bundle, or why there is none;
//! * [`select`] — the namespaces a `CABundle` selects and what exists there;
//! * [`targets`] — what to create, update or delete per namespace;
//! * [`status`] — a `CABundle`'s status;
//! * [`conflict`] — two writers on one key, sources that are targets;
//! * [`deps`] — which annotated ConfigMaps read which sources;
//! * [`inject`] — IO glue of the annotation-driven injection;
//! * [`controller`] — IO glue of `CABundle`s.

pub mod conflict;
pub mod controller;
pub mod deps;
pub mod inject;
pub mod select;
pub mod source;
pub mod status;
pub mod targets;

use std::sync::Arc;
use std::time::Duration;

use capstan_common::served::{CAPSTAN_INSTALL, CrdGate, RequiredCrd};
use k8s_openapi::api::core::v1::ObjectReference;
use tokio_util::sync::CancellationToken;

use crate::api::ca_bundle::CABundle;
use crate::context::Context;

/// How often every bundle is rebuilt without any change seen: expired
/// certificates leave bundles at the latest this long after they expire.
pub const RESYNC: Duration = Duration::from_secs(60 * 60);

/// What the bundle controllers need besides the [`Context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Namespace of `ClusterCAIssuer` CA Secrets.
    pub cluster_resource_namespace: String,
    /// Period of the full rebuild.
    pub resync: Duration,
}

/// Runs the injection and `CABundle` controllers until `shutdown`; the
/// `CABundle` controller once `crds` sees its CRD served (injection reads
/// issuers dynamically and needs no CRD).
pub async fn run(ctx: Arc<Context>, config: Config, crds: CrdGate, shutdown: CancellationToken) {
    tracing::info!(
        cluster_resource_namespace = %config.cluster_resource_namespace,
        "bundle controllers starting"
    );
    let client = ctx.client.clone();
    let bundles = [RequiredCrd::of::<CABundle>(CAPSTAN_INSTALL)];
    tokio::join!(
        inject::run(ctx.clone(), config.clone(), shutdown.clone()),
        crds.run_when_served(
            &client,
            "CABundle",
            &bundles,
            &shutdown,
            controller::run(ctx, config, shutdown.clone()),
        ),
    );
}

/// A reference to a ConfigMap for Events.
#[must_use]
pub fn config_map_ref(namespace: &str, name: &str, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("ConfigMap".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

/// Records `record` about `regarding`; a failure is logged, not returned:
/// an Event lost must not fail the reconcile that made the change.
pub async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    record: &capstan_common::events::Record,
) {
    let name = regarding.name.as_deref().unwrap_or_default();
    let namespace = regarding.namespace.as_deref().unwrap_or_default();
    tracing::info!(%name, %namespace, reason = %record.reason, "{}", record.message);
    ctx.recorder.publish_or_warn(regarding, record).await;
}
