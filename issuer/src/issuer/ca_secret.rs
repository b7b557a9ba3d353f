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
use kube::api::{Api, ObjectMeta};

use crate::api::ca_issuer::CaSummary;
use crate::ca::layout::{self, Record};
use crate::ca::rotation::{PublishReason, RotationState, RotationTiming, Step};
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

/// What a self-managed CA Secret records about its rotation.
#[derive(Debug, Clone)]
pub struct SecretState {
    /// The rotation state, for [`crate::ca::rotation::plan`].
    pub rotation: RotationState,
    /// The Secret's rotation record (annotations).
    pub record: Record,
    /// The CAs of the published bundle, newest first.
    pub bundle: Vec<CaSummary>,
}

/// Reads the rotation state out of a self-managed CA Secret.
///
/// # Errors
/// A missing or unparsable `tls.crt` or `next.crt`, or an unreadable
/// record: what is wrong, for a human.
pub fn state(secret: &Secret, now: Timestamp) -> std::result::Result<SecretState, String> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let signing_pem = bytes(data, layout::TLS_CRT).ok_or("tls.crt is missing")?;
    let signing = signing::record(&signing_pem)?;
    let record = layout::read(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap_or(&BTreeMap::new()),
    )
    .map_err(|e| e.to_string())?;
    let next = match (bytes(data, layout::NEXT_CRT), record.next_published_at) {
        (Some(pem), Some(at)) => Some((signing::record(&pem)?, at)),
        _ => None,
    };
    let bundle_pem = bytes(data, layout::CA_BUNDLE).unwrap_or_default();
    let bundle = bundle_or_signing(&[&signing_pem, &bundle_pem], &signing_pem, now);
    Ok(SecretState {
        rotation: RotationState {
            signing,
            next,
            retired: record.retired.clone(),
            handled_trigger: record.rotate_handled.clone(),
        },
        record,
        bundle,
    })
}

/// The CAs a user-provided CA Secret publishes, as the rotator reads it:
/// `ca-bundle.crt`, else `ca.crt`, else `tls.crt`.
#[must_use]
pub fn published_cas(secret: &Secret, now: Timestamp) -> Vec<CaSummary> {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let signing_pem = bytes(data, layout::TLS_CRT).unwrap_or_default();
    let published = [layout::CA_BUNDLE, layout::CA_CRT, layout::TLS_CRT]
        .into_iter()
        .find_map(|key| bytes(data, key))
        .unwrap_or_default();
    bundle_or_signing(&[&published], &signing_pem, now)
}

/// The CAs of the bundle built from `pems`; when that cannot be read (the
/// rotator then publishes nothing and says why), the signing CA alone, as
/// the one CA the issuer is sure of.
fn bundle_or_signing(pems: &[&[u8]], signing_pem: &[u8], now: Timestamp) -> Vec<CaSummary> {
    signing::bundle_cas(pems, now)
        .ok()
        .filter(|cas| !cas.is_empty())
        .or_else(|| signing::bundle_cas(&[signing_pem], now).ok())
        .unwrap_or_default()
}

/// The rotation timing of a self-managed CA under `policy`.
#[must_use]
pub fn timing(policy: &IssuerPolicy, managed: &SelfManagedPolicy) -> RotationTiming {
    RotationTiming {
        rotate_before: managed.rotate_before,
        propagation_delay: managed.propagation_delay,
        overlap: managed.overlap,
        max_leaf: policy.max_duration,
    }
}

/// One rotation step to write into a self-managed CA Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWrite {
    /// The CA's policy (what a published CA is generated with).
    pub managed: SelfManagedPolicy,
    /// The step.
    pub step: Step,
    /// The Secret's record before the step.
    pub record: Record,
    /// The issuer's `capstan.dev/rotate` value, recorded as handled.
    pub trigger: Option<String>,
}

/// Writes `write` into `secret` (generating the next CA for a publish) with
/// a resourceVersion-guarded replace; returns the Secret as written.
///
/// # Errors
/// API failures, a conflict with another writer (retry), or a Secret the
/// step cannot use.
pub async fn write_step(
    client: &kube::Client,
    secret: &Secret,
    write: &StepWrite,
    now: Timestamp,
) -> Result<Secret> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = &write.managed.secret_name;
    let problem = |problem: String| Error::CaSecret {
        secret: secret_ref(&namespace, name),
        problem,
    };
    let next = match write.step {
        Step::Publish(_) => Some(
            signing::generate_off_runtime(&write.managed, now)
                .await
                .map_err(problem)?,
        ),
        _ => None,
    };
    let data = secret.data.clone().unwrap_or_default();
    let (data, record) = apply_step(
        &write.step,
        next,
        &data,
        write.record.clone(),
        write.trigger.as_deref(),
        now,
    )
    .map_err(problem)?;
    let mut updated = secret.clone();
    updated.data = Some(data);
    set_record(&mut updated.metadata, &record);
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .replace(name, &crate::context::post_params(), &updated)
        .await
        .map_err(|e| {
            let secret = secret_ref(&namespace, name);
            Error::write(
                format!("Secret {secret}"),
                format!("updating CA Secret {secret}"),
                e,
            )
        })
}

/// Creates the CA Secret with a fresh root; 409 means another replica won.
///
/// # Errors
/// API failures, a conflict (another replica created it first: re-read), or
/// a root that could not be generated.
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    managed: &SelfManagedPolicy,
    now: Timestamp,
) -> Result<(Secret, Change)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
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
        .create(&crate::context::post_params(), &secret)
        .await
        .map_err(|e| {
            let secret = secret_ref(namespace, name);
            Error::write(
                format!("Secret {secret}"),
                format!("creating CA Secret {secret}"),
                e,
            )
        })?;
    Ok((
        created,
        Change::Generated {
            fingerprint: generated.fingerprint,
        },
    ))
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
