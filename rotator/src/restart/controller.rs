//! IO glue for restarts: one event loop over the workloads and the
//! Secrets/ConfigMaps they use.
//!
//! Secrets and ConfigMaps are watched by metadata only. When one that an
//! opted-in workload uses gets a new resourceVersion, it is fetched once, its
//! content reduced to a digest and the data dropped; only a changed digest
//! opens a restart window. When the window closes and the namespace has room,
//! the workload's pod template gets the new `capstan.dev/config-hash`, and
//! the rollout is followed to its end.
//!
//! Nothing is lost to a failed call: a source whose fetch failed is fetched
//! again (its new resourceVersion is recorded only once its content is
//! known), a workload whose handling failed is handled again, and a restart
//! whose patch failed goes back to the scheduler with its changes, each
//! after a doubling delay ([`Backoff`], [`Scheduler::failed`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_common::events::Record;
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::compat::{self, Warned};
use super::hash::{config_hash, object_digest};
use super::rollout::RolloutState;
use super::schedule::{Backoff, Limits, Scheduler, WorkloadKey};
use super::sources::{self, Marks, SourceKind, SourceRef, Watched};
use super::workload::{self, Workload};
use crate::context::{Context, RESTART_MANAGER};
use crate::error::{Error, Result};
use crate::scope::namespaces::Moved;
use crate::scope::watch::scoped;

/// A source in its namespace.
type SourceKey = (String, SourceRef);

/// What the loop reacts to.
enum Input {
    Workload(Box<watcher::Event<Workload>>),
    SecretMeta(watcher::Event<PartialObjectMeta<Secret>>),
    ConfigMapMeta(watcher::Event<PartialObjectMeta<ConfigMap>>),
    LeaderGained,
    /// A namespace entered or left the scope.
    Moved(Moved),
    Tick,
}

/// Digest of a source as last fetched.
#[derive(Debug, Clone)]
struct Known {
    resource_version: Option<String>,
    digest: Option<String>,
    /// Its `ignore` and `match` annotations.
    marks: Marks,
}

/// The restart controller's state.
pub struct Restarter {
    ctx: Arc<Context>,
    limits: Limits,
    scheduler: Scheduler,
    workloads: HashMap<WorkloadKey, (Workload, Watched)>,
    users: HashMap<SourceKey, BTreeSet<WorkloadKey>>,
    known: HashMap<SourceKey, Known>,
    /// Sources to fetch again, with the resourceVersion last seen (`None`
    /// once deleted).
    refetch: Backoff<SourceKey>,
    refetch_versions: HashMap<SourceKey, Option<String>>,
    /// Workloads to handle again, as last seen, and whether as a recheck.
    rework: Backoff<WorkloadKey>,
    rework_objects: HashMap<WorkloadKey, (Workload, bool)>,
    /// Baselines this replica recorded whose echo has not been seen yet:
    /// events older than the write still show no hash, and must not record
    /// the baseline again (by then it could include a change, which would
    /// then never roll).
    baselines: HashMap<WorkloadKey, String>,
    /// The Reloader annotations not honoured that were reported, per workload.
    warned: Warned<WorkloadKey>,
}

