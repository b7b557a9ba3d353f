//! The live scope: [`Scope`] plus, when its selector needs them, the labels
//! of every Namespace, followed from a metadata watch. Changes of labels
//! move namespaces into or out of scope; subscribers hear of each move
//! ([`Moved`]) so they can pick up or drop what lives there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use capstan_common::backoff::WatchBackoff;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::Scope;

/// A namespace that entered (`admitted`) or left the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The namespace.
    pub namespace: String,
    /// Whether it is in scope now.
    pub admitted: bool,
}

/// Namespace labels as last seen, and what a watch event changes. Pure.
#[derive(Debug, Default)]
pub struct Labels {
    known: HashMap<String, BTreeMap<String, String>>,
    relist: Option<HashMap<String, BTreeMap<String, String>>>,
    synced: bool,
}

impl Labels {
    /// Whether a full list has been seen.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The labels of `namespace`, if it is known to exist.
    #[must_use]
    pub fn get(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.known.get(namespace)
    }

    /// Applies a watch event of (name, labels); returns the namespaces that
    /// moved in or out of `scope`, sorted.
    pub fn apply(
        &mut self,
        scope: &Scope,
        event: watcher::Event<(String, BTreeMap<String, String>)>,
    ) -> Vec<Moved> {
        let before: BTreeMap<String, bool> = self
            .known
            .keys()
            .map(|n| (n.clone(), scope.admits(n, self.known.get(n))))
            .collect();
        match event {
            watcher::Event::Init => {
                self.relist = Some(HashMap::new());
                return Vec::new();
            }
            watcher::Event::InitApply((name, labels)) => {
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(name, labels);
                return Vec::new();
            }
            watcher::Event::InitDone => {
                self.known = self.relist.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply((name, labels)) => {
                self.known.insert(name, labels);
            }
            watcher::Event::Delete((name, _)) => {
                self.known.remove(&name);
            }
        }
        let mut names: Vec<&String> = before.keys().chain(self.known.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| {
                let was = before.get(n).copied().unwrap_or(false);
                let is = scope.admits(n, self.known.get(n));
                (was != is).then(|| Moved {
                    namespace: n.clone(),
                    admitted: is,
                })
            })
            .collect()
    }
}

/// The scope shared by the rotator's controllers.
#[derive(Debug)]
pub struct Live {
    scope: Scope,
    labels: Mutex<Labels>,
    moved: broadcast::Sender<Moved>,
    synced: watch::Sender<bool>,
}

impl Live {
    /// A live `scope`; [`Live::follow`] keeps the labels when it needs them.
    #[must_use]
    pub fn new(scope: Scope) -> Arc<Self> {
        Arc::new(Self {
            synced: watch::Sender::new(!scope.needs_labels()),
            scope,
            labels: Mutex::new(Labels::default()),
            moved: broadcast::channel(1024).0,
        })
    }

    /// The static part of the scope.
    #[must_use]
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn labels(&self) -> MutexGuard<'_, Labels> {
        self.labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `namespace` is in scope now.
    #[must_use]
    pub fn admits(&self, namespace: &str) -> bool {
        if !self.scope.needs_labels() {
            return self.scope.admits(namespace, None);
        }
        self.scope.admits(namespace, self.labels().get(namespace))
    }

    /// Namespaces moving in or out of scope from now on.
    #[must_use]
    pub fn moves(&self) -> broadcast::Receiver<Moved> {
        self.moved.subscribe()
    }

    /// [`Live::moves`] as a stream. A subscriber that fell more than the
    /// channel's capacity behind is told so in the log.
    pub fn moves_stream(&self) -> impl futures::Stream<Item = Moved> + Send + 'static {
        tokio_stream::wrappers::BroadcastStream::new(self.moves()).filter_map(|m| {
            std::future::ready(match m {
                Ok(m) => Some(m),
                Err(error) => {
                    tracing::warn!(%error, "namespace scope changes were missed; restart the rotator to pick them up");
                    None
                }
            })
        })
    }

    /// Waits until the labels have been listed once (at once without a
    /// selector). `false` when `shutdown` came first.
    pub async fn synced(&self, shutdown: &CancellationToken) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::select! {
            () = shutdown.cancelled() => false,
            ready = rx.wait_for(|s| *s) => ready.is_ok(),
        }
    }

    /// Follows Namespace labels until `shutdown`, when the selector needs
    /// them; returns at once otherwise.
    pub async fn follow(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        if !self.scope.needs_labels() {
            return;
        }
        let events = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .backoff(WatchBackoff::default());
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watching Namespaces for --namespace-selector");
                        continue;
                    }
                    None => return,
                },
            };
            let event = map_event(event, |ns| (ns.name_any(), ns.labels().clone()));
            let moved = {
                let mut labels = self.labels();
                let moved = labels.apply(&self.scope, event);
                if labels.synced() {
                    self.synced.send_replace(true);
                }
                moved
            };
            for m in moved {
                tracing::info!(namespace = %m.namespace, admitted = m.admitted, "namespace {} the rotator's scope", if m.admitted { "entered" } else { "left" });
                // Nobody listening is fine: nothing to pick up or drop.
                let _ = self.moved.send(m);
            }
        }
    }
}

/// `event` with each object mapped by `f`.
pub fn map_event<A, B>(event: watcher::Event<A>, f: impl Fn(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::parse_selector;

    fn ns(name: &str, pairs: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
        (
            name.to_owned(),
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn labels_move_namespaces_in_and_out() {
        let scope = Scope::new([], [], Some(parse_selector("capstan=on").expect("valid")));
        let mut labels = Labels::default();
        assert!(labels.apply(&scope, watcher::Event::Init).is_empty());
        labels.apply(
            &scope,
            watcher::Event::InitApply(ns("a", &[("capstan", "on")])),
        );
        labels.apply(&scope, watcher::Event::InitApply(ns("b", &[])));
        assert!(!labels.synced());
        assert_eq!(
            labels.apply(&scope, watcher::Event::InitDone),
            vec![Moved {
                namespace: "a".into(),
                admitted: true
            }]
        );
        assert!(labels.synced());
        assert_eq!(
            labels.apply(&scope, watcher::Event::Apply(ns("b", &[("capstan", "on")]))),
            vec![Moved {
                namespace: "b".into(),
                admitted: true
            }]
        );
        assert!(
            labels
                .apply(
                    &scope,
                    watcher::Event::Apply(ns("b", &[("capstan", "on"), ("x", "y")]))
                )
                .is_empty(),
            "a label that does not change the answer moves nothing"
        );
        assert_eq!(
            labels.apply(&scope, watcher::Event::Delete(ns("a", &[]))),
            vec![Moved {
                namespace: "a".into(),
                admitted: false
            }]
        );
        // A re-list that no longer finds b moves it out.
        labels.apply(&scope, watcher::Event::Init);
        assert_eq!(
            labels.apply(&scope, watcher::Event::InitDone),
            vec![Moved {
                namespace: "b".into(),
                admitted: false
            }]
        );
    }
}
