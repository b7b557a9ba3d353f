//! The restart index: every decision of the restart controller, pure.
//!
//! ```text
//!   sources ───── used by ────► workloads ──────────► hashes
//!   (namespace, Secret/tls)     Deployment/web        applied: on the object, else the
//!   digest, resourceVersion     sources it watches    baseline this replica wrote
//!   a fetch owed                rollout state         current: over the digests
//! ```
//!
//! Each input (a source was seen or fetched, a workload appeared, changed or
//! went away, a namespace entered or left the scope, a write succeeded or
//! failed, leadership was gained, time passed) updates the index and returns
//! the [`Effect`]s to carry out: fetch a source, list a namespace, record a
//! baseline hash, roll a workload, publish an Event, count. The executor (`controller.rs`) turns watch events into inputs and
//! effects into API calls, and reports each call's outcome back as an input.
//!
//! Rules, each learnt the hard way:
//! * A workload is decided only once the digest of every source it watches
//!   is known, so a change from then on is seen as one.
//! * A workload without a hash gets the current hash as its *baseline* (on
//!   the workload, not the pod template: it rolls nothing). The baseline
//!   counts as applied until the echo of that write is seen: older events
//!   still show no hash, and recording the baseline again then could
//!   swallow a change (commit 88876b3).
//! * A hash that differs from the content is a change missed while nobody
//!   watched only when the workload is first seen or leadership was just
//!   gained, and no restart of it is in flight or waiting; otherwise it is a
//!   change already scheduled, whose restart names the sources that really
//!   changed (commit facecd6), or the echo of the rotator's own write.
//! * Nothing is lost to a failed call: a fetch that failed is made again
//!   (the resourceVersion it was for is recorded only once the content is
//!   known), a baseline that could not be written is decided again, a roll
//!   that failed waits again with its changes; each after a doubling delay
//!   (one [`Backoff`] for fetches and decisions, [`Scheduler::failed`] for
//!   rolls).
//! * Only a leader writes: a follower keeps the index warm, and decides
//!   afresh (a resync) when it gains leadership.
//! * Reloader's rules (see `docs/migrating-from-reloader.md`): a source's
//!   own marks (`ignore`, `match`) are read with its digest; only the
//!   sources that trigger a workload ([`Watched::triggers`]) are restarted
//!   for and counted in its hash ([`counted`]), so an ignored or unmatched
//!   source's content never rolls it. Reloader annotations capstan does not
//!   honour are named in one Warning per workload and set of them (leader
//!   only; [`Warned`]).
//! * Only workloads in the namespace scope are tracked: one seen outside it
//!   is dropped; a namespace leaving the scope drops its workloads, one
//!   entering it is listed and its workloads handled as first seen.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use capstan_common::events::Record;
use k8s_openapi::api::core::v1::ObjectReference;

use super::compat::{self, Warned};
use super::hash::{Read, config_hash, counted};
use super::rollout::RolloutState;
use super::schedule::{Backoff, Limits, Scheduler, Start, WorkloadKey};
use super::sources::{self, SourceRef, Watched};
use super::workload::Workload;
use crate::reasons;

/// A source in its namespace.
pub type SourceKey = (String, SourceRef);

/// When an input happens, and whether this replica leads then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// The current instant.
    pub now: Instant,
    /// Whether this replica may write.
    pub leader: bool,
}

/// What the index needs of a workload, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Kind, namespace and name.
    pub key: WorkloadKey,
    /// The object Events are recorded against.
    pub reference: ObjectReference,
    /// The sources it is restarted for; `None` when it has not opted in.
    pub watched: Option<Watched>,
    /// Whether its namespace is in the rotator's scope.
    pub in_scope: bool,
    /// The Reloader annotations on it or its pod template that capstan does
    /// not honour, each with why ([`compat::unsupported`]).
    pub unsupported: BTreeMap<String, String>,
    /// The hash its pods were started with ([`Workload::applied_hash`]).
    pub applied_hash: Option<String>,
    /// How its rollout stands.
    pub rollout: RolloutState,
}

impl Observed {
    /// What the index needs of `w`, seen in a namespace in scope or not.
    #[must_use]
    pub fn of(w: &Workload, in_scope: bool) -> Self {
        fn reference<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
            obj.object_ref(&())
        }
        let annotations = w.annotations();
        let template = w.template();
        let template_annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        Self {
            key: w.key(),
            reference: match w {
                Workload::Deployment(d) => reference(d),
                Workload::StatefulSet(s) => reference(s),
                Workload::DaemonSet(d) => reference(d),
            },
            watched: sources::watched(&annotations, &template),
            in_scope,
            unsupported: compat::unsupported(&annotations, &template_annotations),
            applied_hash: w.applied_hash(),
            rollout: w.rollout(),
        }
    }
}

/// A metric to count for a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A roll was applied.
    RolloutTriggered,
    /// A rollout the rotator started completed.
    RolloutCompleted,
    /// A rollout did not complete within the timeout.
    RolloutTimedOut,
}

/// Something the executor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read the source and reduce it to its digest and marks; answer with
    /// [`Index::fetched`] or [`Index::fetch_failed`].
    Fetch(SourceKey),
    /// List every workload of the namespace (it entered the scope); answer
    /// with [`Index::workload_seen`] for each, then [`Index::listed`], or
    /// with [`Index::list_failed`].
    List(String),
    /// Write `hash` on the workload only (it rolls nothing); answer with
    /// [`Index::baseline_recorded`] or [`Index::baseline_failed`].
    RecordBaseline {
        /// The workload.
        workload: WorkloadKey,
        /// Its current hash.
        hash: String,
    },
    /// Write `hash` on the workload and its pod template, rolling it;
    /// answer with [`Index::rolled`], [`Index::roll_gone`] or
    /// [`Index::roll_failed`].
    Roll {
        /// The restart, with the sources whose change led to it.
        start: Start,
        /// The hash to roll to.
        hash: String,
    },
    /// Publish an Event about the workload.
    Event {
        /// The workload.
        workload: WorkloadKey,
        /// The object the Event is recorded against.
        reference: ObjectReference,
        /// Reason, type and message.
        record: Record,
    },
    /// Count one for the workload.
    Count(Counter, WorkloadKey),
    /// A source's content was read, and whether it changed (logged: the
    /// operator sees each read, and a change that opens a window).
    SourceChecked {
        /// The source.
        source: SourceKey,
        /// Whether its digest differs from the one known before.
        changed: bool,
    },
    /// The workload's sources are known from now on (said once per workload).
    Watching {
        /// The workload.
        workload: WorkloadKey,
        /// The sources it is restarted for.
        sources: BTreeSet<SourceRef>,
    },
}

/// Content of a source as last fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    resource_version: Option<String>,
    /// Its digest and marks; `None`: the source does not exist.
    read: Option<Read>,
}

#[derive(Debug, Clone, Default)]
struct Source {
    /// The workloads restarted for it; never empty while it is indexed.
    users: BTreeSet<WorkloadKey>,
    known: Option<Known>,
    /// A fetch asked for and not answered yet, with the resourceVersion to
    /// record once it is (`None`: not known, fetched for a workload).
    owed: Option<Option<String>>,
}

