//! IO glue for Kubernetes `CertificateSigningRequest`s addressed to
//! capstan's signers: approved → signed (`status.certificate`), denied or
//! unsignable → a `Failed` condition. Writes go through `/status` with the
//! read resourceVersion, so a CSR is signed at most once.

use std::sync::Arc;
use std::time::Duration;

use capstan_common::backoff::WatchBackoff;
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_stream::wrappers::WatchStream;

use super::plan::{self, CsrDecision, CsrOutcome};
use super::status;
use crate::api::identity::IssuerKey;
use crate::context::Context;
use crate::error::{Error, ObjectName, Result, verb};

/// Recheck of an approved CSR whose issuer is not ready.
const WAIT_RECHECK: Duration = Duration::from_secs(30);

/// Reconciles one CSR, visiting each step once: the gates on the CSR, the
/// signer lookup, the signature, the status patch and its Event, the write.
async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action> {
    let decision = plan::plan(&csr);
    if decision == CsrDecision::Ignore || !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let (issuer, outcome) = match decision {
        CsrDecision::Ignore => return Ok(Action::await_change()),
        CsrDecision::Deny => (
            plan::signer_target(&csr.spec.signer_name),
            CsrOutcome::Denied,
        ),
        CsrDecision::Sign(target) => {
            let Some(ca) = ctx.signers.get(&target) else {
                tracing::info!(csr = %csr.name_any(), issuer = %target, "waiting for the issuer to be ready");
                return Ok(Action::requeue(WAIT_RECHECK));
            };
            let outcome = plan::sign(&csr, &ca, now);
            (Some(target), outcome)
        }
    };
    let patch = status::outcome_patch(&csr, &outcome, now);
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let object = csr_name(&csr);
    if let Err(e) = api
        .patch_status(
            &object.name,
            &crate::context::patch_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        return Err(Error::write(verb::WRITE_STATUS, object, e));
    }
    ctx.retries.succeeded(&object);

    let record = status::outcome_record(&outcome);
    tracing::info!(csr = %object.name, reason = %record.reason, "{}", record.message);
    if let Some(issuer) = issuer {
        count_outcome(&issuer, &outcome, &ctx);
    }
    ctx.recorder
        .publish_or_warn(&csr.object_ref(&()), &record)
        .await;
    Ok(Action::await_change())
}

/// The CSR, for errors and logs.
fn csr_name(csr: &CertificateSigningRequest) -> ObjectName {
    ObjectName::cluster("CertificateSigningRequest", &csr.name_any())
}

/// Counts a written outcome in the same metrics as CertificateRequests,
/// under the issuer the signer name addresses.
fn count_outcome(issuer: &IssuerKey, outcome: &CsrOutcome, ctx: &Context) {
    let [kind, namespace, name] = issuer.labels();
    if let CsrOutcome::Issued { .. } = outcome {
        ctx.metrics
            .signed
            .with_label_values(&[kind, namespace, name])
            .inc();
    } else {
        ctx.metrics
            .failed
            .with_label_values(&[kind, namespace, name, outcome.reason()])
            .inc();
    }
}

fn error_policy(csr: Arc<CertificateSigningRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["certificatesigningrequest", error.category()])
        .inc();
    tracing::warn!(csr = %csr.name_any(), error = %error, "reconcile failed");
    error.requeue(|| ctx.retries.failed(csr_name(&csr)))
}

/// Runs the controller until `shutdown` fires.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().any_semantic())
        .trigger_backoff(WatchBackoff::default())
        .with_config(controller::Config::default().concurrency(ctx.concurrent_workers))
        .reconcile_all_on(WatchStream::new(ctx.signers.subscribe()).map(|_| ()))
        .reconcile_all_on(ctx.leadership.gained())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}
