//! IO glue of `CABundle`s: builds each bundle from its sources, writes it
//! into the target ConfigMap of every selected namespace, deletes the ones
//! it created where a namespace is no longer selected, and reports in the
//! status.
//!
//! Watches `CABundle`s, Namespaces (metadata, cached: selection is matched
//! locally) and Secrets and ConfigMaps (metadata only; a change re-runs the
//! bundles that read or write the object, see [`select::affected`]). A
//! reconcile reads the sources and lists the targets (by name, and by the
//! bundle's label for ConfigMaps left under an old target name), plans with
//! [`targets::plan`] and writes:
//! * create — labelled [`BUNDLE_LABEL`], owned by the `CABundle` (garbage
//!   collected with it);
//! * update — a JSON merge patch of the bundle key only, guarded by the
//!   resourceVersion read;
//! * delete — guarded by the UID read;
//!
//! all under [`BUNDLE_MANAGER`], by the leader only, and not at all in dry
//! run (Events say what would have been done). The status goes through the
//! status subresource with server-side apply, only when it changes.
//!
//! Namespaces where an older `CABundle` or an injection annotation owns the
//! same ConfigMap key are left alone (`TargetConflict`), and a ConfigMap
//! source that is some bundle's output is refused (`SourceIsTarget`); see
//! [`conflict`].

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_common::backoff::{Retries, WatchBackoff};
use capstan_common::events::{Record, created_message, object_phrase, updated_message};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::conflict;
use super::select::{self, Found, Kind};
use super::source::{self, DEFAULT_KEYS, Problem};
use super::status::{self, Outcome};
use super::targets::{self, Action as TargetAction, BUNDLE_LABEL};
use super::{Config, config_map_ref, publish};
use crate::api::ca_bundle::{BundleSource, CABundle, CABundleSpec};
use crate::api::rules;
use crate::context::{BUNDLE_MANAGER, Context};
use crate::error::{Error, ObjectName, Result, verb};
use crate::reasons;

struct Bundles {
    ctx: Arc<Context>,
    config: Config,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    bundles: Store<CABundle>,
    retries: Retries<String>,
}

/// Keeps only the labels of a Namespace's metadata, all selection needs.
fn slim(ns: &mut PartialObjectMeta<Namespace>) {
    ns.metadata.managed_fields = None;
    ns.metadata.annotations = None;
    ns.metadata.owner_references = None;
}

/// Runs the `CABundle` controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, config: Config, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().any_semantic();
    let controller = Controller::new(Api::<CABundle>::all(client.clone()), wc.clone())
        .trigger_backoff(WatchBackoff::default())
        // Writing N targets echoes N ConfigMap events back: the debounce
        // folds them into one more reconcile instead of N.
        .with_config(
            ControllerConfig::default()
                .concurrency(2)
                .debounce(std::time::Duration::from_millis(500)),
        );
    let bundles = controller.store();

    let (namespaces, writer) = reflector::store();
    let namespace_changes = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        wc.clone(),
    )
    .backoff(WatchBackoff::default())
    .modify(slim)
    .reflect(writer)
    .touched_objects()
    .filter_map(|n| std::future::ready(n.ok().map(|_| ())));
    // Sources anywhere (a fixed scope: its namespaces and the cluster
    // resource namespace); targets only in the scope.
    let sources = ctx
        .scope
        .scope()
        .sources(&config.cluster_resource_namespace);
    let secrets = changes::<Secret>(&client, &sources, &wc, bundles.clone(), Kind::Secret);
    let config_maps =
        changes::<ConfigMap>(&client, &sources, &wc, bundles.clone(), Kind::ConfigMap);

    let state = Arc::new(Bundles {
        ctx: ctx.clone(),
        config,
        namespaces,
        bundles,
        retries: Retries::default(),
    });
    controller
        .reconcile_all_on(namespace_changes)
        .reconcile_all_on(spec_changes(&client, &wc, ctx.metrics.clone()))
        .reconcile_on(secrets)
        .reconcile_on(config_maps)
        .reconcile_all_on(ctx.leadership.gained())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "CABundle controller");
            }
            std::future::ready(())
        })
        .await;
}

