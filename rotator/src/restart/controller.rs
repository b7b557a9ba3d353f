//! The executor of restarts: turns watch events into [`Index`] inputs and
//! carries out the [`Effect`]s it returns through the API.
//!
//! Workloads, Secrets and ConfigMaps are watched in the rotator's namespace
//! scope (one watch per namespace when it is a fixed list, see
//! [`scoped`]); Secrets and ConfigMaps by metadata only: a source the index
//! asks for is fetched once, its content reduced to a digest and its marks
//! and dropped ([`hash::secret_read`], [`hash::config_map_read`]). A
//! namespace moving into the scope is listed when the index asks. Every
//! decision (what to fetch, which workloads are in scope, when to record a
//! baseline, what to roll and when, which Event to publish) is the index's;
//! this module only calls the API and reports each call's outcome back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use super::hash;
use super::index::{Counter, Effect, Index, Moment, Observed, SourceKey};
use super::schedule::{Limits, WorkloadKey};
use super::sources::{SourceKind, SourceRef};
use super::workload::{self, Workload};
use crate::context::{Context, RESTART_MANAGER};
use crate::error::{Error, ObjectName, Result, verb};
use crate::scope::Scope;
use crate::scope::namespaces::{Moved, map_event};
use crate::scope::watch::scoped;

/// How long the loop sleeps when nothing is scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(30);

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

/// The restart controller: the index and the API it acts through.
pub struct Restarter {
    ctx: Arc<Context>,
    index: Index,
}

