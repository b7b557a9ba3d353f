//! IO glue for `CAIssuer` and `ClusterCAIssuer`: read the CA Secret, carry
//! out what [`super::plan`] decides (create the Secret, write a rotation
//! step), install the CA for the request controllers, write status and
//! Events.
//!
//! Re-checked when the issuer changes, when any Secret changes (watched by
//! metadata only, mapped to the issuers that use it), and by the clock: at
//! the next rotation step and before the CA expires.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_common::backoff::WatchBackoff;
use capstan_common::events::{self, Record};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::ca_secret::{self, Change};
use super::plan::{self, Decision, Observed, Report};
use super::status::{self as issuer_status, Health};
use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer, IssuerSpec, IssuerStatus};
use crate::api::identity::{IssuerKey, IssuerKind};
use crate::ca::layout;
use crate::ca::rotation::{PublishReason, Step};
use crate::context::Context;
use crate::error::{Error, Result};

/// Longest sleep between two checks of a healthy issuer.
const MAX_RECHECK: Duration = Duration::from_secs(3600);
/// Rotation steps one reconcile writes at most (a create, a publish due at
/// once, a switch, a drop); any further step waits for the next reconcile.
const MAX_WRITES: usize = 4;

/// What both issuer kinds offer the controller.
pub trait IssuerObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// Which kind.
    const KIND: IssuerKind;
    /// The spec.
    fn issuer_spec(&self) -> &IssuerSpec;
    /// The status, if written.
    fn issuer_status(&self) -> Option<&IssuerStatus>;
    /// The namespace of the issuer's CA Secret.
    fn secret_namespace(&self, cluster_resource_namespace: &str) -> String;
    /// An API handle for writing this object's status.
    fn api_for(&self, client: kube::Client) -> Api<Self>;
    /// Its cache key.
    fn key(&self) -> IssuerKey {
        IssuerKey {
            kind: Self::KIND,
            namespace: self.meta().namespace.clone(),
            name: self.name_any(),
        }
    }
}

