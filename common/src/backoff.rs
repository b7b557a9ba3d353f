//! The workspace's one retry policy: delays that double from a first delay
//! up to a cap, back to the first delay after a success.
//!
//! Two settings of it are used:
//!
//! * [`Policy::WATCH`] — how fast watches, leader election and start-up
//!   checks try again after the API server failed them. kube-runtime's
//!   default (client-go's) doubles from 0.8 s to 30 s with jitter, so after
//!   a 20 s API server outage a controller could sit idle for up to a
//!   minute before it saw new work. capstan's watches are few and cheap, so
//!   they retry sooner: doubling from 0.5 s, capped at 5 s, back to the
//!   start whenever the watch yields again (the watcher yields before each
//!   new list, so a server that keeps failing is retried about every 0.5 s,
//!   as with kube's default).
//! * [`Policy::RECONCILE`] — how long a reconcile that failed on a
//!   transient error waits before the next attempt at the same object:
//!   doubling from 1 s, at most 5 minutes, per object ([`Retries`]), so one
//!   object that keeps failing neither spins nor delays the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Doubling delays from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The delay before the first retry.
    pub first: Duration,
    /// The longest delay between two attempts.
    pub max: Duration,
}

impl Policy {
    /// Watches, leader election and start-up checks: 0.5 s doubling to 5 s.
    pub const WATCH: Self = Self {
        first: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };
    /// Failed reconciles, per object: 1 s doubling to 5 minutes.
    pub const RECONCILE: Self = Self {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// The delay before retry number `attempt` (1-based; 0 counts as 1).
    #[must_use]
    pub fn delay(self, attempt: u32) -> Duration {
        // 2^31 times any positive delay is past every sensible cap, and
        // `checked_mul` catches the rest.
        let doublings = attempt.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// [`Policy::WATCH`] as an endless iterator of delays that kube-runtime's
/// watchers and controllers accept (`.backoff(...)`, `.trigger_backoff(...)`).
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    policy: Policy,
    attempt: u32,
}

impl WatchBackoff {
    /// Delays of `policy`, starting with its first.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self { policy, attempt: 0 }
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new(Policy::WATCH)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.attempt = self.attempt.saturating_add(1);
        Some(self.policy.delay(self.attempt))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Consecutive failures per object, each object backing off under one
/// [`Policy`] on its own.
#[derive(Debug)]
pub struct Retries<K> {
    policy: Policy,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K> Default for Retries<K> {
    fn default() -> Self {
        Self::new(Policy::RECONCILE)
    }
}

impl<K> Retries<K> {
    /// Per-object retries under `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Retries<K> {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<K, u32>) -> R) -> R {
        match self.failures.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Records a failure of `key`; returns how long to wait before the next
    /// attempt.
    pub fn failed(&self, key: K) -> Duration {
        let n = self.with(|m| {
            let n = m.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        });
        self.policy.delay(n)
    }

    /// Forgets the failures of `key`: its next failure waits the first delay
    /// again.
    pub fn succeeded(&self, key: &K) {
        self.with(|m| m.remove(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;

    fn millis(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn watches_double_to_the_cap_and_reset() {
        let mut b = WatchBackoff::default();
        let first: Vec<u128> = b.by_ref().take(6).map(millis).collect();
        assert_eq!(first, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Policy::WATCH.first));
    }

    #[test]
    fn reconciles_double_from_a_second_to_five_minutes() {
        let p = Policy::RECONCILE;
        assert_eq!(p.delay(0), Duration::from_secs(1));
        assert_eq!(p.delay(1), Duration::from_secs(1));
        assert_eq!(p.delay(4), Duration::from_secs(8));
        assert_eq!(p.delay(9), Duration::from_secs(256));
        assert_eq!(p.delay(10), Duration::from_secs(300));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn a_huge_first_delay_is_capped_not_overflowed() {
        let p = Policy {
            first: Duration::from_secs(u64::MAX / 2),
            max: Duration::from_secs(60),
        };
        assert_eq!(p.delay(40), Duration::from_secs(60));
    }

    #[test]
    fn each_object_backs_off_alone_and_resets_on_success() {
        let r = Retries::default();
        assert_eq!(r.failed("a"), Duration::from_secs(1));
        assert_eq!(r.failed("a"), Duration::from_secs(2));
        assert_eq!(r.failed("b"), Duration::from_secs(1));
        assert_eq!(r.failed("a"), Duration::from_secs(4));
        r.succeeded(&"a");
        assert_eq!(r.failed("a"), Duration::from_secs(1));
        assert_eq!(r.failed("b"), Duration::from_secs(2));
    }
}
