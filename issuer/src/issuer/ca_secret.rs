//! The only code that reads and writes CA Secrets.
//!
//! A user-provided CA Secret is only read. A self-managed CA Secret is
//! created with a create-only write (two replicas can never both mint a root:
//! the loser gets 409 and re-reads) and changed only with a
//! resourceVersion-guarded replace, one rotation step at a time.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::ca::layout::{self, Record};
use crate::ca::rotation::{self, PublishReason, RotationState, RotationTiming, Step};
use crate::error::{Error, Result};
use crate::policy::{IssuerPolicy, SelfManagedPolicy};
use crate::signing::{self, CaMaterial};

/// `namespace/name` of a Secret, for messages.
fn secret_ref(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Reads a Secret; `None` when it does not exist.
pub async fn read(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Secret>> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {}", secret_ref(namespace, name)), e))
}

fn bytes(data: &BTreeMap<String, ByteString>, key: &str) -> Option<Vec<u8>> {
    data.get(key).map(|b| b.0.clone()).filter(|b| !b.is_empty())
}

/// The signing material of a CA Secret (`tls.crt`, `tls.key`, `ca.crt`).
#[must_use]
pub fn material(secret: &Secret) -> Option<CaMaterial> {
    let data = secret.data.as_ref()?;
    Some(CaMaterial {
        cert_pem: bytes(data, layout::TLS_CRT)?,
        key_pem: bytes(data, layout::TLS_KEY)?,
        chain_pem: bytes(data, layout::CA_CRT),
    })
}

/// What a self-managed reconcile did to the Secret, for Events and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The CA Secret was created with a new root.
    Generated {
        /// Fingerprint of the new root.
        fingerprint: String,
    },
    /// A rotation step was written.
    Stepped(Step),
}

/// The outcome of ensuring a self-managed CA.
#[derive(Debug, Clone)]
pub struct Managed {
    /// The Secret as it now is.
    pub secret: Secret,
    /// What changed, if anything (only the leader changes anything).
    pub change: Option<Change>,
    /// When to look again by the clock alone.
    pub recheck_at: Option<Timestamp>,
    /// CAs in the bundle.
    pub bundle_size: usize,
    /// When signing last switched CAs.
    pub last_rotation_time: Option<Timestamp>,
}

/// Ensures the self-managed CA exists and takes the next rotation step when
/// one is due. Followers (`may_write == false`) only read.
///
/// # Errors
/// API failures, conflicts with another writer (retry), or a Secret whose
/// signing CA is unusable — which is never overwritten, so no key is lost.
pub async fn ensure_self_managed(
    client: &kube::Client,
    namespace: &str,
    policy: &IssuerPolicy,
    managed: &SelfManagedPolicy,
    trigger: Option<&str>,
    may_write: bool,
    now: Timestamp,
) -> Result<Option<Managed>> {
    let name = &managed.secret_name;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = read(client, namespace, name).await? else {
        if !may_write {
            return Ok(None);
        }
        return create(&api, namespace, managed, now).await.map(Some);
    };
    let problem = |problem: String| Error::CaSecret {
        secret: secret_ref(namespace, name),
        problem,
    };
    let data = secret.data.clone().unwrap_or_default();
    let signing_pem =
        bytes(&data, layout::TLS_CRT).ok_or_else(|| problem("tls.crt is missing".into()))?;
    let signing = signing::record(&signing_pem).map_err(problem)?;
    let record = layout::read(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
    )
    .map_err(|e| problem(e.to_string()))?;
    let next = match (bytes(&data, layout::NEXT_CRT), record.next_published_at) {
        (Some(pem), Some(at)) => Some((signing::record(&pem).map_err(problem)?, at)),
        _ => None,
    };
    let bundle_pem = bytes(&data, layout::CA_BUNDLE).unwrap_or_default();
    let state = RotationState {
        signing,
        next,
        retired: record.retired.clone(),
        handled_trigger: record.rotate_handled.clone(),
    };
    let timing = RotationTiming {
        rotate_before: managed.rotate_before,
        propagation_delay: managed.propagation_delay,
        overlap: managed.overlap,
        max_leaf: policy.max_duration,
    };
    let plan = rotation::plan(&state, &timing, trigger, now);
    let bundle_size = signing::bundle(&[&signing_pem, &bundle_pem], now).map_or(1, |b| b.count);
    let unchanged = Managed {
        secret: secret.clone(),
        change: None,
        recheck_at: plan.recheck_at,
        bundle_size,
        last_rotation_time: record.last_rotation_time,
    };
    if plan.step == Step::Idle || !may_write {
        return Ok(Some(unchanged));
    }
    let next = match plan.step {
        Step::Publish(_) => Some(
            signing::generate_off_runtime(managed, now)
                .await
                .map_err(problem)?,
        ),
        _ => None,
    };
    let (data, record) =
        apply_step(&plan.step, next, &data, record, trigger, now).map_err(problem)?;
    let mut updated = secret.clone();
    updated.data = Some(data);
    set_record(&mut updated.metadata, &record);
    let written = api
        .replace(name, &PostParams::default(), &updated)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                Error::Conflict(format!("Secret {}", secret_ref(namespace, name)))
            }
            e => Error::kube(
                format!("updating CA Secret {}", secret_ref(namespace, name)),
                e,
            ),
        })?;
    let size = written
        .data
        .as_ref()
        .and_then(|d| bytes(d, layout::CA_BUNDLE))
        .and_then(|b| signing::bundle(&[&b], now).ok())
        .map_or(1, |b| b.count);
    Ok(Some(Managed {
        secret: written,
        change: Some(Change::Stepped(plan.step)),
        recheck_at: Some(now),
        bundle_size: size,
        last_rotation_time: record.last_rotation_time,
    }))
}