impl IssuerObject for CAIssuer {
    const KIND: IssuerKind = IssuerKind::CaIssuer;
    fn issuer_spec(&self) -> &IssuerSpec {
        &self.spec.issuer
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn secret_namespace(&self, _: &str) -> String {
        self.namespace().unwrap_or_default()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl IssuerObject for ClusterCAIssuer {
    const KIND: IssuerKind = IssuerKind::ClusterCaIssuer;
    fn issuer_spec(&self) -> &IssuerSpec {
        &self.spec.issuer
    }
    fn issuer_status(&self) -> Option<&IssuerStatus> {
        self.status.as_ref()
    }
    fn secret_namespace(&self, cluster_resource_namespace: &str) -> String {
        cluster_resource_namespace.to_owned()
    }
    fn api_for(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// Reconciles one issuer.
async fn reconcile<K: IssuerObject>(issuer: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let key = issuer.key();
    let report = match decide(&*issuer, &ctx, Timestamp::now()).await {
        Ok(report) => report,
        // A Secret the plan accepted but a write step could not use.
        Err(Error::CaSecret { secret, problem }) => Report::unusable_secret(&secret, &problem),
        Err(other) => return Err(other),
    };
    let labels = key.labels();
    let uid = issuer.uid().unwrap_or_default();
    let health = &report.health;
    let live = ctx.signers.update(&key, &uid, report.ca, || match health {
        Health::Ready {
            ca,
            bundle,
            rotation,
            ..
        } => {
            ctx.metrics.ready.with_label_values(&labels).set(1);
            ctx.metrics
                .ca_not_after
                .with_label_values(&labels)
                .set(ca.not_after.0.as_second());
            ctx.metrics
                .bundle_size
                .with_label_values(&labels)
                .set(i64::try_from(bundle.len()).unwrap_or(i64::MAX));
            let next_rotation = rotation
                .as_ref()
                .and_then(|r| r.next_rotation_time.as_ref());
            ctx.metrics.set_next_rotation(&labels, next_rotation);
        }
        Health::NotReady { .. } => ctx.metrics.ready.with_label_values(&labels).set(0),
    });
    if !live {
        // Deleted while this reconcile ran: nothing left to report on.
        return Ok(Action::await_change());
    }
    write_status(&*issuer, health, &ctx).await?;
    Ok(match report.recheck {
        Some(after) => Action::requeue(after.min(MAX_RECHECK)),
        None => Action::await_change(),
    })
}

/// Reads the issuer's CA Secret, plans, and carries out the plan's writes
/// (recording their Events), planning again from each written Secret until
/// the plan only reports; at most [`MAX_WRITES`] writes, the rest on the
/// next reconcile.
async fn decide<K: IssuerObject>(issuer: &K, ctx: &Context, now: Timestamp) -> Result<Report> {
    let spec = issuer.issuer_spec();
    let name = issuer.name_any();
    let namespace = issuer.secret_namespace(&ctx.cluster_resource_namespace);
    let mut secret = match plan::secret_name(spec) {
        Some(secret_name) => ca_secret::read(&ctx.client, &namespace, secret_name).await?,
        None => None,
    };
    let trigger = issuer
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(layout::ROTATE_TRIGGER))
        .map(String::as_str);
    let mut writes = 0;
    loop {
        // Once the write budget is spent, plan as a follower: it only reports.
        let observed = Observed {
            name: &name,
            spec,
            namespace: &namespace,
            secret: secret.as_ref(),
            trigger,
            leader: ctx.leadership.is_leader() && writes < MAX_WRITES,
            now,
        };
        let (written, change) = match plan::plan(&observed) {
            Decision::Report(mut report) => {
                if writes == MAX_WRITES {
                    report.recheck = Some(Duration::ZERO);
                }
                return Ok(*report);
            }
            Decision::Create(managed) => {
                ca_secret::create(&ctx.client, &namespace, &managed, now).await?
            }
            Decision::Step(write) => {
                // A step is planned only for a Secret that was read.
                let current = secret.as_ref().ok_or_else(|| {
                    Error::Conflict(format!("Secret {namespace}/{}", write.managed.secret_name))
                })?;
                let written = ca_secret::write_step(&ctx.client, current, &write, now).await?;
                (written, Change::Stepped(write.step))
            }
        };
        writes += 1;
        let secret_name = written.name_any();
        record_change(issuer, &change, &namespace, &secret_name, ctx).await;
        secret = Some(written);
    }
}

/// Records the Events for a change of the CA Secret.
async fn record_change<K: IssuerObject>(
    issuer: &K,
    change: &Change,
    namespace: &str,
    secret: &str,
    ctx: &Context,
) {
    let mut records = Vec::new();
    match change {
        Change::Generated { fingerprint } => {
            records.push(Record::normal(
                "CAGenerated",
                format!("Generated root CA {fingerprint} in Secret {namespace}/{secret}"),
            ));
            records.push(Record::normal(
                "SecretCreated",
                events::created_message("Secret", Some(namespace), secret),
            ));
        }
        Change::Stepped(step) => {
            let (reason, message) = match step {
                Step::Idle => return,
                Step::Publish(PublishReason::Scheduled) => (
                    "CARotationStarted",
                    "Published a new CA in the bundle; it signs after the propagation delay"
                        .to_owned(),
                ),
                Step::Publish(PublishReason::Triggered(value)) => (
                    "CARotationStarted",
                    format!(
                        "Published a new CA in the bundle because capstan.dev/rotate was set to {value:?}; it signs after the propagation delay"
                    ),
                ),
                Step::Switch(retired) => (
                    "CARotated",
                    format!(
                        "The new CA signs from now on; CA {} is retired and stays trusted until {}",
                        retired.fingerprint, retired.drop_after
                    ),
                ),
                Step::Drop(gone) => (
                    "CARetired",
                    format!("Removed retired CA {} from the bundle", gone.join(", ")),
                ),
            };
            records.push(Record::normal(reason, message));
            records.push(Record::normal(
                "SecretUpdated",
                events::updated_message("Secret", Some(namespace), secret),
            ));
        }
    }
    let reference = issuer.object_ref(&());
    for record in records {
        tracing::info!(issuer = %issuer.key(), reason = %record.reason, "{}", record.message);
        if let Err(e) = ctx.recorder.publish(&reference, &record).await {
            tracing::warn!(issuer = %issuer.key(), error = %e, "could not record event");
        }
    }
}

/// Writes the status when it changed (leader only).
async fn write_status<K: IssuerObject>(issuer: &K, health: &Health, ctx: &Context) -> Result<()> {
    if !ctx.leadership.is_leader() {
        return Ok(());
    }
    let previous = issuer.issuer_status();
    if let Some((reason, message)) = issuer_status::not_ready_event(previous, health) {
        let record = Record::warning(reason, message.to_owned());
        tracing::warn!(issuer = %issuer.key(), reason, "{message}");
        if let Err(e) = ctx.recorder.publish(&issuer.object_ref(&()), &record).await {
            tracing::warn!(issuer = %issuer.key(), error = %e, "could not record event");
        }
    }
    let desired = issuer_status::desired(
        previous,
        health,
        issuer.meta().generation,
        &issuer_status::seconds(Timestamp::now()),
    );
    if !issuer_status::differs(previous, &desired) {
        return Ok(());
    }
    let api = issuer.api_for(ctx.client.clone());
    let patch = issuer_status::merge_patch(previous, &desired);
    api.patch_status(
        &issuer.name_any(),
        &crate::context::patch_params(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::kube(format!("writing the status of {}", issuer.key()), e))?;
    Ok(())
}

fn error_policy<K: IssuerObject>(issuer: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["issuer", error.category()])
        .inc();
    tracing::warn!(issuer = %issuer.key(), error = %error, "reconcile failed");
    error.requeue()
}

/// Runs the controller for one issuer kind until `shutdown` fires.
pub async fn run<K>(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: IssuerObject,
{
    let api: Api<K> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    // The controller never reconciles an object that is gone, so deletions
    // are handled here: a deleted issuer's CA stops signing at once.
    let forget_ctx = ctx.clone();
    let forget_store = store.clone();
    let before = Snapshot::default();
    let issuers = watcher(api, watcher::Config::default().any_semantic())
        .reflect(writer)
        .inspect_ok(move |event| forget_deleted::<K>(event, &forget_store, &before, &forget_ctx))
        .touched_objects();
    let controller =
        Controller::for_stream(issuers, store.clone()).trigger_backoff(WatchBackoff::default());
    let cluster_ns = ctx.cluster_resource_namespace.clone();
    let secrets = watcher(
        Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .touched_objects();
    controller
        .watches_stream(secrets, move |secret| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            store
                .state()
                .into_iter()
                .filter(|issuer| {
                    issuer.secret_namespace(&cluster_ns) == ns
                        && plan::secret_name(issuer.issuer_spec()) == Some(name.as_str())
                })
                .map(|issuer| ObjectRef::from_obj(&*issuer))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(ctx.leadership.gained())
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// Issuers (key → UID) as the store held them when a relist began.
type Snapshot = Mutex<HashMap<IssuerKey, Option<String>>>;

/// Drops the loaded CA and the metrics of issuers that are gone: one deleted
/// (a `Delete` event), or missing from a fresh list (deleted while the watch
/// was down: known before the relist, absent after it). `store` already
/// reflects `event`; `before` keeps what it held when the relist began.
fn forget_deleted<K: IssuerObject>(
    event: &watcher::Event<K>,
    store: &Store<K>,
    before: &Snapshot,
    ctx: &Context,
) {
    let gone: Vec<(IssuerKey, Option<String>)> = match event {
        watcher::Event::Delete(issuer) => vec![(issuer.key(), issuer.uid())],
        watcher::Event::Init => {
            if let Ok(mut before) = before.lock() {
                *before = store.state().iter().map(|i| (i.key(), i.uid())).collect();
            }
            Vec::new()
        }
        watcher::Event::InitDone => {
            let present: HashSet<IssuerKey> = store.state().iter().map(|i| i.key()).collect();
            let mut known = before
                .lock()
                .map(|mut b| std::mem::take(&mut *b))
                .unwrap_or_default();
            for key in ctx.signers.keys().into_iter().filter(|k| k.kind == K::KIND) {
                known.entry(key).or_insert(None);
            }
            known
                .into_iter()
                .filter(|(key, _)| !present.contains(key))
                .collect()
        }
        _ => Vec::new(),
    };
    for (key, uid) in gone {
        tracing::info!(issuer = %key, "issuer deleted; its CA no longer signs");
        ctx.signers
            .forget(&key, uid.as_deref(), || ctx.metrics.forget_issuer(&key));
    }
}