#[derive(Debug, Clone)]
struct Tracked {
    seen: Observed,
    watched: Watched,
    /// The baseline this replica wrote, until its echo is seen.
    baseline: Option<String>,
    /// A stale hash may be a change missed (first seen, leadership gained).
    recheck: bool,
    /// Seen since last decided.
    undecided: bool,
    /// [`Effect::Watching`] said.
    announced: bool,
}

/// Work that failed, to do again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Fetch(SourceKey),
    Decide(WorkloadKey),
    List(String),
}

/// The restart controller's state and decisions.
#[derive(Debug, Clone)]
pub struct Index {
    limits: Limits,
    dry_run: bool,
    scheduler: Scheduler,
    sources: BTreeMap<SourceKey, Source>,
    workloads: BTreeMap<WorkloadKey, Tracked>,
    retries: Backoff<Job>,
    /// Namespaces that entered the scope and are not listed yet.
    listing: BTreeSet<String>,
    /// The unsupported Reloader annotations reported, per workload.
    warned: Warned<WorkloadKey>,
}

impl Index {
    /// An empty index. In `dry_run` nothing is written; restarts are only
    /// reported.
    #[must_use]
    pub fn new(limits: Limits, dry_run: bool) -> Self {
        Self {
            limits,
            dry_run,
            scheduler: Scheduler::new(limits),
            sources: BTreeMap::new(),
            workloads: BTreeMap::new(),
            retries: Backoff::default(),
            listing: BTreeSet::new(),
            warned: Warned::default(),
        }
    }

    /// A workload appeared or changed. Outside the scope it is dropped; a
    /// leader names the Reloader annotations it does not honour once per
    /// set of them.
    pub fn workload_seen(&mut self, seen: Observed, at: Moment) -> Vec<Effect> {
        let key = seen.key.clone();
        if !seen.in_scope {
            self.untrack(&key);
            return Vec::new();
        }
        let mut effects: Vec<Effect> = self.warning(&seen, at).into_iter().collect();
        let Some(watched) = seen.watched.clone() else {
            self.untrack(&key);
            return effects;
        };
        let now: BTreeSet<SourceRef> = watched.sources().cloned().collect();
        let before: BTreeSet<SourceRef> = self
            .workloads
            .get(&key)
            .map(|t| t.watched.sources().cloned().collect())
            .unwrap_or_default();
        for source in before.difference(&now) {
            if let Some(s) = self
                .sources
                .get_mut(&(key.namespace.clone(), source.clone()))
            {
                s.users.remove(&key);
            }
        }
        for source in &now {
            let skey = (key.namespace.clone(), source.clone());
            let s = self.sources.entry(skey.clone()).or_default();
            s.users.insert(key.clone());
            if s.known.is_none() && s.owed.is_none() {
                s.owed = Some(None);
                effects.push(Effect::Fetch(skey));
            }
        }
        self.drop_unused();
        let tracked = self.workloads.entry(key.clone()).or_insert(Tracked {
            seen: seen.clone(),
            watched: Watched::default(),
            baseline: None,
            recheck: true,
            undecided: true,
            announced: false,
        });
        tracked.seen = seen;
        tracked.watched = watched;
        tracked.undecided = true;
        effects.extend(self.decide_if_ready(&key, at));
        effects
    }

    /// A workload was deleted.
    pub fn workload_gone(&mut self, key: &WorkloadKey) {
        self.warned.forget(key);
        self.untrack(key);
    }

    /// A namespace left the scope: its workloads are dropped (a list owed
    /// for it too).
    pub fn namespace_left(&mut self, namespace: &str) {
        let gone: Vec<WorkloadKey> = self
            .workloads
            .keys()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect();
        for key in gone {
            self.untrack(&key);
        }
        self.listed(namespace);
    }

    /// A namespace entered the scope: its workloads are read, and handled
    /// as first seen (a stale hash is a change missed).
    pub fn namespace_entered(&mut self, namespace: String) -> Vec<Effect> {
        for (key, tracked) in &mut self.workloads {
            if key.namespace == namespace {
                tracked.recheck = true;
            }
        }
        self.listing.insert(namespace.clone());
        vec![Effect::List(namespace)]
    }

    /// [`Effect::List`] was answered: every workload of `namespace` was seen.
    pub fn listed(&mut self, namespace: &str) {
        self.listing.remove(namespace);
        self.retries.succeeded(&Job::List(namespace.to_owned()));
    }

    /// [`Effect::List`] failed: it is asked for again later. Returns when.
    pub fn list_failed(&mut self, namespace: String, now: Instant) -> Instant {
        self.retries.failed(Job::List(namespace), now)
    }

    /// Stops tracking a workload (deleted, opted out, out of scope).
    fn untrack(&mut self, key: &WorkloadKey) {
        if let Some(tracked) = self.workloads.remove(key) {
            for source in tracked.watched.sources() {
                if let Some(s) = self
                    .sources
                    .get_mut(&(key.namespace.clone(), source.clone()))
                {
                    s.users.remove(key);
                }
            }
        }
        self.scheduler.forget(key);
        self.retries.succeeded(&Job::Decide(key.clone()));
        self.drop_unused();
    }

    /// A Secret or ConfigMap was seen with this resourceVersion (`None`:
    /// deleted). Asks for a fetch only if a workload uses it and it moved.
    pub fn source_seen(
        &mut self,
        skey: SourceKey,
        resource_version: Option<String>,
        at: Moment,
    ) -> Vec<Effect> {
        let Some(source) = self.sources.get_mut(&skey) else {
            return Vec::new();
        };
        let unmoved = source
            .known
            .as_ref()
            .is_some_and(|k| k.resource_version == resource_version);
        if resource_version.is_some() && unmoved {
            source.owed = None;
            self.retries.succeeded(&Job::Fetch(skey));
            return Vec::new();
        }
        let deleted = resource_version.is_none();
        source.owed = Some(resource_version);
        if deleted {
            self.fetched(&skey, None, at)
        } else {
            vec![Effect::Fetch(skey)]
        }
    }

    /// The answer to [`Effect::Fetch`]: the source's digest and marks
    /// (`None`: it does not exist). A changed digest opens a restart window
    /// for the users it triggers (not ignored; matched, for those in search
    /// mode).
    pub fn fetched(&mut self, skey: &SourceKey, read: Option<Read>, at: Moment) -> Vec<Effect> {
        self.retries.succeeded(&Job::Fetch(skey.clone()));
        let Some(source) = self.sources.get_mut(skey) else {
            return Vec::new();
        };
        let resource_version = source.owed.take().flatten();
        let digest = |r: Option<&Read>| r.map(|r| r.digest.clone());
        let changed = source
            .known
            .as_ref()
            .is_some_and(|k| digest(k.read.as_ref()) != digest(read.as_ref()));
        let marks = read.as_ref().map(|r| r.marks).unwrap_or_default();
        source.known = Some(Known {
            resource_version,
            read,
        });
        let users: Vec<WorkloadKey> = source.users.iter().cloned().collect();
        if changed {
            for user in &users {
                let triggers = self
                    .workloads
                    .get(user)
                    .is_some_and(|t| t.watched.triggers(&skey.1, marks));
                if triggers {
                    self.scheduler.changed(user.clone(), skey.1.clone(), at.now);
                }
            }
        }
        let mut effects = vec![Effect::SourceChecked {
            source: skey.clone(),
            changed,
        }];
        for user in &users {
            effects.extend(self.decide_if_ready(user, at));
        }
        effects
    }

