//! Fault injection: a share of requests answered with errors, added latency
//! (with optional jitter), watches cut after some events or some time. Set
//! at start and changed at run time; users listed in `exempt_users` (say, the
//! test's own admin client) are served without faults.
//!
//! The decisions are pure functions of [`Faults`] and dice passed in
//! ([`Faults::latency_for`], [`Faults::error_for`], [`Faults::watch_cut_for`]);
//! [`FaultsHandle`] rolls the dice.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::{self, ApiError};
use super::store::random_u64;

/// The faults to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Share of requests (0.0–1.0) answered with an error instead of served.
    pub error_rate: f64,
    /// Codes picked from at random for injected errors (500, 429, 409).
    /// 409 is only given to writes, as kube-apiserver answers Conflict and
    /// AlreadyExists only to them; reads pick among the other codes.
    pub error_codes: Vec<u16>,
    /// `Retry-After` seconds sent with 429s.
    pub retry_after_seconds: u64,
    /// Latency added to every request, in milliseconds.
    pub latency_ms: u64,
    /// Up to this many more milliseconds, uniformly at random, added on top
    /// of `latency_ms` (jitter also applies when `latency_ms` is 0).
    pub latency_jitter_ms: u64,
    /// Cut every watch after this many events.
    pub watch_cut_after_events: Option<u64>,
    /// Cut every watch this many milliseconds after it opens (the stream
    /// ends cleanly, as when an apiserver or a load balancer drops it).
    pub watch_cut_after_ms: Option<u64>,
    /// Also inject into discovery and OpenAPI requests.
    pub include_discovery: bool,
    /// Users (by name, e.g. `admin`) never given faults: no errors, no
    /// latency, no watch cuts.
    pub exempt_users: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_codes: vec![500, 429, 409],
            retry_after_seconds: 1,
            latency_ms: 0,
            latency_jitter_ms: 0,
            watch_cut_after_events: None,
            watch_cut_after_ms: None,
            include_discovery: false,
            exempt_users: Vec::new(),
        }
    }
}

/// The request an error may be injected into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// API group.
    pub group: &'a str,
    /// Resource (plural).
    pub resource: &'a str,
    /// Object name (empty for collections).
    pub name: &'a str,
    /// Whether the verb writes (create, update, patch, delete,
    /// deletecollection).
    pub write: bool,
}

/// When a watch is cut, if ever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCut {
    /// After this many events.
    pub after_events: Option<u64>,
    /// This long after it opens.
    pub after: Option<Duration>,
}

impl Faults {
    /// Whether faults apply to requests of `user`.
    pub fn applies_to(&self, user: &str) -> bool {
        !self.exempt_users.iter().any(|u| u == user)
    }

    fn applies(&self, user: &str, discovery: bool) -> bool {
        self.applies_to(user) && (!discovery || self.include_discovery)
    }

