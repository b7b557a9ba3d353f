//! Which annotated ConfigMaps read which sources, so that a change of a
//! Secret or an issuer re-reconciles exactly the ConfigMaps that use it.
//!
//! Each reconcile records what it read (the issuer and the Secret it
//! resolved to) before reading it, so a source that appears after a failed
//! read is seen. Nothing of the sources' content is kept here.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use crate::api::injection::InjectSource;

/// A two-way index between dependents (`T`, e.g. a ConfigMap's namespace and
/// name) and the sources they read.
#[derive(Debug)]
pub struct Dependencies<T> {
    by_source: HashMap<InjectSource, BTreeSet<T>>,
    by_dependent: HashMap<T, BTreeSet<InjectSource>>,
}

impl<T> Default for Dependencies<T> {
    fn default() -> Self {
        Self {
            by_source: HashMap::new(),
            by_dependent: HashMap::new(),
        }
    }
}

impl<T: Clone + Ord + Hash> Dependencies<T> {
    /// Records that `dependent` reads exactly `sources` (replacing what it
    /// read before).
    pub fn set(&mut self, dependent: &T, sources: BTreeSet<InjectSource>) {
        self.forget(dependent);
        if sources.is_empty() {
            return;
        }
        for source in &sources {
            self.by_source
                .entry(source.clone())
                .or_default()
                .insert(dependent.clone());
        }
        self.by_dependent.insert(dependent.clone(), sources);
    }

    /// Forgets `dependent` (deleted, or no longer annotated).
    pub fn forget(&mut self, dependent: &T) {
        let Some(sources) = self.by_dependent.remove(dependent) else {
            return;
        };
        for source in sources {
            if let Some(users) = self.by_source.get_mut(&source) {
                users.remove(dependent);
                if users.is_empty() {
                    self.by_source.remove(&source);
                }
            }
        }
    }

    /// The dependents of `source`.
    #[must_use]
    pub fn dependents(&self, source: &InjectSource) -> Vec<T> {
        self.by_source
            .get(source)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many distinct sources are read.
    #[must_use]
    pub fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> InjectSource {
        InjectSource::Secret {
            namespace: "certs".into(),
            name: name.into(),
        }
    }

    #[test]
    fn replaces_forgets_and_maps_back() {
        let mut d = Dependencies::<&str>::default();
        let issuer = InjectSource::ClusterIssuer { name: "ca".into() };
        d.set(&"a", [issuer.clone(), secret("ca")].into());
        d.set(&"b", [secret("ca")].into());
        assert_eq!(d.dependents(&secret("ca")), vec!["a", "b"]);
        assert_eq!(d.dependents(&issuer), vec!["a"]);
        assert_eq!(d.sources(), 2);

        // The issuer now resolves to another Secret.
        d.set(&"a", [issuer.clone(), secret("ca-2")].into());
        assert_eq!(d.dependents(&secret("ca")), vec!["b"]);
        assert_eq!(d.dependents(&secret("ca-2")), vec!["a"]);

        d.forget(&"a");
        d.set(&"b", BTreeSet::new());
        assert!(d.dependents(&issuer).is_empty());
        assert_eq!(d.sources(), 0);
    }
}