/// A tick whenever a `CABundle` is created, deleted or changes its spec
/// (generation): which bundle owns a contested key, and which ConfigMaps
/// are targets, depend on every bundle, so all are re-run. Status writes do
/// not tick. Also keeps the `bundle` count of sources watched current,
/// down to zero when the last bundle goes.
fn spec_changes(
    client: &kube::Client,
    wc: &watcher::Config,
    metrics: crate::metrics::Metrics,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let mut specs: std::collections::HashMap<String, CABundle> = std::collections::HashMap::new();
    watcher(Api::<CABundle>::all(client.clone()), wc.clone())
        .backoff(WatchBackoff::default())
        .filter_map(move |event| {
            let tick = match event {
                Ok(watcher::Event::Init) => {
                    specs.clear();
                    false
                }
                Ok(watcher::Event::InitApply(b)) => {
                    specs.insert(b.name_any(), b);
                    false
                }
                Ok(watcher::Event::Apply(b)) => {
                    let generation = b.metadata.generation;
                    specs
                        .insert(b.name_any(), b)
                        .is_none_or(|old| old.metadata.generation != generation)
                }
                Ok(watcher::Event::Delete(b)) => {
                    specs.remove(&b.name_any());
                    true
                }
                Ok(watcher::Event::InitDone) | Err(_) => false,
            };
            let sources = select::object_sources(specs.values());
            metrics
                .sources_watched
                .with_label_values(&["bundle"])
                .set(i64::try_from(sources).unwrap_or(i64::MAX));
            std::future::ready(tick.then_some(()))
        })
}

/// The bundles to re-run on metadata changes of `K` objects.
fn changes<K>(
    client: &kube::Client,
    scope: &crate::scope::Scope,
    wc: &watcher::Config,
    bundles: Store<CABundle>,
    kind: Kind,
) -> impl futures::Stream<Item = ObjectRef<CABundle>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    crate::scope::watch::scoped::<PartialObjectMeta<K>>(client, scope, wc)
        .map(Ok::<_, watcher::Error>)
        .touched_objects()
        .filter_map(|o| std::future::ready(o.ok()))
        .flat_map(move |o| {
            let state = bundles.state();
            let names = select::affected(state.iter().map(AsRef::as_ref), kind, &o.metadata);
            stream::iter(names.into_iter().map(|n| ObjectRef::new(&n)))
        })
}

async fn reconcile(bundle: Arc<CABundle>, state: Arc<Bundles>) -> Result<Action> {
    let name = bundle.name_any();
    let (outcome, write_error) = state.sync(&bundle).await?;
    if let Outcome::Built {
        targets, in_sync, ..
    } = &outcome
    {
        let m = &state.ctx.metrics;
        m.bundle_targets
            .with_label_values(&[name.as_str()])
            .set(i64::try_from(*targets).unwrap_or(i64::MAX));
        m.bundle_targets_in_sync
            .with_label_values(&[name.as_str()])
            .set(i64::try_from(*in_sync).unwrap_or(i64::MAX));
    }
    state.write_status(&bundle, &outcome).await?;
    if let Some(error) = write_error {
        return Err(error);
    }
    state.retries.succeeded(&name);
    Ok(Action::requeue(state.config.resync))
}

fn error_policy(bundle: Arc<CABundle>, error: &Error, state: Arc<Bundles>) -> Action {
    let name = bundle.name_any();
    state
        .ctx
        .metrics
        .reconcile_errors
        .with_label_values(&["bundle", error.category()])
        .inc();
    let delay = state.retries.failed(name.clone());
    tracing::warn!(%error, bundle = %name, retry_in = ?delay, "CABundle reconcile failed");
    Action::requeue(delay)
}

/// What the target list returned, as [`Found`].
fn found(cm: ConfigMap, key: &str) -> Found {
    let injected = conflict::injects_into(cm.metadata.annotations.as_ref(), key);
    let ObjectMeta {
        namespace,
        name,
        labels,
        uid,
        resource_version,
        ..
    } = cm.metadata;
    Found {
        injected,
        namespace: namespace.unwrap_or_default(),
        name: name.unwrap_or_default(),
        value: cm.data.and_then(|mut d| d.remove(key)),
        bundle_label: labels.and_then(|mut l| l.remove(BUNDLE_LABEL)),
        uid,
        resource_version,
    }
}

impl Bundles {
    fn writes(&self) -> bool {
        self.ctx.leadership.is_leader() && !self.ctx.dry_run
    }

