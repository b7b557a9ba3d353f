//! What every reconciler of the issuer shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use capstan_common::events::Recorder;
use capstan_common::lease::Leadership;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::request::plan::IssuerKind;
use crate::signing::ReadyCa;

/// Field manager of the issuer's status and Secret writes.
pub const FIELD_MANAGER: &str = "capstan-issuer";

/// An issuer, by kind, namespace (for `CAIssuer`) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IssuerKey {
    /// `CAIssuer` or `ClusterCAIssuer`.
    pub kind: IssuerKind,
    /// Namespace of a `CAIssuer`; `None` for a `ClusterCAIssuer`.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl IssuerKey {
    /// Metric labels: kind, namespace (empty for cluster issuers), name.
    #[must_use]
    pub fn labels(&self) -> [&str; 3] {
        [
            self.kind.kind(),
            self.namespace.as_deref().unwrap_or(""),
            &self.name,
        ]
    }
}

impl std::fmt::Display for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} -n {ns}", self.kind.kind(), self.name),
            None => write!(f, "{}/{}", self.kind.kind(), self.name),
        }
    }
}

/// The CAs that are loaded and ready to sign, per issuer. The issuer
/// controller fills it; the request controllers read it. Every change bumps a
/// generation so the request controllers re-check waiting requests.
#[derive(Clone)]
pub struct Signers {
    ready: Arc<RwLock<HashMap<IssuerKey, Arc<ReadyCa>>>>,
    changed: watch::Sender<u64>,
}

impl Default for Signers {
    fn default() -> Self {
        Self {
            ready: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Signers {
    /// The ready CA of `key`, if any.
    #[must_use]
    pub fn get(&self, key: &IssuerKey) -> Option<Arc<ReadyCa>> {
        self.ready.read().ok()?.get(key).cloned()
    }

    /// Installs (or replaces) the ready CA of `key`; a no-op when the same CA
    /// and policy are already installed.
    pub fn set(&self, key: IssuerKey, ca: ReadyCa) {
        let Ok(mut ready) = self.ready.write() else {
            return;
        };
        if ready.get(&key).is_some_and(|old| **old == ca) {
            return;
        }
        ready.insert(key, Arc::new(ca));
        drop(ready);
        self.changed.send_modify(|g| *g += 1);
    }

    /// Removes the CA of `key` (the issuer is gone or not ready).
    pub fn remove(&self, key: &IssuerKey) {
        let removed = self.ready.write().ok().and_then(|mut r| r.remove(key));
        if removed.is_some() {
            self.changed.send_modify(|g| *g += 1);
        }
    }

    /// The issuers whose CA is loaded.
    #[must_use]
    pub fn keys(&self) -> Vec<IssuerKey> {
        self.ready
            .read()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that changes whenever a CA is installed or removed.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Shared state of the issuer's controllers.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Loaded CAs.
    pub signers: Signers,
    /// Namespace of `ClusterCAIssuer` CA Secrets.
    pub cluster_resource_namespace: String,
    /// Reconciles run at once per controller.
    pub concurrent_workers: u16,
}