    /// [`Effect::Fetch`] failed: it is asked for again later. Returns when.
    pub fn fetch_failed(&mut self, skey: SourceKey, now: Instant) -> Instant {
        self.retries.failed(Job::Fetch(skey), now)
    }

    /// [`Effect::RecordBaseline`] was written.
    pub fn baseline_recorded(&mut self, key: &WorkloadKey, hash: String) {
        self.retries.succeeded(&Job::Decide(key.clone()));
        if let Some(tracked) = self.workloads.get_mut(key) {
            tracked.baseline = Some(hash);
            tracked.recheck = false;
        }
    }

    /// [`Effect::RecordBaseline`] failed: the workload is decided again
    /// later. Returns when.
    pub fn baseline_failed(&mut self, key: WorkloadKey, now: Instant) -> Instant {
        self.retries.failed(Job::Decide(key), now)
    }

    /// [`Effect::Roll`] was written: the rollout is followed from now on.
    #[must_use]
    pub fn rolled(&self, start: &Start) -> Vec<Effect> {
        let key = &start.workload;
        let mut effects = vec![Effect::Count(Counter::RolloutTriggered, key.clone())];
        let because = names(&start.changed);
        effects.extend(self.event(
            key,
            Record::normal(
                reasons::ROLLOUT_TRIGGERED,
                format!("Restarting {key} because {because} changed"),
            ),
        ));
        effects
    }

    /// [`Effect::Roll`] found the workload gone.
    pub fn roll_gone(&mut self, key: &WorkloadKey) {
        self.scheduler.forget(key);
    }

    /// [`Effect::Roll`] failed: it waits again, with its changes. Returns
    /// when it is due.
    pub fn roll_failed(&mut self, start: Start, now: Instant) -> Instant {
        self.scheduler.failed(start, now)
    }

    /// This replica became leader: every workload is decided afresh, a
    /// stale hash counting as a change missed, and the unsupported Reloader
    /// annotations of those it tracks reported if not yet.
    pub fn leadership_gained(&mut self, at: Moment) -> Vec<Effect> {
        let keys: Vec<WorkloadKey> = self.workloads.keys().cloned().collect();
        let mut effects = Vec::new();
        for key in keys {
            if let Some(seen) = self.workloads.get(&key).map(|t| t.seen.clone()) {
                effects.extend(self.warning(&seen, at));
            }
            if let Some(tracked) = self.workloads.get_mut(&key) {
                tracked.recheck = true;
                tracked.undecided = true;
            }
            effects.extend(self.decide_if_ready(&key, at));
        }
        effects
    }

    /// Time passed: failed work that is due is done again, and, when
    /// leading, stuck rollouts are given up on and due restarts started.
    pub fn tick(&mut self, at: Moment) -> Vec<Effect> {
        let mut effects = Vec::new();
        for job in self.retries.due(at.now) {
            match job {
                Job::Fetch(skey) => {
                    if self.sources.get(&skey).is_some_and(|s| s.owed.is_some()) {
                        effects.push(Effect::Fetch(skey));
                    } else {
                        self.retries.succeeded(&Job::Fetch(skey));
                    }
                }
                Job::List(namespace) => {
                    if self.listing.contains(&namespace) {
                        effects.push(Effect::List(namespace));
                    } else {
                        self.retries.succeeded(&Job::List(namespace));
                    }
                }
                Job::Decide(key) => {
                    // Kept until decided, so that another failure waits longer.
                    if let Some(tracked) = self.workloads.get_mut(&key) {
                        tracked.undecided = true;
                        effects.extend(self.decide_if_ready(&key, at));
                    }
                    if self.workloads.get(&key).is_none_or(|t| t.undecided) {
                        // Gone, or waiting for a fetch, which decides it.
                        self.retries.succeeded(&Job::Decide(key));
                    }
                }
            }
        }
        if at.leader {
            effects.extend(self.timeouts(at.now));
            effects.extend(self.starts(at.now));
        }
        effects
    }