impl Restarter {
    /// A restarter with these limits.
    #[must_use]
    pub fn new(ctx: Arc<Context>, limits: Limits) -> Self {
        Self {
            ctx,
            limits,
            scheduler: Scheduler::new(limits),
            workloads: HashMap::new(),
            users: HashMap::new(),
            known: HashMap::new(),
            refetch: Backoff::default(),
            refetch_versions: HashMap::new(),
            rework: Backoff::default(),
            rework_objects: HashMap::new(),
            baselines: HashMap::new(),
            warned: Warned::default(),
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let client = self.ctx.client.clone();
        let config = watcher::Config::default().any_semantic();
        let scope = self.ctx.scope.scope().clone();
        let mut inputs: SelectAll<BoxStream<'static, Input>> = SelectAll::new();
        inputs.push(workloads::<Deployment>(
            &client,
            &scope,
            &config,
            Workload::Deployment,
        ));
        inputs.push(workloads::<StatefulSet>(
            &client,
            &scope,
            &config,
            Workload::StatefulSet,
        ));
        inputs.push(workloads::<DaemonSet>(
            &client,
            &scope,
            &config,
            Workload::DaemonSet,
        ));
        inputs.push(
            scoped::<PartialObjectMeta<Secret>>(&client, &scope, &config)
                .map(Input::SecretMeta)
                .boxed(),
        );
        inputs.push(
            scoped::<PartialObjectMeta<ConfigMap>>(&client, &scope, &config)
                .map(Input::ConfigMapMeta)
                .boxed(),
        );
        inputs.push(self.ctx.scope.moves_stream().map(Input::Moved).boxed());
        inputs.push(
            self.ctx
                .leadership
                .gained()
                .map(|()| Input::LeaderGained)
                .boxed(),
        );
        loop {
            let now = Instant::now();
            let wake = [
                self.scheduler.next_wake(now),
                self.refetch.next_wake(now),
                self.rework.next_wake(now),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(30), |at| {
                at.saturating_duration_since(now)
            });
            let input = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wake) => Input::Tick,
                next = inputs.next() => match next { Some(input) => input, None => return },
            };
            if let Err(error) = self.handle(input).await {
                self.failure(&error);
            }
            self.retry(Instant::now()).await;
            self.drive(Instant::now()).await;
        }
    }

    fn failure(&self, error: &Error) {
        self.ctx
            .metrics
            .reconcile_errors
            .with_label_values(&["restart", error.category()])
            .inc();
        tracing::warn!(%error, "restart controller");
    }

    /// Handles a workload, and again later if that fails.
    async fn apply_workload(&mut self, w: Workload, recheck: bool) -> Result<()> {
        let key = w.key();
        match self.workload_applied(w.clone(), recheck).await {
            Ok(()) => {
                self.rework.succeeded(&key);
                self.rework_objects.remove(&key);
                Ok(())
            }
            Err(error) => {
                let at = self.rework.failed(key.clone(), Instant::now());
                let recheck = recheck
                    || self
                        .rework_objects
                        .get(&key)
                        .is_some_and(|(_, earlier)| *earlier);
                self.rework_objects.insert(key.clone(), (w, recheck));
                tracing::debug!(workload = %key, retry_in = ?at.saturating_duration_since(Instant::now()), "will handle the workload again");
                Err(error)
            }
        }
    }

    /// Does again what failed and is due: fetches of changed sources and
    /// handling of workloads.
    async fn retry(&mut self, now: Instant) {
        for skey in self.refetch.due(now) {
            let Some(rv) = self.refetch_versions.get(&skey).cloned() else {
                self.refetch.succeeded(&skey);
                continue;
            };
            let (namespace, source) = skey;
            if let Err(error) = self
                .source_seen(source.kind, namespace, source.name, rv)
                .await
            {
                self.failure(&error);
            }
        }
        for key in self.rework.due(now) {
            let Some((w, recheck)) = self.rework_objects.get(&key).cloned() else {
                self.rework.succeeded(&key);
                continue;
            };
            if let Err(error) = self.apply_workload(w, recheck).await {
                self.failure(&error);
            }
        }
    }

    async fn handle(&mut self, input: Input) -> Result<()> {
        match input {
            Input::Workload(event) => match *event {
                watcher::Event::Apply(w) | watcher::Event::InitApply(w) => {
                    self.apply_workload(w, false).await
                }
                watcher::Event::Delete(w) => {
                    self.warned.forget(&w.key());
                    self.forget(&w.key());
                    Ok(())
                }
                watcher::Event::Init | watcher::Event::InitDone => Ok(()),
            },
            Input::SecretMeta(event) => self.source_event(SourceKind::Secret, event).await,
            Input::ConfigMapMeta(event) => self.source_event(SourceKind::ConfigMap, event).await,
            Input::LeaderGained => self.resync().await,
            Input::Moved(moved) => self.moved(moved).await,
            Input::Tick => Ok(()),
        }
    }

    /// A metadata event of a Secret or ConfigMap.
    async fn source_event<K: kube::Resource>(
        &mut self,
        kind: SourceKind,
        event: watcher::Event<PartialObjectMeta<K>>,
    ) -> Result<()> {
        let (meta, deleted) = match event {
            watcher::Event::Apply(m) | watcher::Event::InitApply(m) => (m, false),
            watcher::Event::Delete(m) => (m, true),
            watcher::Event::Init | watcher::Event::InitDone => return Ok(()),
        };
        let rv = if deleted {
            None
        } else {
            meta.resource_version()
        };
        let namespace = meta.namespace().unwrap_or_default();
        self.source_seen(kind, namespace, meta.name_any(), rv).await
    }

    /// A workload appeared or changed: track what it uses, follow its
    /// rollout, and record a baseline hash the first time.
    ///
    /// A hash that differs from the content is treated as a change missed
    /// while nobody watched only when the workload is first seen or this
    /// replica just became leader (`recheck`), and no restart is waiting
    /// already; otherwise the difference is a change already scheduled (the
    /// restart it waits for names the sources that changed, and rolls to
    /// the content current then), or the echo of the rotator's own write.
    async fn workload_applied(&mut self, w: Workload, recheck: bool) -> Result<()> {
        let key = w.key();
        if !self.ctx.scope.admits(&key.namespace) {
            self.forget(&key);
            return Ok(());
        }
        self.warn_unsupported(&w).await;
        let Some(watched) = sources::watched(&w.annotations(), &w.template()) else {
            self.forget(&key);
            return Ok(());
        };
        let first_seen = !self.workloads.contains_key(&key);
        self.forget_users(&key);
        for source in watched.sources() {
            self.users
                .entry((key.namespace.clone(), source.clone()))
                .or_default()
                .insert(key.clone());
            let skey = (key.namespace.clone(), source.clone());
            if !self.known.contains_key(&skey) {
                let (digest, marks) = self.fetch(&skey).await?;
                self.known.insert(
                    skey,
                    Known {
                        resource_version: None,
                        digest,
                        marks,
                    },
                );
            }
        }
        self.drop_unused();
        self.update_gauges();
        if first_seen {
            // Logged once the current content is known, so a change from
            // here on is seen as one.
            let names: Vec<String> = watched.sources().map(ToString::to_string).collect();
            tracing::info!(workload = %key, sources = %names.join(", "), "watching the sources of {key}");
        }
        let in_flight = self.scheduler.in_flight().contains(&key);
        let pending = self.scheduler.is_pending(&key);
        if in_flight {
            match w.rollout() {
                RolloutState::Complete => {
                    self.scheduler.completed(&key);
                    self.ctx
                        .metrics
                        .rollouts_completed
                        .with_label_values(&[&key.namespace, key.kind])
                        .inc();
                    self.event(
                        &w,
                        Record::normal("RolloutCompleted", format!("Rollout of {key} completed")),
                    )
                    .await;
                }
                RolloutState::Failed(why) => {
                    self.scheduler.completed(&key);
                    self.event(
                        &w,
                        Record::warning("RolloutFailed", format!("Rollout of {key} failed: {why}")),
                    )
                    .await;
                }
                RolloutState::InProgress(_) => {}
            }
        }
        let current = self.hash_of(&key.namespace, &watched);
        if w.applied_hash().is_some() {
            // The echo of a recorded baseline, or anything later.
            self.baselines.remove(&key);
        }
        let applied = self.applied_hash(&w);
        self.workloads.insert(key.clone(), (w.clone(), watched));
        match applied {
            None => self.record_baseline(&w, &current).await,
            Some(applied)
                if applied != current && !in_flight && !pending && (first_seen || recheck) =>
            {
                // Changed while nobody watched (or before this replica led):
                // restart for every source that counts, as the change cannot
                // be narrowed.
                for source in self.counted(&key.namespace, &self.workloads[&key].1) {
                    self.scheduler.changed(key.clone(), source, Instant::now());
                }
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// A Secret or ConfigMap was seen with this resourceVersion (`None`:
    /// deleted). Fetches it only if a workload uses it and it moved.
    async fn source_seen(
        &mut self,
        kind: SourceKind,
        namespace: String,
        name: String,
        rv: Option<String>,
    ) -> Result<()> {
        let skey = (namespace, SourceRef { kind, name });
        let Some(users) = self.users.get(&skey).cloned() else {
            self.refetch.succeeded(&skey);
            self.refetch_versions.remove(&skey);
            return Ok(());
        };
        let previous = self.known.get(&skey).cloned();
        if rv.is_some() && previous.as_ref().is_some_and(|p| p.resource_version == rv) {
            self.refetch.succeeded(&skey);
            self.refetch_versions.remove(&skey);
            return Ok(());
        }
        let (digest, marks) = if rv.is_some() {
            match self.fetch(&skey).await {
                Ok(fetched) => fetched,
                Err(error) => {
                    // The resourceVersion stays unrecorded, so the change
                    // is still a change when the fetch is retried.
                    self.refetch.failed(skey.clone(), Instant::now());
                    self.refetch_versions.insert(skey, rv);
                    return Err(error);
                }
            }
        } else {
            (None, Marks::default())
        };
        self.refetch.succeeded(&skey);
        self.refetch_versions.remove(&skey);
        let changed = previous.as_ref().is_some_and(|p| p.digest != digest);
        self.known.insert(
            skey.clone(),
            Known {
                resource_version: rv,
                digest,
                marks,
            },
        );
        tracing::debug!(source = %skey.1, namespace = %skey.0, changed, ?marks, "source content checked");
        if changed {
            // Only the workloads it triggers: not when it is ignored, and in
            // search mode only while it is matched.
            for workload in users {
                let triggers = self
                    .workloads
                    .get(&workload)
                    .is_some_and(|(_, watched)| watched.triggers(&skey.1, marks));
                if triggers {
                    self.scheduler
                        .changed(workload, skey.1.clone(), Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Fetches a source and reduces it to a digest (`None` if missing) and
    /// its [`Marks`].
    async fn fetch(&self, (namespace, source): &SourceKey) -> Result<(Option<String>, Marks)> {
        let client = self.ctx.client.clone();
        let action = || format!("reading {source} -n {namespace}");
        let to_bytes = |m: BTreeMap<String, String>| -> BTreeMap<String, Vec<u8>> {
            m.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
        };
        let fetched = match source.kind {
            SourceKind::Secret => Api::<Secret>::namespaced(client, namespace)
                .get_opt(&source.name)
                .await
                .map_err(|e| Error::kube(action(), e))?
                .map(|s| {
                    let marks = Marks::of(s.annotations());
                    let data: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    (object_digest(SourceKind::Secret, &[("data", &data)]), marks)
                }),
            SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(client, namespace)
                .get_opt(&source.name)
                .await
                .map_err(|e| Error::kube(action(), e))?
                .map(|c| {
                    let marks = Marks::of(c.annotations());
                    let data = to_bytes(c.data.unwrap_or_default());
                    let binary: BTreeMap<String, Vec<u8>> = c
                        .binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    (
                        object_digest(
                            SourceKind::ConfigMap,
                            &[("data", &data), ("binaryData", &binary)],
                        ),
                        marks,
                    )
                }),
        };
        Ok(fetched.map_or((None, Marks::default()), |(digest, marks)| {
            (Some(digest), marks)
        }))
    }

    /// The watched sources that count for a workload now: those that
    /// trigger it, given their marks (see [`Watched::triggers`]).
    fn counted(&self, namespace: &str, watched: &Watched) -> BTreeSet<SourceRef> {
        watched
            .sources()
            .filter(|s| {
                let marks = self
                    .known
                    .get(&(namespace.to_owned(), (*s).clone()))
                    .map_or_else(Marks::default, |k| k.marks);
                watched.triggers(s, marks)
            })
            .cloned()
            .collect()
    }

    /// The hash a workload should carry now: over the sources that count,
    /// so an ignored (or, in search mode, unmatched) source's content never
    /// rolls it.
    fn hash_of(&self, namespace: &str, watched: &Watched) -> String {
        let digests: BTreeMap<SourceRef, Option<String>> = self
            .counted(namespace, watched)
            .into_iter()
            .map(|s| {
                let digest = self
                    .known
                    .get(&(namespace.to_owned(), s.clone()))
                    .and_then(|k| k.digest.clone());
                (s, digest)
            })
            .collect();
        config_hash(&digests)
    }

    /// Starts due restarts and gives up on stuck rollouts.
    async fn drive(&mut self, now: Instant) {
        if !self.ctx.leadership.is_leader() {
            return;
        }
        for key in self.scheduler.timed_out(now) {
            self.ctx
                .metrics
                .rollouts_timed_out
                .with_label_values(&[&key.namespace, key.kind])
                .inc();
            if let Some((w, _)) = self.workloads.get(&key).cloned() {
                let why = match w.rollout() {
                    RolloutState::InProgress(m) | RolloutState::Failed(m) => m,
                    RolloutState::Complete => "it completed unseen".to_owned(),
                };
                let message = format!(
                    "Gave up waiting for the rollout of {key} after {}s: {why}",
                    self.limits.rollout_timeout.as_secs()
                );
                self.event(&w, Record::warning("RolloutTimedOut", message))
                    .await;
            }
        }
        for start in self.scheduler.due(now) {
            let key = start.workload.clone();
            let Some((w, watched)) = self.workloads.get(&key).cloned() else {
                self.scheduler.forget(&key);
                continue;
            };
            let hash = self.hash_of(&key.namespace, &watched);
            if self.applied_hash(&w).as_deref() == Some(hash.as_str()) {
                // Changed and changed back inside the window: nothing to roll.
                self.scheduler.completed(&key);
                continue;
            }
            let because = start
                .changed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if self.ctx.dry_run {
                self.scheduler.completed(&key);
                let message = format!("Dry run: would restart {key} because {because} changed");
                self.event(&w, Record::normal("RolloutSkippedDryRun", message))
                    .await;
                continue;
            }
            if let Err(error) = self.patch(&key, &workload::hash_patch(&hash, true)).await {
                if error.is_not_found() {
                    self.scheduler.forget(&key);
                    tracing::info!(workload = %key, "gone before its restart");
                    continue;
                }
                self.failure(&error);
                let at = self.scheduler.failed(start, now);
                tracing::warn!(%error, workload = %key, retry_in = ?at.saturating_duration_since(now), "could not restart; will try again");
                continue;
            }
            self.ctx
                .metrics
                .rollouts_triggered
                .with_label_values(&[&key.namespace, key.kind])
                .inc();
            self.event(
                &w,
                Record::normal(
                    "RolloutTriggered",
                    format!("Restarting {key} because {because} changed"),
                ),
            )
            .await;
        }
        self.ctx
            .metrics
            .rollouts_waiting
            .set(i64::try_from(self.scheduler.waiting(now)).unwrap_or(i64::MAX));
    }

    /// The hash `w`'s pods were started with: [`Workload::applied_hash`],
    /// else the baseline this replica recorded after `w` was read.
    fn applied_hash(&self, w: &Workload) -> Option<String> {
        w.applied_hash()
            .or_else(|| self.baselines.get(&w.key()).cloned())
    }

    /// Records the first hash seen on the workload itself; rolls nothing.
    async fn record_baseline(&mut self, w: &Workload, hash: &str) -> Result<()> {
        if !self.ctx.leadership.is_leader() || self.ctx.dry_run {
            return Ok(());
        }
        let key = w.key();
        self.patch(&key, &workload::hash_patch(hash, false)).await?;
        self.baselines.insert(key, hash.to_owned());
        Ok(())
    }

    async fn patch(&self, key: &WorkloadKey, patch: &serde_json::Value) -> Result<()> {
        let params = PatchParams {
            field_manager: Some(RESTART_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let client = self.ctx.client.clone();
        let ns = &key.namespace;
        let result = match key.kind {
            "Deployment" => Api::<Deployment>::namespaced(client, ns)
                .patch(&key.name, &params, &Patch::Merge(patch))
                .await
                .map(|_| ()),
            "StatefulSet" => Api::<StatefulSet>::namespaced(client, ns)
                .patch(&key.name, &params, &Patch::Merge(patch))
                .await
                .map(|_| ()),
            _ => Api::<DaemonSet>::namespaced(client, ns)
                .patch(&key.name, &params, &Patch::Merge(patch))
                .await
                .map(|_| ()),
        };
        result.map_err(|e| Error::kube(format!("patching {key}"), e))
    }

    /// On becoming leader: every workload whose hash is stale is scheduled.
    async fn resync(&mut self) -> Result<()> {
        let tracked: Vec<Workload> = self.workloads.values().map(|(w, _)| w.clone()).collect();
        let mut first_error = None;
        for w in tracked {
            if let Err(error) = self.apply_workload(w, true).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A Warning naming the Reloader annotations of `w` capstan does not
    /// honour, once per workload and set of them (leader only).
    async fn warn_unsupported(&mut self, w: &Workload) {
        if !self.ctx.leadership.is_leader() {
            return;
        }
        let key = w.key();
        let template = w
            .template()
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        let unsupported = compat::unsupported(&w.annotations(), &template);
        if self.warned.is_news(&key, &unsupported) {
            let message = compat::message(&key.to_string(), &unsupported);
            self.event(w, Record::warning(compat::UNSUPPORTED_ANNOTATION, message))
                .await;
        }
    }

    /// A namespace left the scope (its workloads are dropped) or entered it
    /// (its workloads are read and handled as if first seen).
    async fn moved(&mut self, moved: Moved) -> Result<()> {
        if !moved.admitted {
            let gone: Vec<WorkloadKey> = self
                .workloads
                .keys()
                .filter(|k| k.namespace == moved.namespace)
                .cloned()
                .collect();
            for key in gone {
                self.forget(&key);
            }
            return Ok(());
        }
        let mut first_error = None;
        for w in workload::list_in(&self.ctx.client, &moved.namespace).await? {
            if let Err(error) = self.apply_workload(w, true).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn event(&self, w: &Workload, record: Record) {
        let key = w.key();
        tracing::info!(workload = %key, reason = %record.reason, "{}", record.message);
        let reference = match w {
            Workload::Deployment(d) => object_ref(d),
            Workload::StatefulSet(s) => object_ref(s),
            Workload::DaemonSet(d) => object_ref(d),
        };
        if let Err(e) = self.ctx.recorder.publish(&reference, &record).await {
            tracing::warn!(workload = %key, error = %e, "could not record event");
        }
    }

    /// Removes `key` from the users of every source. Digests are kept: a
    /// workload that still uses a source must compare against the digest it
    /// had, not one fetched after a change (see [`Self::drop_unused`]).
    fn forget_users(&mut self, key: &WorkloadKey) {
        for users in self.users.values_mut() {
            users.remove(key);
        }
        self.users.retain(|_, users| !users.is_empty());
    }

    /// Drops the digests (and pending fetches) of sources no workload uses
    /// any more.
    fn drop_unused(&mut self) {
        let users = &self.users;
        self.known.retain(|skey, _| users.contains_key(skey));
        self.refetch.retain(|skey| users.contains_key(skey));
        self.refetch_versions
            .retain(|skey, _| users.contains_key(skey));
    }

    fn update_gauges(&self) {
        self.ctx
            .metrics
            .sources_watched
            .with_label_values(&["restart"])
            .set(i64::try_from(self.known.len()).unwrap_or(i64::MAX));
    }

    fn forget(&mut self, key: &WorkloadKey) {
        self.workloads.remove(key);
        self.baselines.remove(key);
        self.scheduler.forget(key);
        self.rework.succeeded(key);
        self.rework_objects.remove(key);
        self.forget_users(key);
        self.drop_unused();
        self.update_gauges();
    }
}

fn object_ref<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// A watch of one workload kind in the scope as loop inputs.
fn workloads<K>(
    client: &kube::Client,
    scope: &crate::scope::Scope,
    config: &watcher::Config,
    wrap: fn(K) -> Workload,
) -> BoxStream<'static, Input>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    scoped::<K>(client, scope, config)
        .map(move |e| Input::Workload(Box::new(crate::scope::namespaces::map_event(e, wrap))))
        .boxed()
}
