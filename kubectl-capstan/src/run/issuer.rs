//! `status` and `rotate`: resolve an issuer, read it and its Events, set the
//! rotation trigger and follow the rotation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capstan_issuer::api::ca_issuer::{CAIssuer, ClusterCAIssuer, IssuerSpec, IssuerStatus};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};
use crate::output::{Format, encode};
use crate::rotate::{self, Outcome, Progress};
use crate::status;
use crate::target::{self, IssuerId, Kind, Wanted};

use super::print;

/// How often `rotate` reads the issuer while waiting.
const POLL: Duration = Duration::from_millis(500);

/// An issuer as read.
struct Read {
    id: IssuerId,
    resolved: Option<String>,
    spec: IssuerSpec,
    status: Option<IssuerStatus>,
    generation: Option<i64>,
    annotations: BTreeMap<String, String>,
}

async fn get_issuer(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<Read>> {
    let id = IssuerId::new(kind, namespace, name);
    let action = || format!("reading {id}");
    Ok(match kind {
        Kind::ClusterCAIssuer => Api::<ClusterCAIssuer>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|e| Error::api(action(), e))?
            .map(|i| Read {
                generation: i.metadata.generation,
                annotations: i.annotations().clone(),
                spec: i.spec.issuer,
                status: i.status,
                id: id.clone(),
                resolved: None,
            }),
        Kind::CAIssuer => Api::<CAIssuer>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Error::api(action(), e))?
            .map(|i| Read {
                generation: i.metadata.generation,
                annotations: i.annotations().clone(),
                spec: i.spec.issuer,
                status: i.status,
                id: id.clone(),
                resolved: None,
            }),
    })
}

/// The issuer an `ISSUER` argument names: a bare name is the
/// `ClusterCAIssuer` if one exists, else the `CAIssuer` in `namespace`.
async fn resolve(client: &Client, namespace: &str, arg: &str) -> Result<Read> {
    match target::parse(arg)? {
        Wanted::Exactly(kind, name) => get_issuer(client, kind, namespace, &name)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{} not found",
                    IssuerId::new(kind, namespace, &name)
                ))
            }),
        Wanted::Either(name) => {
            let cluster = get_issuer(client, Kind::ClusterCAIssuer, namespace, &name).await?;
            let local = get_issuer(client, Kind::CAIssuer, namespace, &name).await?;
            match (cluster, local) {
                (Some(mut c), local) => {
                    let also = if local.is_some() {
                        format!(
                            "; a CAIssuer {name} exists in {namespace} too (caissuer/{name} for it)"
                        )
                    } else {
                        String::new()
                    };
                    c.resolved = Some(format!("{name:?} is the ClusterCAIssuer{also}"));
                    Ok(c)
                }
                (None, Some(mut l)) => {
                    l.resolved = Some(format!(
                        "no ClusterCAIssuer {name}; the CAIssuer in namespace {namespace}"
                    ));
                    Ok(l)
                }
                (None, None) => Err(Error::NotFound(format!(
                    "neither ClusterCAIssuer/{name} nor CAIssuer/{name} -n {namespace} exists"
                ))),
            }
        }
    }
}

/// The Events about an issuer (capstan records a ClusterCAIssuer's in
/// `default`).
async fn issuer_events(client: &Client, id: &IssuerId) -> Result<Vec<Event>> {
    let ns = id.namespace.as_deref().unwrap_or("default");
    let fields = format!(
        "involvedObject.kind={},involvedObject.name={}",
        id.kind.as_str(),
        id.name
    );
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&fields))
        .await
        .map_err(|e| Error::api(format!("listing the Events of {id}"), e))?;
    Ok(list.items)
}

pub(super) async fn status_cmd(
    client: &Client,
    namespace: &str,
    arg: &str,
    format: Format,
) -> Result<i32> {
    let read = resolve(client, namespace, arg).await?;
    let events = issuer_events(client, &read.id).await?;
    let report = status::report(
        read.id,
        read.resolved,
        &read.spec,
        read.status.as_ref(),
        read.generation,
        &events,
    );
    print(&match format {
        Format::Table => status::render(&report, Timestamp::now()),
        _ => encode(&report, format)?,
    });
    Ok(0)
}

pub(super) async fn rotate_cmd(
    client: &Client,
    namespace: &str,
    arg: &str,
    no_wait: bool,
    timeout: Duration,
    format: Format,
) -> Result<i32> {
    let read = resolve(client, namespace, arg).await?;
    let before = rotate::can_start(&read.id, &read.spec, read.status.as_ref())?;
    let events = issuer_events(client, &read.id).await?;
    let mut progress = Progress::new(before.clone(), read.status.as_ref(), &events);
    let current = read
        .annotations
        .get(capstan_issuer::ca::layout::ROTATE_TRIGGER)
        .map(String::as_str);
    let value = rotate::trigger_value(Timestamp::now(), current);
    let patch = rotate::trigger_patch(&value);
    let params = PatchParams::default();
    let id = read.id.clone();
    let result = match id.kind {
        Kind::ClusterCAIssuer => Api::<ClusterCAIssuer>::all(client.clone())
            .patch(&id.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        Kind::CAIssuer => Api::<CAIssuer>::namespaced(client.clone(), namespace)
            .patch(&id.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    result.map_err(|e| Error::api(format!("annotating {id}"), e))?;
    let table = format == Format::Table;
    if table {
        print(&format!(
            "{id}: set capstan.dev/rotate={value} (signing CA {})\n",
            status::short(&before)
        ));
    }
    let mut outcome = Outcome {
        issuer: id.clone(),
        trigger: value,
        previous_ca: before.clone(),
        signing_ca: None,
        completed: false,
        steps: Vec::new(),
    };
    if no_wait {
        if !table {
            print(&encode(&outcome, format)?);
        }
        return Ok(0);
    }
    let started = Instant::now();
    loop {
        let read = get_issuer(client, id.kind, namespace, &id.name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{id} was deleted while rotating")))?;
        let events = issuer_events(client, &id).await?;
        for step in progress.observe(read.status.as_ref(), &events) {
            if table {
                print(&format!(
                    "[{:>4}s] {}\n",
                    started.elapsed().as_secs(),
                    step.line()
                ));
            }
            outcome.steps.push(step);
        }
        outcome.signing_ca = read
            .status
            .as_ref()
            .and_then(|s| s.ca.as_ref())
            .map(|c| c.fingerprint.clone());
        if progress.done() {
            outcome.completed = true;
            print(&if table {
                format!(
                    "{id} rotated in {}s: the new CA signs; the old one stays trusted until it retires (kubectl capstan status {})\n",
                    started.elapsed().as_secs(),
                    rotate::arg(&id)
                )
            } else {
                encode(&outcome, format)?
            });
            return Ok(0);
        }
        if started.elapsed() >= timeout {
            if !table {
                print(&encode(&outcome, format)?);
            }
            let phase = read
                .status
                .as_ref()
                .and_then(|s| s.rotation.as_ref())
                .map_or("-", |r| status::phase_name(r.phase));
            return Err(Error::Timeout(format!(
                "{id}: the new CA did not sign within {}s (phase {phase}); the rotation goes on: follow it with kubectl capstan status {}",
                timeout.as_secs(),
                rotate::arg(&id)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
