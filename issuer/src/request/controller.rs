//! IO glue for cert-manager `CertificateRequest`s: watch them, decide with
//! [`plan`](super::plan), sign with the issuer's loaded CA, and write the
//! outcome with one resourceVersion-guarded status patch.
//!
//! Every replica watches and plans; only the leader writes. Requests waiting
//! for an issuer are re-checked whenever a CA is loaded or removed and when
//! this replica becomes leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_common::backoff::WatchBackoff;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio_stream::wrappers::WatchStream;

use super::plan::{self, Gate, IssuerState, Outcome};
use super::status;
use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer};
use crate::api::cert_manager::CertificateRequest;
use crate::api::identity::{IssuerKey, IssuerKind};
use crate::context::Context;
use crate::error::{Error, ObjectName, Result, verb};

/// How long a request waiting for its issuer sleeps before it is checked
/// again if nothing wakes it earlier.
const WAIT_RECHECK: Duration = Duration::from_secs(30);
/// How often the pending-requests gauge is recomputed from the cache.
const PENDING_REFRESH: Duration = Duration::from_secs(5);

/// Reads the status of the issuer `key` names, whose CA is not loaded.
async fn unloaded_issuer(ctx: &Context, key: &IssuerKey) -> Result<IssuerState<'static>> {
    let status = match key.kind {
        IssuerKind::CaIssuer => {
            let ns = key.namespace.as_deref().unwrap_or_default();
            let api: Api<CAIssuer> = Api::namespaced(ctx.client.clone(), ns);
            api.get_opt(&key.name)
                .await
                .map(|o| o.map(|i| i.status.unwrap_or_default()))
        }
        IssuerKind::ClusterCaIssuer => {
            let api: Api<ClusterCAIssuer> = Api::all(ctx.client.clone());
            api.get_opt(&key.name)
                .await
                .map(|o| o.map(|i| i.status.unwrap_or_default()))
        }
    }
    .map_err(|e| Error::kube(verb::READ, key.into(), e))?;
    Ok(IssuerState::unloaded(status.as_ref()))
}

/// Reconciles one request, visiting each step once: the gates on the
/// request, the signer lookup, the decision and signature, the status
/// patch and its Event, the write.
async fn reconcile(request: Arc<CertificateRequest>, ctx: Arc<Context>) -> Result<Action> {
    let (key, denied) = match plan::gate(&request) {
        Gate::Ignore(_) => return Ok(Action::await_change()),
        Gate::Deny(key) => (key, true),
        Gate::Sign(key) => (key, false),
    };
    if !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let outcome = if denied {
        Outcome::Denied
    } else {
        let signer = ctx.signers.get(&key);
        let issuer = match &signer {
            Some(ca) => IssuerState::Ready(ca),
            None => unloaded_issuer(&ctx, &key).await?,
        };
        plan::decide(&request, &key, &issuer, Timestamp::now())
    };
    let object = request_name(&request);
    write_outcome(&request, &object, &key, &outcome, &ctx).await?;
    ctx.retries.succeeded(&object);
    let labels = key.labels();
    match outcome {
        Outcome::Issued { .. } => {
            ctx.metrics.signed.with_label_values(&labels).inc();
            ctx.metrics
                .signing_seconds
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            Ok(Action::await_change())
        }
        Outcome::Failed(_) | Outcome::Denied => {
            let [kind, namespace, name] = labels;
            ctx.metrics
                .failed
                .with_label_values(&[kind, namespace, name, outcome.reason()])
                .inc();
            Ok(Action::await_change())
        }
        Outcome::Pending(_) => Ok(Action::requeue(WAIT_RECHECK)),
    }
}

/// The request, for errors and logs.
fn request_name(request: &CertificateRequest) -> ObjectName {
    ObjectName::namespaced(
        "CertificateRequest",
        &request.namespace().unwrap_or_default(),
        &request.name_any(),
    )
}

/// Writes the status for `outcome` and records its Event, unless the request
/// already says so.
async fn write_outcome(
    request: &CertificateRequest,
    object: &ObjectName,
    issuer: &IssuerKey,
    outcome: &Outcome,
    ctx: &Context,
) -> Result<()> {
    let now = Time(Timestamp::now());
    let Some(patch) = status::outcome_patch(request, outcome, &now) else {
        return Ok(());
    };
    // The patched request comes back in the response; nothing reads it (the
    // watch delivers it anyway), so it is taken as text, not decoded.
    let write = kube::core::Request::new(CertificateRequest::url_path(
        &(),
        object.namespace.as_deref(),
    ))
    .patch_subresource(
        "status",
        &object.name,
        &crate::context::patch_params(),
        &Patch::Merge(&patch),
    )
    .map_err(|e| {
        Error::kube(
            verb::BUILD_STATUS_PATCH,
            object.clone(),
            kube::Error::BuildRequest(e),
        )
    })?;
    if let Err(e) = ctx.client.request_text(write).await {
        return Err(Error::write(verb::WRITE_STATUS, object.clone(), e));
    }
    let record = status::outcome_record(outcome);
    tracing::info!(request = %object.path(), %issuer, reason = %record.reason, "{}", record.message);
    ctx.recorder
        .publish_or_warn(&request.object_ref(&()), &record)
        .await;
    Ok(())
}

/// Backoff for failed reconciles, by error class.
fn error_policy(request: Arc<CertificateRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["certificaterequest", error.category()])
        .inc();
    let object = request_name(&request);
    tracing::warn!(request = %object.path(), error = %error, "reconcile failed");
    error.requeue(|| ctx.retries.failed(object))
}

/// Runs the controller until `shutdown` fires.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<CertificateRequest> = Api::all(ctx.client.clone());
    let gained = ctx.leadership.gained();
    let (store, writer) = reflector::store();
    // Every request is cached (the pending gauge counts them), but only the
    // ones the plan could act on wake the reconciler: the rest would be
    // ignored anyway, and they are most of the watch events.
    let requests = watcher(api, watcher::Config::default().any_semantic())
        .reflect(writer)
        .applied_objects()
        .try_filter(|request| std::future::ready(plan::may_need_work(request)));
    let controller =
        Controller::for_stream(requests, store).trigger_backoff(WatchBackoff::default());
    let pending = tokio::spawn(report_pending(controller.store(), ctx.clone()));
    controller
        .with_config(controller::Config::default().concurrency(ctx.concurrent_workers))
        .reconcile_all_on(WatchStream::new(ctx.signers.subscribe()).map(|_| ()))
        .reconcile_all_on(gained)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
    pending.abort();
}

/// Keeps `capstan_issuer_requests_pending` (the work waiting per issuer)
/// up to date from the controller's cache. A series exists while requests
/// wait for that issuer (also for an issuer that is gone: they wait for it)
/// and is removed when none do.
async fn report_pending(store: Store<CertificateRequest>, ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(PENDING_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting: Vec<IssuerKey> = Vec::new();
    loop {
        tick.tick().await;
        let requests = store.state();
        let counts = plan::pending_by_issuer(requests.iter().map(|r| &**r), waiting.drain(..));
        for (key, count) in counts {
            if count > 0 {
                ctx.metrics
                    .pending
                    .with_label_values(&key.labels())
                    .set(count);
                waiting.push(key);
            } else {
                // Absent already when the issuer was forgotten; fine.
                let _ = ctx.metrics.pending.remove_label_values(&key.labels());
            }
        }
    }
}
