//! When restarts happen: a debounce window per workload, and at most
//! `max_concurrent` rollouts at a time per namespace.
//!
//! The first change a workload sees opens its window; every change inside the
//! window joins the same restart, which starts when the window closes and the
//! namespace has room. A rollout occupies its namespace until it completes or
//! `rollout_timeout` passes. A restart whose patch failed goes back to
//! waiting, with the changes it carried, until a doubling delay passes
//! ([`Scheduler::failed`]); [`Backoff`] does the same for the index's failed
//! fetches and decisions.
//! Pure: the caller passes `now` and acts on what the methods return.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use capstan_common::backoff::Policy;

use super::sources::SourceRef;

/// A workload, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} -n {}", self.kind, self.name, self.namespace)
    }
}

/// Limits of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Changes within this window of the first one make one restart.
    pub debounce: Duration,
    /// Rollouts in flight per namespace.
    pub max_concurrent: usize,
    /// How long a rollout may take before the next one stops waiting for it.
    pub rollout_timeout: Duration,
}

/// A restart to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The workload to roll.
    pub workload: WorkloadKey,
    /// Every source whose change led to it.
    pub changed: BTreeSet<SourceRef>,
    /// How many times it was started before and could not be applied.
    pub failures: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    opened: Instant,
    changed: BTreeSet<SourceRef>,
    /// After a failed patch: not before this instant.
    not_before: Option<Instant>,
    /// Consecutive failed patches.
    failures: u32,
}

impl Pending {
    /// A retry's window has closed already: it is due when its delay ends.
    fn due_at(&self, debounce: Duration) -> Instant {
        self.not_before.unwrap_or(self.opened + debounce)
    }
}

/// How failed patches, fetches and decisions back off: the workspace's one
/// policy for failed reconciles (doubling from 1 s, at most 5 minutes).
const RETRY: Policy = Policy::RECONCILE;

/// Failed work to do again, per key, after [`RETRY`]'s delay.
#[derive(Debug, Clone)]
pub struct Backoff<K> {
    entries: BTreeMap<K, (u32, Instant)>,
}

impl<K> Default for Backoff<K> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Backoff<K> {
    /// Records a failure of `key`; returns when to try again.
    pub fn failed(&mut self, key: K, now: Instant) -> Instant {
        let entry = self.entries.entry(key).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now + RETRY.delay(entry.0);
        entry.1
    }

    /// Forgets `key`: it succeeded, or is no longer wanted.
    pub fn succeeded(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Whether `key` waits for a retry.
    #[must_use]
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The keys whose retry is due at `now`. They stay recorded (with their
    /// failure count) until [`Self::succeeded`] or the next [`Self::failed`].
    #[must_use]
    pub fn due(&self, now: Instant) -> Vec<K> {
        self.entries
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The earliest retry after `now`.
    #[must_use]
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|(_, at)| *at)
            .filter(|t| *t > now)
            .min()
    }

    /// Keeps only the keys `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }
}

/// The scheduler's state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    limits: Limits,
    pending: BTreeMap<WorkloadKey, Pending>,
    active: BTreeMap<WorkloadKey, Instant>,
}

