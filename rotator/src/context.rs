//! What the rotator's controllers share.

use capstan_common::events::Recorder;
use capstan_common::lease::Leadership;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::scope::namespaces::Live;

/// Field manager of the rotator's restart writes.
pub const RESTART_MANAGER: &str = "capstan-rotator/restart";
/// Field manager of the rotator's bundle writes.
pub const BUNDLE_MANAGER: &str = "capstan-rotator/bundle";

/// Shared state of the rotator's controllers.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Log and record what would change, change nothing.
    pub dry_run: bool,
    /// The namespaces restarts and bundles act in.
    pub scope: Arc<Live>,
}