    /// The latency to add before serving a request of `user`; `jitter_dice`
    /// is any random number (its remainder picks the jitter).
    pub fn latency_for(&self, user: &str, discovery: bool, jitter_dice: u64) -> Option<Duration> {
        if !self.applies(user, discovery) {
            return None;
        }
        let jitter = match self.latency_jitter_ms {
            0 => 0,
            j => jitter_dice % (j + 1),
        };
        let ms = self.latency_ms.saturating_add(jitter);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The injected error for a request of `user`, if `dice` (uniform in
    /// `[0, 1)`) falls under the error rate; `pick` (any random number)
    /// chooses the code.
    pub fn error_for(
        &self,
        user: &str,
        discovery: bool,
        target: Target<'_>,
        dice: f64,
        pick: u64,
    ) -> Option<ApiError> {
        let Target {
            group,
            resource,
            name,
            write,
        } = target;
        let codes: Vec<u16> = self
            .error_codes
            .iter()
            .copied()
            .filter(|c| write || *c != 409)
            .collect();
        if self.error_rate <= 0.0
            || !self.applies(user, discovery)
            || codes.is_empty()
            || dice >= self.error_rate
        {
            return None;
        }
        let code = codes[(pick % codes.len() as u64) as usize];
        Some(match code {
            429 => {
                let mut e = ApiError::with_details(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    Some(serde_json::json!({"retryAfterSeconds": self.retry_after_seconds})),
                );
                e.headers
                    .push(("Retry-After".into(), self.retry_after_seconds.to_string()));
                e
            }
            409 => status::conflict_modified(
                group,
                resource,
                if name.is_empty() { "(injected)" } else { name },
            ),
            500 => status::internal("injected fault"),
            other => ApiError::new(other, "", format!("injected fault {other}")),
        })
    }

    /// When a watch opened by `user` is cut.
    pub fn watch_cut_for(&self, user: &str) -> WatchCut {
        if !self.applies_to(user) {
            return WatchCut::default();
        }
        WatchCut {
            after_events: self.watch_cut_after_events,
            after: self.watch_cut_after_ms.map(Duration::from_millis),
        }
    }
}

/// A shared, changeable fault configuration.
#[derive(Debug, Clone, Default)]
pub struct FaultsHandle(Arc<RwLock<Faults>>);

impl FaultsHandle {
    /// A handle starting with `f`.
    pub fn new(f: Faults) -> Self {
        Self(Arc::new(RwLock::new(f)))
    }

    /// The current configuration.
    pub fn get(&self) -> Faults {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the configuration.
    pub fn set(&self, f: Faults) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Changes the configuration in place.
    pub fn update(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.0.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// Clears every fault.
    pub fn clear(&self) {
        self.set(Faults::default());
    }

    /// The latency to add before serving a request of `user`.
    pub fn latency(&self, user: &str, discovery: bool) -> Option<Duration> {
        self.get().latency_for(user, discovery, random_u64())
    }

    /// An injected error for this request of `user`, if the dice say so.
    pub fn roll(&self, user: &str, discovery: bool, target: Target<'_>) -> Option<ApiError> {
        let dice = (random_u64() % 1_000_000) as f64 / 1_000_000.0;
        self.get()
            .error_for(user, discovery, target, dice, random_u64())
    }

    /// When a watch opened by `user` now is cut.
    pub fn watch_cut(&self, user: &str) -> WatchCut {
        self.get().watch_cut_for(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> Faults {
        Faults {
            error_rate: 0.05,
            latency_ms: 20,
            latency_jitter_ms: 30,
            watch_cut_after_events: Some(7),
            watch_cut_after_ms: Some(3_000),
            exempt_users: vec!["admin".into()],
            ..Faults::default()
        }
    }

    const TARGET: Target<'static> = Target {
        group: "cert-manager.io",
        resource: "certificaterequests",
        name: "a",
        write: true,
    };

    #[test]
    fn exempt_users_get_no_faults_at_all() {
        let f = faults();
        assert!(!f.applies_to("admin"));
        assert_eq!(f.latency_for("admin", false, 12), None);
        assert!(f.error_for("admin", false, TARGET, 0.0, 0).is_none());
        assert_eq!(f.watch_cut_for("admin"), WatchCut::default());
        assert!(f.applies_to("system:serviceaccount:capstan:issuer"));
        assert_eq!(
            f.watch_cut_for("issuer"),
            WatchCut {
                after_events: Some(7),
                after: Some(Duration::from_millis(3_000)),
            }
        );
    }

    #[test]
    fn jitter_stays_within_its_bound_and_adds_to_the_base() {
        let f = faults();
        let all: Vec<Duration> = (0..200)
            .filter_map(|d| f.latency_for("issuer", false, d))
            .collect();
        assert_eq!(all.len(), 200);
        assert_eq!(all.iter().min(), Some(&Duration::from_millis(20)));
        assert_eq!(all.iter().max(), Some(&Duration::from_millis(50)));
        let none = Faults::default();
        assert_eq!(none.latency_for("issuer", false, 5), None);
        let jitter_only = Faults {
            latency_jitter_ms: 10,
            ..Faults::default()
        };
        assert_eq!(jitter_only.latency_for("x", false, 0), None);
        assert_eq!(
            jitter_only.latency_for("x", false, 4),
            Some(Duration::from_millis(4))
        );
    }

    #[test]
    fn discovery_is_spared_unless_included() {
        let mut f = faults();
        assert_eq!(f.latency_for("issuer", true, 3), None);
        assert!(
            f.error_for("issuer", true, Target::default(), 0.0, 0)
                .is_none()
        );
        f.include_discovery = true;
        assert_eq!(
            f.latency_for("issuer", true, 3),
            Some(Duration::from_millis(23))
        );
        assert!(
            f.error_for("issuer", true, Target::default(), 0.0, 0)
                .is_some()
        );
    }

    #[test]
    fn errors_follow_the_rate_and_the_picked_code() {
        let f = faults();
        assert!(f.error_for("issuer", false, TARGET, 0.05, 0).is_none());
        assert!(f.error_for("issuer", false, TARGET, 0.5, 0).is_none());
        let codes: Vec<u16> = (0..3)
            .map(|pick| {
                f.error_for("issuer", false, TARGET, 0.049, pick)
                    .map(|e| e.code)
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(codes, vec![500, 429, 409]);
        let throttled = f.error_for("issuer", false, TARGET, 0.0, 1).expect("429");
        assert!(
            throttled
                .headers
                .contains(&("Retry-After".to_owned(), "1".to_owned()))
        );
    }

    #[test]
    fn reads_never_get_a_conflict() {
        let read = Target {
            write: false,
            ..TARGET
        };
        let f = faults();
        let codes: Vec<u16> = (0..6)
            .filter_map(|pick| f.error_for("issuer", false, read, 0.0, pick))
            .map(|e| e.code)
            .collect();
        assert_eq!(codes, vec![500, 429, 500, 429, 500, 429]);
        let only_conflicts = Faults {
            error_codes: vec![409],
            ..faults()
        };
        assert!(
            only_conflicts
                .error_for("issuer", false, read, 0.0, 0)
                .is_none()
        );
        assert_eq!(
            only_conflicts
                .error_for("issuer", false, TARGET, 0.0, 0)
                .map(|e| e.code),
            Some(409)
        );
    }

    #[test]
    fn new_fields_default_when_absent_from_json() {
        let f: Faults = serde_json::from_str(r#"{"errorRate":0.1}"#).expect("valid");
        assert_eq!(f.watch_cut_after_ms, None);
        assert!(f.exempt_users.is_empty());
        assert_eq!(f.latency_jitter_ms, 0);
        let json = serde_json::to_value(faults()).expect("serializes");
        assert_eq!(json["watchCutAfterMs"], 3_000);
        assert_eq!(json["exemptUsers"], serde_json::json!(["admin"]));
        assert_eq!(json["latencyJitterMs"], 30);
    }
}