impl Restarter {
    /// A restarter with these limits.
    #[must_use]
    pub fn new(ctx: Arc<Context>, limits: Limits) -> Self {
        let index = Index::new(limits, ctx.dry_run);
        Self { ctx, index }
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
            let wake = self
                .index
                .next_wake(now)
                .map_or(IDLE_WAKE, |at| at.saturating_duration_since(now));
            let input = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wake) => Input::Tick,
                next = inputs.next() => match next { Some(input) => input, None => return },
            };
            let effects = self.input(input);
            self.carry_out(effects).await;
            let effects = self.index.tick(self.moment());
            self.carry_out(effects).await;
            self.update_gauges();
        }
    }

    fn moment(&self) -> Moment {
        Moment {
            now: Instant::now(),
            leader: self.ctx.leadership.is_leader(),
        }
    }

    /// Hands one watch event to the index.
    fn input(&mut self, input: Input) -> Vec<Effect> {
        let at = self.moment();
        match input {
            Input::Workload(event) => match *event {
                watcher::Event::Apply(w) | watcher::Event::InitApply(w) => {
                    self.index.workload_seen(self.observed(&w), at)
                }
                watcher::Event::Delete(w) => {
                    self.index.workload_gone(&w.key());
                    Vec::new()
                }
                watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
            },
            Input::SecretMeta(event) => self.source_event(SourceKind::Secret, event, at),
            Input::ConfigMapMeta(event) => self.source_event(SourceKind::ConfigMap, event, at),
            Input::LeaderGained => self.index.leadership_gained(at),
            Input::Moved(Moved {
                namespace,
                admitted,
            }) => {
                if admitted {
                    self.index.namespace_entered(namespace)
                } else {
                    self.index.namespace_left(&namespace);
                    Vec::new()
                }
            }
            Input::Tick => Vec::new(),
        }
    }

    /// What the index needs of `w`, with whether its namespace is in scope
    /// now.
    fn observed(&self, w: &Workload) -> Observed {
        Observed::of(w, self.ctx.scope.admits(&w.key().namespace))
    }

    /// A metadata event of a Secret or ConfigMap.
    fn source_event<K: kube::Resource>(
        &mut self,
        kind: SourceKind,
        event: watcher::Event<PartialObjectMeta<K>>,
        at: Moment,
    ) -> Vec<Effect> {
        let (meta, deleted) = match event {
            watcher::Event::Apply(m) | watcher::Event::InitApply(m) => (m, false),
            watcher::Event::Delete(m) => (m, true),
            watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
        };
        let resource_version = if deleted {
            None
        } else {
            meta.resource_version()
        };
        let source = SourceRef {
            kind,
            name: meta.name_any(),
        };
        let skey = (meta.namespace().unwrap_or_default(), source);
        self.index.source_seen(skey, resource_version, at)
    }

    /// Carries out `effects`, and those the index returns for their
    /// outcomes, in order.
    async fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Fetch(skey) => match self.fetch(&skey).await {
                    Ok(read) => queue.extend(self.index.fetched(&skey, read, self.moment())),
                    Err(error) => {
                        self.failure(&error);
                        let at = self.index.fetch_failed(skey, Instant::now());
                        tracing::debug!(retry_in = ?at.saturating_duration_since(Instant::now()), "will read the source again");
                    }
                },
                Effect::List(namespace) => match list_in(&self.ctx.client, &namespace).await {
                    Ok(listed) => {
                        for w in &listed {
                            let seen = self.observed(w);
                            queue.extend(self.index.workload_seen(seen, self.moment()));
                        }
                        self.index.listed(&namespace);
                        tracing::info!(%namespace, workloads = listed.len(), "namespace entered the scope; its workloads read");
                    }
                    Err(error) => {
                        self.failure(&error);
                        let at = self.index.list_failed(namespace, Instant::now());
                        tracing::debug!(retry_in = ?at.saturating_duration_since(Instant::now()), "will list the namespace again");
                    }
                },
                Effect::RecordBaseline { workload, hash } => {
                    match self
                        .patch(&workload, &workload::hash_patch(&hash, false))
                        .await
                    {
                        Ok(()) => self.index.baseline_recorded(&workload, hash),
                        Err(error) => {
                            self.failure(&error);
                            let at = self.index.baseline_failed(workload.clone(), Instant::now());
                            tracing::debug!(%workload, retry_in = ?at.saturating_duration_since(Instant::now()), "will handle the workload again");
                        }
                    }
                }
                Effect::Roll { start, hash } => {
                    let key = start.workload.clone();
                    match self.patch(&key, &workload::hash_patch(&hash, true)).await {
                        Ok(()) => queue.extend(self.index.rolled(&start)),
                        Err(error) if error.is_not_found() => {
                            self.index.roll_gone(&key);
                            tracing::info!(workload = %key, "gone before its restart");
                        }
                        Err(error) => {
                            self.failure(&error);
                            let now = Instant::now();
                            let at = self.index.roll_failed(start, now);
                            tracing::warn!(%error, workload = %key, retry_in = ?at.saturating_duration_since(now), "could not restart; will try again");
                        }
                    }
                }
                Effect::Event {
                    workload,
                    reference,
                    record,
                } => {
                    tracing::info!(%workload, reason = %record.reason, "{}", record.message);
                    self.ctx.recorder.publish_or_warn(&reference, &record).await;
                }
                Effect::Count(counter, key) => {
                    let metrics = &self.ctx.metrics;
                    let counter = match counter {
                        Counter::RolloutTriggered => &metrics.rollouts_triggered,
                        Counter::RolloutCompleted => &metrics.rollouts_completed,
                        Counter::RolloutTimedOut => &metrics.rollouts_timed_out,
                    };
                    counter.with_label_values(&[&key.namespace, key.kind]).inc();
                }
                Effect::SourceChecked {
                    source: (namespace, source),
                    changed,
                } => {
                    tracing::debug!(%source, %namespace, changed, "source content checked");
                }
                Effect::Watching { workload, sources } => {
                    let names: Vec<String> = sources.iter().map(ToString::to_string).collect();
                    tracing::info!(%workload, sources = %names.join(", "), "watching the sources of {workload}");
                }
            }
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

    fn update_gauges(&self) {
        let metrics = &self.ctx.metrics;
        metrics
            .sources_watched
            .with_label_values(&["restart"])
            .set(i64::try_from(self.index.sources_known()).unwrap_or(i64::MAX));
        if let Some(waiting) = self.index.waiting(self.moment()) {
            metrics
                .rollouts_waiting
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        }
    }

    /// Reads a source and reduces it to its digest and marks (`None` if
    /// missing).
    async fn fetch(&self, (namespace, source): &SourceKey) -> Result<Option<hash::Read>> {
        let client = self.ctx.client.clone();
        let object = ObjectName::namespaced(source.kind.as_str(), namespace, &source.name);
        let fail = |e| Error::kube(verb::READ, object.clone(), e);
        Ok(match source.kind {
            SourceKind::Secret => Api::<Secret>::namespaced(client, namespace)
                .get_opt(&source.name)
                .await
                .map_err(fail)?
                .map(hash::secret_read),
            SourceKind::ConfigMap => Api::<ConfigMap>::namespaced(client, namespace)
                .get_opt(&source.name)
                .await
                .map_err(fail)?
                .map(hash::config_map_read),
        })
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
        result.map_err(|e| {
            Error::kube(
                verb::PATCH,
                ObjectName::namespaced(key.kind, &key.namespace, &key.name),
                e,
            )
        })
    }
}

/// A watch of one workload kind in the scope as loop inputs.
fn workloads<K>(
    client: &kube::Client,
    scope: &Scope,
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
        .map(move |e| Input::Workload(Box::new(map_event(e, wrap))))
        .boxed()
}

/// Every Deployment, StatefulSet and DaemonSet in `namespace` (when it
/// enters the rotator's scope).
///
/// # Errors
/// When a list fails.
async fn list_in(client: &kube::Client, namespace: &str) -> Result<Vec<Workload>> {
    let fail = |kind: &'static str, source| Error::List {
        kind,
        namespace: namespace.to_owned(),
        source,
    };
    let params = ListParams::default();
    let mut out: Vec<Workload> = Vec::new();
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|e| fail("Deployment", e))?;
    out.extend(deployments.items.into_iter().map(Workload::Deployment));
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|e| fail("StatefulSet", e))?;
    out.extend(stateful_sets.items.into_iter().map(Workload::StatefulSet));
    let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map_err(|e| fail("DaemonSet", e))?;
    out.extend(daemon_sets.items.into_iter().map(Workload::DaemonSet));
    Ok(out)
}