    /// The next instant at which [`Self::tick`] may have work without any
    /// other input.
    #[must_use]
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        [self.scheduler.next_wake(now), self.retries.next_wake(now)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sources whose content is known.
    #[must_use]
    pub fn sources_known(&self) -> usize {
        self.sources.values().filter(|s| s.known.is_some()).count()
    }

    /// Restarts due but waiting for room in their namespace; `None` when not
    /// leading (a follower starts nothing, so nothing waits on it).
    #[must_use]
    pub fn waiting(&self, at: Moment) -> Option<usize> {
        at.leader.then(|| self.scheduler.waiting(at.now))
    }

    /// Decides `key` if it was seen since last decided and the content of
    /// everything it watches is known.
    fn decide_if_ready(&mut self, key: &WorkloadKey, at: Moment) -> Vec<Effect> {
        let Some(tracked) = self.workloads.get(key) else {
            return Vec::new();
        };
        let ready = tracked.watched.sources().all(|s| {
            self.sources
                .get(&(key.namespace.clone(), s.clone()))
                .is_some_and(|s| s.known.is_some())
        });
        if !tracked.undecided || !ready {
            return Vec::new();
        }
        self.decide(key, at)
    }

    /// Follows the rollout, and records a baseline or schedules a missed
    /// change as the module docs say.
    fn decide(&mut self, key: &WorkloadKey, at: Moment) -> Vec<Effect> {
        let counted = self.counted(key);
        let current = config_hash(&counted);
        let in_flight = self.scheduler.is_in_flight(key);
        let pending = self.scheduler.is_pending(key);
        let Some(tracked) = self.workloads.get_mut(key) else {
            return Vec::new();
        };
        tracked.undecided = false;
        let mut effects = Vec::new();
        if !tracked.announced {
            tracked.announced = true;
            effects.push(Effect::Watching {
                workload: key.clone(),
                sources: tracked.watched.sources().cloned().collect(),
            });
        }
        let reference = tracked.seen.reference.clone();
        let event = |record| Effect::Event {
            workload: key.clone(),
            reference: reference.clone(),
            record,
        };
        if in_flight {
            match &tracked.seen.rollout {
                RolloutState::Complete => {
                    self.scheduler.completed(key);
                    effects.push(Effect::Count(Counter::RolloutCompleted, key.clone()));
                    effects.push(event(Record::normal(
                        reasons::ROLLOUT_COMPLETED,
                        format!("Rollout of {key} completed"),
                    )));
                }
                RolloutState::Failed(why) => {
                    self.scheduler.completed(key);
                    effects.push(event(Record::warning(
                        reasons::ROLLOUT_FAILED,
                        format!("Rollout of {key} failed: {why}"),
                    )));
                }
                RolloutState::InProgress(_) => {}
            }
        }
        if tracked.seen.applied_hash.is_some() {
            // The echo of a recorded baseline, or anything later.
            tracked.baseline = None;
        }
        let applied = tracked
            .seen
            .applied_hash
            .clone()
            .or_else(|| tracked.baseline.clone());
        match applied {
            None if at.leader && !self.dry_run => {
                // The recheck stays until the baseline is written.
                effects.push(Effect::RecordBaseline {
                    workload: key.clone(),
                    hash: current,
                });
                return effects;
            }
            Some(applied) if applied != current && !in_flight && !pending && tracked.recheck => {
                // Changed while nobody watched (or before this replica led):
                // restart for every source that counts, as the change cannot
                // be narrowed.
                for source in counted.into_keys() {
                    self.scheduler.changed(key.clone(), source, at.now);
                }
            }
            _ => {}
        }
        tracked.recheck = false;
        self.retries.succeeded(&Job::Decide(key.clone()));
        effects
    }

    /// Rollouts that passed the timeout: counted and reported.
    fn timeouts(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        for key in self.scheduler.timed_out(now) {
            effects.push(Effect::Count(Counter::RolloutTimedOut, key.clone()));
            let Some(tracked) = self.workloads.get(&key) else {
                continue;
            };
            let why = match &tracked.seen.rollout {
                RolloutState::InProgress(m) | RolloutState::Failed(m) => m.clone(),
                RolloutState::Complete => "it completed unseen".to_owned(),
            };
            let message = format!(
                "Gave up waiting for the rollout of {key} after {}s: {why}",
                self.limits.rollout_timeout.as_secs()
            );
            effects.extend(self.event(&key, Record::warning(reasons::ROLLOUT_TIMED_OUT, message)));
        }
        effects
    }

    /// Restarts whose window closed and whose namespace has room.
    fn starts(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        for start in self.scheduler.due(now) {
            let key = start.workload.clone();
            let Some(tracked) = self.workloads.get(&key) else {
                self.scheduler.forget(&key);
                continue;
            };
            let hash = self.current_hash(&key);
            let applied = tracked
                .seen
                .applied_hash
                .as_ref()
                .or(tracked.baseline.as_ref());
            if applied == Some(&hash) {
                // Changed and changed back inside the window: nothing to roll.
                self.scheduler.completed(&key);
                continue;
            }
            if self.dry_run {
                self.scheduler.completed(&key);
                let because = names(&start.changed);
                effects.extend(self.event(
                    &key,
                    Record::normal(
                        reasons::ROLLOUT_SKIPPED_DRY_RUN,
                        format!("Dry run: would restart {key} because {because} changed"),
                    ),
                ));
                continue;
            }
            effects.push(Effect::Roll { start, hash });
        }
        effects
    }

    /// The hash `key` should carry now, from the digests as known.
    fn current_hash(&self, key: &WorkloadKey) -> String {
        config_hash(&self.counted(key))
    }

    /// The sources that count for `key` now, with their digests ([`counted`]).
    fn counted(&self, key: &WorkloadKey) -> BTreeMap<SourceRef, Option<String>> {
        let Some(tracked) = self.workloads.get(key) else {
            return BTreeMap::new();
        };
        counted(&tracked.watched, |s| {
            self.sources
                .get(&(key.namespace.clone(), s.clone()))
                .and_then(|s| s.known.as_ref())
                .and_then(|k| k.read.as_ref())
        })
    }

    /// The Warning naming the Reloader annotations `seen` carries that
    /// capstan does not honour: only from a leader, once per workload and
    /// set of them.
    fn warning(&mut self, seen: &Observed, at: Moment) -> Option<Effect> {
        if !at.leader || !self.warned.is_news(&seen.key, &seen.unsupported) {
            return None;
        }
        Some(Effect::Event {
            workload: seen.key.clone(),
            reference: seen.reference.clone(),
            record: Record::warning(
                reasons::UNSUPPORTED_ANNOTATION,
                compat::message(&seen.key.to_string(), &seen.unsupported),
            ),
        })
    }

    fn event(&self, key: &WorkloadKey, record: Record) -> Option<Effect> {
        self.workloads.get(key).map(|t| Effect::Event {
            workload: key.clone(),
            reference: t.seen.reference.clone(),
            record,
        })
    }

    /// Drops the sources no workload uses any more, with their retries. A
    /// source still used keeps its digest: its users compare against the
    /// digest they had, not one fetched after a change.
    fn drop_unused(&mut self) {
        self.sources.retain(|_, s| !s.users.is_empty());
        let sources = &self.sources;
        self.retries.retain(|job| match job {
            Job::Fetch(skey) => sources.contains_key(skey),
            Job::Decide(_) | Job::List(_) => true,
        });
    }
}

fn names(sources: &BTreeSet<SourceRef>) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use capstan_common::events::EventType;

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

    impl Observed {
        /// An opted-in Deployment watching `Secret/tls` and
        /// `ConfigMap/ca`, without a hash, its rollout complete.
        fn test(ns: &str, name: &str) -> Self {
            Self {
                key: key(ns, name),
                reference: ObjectReference {
                    kind: Some("Deployment".into()),
                    namespace: Some(ns.into()),
                    name: Some(name.into()),
                    ..ObjectReference::default()
                },
                watched: Some(Watched::test(&[tls(), ca()], &[])),
                in_scope: true,
                unsupported: BTreeMap::new(),
                applied_hash: None,
                rollout: RolloutState::Complete,
            }
        }

        fn hash(mut self, hash: &str) -> Self {
            self.applied_hash = Some(hash.into());
            self
        }

        fn rolling(mut self) -> Self {
            self.rollout = RolloutState::InProgress("1 of 2 new replicas have been updated".into());
            self
        }

        fn opted_out(mut self) -> Self {
            self.watched = None;
            self
        }
    }

    /// Content `digest`, without marks.
    fn read(digest: &str) -> Option<Read> {
        Some(Read {
            digest: digest.into(),
            marks: sources::Marks::default(),
        })
    }

    fn tls() -> SourceRef {
        SourceRef::secret("tls")
    }

    fn ca() -> SourceRef {
        SourceRef::config_map("ca")
    }

    fn skey(ns: &str, source: SourceRef) -> SourceKey {
        (ns.into(), source)
    }

    fn hash_of(tls: &str, ca: &str) -> String {
        config_hash(&BTreeMap::from([
            (self::tls(), Some(tls.to_owned())),
            (self::ca(), Some(ca.to_owned())),
        ]))
    }

    struct Clock(Instant);

    impl Clock {
        fn new() -> Self {
            Self(Instant::now())
        }
        fn lead(&self, secs: u64) -> Moment {
            Moment {
                now: self.0 + Duration::from_secs(secs),
                leader: true,
            }
        }
        fn follow(&self, secs: u64) -> Moment {
            Moment {
                leader: false,
                ..self.lead(secs)
            }
        }
    }

