//! Watches of a namespaced kind inside the scope: one cluster-wide watch,
//! or, when the scope is a fixed list of namespaces, one watch per
//! namespace, so the rotator needs read access to those namespaces only.
//!
//! Several watches merged into one stream would each announce their own
//! initial list, and a reflector store reading them would keep only the
//! namespace listed last. [`InitMerge`] makes the merged stream look like
//! one watch: one initial list that ends when every namespace has been
//! listed; later re-lists of one namespace arrive as plain applies.

use std::collections::BTreeSet;

use capstan_common::backoff::WatchBackoff;
use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt, watcher};

use super::Scope;

/// Makes the events of several watches (numbered `0..n`) one watch's. Pure.
#[derive(Debug)]
pub struct InitMerge {
    watches: usize,
    init_sent: bool,
    listed: BTreeSet<usize>,
}

impl InitMerge {
    /// Merging `watches` watches.
    #[must_use]
    pub fn new(watches: usize) -> Self {
        Self {
            watches,
            init_sent: false,
            listed: BTreeSet::new(),
        }
    }

    fn initial_list_done(&self) -> bool {
        self.listed.len() >= self.watches
    }

    /// The event to pass on for `event` from watch `from`, if any.
    pub fn event<K>(&mut self, from: usize, event: watcher::Event<K>) -> Option<watcher::Event<K>> {
        if self.initial_list_done() {
            return match event {
                watcher::Event::Init | watcher::Event::InitDone => None,
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                    Some(watcher::Event::Apply(o))
                }
                watcher::Event::Delete(o) => Some(watcher::Event::Delete(o)),
            };
        }
        match event {
            watcher::Event::Init if self.init_sent => None,
            watcher::Event::Init => {
                self.init_sent = true;
                Some(watcher::Event::Init)
            }
            watcher::Event::InitDone => {
                self.listed.insert(from);
                self.initial_list_done().then_some(watcher::Event::InitDone)
            }
            watcher::Event::InitApply(o) => Some(watcher::Event::InitApply(o)),
            other => Some(other),
        }
    }
}

/// The watch events of `K` (through `api_of`, e.g. metadata only) in the
/// scope's namespaces: cluster-wide, or per namespace for a fixed list.
/// Errors are retried with backoff and not passed on. Objects outside the
/// scope still arrive from a cluster-wide watch: the caller decides with
/// [`super::namespaces::Live::admits`].
pub fn scoped<K>(
    client: &kube::Client,
    scope: &Scope,
    config: &watcher::Config,
) -> BoxStream<'static, watcher::Event<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let one = |api: Api<K>| {
        watcher(api, config.clone())
            .backoff(WatchBackoff::default())
            .filter_map(|e| std::future::ready(e.ok()))
    };
    let Some(namespaces) = scope.fixed() else {
        return one(Api::all(client.clone())).boxed();
    };
    let n = namespaces.len();
    if n == 0 {
        // Every listed namespace is ignored: an empty, finished list, and
        // then nothing, for ever.
        return futures::stream::iter([watcher::Event::Init, watcher::Event::InitDone])
            .chain(futures::stream::pending())
            .boxed();
    }
    let tagged = namespaces.into_iter().enumerate().map(|(i, ns)| {
        one(Api::namespaced(client.clone(), &ns))
            .map(move |e| (i, e))
            .boxed()
    });
    let mut merge = InitMerge::new(n);
    let merged = futures::stream::select_all(tagged)
        .filter_map(move |(i, e)| std::future::ready(merge.event(i, e)));
    merged.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_watches_read_as_one() {
        let mut m = InitMerge::new(2);
        let mut out = Vec::new();
        let events = [
            (0, watcher::Event::Init),
            (1, watcher::Event::Init),
            (0, watcher::Event::InitApply("a")),
            (1, watcher::Event::InitApply("b")),
            (0, watcher::Event::InitDone),
            // Watch 1 restarts before it finished: its done counts once.
            (1, watcher::Event::Init),
            (1, watcher::Event::InitApply("b")),
            (0, watcher::Event::InitDone),
            (1, watcher::Event::InitDone),
            (0, watcher::Event::Apply("a2")),
            // A later re-list of one namespace: applies only.
            (1, watcher::Event::Init),
            (1, watcher::Event::InitApply("b")),
            (1, watcher::Event::InitDone),
            (1, watcher::Event::Delete("b")),
        ];
        for (i, e) in events {
            if let Some(e) = m.event(i, e) {
                out.push(format!("{e:?}"));
            }
        }
        assert_eq!(
            out,
            [
                "Init",
                "InitApply(\"a\")",
                "InitApply(\"b\")",
                "InitApply(\"b\")",
                "InitDone",
                "Apply(\"a2\")",
                "Apply(\"b\")",
                "Delete(\"b\")",
            ]
        );
    }
}