    /// Builds the bundle and brings the targets in line. Returns the outcome
    /// and the first write that failed (the others are still attempted).
    async fn sync(&self, bundle: &CABundle) -> Result<(Outcome, Option<Error>)> {
        let name = bundle.name_any();
        let spec = &bundle.spec;
        let checked = select::labelable(&name)
            .and_then(|()| select::target(spec))
            .and_then(|(target, key)| {
                select::selector(spec.namespace_selector.as_ref()).map(|s| (target, key, s))
            });
        let (target, key, selector) = match checked {
            Ok(checked) => checked,
            Err(problem) => return Ok((self.failed(bundle, problem).await, None)),
        };
        if self.namespaces.wait_until_ready().await.is_err() {
            return Err(Error::CacheStopped { kind: "Namespace" });
        }
        let pem = match self.build(spec).await? {
            Ok(pem) => pem,
            Err(problem) => return Ok((self.failed(bundle, problem).await, None)),
        };
        let namespaces = self.namespaces.state();
        let metas: Vec<&ObjectMeta> = namespaces.iter().map(|n| &n.metadata).collect();
        let mut selected = select::namespaces(metas.iter().copied(), &selector);
        let mut existing = select::existing(&name, &target, self.list(&name, &target, &key).await?);
        // Outside the rotator's scope nothing is created, updated or deleted.
        let scope = &self.ctx.scope;
        selected.retain(|ns| scope.admits(ns));
        existing.observed.retain(|ns, _| scope.admits(ns));
        existing.found.retain(|ns, _| scope.admits(ns));
        existing.stale.retain(|f| scope.admits(&f.namespace));
        // Leave contested namespaces to the writer that owns the key there.
        let bundles = self.bundles.state();
        let mut lost: BTreeMap<String, String> =
            conflict::lost_to_bundles(bundle, bundles.iter().map(AsRef::as_ref), &metas, &selected)
                .into_iter()
                .map(|(ns, owner)| (ns, format!("CABundle/{owner}")))
                .collect();
        for (ns, f) in &existing.found {
            if f.injected && selected.contains(ns) {
                lost.entry(ns.clone())
                    .or_insert_with(|| "its capstan.dev/inject-ca annotations".to_owned());
            }
        }
        selected.retain(|ns| !lost.contains_key(ns));
        existing.observed.retain(|ns, _| !lost.contains_key(ns));
        let conflict = (!lost.is_empty()).then(|| conflict::conflict_message(&target, &key, &lost));
        if let Some(message) = &conflict {
            self.report_conflict(bundle, message).await;
        }
        let plan = targets::plan(&selected, &existing.observed, &pem.pem);
        let mut in_sync = plan.in_sync;
        let mut first_error = None;
        let leftovers = existing.stale.iter().map(|f| TargetAction::Delete {
            namespace: f.namespace.clone(),
        });
        let actions: Vec<(TargetAction, Option<&Found>)> = plan
            .actions
            .iter()
            .map(|a| {
                let ns = match a {
                    TargetAction::Create { namespace }
                    | TargetAction::Update { namespace }
                    | TargetAction::Delete { namespace } => namespace,
                };
                (a.clone(), existing.found.get(ns))
            })
            .chain(leftovers.zip(existing.stale.iter().map(Some)))
            .collect();
        if !actions.is_empty() {
            tracing::debug!(bundle = %name, ?actions, "planned");
        }
        let planned = actions.len();
        if self.ctx.leadership.is_leader() {
            for (action, found) in actions {
                let write = Write {
                    bundle,
                    target: found.map_or(target.as_str(), |f| f.name.as_str()),
                    key: &key,
                    pem: &pem.pem,
                    found,
                };
                match self.apply(&action, &write).await {
                    Ok(true) if !matches!(action, TargetAction::Delete { .. }) => in_sync += 1,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(bundle = %name, %error, "target write failed");
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        tracing::debug!(bundle = %name, targets = plan.targets, in_sync, planned, "CABundle synced");
        Ok((
            Outcome::Built {
                hash: source::bundle_hash(&pem.pem),
                certificates: pem.len(),
                targets: plan.targets,
                in_sync,
                conflict,
            },
            first_error,
        ))
    }

    /// Another writer owns the key in some namespaces: a Warning on the
    /// `CABundle` when that is news (its Ready condition does not say so yet).
    async fn report_conflict(&self, bundle: &CABundle, message: &str) {
        let known = bundle.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.reason == reasons::TARGET_CONFLICT && c.message == message)
        });
        tracing::debug!(bundle = %bundle.name_any(), "{message}");
        if known || !self.ctx.leadership.is_leader() {
            return;
        }
        let record = Record::warning(reasons::TARGET_CONFLICT, message);
        publish(&self.ctx, &bundle.object_ref(&()), &record).await;
    }

    /// A source or the spec is unusable: say so on the `CABundle`.
    async fn failed(&self, bundle: &CABundle, problem: Problem) -> Outcome {
        tracing::debug!(bundle = %bundle.name_any(), reason = problem.reason(), "{}", problem.message());
        if self.ctx.leadership.is_leader() {
            let record = Record::warning(problem.reason(), problem.message());
            publish(&self.ctx, &bundle.object_ref(&()), &record).await;
        }
        Outcome::Failed(problem)
    }

