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
use capstan_common::events::Record;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio_stream::wrappers::WatchStream;

use super::plan::{self, IssuerState, RequestDecision, issuer_key};
use super::status::{self, Outcome, Severity};
use crate::api::ca_issuer::{CAIssuer, ClusterCAIssuer};
use crate::api::cert_manager::CertificateRequest;
use crate::api::conditions;
use crate::api::identity::IssuerKey;
use crate::api::identity::IssuerKind;
use crate::context::Context;
use crate::error::{Error, Result};

/// How long a request waiting for its issuer sleeps before it is checked
/// again if nothing wakes it earlier.
const WAIT_RECHECK: Duration = Duration::from_secs(30);
/// How often the pending-requests gauge is recomputed from the cache.
const PENDING_REFRESH: Duration = Duration::from_secs(5);

/// Looks up the issuer's state: ready when its CA is loaded, else why not.
async fn issuer_state(ctx: &Context, key: &IssuerKey) -> Result<IssuerState> {
    if ctx.signers.get(key).is_some() {
        return Ok(IssuerState::Ready);
    }
    let ready = match key.kind {
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
    .map_err(|e| Error::kube(format!("reading {key}"), e))?;
    Ok(match ready {
        None => IssuerState::Missing,
        Some(status) => {
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == conditions::READY);
            IssuerState::NotReady(match condition {
                Some(c) if c.status == conditions::TRUE => "its CA is being loaded".to_owned(),
                Some(c) => format!("{}: {}", c.reason, c.message),
                None => "it has not been checked yet".to_owned(),
            })
        }
    })
}

/// Reconciles one request.
async fn reconcile(request: Arc<CertificateRequest>, ctx: Arc<Context>) -> Result<Action> {
    let Some(kind) = plan::our_issuer(&request.spec.issuer_ref) else {
        return Ok(Action::await_change());
    };
    let key = issuer_key(&request, kind);
    let state = if plan::is_finished(&request) {
        IssuerState::Ready
    } else {
        issuer_state(&ctx, &key).await?
    };
    let decision = plan::plan(&request, &state);
    if matches!(decision, RequestDecision::Ignore(_)) || !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let outcome = match &decision {
        RequestDecision::Ignore(_) => return Ok(Action::await_change()),
        RequestDecision::Deny => Outcome::Denied,
        RequestDecision::Wait(message) => Outcome::Pending(message.clone()),
        RequestDecision::Sign(_) => match ctx.signers.get(&key) {
            None => Outcome::Pending(format!(
                "Referenced \"{}\" {:?} is not Ready yet",
                kind.kind(),
                key.name
            )),
            Some(ca) => match ca.sign_request(&request.spec, Timestamp::now()) {
                Ok(issued) => Outcome::Issued {
                    certificate: issued.chain_pem,
                    ca: issued.ca_pem,
                    note: issued.note,
                },
                Err(message) => Outcome::Failed(message),
            },
        },
    };
    write_outcome(&request, &key, &outcome, &ctx).await?;
    match outcome {
        Outcome::Issued { .. } => {
            ctx.metrics.signed.with_label_values(&key.labels()).inc();
            ctx.metrics
                .signing_seconds
                .with_label_values(&key.labels())
                .observe(started.elapsed().as_secs_f64());
            Ok(Action::await_change())
        }
        Outcome::Failed(_) | Outcome::Denied => {
            let reason = if matches!(outcome, Outcome::Denied) {
                "Denied"
            } else {
                "Failed"
            };
            let [k, ns, name] = key.labels();
            ctx.metrics
                .failed
                .with_label_values(&[k, ns, name, reason])
                .inc();
            Ok(Action::await_change())
        }
        Outcome::Pending(_) => Ok(Action::requeue(WAIT_RECHECK)),
    }
}

/// Writes the status for `outcome` and records its Event, unless the request
/// already says so.
async fn write_outcome(
    request: &CertificateRequest,
    key: &IssuerKey,
    outcome: &Outcome,
    ctx: &Context,
) -> Result<()> {
    let now = Time(Timestamp::now());
    let Some(patch) = status::outcome_patch(request, outcome, &now) else {
        return Ok(());
    };
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    // The patched request comes back in the response; nothing reads it (the
    // watch delivers it anyway), so it is taken as text, not decoded.
    let write = kube::core::Request::new(CertificateRequest::url_path(&(), Some(&namespace)))
        .patch_subresource(
            "status",
            &name,
            &crate::context::patch_params(),
            &Patch::Merge(&patch),
        )
        .map_err(|e| Error::kube("building the status patch", kube::Error::BuildRequest(e)))?;
    if let Err(e) = ctx.client.request_text(write).await {
        let request = format!("CertificateRequest {namespace}/{name}");
        let action = format!("writing the status of {request}");
        return Err(Error::write(request, action, e));
    }

    let event = status::outcome_event(outcome);
    tracing::info!(request = %format!("{namespace}/{name}"), issuer = %key, reason = event.reason, "{}", event.note);
    let record = match event.severity {
        Severity::Normal => Record::normal(event.reason, event.note),
        Severity::Warning => Record::warning(event.reason, event.note),
    };
    if let Err(e) = ctx
        .recorder
        .publish(&request.object_ref(&()), &record)
        .await
    {
        tracing::warn!(request = %format!("{namespace}/{name}"), issuer = %key, error = %e, "could not record event");
    }
    Ok(())
}

/// Backoff for failed reconciles, by error class.
fn error_policy(request: Arc<CertificateRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["certificaterequest", error.category()])
        .inc();
    tracing::warn!(request = %format!("{}/{}", request.namespace().unwrap_or_default(), request.name_any()), error = %error, "reconcile failed");
    error.requeue()
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