/// Creates the CA Secret with a fresh root; 409 means another replica won.
async fn create(
    api: &Api<Secret>,
    namespace: &str,
    managed: &SelfManagedPolicy,
    now: Timestamp,
) -> Result<Managed> {
    let name = &managed.secret_name;
    let generated = signing::generate_off_runtime(managed, now)
        .await
        .map_err(|problem| Error::CaSecret {
            secret: secret_ref(namespace, name),
            problem,
        })?;
    let bundle = signing::bundle(&[generated.cert_pem.as_bytes()], now).map_err(|problem| {
        Error::CaSecret {
            secret: secret_ref(namespace, name),
            problem,
        }
    })?;
    let data = BTreeMap::from([
        (
            layout::TLS_CRT.to_owned(),
            ByteString(generated.cert_pem.clone().into_bytes()),
        ),
        (
            layout::TLS_KEY.to_owned(),
            ByteString(generated.key.expose().as_bytes().to_vec()),
        ),
        (
            layout::CA_CRT.to_owned(),
            ByteString(generated.cert_pem.clone().into_bytes()),
        ),
        (
            layout::CA_BUNDLE.to_owned(),
            ByteString(bundle.pem.into_bytes()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                layout::MANAGED_BY_LABEL.to_owned(),
                layout::MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let created = api
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => {
                Error::Conflict(format!("Secret {}", secret_ref(namespace, name)))
            }
            e => Error::kube(
                format!("creating CA Secret {}", secret_ref(namespace, name)),
                e,
            ),
        })?;
    Ok(Managed {
        secret: created,
        change: Some(Change::Generated {
            fingerprint: generated.fingerprint,
        }),
        recheck_at: None,
        bundle_size: 1,
        last_rotation_time: None,
    })
}

/// The Secret data and record after taking `step`.
fn apply_step(
    step: &Step,
    next: Option<signing::Generated>,
    data: &BTreeMap<String, ByteString>,
    mut record: Record,
    trigger: Option<&str>,
    now: Timestamp,
) -> std::result::Result<(BTreeMap<String, ByteString>, Record), String> {
    let mut data = data.clone();
    let get = |d: &BTreeMap<String, ByteString>, k: &str| bytes(d, k).unwrap_or_default();
    match step {
        Step::Idle => {}
        Step::Publish(reason) => {
            let next = next.ok_or("no CA was generated for the publish step")?;
            let bundle = signing::bundle(
                &[
                    next.cert_pem.as_bytes(),
                    &get(&data, layout::TLS_CRT),
                    &get(&data, layout::CA_BUNDLE),
                ],
                now,
            )?;
            data.insert(
                layout::NEXT_CRT.to_owned(),
                ByteString(next.cert_pem.into_bytes()),
            );
            data.insert(
                layout::NEXT_KEY.to_owned(),
                ByteString(next.key.expose().as_bytes().to_vec()),
            );
            data.insert(
                layout::CA_BUNDLE.to_owned(),
                ByteString(bundle.pem.into_bytes()),
            );
            record.next_published_at = Some(now);
            if let PublishReason::Triggered(value) = reason {
                record.rotate_handled = Some(value.clone());
            } else if let Some(value) = trigger {
                // A scheduled rotation also satisfies a pending trigger value.
                record.rotate_handled = Some(value.to_owned());
            }
        }
        Step::Switch(retired) => {
            let next_crt = get(&data, layout::NEXT_CRT);
            let next_key = get(&data, layout::NEXT_KEY);
            if next_crt.is_empty() || next_key.is_empty() {
                return Err("next.crt or next.key is missing mid-rotation".into());
            }
            let bundle = signing::bundle(
                &[
                    &next_crt,
                    &get(&data, layout::TLS_CRT),
                    &get(&data, layout::CA_BUNDLE),
                ],
                now,
            )?;
            data.insert(layout::TLS_CRT.to_owned(), ByteString(next_crt.clone()));
            data.insert(layout::TLS_KEY.to_owned(), ByteString(next_key));
            data.insert(layout::CA_CRT.to_owned(), ByteString(next_crt));
            data.insert(
                layout::CA_BUNDLE.to_owned(),
                ByteString(bundle.pem.into_bytes()),
            );
            data.remove(layout::NEXT_CRT);
            data.remove(layout::NEXT_KEY);
            record.next_published_at = None;
            record.retired.push(retired.clone());
            record.last_rotation_time = Some(now);
        }
        Step::Drop(fingerprints) => {
            let bundle =
                signing::bundle_without(&get(&data, layout::CA_BUNDLE), fingerprints, now)?;
            data.insert(
                layout::CA_BUNDLE.to_owned(),
                ByteString(bundle.pem.into_bytes()),
            );
            record
                .retired
                .retain(|r| !fingerprints.contains(&r.fingerprint));
        }
    }
    Ok((data, record))
}

fn set_record(meta: &mut ObjectMeta, record: &Record) {
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in layout::write(record) {
        match value {
            Some(v) => annotations.insert(key.to_owned(), v),
            None => annotations.remove(key),
        };
    }
}