impl Scheduler {
    /// An empty scheduler.
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: BTreeMap::new(),
            active: BTreeMap::new(),
        }
    }

    /// Records that `source`, which `workload` is restarted for, changed.
    pub fn changed(&mut self, workload: WorkloadKey, source: SourceRef, now: Instant) {
        self.pending
            .entry(workload)
            .or_insert_with(|| Pending {
                opened: now,
                changed: BTreeSet::new(),
                not_before: None,
                failures: 0,
            })
            .changed
            .insert(source);
    }

    /// The restart `start` could not be applied: it frees its slot and waits
    /// again, with every change it carried (and any made since), until a
    /// doubling delay has passed. Returns when it is due again.
    pub fn failed(&mut self, start: Start, now: Instant) -> Instant {
        self.active.remove(&start.workload);
        let pending = self
            .pending
            .entry(start.workload)
            .or_insert_with(|| Pending {
                opened: now,
                changed: BTreeSet::new(),
                not_before: None,
                failures: 0,
            });
        pending.changed.extend(start.changed);
        pending.failures = pending.failures.max(start.failures).saturating_add(1);
        let at = now + RETRY.delay(pending.failures);
        pending.not_before = Some(at);
        pending.due_at(self.limits.debounce)
    }

    /// Forgets a workload that was deleted or opted out.
    pub fn forget(&mut self, workload: &WorkloadKey) {
        self.pending.remove(workload);
        self.active.remove(workload);
    }

    /// Marks `workload`'s rollout complete, freeing its namespace slot.
    /// Returns whether it was in flight.
    pub fn completed(&mut self, workload: &WorkloadKey) -> bool {
        self.active.remove(workload).is_some()
    }

    /// Whether a restart of `workload` is waiting for its window to close.
    #[must_use]
    pub fn is_pending(&self, workload: &WorkloadKey) -> bool {
        self.pending.contains_key(workload)
    }

    /// Whether a rollout of `workload` is in flight.
    #[must_use]
    pub fn is_in_flight(&self, workload: &WorkloadKey) -> bool {
        self.active.contains_key(workload)
    }

    /// Workloads whose restart is due but waits for room in its namespace.
    #[must_use]
    pub fn waiting(&self, now: Instant) -> usize {
        self.pending
            .values()
            .filter(|p| now >= p.due_at(self.limits.debounce))
            .count()
    }

    /// Rollouts that passed `rollout_timeout`: they stop holding their slot.
    pub fn timed_out(&mut self, now: Instant) -> Vec<WorkloadKey> {
        let timeout = self.limits.rollout_timeout;
        let expired: Vec<WorkloadKey> = self
            .active
            .iter()
            .filter(|(_, started)| now >= **started + timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.active.remove(key);
        }
        expired
    }

    /// The restarts to start now, oldest window first, within each
    /// namespace's limit. They count as in flight until [`Self::completed`].
    pub fn due(&mut self, now: Instant) -> Vec<Start> {
        let mut ready: Vec<(Instant, WorkloadKey)> = self
            .pending
            .iter()
            .filter(|(key, p)| {
                now >= p.due_at(self.limits.debounce) && !self.active.contains_key(*key)
            })
            .map(|(k, p)| (p.opened, k.clone()))
            .collect();
        ready.sort();
        let mut starts = Vec::new();
        for (_, key) in ready {
            let busy = self
                .active
                .keys()
                .filter(|k| k.namespace == key.namespace)
                .count();
            if busy >= self.limits.max_concurrent {
                continue;
            }
            if let Some(pending) = self.pending.remove(&key) {
                self.active.insert(key.clone(), now);
                starts.push(Start {
                    workload: key,
                    changed: pending.changed,
                    failures: pending.failures,
                });
            }
        }
        starts
    }

    /// The next instant after `now` at which [`Self::due`] or
    /// [`Self::timed_out`] may return something without any new change.
    /// A restart already due but waiting for room is woken by the completion
    /// or timeout that frees it, not by its own window.
    #[must_use]
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let windows = self
            .pending
            .values()
            .map(|p| p.due_at(self.limits.debounce));
        let timeouts = self
            .active
            .values()
            .map(|started| *started + self.limits.rollout_timeout);
        windows.chain(timeouts).filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        debounce: Duration::from_secs(10),
        max_concurrent: 1,
        rollout_timeout: Duration::from_secs(300),
    };

    fn key(ns: &str, name: &str) -> WorkloadKey {
        WorkloadKey {
            kind: "Deployment",
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn secs(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    #[test]
    fn a_restart_is_pending_from_its_first_change_until_it_starts() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        assert!(!s.is_pending(&key("a", "web")));
        s.changed(key("a", "web"), SourceRef::secret("tls"), t0);
        assert!(s.is_pending(&key("a", "web")));
        assert!(!s.is_pending(&key("a", "other")));
        assert_eq!(s.due(secs(t0, 10)).len(), 1);
        assert!(
            !s.is_pending(&key("a", "web")),
            "in flight, no longer pending"
        );
    }

    #[test]
    fn changes_inside_the_window_make_one_restart() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        s.changed(key("a", "web"), SourceRef::secret("tls"), t0);
        s.changed(
            key("a", "web"),
            SourceRef::config_map("bundle"),
            secs(t0, 4),
        );
        s.changed(key("a", "web"), SourceRef::secret("token"), secs(t0, 9));
        assert!(s.due(secs(t0, 9)).is_empty());
        assert_eq!(s.next_wake(secs(t0, 9)), Some(secs(t0, 10)));
        let starts = s.due(secs(t0, 10));
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].changed.len(), 3);
        assert!(s.due(secs(t0, 60)).is_empty(), "one window, one restart");
    }

    #[test]
    fn one_rollout_at_a_time_per_namespace() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        s.changed(key("a", "one"), SourceRef::secret("x"), t0);
        s.changed(key("a", "two"), SourceRef::secret("x"), secs(t0, 1));
        s.changed(key("b", "three"), SourceRef::secret("x"), secs(t0, 2));
        let first: Vec<_> = s
            .due(secs(t0, 20))
            .into_iter()
            .map(|s| s.workload.name)
            .collect();
        assert_eq!(first, ["one", "three"]);
        assert_eq!(s.waiting(secs(t0, 20)), 1);
        assert!(s.due(secs(t0, 21)).is_empty(), "namespace a is busy");
        assert!(s.completed(&key("a", "one")));
        let next: Vec<_> = s
            .due(secs(t0, 22))
            .into_iter()
            .map(|s| s.workload.name)
            .collect();
        assert_eq!(next, ["two"]);
    }

    #[test]
    fn a_stuck_rollout_frees_its_slot_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        s.changed(key("a", "stuck"), SourceRef::secret("x"), t0);
        s.changed(key("a", "next"), SourceRef::secret("x"), secs(t0, 1));
        assert_eq!(s.due(secs(t0, 11)).len(), 1);
        assert!(s.timed_out(secs(t0, 310)).is_empty());
        assert_eq!(s.next_wake(secs(t0, 310)), Some(secs(t0, 311)));
        assert_eq!(s.timed_out(secs(t0, 311)), vec![key("a", "stuck")]);
        assert_eq!(s.due(secs(t0, 311)).len(), 1);
    }

    #[test]
    fn a_change_during_a_rollout_opens_a_new_window() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        s.changed(key("a", "web"), SourceRef::secret("x"), t0);
        assert_eq!(s.due(secs(t0, 10)).len(), 1);
        s.changed(key("a", "web"), SourceRef::secret("x"), secs(t0, 12));
        assert!(s.due(secs(t0, 30)).is_empty(), "waits for its own rollout");
        s.completed(&key("a", "web"));
        assert_eq!(s.due(secs(t0, 30)).len(), 1);
    }

    #[test]
    fn a_failed_patch_keeps_its_changes_and_retries_with_backoff() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(LIMITS);
        s.changed(key("a", "web"), SourceRef::secret("tls"), t0);
        s.changed(key("a", "other"), SourceRef::secret("tls"), secs(t0, 1));
        let start = s.due(secs(t0, 10)).remove(0);
        assert_eq!(start.workload, key("a", "web"));
        s.changed(key("a", "web"), SourceRef::secret("token"), secs(t0, 10));
        assert_eq!(s.failed(start, secs(t0, 10)), secs(t0, 11));
        // The slot is free again: the other workload goes first.
        let next: Vec<_> = s
            .due(secs(t0, 11))
            .into_iter()
            .map(|s| s.workload)
            .collect();
        assert_eq!(next, [key("a", "other")]);
        s.completed(&key("a", "other"));
        let again = s.due(secs(t0, 12));
        assert_eq!(again.len(), 1);
        let both: BTreeSet<SourceRef> =
            [SourceRef::secret("tls"), SourceRef::secret("token")].into();
        assert_eq!(again[0].changed, both, "no change is lost");
        // A second failure waits twice as long.
        assert_eq!(s.failed(again[0].clone(), secs(t0, 12)), secs(t0, 14));
        assert!(s.due(secs(t0, 13)).is_empty());
        assert_eq!(s.next_wake(secs(t0, 13)), Some(secs(t0, 14)));
        assert_eq!(s.due(secs(t0, 14)).len(), 1);
        assert!(s.due(secs(t0, 100)).is_empty(), "one restart, once applied");
    }

    #[test]
    fn backoff_doubles_until_success() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.failed("tls", t0), secs(t0, 1));
        assert!(b.due(t0).is_empty());
        assert_eq!(b.due(secs(t0, 1)), ["tls"]);
        assert_eq!(b.failed("tls", secs(t0, 1)), secs(t0, 3));
        assert_eq!(b.next_wake(secs(t0, 1)), Some(secs(t0, 3)));
        b.succeeded(&"tls");
        assert!(!b.contains(&"tls"));
        assert_eq!(b.failed("tls", secs(t0, 5)), secs(t0, 6));
        assert_eq!(RETRY.delay(30), Policy::RECONCILE.max);
    }

    #[test]
    fn higher_concurrency_allows_parallel_rollouts() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(Limits {
            max_concurrent: 2,
            ..LIMITS
        });
        for name in ["a", "b", "c"] {
            s.changed(key("ns", name), SourceRef::secret("x"), t0);
        }
        assert_eq!(s.due(secs(t0, 10)).len(), 2);
        s.forget(&key("ns", "a"));
        assert_eq!(s.due(secs(t0, 11)).len(), 1);
    }
}
