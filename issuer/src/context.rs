//! What every reconciler of the issuer shares.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use capstan_common::backoff::Retries;
use capstan_common::events::Recorder;
use capstan_common::lease::Leadership;
use kube::api::{PatchParams, PostParams};
use tokio::sync::watch;

use crate::api::identity::IssuerKey;
use crate::error::ObjectName;
use crate::metrics::Metrics;
use crate::signing::ReadyCa;

/// Field manager of the issuer's status and Secret writes.
pub const FIELD_MANAGER: &str = "capstan-issuer";

/// Parameters of every issuer patch: written as [`FIELD_MANAGER`], so
/// `managedFields` names capstan-issuer.
#[must_use]
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Parameters of every issuer create and replace, as [`FIELD_MANAGER`].
#[must_use]
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// The CAs that are loaded and ready to sign, per issuer. The issuer
/// controller fills it; the request controllers read it. Every change bumps a
/// generation so the request controllers re-check waiting requests.
///
/// Deleted issuers are remembered by UID, so a reconcile that was already
/// running when its issuer was deleted cannot install the CA (or its
/// metrics) again afterwards: [`Signers::update`] and [`Signers::forget`]
/// take the same lock.
#[derive(Clone)]
pub struct Signers {
    ready: Arc<RwLock<HashMap<IssuerKey, Arc<ReadyCa>>>>,
    deleted: Arc<Mutex<HashSet<String>>>,
    changed: watch::Sender<u64>,
}

impl Default for Signers {
    fn default() -> Self {
        Self {
            ready: Arc::default(),
            deleted: Arc::default(),
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

    /// The issuers whose CA is loaded.
    #[must_use]
    pub fn keys(&self) -> Vec<IssuerKey> {
        self.ready
            .read()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Installs (`Some`, a no-op when the same CA and policy are installed)
    /// or removes (`None`) the CA of `key` for the issuer object with `uid`,
    /// then runs `also` (its metrics) — unless that issuer was deleted in the
    /// meantime. Returns whether it is still live.
    pub fn update(
        &self,
        key: &IssuerKey,
        uid: &str,
        ca: Option<ReadyCa>,
        also: impl FnOnce(),
    ) -> bool {
        let Ok(deleted) = self.deleted.lock() else {
            return false;
        };
        if deleted.contains(uid) {
            return false;
        }
        let changed = match ca {
            Some(ca) => self.install(key.clone(), ca),
            None => self.uninstall(key),
        };
        also();
        drop(deleted);
        if changed {
            self.changed.send_modify(|g| *g += 1);
        }
        true
    }

    /// Forgets a deleted issuer: drops its CA, runs `also` (drops its
    /// metrics), and remembers `uid` so no reconcile brings them back.
    pub fn forget(&self, key: &IssuerKey, uid: Option<&str>, also: impl FnOnce()) {
        let Ok(mut deleted) = self.deleted.lock() else {
            return;
        };
        if let Some(uid) = uid {
            deleted.insert(uid.to_owned());
        }
        let changed = self.uninstall(key);
        also();
        drop(deleted);
        if changed {
            self.changed.send_modify(|g| *g += 1);
        }
    }

    fn install(&self, key: IssuerKey, ca: ReadyCa) -> bool {
        let Ok(mut ready) = self.ready.write() else {
            return false;
        };
        if ready.get(&key).is_some_and(|old| **old == ca) {
            return false;
        }
        ready.insert(key, Arc::new(ca));
        true
    }

    fn uninstall(&self, key: &IssuerKey) -> bool {
        self.ready
            .write()
            .ok()
            .and_then(|mut r| r.remove(key))
            .is_some()
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
    /// Consecutive transient failures per object, for the workspace's
    /// reconcile backoff.
    pub retries: Retries<ObjectName>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::api::identity::IssuerKind;
    use crate::fixtures::ready_ca;

    fn key() -> IssuerKey {
        IssuerKey {
            kind: IssuerKind::ClusterCaIssuer,
            namespace: None,
            name: "ca".into(),
        }
    }

    #[test]
    fn a_deleted_issuer_cannot_be_installed_again_by_a_late_reconcile() {
        let signers = Signers::default();
        let changes = signers.subscribe();
        let mut metrics_set = 0;
        assert!(signers.update(&key(), "uid-1", Some(ready_ca()), || metrics_set += 1));
        assert!(signers.get(&key()).is_some());
        assert!(changes.has_changed().expect("open"));
        let mut metrics_dropped = false;
        signers.forget(&key(), Some("uid-1"), || metrics_dropped = true);
        assert!(metrics_dropped && signers.get(&key()).is_none());
        // The reconcile that was running when the issuer was deleted.
        assert!(!signers.update(&key(), "uid-1", Some(ready_ca()), || metrics_set += 1));
        assert!(signers.get(&key()).is_none(), "stays gone");
        assert_eq!(metrics_set, 1, "and its metrics stay gone");
        // An issuer re-created with the same name is a new object.
        assert!(signers.update(&key(), "uid-2", Some(ready_ca()), || {}));
        assert!(signers.get(&key()).is_some());
    }
}
