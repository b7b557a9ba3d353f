//! IO glue for `CAIssuer` and `ClusterCAIssuer`: load or manage the CA,
//! install it for the request controllers, write status and Events.
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::ca_secret::{self, Change};
use super::status::{self as issuer_status, Health};
use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer, IssuerSpec, IssuerStatus};
use crate::api::conditions::issuer as reason;
use crate::ca::layout;
use crate::ca::rotation::{PublishReason, Step};
use crate::context::{Context, IssuerKey};
use crate::error::{Error, Result};
use crate::policy::{self, CaSource};
use crate::request::plan::IssuerKind;
use crate::signing::{CaProblem, ReadyCa};

/// Longest sleep between two checks of a healthy issuer.
const MAX_RECHECK: Duration = Duration::from_secs(3600);
/// Recheck of an issuer that is not ready and may be fixed by the clock.
const NOT_READY_RECHECK: Duration = Duration::from_secs(60);

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
    let now = Timestamp::now();
    let (health, recheck, ca) = match evaluate(&*issuer, &key, &ctx, now).await {
        Ok(found) => found,
        Err(Error::CaSecret { secret, problem }) => (
            Health::NotReady {
                reason: reason::INVALID_KEY_PAIR,
                message: format!("CA Secret {secret}: {problem}"),
            },
            Some(NOT_READY_RECHECK),
            None,
        ),
        Err(Error::Spec(e)) => (
            Health::NotReady {
                reason: reason::INVALID_SPEC,
                message: e.to_string(),
            },
            None,
            None,
        ),
        Err(other) => return Err(other),
    };
    let labels = key.labels();
    let uid = issuer.uid().unwrap_or_default();
    let live = ctx.signers.update(&key, &uid, ca, || match &health {
        Health::Ready {
            ca, bundle_size, ..
        } => {
            ctx.metrics.ready.with_label_values(&labels).set(1);
            ctx.metrics
                .ca_not_after
                .with_label_values(&labels)
                .set(ca.not_after.0.as_second());
            ctx.metrics
                .bundle_size
                .with_label_values(&labels)
                .set(i64::from(*bundle_size));
        }
        Health::NotReady { .. } => ctx.metrics.ready.with_label_values(&labels).set(0),
    });
    if !live {
        // Deleted while this reconcile ran: nothing left to report on.
        return Ok(Action::await_change());
    }
    write_status(&*issuer, &health, &ctx).await?;
    Ok(match recheck {
        Some(after) => Action::requeue(after.min(MAX_RECHECK)),
        None => Action::await_change(),
    })
}

/// Loads (and for self-managed CAs, manages) the CA; returns the health to
/// report and when to look again.
async fn evaluate<K: IssuerObject>(
    issuer: &K,
    key: &IssuerKey,
    ctx: &Context,
    now: Timestamp,
) -> Result<(Health, Option<Duration>, Option<ReadyCa>)> {
    let policy = policy::resolve(&key.name, issuer.issuer_spec())?;
    let namespace = issuer.secret_namespace(&ctx.cluster_resource_namespace);
    let (material, bundle_size, last_rotation, step_at) = match &policy.source {
        CaSource::Secret { secret_name } => {
            let Some(secret) = ca_secret::read(&ctx.client, &namespace, secret_name).await? else {
                return Ok((
                    Health::NotReady {
                        reason: reason::SECRET_NOT_FOUND,
                        message: format!("CA Secret {namespace}/{secret_name} does not exist"),
                    },
                    None,
                    None,
                ));
            };
            let Some(material) = ca_secret::material(&secret) else {
                return Ok((
                    Health::NotReady {
                        reason: reason::INVALID_KEY_PAIR,
                        message: format!(
                            "CA Secret {namespace}/{secret_name} must hold tls.crt and tls.key"
                        ),
                    },
                    None,
                    None,
                ));
            };
            (material, 1, None, None)
        }
        CaSource::SelfManaged(managed) => {
            let trigger = issuer
                .meta()
                .annotations
                .as_ref()
                .and_then(|a| a.get(layout::ROTATE_TRIGGER))
                .map(String::as_str);
            let may_write = ctx.leadership.is_leader();
            let Some(outcome) = ca_secret::ensure_self_managed(
                &ctx.client,
                &namespace,
                &policy,
                managed,
                trigger,
                may_write,
                now,
            )
            .await?
            else {
                return Ok((
                    Health::NotReady {
                        reason: reason::SECRET_NOT_FOUND,
                        message: format!(
                            "waiting for the leader to create CA Secret {namespace}/{}",
                            managed.secret_name
                        ),
                    },
                    Some(Duration::from_secs(5)),
                    None,
                ));
            };
            if let Some(change) = &outcome.change {
                record_change(issuer, change, &namespace, &managed.secret_name, ctx).await;
            }
            let material = ca_secret::material(&outcome.secret).ok_or_else(|| Error::CaSecret {
                secret: format!("{namespace}/{}", managed.secret_name),
                problem: "tls.crt or tls.key is missing".into(),
            })?;
            let step_at = outcome.recheck_at.map(|at| until(now, at));
            (
                material,
                outcome.bundle_size,
                outcome.last_rotation_time,
                step_at,
            )
        }
    };
    let ca = match ReadyCa::load(&material, &policy, now) {
        Ok(ca) => ca,
        Err(CaProblem { reason, message }) => {
            return Ok((
                Health::NotReady { reason, message },
                Some(NOT_READY_RECHECK),
                None,
            ));
        }
    };
    let summary = ca.summary();
    let expires_in = until(now, ca.not_after());
    let recheck = [Some(expires_in), step_at].into_iter().flatten().min();
    Ok((
        Health::Ready {
            ca: summary,
            bundle_size: i32::try_from(bundle_size).unwrap_or(i32::MAX),
            last_rotation_time: last_rotation.map(Time),
        },
        recheck,
        Some(ca),
    ))
}

/// Time from `now` until `at`, zero if past.
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
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
        &Time(Timestamp::now()),
    );
    if !issuer_status::differs(previous, &desired) {
        return Ok(());
    }
    let api = issuer.api_for(ctx.client.clone());
    let patch = serde_json::json!({ "status": desired });
    api.patch_status(
        &issuer.name_any(),
        &PatchParams::default(),
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
                        && uses_secret(issuer.issuer_spec(), &name)
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

/// Whether the issuer's CA lives in Secret `name`.
fn uses_secret(spec: &IssuerSpec, name: &str) -> bool {
    spec.ca.as_ref().is_some_and(|c| c.secret_name == name)
        || spec
            .self_managed
            .as_ref()
            .is_some_and(|m| m.secret_name == name)
}