    fn reasons_of(effects: &[Effect]) -> Vec<&str> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { record, .. } => Some(record.reason.as_str()),
                _ => None,
            })
            .collect()
    }

    fn rolls(effects: &[Effect]) -> Vec<(WorkloadKey, BTreeSet<SourceRef>, String)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Roll { start, hash } => {
                    Some((start.workload.clone(), start.changed.clone(), hash.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// `web` in `ns`, tracked, its sources fetched (`tls` = t1, `ca` = c1)
    /// and its baseline recorded and echoed.
    fn settled(index: &mut Index, ns: &str, name: &str, at: Moment) {
        let effects = index.workload_seen(Observed::test(ns, name), at);
        for effect in effects {
            if let Effect::Fetch(skey) = effect {
                let digest = if skey.1 == tls() { "t1" } else { "c1" };
                for e in index.fetched(&skey, read(digest), at) {
                    if let Effect::RecordBaseline { workload, hash } = e {
                        index.baseline_recorded(&workload, hash);
                    }
                }
            }
        }
        let echoed = Observed::test(ns, name).hash(&hash_of("t1", "c1"));
        assert_eq!(index.workload_seen(echoed, at), vec![]);
    }

    fn checked(source: SourceKey, changed: bool) -> Effect {
        Effect::SourceChecked { source, changed }
    }

    /// `source` in `ns` changed to `digest`.
    fn change(index: &mut Index, ns: &str, source: SourceRef, rv: &str, digest: &str, at: Moment) {
        let skey = skey(ns, source);
        assert_eq!(
            index.source_seen(skey.clone(), Some(rv.into()), at),
            vec![Effect::Fetch(skey.clone())]
        );
        assert_eq!(
            index.fetched(&skey, read(digest), at),
            vec![checked(skey.clone(), true)]
        );
    }

    #[test]
    fn a_new_workload_is_decided_once_its_sources_are_known_and_gets_a_baseline() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let effects = index.workload_seen(Observed::test("apps", "web"), clock.lead(0));
        assert_eq!(
            effects,
            vec![
                Effect::Fetch(skey("apps", ca())),
                Effect::Fetch(skey("apps", tls()))
            ]
        );
        let ca_key = skey("apps", ca());
        assert_eq!(
            index.fetched(&ca_key, read("c1"), clock.lead(0)),
            vec![checked(ca_key.clone(), false)]
        );
        let effects = index.fetched(&skey("apps", tls()), read("t1"), clock.lead(0));
        assert_eq!(
            effects,
            vec![
                checked(skey("apps", tls()), false),
                Effect::Watching {
                    workload: key("apps", "web"),
                    sources: [tls(), ca()].into(),
                },
                Effect::RecordBaseline {
                    workload: key("apps", "web"),
                    hash: hash_of("t1", "c1"),
                },
            ]
        );
        assert_eq!(index.sources_known(), 2);
        // A second workload on the same sources needs no fetch.
        let effects = index.workload_seen(Observed::test("apps", "api"), clock.lead(1));
        assert!(matches!(
            effects[..],
            [Effect::Watching { .. }, Effect::RecordBaseline { .. }]
        ));
    }

    #[test]
    fn a_follower_or_a_dry_run_records_no_baseline() {
        let clock = Clock::new();
        for (dry_run, at) in [(false, clock.follow(0)), (true, clock.lead(0))] {
            let mut index = Index::new(LIMITS, dry_run);
            index.workload_seen(Observed::test("apps", "web"), at);
            index.fetched(&skey("apps", ca()), read("c1"), at);
            let effects = index.fetched(&skey("apps", tls()), read("t1"), at);
            assert!(
                matches!(
                    effects[..],
                    [Effect::SourceChecked { .. }, Effect::Watching { .. }]
                ),
                "{effects:?}"
            );
        }
    }

    #[test]
    fn a_change_rolls_when_its_debounce_window_closes() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        assert_eq!(index.tick(clock.lead(109)), vec![]);
        assert_eq!(
            index.next_wake(clock.lead(109).now),
            Some(clock.lead(110).now)
        );
        let effects = index.tick(clock.lead(110));
        assert_eq!(
            rolls(&effects),
            [(key("apps", "web"), [tls()].into(), hash_of("t2", "c1"))]
        );
        let Effect::Roll { start, .. } = &effects[0] else {
            unreachable!()
        };
        let rolled = index.rolled(start);
        assert_eq!(
            rolled[0],
            Effect::Count(Counter::RolloutTriggered, key("apps", "web"))
        );
        let Effect::Event { record, .. } = &rolled[1] else {
            panic!("{rolled:?}")
        };
        assert_eq!(record.reason, reasons::ROLLOUT_TRIGGERED);
        assert_eq!(
            record.message,
            "Restarting Deployment/web -n apps because Secret/tls changed"
        );
        assert_eq!(index.tick(clock.lead(200)), vec![], "one change, one roll");
    }

    #[test]
    fn an_unmoved_resource_version_is_not_fetched_and_equal_content_is_no_change() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        let tls_key = skey("apps", tls());
        index.source_seen(tls_key.clone(), Some("2".into()), clock.lead(1));
        assert_eq!(
            index.fetched(&tls_key, read("t1"), clock.lead(1)),
            vec![checked(tls_key.clone(), false)]
        );
        assert_eq!(
            index.source_seen(skey("apps", tls()), Some("2".into()), clock.lead(2)),
            vec![]
        );
        assert_eq!(index.tick(clock.lead(100)), vec![]);
        // A source nobody uses is not fetched.
        let other = skey("apps", SourceRef::secret("other"));
        assert_eq!(
            index.source_seen(other, Some("1".into()), clock.lead(3)),
            vec![]
        );
    }

    #[test]
    fn three_changes_in_one_window_make_one_rollout() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        change(&mut index, "apps", ca(), "2", "c2", clock.lead(104));
        change(&mut index, "apps", tls(), "3", "t3", clock.lead(109));
        let effects = index.tick(clock.lead(110));
        assert_eq!(
            rolls(&effects),
            [(
                key("apps", "web"),
                [tls(), ca()].into(),
                hash_of("t3", "c2")
            )]
        );
    }

    #[test]
    fn changed_and_changed_back_inside_the_window_rolls_nothing() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        change(&mut index, "apps", tls(), "3", "t1", clock.lead(105));
        assert_eq!(index.tick(clock.lead(110)), vec![]);
        assert_eq!(index.next_wake(clock.lead(110).now), None);
    }

    #[test]
    fn a_rollout_in_progress_holds_its_namespace_until_it_completes() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        for name in ["one", "two"] {
            settled(&mut index, "apps", name, clock.lead(0));
        }
        settled(&mut index, "other", "three", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        change(&mut index, "other", tls(), "2", "t2", clock.lead(100));
        let started: Vec<WorkloadKey> = rolls(&index.tick(clock.lead(110)))
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(started, [key("apps", "one"), key("other", "three")]);
        assert_eq!(index.waiting(clock.lead(111)), Some(1));
        assert_eq!(index.waiting(clock.follow(111)), None);
        // The echo of the roll, still rolling: the slot stays taken.
        let rolled = Observed::test("apps", "one").hash(&hash_of("t2", "c1"));
        assert_eq!(
            index.workload_seen(rolled.clone().rolling(), clock.lead(112)),
            vec![]
        );
        assert_eq!(index.tick(clock.lead(113)), vec![]);
        let effects = index.workload_seen(rolled, clock.lead(120));
        assert_eq!(reasons_of(&effects), [reasons::ROLLOUT_COMPLETED]);
        assert_eq!(
            effects[0],
            Effect::Count(Counter::RolloutCompleted, key("apps", "one"))
        );
        let next = rolls(&index.tick(clock.lead(120)));
        assert_eq!(
            next,
            [(key("apps", "two"), [tls()].into(), hash_of("t2", "c1"))]
        );
    }

    #[test]
    fn max_concurrent_rollouts_per_namespace() {
        let clock = Clock::new();
        let mut index = Index::new(
            Limits {
                max_concurrent: 2,
                ..LIMITS
            },
            false,
        );
        for name in ["a", "b", "c"] {
            settled(&mut index, "apps", name, clock.lead(0));
        }
        change(&mut index, "apps", ca(), "2", "c2", clock.lead(100));
        assert_eq!(rolls(&index.tick(clock.lead(110))).len(), 2);
        assert_eq!(index.waiting(clock.lead(110)), Some(1));
    }

    #[test]
    fn a_rollout_that_does_not_complete_in_time_is_reported_and_frees_its_slot() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        assert_eq!(rolls(&index.tick(clock.lead(110))).len(), 1);
        let stuck = Observed::test("apps", "web")
            .hash(&hash_of("t2", "c1"))
            .rolling();
        index.workload_seen(stuck, clock.lead(111));
        assert_eq!(index.tick(clock.lead(409)), vec![]);
        let effects = index.tick(clock.lead(410));
        assert_eq!(
            effects[0],
            Effect::Count(Counter::RolloutTimedOut, key("apps", "web"))
        );
        let Effect::Event { record, .. } = &effects[1] else {
            panic!("{effects:?}")
        };
        assert_eq!(
            (record.type_, record.reason.as_str()),
            (EventType::Warning, reasons::ROLLOUT_TIMED_OUT)
        );
        assert_eq!(
            record.message,
            "Gave up waiting for the rollout of Deployment/web -n apps after 300s: 1 of 2 new replicas have been updated"
        );
    }

    #[test]
    fn a_follower_rolls_nothing_and_resyncs_on_leadership_gained() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        // As follower: first seen with no hash (no baseline written), then
        // with a hash another replica wrote before the content it saw changed.
        let effects = index.workload_seen(Observed::test("apps", "web"), clock.follow(0));
        for effect in effects {
            if let Effect::Fetch(skey) = effect {
                let digest = if skey.1 == tls() { "t2" } else { "c1" };
                index.fetched(&skey, read(digest), clock.follow(0));
            }
        }
        let stale = Observed::test("apps", "web").hash(&hash_of("t1", "c1"));
        assert_eq!(index.workload_seen(stale, clock.follow(1)), vec![]);
        assert_eq!(index.tick(clock.follow(100)), vec![]);
        // Leader now: the stale hash is a change missed, for every source.
        assert_eq!(index.leadership_gained(clock.lead(200)), vec![]);
        let effects = index.tick(clock.lead(210));
        assert_eq!(
            rolls(&effects),
            [(
                key("apps", "web"),
                [tls(), ca()].into(),
                hash_of("t2", "c1")
            )]
        );
    }

    #[test]
    fn a_stale_hash_on_first_sight_is_a_missed_change() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let stale = Observed::test("apps", "web").hash("from-before");
        for effect in index.workload_seen(stale, clock.lead(0)) {
            if let Effect::Fetch(skey) = effect {
                index.fetched(&skey, read("d"), clock.lead(0));
            }
        }
        assert_eq!(rolls(&index.tick(clock.lead(10))).len(), 1);
    }

    /// Commit facecd6: a resync while a change waits names only that change.
    #[test]
    fn a_resync_does_not_blame_every_source_for_a_change_already_waiting() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        assert_eq!(index.leadership_gained(clock.lead(101)), vec![]);
        let effects = index.tick(clock.lead(110));
        assert_eq!(
            rolls(&effects),
            [(key("apps", "web"), [tls()].into(), hash_of("t2", "c1"))]
        );
    }

    /// Commit 88876b3: events older than the baseline's write still show
    /// no hash; they must not record a second baseline that would swallow
    /// a change made since.
    #[test]
    fn the_baseline_counts_as_applied_until_its_echo() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let mut baseline = None;
        for effect in index.workload_seen(Observed::test("apps", "web"), clock.lead(0)) {
            if let Effect::Fetch(skey) = effect {
                let digest = if skey.1 == tls() { "t1" } else { "c1" };
                for e in index.fetched(&skey, read(digest), clock.lead(0)) {
                    if let Effect::RecordBaseline { hash, .. } = e {
                        baseline = Some(hash);
                    }
                }
            }
        }
        let baseline = baseline.expect("a baseline");
        index.baseline_recorded(&key("apps", "web"), baseline.clone());
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(1));
        // A status event from before the write: no hash yet.
        let stale = Observed::test("apps", "web").rolling();
        assert_eq!(index.workload_seen(stale, clock.lead(2)), vec![]);
        // The echo: the baseline on the object.
        let echo = Observed::test("apps", "web").hash(&baseline);
        assert_eq!(index.workload_seen(echo, clock.lead(3)), vec![]);
        assert_eq!(
            rolls(&index.tick(clock.lead(11))),
            [(key("apps", "web"), [tls()].into(), hash_of("t2", "c1"))]
        );
    }

    #[test]
    fn a_failed_fetch_is_made_again_and_its_change_still_counts() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        let tls_key = skey("apps", tls());
        let effects = index.source_seen(tls_key.clone(), Some("2".into()), clock.lead(100));
        assert_eq!(effects, vec![Effect::Fetch(tls_key.clone())]);
        assert_eq!(
            index.fetch_failed(tls_key.clone(), clock.lead(100).now),
            clock.lead(101).now
        );
        assert_eq!(index.tick(clock.lead(100)), vec![]);
        assert_eq!(
            index.next_wake(clock.lead(100).now),
            Some(clock.lead(101).now)
        );
        assert_eq!(
            index.tick(clock.lead(101)),
            vec![Effect::Fetch(tls_key.clone())]
        );
        assert_eq!(
            index.fetch_failed(tls_key.clone(), clock.lead(101).now),
            clock.lead(103).now
        );
        // The same resourceVersion again is still a change to read.
        let effects = index.source_seen(tls_key.clone(), Some("2".into()), clock.lead(102));
        assert_eq!(effects, vec![Effect::Fetch(tls_key.clone())]);
        assert_eq!(
            index.fetched(&tls_key, read("t2"), clock.lead(102)),
            vec![checked(tls_key.clone(), true)]
        );
        assert_eq!(index.tick(clock.lead(103)), vec![], "no retry left");
        assert_eq!(rolls(&index.tick(clock.lead(112))).len(), 1);
    }

    #[test]
    fn a_failed_baseline_is_decided_again() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        for effect in index.workload_seen(Observed::test("apps", "web"), clock.lead(0)) {
            if let Effect::Fetch(skey) = effect {
                index.fetched(&skey, read("d"), clock.lead(0));
            }
        }
        assert_eq!(
            index.baseline_failed(key("apps", "web"), clock.lead(0).now),
            clock.lead(1).now
        );
        let effects = index.tick(clock.lead(1));
        assert!(
            matches!(effects[..], [Effect::RecordBaseline { .. }]),
            "{effects:?}"
        );
        // A second failure waits twice as long.
        assert_eq!(
            index.baseline_failed(key("apps", "web"), clock.lead(1).now),
            clock.lead(3).now
        );
        assert_eq!(index.tick(clock.lead(2)), vec![]);
        assert!(matches!(
            index.tick(clock.lead(3))[..],
            [Effect::RecordBaseline { .. }]
        ));
        index.baseline_recorded(&key("apps", "web"), "h".into());
        assert_eq!(index.tick(clock.lead(10)), vec![]);
        assert_eq!(index.next_wake(clock.lead(10).now), None);
    }

    #[test]
    fn a_failed_roll_waits_again_with_its_changes_and_a_vanished_one_is_dropped() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        let effects = index.tick(clock.lead(110));
        let Some(Effect::Roll { start, .. }) = effects.into_iter().next() else {
            panic!("a roll")
        };
        change(&mut index, "apps", ca(), "2", "c2", clock.lead(110));
        assert_eq!(
            index.roll_failed(start, clock.lead(110).now),
            clock.lead(111).now
        );
        let again = index.tick(clock.lead(111));
        assert_eq!(
            rolls(&again),
            [(
                key("apps", "web"),
                [tls(), ca()].into(),
                hash_of("t2", "c2")
            )]
        );
        index.roll_gone(&key("apps", "web"));
        assert_eq!(index.tick(clock.lead(200)), vec![]);
    }

    #[test]
    fn a_deleted_source_is_a_change_without_a_fetch() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        assert_eq!(
            index.source_seen(skey("apps", ca()), None, clock.lead(100)),
            vec![checked(skey("apps", ca()), true)]
        );
        let expected = config_hash(&BTreeMap::from([
            (tls(), Some("t1".to_owned())),
            (ca(), None),
        ]));
        assert_eq!(
            rolls(&index.tick(clock.lead(110))),
            [(key("apps", "web"), [ca()].into(), expected)]
        );
    }

    #[test]
    fn a_dry_run_reports_the_restart_it_would_make() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, true);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        let effects = index.tick(clock.lead(110));
        assert_eq!(reasons_of(&effects), [reasons::ROLLOUT_SKIPPED_DRY_RUN]);
        assert!(rolls(&effects).is_empty());
        assert_eq!(index.tick(clock.lead(120)), vec![]);
    }

    #[test]
    fn opting_out_or_deletion_forgets_the_workload_and_unused_sources() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        assert_eq!(
            index.workload_seen(Observed::test("apps", "web").opted_out(), clock.lead(101)),
            vec![]
        );
        assert_eq!(index.sources_known(), 0);
        assert_eq!(index.tick(clock.lead(110)), vec![]);
        settled(&mut index, "apps", "web", clock.lead(200));
        index.workload_gone(&key("apps", "web"));
        assert_eq!(index.sources_known(), 0);
    }

    #[test]
    fn a_workload_is_observed_from_its_object() {
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "apps", "uid": "u1",
                         "annotations": {sources::RESTART_ON_CHANGE: "true",
                                         "deployment.reloader.stakater.com/pause-period": "5m"}},
            "spec": {"selector": {}, "template": {
                "metadata": {"annotations": {super::super::workload::CONFIG_HASH: "h"}},
                "spec": {"containers": [], "volumes": [{"name": "t", "secret": {"secretName": "tls"}}]}}}
        }))
        .expect("valid");
        let seen = Observed::of(&Workload::Deployment(d), true);
        assert_eq!(seen.key, key("apps", "web"));
        assert_eq!(seen.reference.uid.as_deref(), Some("u1"));
        assert_eq!(seen.watched, Some(Watched::test(&[tls()], &[])));
        assert!(seen.in_scope);
        assert_eq!(
            seen.unsupported.keys().collect::<Vec<_>>(),
            ["deployment.reloader.stakater.com/pause-period"]
        );
        assert_eq!(seen.applied_hash.as_deref(), Some("h"));
    }

    /// `source` in `ns` read with `marks` and content `digest`.
    fn marked(digest: &str, ignore: bool, matched: bool) -> Option<Read> {
        Some(Read {
            digest: digest.into(),
            marks: sources::Marks { ignore, matched },
        })
    }

    /// Answers every fetch in `effects` by `answer`; returns what followed.
    fn answer(
        index: &mut Index,
        effects: Vec<Effect>,
        at: Moment,
        answer: impl Fn(&SourceRef) -> Option<Read>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        for effect in effects {
            match effect {
                Effect::Fetch(skey) => out.extend(index.fetched(&skey, answer(&skey.1), at)),
                other => out.push(other),
            }
        }
        out
    }

    fn baseline_of(effects: &[Effect]) -> Option<String> {
        effects.iter().find_map(|e| match e {
            Effect::RecordBaseline { hash, .. } => Some(hash.clone()),
            _ => None,
        })
    }

    #[test]
    fn an_ignored_source_neither_counts_in_the_hash_nor_rolls() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let effects = index.workload_seen(Observed::test("apps", "web"), clock.lead(0));
        let effects = answer(&mut index, effects, clock.lead(0), |s| {
            if *s == tls() {
                marked("t1", true, false)
            } else {
                read("c1")
            }
        });
        let only_ca = config_hash(&BTreeMap::from([(ca(), Some("c1".to_owned()))]));
        assert_eq!(baseline_of(&effects), Some(only_ca.clone()));
        index.baseline_recorded(&key("apps", "web"), only_ca.clone());
        let echo = Observed::test("apps", "web").hash(&only_ca);
        assert_eq!(index.workload_seen(echo, clock.lead(1)), vec![]);
        // The ignored source changes: read, but nothing rolls.
        let tls_key = skey("apps", tls());
        index.source_seen(tls_key.clone(), Some("2".into()), clock.lead(100));
        assert_eq!(
            index.fetched(&tls_key, marked("t2", true, false), clock.lead(100)),
            vec![checked(tls_key.clone(), true)]
        );
        assert_eq!(index.tick(clock.lead(200)), vec![]);
        // Once it is no longer ignored, its next change rolls, now counted.
        index.source_seen(tls_key.clone(), Some("3".into()), clock.lead(300));
        index.fetched(&tls_key, read("t3"), clock.lead(300));
        assert_eq!(
            rolls(&index.tick(clock.lead(310))),
            [(key("apps", "web"), [tls()].into(), hash_of("t3", "c1"))]
        );
    }

    #[test]
    fn in_search_mode_only_a_matched_source_counts_and_rolls() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let mut seen = Observed::test("apps", "web");
        seen.watched = Some(Watched::test(&[ca()], &[tls()]));
        let effects = index.workload_seen(seen.clone(), clock.lead(0));
        let effects = answer(&mut index, effects, clock.lead(0), |s| {
            if *s == tls() { read("t1") } else { read("c1") }
        });
        let only_ca = config_hash(&BTreeMap::from([(ca(), Some("c1".to_owned()))]));
        assert_eq!(baseline_of(&effects), Some(only_ca.clone()));
        index.baseline_recorded(&key("apps", "web"), only_ca.clone());
        assert_eq!(
            index.workload_seen(seen.clone().hash(&only_ca), clock.lead(1)),
            vec![]
        );
        // Unmatched: its change rolls nothing.
        let tls_key = skey("apps", tls());
        index.source_seen(tls_key.clone(), Some("2".into()), clock.lead(100));
        index.fetched(&tls_key, read("t2"), clock.lead(100));
        assert_eq!(index.tick(clock.lead(200)), vec![]);
        // Matched and changed: it rolls, and counts in the hash.
        index.source_seen(tls_key.clone(), Some("3".into()), clock.lead(300));
        index.fetched(&tls_key, marked("t3", false, true), clock.lead(300));
        assert_eq!(
            rolls(&index.tick(clock.lead(310))),
            [(key("apps", "web"), [tls()].into(), hash_of("t3", "c1"))]
        );
        // A missed change on first sight names only the sources that count.
        let mut fresh = Index::new(LIMITS, false);
        let stale = seen.hash("from-before");
        let effects = fresh.workload_seen(stale, clock.lead(0));
        answer(&mut fresh, effects, clock.lead(0), |s| {
            if *s == tls() { read("t1") } else { read("c1") }
        });
        assert_eq!(
            rolls(&fresh.tick(clock.lead(10))),
            [(key("apps", "web"), [ca()].into(), only_ca)]
        );
    }

    #[test]
    fn a_workload_outside_the_scope_is_not_tracked() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let mut outside = Observed::test("apps", "web");
        outside.in_scope = false;
        assert_eq!(index.workload_seen(outside.clone(), clock.lead(0)), vec![]);
        assert_eq!(index.sources.len(), 0);
        // Tracked, then seen outside (its namespace was relabelled): dropped.
        settled(&mut index, "apps", "web", clock.lead(1));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        assert_eq!(index.workload_seen(outside, clock.lead(101)), vec![]);
        assert_eq!(index.sources_known(), 0);
        assert_eq!(index.tick(clock.lead(110)), vec![]);
    }

    #[test]
    fn unsupported_annotations_are_warned_once_per_set_by_a_leader() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        let mut seen = Observed::test("apps", "web").opted_out();
        seen.unsupported = BTreeMap::from([(
            "reloader.stakater.com/rollout-strategy".to_owned(),
            "why".to_owned(),
        )]);
        // A follower says nothing.
        assert_eq!(index.workload_seen(seen.clone(), clock.follow(0)), vec![]);
        let effects = index.workload_seen(seen.clone(), clock.lead(1));
        let [
            Effect::Event {
                workload, record, ..
            },
        ] = &effects[..]
        else {
            panic!("{effects:?}")
        };
        assert_eq!(workload, &key("apps", "web"));
        assert_eq!(
            (record.type_, record.reason.as_str()),
            (EventType::Warning, reasons::UNSUPPORTED_ANNOTATION)
        );
        assert_eq!(
            record.message,
            "Deployment/web -n apps: reloader.stakater.com/rollout-strategy is a Reloader annotation capstan does not honour: why"
        );
        assert_eq!(
            index.workload_seen(seen.clone(), clock.lead(2)),
            vec![],
            "once"
        );
        // Another set is news; deletion forgets what was said.
        let mut more = seen.clone();
        more.unsupported.insert(
            "deployment.reloader.stakater.com/pause-period".into(),
            "why".into(),
        );
        assert_eq!(
            reasons_of(&index.workload_seen(more, clock.lead(3))),
            [reasons::UNSUPPORTED_ANNOTATION]
        );
        index.workload_gone(&key("apps", "web"));
        assert_eq!(
            reasons_of(&index.workload_seen(seen.clone(), clock.lead(4))),
            [reasons::UNSUPPORTED_ANNOTATION]
        );
        // A tracked workload seen only as follower is warned about when
        // leadership is gained.
        let mut tracked = Observed::test("apps", "api");
        tracked.unsupported = seen.unsupported;
        let mut follower = Index::new(LIMITS, false);
        let effects = follower.workload_seen(tracked, clock.follow(0));
        answer(&mut follower, effects, clock.follow(0), |_| read("d"));
        assert_eq!(
            reasons_of(&follower.leadership_gained(clock.lead(1))),
            [reasons::UNSUPPORTED_ANNOTATION]
        );
        assert_eq!(
            reasons_of(&follower.leadership_gained(clock.lead(2))),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_namespace_leaving_the_scope_drops_its_workloads_and_one_entering_is_listed() {
        let clock = Clock::new();
        let mut index = Index::new(LIMITS, false);
        settled(&mut index, "apps", "web", clock.lead(0));
        settled(&mut index, "other", "web", clock.lead(0));
        change(&mut index, "apps", tls(), "2", "t2", clock.lead(100));
        index.namespace_left("apps");
        assert_eq!(index.sources_known(), 2, "only other's sources remain");
        assert_eq!(index.tick(clock.lead(110)), vec![], "nothing rolls in apps");
        // Back in scope: listed; a failed list is made again, doubling.
        assert_eq!(
            index.namespace_entered("apps".into()),
            vec![Effect::List("apps".into())]
        );
        assert_eq!(
            index.list_failed("apps".into(), clock.lead(200).now),
            clock.lead(201).now
        );
        assert_eq!(
            index.tick(clock.lead(201)),
            vec![Effect::List("apps".into())]
        );
        assert_eq!(
            index.list_failed("apps".into(), clock.lead(201).now),
            clock.lead(203).now
        );
        // Listed: its workloads are handled as first seen, a hash from
        // before the change being a change missed.
        let stale = Observed::test("apps", "web").hash(&hash_of("t1", "c1"));
        let effects = index.workload_seen(stale, clock.lead(202));
        answer(&mut index, effects, clock.lead(202), |s| {
            if *s == tls() { read("t2") } else { read("c1") }
        });
        index.listed("apps");
        assert_eq!(index.tick(clock.lead(203)), vec![], "no list owed");
        assert_eq!(
            rolls(&index.tick(clock.lead(212))),
            [(
                key("apps", "web"),
                [tls(), ca()].into(),
                hash_of("t2", "c1")
            )]
        );
        // Leaving drops a list still owed.
        index.namespace_entered("gone".into());
        index.list_failed("gone".into(), clock.lead(300).now);
        index.namespace_left("gone");
        assert_eq!(index.tick(clock.lead(400)), vec![]);
    }
}