    /// The bundle of every source, or the first problem.
    async fn build(&self, spec: &CABundleSpec) -> Result<Result<capstan_pki::Bundle, Problem>> {
        if spec.sources.is_empty() {
            return Ok(Err(Problem::Invalid(rules::no_sources("spec.sources"))));
        }
        let mut inputs: Vec<Vec<u8>> = Vec::with_capacity(spec.sources.len());
        for (i, s) in spec.sources.iter().enumerate() {
            match self.read(i, s).await? {
                Ok(bytes) => inputs.push(bytes),
                Err(problem) => return Ok(Err(problem)),
            }
        }
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        Ok(source::build(&refs, time::OffsetDateTime::now_utc()))
    }

    /// The certificates of source number `i`.
    async fn read(&self, i: usize, s: &BundleSource) -> Result<Result<Vec<u8>, Problem>> {
        let client = self.ctx.client.clone();
        match (&s.secret, &s.config_map, &s.inline) {
            (None, None, Some(pem)) => {
                let data = BTreeMap::from([("inline".to_owned(), pem.as_bytes().to_vec())]);
                let what = format!("spec.sources[{i}]");
                Ok(source::read_key(&what, &data, Some("inline"), &[]).map(<[u8]>::to_vec))
            }
            (Some(r), None, None) => {
                let what = object_phrase("Secret", Some(&r.namespace), &r.name);
                let secret = Api::<Secret>::namespaced(client, &r.namespace)
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| {
                        Error::kube(
                            verb::READ,
                            ObjectName::namespaced("Secret", &r.namespace, &r.name),
                            e,
                        )
                    })?;
                let Some(secret) = secret else {
                    return Ok(Err(Problem::Missing(format!("{what} not found"))));
                };
                let data = source::secret_bytes(secret);
                Ok(
                    source::read_key(&what, &data, r.key.as_deref(), DEFAULT_KEYS)
                        .map(<[u8]>::to_vec),
                )
            }
            (None, Some(r), None) => {
                let what = object_phrase("ConfigMap", Some(&r.namespace), &r.name);
                let cm = Api::<ConfigMap>::namespaced(client, &r.namespace)
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| {
                        Error::kube(
                            verb::READ,
                            ObjectName::namespaced("ConfigMap", &r.namespace, &r.name),
                            e,
                        )
                    })?;
                let Some(cm) = cm else {
                    return Ok(Err(Problem::Missing(format!("{what} not found"))));
                };
                let namespaces = self.namespaces.state();
                let metas: Vec<&ObjectMeta> = namespaces.iter().map(|n| &n.metadata).collect();
                let bundles = self.bundles.state();
                if let Some(why) = conflict::source_is_target(
                    bundles.iter().map(AsRef::as_ref),
                    &metas,
                    &cm.metadata,
                ) {
                    return Ok(Err(Problem::SourceIsTarget(format!(
                        "spec.sources[{i}]: {why}; a bundle cannot read its own output"
                    ))));
                }
                let data = source::config_map_bytes(cm);
                Ok(
                    source::read_key(&what, &data, r.key.as_deref(), DEFAULT_KEYS)
                        .map(<[u8]>::to_vec),
                )
            }
            _ => Ok(Err(Problem::Invalid(rules::one_source_kind(&format!(
                "spec.sources[{i}]"
            ))))),
        }
    }

    /// The ConfigMaps under the target name, and those the bundle created
    /// under any name.
    async fn list(&self, bundle: &str, target: &str, key: &str) -> Result<Vec<Found>> {
        let client = self.ctx.client.clone();
        // A fixed scope is listed namespace by namespace (namespaced RBAC).
        let apis: Vec<Api<ConfigMap>> = match self.ctx.scope.scope().fixed() {
            None => vec![Api::all(client)],
            Some(namespaces) => namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        };
        let by_name = ListParams::default().fields(&format!("metadata.name={target}"));
        let by_label = ListParams::default().labels(&format!("{BUNDLE_LABEL}={bundle}"));
        let mut out = Vec::new();
        for api in &apis {
            for params in [&by_name, &by_label] {
                let list = api.list(params).await.map_err(|e| {
                    Error::kube(
                        verb::LIST_TARGETS,
                        ObjectName::cluster("CABundle", bundle),
                        e,
                    )
                })?;
                out.extend(list.items.into_iter().map(|cm| found(cm, key)));
            }
        }
        Ok(out)
    }

    /// Makes one planned write; `Ok(true)` when it was made.
    async fn apply(&self, action: &TargetAction, w: &Write<'_>) -> Result<bool> {
        let bundle_name = w.bundle.name_any();
        let (namespace, verb, skipped) = match action {
            TargetAction::Create { namespace } => (
                namespace,
                "create",
                reasons::CONFIG_MAP_CREATE_SKIPPED_DRY_RUN,
            ),
            TargetAction::Update { namespace } => (
                namespace,
                "update",
                reasons::CONFIG_MAP_UPDATE_SKIPPED_DRY_RUN,
            ),
            TargetAction::Delete { namespace } => (
                namespace,
                "delete",
                reasons::CONFIG_MAP_DELETE_SKIPPED_DRY_RUN,
            ),
        };
        let phrase = object_phrase("ConfigMap", Some(namespace), w.target);
        let uid = w.found.and_then(|f| f.uid.clone());
        if !self.writes() {
            let record = Record::normal(
                skipped,
                format!("Dry run: would {verb} {phrase} for CABundle/{bundle_name}"),
            );
            publish(
                &self.ctx,
                &config_map_ref(namespace, w.target, uid),
                &record,
            )
            .await;
            return Ok(false);
        }
        let api = Api::<ConfigMap>::namespaced(self.ctx.client.clone(), namespace);
        let target = ObjectName::namespaced("ConfigMap", namespace, w.target);
        let fail = |write: &'static str| move |e| Error::kube(write, target.clone(), e);
        let record = match action {
            TargetAction::Create { .. } => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(w.target.to_owned()),
                        namespace: Some(namespace.clone()),
                        labels: Some([(BUNDLE_LABEL.to_owned(), bundle_name.clone())].into()),
                        owner_references: w.bundle.controller_owner_ref(&()).map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    data: Some([(w.key.to_owned(), w.pem.to_owned())].into()),
                    ..ConfigMap::default()
                };
                let params = PostParams {
                    field_manager: Some(BUNDLE_MANAGER.to_owned()),
                    ..PostParams::default()
                };
                let created = api.create(&params, &cm).await.map_err(fail(verb::CREATE))?;
                let reference = config_map_ref(namespace, w.target, created.metadata.uid);
                let message = created_message("ConfigMap", Some(namespace), w.target);
                (
                    reference,
                    Record::normal(reasons::CONFIG_MAP_CREATED, message),
                )
            }
            TargetAction::Update { .. } => {
                let body = super::inject::key_patch(
                    w.key,
                    w.pem,
                    w.found.and_then(|f| f.resource_version.as_deref()),
                );
                let params = PatchParams {
                    field_manager: Some(BUNDLE_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                api.patch(w.target, &params, &Patch::Merge(&body))
                    .await
                    .map_err(fail(verb::UPDATE))?;
                let message = updated_message("ConfigMap", Some(namespace), w.target);
                (
                    config_map_ref(namespace, w.target, uid),
                    Record::normal(reasons::CONFIG_MAP_UPDATED, message),
                )
            }
            TargetAction::Delete { .. } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: uid.clone(),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(w.target, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => return Ok(true),
                    Err(e) => return Err(fail(verb::DELETE)(e)),
                }
                let message =
                    format!("Deleted {phrase} because CABundle/{bundle_name} no longer selects it");
                (
                    config_map_ref(namespace, w.target, uid),
                    Record::normal(reasons::CONFIG_MAP_DELETED, message),
                )
            }
        };
        if !matches!(action, TargetAction::Delete { .. }) {
            self.ctx
                .metrics
                .bundle_updates
                .with_label_values(&[namespace.as_str(), w.target])
                .inc();
        }
        publish(&self.ctx, &record.0, &record.1).await;
        Ok(true)
    }

    /// Writes the status when it says something new (leader only, not in
    /// dry run).
    async fn write_status(&self, bundle: &CABundle, outcome: &Outcome) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let desired = status::desired(
            bundle.status.as_ref(),
            outcome,
            bundle.metadata.generation,
            &now,
        );
        if !status::changed(bundle.status.as_ref(), &desired) {
            return Ok(());
        }
        let name = bundle.name_any();
        let body = serde_json::json!({
            "apiVersion": CABundle::api_version(&()),
            "kind": CABundle::kind(&()),
            "status": desired,
        });
        Api::<CABundle>::all(self.ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(BUNDLE_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| {
                Error::kube(
                    verb::WRITE_STATUS,
                    ObjectName::cluster("CABundle", &name),
                    e,
                )
            })?;
        Ok(())
    }
}

/// One write's inputs.
struct Write<'a> {
    bundle: &'a CABundle,
    target: &'a str,
    key: &'a str,
    pem: &'a str,
    found: Option<&'a Found>,
}
