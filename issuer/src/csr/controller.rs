//! IO glue for Kubernetes `CertificateSigningRequest`s addressed to
//! capstan's signers: approved → signed (`status.certificate`), denied or
//! unsignable → a `Failed` condition. Writes go through `/status` with the
//! read resourceVersion, so a CSR is signed at most once.

use std::sync::Arc;
use std::time::Duration;

use capstan_common::backoff::WatchBackoff;
use capstan_common::events::Record;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_stream::wrappers::WatchStream;

use super::plan::{self, CsrDecision};
use crate::context::Context;
use crate::error::{Error, Result};

/// Recheck of an approved CSR whose issuer is not ready.
const WAIT_RECHECK: Duration = Duration::from_secs(30);

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Context>) -> Result<Action> {
    let decision = plan::plan(&csr);
    if decision == CsrDecision::Ignore || !ctx.leadership.is_leader() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let (status, record) = match decision {
        CsrDecision::Ignore => return Ok(Action::await_change()),
        CsrDecision::Deny => {
            let message = "The CertificateSigningRequest was denied; it will not be signed";
            (
                with_failed(&csr, "Denied", message, now),
                Record::warning("Denied", message),
            )
        }
        CsrDecision::Sign(target) => {
            let Some(ca) = ctx.signers.get(&target) else {
                tracing::info!(csr = %csr.name_any(), issuer = %target, "waiting for the issuer to be ready");
                return Ok(Action::requeue(WAIT_RECHECK));
            };
            match plan::leaf_request(&csr).and_then(|r| ca.sign(&csr.spec.request.0, &r, now)) {
                Ok(issued) => {
                    let message = match issued.note {
                        Some(note) => format!("Certificate issued; {note}"),
                        None => "Certificate issued".to_owned(),
                    };
                    (
                        json!({ "certificate": ByteString(issued.chain_pem.into_bytes()) }),
                        Record::normal("Issued", message),
                    )
                }
                Err(message) => (
                    with_failed(&csr, "Failed", &message, now),
                    Record::warning("Failed", message),
                ),
            }
        }
    };
    let patch =
        json!({ "metadata": { "resourceVersion": csr.resource_version() }, "status": status });
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    if let Err(e) = api
        .patch_status(
            &name,
            &crate::context::patch_params(),
            &Patch::Merge(&patch),
        )
        .await
    {
        let csr = format!("CertificateSigningRequest {name}");
        let action = format!("writing the status of {csr}");
        return Err(Error::write(csr, action, e));
    }

    tracing::info!(csr = %name, reason = %record.reason, "{}", record.message);
    count_outcome(&csr, &record.reason, &ctx);
    if let Err(e) = ctx.recorder.publish(&csr.object_ref(&()), &record).await {
        tracing::warn!(csr = %name, error = %e, "could not record event");
    }
    Ok(Action::await_change())
}

/// Counts a written outcome in the same metrics as CertificateRequests,
/// under the issuer the signer name addresses.
fn count_outcome(csr: &CertificateSigningRequest, reason: &str, ctx: &Context) {
    let Some(target) = plan::signer_target(&csr.spec.signer_name) else {
        return;
    };
    let [kind, namespace, name] = target.labels();
    if reason == "Issued" {
        ctx.metrics
            .signed
            .with_label_values(&[kind, namespace, name])
            .inc();
    } else {
        ctx.metrics
            .failed
            .with_label_values(&[kind, namespace, name, reason])
            .inc();
    }
}

/// A status with the CSR's conditions plus a `Failed` one.
fn with_failed(
    csr: &CertificateSigningRequest,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> serde_json::Value {
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.push(CertificateSigningRequestCondition {
        type_: "Failed".to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    json!({ "conditions": conditions })
}

fn error_policy(csr: Arc<CertificateSigningRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&["certificatesigningrequest", error.category()])
        .inc();
    tracing::warn!(csr = %csr.name_any(), error = %error, "reconcile failed");
    error.requeue()
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
